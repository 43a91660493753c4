"""The protein backbone benchmark: (φ, ψ) torsions on T² and consecutive-residue rotations on SO(3).

Protocol (as :mod:`heatscore.bench.earth`, but every model fits the training 80%): 80/10/10
train/validation/test split per seed, 5 seeds. Methods:

- ``smoother-auto``, ``smoother-multiscale``: :class:`DiffusionKernelSmoother` with
  ``time="auto"`` / ``"multiscale"`` (its only time modes besides a fixed float), times chosen by
  leave-one-out inside ``fit``; the validation 10% is not used.
- ``oism``: closed-form :class:`OperatorScoreMatching` (default levels and t_min; likelihood of
  p_{t_min} by the probability-flow ODE with ``ode_steps`` steps).
- ``oism-nn``: the OISM-residual network (:class:`NeuralScoreModel` with ``residual=`` the fitted
  OISM), trained for a fixed, small ``nn_steps`` Adam steps (a short run, not a converged one);
  likelihood as for OISM. Its fit time includes the OISM base.
- ``vm-kde``: a product von Mises KDE on T², concentration κ chosen on validation from
  ``KAPPA_GRID``.
- ``igso3-mix``: on SO(3) an isotropic-Gaussian mixture, IGSO(3)(ε) centred at every training
  rotation, ε chosen on validation from ``EPS_GRID`` (the component densities are
  :func:`heatscore.heat_kernels.igso3_log_density`'s, w.r.t. normalised Haar, converted).

Every NLL is in nats w.r.t. heatscore's measure: Lebesgue dθ₁dθ₂ on [0, 2π)² (volume 4π²) and the
volume 8π² of the metric ½tr(UᵀV) on SO(3) (NLL w.r.t. normalised Haar = ours + log 8π² = ours +
4.37; on T² w.r.t. the uniform probability, ours + log 4π² = ours + 3.68). "far" is the NLL of
the test points farther than ``FAR_RADIANS`` (geodesic: flat distance on T², rotation angle on
SO(3)) from every training point. Fit time includes every choice a method makes (LOO, ridge, κ/ε
on validation) and, for the network, its base.
"""

import math
import time

import numpy as np
import torch

from heatscore.bench.earth import split, status
from heatscore.datasets import PROTEIN_KINDS, load_backbone_rotations, load_protein_torsions
from heatscore.estimators import DiffusionKernelSmoother, NeuralScoreModel, OperatorScoreMatching
from heatscore.heat_kernels import igso3_time
from heatscore.heat_kernels._conventions import LOG_SO3_VOLUME
from heatscore.manifolds import SO3, Torus
from heatscore.manifolds._closed_forms import so3_log_heat_kernel

DATASETS = PROTEIN_KINDS + ("rotations",)
METHODS = ("smoother-auto", "smoother-multiscale", "oism", "oism-nn", "vm-kde", "igso3-mix")
#: A test point farther than this (radians) from every training point counts as "far".
FAR_RADIANS = 0.1
#: von Mises concentrations searched on validation (κ ≈ 1/h², h in radians).
KAPPA_GRID = tuple(10.0 ** np.linspace(0.0, 4.0, 33))
#: IGSO(3) ε searched on validation (t = ε²/2).
EPS_GRID = tuple(10.0 ** np.linspace(-2.0, 0.0, 33))
#: Rows of the evaluation points per pairwise block.
CHUNK_ROWS = 256


def load(name):
    """(points, manifold) of a data set in ``DATASETS``."""
    if name == "rotations":
        return load_backbone_rotations(), SO3()
    if name not in PROTEIN_KINDS:
        raise ValueError(f"name must be one of {DATASETS}, found {name!r}")
    return load_protein_torsions(name), Torus(2)


def _log_mean_exp(a, dim):
    return torch.logsumexp(a, dim=dim) - math.log(a.shape[dim])


def von_mises_kde_log_density(X, centres, kappas):
    """(len(kappas), n) log-density of the product von Mises KDE on T² w.r.t. dθ₁dθ₂.

    X : (n, 2) angles; centres : (m, 2) angles; kappas : sequence of concentrations > 0.
    log p(x) = log mean_j Π_d exp(κ cos(x_d − c_jd)) / (2π I₀(κ)).
    """
    X, centres = torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(centres, dtype=torch.float64)
    k = torch.as_tensor(kappas, dtype=torch.float64)
    log_norm = 2 * (math.log(2 * math.pi) + torch.log(torch.special.i0e(k)) + k)   # (K,)
    out = torch.empty((k.shape[0], X.shape[0]), dtype=torch.float64)
    for i in range(0, X.shape[0], CHUNK_ROWS):
        c = torch.cos(X[i:i + CHUNK_ROWS, None, :] - centres[None]).sum(-1)         # (r, m)
        for j, kj in enumerate(k):
            out[j, i:i + CHUNK_ROWS] = _log_mean_exp(kj * c, 1) - log_norm[j]
    return out


