"""Riemannian diffusion kernel smoothing: closed-form densities and scores of every forward marginal.

The fitted (t = 0) density is the data diffused for the fitted time t*:

    p̂(x) = Σ_i w_i k_{t*}(x, x_i) = Σ_n e^{−λ_n t*} ĉ_n φ_n(x),   ĉ_n = Σ_i w_i φ_n(x_i),

and the forward marginal at time t ≥ 0 is p̂ diffused for t* + t (semigroup property), so
``log_density(X, t)`` and ``grad_log_density(X, t)`` are exact for every t. ``time="multiscale"``
mixes several times: p̂ = Σ_s π_s Σ_i w_i k_{t_s}(·, x_i). ``time="adaptive"`` gives each datum
its own time: p̂ = Σ_i w_i k_{t_i}(·, x_i), whose forward marginals are Σ_i w_i k_{t_i + t}.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from typing import Any, Optional, Union

import numpy as np
import torch

from heatscore._errors import DegenerateDataWarning, TruncationWarning
from heatscore._files import atomic_write
from heatscore._typing import ArrayLike, PathLike, Rng, Time
from heatscore._validation import as_float_tensor, as_generator, normalised_weights
from heatscore.estimators._base import BaseEstimator
from heatscore.estimators._kernel_sum import KernelSum, SpectralSum
from heatscore.estimators._mesh_density import MeshHeatDensity, holdout_split
from heatscore.manifolds import Manifold, manifold_from_spec

#: Relative accuracy of every route (|Δ log p| ≤ ~1e-6 as the benchmarks require).
RTOL = 1e-7
#: Grid points per decade of the time search, and the golden-section refinements after it.
GRID_PER_DECADE = 3
N_REFINE = 5
#: Meshes: held-out fraction and seed of the internal split that chooses the time.
MESH_HOLDOUT = 0.2
MESH_SPLIT_SEED = 0
#: EM for the multiscale weights: iterations and convergence tolerance (max weight change).
EM_MAX_ITER = 2000
EM_TOL = 1e-9
#: Reverse sampling of a shrunk model: end time (× t*) and number of geometric steps.
SHRUNK_T_END = 0.01
SHRUNK_STEPS = 200
#: Time selection scores leave-one-out likelihood on at most this many data points (a fixed,
#: seeded random subset; each is left out of the full data): the criterion's sampling error is
#: far below the differences between grid times, at a fraction of the cost.
LOO_MAX_ROWS = 2000
#: A time search that takes longer than this (seconds) shows a progress bar on a terminal.
PROGRESS_DELAY = 2.0
#: Adaptive times: t_i = t_pilot · RHO^{k_i} on this lattice (bandwidths within ±9% of the
#: unrounded rule), k_i = k_0 + round(−α log_RHO(p̃(x_i)/g)); the exponents α tried (0 is the
#: pilot's single time); the scan of k_0 stops three lattice steps past the best.
RHO = 2.0**0.5
ALPHAS = (0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0, 1.25)


def _is_dask_array(x):
    """True for a dask array, checked without importing dask (the Dask extra stays optional)."""
    core = sys.modules.get("dask.array.core")
    return core is not None and isinstance(x, core.Array)


class DiffusionKernelSmoother(BaseEstimator):
    """Heat-kernel density estimator with closed-form scores of every forward marginal.

    Parameters
    ----------
    manifold : a heatscore manifold (Sphere(2), Torus(d), SO3(), Euclidean(d), TriangleMesh).
    time : float, ``"auto"``, ``"multiscale"`` or ``"adaptive"``. A float fixes t*. ``"auto"`` maximises the
        leave-one-out log-likelihood over a geometric grid from max(t_min, median(d_nn²)/200)
        (t_min itself when the data hold exact duplicates) towards 1/λ_1 (d_nn: nearest-neighbour
        distances; the search stops three grid points past the best), refined by golden-section
        search; with more than ``LOO_MAX_ROWS`` points the criterion averages over a fixed random
        subset of them. ``"multiscale"`` mixes the grid times searched (no refinement) with the
        weights that maximise the leave-one-out likelihood of the mixture (EM; the objective is
        concave in the weights); times whose weight falls below 1e-8 are dropped.
        ``"adaptive"``: a time per datum by Abramson's rule from a pilot, t_i = t_0 (p̃(x_i)/g)^{−α}
        with p̃ the "auto" fit at the data, g its weighted geometric mean, t_i rounded to the
        lattice t_pilot · RHO^k and clipped to [t_min, 1/λ_1]; α ∈ {0} ∪ ``ALPHAS`` and t_0 on the
        lattice maximise the leave-one-out likelihood (the same subset of rows as "auto").
        Equal rows share a time. Not on meshes, dask arrays or with shrinkage.    t_min : smallest diffusion time considered; None: 2e-8/λ_1 (1e-8 on the unit sphere).
    route : ``"auto"``, ``"spectral"``, ``"neighbors"`` or ``"dense"`` (evaluation route; all agree
        to ``RTOL``; ``"auto"`` picks the cheapest certified one per call).
    shrinkage : bool. Positive-part James–Stein shrinkage of the spectral coefficients (compact
        analytic manifolds; single time), in the form that holds for anisotropic covariance:
        with the non-constant coefficients pooled, ĉ ← (1 − (tr Ĉ − 2λ_max(Ĉ))/(n_eff |ĉ|²))₊ ĉ,
        Ĉ the weighted covariance of φ(X) over the pool and n_eff = 1/Σw_i²; skipped where
        tr Ĉ ≤ 2λ_max(Ĉ); the constant term is kept. The density is the truncated expansion
        Σ_n e^{−λ_n t} ĉ_n φ_n, which can dip below zero: there ``TruncationWarning`` and the
        unshrunk kernel density. Samples come from the reverse sampler with the shrunk score.
    n_levels : levels of the shrunk expansion (None: the levels that resolve t* to TAIL).

    Fitted attributes: ``X_`` (n, *pt), ``sample_weight_`` (n,) normalised, ``times_`` (S,),
    ``weights_`` (S,) mixture weights, ``time_`` (t* for a single time), ``t_min_``,
    ``loo_log_likelihood_`` (mean LOO log-likelihood per grid time, for "auto"), ``grid_``;
    "adaptive": ``point_times_`` (n,) each datum's time t_i, ``times_`` its distinct values and
    ``weights_`` their total sample weights, ``pilot_time_``, ``alpha_``,
    ``adaptive_log_likelihood_`` (the chosen rule's mean LOO log-likelihood).

    Dask (``heatscore[dask]``): ``fit`` takes a dask array (``X_`` and ``sample_weight_`` then stay
    dask arrays on the cluster; see ``heatscore.estimators._dask`` for what is held where), the
    evaluation methods map dask queries to dask arrays, and ``sample(n, chunks=...)`` draws a dask
    array.
    """

    _private_state = ("_ksum", "_spec", "_mesh_density", "_loo_rows", "_grid_loo", "_shrunk_ep",
                      "_dask", "_bar", "_classes", "_row_classes")

    def __init__(self, manifold: Manifold, time: Union[str, float] = "auto",
                 t_min: Optional[float] = None, route: str = "auto", shrinkage: bool = False,
                 n_levels: Optional[int] = None) -> None:
        self.manifold = manifold
        self.time = time
        self.t_min = t_min
        self.route = route
        self.shrinkage = shrinkage
        self.n_levels = n_levels

    # --- fitting ------------------------------------------------------------------------------
    def _validate_params(self):
        if not isinstance(self.manifold, Manifold):
            raise TypeError(f"manifold must be a heatscore manifold, found {type(self.manifold).__name__}")
        if isinstance(self.time, str):
            if self.time not in ("auto", "multiscale", "adaptive"):
                raise ValueError("time must be a positive float, 'auto', 'multiscale' or "
                                 f"'adaptive', found {self.time!r}")
        else:
            t = float(self.time)
            if not math.isfinite(t) or t <= 0:
                raise ValueError("time must be a positive float, 'auto', 'multiscale' or "
                                 f"'adaptive', found {self.time!r}")
        if self.time == "adaptive":
            if self.manifold.discrete:
                raise NotImplementedError(f"time='adaptive' on {self.manifold!r}: a mesh's density "
                                          "is one heat flow of the data's P1 histogram per time")
            if self.shrinkage:
                raise ValueError("shrinkage=True needs a single time (a float or 'auto'), "
                                 "found time='adaptive'")
        if self.route not in ("auto", "spectral", "neighbors", "dense"):
            raise ValueError(f"route must be 'auto', 'spectral', 'neighbors' or 'dense', found {self.route!r}")
        if self.t_min is not None and not (float(self.t_min) > 0 and math.isfinite(float(self.t_min))):
            raise ValueError(f"t_min must be a positive float or None, found {self.t_min!r}")

    def fit(self, X: ArrayLike, y: None = None, sample_weight: Optional[ArrayLike] = None, *,
            client: Any = None) -> "DiffusionKernelSmoother":
        """Fit to data X (n, *point_shape) with optional non-negative weights (n,); ``y`` is
        ignored (scikit-learn's convention for density estimators). Returns self.

        A refit starts from a clean state. A dask array X is fitted on the cluster (``client``: a
        ``distributed.Client``; None: dask's current scheduler): times on a seeded sample,
        spectral coefficients by a distributed reduction, equal to the in-memory fit to rounding.
        """
        self._reset()
        if _is_dask_array(X):  # the Dask extra: a distributed fit (_dask.py)
            if self.time == "adaptive":
                raise NotImplementedError("time='adaptive' on a dask array: fit it in memory")
            from heatscore.estimators import _dask
            for name, value in _dask.fit(self, X, sample_weight, client).items():
                setattr(self, name, value)
            return self
        if client is not None:
            raise ValueError(f"client is for a dask array X, found X of type {type(X).__name__}")

        self._validate_params()
        m = self.manifold
        if not m.discrete and m._index_embedding() is None:
            raise NotImplementedError(f"DiffusionKernelSmoother on {m!r}: its kernel sums need a "
                                      "neighbour index, which a product with a mesh factor lacks")
        X = m.validate(X, "X")
        if X.shape[0] == 0:
            raise ValueError("X must hold at least one point, found 0")
        w = normalised_weights(sample_weight, X.shape[0], X)
        lam1 = m._first_eigenvalue()
        self._set_n_features(X)
        self.t_min_ = 2e-8 / lam1 if self.t_min is None else float(self.t_min)
        self.X_, self.sample_weight_ = X, w
        self._build()
        if m.discrete:
            if self.shrinkage:
                raise ValueError("shrinkage=True needs an analytic manifold's spectral "
                                 f"expansion, not {m!r}")
            times, weights = self._mesh_times(lam1)
        elif not isinstance(self.time, str):
            times, weights = [float(self.time)], [1.0]
        else:
            if X.shape[0] < 2:
                raise ValueError(f"time={self.time!r} needs at least 2 points, found {X.shape[0]}")
            t_best = self._select_time(lam1, refine=self.time != "multiscale")
            if self.time == "auto":
                times, weights = [t_best], [1.0]
            elif self.time == "adaptive":
                times, weights = self._adaptive(t_best, 1.0 / lam1)
            else:
                times, weights = self._multiscale()
        self.times_ = torch.tensor(times, dtype=torch.float64, device=X.device)
        self.weights_ = torch.tensor(weights, dtype=torch.float64, device=X.device)
        if len(times) == 1 and self.time != "adaptive":
            self.time_ = times[0]
        if self.shrinkage:
            self._fit_shrinkage()
        if m.discrete:  # forget the selection's flows: a loaded model starts
            self._mesh_density._cache.clear()  # from the same state, so outputs match exactly
        return self

    def _fit_shrinkage(self):
        """Positive-part James–Stein on the pooled non-constant coefficients (class docstring)."""
        if len(self.times_) != 1:
            raise ValueError("shrinkage=True needs a single time (a float or 'auto'), "
                             f"found time={self.time!r}")
        levels = self.n_levels if self.n_levels is not None else self._spec.levels_for(self.time_)
        if levels is None:
            raise ValueError(f"shrinkage=True: t* = {self.time_:.3g} needs more than "
                             f"{SpectralSum.MAX_FUNCTIONS} eigenfunctions; pass n_levels")
        ep = self.manifold.eigenpairs(levels)
        w = self.sample_weight_
        phi = ep._values(self.X_)[:, 1:]                                  # (n, K − 1)
        c = w @ phi
        centred = phi - c
        cov = (centred * w[:, None]).T @ centred
        trace, lam_max = float(cov.trace()), float(torch.linalg.eigvalsh(cov)[-1])
        n_eff = 1.0 / float((w * w).sum())
        factor = 1.0
        if trace > 2 * lam_max:
            factor = max(0.0, 1.0 - (trace - 2 * lam_max) / (n_eff * float(c @ c)))
        const = w @ ep._values(self.X_)[:, :1]
        self.coef_ = torch.cat([const, factor * c])
        self.shrinkage_factor_ = factor
        self._shrunk_ep = ep

    def _mesh_times(self, lam1):
        """Meshes: times by held-out likelihood on a seeded split; the model uses all data."""
        if not isinstance(self.time, str):
            return [float(self.time)], [1.0]
        m, n = self.manifold, self.X_.shape[0]
        if n < 2:
            raise ValueError(f"time={self.time!r} needs at least 2 points, found {n}")
        t_lo = max(self.t_min_, m.mean_edge_length ** 2 / 10)
        t_hi = max(10 * t_lo, 1.0 / lam1)
        train, test = holdout_split(n, MESH_HOLDOUT, MESH_SPLIT_SEED)
        t_best, self.grid_, self.heldout_log_likelihood_ = self._mesh_density.select_time(
            t_lo, t_hi, split=(train, test))
        if self.time == "auto":
            return [t_best], [1.0]
        L = self._mesh_density.heldout_log_densities(train, test, self.grid_)
        self._loo_rows, self._grid_loo = test, list(L.T)   # what _multiscale reads
        return self._multiscale()

    def _build(self):
        if self.manifold.discrete:
            self._mesh_density = MeshHeatDensity(self.manifold, self.X_, self.sample_weight_)
            return
        self._ksum = KernelSum(self.manifold, self.X_, self.sample_weight_)
        self._spec = SpectralSum(self.manifold, self.X_, self.sample_weight_)

    def _loo(self, tau, rows=None):
        """Leave-one-out log p̂_{−i}(x_i) at time τ for the data rows ``rows`` (default all).

        Spectral route: p̂_{−i}(x_i) = (p̂(x_i) − w_i k_τ(x_i, x_i))/(1 − w_i), with k_τ(x, x) the
        same at every x on these homogeneous spaces; rows where the subtraction is not certified
        to RTOL are recomputed by the kernel sum.
        """
        rows = torch.arange(self.X_.shape[0]) if rows is None else rows
        Xr, w = self.X_[rows], self.sample_weight_[rows]
        levels = self._spec.levels_for(tau) if self.route in ("auto", "spectral") else None
        route = self._ksum_route()
        if levels is not None:
            p, _, bound = self._spec.value_and_grad(Xr, tau, levels, False)
            k0 = torch.exp(self._ksum.backend.log_and_grad(
                Xr[:1], Xr[:1], torch.tensor([tau], dtype=Xr.dtype, device=Xr.device), False)[0])
            loo = (p - w * k0) / (1 - w)
            ok = loo * (1 - w) >= bound / RTOL
            out = torch.log(torch.where(ok, loo, torch.ones_like(loo)))
            if not bool(ok.all()):
                idx = torch.nonzero(~ok).flatten()
                out[idx] = self._ksum.log_and_grad(Xr[idx], tau, exclude_rows=rows[idx], route=route)[0]
            return out
        return self._ksum.log_and_grad(Xr, tau, exclude_rows=rows, route=route)[0]

    def _loo_score(self, tau, keep=None):
        """Weighted mean LOO log-likelihood, over the fixed query subset ``_loo_rows``; the
        per-row values are appended to ``keep`` if given."""
        self._bar.update()
        rows = self._loo_rows
        w = self.sample_weight_[rows]
        loo = self._loo(tau, rows)
        if keep is not None:
            keep.append(loo)
        return float((w * loo).sum() / w.sum())

    def _select_time(self, lam1, refine=True):
        n = self.X_.shape[0]
        if n > LOO_MAX_ROWS:  # the criterion on a fixed random subset of held-out-one points
            gen = torch.Generator().manual_seed(0)
            self._loo_rows = torch.randperm(n, generator=gen)[:LOO_MAX_ROWS].sort().values
        else:
            self._loo_rows = torch.arange(n)
        d_nn = self._ksum.nearest_other()
        pos = d_nn[d_nn > 0]
        scale = float(np.median(pos) ** 2) if pos.size else self.t_min_
        # exact duplicates are atoms at the data's precision: then the grid starts at t_min
        t_lo = self.t_min_ if pos.size < d_nn.size else max(self.t_min_, scale / 200)
        t_hi = max(10 * t_lo, 1.0 / lam1)
        n_grid = max(3, int(math.ceil(GRID_PER_DECADE * math.log10(t_hi / t_lo))) + 1)
        grid = np.geomspace(t_lo, t_hi, n_grid)
        from heatscore.samplers._progress import ProgressBar
        self._bar = ProgressBar(n_grid + (N_REFINE if refine else 0), True,
                                label=f"{type(self).__name__}.fit", delay=PROGRESS_DELAY)
        scores, self._grid_loo = [], []
        for tau in grid:  # ascending; stop three points past the best (unimodal in practice)
            scores.append(self._loo_score(float(tau), self._grid_loo))
            b = int(np.argmax(scores))
            if len(scores) - 1 - b >= 3:
                break
        self.grid_ = torch.tensor(grid[:len(scores)])
        self.loo_log_likelihood_ = torch.tensor(scores)
        b = int(np.argmax(scores))
        self._warn_degenerate(b == 0)
        if not refine:
            self._bar.close()
            return float(grid[b])
        lo = math.log(grid[max(b - 1, 0)])
        hi = math.log(grid[min(b + 1, len(scores) - 1)])
        t_best = self._golden(lo, hi, grid[b], scores[b])
        self._bar.close()
        return t_best

    def _warn_degenerate(self, at_floor):
        """``DegenerateDataWarning`` when the LOO criterion ends at the grid's first time because
        the data are (nearly all) repeated points: the fit is then a spike at each of them."""
        n, m = self.X_.shape[0], self._ksum.n_unique
        if m == 1:
            warnings.warn(f"all {n} points of X are identical: the time search ends at "
                          f"t_min = {self.t_min_:.3g}, a spike at that point; pass a fixed time "
                          "(time=...) to choose its spread", DegenerateDataWarning, stacklevel=4)
        elif at_floor and m < n:
            warnings.warn(f"X holds {m} distinct points among {n} rows: the leave-one-out time "
                          f"search ends at its smallest time t_min = {self.t_min_:.3g} (spikes at "
                          "the repeated points); raise t_min or pass a fixed time", 
                          DegenerateDataWarning, stacklevel=4)

    def _golden(self, lo, hi, t_best, s_best):
        """Golden-section search of the LOO score in log t on [lo, hi]; keeps the best seen."""
        g = (math.sqrt(5) - 1) / 2
        a, b = lo, hi
        c, d = b - g * (b - a), a + g * (b - a)
        fc, fd = self._loo_score(math.exp(c)), self._loo_score(math.exp(d))
        best = max([(s_best, t_best), (fc, math.exp(c)), (fd, math.exp(d))])
        for _ in range(N_REFINE - 2):
            if fc > fd:
                b, d, fd = d, c, fc
                c = b - g * (b - a)
                fc = self._loo_score(math.exp(c))
                best = max(best, (fc, math.exp(c)))
            else:
                a, c, fc = c, d, fd
                d = a + g * (b - a)
                fd = self._loo_score(math.exp(d))
                best = max(best, (fd, math.exp(d)))
        return max(best[1], self.t_min_)

    def _multiscale(self):
        """Mixture weights over the evaluated grid times maximising the LOO likelihood (EM)."""
        times = self.grid_.numpy()
        L = torch.stack(self._grid_loo, dim=1)                               # (rows, G)
        rows = self._loo_rows
        w = self.sample_weight_[rows] / self.sample_weight_[rows].sum()
        pi = torch.full((len(times),), 1.0 / len(times), dtype=L.dtype, device=L.device)
        shift = L.max(dim=1, keepdim=True).values
        P = torch.exp(L - shift)                                             # (rows, G), ≤ 1
        for _ in range(EM_MAX_ITER):  # EM for the mixture weights of the LOO densities
            mix = P @ pi
            new = pi * ((w / mix) @ P)
            if float((new - pi).abs().max()) < EM_TOL:
                pi = new
                break
            pi = new
        keep = pi > 1e-8
        pi = pi[keep] / pi[keep].sum()
        return [float(t) for t in times[keep.cpu().numpy()]], [float(p) for p in pi]

    def _adaptive(self, t_pilot, t_max):
        """Per-point times by the LOO-chosen rule (class docstring); sets ``point_times_``,
        ``pilot_time_``, ``alpha_``, ``adaptive_log_likelihood_``; returns (times, weights)."""
        ks, rows = self._ksum, self._loo_rows
        w = self.sample_weight_[rows] / self.sample_weight_[rows].sum()
        wu = ks.unique_weight / ks.unique_weight.sum()
        log_p = ks.log_and_grad(ks.unique, t_pilot, route=self._ksum_route())[0]   # (m,) pilot
        steps = ((log_p - float(wu @ log_p)) / math.log(RHO)).cpu().numpy()      # log_RHO(p̃/g)
        k_lo = math.ceil(math.log(self.t_min_ / t_pilot) / math.log(RHO) - 1e-9)
        k_hi = max(k_lo, math.floor(math.log(max(t_max, t_pilot) / t_pilot) / math.log(RHO) + 1e-9))
        scores = {}

        def score(alpha, k0):
            if (alpha, k0) not in scores:
                k = np.clip(k0 + np.rint(-alpha * steps).astype(np.int64), k_lo, k_hi)
                present, classes = np.unique(k, return_inverse=True)
                taus = [t_pilot * RHO ** int(e) for e in present]
                loo = ks.mixture_log_and_grad(self.X_[rows], taus, [0.0] * len(taus),
                                              exclude_rows=rows, route=self._ksum_route(),
                                              classes=classes.astype(np.int64))[0]
                scores[alpha, k0] = (float(w @ loo), k)
            return scores[alpha, k0][0]

        score(0.0, 0)                                   # the pilot's single time
        for alpha in ALPHAS:  # per α, k_0 up and down from 0 until three steps past the best
            for direction in (1, -1):
                k0 = best_k0 = 0
                while abs(k0 - best_k0) < 3:
                    k0 += direction
                    if score(alpha, k0) > score(alpha, best_k0):
                        best_k0 = k0
        best = max(scores, key=lambda key: (scores[key][0], -key[0]))   # ties: the smaller α
        self.alpha_, k = best[0], scores[best][1]
        self.pilot_time_ = t_pilot
        self.adaptive_log_likelihood_ = scores[best][0]
        unique_times = t_pilot * RHO ** k.astype(np.float64)
        own = unique_times if ks.inverse is None else unique_times[ks.inverse]
        self.point_times_ = torch.as_tensor(own, dtype=torch.float64, device=self.X_.device)
        self._set_classes()
        wcls = torch.zeros(len(self.times_), dtype=torch.float64)
        wcls.index_add_(0, torch.as_tensor(self._row_classes), self.sample_weight_.double().cpu())
        return self.times_.tolist(), (wcls / wcls.sum()).tolist()

    def _set_classes(self):
        """``times_`` = the distinct ``point_times_``; ``_row_classes`` (n,) each row's index in
        it and ``_classes`` (m,) each unique point's (``ValueError`` if equal rows differ)."""
        pt = self.point_times_.cpu().numpy()
        times, row_classes = np.unique(pt, return_inverse=True)
        inverse = self._ksum.inverse
        classes = np.empty(self._ksum.n_unique, np.int64)
        classes[row_classes if inverse is None else inverse] = row_classes
        if inverse is not None and not np.array_equal(classes[inverse], row_classes):
            raise ValueError("point_times must be equal for equal rows of X")
        self.times_ = torch.as_tensor(times, dtype=torch.float64, device=self.X_.device)
        self._row_classes, self._classes = row_classes, classes

    # --- evaluation ---------------------------------------------------------------------------
    def _log_and_grad(self, X, t, want_grad, name="X"):
        self._check_fitted("times_")
        tt = as_float_tensor(t, "t")
        if tt.ndim != 0 or not bool(torch.isfinite(tt)) or float(tt) < 0:
            raise ValueError(f"t must be a finite scalar >= 0, found {t!r}")
        if _is_dask_array(X) or _is_dask_array(self.X_):  # the Dask extra: dask in, dask out
            from heatscore.estimators import _dask
            return _dask.log_and_grad(self, X, float(tt), want_grad, name, RTOL)
        X = self.manifold.validate(X, name)
        tt = tt.to(X.dtype)
        if X.shape[0] == 0:                                   # no points: empty results
            return X.new_zeros(0), (X.new_zeros((0,) + tuple(self.manifold.ambient_shape))
                                    if want_grad else None)
        if getattr(self, "_classes", None) is not None:   # adaptive: each point at its own time
            return self._ksum.mixture_log_and_grad(
                X, [tau + float(tt) for tau in self.times_.tolist()], [0.0] * len(self.times_),
                want_grad, route=self._ksum_route(), classes=self._classes)
        logs, grads, pooled = [], [], []
        for tau_s, pi_s in zip(self.times_.tolist(), self.weights_.tolist()):
            tau = tau_s + float(tt)
            if self._pooled(tau):  # one kernel-sum pass below for all such times
                pooled.append((tau, math.log(pi_s)))
                continue
            lg, gr = self._log_one(X, tau, want_grad)
            logs.append(lg + math.log(pi_s))
            grads.append(gr)
        if pooled:
            taus, log_pis = zip(*pooled)
            lg, gr = self._ksum.mixture_log_and_grad(X, list(taus), list(log_pis), want_grad,
                                                     route=self._ksum_route())
            logs.append(lg)
            grads.append(gr)
        L = torch.stack(logs, dim=1)
        out = torch.logsumexp(L, dim=1)
        if not want_grad:
            return out, None
        resp = torch.softmax(L, dim=1)
        g = sum(resp[:, s].reshape((-1,) + (1,) * (grads[s].ndim - 1)) * grads[s] for s in range(len(grads)))
        return out, g

    def _pooled(self, tau):
        """Whether time τ goes to the kernel sums (not a mesh, shrunk or spectral route)."""
        if hasattr(self, "_mesh_density") or self.shrinkage:
            return False
        return self.route not in ("auto", "spectral") or self._spec.levels_for(tau) is None

    def _ksum_route(self):
        return "auto" if self.route == "spectral" else self.route

    def _log_one(self, X, tau, want_grad):
        """One time τ that is not ``_pooled``: the mesh, shrunk or spectral route."""
        if hasattr(self, "_mesh_density"):
            return self._mesh_density.log_and_grad(X, tau, want_grad)
        if self.shrinkage:
            return self._log_one_shrunk(X, tau, want_grad)
        p, g, bound = self._spec.value_and_grad(X, tau, self._spec.levels_for(tau), want_grad)
        ok = p >= bound / RTOL
        out = torch.log(torch.where(ok, p, torch.ones_like(p)))
        grad = g / p.reshape((-1,) + (1,) * (g.ndim - 1)) if want_grad else None
        return self._kernel_sum_where(~ok, X, tau, want_grad, out, grad)

    def _log_one_shrunk(self, X, tau, want_grad):
        ep = self._shrunk_ep
        a = torch.exp(-ep.eigenvalues.to(X) * tau) * self.coef_.to(X)
        if want_grad:
            vals, grads = ep.values_and_grad(X)
            g = torch.einsum("k,nk...->n...", a, grads)
        else:
            vals, g = ep._values(X), None
        p = vals @ a
        ok = p > 0
        out = torch.log(torch.where(ok, p, torch.ones_like(p)))
        if want_grad:
            g = g / torch.where(ok, p, torch.ones_like(p)).reshape((-1,) + (1,) * (g.ndim - 1))
        if not bool(ok.all()):
            warnings.warn(f"the shrunk expansion is not positive at {int((~ok).sum())} points; "
                          "using the unshrunk kernel density there", TruncationWarning, stacklevel=4)
        return self._kernel_sum_where(~ok, X, tau, want_grad, out, g)

    def _kernel_sum_where(self, redo, X, tau, want_grad, out, grad):
        """Replace the rows ``redo`` of (out, grad) by the kernel-sum route (a certified fallback)."""
        if bool(redo.any()):
            idx = torch.nonzero(redo).flatten()
            sub, gsub = self._ksum.log_and_grad(X[idx], tau, want_grad)
            out[idx] = sub
            if want_grad:
                grad[idx] = gsub
        return out, grad

    def log_density(self, X: ArrayLike, t: Time = 0.0) -> torch.Tensor:
        """(n,) log p̂_t(x): the fitted density diffused for a further time t ≥ 0 (w.r.t. dvol)."""
        return self._log_and_grad(X, t, False)[0]

    def grad_log_density(self, X: ArrayLike, t: Time = 0.0) -> torch.Tensor:
        """(n, *ambient) ∇ log p̂_t(x), the Riemannian score of the time-t marginal."""
        return self._log_and_grad(X, t, True)[1]

    def score_samples(self, X: ArrayLike) -> torch.Tensor:
        """(n,) log-density of each point under the fitted model (nats, w.r.t. dvol)."""
        return self.log_density(X, 0.0)

    def score(self, X: ArrayLike, y: None = None) -> float:
        """Mean log-likelihood of X (higher is better; ``y`` ignored)."""
        return float(self.score_samples(X).mean())

    def sample(self, n: int, rng: Rng = None, chunks: Optional[int] = None) -> torch.Tensor:
        """(n, *pt) exact draws from p̂: a datum by weight, a time by mixture weight, then the
        exact forward noising for that time. With ``chunks`` (row chunks), or on a model fitted on
        a dask array, a dask array whose rows depend on the seed only, not on the chunking."""
        from heatscore.heat_kernels import sample_heat_kernel
        from heatscore._validation import check_positive_int

        self._check_fitted("times_")
        if chunks is not None or _is_dask_array(self.X_):  # the Dask extra (_dask.py)
            from heatscore.estimators import _dask
            return _dask.sample(self, n, rng, chunks)
        n = check_positive_int(n, "n", minimum=1)
        gen = as_generator(rng)
        if self.shrinkage:
            return self._sample_reverse(n, gen)
        if hasattr(self, "_mesh_density"):  # a time by weight, then the exact P1 sampler
            s = torch.multinomial(self.weights_.cpu(), n, replacement=True, generator=gen)
            counts = torch.bincount(s, minlength=len(self.times_)).tolist()
            parts = [self._mesh_density.sample(c, tau, rng=gen)
                     for tau, c in zip(self.times_.tolist(), counts) if c > 0]
            return torch.cat(parts)[torch.randperm(n, generator=gen).to(parts[0].device)]
        idx = torch.multinomial(self.sample_weight_.cpu(), n, replacement=True, generator=gen)
        if hasattr(self, "point_times_"):                   # adaptive: the datum's own time
            t = self.point_times_.to(self.X_)[idx.to(self.X_.device)]
        else:
            s = torch.multinomial(self.weights_.cpu(), n, replacement=True, generator=gen)
            t = self.times_.to(self.X_)[s.to(self.X_.device)]
        return sample_heat_kernel(self.manifold, self.X_[idx.to(self.X_.device)], t, rng=gen)

    def _sample_reverse(self, n, gen):
        """Shrunk model: the reverse geodesic random walk with its own score, from the stationary
        law at T = DEFAULT_MIXING/λ_1 to t_end = ``SHRUNK_T_END`` × t* on a geometric grid
        (steps ≪ t* near the end), i.e. draws of the shrunk p̂ diffused for a further 1% of t*."""
        from heatscore.samplers import default_times, reverse_sde

        times = default_times(self.manifold, SHRUNK_T_END * self.time_, n_steps=SHRUNK_STEPS)
        with warnings.catch_warnings():  # negativity is reported by log_density, not per step
            warnings.simplefilter("ignore", TruncationWarning)
            return reverse_sde(self.manifold, lambda x, t: self.grad_log_density(x, t), n, times,
                               rng=gen)

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the fitted model to ``path`` (.npz, no pickle; atomic rename)."""
        self._check_fitted("times_")
        if _is_dask_array(self.X_):
            raise ValueError("a model fitted on a dask array keeps its data on the cluster and is "
                             "not written to one .npz; fit it in memory to save it")
        spec, manifold_arrays = self.manifold._spec()
        meta = {"class": type(self).__name__, "manifold": spec,
                "time": self.time, "t_min": self.t_min, "route": self.route,
                "shrinkage": bool(self.shrinkage), "n_levels": self.n_levels,
                "t_min_": self.t_min_, "format": 1}
        for extra in ("pilot_time_", "alpha_", "adaptive_log_likelihood_"):
            if hasattr(self, extra):
                meta[extra] = float(getattr(self, extra))
        arrays = {"X": self.X_.cpu().numpy(), "sample_weight": self.sample_weight_.cpu().numpy(),
                  "times": self.times_.cpu().numpy(), "weights": self.weights_.cpu().numpy(),
                  "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        arrays.update(manifold_arrays)
        if hasattr(self, "_mesh_density"):
            arrays["mesh_point_faces"] = self._mesh_density.faces_.cpu().numpy()
            arrays["mesh_point_bary"] = self._mesh_density.bary_.cpu().numpy()
        for extra in ("grid_", "loo_log_likelihood_", "heldout_log_likelihood_", "point_times_"):
            if hasattr(self, extra):
                arrays[extra] = getattr(self, extra).cpu().numpy()
        atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: PathLike) -> "DiffusionKernelSmoother":
        """Read a model written by ``save`` (``allow_pickle=False``: loading runs no code).

        Every array is checked before use: its dtype (float64, or X and sample_weight both
        float32), shape and finiteness (the log-likelihoods may hold −inf); X on the manifold (``manifold.validate``); the manifold's
        own arrays as it would write them; sample_weight and weights non-negative summing to 1;
        times and grid_ positive; on a mesh, the data's (face, barycentric) locations valid and at
        X. ``ValueError`` naming the file and the array otherwise.
        """
        import zipfile

        from heatscore._validation import MANIFOLD_ATOL

        def bad(name, what):
            return ValueError(f"{path}: array {name!r} {what}")

        floats = (np.dtype(np.float64), np.dtype(np.float32))

        def get(name, dtypes=floats[:1], ndim=1, optional=False):
            if name not in arrays:
                if optional:
                    return None
                raise bad(name, "is missing")
            a = arrays[name]
            if a.dtype not in dtypes:
                raise bad(name, f"has dtype {a.dtype}, expected {' or '.join(map(str, dtypes))}")
            if ndim is not None and a.ndim != ndim:
                raise bad(name, f"has shape {a.shape}, expected {ndim} dimension(s)")
            return a

        def distribution(name, a, n, tol):
            if a.shape != (n,):
                raise bad(name, f"has shape {a.shape}, expected ({n},)")
            if (a < 0).any() or abs(float(a.sum()) - 1) > tol:
                raise bad(name, f"must be non-negative weights summing to 1, found min "
                                f"{float(a.min()):.3g} and sum {float(a.sum()):.9g}")

        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise ValueError(f"{path}: not a readable .npz model file ({exc})") from None
        log_values = ("loo_log_likelihood_", "heldout_log_likelihood_")
        for name, a in arrays.items():
            if a.dtype.kind in "fc":
                invalid = (np.isnan(a) | (a == np.inf)) if name in log_values else ~np.isfinite(a)
                if invalid.any():
                    raise bad(name, f"holds {int(invalid.sum())} NaN/inf entries")
        raw = get("meta", (np.dtype(np.uint8),))
        try:
            meta = json.loads(raw.tobytes().decode())
        except ValueError as exc:
            raise bad("meta", f"is not JSON text ({exc})") from None
        if not isinstance(meta, dict) or meta.get("class") != cls.__name__:
            found = meta.get("class") if isinstance(meta, dict) else meta
            raise ValueError(f"{path} holds a {found!r}, not a {cls.__name__}")
        keys = ("manifold", "time", "t_min", "route", "shrinkage", "n_levels", "t_min_", "format")
        missing = [k for k in keys if k not in meta]
        if missing or meta["format"] != 1:
            raise bad("meta", f"is not a format-1 {cls.__name__} description (missing: "
                              f"{', '.join(missing) or 'none'}; format {meta.get('format')!r})")
        try:
            m = manifold_from_spec(meta["manifold"], arrays)
            spec, own = m._spec()
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"{path}: the manifold {meta['manifold']!r} of array 'meta' cannot be "
                             f"built from the file's arrays ({exc})") from None
        if spec != meta["manifold"]:
            raise bad("meta", f"describes the manifold {meta['manifold']!r}, which is {spec!r}")
        for name, a in own.items():
            if arrays[name].dtype != a.dtype or not np.array_equal(arrays[name], a):
                raise bad(name, f"is not the {m!r} it makes (dtype {arrays[name].dtype}, shape "
                                f"{arrays[name].shape}; the manifold holds {a.dtype}, {a.shape})")
        try:
            est = cls(m, time=meta["time"], t_min=meta["t_min"], route=meta["route"],
                      shrinkage=meta["shrinkage"], n_levels=meta["n_levels"])
            est._validate_params()
            t_min_ = float(meta["t_min_"])
        except (ValueError, TypeError) as exc:
            raise bad("meta", f"holds invalid parameters ({exc})") from None
        if not (math.isfinite(t_min_) and t_min_ > 0) or not isinstance(meta["shrinkage"], bool) \
                or not (meta["n_levels"] is None or (isinstance(meta["n_levels"], int)
                                                     and meta["n_levels"] >= 1)):
            raise bad("meta", f"holds invalid parameters (t_min_ = {meta['t_min_']!r}, shrinkage = "
                              f"{meta['shrinkage']!r}, n_levels = {meta['n_levels']!r})")

        X = get("X", floats, ndim=None)                      # its shape: m.validate below
        if X.shape[0] == 0:
            raise bad("X", "holds no points")
        X = m.validate(torch.as_tensor(X), f"{path}: array 'X'")
        w = get("sample_weight", (X.numpy().dtype,))
        distribution("sample_weight", w, X.shape[0], MANIFOLD_ATOL[X.dtype])
        times = get("times")
        if times.size == 0 or (times <= 0).any():
            raise bad("times", f"must be positive diffusion times, found {times.tolist()}")
        point_times = get("point_times_", optional=True)
        if (meta["time"] == "adaptive") != (point_times is not None):
            raise bad("point_times_", f"must be present exactly when time='adaptive' (time="
                                      f"{meta['time']!r})")
        if point_times is not None:
            if point_times.shape != (X.shape[0],) or (point_times <= 0).any():
                raise bad("point_times_", f"must hold {X.shape[0]} positive times, found shape "
                                          f"{point_times.shape}")
            if not np.array_equal(np.unique(point_times), times):
                raise bad("times", "must be the distinct values of 'point_times_'")
            adaptive = {k: meta.get(k) for k in ("pilot_time_", "alpha_", "adaptive_log_likelihood_")}
            if not all(isinstance(v, float) and math.isfinite(v) for v in adaptive.values()):
                raise bad("meta", f"holds invalid adaptive fit figures {adaptive}")
        if (not isinstance(meta["time"], str) or meta["time"] == "auto" or meta["shrinkage"]) \
                and times.size != 1:
            raise bad("times", f"holds {times.size} times, but time={meta['time']!r} "
                               f"(shrinkage={meta['shrinkage']}) fits one")
        distribution("weights", get("weights"), times.size, MANIFOLD_ATOL[torch.float64])
        grid = get("grid_", optional=True)
        if grid is not None and (grid <= 0).any():
            raise bad("grid_", "must hold positive times")
        for extra in ("loo_log_likelihood_", "heldout_log_likelihood_"):
            if extra in arrays and (grid is None or get(extra, floats).shape != grid.shape):
                raise bad(extra, "must have one entry per time of grid_")
        if m.discrete:
            faces = get("mesh_point_faces", tuple(np.dtype(t) for t in (np.int64, np.int32)))
            bary = get("mesh_point_bary", ndim=2)
            try:
                P = m.from_barycentric(faces, bary)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}: arrays 'mesh_point_faces' and 'mesh_point_bary' are "
                                 f"not locations on {m!r} ({exc})") from None
            if P.shape != X.shape or float((P - X.double()).abs().max()) \
                    > 2 * MANIFOLD_ATOL[X.dtype] * m.bounding_box_diagonal:
                raise ValueError(f"{path}: arrays 'mesh_point_faces' and 'mesh_point_bary' do "
                                 "not locate the points of array 'X'")

        est.t_min_ = t_min_
        est.X_ = X
        est.sample_weight_ = torch.as_tensor(w)
        est.times_ = torch.as_tensor(times)
        est.weights_ = torch.as_tensor(arrays["weights"])
        est._set_n_features(est.X_)
        if est.times_.numel() == 1 and meta["time"] != "adaptive":
            est.time_ = float(est.times_[0])
        if point_times is not None:
            est.point_times_ = torch.as_tensor(point_times)
            for k, v in adaptive.items():
                setattr(est, k, v)
        for extra in ("grid_", "loo_log_likelihood_", "heldout_log_likelihood_"):
            if extra in arrays:
                setattr(est, extra, torch.as_tensor(arrays[extra]))
        try:
            est._build()
            if point_times is not None:
                est._set_classes()
            if m.discrete:
                est._mesh_density.set_locations(arrays["mesh_point_faces"], arrays["mesh_point_bary"])
            if est.shrinkage:  # deterministic from the saved data and time
                est._fit_shrinkage()
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return est
