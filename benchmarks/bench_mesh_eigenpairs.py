"""Mesh eigenpairs: heatscore's shift-invert solve vs plain ``eigsh(S, k, M, which="SM")``.

Both solve S φ = λ M φ for the k smallest eigenpairs of robust-laplacian's (S, M) on an
icosphere (subdivision 6: 40,962 vertices). heatscore factors S − σM once (σ < 0, symmetric
ordering) and runs Lanczos on its inverse; the baseline is scipy's default generalized mode at
its default tolerance, which converges slowly at the bottom of the spectrum. The baseline runs in
a subprocess killed after ``--baseline-timeout`` seconds: if it does not finish, its time is
reported as a lower bound (and so is the ratio). BLAS runs on one thread on both sides (heatscore
sets this itself; the baseline is given the same). Timings of heatscore are medians over
``--repeats``. Prints a markdown table row.

    python benchmarks/bench_mesh_eigenpairs.py [--subdivisions 6] [--k 100] [--repeats 3]
                                               [--baseline-timeout 600]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
from threadpoolctl import threadpool_limits

from heatscore.manifolds import TriangleMesh
from heatscore.manifolds._mesh_geometry import icosphere
from heatscore.manifolds.mesh import solve_eigenpairs


def baseline_child(folder, k):
    """Run plain eigsh(which="SM") on the saved (S, M); write its eigenvalues and time."""
    S = scipy.sparse.load_npz(os.path.join(folder, "S.npz"))
    M = scipy.sparse.load_npz(os.path.join(folder, "M.npz"))
    with threadpool_limits(limits=1, user_api="blas"):
        start = time.perf_counter()
        values = scipy.sparse.linalg.eigsh(S, k, M, which="SM", return_eigenvectors=False)
        elapsed = time.perf_counter() - start
    np.save(os.path.join(folder, "baseline_values.npy"), np.sort(values))
    with open(os.path.join(folder, "baseline.json"), "w") as fh:
        json.dump({"seconds": elapsed}, fh)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subdivisions", type=int, default=6)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline-timeout", type=float, default=600.0)
    parser.add_argument("--baseline-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_child:
        baseline_child(args.baseline_child, args.k)
        return

    mesh = TriangleMesh(*icosphere(args.subdivisions))
    S, M = mesh.stiffness, mesh.mass
    n = S.shape[0]
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        values, vectors = solve_eigenpairs(S, M, args.k)
        times.append(time.perf_counter() - start)
    ours = statistics.median(times)
    residual = np.abs(S @ vectors - (M @ vectors) * values).max(axis=0)
    rel_residual = float((residual[1:] / (values[1:] * np.abs(M @ vectors[:, 1:]).max(axis=0))).max())
    orthonormality = float(np.abs(vectors.T @ (M @ vectors) - np.eye(args.k)).max())

    with tempfile.TemporaryDirectory() as folder:
        scipy.sparse.save_npz(os.path.join(folder, "S.npz"), S)
        scipy.sparse.save_npz(os.path.join(folder, "M.npz"), M)
        command = [sys.executable, os.path.abspath(__file__), "--k", str(args.k),
                   "--baseline-child", folder]
        start = time.perf_counter()
        try:
            subprocess.run(command, check=True, timeout=args.baseline_timeout)
            with open(os.path.join(folder, "baseline.json")) as fh:
                baseline = json.load(fh)["seconds"]
            baseline_values = np.load(os.path.join(folder, "baseline_values.npy"))
            finished = True
        except subprocess.TimeoutExpired:
            baseline = time.perf_counter() - start
            baseline_values = None
            finished = False

    print(f"icosphere subdivision {args.subdivisions}: {n} vertices, k = {args.k} eigenpairs")
    print(f"heatscore shift-invert: median {ours:.2f} s over {args.repeats} "
          f"({', '.join(f'{t:.2f}' for t in times)}); max relative residual {rel_residual:.1e}, "
          f"max |UᵀMU − I| {orthonormality:.1e}")
    bound = "" if finished else ">= "
    status = "finished" if finished else f"killed after {args.baseline_timeout:.0f} s (lower bound)"
    print(f"scipy eigsh(which='SM'): {bound}{baseline:.2f} s, {status}")
    print(f"ratio (baseline / heatscore): {bound}{baseline / ours:.1f}x")
    if finished:
        diff = float(np.abs(values - baseline_values).max())
        print(f"max |λ_heatscore − λ_SM|: {diff:.2e} (λ_max = {values[-1]:.3f})")
        diff_text = f"{diff:.1e}"
    else:
        diff_text = "n/a (baseline unfinished)"
    print(f"| mesh eigenpairs (ico{args.subdivisions}, {n} v, k={args.k}) | {ours:.2f} s | "
          f"{bound}{baseline:.1f} s | {bound}{baseline / ours:.1f}x | {diff_text} |")


if __name__ == "__main__":
    main()
