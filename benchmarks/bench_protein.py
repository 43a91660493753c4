"""Protein backbone benchmark on T² and SO(3) (see heatscore/bench/protein.py for the protocol).

    python benchmarks/bench_protein.py                    # 5 data sets x 5 seeds, all methods
    python benchmarks/bench_protein.py --quick            # 1 seed, at most 1000 points per set
    python benchmarks/bench_protein.py --figures docs   # also the two pictures
"""

import argparse
import os

import torch

from heatscore.bench.protein import DATASETS, METHODS, figures, run

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--nn-steps", type=int, default=200, help="Adam steps of the OISM-residual network")
    p.add_argument("--ode-steps", type=int, default=50, help="probability-flow steps of the OISM likelihoods")
    p.add_argument("--figures", metavar="DIR", help="write ramachandran.png and so3_axis_angle.png there")
    args = p.parse_args()
    torch.set_num_threads(2)
    print(f"load average {os.getloadavg()[0]:.2f}; nn_steps {args.nn_steps}, ode_steps {args.ode_steps}")
    if args.quick:
        run(args.datasets, seeds=[0], methods=args.methods, nn_steps=args.nn_steps,
            ode_steps=args.ode_steps, max_points=1000)
    else:
        run(args.datasets, seeds=range(args.seeds), methods=args.methods, nn_steps=args.nn_steps,
            ode_steps=args.ode_steps)
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.figures:
        for path in figures(args.figures):
            print(f"wrote {path} ({os.path.getsize(path) / 1e3:.0f} kB)")
