"""Reverse-SDE geodesic random walk: heatscore's ``reverse_sde`` vs the same walk on geomstats.

    python benchmarks/bench_samplers.py [--n 10000] [--steps 100] [--repeats 7]
                                        [--so3-repeats 1] [--mesh-repeats 1]
                                        [--loop-particles 100] [--only S2 T2 SO3 R64 mesh]
                                        [--clock wall|process]

Both sides run the same reverse-time step on the same batch of particles,

    y ← exp_y(h(−b(y) + 2 s(y)) + √(2h) ξ),   ξ ~ N(0, I) in T_yM,

for ``--steps`` uniform steps from T = 1 to 0, with the same cheap closed-form score s (a
tangent field, so the timing is the sampler's): s = κ P_y(a) on S² (von Mises–Fisher), the
von Mises field −κ sin(θ − μ) on T² (κ P_y(a) on geomstats' product of circles), the matrix
Fisher score 2κ R skew(RᵀA) on SO(3), s = −y/σ² on R^64 (with the OU drift b = −y), and
κ P_y(a) on a mesh (icosphere(4), 2562 vertices; geomstats has no mesh).
heatscore's figure is the public ``reverse_sde`` (input validation and the per-step score
checks included), torch float64 on the CPU (on S², T² and R^64 its noise is drawn in float32
and added to the float64 step, see ``standard_normal``; on SO(3) and the mesh in float64); the
baseline is a numpy loop over geomstats' ``metric.exp`` and ``to_tangent`` (numpy backend), its
noise projected ambient Gaussians (scaled on SO(3) so both draw ω ~ N(0, I₃)), drawn as numpy's
float64 ``standard_normal`` and, in a second column, as numpy's float32 one (the same precision as
ours). Samples per second = n / (time of one run: wall time, or with ``--clock process`` this
process's CPU time). The sides' runs alternate (ours, geomstats, geomstats float32, ours, …), so
a machine whose speed drifts affects both alike; timings are medians over repeats after one
untimed warm-up; both sides single-threaded unless OMP_NUM_THREADS is set. The secondary
baseline is a per-particle Python loop (``--loop-particles`` of the particles, one at a time, its
samples/s per particle): the geomstats walk on a batch of one, and on the mesh potpourri3d's
``GeodesicTracer`` (see ``per_particle_mesh_walk``). The last column
compares a statistic of the two outputs (the mean of the first ambient coordinate) in standard
errors, as a check that both run the same walk.

A second table splits each step (ms per step, medians) into the parts neither side can skip:
the noise (ours: the draw our walk makes, ``standard_normal`` in float32 on S^d, T^d and R^d; the
baseline's: numpy's float64 ziggurat ``standard_normal``), the score call and the exponential map (ours:
the one our walk applies, ``_SphereStep.exp`` on S^d, ``m._exp`` elsewhere; geomstats: ``metric.exp``;
ours on S² on column-major points, the walk's layout),
and bounds on the ratio: the baseline's step over
(a) our noise alone (the ratio if the rest of our step were free), (b) numpy's noise alone (a
walk whose only cost is drawing its normals as fast as the baseline does), (c) numpy's noise +
our score + our exp (a walk made of these three parts and nothing else).
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
from heatscore._validation import standard_normal  # noqa: E402
from heatscore.manifolds._sphere_walk import _SphereStep  # noqa: E402

KAPPA = 4.0
SIGMA = 0.5
#: ``--only`` keys of the manifolds' table names.
KEYS = {"S2": "S²", "T2": "T²", "SO3": "SO(3)", "R64": "R^64", "mesh": "mesh (icosphere(4))"}


#: The clock of ``median_time``: wall time, or this process's CPU time (``--clock process``, steadier
#: on a loaded machine, the same for single-threaded work on an idle one).
CLOCK = {"wall": time.perf_counter, "process": time.process_time}
clock = CLOCK["wall"]


def median_time(fn, repeats):
    """Median time of ``fn()`` over ``repeats`` calls after one warm-up; returns (seconds, result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = clock()
        result = fn()
        times.append(clock() - start)
    return statistics.median(times), result


def alternating_medians(fns, repeats):
    """Median time of each of ``fns`` over ``repeats`` rounds that call them in turn (after one
    warm-up round), so a drifting machine speed hits them alike; returns (seconds, results)."""
    results = [fn() for fn in fns]
    times = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = clock()
            results[i] = fn()
            times[i].append(clock() - start)
    return [statistics.median(t) for t in times], results


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


def geomstats_walk(space, score_np, p0, times, noise_scale, euclidean_drift, seed, noise_dtype=np.float64):
    """The same reverse step with geomstats' exp and to_tangent (numpy backend), normals drawn
    in ``noise_dtype``."""
    rng = np.random.default_rng(seed)
    p = p0
    for t, t_next in zip(times[:-1], times[1:]):
        h = t - t_next
        xi = noise_scale * space.to_tangent(rng.standard_normal(p.shape, dtype=noise_dtype), p)
        step = 2 * h * score_np(p) + math.sqrt(2 * h) * xi
        if euclidean_drift:
            step = step + h * p
        p = space.metric.exp(step, p)
    return p


def per_particle_walk(space, score_np, p0, times, noise_scale, euclidean_drift, seed):
    """The geomstats walk run one particle at a time (a Python loop over particles)."""
    return np.concatenate([geomstats_walk(space, score_np, p0[i:i + 1], times, noise_scale,
                                          euclidean_drift, seed + i) for i in range(p0.shape[0])])


class FaceLocator:
    """A point on the mesh → (face, barycentric) by a KD-tree over face centroids: of the 8
    nearest faces, the one whose barycentric coordinates of the point's projection have the
    largest minimum (what a user of potpourri3d's tracer, which returns only a polyline, writes
    to continue from its end point)."""

    def __init__(self, V, F):
        from scipy.spatial import cKDTree
        self.V, self.F = V, F
        self.tree = cKDTree(V[F].mean(axis=1))

    def __call__(self, p):
        best = None
        for f in self.tree.query(p, k=8)[1]:
            A, B, C = self.V[self.F[f]]
            e0, e1, q = B - A, C - A, p - A
            d00, d01, d11, d20, d21 = e0 @ e0, e0 @ e1, e1 @ e1, q @ e0, q @ e1
            den = d00 * d11 - d01 * d01
            b1, b2 = (d11 * d20 - d01 * d21) / den, (d00 * d21 - d01 * d20) / den
            bary = np.array([1.0 - b1 - b2, b1, b2])
            if best is None or bary.min() > best[1].min():
                best = (int(f), bary)
        return best


def per_particle_mesh_walk(tracer, locate, normals, a, x0, times, seed):
    """The mesh walk one particle at a time on potpourri3d's ``GeodesicTracer``: the step
    2h κ P(a) + √(2h) P ξ (P the face plane's projection, ξ ~ N(0, I₃)) traced from the
    particle's (face, barycentric), the end point of the returned polyline located again
    (:class:`FaceLocator`) for the next step."""
    rng = np.random.default_rng(seed)
    out = []
    for x in x0:
        f, b = locate(x)
        end = x
        for t, t_next in zip(times[:-1], times[1:]):
            h = t - t_next
            n = normals[f]
            v = 2 * h * KAPPA * a + math.sqrt(2 * h) * rng.standard_normal(3)
            end = tracer.trace_geodesic_from_face(f, b, v - (v @ n) * n)[-1]
            f, b = locate(end)
        out.append(end)
    return np.array(out)


def our_noise(m):
    """The per-step noise draw of heatscore's walk on ``m``: ``(points, generator) -> tensor``."""
    if isinstance(m, (Euclidean, Sphere, Torus)):
        return lambda y, gen: standard_normal(gen, y.shape)
    return lambda y, gen: m._random_tangent_normal(y, gen)


def walk_layout(x):
    """``x`` stored column-major, as the sphere walk keeps its iterates (see ``_column_major_unit``)."""
    return x.T.contiguous().T


def our_exp(m, x):
    """The exponential map of heatscore's walk on ``m`` at points like ``x`` (on S^d the walk
    step's own, on its unit column-major iterates)."""
    if isinstance(m, Sphere):
        step = _SphereStep(walk_layout(x), 1.0)
        return lambda y, v: step.exp(y, v, 1.0)
    return m._exp


def per_step(fn, steps, repeats):
    """Median milliseconds of one of ``steps`` consecutive calls of ``fn(k)``."""
    def run():
        for k in range(steps):
            fn(k)
    return 1e3 * median_time(run, repeats)[0] / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="particles")
    parser.add_argument("--steps", type=int, default=100, help="reverse steps")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (each side once per round)")
    parser.add_argument("--so3-repeats", type=int, default=1,
                        help="timed rounds on SO(3) (geomstats' matrix exponential is slow)")
    parser.add_argument("--mesh-repeats", type=int, default=1, help="timed repeats on the mesh")
    parser.add_argument("--loop-particles", type=int, default=100,
                        help="particles of the per-particle loop (its samples/s is per particle)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=sorted(KEYS), default=sorted(KEYS),
                        help="the manifolds to run (default: all)")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="wall",
                        help="wall time, or CPU time of this process (steadier on a loaded machine)")
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]

    times = time_grid(1.0, 0.0, args.steps)
    times_list = times.tolist()
    print(f"reverse_sde: {args.n} particles × {args.steps} steps, float64, CPU, "
          f"torch threads = {torch.get_num_threads()}, OMP_NUM_THREADS = {os.environ['OMP_NUM_THREADS']}, "
          f"clock = {args.clock}, load average = {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| manifold | heatscore (samples/s) | geomstats walk (samples/s) | ratio "
          "| geomstats walk, float32 normals (samples/s) | ratio | per-particle loop (samples/s) | ratio "
          "| rounds | same walk (|Δ mean| / SE) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    breakdown = []
    wanted = {KEYS[key] for key in args.only}
    for name, m, score, space, score_np, noise_scale in cases():
        if name not in wanted:
            continue
        x0 = m.sample_stationary(args.n, rng=args.seed)

        def ours():
            return reverse_sde(m, score, x0, times, rng=args.seed + 1)
        if space is None:                    # the mesh: potpourri3d's tracer, one particle at a time
            import potpourri3d as pp3d
            V, F = m.vertices.numpy(), m.faces.numpy()
            normals = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
            normals /= np.linalg.norm(normals, axis=1, keepdims=True)
            tracer, a3 = pp3d.GeodesicTracer(V, F), np.array([0.3, -0.5, 0.8])
            seconds, y = median_time(ours, args.mesh_repeats)
            loop, _ = median_time(lambda: per_particle_mesh_walk(
                tracer, FaceLocator(V, F), normals, a3, x0[:args.loop_particles].numpy(), times_list,
                args.seed + 3), 1)
            loop_rate = args.loop_particles / loop
            print(f"| {name} | {args.n / seconds:,.0f} | — | — | — | — | {loop_rate:,.0f} "
                  f"| {args.n / seconds / loop_rate:,.0f}× | {args.mesh_repeats} | — |")
            continue
        p0 = m.to_geomstats_points(x0) if isinstance(m, Torus) else x0.numpy()
        rounds = args.so3_repeats if isinstance(m, SO3) else args.repeats

        def theirs(dtype):
            return lambda: geomstats_walk(space, score_np, p0, times_list, noise_scale,
                                          isinstance(m, Euclidean), args.seed + 2, dtype)
        (t_ours, t_gs, t_gs32), (y, p, _) = alternating_medians(
            [ours, theirs(np.float64), theirs(np.float32)], rounds)
        loop, _ = median_time(lambda: per_particle_walk(space, score_np, p0[:args.loop_particles],
                                                        times_list, noise_scale, isinstance(m, Euclidean),
                                                        args.seed + 3), 1)
        loop_rate = args.loop_particles / loop
        ours_pts = y.reshape(args.n, -1).numpy()
        theirs_pts = (m.from_geomstats_points(p).numpy() if isinstance(m, Torus) else p).reshape(args.n, -1)
        if isinstance(m, Torus):                                  # compare cos θ₁ (angles wrap)
            ours_stat, theirs_stat = np.cos(ours_pts[:, 0]), np.cos(theirs_pts[:, 0])
        else:
            ours_stat, theirs_stat = ours_pts[:, 0], theirs_pts[:, 0]
        se = math.sqrt((ours_stat.var() + theirs_stat.var()) / args.n)
        z = abs(ours_stat.mean() - theirs_stat.mean()) / se
        print(f"| {name} | {args.n / t_ours:,.0f} | {args.n / t_gs:,.0f} | {t_gs / t_ours:.1f}× "
              f"| {args.n / t_gs32:,.0f} | {t_gs32 / t_ours:.1f}× | {loop_rate:,.0f} "
              f"| {args.n / t_ours / loop_rate:,.0f}× | {rounds} | {z:.1f} |")
        gen, rng = torch.Generator().manual_seed(args.seed), np.random.default_rng(args.seed)
        draw, exp = our_noise(m), our_exp(m, x0)
        scale = math.sqrt(2 * (times_list[0] - times_list[1]))             # a typical step's length
        v0 = scale * m._random_tangent_normal(x0, gen)
        xw, vw = (walk_layout(x0), walk_layout(v0)) if isinstance(m, Sphere) else (x0, v0)
        v0_np = scale * noise_scale * space.to_tangent(rng.standard_normal(p0.shape), p0)
        parts = [per_step(fn, args.steps, rounds) for fn in (
            lambda k: draw(x0, gen), lambda k: rng.standard_normal(p0.shape),
            lambda k: score(xw, times_list[k]), lambda k: score_np(p0),
            lambda k: exp(xw, vw), lambda k: space.metric.exp(v0_np, p0))]
        breakdown.append((name, 1e3 * t_ours / args.steps, 1e3 * t_gs / args.steps, *parts))
    if not breakdown:
        return
    print()
    print("ms per step; bounds on the ratio: the baseline's step over (a) our noise alone, (b) numpy's "
          "noise alone, (c) numpy's noise + our score + our exp")
    print()
    print("| manifold | step ours / gs | noise ours / numpy | score ours / gs | exp ours / gs "
          "| bound (a) | bound (b) | bound (c) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, step, step_gs, noise, noise_np, sc, sc_gs, ex, ex_gs in breakdown:
        print(f"| {name} | {step:.2f} / {step_gs:.2f} | {noise:.2f} / {noise_np:.2f} | {sc:.2f} / {sc_gs:.2f} "
              f"| {ex:.2f} / {ex_gs:.2f} | {step_gs / noise:.1f}× | {step_gs / noise_np:.1f}× "
              f"| {step_gs / (noise_np + sc + ex):.1f}× |")
    print()
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")

if __name__ == "__main__":
    main()
