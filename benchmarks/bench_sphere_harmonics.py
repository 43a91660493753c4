"""Real spherical harmonics on S²: heatscore's eigenpairs (sphericart) vs scipy's sph_harm_y_all.

Both sides compute the same real harmonics of degree ≤ l_max at the same points (scipy's complex
ones converted with the convention of heatscore's SphericalHarmonics; gradients as ambient
tangent vectors from ∂θ, ∂φ). Timings are medians over repeats; torch runs on ``--threads``
threads (default 1, like scipy). scipy's values+gradients take minutes at 10^5 points, so that
baseline runs only with ``--scipy-grad``. Prints a markdown table row.

    python benchmarks/bench_sphere_harmonics.py [--n 100000] [--l-max 30] [--repeats 3] [--scipy-grad]
"""

import argparse
import statistics
import time

import numpy as np
import torch
from scipy.special import sph_harm_y_all

from heatscore.manifolds import Sphere


def real_from_complex_indices(l_max):
    """Per column k = l² + l + m: degree l, |m|, whether to take Im (m < 0), and the factor."""
    l = np.concatenate([np.full(2 * d + 1, d) for d in range(l_max + 1)])
    m = np.concatenate([np.arange(-d, d + 1) for d in range(l_max + 1)])
    factor = np.where(m == 0, 1.0, np.sqrt(2.0) * (-1.0) ** np.abs(m))
    return l, np.abs(m), m < 0, factor


def scipy_real_harmonics(x, l_max, with_grad, chunk):
    """(n, K) values and, with ``with_grad``, (n, K, 3) tangent gradients, from scipy by chunks."""
    l, am, use_imag, factor = real_from_complex_indices(l_max)
    n, k = x.shape[0], l.shape[0]
    values = np.empty((n, k))
    grads = np.empty((n, k, 3)) if with_grad else None
    for i in range(0, n, chunk):
        xi = x[i:i + chunk]
        theta = np.arctan2(np.hypot(xi[:, 0], xi[:, 1]), xi[:, 2])
        phi = np.arctan2(xi[:, 1], xi[:, 0])
        if not with_grad:
            y = sph_harm_y_all(l_max, l_max, theta, phi)[l, am]  # (K, n_i) complex
            values[i:i + chunk] = (np.where(use_imag[:, None], y.imag, y.real) * factor[:, None]).T
            continue
        y, dy = sph_harm_y_all(l_max, l_max, theta, phi, diff_n=1)
        y, dy = y[l, am], dy[l, am]  # (K, n_i), (K, n_i, 2): ∂θ, ∂φ
        y = np.where(use_imag[:, None], y.imag, y.real) * factor[:, None]
        dy = np.where(use_imag[:, None, None], dy.imag, dy.real) * factor[:, None, None]
        values[i:i + chunk] = y.T
        ct, st, cp, sp = np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
        e_theta = np.stack([ct * cp, ct * sp, -st], -1)  # (n_i, 3)
        e_phi = np.stack([-sp, cp, np.zeros_like(sp)], -1)
        grads[i:i + chunk] = (dy[..., 0].T[:, :, None] * e_theta[:, None]
                              + (dy[..., 1] / st).T[:, :, None] * e_phi[:, None])
    return values, grads


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
        del out
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--l-max", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=10_000, help="scipy rows per call")
    parser.add_argument("--scipy-grad", action="store_true", help="also time scipy's gradients")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sphere = Sphere(2)
    x = sphere.random_uniform(args.n, rng=0)
    xn = x.numpy()
    ep = sphere.eigenpairs(args.l_max + 1)

    # Same numbers on both sides (checked on a slice, outside the timings).
    ours_v, ours_g = ep.values_and_grad(x[:1000])
    ref_v, ref_g = scipy_real_harmonics(xn[:1000], args.l_max, True, args.chunk)
    err_v = float(np.abs(ours_v.numpy() - ref_v).max())
    err_g = float(np.abs(ours_g.numpy() - ref_g).max() / np.abs(ref_g).max())

    t_ours = median_time(lambda: ep(x), args.repeats)
    t_scipy = median_time(lambda: scipy_real_harmonics(xn, args.l_max, False, args.chunk), args.repeats)
    t_ours_g = median_time(lambda: ep.values_and_grad(x), args.repeats)
    if args.scipy_grad:
        t_scipy_g = median_time(lambda: scipy_real_harmonics(xn, args.l_max, True, args.chunk),
                                args.repeats)
        scipy_g = f"{t_scipy_g:.3f} | {t_scipy_g / t_ours_g:.1f}x"
    else:
        scipy_g = "not run | -"

    print(f"max |values - scipy| = {err_v:.1e}; max |grad - scipy| / max |grad| = {err_g:.1e}")
    print("| n | l_max | K | threads | heatscore values (s) | scipy values (s) | ratio "
          "| heatscore values+grad (s) | scipy values+grad (s) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.n} | {args.l_max} | {len(ep)} | {args.threads} | {t_ours:.3f} | {t_scipy:.3f} "
          f"| {t_scipy / t_ours:.1f}x | {t_ours_g:.3f} | {scipy_g} |")


if __name__ == "__main__":
    main()
