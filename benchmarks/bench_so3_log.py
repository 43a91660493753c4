"""SO(3) logarithm: heatscore vs geomstats, same run; plus the cost of the Wigner-D eigenpairs.

    python benchmarks/bench_so3_log.py [--n 10000] [--repeats 15] [--geomstats-repeats 3]

Times are medians over repeats (one untimed warm-up each). heatscore's figure is the public
``SO3().log`` (input validation included) on float64 torch tensors on the CPU; geomstats' is
``SpecialOrthogonal(3).metric.log`` (matrix form, numpy backend) on the same pairs.

Both libraries run single-threaded unless OMP_NUM_THREADS is set: the work is 3×3 matrices, and
on a shared machine BLAS threads only add contention (geomstats' per-pair matrix logarithm was
30× slower with 2 threads under load).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy/torch are imported

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from _timing import median_time  # noqa: E402

from heatscore.manifolds import SO3  # noqa: E402


def warm_median_time(fn, repeats):
    """``median_time`` after one warm-up call: (seconds, result)."""
    fn()
    return median_time(fn, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="number of (base, target) pairs")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats for heatscore")
    parser.add_argument("--geomstats-repeats", type=int, default=3, help="timed repeats for geomstats (slow)")
    parser.add_argument("--n-levels", type=int, default=8, help="eigenpairs levels for the second timing")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    so3 = SO3()
    gen = torch.Generator().manual_seed(args.seed)
    base, target = so3.random_uniform(args.n, rng=gen), so3.random_uniform(args.n, rng=gen)
    base_np, target_np = base.numpy(), target.numpy()
    space = so3.to_geomstats()

    ours, log_ours = warm_median_time(lambda: so3.log(base, target), args.repeats)
    theirs, log_theirs = warm_median_time(lambda: space.metric.log(target_np, base_np), args.geomstats_repeats)
    diff = float(np.abs(log_ours.numpy() - log_theirs).max())

    print(f"SO(3) log of {args.n} pairs, float64, CPU, torch threads = {torch.get_num_threads()}")
    print(f"  heatscore SO3().log                      {ours * 1e3:10.3f} ms  (median of {args.repeats})")
    print(f"  geomstats SpecialOrthogonal(3).metric.log {theirs * 1e3:10.1f} ms  "
          f"(median of {args.geomstats_repeats})")
    print(f"  ratio geomstats / heatscore               {theirs / ours:10.0f}x")
    print(f"  max |log_heatscore - log_geomstats|       {diff:10.2e}")

    ep = so3.eigenpairs(args.n_levels)
    values_time, values = warm_median_time(lambda: ep(base), args.repeats)
    print(f"SO(3) eigenpairs(n_levels={args.n_levels}) values at {args.n} rotations "
          f"(K = {len(ep)}, output {tuple(values.shape)}): {values_time * 1e3:.1f} ms "
          f"(median of {args.repeats})")


if __name__ == "__main__":
    main()
