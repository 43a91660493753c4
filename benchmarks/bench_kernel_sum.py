"""Kernel sums on S² at scale: heatscore's smoother beside scikit-learn's haversine KDE.

    python benchmarks/bench_kernel_sum.py                          # sizes 1e4 1e5 1e6, every part
    python benchmarks/bench_kernel_sum.py --sizes 1e4 1e5 1e6 1e7  # with the 1e7 targets
    python benchmarks/bench_kernel_sum.py --quick                  # 2000 points, 500 queries (< 1 min)
    python benchmarks/bench_kernel_sum.py --parts sizes memory --skip-sklearn-above 1e4

Data: n exact draws of a fixed 50-component vMF mixture on S² (heatscore/bench/kernel_sum.py);
log-density at 10^4 independent draws (another seed). heatscore: DiffusionKernelSmoother(Sphere(2),
time=2e-4) (and time="auto"); scikit-learn: KernelDensity(metric="haversine",
algorithm="ball_tree", bandwidth=sqrt(2t) = 0.02, rtol=1e-6 and rtol=0) on (lat, lon). Fit and
query are timed separately, every configuration in the same run, alternating, medians over
``--repeats``. Accuracy: max |Δ log p| against heatscore's route="dense" on the first
``--n-check`` queries (and the score's max relative error). Memory: each configuration in a fresh
process (this script's hidden ``--one`` mode), ru_maxrss after the fit and query minus ru_maxrss
after imports and data loading. Further rows: multiscale / auto evaluation cost at 1e5, the fire
model's log p + ∇ log p at 10^5 of its draws, 10^6 identical rows. Prints markdown tables and
the issue's targets, each met or not as measured (``--check``: exit status 1 if any is not met).
"""

import argparse
import json
import shlex
import sys

import torch

from heatscore.bench.kernel_sum import (fire_model, identical_rows, memory_one, memory_sizes,
                                        multiscale_ratio, report, targets, time_sizes, NOT_MET)

PARTS = ("sizes", "auto", "memory", "multiscale", "fire", "identical")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", type=float, default=[1e4, 1e5, 1e6])
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--n-check", type=int, default=300, help="queries checked against the dense route")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--skip-sklearn-above", type=float, default=1e5,
                   help="no scikit-learn above this n (0: never)")
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS),
                   help="auto: the time=\"auto\" fit and queries at every size (timing and memory)")
    p.add_argument("--multiscale-n", type=float, default=1e5)
    p.add_argument("--fire-draws", type=int, default=100_000)
    p.add_argument("--fire-points", type=int, default=None, help="fit on the first rows only (default: all)")
    p.add_argument("--fire-time", default="multiscale", choices=["auto", "multiscale"])
    p.add_argument("--identical-n", type=float, default=1e6)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true",
                   help="2000 points, 500 queries, 1 repeat; further rows on 2000 points (fire: its first 2000)")
    p.add_argument("--check", action="store_true", help="exit status 1 if a measured target is not met")
    p.add_argument("--one", help=argparse.SUPPRESS)  # a memory child: JSON config in, JSON out
    args = p.parse_args(argv)
    if args.one:
        print(json.dumps(memory_one(json.loads(args.one))))
        return 0
    torch.set_num_threads(args.threads)
    if args.quick:
        args.sizes, args.queries, args.repeats = [2000], 500, 1
        args.multiscale_n, args.fire_draws, args.fire_points, args.identical_n = 2000, 2000, 2000, 2000
    parts = set(args.parts)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731  (progress on stderr)
    res = {"threads": args.threads}
    if "sizes" in parts:
        res["sizes"] = time_sizes(args.sizes, args.queries, args.n_check, args.repeats,
                                  args.skip_sklearn_above, with_auto="auto" in parts, out=log)
    if "memory" in parts:
        res["memory"] = memory_sizes(args.sizes, __file__, args.queries, args.skip_sklearn_above,
                                     with_auto="auto" in parts, threads=args.threads, out=log)
    if "multiscale" in parts:
        res["multiscale"] = multiscale_ratio(int(args.multiscale_n), args.queries, args.repeats)
        log("multiscale: done")
    if "fire" in parts:
        res["fire"] = fire_model(args.fire_draws, args.fire_time, args.repeats, args.fire_points)
        log("fire: done")
    if "identical" in parts:
        res["identical"] = identical_rows(int(args.identical_n))
        log("identical rows: done")
    command = "python benchmarks/bench_kernel_sum.py " + " ".join(map(shlex.quote, sys.argv[1:] if argv is None else argv))
    report(res, command.strip())
    if args.check and any(status == NOT_MET for _, _, status in targets(res)):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