def igso3_mixture_log_density(R, centres, eps):
    """(len(eps), n) log-density of mean_j IGSO(3)(ε) centred at ``centres[j]``, w.r.t. volume 8π².

    R : (n, 3, 3), centres : (m, 3, 3) rotations; eps : sequence of ε > 0. The components are
    ``igso3_log_density(R, ε, mean=c_j)`` (normalised Haar), which depends on R only through the
    angle of c_jᵀR; the mixture is converted to the volume measure by − log 8π².
    """
    m = SO3()
    t = igso3_time(torch.as_tensor(eps, dtype=torch.float64))
    out = torch.empty((t.shape[0], R.shape[0]), dtype=torch.float64)
    for i in range(0, R.shape[0], CHUNK_ROWS):
        angle = m.pairwise_dist(R[i:i + CHUNK_ROWS], centres)                        # (r, m)
        for j, tj in enumerate(t):
            log_f = so3_log_heat_kernel(angle, float(tj)) + LOG_SO3_VOLUME           # Haar
            out[j, i:i + CHUNK_ROWS] = _log_mean_exp(log_f, 1) - LOG_SO3_VOLUME
    return out


class _Mixture:
    """A kernel mixture with its bandwidth chosen on validation (``log_density(X, grid)``)."""

    def __init__(self, log_density, grid, train, val):
        scores = log_density(val, train, grid).mean(dim=1)
        self.param = float(grid[int(torch.argmax(scores))])
        self._log_density, self._train = log_density, train

    def score_samples(self, X):
        return self._log_density(X, self._train, [self.param])[0]


def _fit(method, m, train, val, seed, nn_steps):
    """The fitted model of ``method`` (an object with ``score_samples``), or None where n/a."""
    torus = isinstance(m, Torus)
    if method.startswith("smoother-"):
        return DiffusionKernelSmoother(m, time=method.split("-")[1]).fit(train)
    if method == "oism":
        return OperatorScoreMatching(m).fit(train)
    if method == "oism-nn":
        base = OperatorScoreMatching(m).fit(train)
        return NeuralScoreModel(m, residual=base, n_steps=nn_steps, rng=seed).fit(train)
    if method == "vm-kde":
        return _Mixture(von_mises_kde_log_density, KAPPA_GRID, train, val) if torus else None
    if method == "igso3-mix":
        return None if torus else _Mixture(igso3_mixture_log_density, EPS_GRID, train, val)
    raise ValueError(f"method must be one of {METHODS}, found {method!r}")


def _score(model, X, ode_steps):
    if isinstance(model, (OperatorScoreMatching, NeuralScoreModel)):
        return model.score_samples(X, steps=ode_steps)
    return model.score_samples(X)


def run_one(name, seed, methods=METHODS, nn_steps=300, ode_steps=50, max_points=None):
    """Fit every method on the training 80% of one split; {method: figures} (n/a methods left out).

    max_points : None or a number of points drawn (seeded) before splitting (quick runs, tests).
    """
    X, m = load(name)
    if max_points is not None and X.shape[0] > max_points:
        X = X[np.random.default_rng(seed).permutation(X.shape[0])[:max_points]]
    tr, va, te = split(X.shape[0], seed)
    train, val, test = X[tr], X[va], X[te]
    nearest = m.pairwise_dist(test, train).min(dim=1).values
    far = nearest > FAR_RADIANS
    rows = {}
    for method in methods:
        t0 = time.perf_counter()
        model = _fit(method, m, train, val, seed, nn_steps)
        fit_s = time.perf_counter() - t0
        if model is None:
            continue
        logp = _score(model, test, ode_steps)
        rows[method] = {"nll": -float(logp.mean()),
                        "nll_far": -float(logp[far].mean()) if bool(far.any()) else float("nan"),
                        "far_share": float(far.double().mean()), "fit_s": fit_s,
                        "param": getattr(model, "param", float("nan"))}
    return rows


