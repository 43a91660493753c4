"""Mesh density estimation on refined Spot: heatscore's heat-diffused P1 histogram vs the truth.

Recipe (heatscore/datasets/data README, stated exactly): Spot refined by ``--subdivisions``
rounds of flat midpoint subdivision (each triangle split into four at its edge midpoints);
robust-laplacian's (L, M) on the refined mesh; the k-th non-constant eigenfunction φ_k of
L φ = λ M φ (k = 10, 50, 100), signed so that its entry of largest magnitude is positive; face
value = mean of φ_k over the face's corners, clipped at 0; the true density w.r.t. area is
∝ the clipped face value (piecewise constant: face probability ∝ value × area). 100,000 points:
a face by that probability, then a uniform point in it. 80/10/10 train/validation/test split.

heatscore: ``MeshHeatDensity`` fitted on the training points, its diffusion time chosen by the
validation log-likelihood (geometric grid from ē²/10 to 1/λ_1, 4 a decade, early stop, half-step
refinement; the final model is the training fit at that time). Reported: test NLL (nats, w.r.t.
area), the true density's test NLL on the same points, and their gap (≥ 0 in expectation: the
KL divergence from the truth plus sampling noise); the uniform density's NLL, log(area), for
scale. Prints a markdown table. Run by ``python benchmarks/bench_mesh_density.py`` and
``heatscore bench mesh``.
"""

import math
import time

import numpy as np
import torch

from heatscore.datasets import spot_path
from heatscore.estimators._mesh_density import MeshHeatDensity
from heatscore.manifolds import TriangleMesh


def midpoint_subdivide(V, F):
    """One round of flat midpoint subdivision: (V', F') with every face split into four."""
    edges = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
    unique_edges, inverse = np.unique(edges, axis=0, return_inverse=True)
    mid = 0.5 * (V[unique_edges[:, 0]] + V[unique_edges[:, 1]])
    ab, bc, ca = inverse.reshape(3, -1) + len(V)
    a, b, c = F.T
    F_new = np.concatenate([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1),
                            np.stack([ca, bc, c], 1), np.stack([ab, bc, ca], 1)])
    return np.vstack([V, mid]), F_new


def true_density(mesh, phi):
    """Face values (nf,) of the true density w.r.t. area: clipped face means of φ, normalised."""
    value = np.clip(phi[mesh.faces.numpy()].mean(axis=1), 0.0, None)
    return value / float((value * mesh.face_areas.numpy()).sum())


def draw(mesh, density, n, gen):
    """n points: a face with probability ∝ density × area, then uniform in it (faces, bary)."""
    prob = torch.as_tensor(density) * mesh.face_areas
    faces = torch.multinomial(prob, n, replacement=True, generator=gen)
    r = torch.rand((n, 2), generator=gen, dtype=torch.float64)
    s = torch.sqrt(r[:, 0])
    bary = torch.stack([1.0 - s, s * (1.0 - r[:, 1]), s * r[:, 1]], dim=1)
    return faces, bary


def run(subdivisions=3, ks=(10, 50, 100), n=100_000, seed=0):
    """Run the benchmark (module docstring) and print its lines and table."""
    start = time.perf_counter()
    mesh = TriangleMesh.from_file(spot_path())
    V, F = mesh.vertices.numpy(), mesh.faces.numpy()
    for _ in range(subdivisions):
        V, F = midpoint_subdivide(V, F)
    mesh = TriangleMesh(V, F)
    mesh.stiffness                                               # robust-laplacian (L, M)
    t_mesh = time.perf_counter() - start
    start = time.perf_counter()
    ep = mesh.eigenpairs(max(ks) + 1)                            # signed: largest entry positive
    t_eig = time.perf_counter() - start
    lam1 = float(ep.eigenvalues[1])
    t_lo, t_hi = mesh.mean_edge_length ** 2 / 10, 1.0 / lam1
    print(f"Spot, {subdivisions} midpoint subdivisions: {len(V)} vertices, {len(F)} faces, "
          f"area {mesh.area:.4f}, mean edge {mesh.mean_edge_length:.4g}; mesh + Laplacian "
          f"{t_mesh:.1f} s, {max(ks) + 1} eigenpairs {t_eig:.1f} s; "
          f"time grid [{t_lo:.2e}, {t_hi:.2e}]")

    rows = []
    for k in ks:
        gen = torch.Generator().manual_seed(seed + k)
        density = true_density(mesh, ep.vectors[:, k].numpy())
        faces, bary = draw(mesh, density, n, gen)
        perm = torch.randperm(n, generator=gen)
        n_train, n_val = int(0.8 * n), int(0.1 * n)
        train, val, test = perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:]
        start = time.perf_counter()
        fit_val = torch.cat([train, val])
        selector = MeshHeatDensity(mesh, mesh.from_barycentric(faces[fit_val], bary[fit_val]))
        split = (torch.arange(n_train), torch.arange(n_train, n_train + n_val))
        tau, times, scores = selector.select_time(t_lo, t_hi, split=split)
        t_select = time.perf_counter() - start
        start = time.perf_counter()
        model = MeshHeatDensity(mesh, mesh.from_barycentric(faces[train], bary[train]))
        Q = mesh.from_barycentric(faces[test], bary[test])
        log_p, _ = model.log_and_grad(Q, tau, want_grad=False)
        t_fit = time.perf_counter() - start
        log_true = torch.log(torch.as_tensor(density[faces[test].numpy()]))
        nll, true_nll = -float(log_p.mean()), -float(log_true.mean())
        se = float(log_p.std()) / math.sqrt(len(test))
        gap_se = float((log_true - log_p).std()) / math.sqrt(len(test))
        rows.append((k, tau, nll, se, true_nll, nll - true_nll, gap_se, t_select, t_fit))
        print(f"k = {k}: τ* = {tau:.3g} ({len(times)} times scored; μτ* = "
              f"{model.flow.rate * tau:.3g}, about the sparse products per time); test NLL {nll:.4f} ± {se:.4f}, true "
              f"{true_nll:.4f}, gap {nll - true_nll:.4f} ± {gap_se:.4f}; selection "
              f"{t_select:.1f} s, final fit + test {t_fit:.1f} s")

    print()
    print(f"uniform density NLL (log area) = {math.log(mesh.area):.4f}")
    print("| k | τ* | test NLL (heatscore) | test NLL (true density) | gap (paired s.e.) | "
          "selection | final fit + eval |")
    print("|---|---|---|---|---|---|---|")
    for k, tau, nll, se, true_nll, gap, gap_se, t_select, t_fit in rows:
        print(f"| {k} | {tau:.3g} | {nll:.4f} ± {se:.4f} | {true_nll:.4f} | {gap:.4f} ± "
              f"{gap_se:.4f} | {t_select:.0f} s | {t_fit:.0f} s |")
