"""The Dask extra: distributed spectral coefficients and the tile-partitioned small-t route.

    python benchmarks/bench_dask.py                      # both parts, sizes for 2 shared cores
    python benchmarks/bench_dask.py --part coef --n16 1e8 --n64 1e7 --workers 16

Coefficients: N uniform points on S² generated on the workers chunk by chunk (never all in
memory) and reduced to ĉ = Σ_i w_i φ(x_i) for L levels by the reduction ``fit`` runs
(``_partial_sums``: one partial per chunk, dask's tree sum; 64 levels exceed what the smoother's
certified expansion uses, 2600 functions, so the reduction is called directly). Beside it, one in-memory process (this one) generating and reducing the same chunks in
a loop: throughput per core of both, their ratio, and the peak memory per worker above its idle
memory (ru_maxrss), next to the chunk's size.

Small-t route: N points (three heat-kernel clusters plus 20% uniform), N/100 queries drawn like
them (fixed query density), τ = 1e-6 (no certified expansion: kernel sums), the model fitted on a
dask array and evaluated through the tiles (``score_samples`` on a dask array), beside the
in-memory neighbour route of ``KernelSum`` on the same data (one process).
"""

import argparse
import math
import os
import resource
import time

import dask.array as da
import distributed
import numpy as np
import torch

from heatscore.estimators import DiffusionKernelSmoother
from heatscore.estimators._dask import _Partition, _coef_block, _halo2, _partial_sums
from heatscore.estimators._kernel_sum import KernelSum, SpatialIndex
from heatscore.heat_kernels import sample_heat_kernel
from heatscore.manifolds import Sphere


def _uniform_block(seed, block_id=None, block_info=None):
    n = block_info[None]["chunk-shape"][0]
    return Sphere(2).random_uniform(n, rng=seed + block_id[0]).numpy()


def _rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def coefficients(cases, workers, repeats):
    print("| levels | N | chunk rows (MB) | workers | dask s | pts/s/core dask | pts/s in-memory (1 core) "
          "| ratio | peak ΔRSS/worker MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    m = Sphere(2)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit=0) as cluster, \
            distributed.Client(cluster) as client:
        client.run(lambda: __import__("heatscore.estimators._dask"))
        for L, N, chunk in cases:
            chunks = (chunk,) * (N // chunk) + ((N % chunk,) if N % chunk else ())
            idle = client.run(_rss_mb)
            times = []
            for r in range(repeats):
                X = da.map_blocks(_uniform_block, 1000 * r, chunks=(chunks, (3,)), dtype=np.float64)
                t0 = time.perf_counter()
                c = client.compute(_partial_sums(X, None, m, L), sync=True)
                times.append(time.perf_counter() - t0)
                assert c.shape == ((L) ** 2,) and abs(c[0] * math.sqrt(4 * math.pi) - N) < 1e-6 * N
            peak = client.run(_peak_mb)
            grow = max(peak[a] - idle[a] for a in peak)
            dask_s = float(np.median(times))
            # one in-memory process: the same chunks generated and reduced in a loop
            n_mem = min(N, 4 * chunk)
            t0 = time.perf_counter()
            for b in range(n_mem // chunk):
                x = _uniform_block(0, (b,), {None: {"chunk-shape": (chunk,)}})
                _coef_block(x, None, m, L)
            mem_rate = n_mem / (time.perf_counter() - t0)
            dask_rate = N / dask_s / workers
            print(f"| {L} | {N:.0e} | {chunk:.0e} ({chunk * 24 / 2**20:.0f}) | {workers} | {dask_s:.1f} | "
                  f"{dask_rate:.3g} | {mem_rate:.3g} | {dask_rate / mem_rate:.2f} | {grow:.0f} |")


def _clustered(n, seed):
    m = Sphere(2)
    g = torch.Generator().manual_seed(seed)
    centres = m.random_uniform(3, rng=seed)
    k = int(0.8 * n)
    X = sample_heat_kernel(m, centres[torch.randint(0, 3, (k,), generator=g)], 0.01, rng=seed + 1)
    return torch.cat([X, m.random_uniform(n - k, rng=seed + 2)])[torch.randperm(n, generator=g)]


def small_t(sizes, workers, chunk, tau=1e-6):
    print("| N | queries | tiles | dask s | in-memory s (1 process) | dask µs/query | ratio |")
    print("|---|---|---|---|---|---|---|")
    m = Sphere(2)
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", memory_limit=0) as cluster, \
            distributed.Client(cluster) as client:
        for N in sizes:
            X = _clustered(N, 1)
            nq = N // 100
            Q = sample_heat_kernel(m, X[torch.randperm(N, generator=torch.Generator().manual_seed(3))[:nq]],
                                   tau, rng=4)
            Xd = client.persist(da.from_array(X.numpy(), chunks=(min(chunk, N), 3)))
            Qd = client.persist(da.from_array(Q.numpy(), chunks=(min(chunk, nq), 3)))
            est = DiffusionKernelSmoother(m, time=tau, route="neighbors").fit(Xd, client=client)
            t0 = time.perf_counter()
            lp = client.compute(est.score_samples(Qd), sync=True)
            dask_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            ref = KernelSum(m, X, torch.full((N,), 1.0 / N, dtype=torch.float64)).log_and_grad(
                Q, tau, route="neighbors")[0]
            mem_s = time.perf_counter() - t0
            err = float((torch.from_numpy(lp) - ref).abs().max())
            assert err < 1e-9, err
            tiles = _Partition(SpatialIndex(m, X[:1]), est._dask.n_tiles,
                               math.sqrt(_halo2(tau, est._dask.w_min)), tau).n_tiles
            print(f"| {N:.0e} | {nq:.0e} | {tiles} | {dask_s:.2f} | {mem_s:.2f} | "
                  f"{1e6 * dask_s / nq:.0f} | {dask_s / mem_s:.2f} |")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--part", choices=["coef", "small-t", "all"], default="all")
    p.add_argument("--n16", type=float, default=1e7)
    p.add_argument("--n64", type=float, default=2e5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--sizes", default="1e4,1e5,1e6")
    a = p.parse_args()
    if a.part in ("coef", "all"):
        coefficients([(16, int(a.n16), 10**6), (64, int(a.n64), 5 * 10**4)], a.workers, a.repeats)
    if a.part in ("small-t", "all"):
        small_t([int(float(s)) for s in a.sizes.split(",")], a.workers, 250_000)


if __name__ == "__main__":
    main()
