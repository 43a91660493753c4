"""Earth-science benchmark on S² (see heatscore/bench/earth.py for the protocols).

    python benchmarks/bench_earth.py                         # 90%: 4 data sets x 3 t_min x 5 seeds
    python benchmarks/bench_earth.py --quick                 # 90%: 1 seed, t_min = 1e-8
    python benchmarks/bench_earth.py --protocol published    # fit 80%, choose on validation, 5 seeds
    python benchmarks/bench_earth.py --protocol published --quick   # 1 seed, t_min 1e-8 and 1e-6
"""

import argparse

import torch

from heatscore.bench.earth import CANDIDATES, run, run_published

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--datasets", nargs="*", default=["volcano", "earthquake", "flood", "fire"])
    p.add_argument("--time", default="auto", choices=["auto", "multiscale"],
                   help="time mode of the 90%% protocol (the published one chooses it on validation)")
    p.add_argument("--protocol", default="90", choices=["90", "published"])
    p.add_argument("--seeds", type=int, default=5)
    args = p.parse_args()
    torch.set_num_threads(2)
    if args.protocol == "published":
        candidates = [c for c in CANDIDATES if c[1] in (1e-8, 1e-6)] if args.quick else CANDIDATES
        run_published(args.datasets, seeds=[0] if args.quick else range(args.seeds), candidates=candidates)
    elif args.quick:
        run(args.datasets, seeds=[0], t_mins=[1e-8], time_mode=args.time)
    else:
        run(args.datasets, seeds=range(args.seeds), time_mode=args.time)
