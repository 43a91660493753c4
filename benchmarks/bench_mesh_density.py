"""Mesh density estimation on refined Spot (see heatscore/bench/mesh.py for the recipe).

    python benchmarks/bench_mesh_density.py [--subdivisions 3] [--ks 10 50 100] [--n 100000]
                                            [--seed 0]
"""

import argparse

from heatscore.bench.mesh import run

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subdivisions", type=int, default=3)
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 50, 100])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    run(args.subdivisions, args.ks, args.n, args.seed)
