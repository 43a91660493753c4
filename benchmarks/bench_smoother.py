"""Diffusion kernel smoother: synthetic targets with known densities, and evaluation speed.

    python benchmarks/bench_smoother.py            # both parts
    python benchmarks/bench_smoother.py --part synthetic|speed

Synthetic (T² and SO(3)): the target is a mixture of heat kernels p = Σ_j w_j k_{τ_j}(·, μ_j)
(wrapped normals on T²), so its density is exact. The smoother is fitted on n draws (time by
leave-one-out likelihood, and multiscale) and scored on n fresh draws: test NLL beside the true
density's test NLL (the gap is ≥ 0 in expectation: KL(p ‖ p̂)); on T² also the KL divergence by
quadrature on a 128² grid (trapezoid: spectrally accurate for these smooth periodic densities).

Speed: the smoother fitted to the fire data; log-density and score at 10^5 exact draws from it
(fixed seed) through the automatic route (neighbours at this t*), beside the dense pairwise route
evaluated in the same run on 10^3 of those draws (its time scaled ×100, being linear in the
number of queries); agreement |Δ log p| and the ratio.
"""

import argparse
import math
import time

import torch

from _timing import median_time

from heatscore.datasets import load_earth
from heatscore.estimators import DiffusionKernelSmoother
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import SO3, Sphere, Torus


def _mixture(m, n_comp, seed):
    centres = m.random_uniform(n_comp, rng=seed)
    g = torch.Generator().manual_seed(seed)
    taus = 0.01 + 0.1 * torch.rand(n_comp, generator=g, dtype=torch.float64)
    w = torch.rand(n_comp, generator=g, dtype=torch.float64) + 0.5
    return centres, taus, w / w.sum()


def _mixture_sample(m, centres, taus, w, n, seed):
    g = torch.Generator().manual_seed(seed)
    j = torch.multinomial(w, n, replacement=True, generator=g)
    return sample_heat_kernel(m, centres[j], taus[j], rng=g)


def _mixture_log_density(m, centres, taus, w, x):
    k = HeatKernel(m)
    cols = [k.log(x, centres[j:j + 1], float(taus[j]))[:, 0] + math.log(w[j]) for j in range(len(w))]
    return torch.logsumexp(torch.stack(cols, dim=1), dim=1)


def synthetic(n=2000, seeds=(0, 1, 2)):
    print("| manifold | time | n | NLL model | NLL truth | gap | KL (quadrature) | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, m in (("T²", Torus(2)), ("SO(3)", SO3())):
        for mode in ("auto", "multiscale"):
            rows = []
            for seed in seeds:
                centres, taus, w = _mixture(m, 5, seed)
                train = _mixture_sample(m, centres, taus, w, n, 100 + seed)
                test = _mixture_sample(m, centres, taus, w, n, 200 + seed)
                t0 = time.perf_counter()
                est = DiffusionKernelSmoother(m, time=mode).fit(train)
                fit_s = time.perf_counter() - t0
                nll = -float(est.score_samples(test).mean())
                nll_true = -float(_mixture_log_density(m, centres, taus, w, test).mean())
                kl = float("nan")
                if isinstance(m, Torus):
                    z, wq = m.quadrature(128)
                    logp = _mixture_log_density(m, centres, taus, w, z)
                    kl = float((wq * torch.exp(logp) * (logp - est.score_samples(z))).sum())
                rows.append((nll, nll_true, kl, fit_s))
            r = torch.tensor(rows)
            mean, std = r.mean(0), r.std(0)
            print(f"| {name} | {mode} | {n} | {mean[0]:.3f} ± {std[0]:.3f} | {mean[1]:.3f} ± {std[1]:.3f} | "
                  f"{mean[0] - mean[1]:.3f} | {mean[2]:.3f} | {mean[3]:.2f} |")


def speed(n_draws=100_000, n_dense=1_000, repeats=1):
    X = load_earth("fire")
    est = DiffusionKernelSmoother(Sphere(2)).fit(X)
    Q = est.sample(n_draws, rng=0)
    dense = DiffusionKernelSmoother(Sphere(2), time=est.time_, route="dense").fit(X)

    def timed(fn):
        return median_time(fn, repeats)

    t_auto, (lp, g) = timed(lambda: (est.log_density(Q), est.grad_log_density(Q)))
    t_dense, (lp_d, g_d) = timed(lambda: (dense.log_density(Q[:n_dense]),
                                          dense.grad_log_density(Q[:n_dense])))
    scale = n_draws / n_dense
    err = float((lp[:n_dense] - lp_d).abs().max())
    gerr = float(((g[:n_dense] - g_d).norm(dim=1) / (1 + g_d.norm(dim=1))).max())
    print(f"fire model: t* = {est.time_:.3g}, {n_draws} exact draws, log-density + score")
    print(f"| route | queries | time s (median of {repeats}) | s per 10^5 | max abs Δ log p | max rel Δ score |")
    print("|---|---|---|---|---|---|")
    print(f"| auto (neighbours) | {n_draws} | {t_auto:.2f} | {t_auto * 1e5 / n_draws:.2f} | — | — |")
    print(f"| dense pairwise | {n_dense} | {t_dense:.2f} | {t_dense * scale * 1e5 / n_draws:.2f} | "
          f"{err:.1e} | {gerr:.1e} |")
    print(f"ratio dense / auto (per query): {t_dense * scale / t_auto:.1f}x")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--part", choices=["synthetic", "speed", "all"], default="all")
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.part in ("synthetic", "all"):
        synthetic()
    if args.part in ("speed", "all"):
        speed()
