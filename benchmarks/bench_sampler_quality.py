"""Sample quality of the reverse-time geodesic random walk against step count (Earth data, S²).

    python benchmarks/bench_sampler_quality.py [--dataset volcano] [--n 1000]
        [--steps 10 30 100 300 1000] [--t-end-factor 1.0] [--exact-repeats 3]
        [--permutations 200] [--repeats 3] [--repeat-budget 10] [--seed 0]

Protocol. ``DiffusionKernelSmoother(Sphere(2), time="auto")`` is fitted to the data set; t* is
its fitted time. The target is the forward marginal p̂_{t_end} at the stated end time
t_end = ``--t-end-factor`` × t*, whose exact draws are ``est.sample(n)`` (draws of p̂) noised
by ``sample_heat_kernel(m, ·, t_end)``. For each step count, ``reverse_sde`` runs the walk on
``--n`` particles from the uniform law at T = DEFAULT_MIXING/λ_1 down to t_end on the geometric
grid ``default_times(m, t_end, steps, "geometric")``, with the closed-form score
``est.grad_log_density``. Its output is compared with one fixed reference set of ``--n`` exact
draws by ``mmd_permutation_test`` (heat-kernel MMD², kernel time 1e-4, unbiased, so it is 0 in
expectation for equal laws). The exact-draw level is the same test between ``--exact-repeats``
fresh exact-draw sets and the same reference set: mean and standard deviation of their MMD².

Rule. A step count reaches the exact-draw level when its p-value is ≥ 0.05 and its MMD² is at
most the exact-draw mean + 2 sd (sd: the spread of one exact-vs-reference MMD², the noise of a
single estimate). The conclusion reports the fewest listed steps that reach it.

Timings: the walk's wall time, the median over runs (the first run's output is the one tested;
further runs, up to ``--repeats`` in all, only while one run takes under ``--repeat-budget``
seconds). Single-threaded unless OMP_NUM_THREADS is set.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch are imported

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from heatscore.datasets import load_earth  # noqa: E402
from heatscore.estimators import DiffusionKernelSmoother  # noqa: E402
from heatscore.heat_kernels import mmd_permutation_test, sample_heat_kernel  # noqa: E402
from heatscore.manifolds import Sphere  # noqa: E402
from heatscore.samplers import default_times, reverse_sde  # noqa: E402

KERNEL_TIME = 1e-4
ALPHA = 0.05


def exact_draws(m, est, n, t_end, seed):
    """(n, 3) exact draws of p̂_{t_end}: draws of p̂, then the exact forward noising for t_end."""
    gen = torch.Generator().manual_seed(seed)
    return sample_heat_kernel(m, est.sample(n, rng=gen), t_end, rng=gen)


def timed_walk(m, est, n, times, seed, repeats, budget):
    """(median wall time, runs, samples of the first run) of ``reverse_sde`` on ``times``."""
    walls, first = [], None
    while len(walls) < repeats and (not walls or walls[-1] < budget):
        start = time.perf_counter()
        y = reverse_sde(m, est.grad_log_density, n, times, rng=seed)
        walls.append(time.perf_counter() - start)
        first = y if first is None else first
    return statistics.median(walls), len(walls), first


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="volcano", help="Earth data set (load_earth name)")
    parser.add_argument("--n", type=int, default=1000, help="particles = exact draws per set")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    parser.add_argument("--t-end-factor", type=float, default=1.0, help="t_end = factor × t*")
    parser.add_argument("--exact-repeats", type=int, default=3, help="exact-vs-reference tests")
    parser.add_argument("--permutations", type=int, default=200, help="permutations per test")
    parser.add_argument("--repeats", type=int, default=3, help="most timed runs per step count")
    parser.add_argument("--repeat-budget", type=float, default=10.0,
                        help="repeat a run only while one takes under this many seconds")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    m = Sphere(2)
    X = load_earth(args.dataset)
    start = time.perf_counter()
    est = DiffusionKernelSmoother(m, time="auto").fit(X)
    fit_s = time.perf_counter() - start
    t_star = float(est.time_)
    t_end = args.t_end_factor * t_star
    T = float(default_times(m, t_end, 1, "geometric")[0])
    print(f"{args.dataset}: {X.shape[0]} points, fitted t* = {t_star:.4g} (fit {fit_s:.1f} s); "
          f"t_end = {args.t_end_factor:g} t* = {t_end:.4g}; T = {T:g}; geometric grids; "
          f"{args.n} particles vs {args.n} exact draws; heat-kernel MMD² at kernel time "
          f"{KERNEL_TIME:g}, {args.permutations} permutations; torch threads = "
          f"{torch.get_num_threads()}")
    print()

    reference = exact_draws(m, est, args.n, t_end, args.seed)
    exact_mmd, exact_p = [], []
    for r in range(args.exact_repeats):
        E = exact_draws(m, est, args.n, t_end, args.seed + 1 + r)
        value, p = mmd_permutation_test(m, E, reference, KERNEL_TIME, n_permutations=args.permutations,
                                        rng=args.seed + 100 + r)
        exact_mmd.append(float(value))
        exact_p.append(p)
    level_mean = statistics.mean(exact_mmd)
    level_sd = statistics.stdev(exact_mmd) if len(exact_mmd) > 1 else 0.0
    threshold = level_mean + 2 * level_sd

    print("| steps | wall time (s, median) | runs | MMD² | p-value | reaches exact level |")
    print("|---|---|---|---|---|---|")
    for r, (value, p) in enumerate(zip(exact_mmd, exact_p)):
        print(f"| exact draws #{r + 1} | — | — | {value:.3e} | {p:.3f} | — |")
    fewest = None
    for i, steps in enumerate(args.steps):
        times = default_times(m, t_end, steps, "geometric")
        wall, runs, Y = timed_walk(m, est, args.n, times, args.seed + 1000 + i, args.repeats,
                                   args.repeat_budget)
        value, p = mmd_permutation_test(m, Y, reference, KERNEL_TIME, n_permutations=args.permutations,
                                        rng=args.seed + 2000 + i)
        value = float(value)
        reached = p >= ALPHA and value <= threshold
        if reached and fewest is None:
            fewest = steps
        print(f"| {steps} | {wall:.2f} | {runs} | {value:.3e} | {p:.3f} | {'yes' if reached else 'no'} |",
              flush=True)

    print()
    print(f"Exact-draw level: MMD² = {level_mean:.3e} ± {level_sd:.3e} (mean ± sd over "
          f"{len(exact_mmd)} exact-vs-reference tests); threshold mean + 2 sd = {threshold:.3e}, "
          f"and p ≥ {ALPHA:g}.")
    if fewest is None:
        print(f"Conclusion: no listed step count reaches the exact-draw level at t_end = "
              f"{t_end:.4g} ({args.t_end_factor:g} t*).")
    else:
        print(f"Conclusion: {fewest} geometric steps (T = {T:g} → t_end = {t_end:.4g} = "
              f"{args.t_end_factor:g} t*) are the fewest listed that reach the exact-draw level.")


if __name__ == "__main__":
    main()
