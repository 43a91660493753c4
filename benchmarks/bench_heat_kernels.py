"""Heat kernels: S² kernel matrices beside GeometricKernels and a scipy Legendre loop; forward
sampling throughput beside a 100-step geodesic random walk.

    python benchmarks/bench_heat_kernels.py [--part matrix|sampling|all]

Matrix: 2000 × 2000 kernel matrix on S² at t = 0.01 and 0.1. Accuracy: max relative error on a
random 2000-entry subsample against the zonal series summed in mpmath at 160 digits to
absolute 1e-130 (beyond the cancellation: k ≥ 1e-108 here), and the count of entries ≤ 0.
Baselines in the same run, each summing the levels whose tail is ≤ 2⁻⁵³ × min k_t:
GeometricKernels' heat kernel (Matérn, ν = ∞, normalize=False, lengthscale κ = √(2t), rescaled
by 1/4π to a density; at most the 63 levels for which it has precomputed harmonics, which caps it
at t = 0.01), with its relative difference to heatscore over the whole matrix (the check of the
conversion), and a plain scipy loop over Legendre degrees.

Sampling: exact draws X_t ~ k_t(·, x0) (``sample_heat_kernel``) beside the 100-step geodesic
random walk x ← exp_x(√(2h) ξ) that other toolkits use for noising (built on the same manifold
code); samples per second and the moment error max_j |mean φ_j(X_t) − e^{−λ_j t} φ_j(x0)| over
the first levels, in units of its standard error.

heatscore's times are medians of 3 runs; the (much slower) baselines are timed once.
"""

import argparse
import math
import os

import mpmath
import numpy as np
import torch
from scipy.special import eval_legendre

from _timing import median_time

from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import _closed_forms as cf
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus

REPEATS = 3


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


def _gk_kernel(t, levels):
    """GeometricKernels' heat kernel on S² as a density: (x, y) numpy -> (n, m) numpy, and the
    levels it uses (at most its precomputed maximum).

    MaternGeometricKernel(ν = ∞, normalize=False) = Σ_l e^{−κ²λ_l/2} Σ_m f_lm(x) f_lm(y) with
    λ_l = l(l+1) and f_lm orthonormal w.r.t. the uniform probability (Σ_m f_lm(x) f_lm(y) =
    (2l+1) P_l(x·y)): with κ = √(2t) and a factor 1/4π it is k_t w.r.t. area."""
    import warnings

    with warnings.catch_warnings():  # its harmonics warn that they stop at its maximum degree
        warnings.simplefilter("ignore")
        from geometric_kernels.kernels import MaternGeometricKernel
        from geometric_kernels.spaces import Hypersphere

        space = Hypersphere(2)
        n_max = space.get_eigenfunctions(levels).num_computed_levels
        used = min(levels, n_max)
        gk = MaternGeometricKernel(space, num=used, normalize=False)
    params = gk.init_params()
    params["nu"], params["lengthscale"] = np.array([np.inf]), np.array([math.sqrt(2 * t)])
    return (lambda x, y: gk.K(params, x, y) / (4 * np.pi)), used, n_max


def matrix(n=2000, n_check=2000):
    m = Sphere(2)
    x, y = m.random_uniform(n, rng=0), m.random_uniform(n, rng=1)
    g = np.random.default_rng(2)
    ii, jj = g.integers(0, n, n_check), g.integers(0, n, n_check)
    cos = (x[ii] * y[jj]).sum(1).clamp(-1, 1).numpy()
    print("Baselines sum the levels whose tail is <= 2^-53 x min k_t (more cannot change a float64 "
          "sum), GeometricKernels at most its precomputed maximum.")
    print("| t | method | time s | max rel. error (2000 entries, mpmath) | entries <= 0 | "
          "time ratio to heatscore |")
    print("|---|---|---|---|---|---|")
    notes = []
    for t in (0.01, 0.1):
        ref = np.array([_mp_kernel(c, t, _levels(t)) for c in cos])
        L = cf.sphere_levels_for_accuracy(t, 2.0**-53, "minimum")

        def row(name, seconds, K, ratio):
            err = np.max(np.abs(K[ii, jj] - ref) / ref)
            print(f"| {t} | {name} | {seconds:.3f} | {err:.1e} | {int((K <= 0).sum())} | {ratio} |",
                  flush=True)
        k = HeatKernel(m)
        t_ours, K = median_time(lambda: k(x, y, t), REPEATS)
        K = K.numpy()
        row("heatscore `HeatKernel` (median of 3)", t_ours, K, "1.0")

        def legendre_loop():
            c = (x @ y.T).clamp(-1, 1).numpy()
            out = np.zeros_like(c)
            for l in range(L):
                out += (2 * l + 1) / (4 * np.pi) * np.exp(-l * (l + 1) * t) * eval_legendre(l, c)
            return out
        t_leg, K_leg = median_time(legendre_loop, repeats=1)
        row(f"scipy Legendre loop, {L} degrees (1 run)", t_leg, K_leg, f"{t_leg / t_ours:.1f}")
        try:
            gk, used, n_max = _gk_kernel(t, L)
        except ImportError:
            print(f"| {t} | GeometricKernels | not installed (pip install 'heatscore[bench]') | | | |")
            continue
        xn, yn = x.numpy(), y.numpy()
        t_gk, K_gk = median_time(lambda: gk(xn, yn), repeats=1)
        cap = f", capped at its maximum {n_max} of the {L} needed" if used < L else ""
        row(f"GeometricKernels Matérn ν=∞, {used} levels{cap} (1 run)", t_gk, K_gk,
            f"{t_gk / t_ours:.1f}")
        rel = np.abs(K_gk - K) / K
        notes.append(f"t = {t}: GeometricKernels vs heatscore over all {K.size} entries: relative "
                     f"difference median {np.median(rel):.1e}, max {rel.max():.1e}")
    print("\n".join(notes))


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
        t_exact, xe = median_time(lambda: sample_heat_kernel(m, x0, t, rng=gen), REPEATS)
        if isinstance(m, Euclidean):  # the OU walk has drift −x: Euler–Maruyama
            def walk():
                h, y = t / 100, x0
                for _ in range(100):
                    y = y - h * y + math.sqrt(2 * h) * torch.randn(y.shape, generator=gen, dtype=y.dtype)
                return y
        else:
            def walk():
                return _walk(m, x0, t, gen)
        t_walk, xw = median_time(walk, repeats=1)
        print(f"| {name} | {n / t_exact:,.0f} | {err(xe):.1f} | {n / t_walk:,.0f} | {err(xw):.1f} | "
              f"{t_walk / t_exact:.1f} |")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--part", choices=["matrix", "sampling", "all"], default="all")
    args = p.parse_args()
    torch.set_num_threads(1)
    print("load average at start: %.2f %.2f %.2f" % os.getloadavg())
    if args.part in ("matrix", "all"):
        matrix()
    if args.part in ("sampling", "all"):
        sampling()
    print("load average at end: %.2f %.2f %.2f" % os.getloadavg())
