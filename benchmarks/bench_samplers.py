"""Reverse-SDE geodesic random walk: heatscore's ``reverse_sde`` vs the same walk on geomstats.

    python benchmarks/bench_samplers.py [--n 10000] [--steps 100] [--repeats 5]
                                        [--geomstats-repeats 3] [--so3-geomstats-repeats 1]

Both sides run the same reverse-time step on the same batch of particles,

    y ← exp_y(h(−b(y) + 2 s(y)) + √(2h) ξ),   ξ ~ N(0, I) in T_yM,

for ``--steps`` uniform steps from T = 1 to 0, with the same cheap closed-form score s (a
tangent field, so the timing is the sampler's): s = κ P_y(a) on S² (von Mises–Fisher), the
von Mises field −κ sin(θ − μ) on T² (κ P_y(a) on geomstats' product of circles), the matrix
Fisher score 2κ R skew(RᵀA) on SO(3), s = −y/σ² on R^64 (with the OU drift b = −y), and
κ P_y(a) on a mesh (icosphere(4), 2562 vertices; geomstats has no mesh, so no ratio there).
heatscore's figure is the public ``reverse_sde`` (input validation and the per-step score
checks included), torch float64 on the CPU; the baseline is a numpy loop over geomstats'
``metric.exp`` and ``to_tangent`` (numpy backend), its noise projected ambient Gaussians
(scaled on SO(3) so both draw ω ~ N(0, I₃)). Samples per second = n / (wall time of one run).
Timings are medians over repeats after one untimed warm-up; both sides single-threaded unless
OMP_NUM_THREADS is set. The last column compares a statistic of the two outputs (the mean of
the first ambient coordinate) in standard errors, as a check that both run the same walk.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch are imported

import argparse  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh  # noqa: E402
from heatscore.manifolds._mesh_geometry import icosphere  # noqa: E402
from heatscore.samplers import reverse_sde, time_grid  # noqa: E402

KAPPA = 4.0
SIGMA = 0.5


def median_time(fn, repeats):
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up; returns (seconds, result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def cases():
    """(name, heatscore manifold, torch score, geomstats space or None, numpy score, noise scale)."""
    a3 = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    A = torch.tensor([[0.2, -0.4, 0.1], [0.5, 0.3, -0.2], [0.0, 0.6, 0.4]], dtype=torch.float64)
    mu2 = torch.tensor([1.0, 4.0], dtype=torch.float64)
    out = []

    s2 = Sphere(2)
    space = s2.to_geomstats()
    out.append(("S²", s2, lambda x, t: KAPPA * s2._proj(x, a3.expand_as(x)), space,
                lambda p: KAPPA * space.to_tangent(np.broadcast_to(a3.numpy(), p.shape), p), 1.0))

    t2 = Torus(2)
    space_t = t2.to_geomstats()
    circle_a = torch.stack([torch.cos(mu2), torch.sin(mu2)], dim=-1).numpy()
    out.append(("T²", t2, lambda x, t: -KAPPA * torch.sin(x - mu2), space_t,
                lambda p: KAPPA * space_t.to_tangent(np.broadcast_to(circle_a, p.shape), p), 1.0))

    so3 = SO3()
    space_r = so3.to_geomstats()
    out.append(("SO(3)", so3, lambda x, t: 2 * KAPPA * so3._proj(x, A.expand_as(x)), space_r,
                lambda p: 2 * KAPPA * space_r.to_tangent(np.broadcast_to(A.numpy(), p.shape), p),
                math.sqrt(2.0)))

    r64 = Euclidean(64)
    space_e = r64.to_geomstats()
    out.append(("R^64", r64, lambda x, t: -x / SIGMA ** 2, space_e, lambda p: -p / SIGMA ** 2, 1.0))

    mesh = TriangleMesh(*icosphere(4))
    out.append(("mesh (icosphere(4))", mesh, lambda x, t: KAPPA * mesh._proj(x, a3.expand_as(x)),
                None, None, 1.0))
    return out


def geomstats_walk(space, score_np, p0, times, noise_scale, euclidean_drift, seed):
    """The same reverse step with geomstats' exp and to_tangent (numpy backend)."""
    rng = np.random.default_rng(seed)
    p = p0
    for t, t_next in zip(times[:-1], times[1:]):
        h = t - t_next
        xi = noise_scale * space.to_tangent(rng.standard_normal(p.shape), p)
        step = 2 * h * score_np(p) + math.sqrt(2 * h) * xi
        if euclidean_drift:
            step = step + h * p
        p = space.metric.exp(step, p)
    return p


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="particles")
    parser.add_argument("--steps", type=int, default=100, help="reverse steps")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats for heatscore")
    parser.add_argument("--geomstats-repeats", type=int, default=3, help="timed repeats for geomstats")
    parser.add_argument("--so3-geomstats-repeats", type=int, default=1,
                        help="timed repeats for geomstats on SO(3) (its matrix exponential is slow)")
    parser.add_argument("--mesh-repeats", type=int, default=1, help="timed repeats on the mesh")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    times = time_grid(1.0, 0.0, args.steps)
    times_list = times.tolist()
    print(f"reverse_sde: {args.n} particles × {args.steps} steps, float64, CPU, "
          f"torch threads = {torch.get_num_threads()}, OMP_NUM_THREADS = {os.environ['OMP_NUM_THREADS']}")
    print()
    print("| manifold | heatscore (samples/s) | geomstats walk (samples/s) | ratio | repeats (ours/gs) "
          "| same walk (|Δ mean| / SE) |")
    print("|---|---|---|---|---|---|")
    for name, m, score, space, score_np, noise_scale in cases():
        x0 = m.sample_stationary(args.n, rng=args.seed)
        repeats = args.mesh_repeats if space is None else args.repeats
        ours, y = median_time(lambda: reverse_sde(m, score, x0, times, rng=args.seed + 1), repeats)
        ours_rate = args.n / ours
        if space is None:
            print(f"| {name} | {ours_rate:,.0f} | — | — | {repeats}/— | — |")
            continue
        if isinstance(m, Torus):
            p0 = m.to_geomstats_points(x0)
        else:
            p0 = x0.numpy()
        gs_repeats = args.so3_geomstats_repeats if isinstance(m, SO3) else args.geomstats_repeats
        theirs, p = median_time(lambda: geomstats_walk(space, score_np, p0, times_list, noise_scale,
                                                       isinstance(m, Euclidean), args.seed + 2),
                                gs_repeats)
        theirs_rate = args.n / theirs
        ours_pts = y.reshape(args.n, -1).numpy()
        theirs_pts = (m.from_geomstats_points(p).numpy() if isinstance(m, Torus) else p).reshape(args.n, -1)
        if isinstance(m, Torus):                                  # compare cos θ₁ (angles wrap)
            ours_stat, theirs_stat = np.cos(ours_pts[:, 0]), np.cos(theirs_pts[:, 0])
        else:
            ours_stat, theirs_stat = ours_pts[:, 0], theirs_pts[:, 0]
        se = math.sqrt((ours_stat.var() + theirs_stat.var()) / args.n)
        z = abs(ours_stat.mean() - theirs_stat.mean()) / se
        print(f"| {name} | {ours_rate:,.0f} | {theirs_rate:,.0f} | {ours_rate / theirs_rate:.1f}× "
              f"| {repeats}/{gs_repeats} | {z:.1f} |")


if __name__ == "__main__":
    main()
