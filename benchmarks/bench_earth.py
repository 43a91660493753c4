"""Earth-science benchmark on S² (see heatscore/bench/earth.py for the protocol).

    python benchmarks/bench_earth.py            # 4 data sets x 3 t_min x 5 seeds
    python benchmarks/bench_earth.py --quick    # 1 seed, t_min = 1e-8
"""

import argparse

import torch

from heatscore.bench.earth import run

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--datasets", nargs="*", default=["volcano", "earthquake", "flood", "fire"])
    p.add_argument("--time", default="auto", choices=["auto", "multiscale"])
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.quick:
        run(args.datasets, seeds=[0], t_mins=[1e-8], time_mode=args.time)
    else:
        run(args.datasets, time_mode=args.time)