def run(datasets=DATASETS, seeds=range(5), methods=METHODS, nn_steps=300, ode_steps=50,
        max_points=None, out=print):
    """Run the benchmark and print a markdown table; returns {(data, method): [rows per seed]}."""
    results = {}
    out(f"| data | n | method | test NLL | far NLL (> {FAR_RADIANS} rad) | far share | "
        "fit s (median) | κ or ε (median) |")
    out("|---|---|---|---|---|---|---|---|")
    for name in datasets:
        per_seed = []
        for s in seeds:
            status(f"{name}, seed {s} ...")
            per_seed.append(run_one(name, s, methods, nn_steps, ode_steps, max_points))
        status("")
        n = load(name)[0].shape[0]
        n = n if max_points is None else min(n, max_points)
        for method in methods:
            rows = [r[method] for r in per_seed if method in r]
            if not rows:
                continue
            results[(name, method)] = rows
            nll = np.array([r["nll"] for r in rows])
            far = np.array([r["nll_far"] for r in rows])
            param = np.median([r["param"] for r in rows])
            out(f"| {name} | {n} | {method} | {nll.mean():.3f} ± {nll.std():.3f} | "
                f"{np.nanmean(far):.2f} ± {np.nanstd(far):.2f} | "
                f"{np.mean([r['far_share'] for r in rows]):.2f} | "
                f"{np.median([r['fit_s'] for r in rows]):.2f} | "
                f"{'' if math.isnan(param) else f'{param:.3g}'} |")
    return results


def _degrees(x):
    """Angles in [0, 2π) as degrees in [−180, 180) (the Ramachandran convention)."""
    return (np.degrees(np.asarray(x)) + 180.0) % 360.0 - 180.0


def figures(directory, seed=0, grid=180):
    """Write ``ramachandran.png`` (the smoother's density of the general class on T² with its
    training points) and ``so3_axis_angle.png`` (backbone rotations as rotation vectors, coloured
    by the smoother's log-density) to ``directory``; returns the two paths."""
    import os

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from heatscore.manifolds.so3 import vector_from_rotation

    os.makedirs(directory, exist_ok=True)
    X, m = load("general")
    train = X[split(X.shape[0], seed)[0]]
    est = DiffusionKernelSmoother(m, time="multiscale").fit(train)
    u = (np.arange(grid) + 0.5) * 2 * np.pi / grid - np.pi          # φ, ψ in [−π, π)
    P, Q = np.meshgrid(u, u, indexing="xy")
    pts = np.stack([P.ravel(), Q.ravel()], 1) % (2 * np.pi)
    logp = est.score_samples(pts).numpy().reshape(grid, grid)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), dpi=90)
    im = ax.imshow(np.maximum(logp, logp.max() - 12), origin="lower", extent=(-180, 180, -180, 180),
                   cmap="magma")
    d = _degrees(train.numpy())
    ax.scatter(d[:, 0], d[:, 1], s=0.8, c="cyan", alpha=0.6, linewidths=0)
    ax.set(xlabel="φ (degrees)", ylabel="ψ (degrees)",
           title=f"general residues: smoother log-density\n({train.shape[0]} training points)")
    fig.colorbar(im, ax=ax, label="log p (w.r.t. dφdψ, clipped 12 below max)")
    fig.tight_layout()
    rama = os.path.join(directory, "ramachandran.png")
    fig.savefig(rama)
    plt.close(fig)

    R, m3 = load("rotations")
    train = R[split(R.shape[0], seed)[0]]
    est = DiffusionKernelSmoother(m3, time="multiscale").fit(train)
    v = vector_from_rotation(train).numpy()
    logp = est.score_samples(train).numpy()
    fig = plt.figure(figsize=(8.4, 3.8), dpi=90)
    ax = fig.add_subplot(1, 2, 1, projection="3d")
    sc = ax.scatter(v[:, 0], v[:, 1], v[:, 2], s=0.4, c=logp, cmap="viridis", linewidths=0)
    ax.set(xlabel="ω₁", ylabel="ω₂", zlabel="ω₃", title="rotation vectors (axis × angle)")
    fig.colorbar(sc, ax=ax, shrink=0.7, pad=0.12, label="smoother log p (w.r.t. vol 8π²)")
    ax2 = fig.add_subplot(1, 2, 2)
    angle = np.linalg.norm(v, axis=1)
    axis = v / np.maximum(angle[:, None], 1e-12)
    ax2.scatter(np.degrees(np.arctan2(axis[:, 1], axis[:, 0])), np.degrees(np.arcsin(axis[:, 2])),
                s=0.4, c=np.degrees(angle), cmap="plasma", linewidths=0)
    ax2.set(xlabel="axis longitude (degrees)", ylabel="axis latitude (degrees)",
            title="axis directions, coloured by angle")
    fig.colorbar(ax2.collections[0], ax=ax2, label="rotation angle (degrees)")
    fig.tight_layout()
    so3 = os.path.join(directory, "so3_axis_angle.png")
    fig.savefig(so3)
    plt.close(fig)
    return rama, so3
