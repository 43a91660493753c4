"""The Dask extra: distributed fit = in-memory fit, tile-partitioned kernel sums, reproducible
sampling, recovery from a killed worker, reading Parquet/CSV directories."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

from conftest import N_SIGMA  # noqa: E402
from heatscore.estimators import DiffusionKernelSmoother  # noqa: E402
from heatscore.estimators import _dask as hs_dask  # noqa: E402
from heatscore.estimators._kernel_sum import KernelSum  # noqa: E402
from heatscore.heat_kernels import sample_heat_kernel  # noqa: E402
from heatscore.manifolds import SO3, Sphere, Torus  # noqa: E402

#: The distributed reductions sum in another order than memory: equal to this relative.
REDUCTION_RTOL = 1e-12
#: In-memory kernel sums on S^d take the compiled route, whose tabulated kernel is within ~2e-10
#: (relative) of the closed form the distributed tree route evaluates.
EVAL_RTOL = 1e-9
#: Uneven row chunks of the 3000 data points.
CHUNKS = (700, 1000, 300, 1000)


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as c:
        yield c


def _clustered(m, n, seed, t=0.01):
    centres = m.sample_stationary(3, rng=seed)
    return sample_heat_kernel(m, centres[torch.arange(n) % 3], t, rng=seed + 1)


def _dask(x, chunks):
    x = x.numpy() if isinstance(x, torch.Tensor) else x
    return da.from_array(x, chunks=(chunks,) + x.shape[1:])


def _rel(a, b):
    a, b = torch.as_tensor(np.asarray(a)), torch.as_tensor(np.asarray(b))
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("time_, n, chunks, weighted", [(0.05, 3000, CHUNKS, False),
                                                        (0.05, 3000, CHUNKS, True),
                                                        ("auto", 200, (100, 30, 70), False)])
def test_distributed_fit_equals_in_memory(client, time_, n, chunks, weighted):
    """Uneven chunks, with and without weights: the spectral route (t = 0.05) and the kernel-sum
    route (the LOO time of 200 points: no certified levels) equal the in-memory model."""
    m = Sphere(2)
    X = _clustered(m, n, 1)
    w = torch.rand(n, generator=torch.Generator().manual_seed(2), dtype=torch.float64) if weighted else None
    Q = torch.cat([X[::20], sample_heat_kernel(m, X[:40], 0.01, rng=3)])
    wd = None if w is None else _dask(w, chunks)
    est = DiffusionKernelSmoother(m, time=time_).fit(_dask(X, chunks), sample_weight=wd, client=client)
    ref = DiffusionKernelSmoother(m, time=time_).fit(X, sample_weight=w)
    assert est.times_.tolist() == ref.times_.tolist()  # n ≤ SELECT_ROWS: the same search
    levels = est._spec.n_levels_
    if levels is not None:
        c = est._spec.coefficients(levels)[1]
        assert _rel(c, ref._spec.coefficients(levels)[1]) <= REDUCTION_RTOL
    q_chunks = (30, 20, Q.shape[0] - 50)
    lp, g = est.score_samples(_dask(Q, q_chunks)), est.grad_log_density(_dask(Q, q_chunks))
    assert isinstance(lp, da.Array) and isinstance(g, da.Array) and g.shape == Q.shape
    lp, g = client.compute([lp, g], sync=True)
    assert _rel(lp, ref.score_samples(Q)) <= EVAL_RTOL
    assert _rel(g, ref.grad_log_density(Q)) <= EVAL_RTOL
    # tensors in, tensors out on a dask-fitted model
    out = est.log_density(Q[:5], t=0.01)
    assert isinstance(out, torch.Tensor)
    assert _rel(out, ref.log_density(Q[:5], t=0.01)) <= REDUCTION_RTOL


def test_in_memory_model_maps_over_dask_queries(client):
    m = Torus(2)
    X = _clustered(m, 400, 4)
    est = DiffusionKernelSmoother(m, time=0.02).fit(X)
    Q = m.random_uniform(90, rng=5)
    lp = est.score_samples(_dask(Q, (40, 50)))
    assert isinstance(lp, da.Array)
    torch.testing.assert_close(torch.from_numpy(lp.compute()), est.score_samples(Q), rtol=0, atol=1e-13)


def _border_and_pole_queries(nside, n_per, gen):
    """Points on HEALPix pixel boundaries at ``nside`` and within 1e-9 rad of both poles."""
    import healpy

    b = healpy.boundaries(nside, np.arange(12 * nside**2), step=2, nest=True)   # (P, 3, 8)
    pts = torch.from_numpy(np.transpose(b, (0, 2, 1)).reshape(-1, 3))
    pts = pts[torch.randperm(pts.shape[0], generator=gen)[:n_per]]
    poles = torch.tensor([[1e-9, 0.0, 1.0], [0.0, -1e-9, -1.0], [3e-3, 0.0, 1.0]], dtype=torch.float64)
    return torch.nn.functional.normalize(torch.cat([pts, poles]), dim=1)


@pytest.mark.parametrize("name", ["sphere", "torus", "so3"])
def test_tile_kernel_sums_equal_global(client, name):
    """Tiles (HEALPix on S², a spatial hash elsewhere) keep the global neighbour route's pairs:
    equal to it to rounding, and to the dense sum within its bound ε (relative)."""
    gen = torch.Generator().manual_seed(7)
    m = {"sphere": Sphere(2), "torus": Torus(2), "so3": SO3()}[name]
    X = _clustered(m, 900, 8, t=0.002)
    if name == "sphere":  # data across the poles and tile borders, queries on them
        X = torch.cat([X, sample_heat_kernel(m, torch.tensor([[0.0, 0, 1], [0, 0, -1.0]]).repeat(100, 1),
                                             0.002, rng=9)])
        Q = torch.cat([_border_and_pole_queries(2, 80, gen), X[::50]])
    else:
        Q = torch.cat([sample_heat_kernel(m, X[:80], 1e-4, rng=10), X[::50]])
    tau = 5e-5                                               # the fast parametrix pairs
    est = DiffusionKernelSmoother(m, time=tau, route="neighbors").fit(_dask(X, (300, 450, X.shape[0] - 750)),
                                                                       client=client)
    est._dask.n_tiles = 7 if name != "sphere" else 48        # several tiles at this small size
    part = hs_dask._Partition(hs_dask.SpatialIndex(m, X[:1]), est._dask.n_tiles,
                            np.sqrt(hs_dask._halo2(m, tau, est._dask.w_min)), tau)
    assert part.n_tiles > 1 and part.healpix == (name == "sphere")
    lp, g = client.compute([est.score_samples(_dask(Q, 60)), est.grad_log_density(_dask(Q, 60))], sync=True)
    w = torch.full((X.shape[0],), 1.0 / X.shape[0], dtype=torch.float64)
    ks = KernelSum(m, X, w)
    ref_n, gref_n = ks.log_and_grad(Q, tau, True, route="neighbors")
    assert _rel(lp, ref_n) <= REDUCTION_RTOL
    assert _rel(g, gref_n) <= 1e-10
    sub = torch.arange(0, Q.shape[0], 5)                     # the dense sum is slow: a subset
    ref_d = ks.log_and_grad(Q[sub], tau, False, route="dense")[0]
    assert float((torch.from_numpy(lp)[sub] - ref_d).abs().max()) <= 2 * ks.eps


def test_far_rows_and_dense_route(client):
    """Queries with no data near (and route="dense") are summed over every data chunk."""
    m = Sphere(2)
    X = sample_heat_kernel(m, torch.tensor([[0.0, 0.0, 1.0]]).repeat(600, 1), 0.002, rng=11)
    Q = torch.cat([X[:30], torch.tensor([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0]], dtype=torch.float64)])
    ref = KernelSum(m, X, torch.full((600,), 1 / 600, dtype=torch.float64)).log_and_grad(Q, 1e-3, False, route="dense")[0]
    for route in ("neighbors", "dense"):
        est = DiffusionKernelSmoother(m, time=1e-3, route=route).fit(_dask(X, (100, 500)), client=client)
        lp = client.compute(est.score_samples(_dask(Q, 16)), sync=True)
        assert float((torch.from_numpy(lp) - ref).abs().max()) <= 2e-10


def test_sample_reproducible_across_chunkings(client, monkeypatch):
    monkeypatch.setattr(hs_dask, "VBLOCK", 300)      # several virtual blocks at a test size
    m = Sphere(2)
    X = _clustered(m, 1000, 12)
    a = DiffusionKernelSmoother(m, time=0.02).fit(_dask(X, (300, 100, 600)), client=client)
    b = DiffusionKernelSmoother(m, time=0.02).fit(_dask(X, 500), client=client)
    n = 3000
    s1 = a.sample(n, rng=5)
    s2 = b.sample(n, rng=5, chunks=(1234, 766, 1000))
    assert isinstance(s1, da.Array) and s1.shape == (n, 3)
    s1, s2, s3 = client.compute([s1, s2, a.sample(n, rng=6)], sync=True)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    assert np.allclose(np.linalg.norm(s1, axis=1), 1.0)
    # the law: E Y_1m(x) = e^{−2t*} ĉ_1m for draws of p̂, within N_SIGMA standard errors
    ep, c = a._spec.coefficients(a._spec.n_levels_)
    phi = ep(torch.from_numpy(s1))[:, 1:4]
    expect = np.exp(-2 * 0.02) * c[1:4]
    se = phi.std(0) / np.sqrt(n)
    assert bool(((phi.mean(0) - expect).abs() <= N_SIGMA * se).all())
    # an in-memory model with chunks= gives a dask array too, the same for any chunking
    mem = DiffusionKernelSmoother(m, time=0.02).fit(X)
    t1, t2 = client.compute([mem.sample(700, rng=1, chunks=100), mem.sample(700, rng=1, chunks=700)], sync=True)
    np.testing.assert_array_equal(t1, t2)


def _slow_points(block_id=None, block_info=None):
    """Chunk b of the test data: points on S² from seed b, made slowly (a long task to interrupt)."""
    time.sleep(0.3)
    n = block_info[None]["chunk-shape"][0]
    return Sphere(2).random_uniform(n, rng=100 + block_id[0]).numpy()


def test_worker_killed_mid_fit_changes_nothing():
    """A worker process killed while the fit's reduction runs: dask recomputes its chunks, and
    the fit (coefficients, total weight = row count) is that of the data in memory."""
    chunks = (50,) * 12
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as cluster, distributed.Client(cluster) as client:
        X = da.map_blocks(_slow_points, chunks=(chunks, (3,)), dtype=np.float64)
        w = da.ones(600, chunks=(chunks,))
        est = DiffusionKernelSmoother(Sphere(2), time=0.05)
        pids = list(client.run(os.getpid).values())
        fitting = threading.Thread(target=est.fit, args=(X, w), kwargs={"client": client})
        fitting.start()
        time.sleep(1.0)                    # a few chunks done, most still to come
        assert fitting.is_alive()
        os.kill(pids[0], signal.SIGKILL)
        fitting.join(timeout=120)
        assert not fitting.is_alive()
        Xm = torch.from_numpy(np.concatenate([_slow_points((b,), {None: {"chunk-shape": (50,)}})
                                              for b in range(12)]))
    ref = DiffusionKernelSmoother(Sphere(2), time=0.05).fit(Xm)
    assert est._dask.total == 600.0                     # every row counted once
    levels = est._spec.n_levels_
    assert _rel(est._spec.coefficients(levels)[1], ref._spec.coefficients(levels)[1]) <= REDUCTION_RTOL


def test_read_parquet_and_csv_directories(tmp_path, client):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    from heatscore.estimators import read_dask_points
    from heatscore.datasets import latlon_to_unit

    rng = np.random.default_rng(0)
    parts = [pd.DataFrame({"lat": rng.uniform(-90, 90, k), "lon": rng.uniform(-180, 180, k),
                           "mag": rng.uniform(0, 1, k)}) for k in (30, 7, 50)]
    (tmp_path / "pq").mkdir()
    (tmp_path / "csv").mkdir()
    for i, p in enumerate(parts):
        p.to_parquet(tmp_path / "pq" / f"part{i}.parquet")
        p.to_csv(tmp_path / "csv" / f"part{i}.csv", index=False)
    full = pd.concat(parts)
    expect = latlon_to_unit(full[["lat", "lon"]].to_numpy()).numpy()
    for sub in ("pq", "csv"):
        X = read_dask_points(str(tmp_path / sub), columns=["lat", "lon"], latlon=True)
        assert X.shape == (87, 3) and not any(np.isnan(c) for c in X.chunks[0])
        np.testing.assert_allclose(X.compute(), expect, rtol=0, atol=1e-15)
    est = DiffusionKernelSmoother(Sphere(2), time=0.1).fit(
        read_dask_points(str(tmp_path / "pq"), columns=["lat", "lon"], latlon=True), client=client)
    ref = DiffusionKernelSmoother(Sphere(2), time=0.1).fit(torch.from_numpy(expect))
    L = est._spec.n_levels_
    assert _rel(est._spec.coefficients(L)[1], ref._spec.coefficients(L)[1]) <= REDUCTION_RTOL
    (tmp_path / "pq" / "extra.csv").write_text("lat,lon\n0,0\n")
    with pytest.raises(ValueError, match="one kind"):
        read_dask_points(str(tmp_path / "pq"))


def test_errors(client, tmp_path):
    m = Sphere(2)
    X = _clustered(m, 200, 13)
    with pytest.raises(ValueError, match="X must be points of shape"):
        DiffusionKernelSmoother(m, time=0.1).fit(_dask(X[:, :2], 50), client=client)
    bad = X.clone()
    bad[3] *= 1.1
    with pytest.raises(ValueError, match="off Sphere"):
        DiffusionKernelSmoother(m, time=0.1).fit(_dask(bad, 50), client=client)
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        DiffusionKernelSmoother(m, time=0.1).fit(_dask(X, 50), sample_weight=-torch.ones(200), client=client)
    with pytest.raises(ValueError, match="client is for a dask array"):
        DiffusionKernelSmoother(m, time=0.1).fit(X, client=client)
    est = DiffusionKernelSmoother(m, time=0.1).fit(_dask(X, 50), client=client)
    with pytest.raises(ValueError, match="keeps its data on the cluster"):
        est.save(tmp_path / "model.npz")
    with pytest.raises(ValueError, match="shrinkage=True"):
        DiffusionKernelSmoother(m, time=0.1, shrinkage=True).fit(_dask(X, 50), client=client)


def test_import_without_dask():
    """heatscore imports and fits in memory where dask is absent."""
    code = ("import sys; sys.modules['dask'] = None\n"
            "import heatscore, torch\n"
            "from heatscore.estimators import DiffusionKernelSmoother\n"
            "from heatscore.manifolds import Sphere\n"
            "X = Sphere(2).random_uniform(50, rng=0)\n"
            "print(DiffusionKernelSmoother(Sphere(2), time=0.1).fit(X).score_samples(X[:2]).shape)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch.Size([2])" in out.stdout
