"""Heat kernels: S² kernel matrices beside GeometricKernels and a scipy Legendre loop; forward
sampling throughput beside a 100-step geodesic random walk.

    python benchmarks/bench_heat_kernels.py [--part matrix|sampling|all]

Matrix: 2000 × 2000 kernel matrix on S² at t = 0.01 and 0.1. Accuracy: max relative error on a
random 2000-entry subsample against the zonal series summed in mpmath at 160 digits to
absolute 1e-130 (beyond the cancellation: k ≥ 1e-108 here). Baselines in the same run: GeometricKernels' heat kernel (Matérn,
ν = ∞, normalize=False, lengthscale κ = √(2t), rescaled by 1/4π to a density; its truncation
``num`` levels set to what the series needs) and a plain scipy loop over Legendre degrees.

Sampling: exact draws X_t ~ k_t(·, x0) (``sample_heat_kernel``) beside the 100-step geodesic
random walk x ← exp_x(√(2h) ξ) that other toolkits use for noising (built on the same manifold
code); samples per second and the moment error max_j |mean φ_j(X_t) − e^{−λ_j t} φ_j(x0)| over
the first levels, in units of its standard error.

heatscore's times are medians of 3 runs; the (much slower) baselines are timed once.
"""

import argparse
import math
import time

import mpmath
import numpy as np
import torch
from scipy.special import eval_legendre

from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus

REPEATS = 3


def _median_time(fn, repeats=REPEATS):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2], out


def _mp_kernel(cos_theta, t, lmax):
    mpmath.mp.dps = 160
    x, tt = mpmath.mpf(cos_theta), mpmath.mpf(t)
    p_prev, p_cur = mpmath.mpf(1), x
    total = 1 + 3 * mpmath.exp(-2 * tt) * x
    for l in range(1, lmax):
        p_prev, p_cur = p_cur, ((2 * l + 1) * x * p_cur - l * p_prev) / (l + 1)
        total += (2 * l + 3) * mpmath.exp(-(l + 1) * (l + 2) * tt) * p_cur
    return float(total / (4 * mpmath.pi))


def _levels(t, rel=1e-130):
    lmax = 1
    while (2 * lmax + 1) * math.exp(-lmax * (lmax + 1) * t) > rel:
        lmax += 1
    return lmax + 1


def matrix(n=2000, n_check=2000):
    m = Sphere(2)
    x, y = m.random_uniform(n, rng=0), m.random_uniform(n, rng=1)
    g = np.random.default_rng(2)
    ii, jj = g.integers(0, n, n_check), g.integers(0, n, n_check)
    cos = (x[ii] * y[jj]).sum(1).clamp(-1, 1).numpy()
    print("| t | method | time s (median) | max rel. error (2000 entries, mpmath) | ratio to heatscore |")
    print("|---|---|---|---|---|")
    for t in (0.01, 0.1):
        L = _levels(t)
        ref = np.array([_mp_kernel(c, t, L) for c in cos])
        k = HeatKernel(m)
        t_ours, K = _median_time(lambda: k(x, y, t))
        err_ours = np.max(np.abs(K.numpy()[ii, jj] - ref) / ref)
        print(f"| {t} | heatscore `HeatKernel` | {t_ours:.3f} | {err_ours:.1e} | 1.0 |")

        def legendre_loop():
            c = (x @ y.T).clamp(-1, 1).numpy()
            out = np.zeros_like(c)
            for l in range(L):
                out += (2 * l + 1) / (4 * np.pi) * np.exp(-l * (l + 1) * t) * eval_legendre(l, c)
            return out
        t_leg, K_leg = _median_time(legendre_loop, repeats=1)
        err_leg = np.max(np.abs(K_leg[ii, jj] - ref) / ref)
        print(f"| {t} | scipy Legendre loop ({L} degrees) | {t_leg:.3f} | {err_leg:.1e} | {t_leg / t_ours:.1f} |")
        try:
            from geometric_kernels.kernels import MaternGeometricKernel
            from geometric_kernels.spaces import Hypersphere

            gk = MaternGeometricKernel(Hypersphere(2), num=L, normalize=False)
            params = gk.init_params()
            params["nu"], params["lengthscale"] = np.array([np.inf]), np.array([math.sqrt(2 * t)])
            xn, yn = x.numpy(), y.numpy()
            t_gk, K_gk = _median_time(lambda: gk.K(params, xn, yn) / (4 * np.pi), repeats=1)
            err_gk = np.max(np.abs(K_gk[ii, jj] - ref) / ref)
            print(f"| {t} | GeometricKernels Matérn ν=∞ ({L} levels) | {t_gk:.3f} | {err_gk:.1e} | "
                  f"{t_gk / t_ours:.1f} |")
        except ImportError:
            print(f"| {t} | GeometricKernels | not installed (pip install 'heatscore[bench]') | | |")


def _walk(m, x0, t, gen, steps=100):
    h = t / steps
    y = x0
    for _ in range(steps):
        y = m._exp(y, math.sqrt(2 * h) * m._random_tangent_normal(y, gen))
    return y


def sampling(n=100_000, t=0.05):
    print(f"forward noising to t = {t}, {n} draws from one start point; moment error over the "
          "first 3 levels in standard errors (5 = a 5-sigma discrepancy)")
    print("| manifold | exact: samples/s | exact: max err / s.e. | 100-step walk: samples/s | "
          "walk: max err / s.e. | speed ratio |")
    print("|---|---|---|---|---|---|")
    for name, m in (("S²", Sphere(2)), ("T²", Torus(2)), ("SO(3)", SO3()), ("R^3 (OU)", Euclidean(3))):
        x0 = m.sample_stationary(1, rng=3).expand((n,) + tuple(m.point_shape))
        ep = m.eigenpairs(3)
        expected = torch.exp(-ep.eigenvalues * t) * ep(x0[:1])[0]

        def err(xt):
            vals = ep(xt)
            se = vals.std(0) / math.sqrt(n)
            ok = se > 0
            return float(((vals.mean(0) - expected).abs()[ok] / se[ok]).max())
        gen = torch.Generator().manual_seed(4)
        t_exact, xe = _median_time(lambda: sample_heat_kernel(m, x0, t, rng=gen))
        if isinstance(m, Euclidean):  # the OU walk has drift −x: Euler–Maruyama
            def walk():
                h, y = t / 100, x0
                for _ in range(100):
                    y = y - h * y + math.sqrt(2 * h) * torch.randn(y.shape, generator=gen, dtype=y.dtype)
                return y
        else:
            def walk():
                return _walk(m, x0, t, gen)
        t_walk, xw = _median_time(walk, repeats=1)
        print(f"| {name} | {n / t_exact:,.0f} | {err(xe):.1f} | {n / t_walk:,.0f} | {err(xw):.1f} | "
              f"{t_walk / t_exact:.1f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--part", choices=["matrix", "sampling", "all"], default="all")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.part in ("matrix", "all"):
        matrix()
    if args.part in ("sampling", "all"):
        sampling()
