"""Riemannian diffusion kernel smoothing: closed-form densities and scores of every forward marginal.

The fitted (t = 0) density is the data diffused for the fitted time t*:

    p̂(x) = Σ_i w_i k_{t*}(x, x_i) = Σ_n e^{−λ_n t*} ĉ_n φ_n(x),   ĉ_n = Σ_i w_i φ_n(x_i),

and the forward marginal at time t ≥ 0 is p̂ diffused for t* + t (semigroup property), so
``log_density(X, t)`` and ``grad_log_density(X, t)`` are exact for every t. ``time="multiscale"``
mixes several times: p̂ = Σ_s π_s Σ_i w_i k_{t_s}(·, x_i).
"""

import json
import math
import os
import tempfile

import numpy as np
import torch

from heatscore._validation import as_float_tensor, as_generator, check_finite
from heatscore.estimators._base import BaseEstimator
from heatscore.estimators._kernel_sum import KernelSum, SpectralSum

#: Relative accuracy of every route (|Δ log p| ≤ ~1e-6 as the benchmarks require).
RTOL = 1e-7
#: Grid points per decade of the time search, and the golden-section refinements after it.
GRID_PER_DECADE = 3
N_REFINE = 8
#: Mixture times of ``time="multiscale"``: geometric around the single-time optimum.
MULTISCALE_SPREAD = 30.0
MULTISCALE_TIMES = 7


def _manifold_spec(m):
    """A JSON-able description of a manifold (meshes store their arrays separately)."""
    from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh

    if isinstance(m, Sphere):
        return {"kind": "Sphere", "dim": m.dim}
    if isinstance(m, Torus):
        return {"kind": "Torus", "dim": m.dim}
    if isinstance(m, SO3):
        return {"kind": "SO3"}
    if isinstance(m, Euclidean):
        return {"kind": "Euclidean", "dim": m.dim, "scale": float(m.scale)}
    if isinstance(m, TriangleMesh):
        return {"kind": "TriangleMesh"}
    raise TypeError(f"cannot save a model on {m!r}")


def _manifold_from_spec(spec, arrays):
    from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh

    kind = spec["kind"]
    if kind == "Sphere":
        return Sphere(spec["dim"])
    if kind == "Torus":
        return Torus(spec["dim"])
    if kind == "SO3":
        return SO3()
    if kind == "Euclidean":
        return Euclidean(spec["dim"], scale=spec["scale"])
    if kind == "TriangleMesh":
        return TriangleMesh(arrays["mesh_vertices"], arrays["mesh_faces"])
    raise ValueError(f"unknown manifold kind {kind!r} in the saved model")


def _first_eigenvalue(m):
    """λ_1, the smallest positive eigenvalue (sets the time scale)."""
    ep = m.eigenpairs(2)
    pos = ep.eigenvalues[ep.eigenvalues > 1e-10]
    return float(pos[0])


class DiffusionKernelSmoother(BaseEstimator):
    """Heat-kernel density estimator with closed-form scores of every forward marginal.

    Parameters
    ----------
    manifold : a heatscore manifold (Sphere(2), Torus(d), SO3(), Euclidean(d), TriangleMesh).
    time : float, ``"auto"`` or ``"multiscale"``. A float fixes t*. ``"auto"`` maximises the
        leave-one-out log-likelihood over a geometric grid from max(t_min, median(d_nn²)/200) to
        1/λ_1 (d_nn: nearest-neighbour distances), refined by golden-section search. ``"multiscale"``
        mixes ``MULTISCALE_TIMES`` times around that optimum with weights that maximise the
        leave-one-out likelihood of the mixture (EM).
    t_min : smallest diffusion time considered; None: 2e-8/λ_1 (1e-8 on the unit sphere).
    route : ``"auto"``, ``"spectral"``, ``"neighbors"`` or ``"dense"`` (evaluation route; all agree
        to ``RTOL``; ``"auto"`` picks the cheapest certified one per call).

    Fitted attributes: ``X_`` (n, *pt), ``sample_weight_`` (n,) normalised, ``times_`` (S,),
    ``weights_`` (S,) mixture weights, ``time_`` (t* for a single time), ``t_min_``,
    ``loo_log_likelihood_`` (mean LOO log-likelihood per grid time, for "auto"), ``grid_``.
    """

    def __init__(self, manifold, time="auto", t_min=None, route="auto"):
        self.manifold = manifold
        self.time = time
        self.t_min = t_min
        self.route = route

    # --- fitting ------------------------------------------------------------------------------
    def _validate_params(self):
        if isinstance(self.time, str):
            if self.time not in ("auto", "multiscale"):
                raise ValueError(f"time must be a positive float, 'auto' or 'multiscale', found {self.time!r}")
        else:
            t = float(self.time)
            if not math.isfinite(t) or t <= 0:
                raise ValueError(f"time must be a positive float, 'auto' or 'multiscale', found {self.time!r}")
        if self.route not in ("auto", "spectral", "neighbors", "dense"):
            raise ValueError(f"route must be 'auto', 'spectral', 'neighbors' or 'dense', found {self.route!r}")
        if self.t_min is not None and not (float(self.t_min) > 0 and math.isfinite(float(self.t_min))):
            raise ValueError(f"t_min must be a positive float or None, found {self.t_min!r}")

    def fit(self, X, sample_weight=None):
        """Fit to data X (n, *point_shape) with optional non-negative weights (n,). Returns self."""
        from heatscore.manifolds import TriangleMesh

        self._validate_params()
        m = self.manifold
        X = m.validate(X, "X")
        if X.shape[0] == 0:
            raise ValueError("X must hold at least one point, found 0")
        w = self._weights(sample_weight, X)
        lam1 = _first_eigenvalue(m)
        self.t_min_ = 2e-8 / lam1 if self.t_min is None else float(self.t_min)
        self.X_, self.sample_weight_ = X, w
        self._build()
        if isinstance(m, TriangleMesh):
            raise NotImplementedError("mesh smoothing is provided by the mesh density route")
        if not isinstance(self.time, str):
            times, weights = [float(self.time)], [1.0]
        else:
            if X.shape[0] < 2:
                raise ValueError(f"time={self.time!r} needs at least 2 points, found {X.shape[0]}")
            t_best = self._select_time(lam1)
            if self.time == "auto":
                times, weights = [t_best], [1.0]
            else:
                times, weights = self._multiscale(t_best, lam1)
        self.times_ = torch.tensor(times, dtype=torch.float64)
        self.weights_ = torch.tensor(weights, dtype=torch.float64)
        if len(times) == 1:
            self.time_ = times[0]
        return self

    @staticmethod
    def _weights(sample_weight, X):
        n = X.shape[0]
        if sample_weight is None:
            return torch.full((n,), 1.0 / n, dtype=X.dtype, device=X.device)
        w = as_float_tensor(sample_weight, "sample_weight", dtype=X.dtype, device=X.device)
        if w.shape != (n,):
            raise ValueError(f"sample_weight must have shape ({n},), found {tuple(w.shape)}")
        check_finite(w, "sample_weight")
        if bool((w < 0).any()) or float(w.sum()) <= 0:
            raise ValueError("sample_weight must be non-negative with a positive sum")
        return w / w.sum()

    def _build(self):
        self._ksum = KernelSum(self.manifold, self.X_, self.sample_weight_)
        self._spec = SpectralSum(self.manifold, self.X_, self.sample_weight_)

    def _loo(self, tau):
        """(n,) leave-one-out log p̂_{−i}(x_i) at time τ (route chosen like ``log_density``)."""
        levels = self._spec.levels_for(tau) if self.route in ("auto", "spectral") else None
        if levels is not None:
            p, _, bound = self._spec.value_and_grad(self.X_, tau, levels, False)
            w = self.sample_weight_
            self_term = w * torch.exp(self._ksum.backend.log_and_grad(
                self.X_[:1], self.X_[:1], torch.tensor([tau], dtype=self.X_.dtype), False)[0])
            loo = (p - self_term) / (1 - w)
            ok = loo * (1 - w) >= bound / RTOL
            out = torch.log(torch.where(ok, loo, torch.ones_like(loo)))
            if not bool(ok.all()):
                idx = torch.nonzero(~ok).flatten()
                sub, _ = self._ksum.log_and_grad(self.X_, tau, exclude_self=True,
                                                 route="neighbors" if self.route == "auto" else "dense")
                out[idx] = sub[idx]
            return out
        route = "auto" if self.route == "spectral" else self.route
        return self._ksum.log_and_grad(self.X_, tau, exclude_self=True, route=route)[0]

    def _loo_score(self, tau):
        return float((self.sample_weight_ * self._loo(tau)).sum())

    def _select_time(self, lam1):
        d, _ = self._ksum.index.nearest(self.X_, 0.0, k=2)
        d_nn = d[:, 1]
        pos = d_nn[d_nn > 0]
        scale = float(np.median(pos) ** 2) if pos.size else self.t_min_
        t_lo = max(self.t_min_, scale / 200)
        t_hi = max(10 * t_lo, 1.0 / lam1)
        n_grid = max(3, int(math.ceil(GRID_PER_DECADE * math.log10(t_hi / t_lo))) + 1)
        grid = np.geomspace(t_lo, t_hi, n_grid)
        scores = []
        for tau in grid:  # ascending; stop three points past the best (unimodal in practice)
            scores.append(self._loo_score(float(tau)))
            b = int(np.argmax(scores))
            if len(scores) - 1 - b >= 3:
                break
        self.grid_ = torch.tensor(grid[:len(scores)])
        self.loo_log_likelihood_ = torch.tensor(scores)
        b = int(np.argmax(scores))
        lo = math.log(grid[max(b - 1, 0)])
        hi = math.log(grid[min(b + 1, len(scores) - 1)])
        return self._golden(lo, hi, grid[b], scores[b])

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

    def _multiscale(self, t_best, lam1):
        times = np.geomspace(max(self.t_min_, t_best / MULTISCALE_SPREAD),
                             min(1.0 / lam1, t_best * MULTISCALE_SPREAD), MULTISCALE_TIMES)
        L = torch.stack([self._loo(float(t)) for t in times], dim=1)          # (n, S)
        w = self.sample_weight_
        pi = torch.full((len(times),), 1.0 / len(times), dtype=L.dtype)
        for _ in range(500):  # EM for the mixture weights of the LOO densities
            logr = torch.log(pi) + L
            r = torch.softmax(logr, dim=1)
            new = (w[:, None] * r).sum(0)
            if float((new - pi).abs().max()) < 1e-10:
                pi = new
                break
            pi = new
        keep = pi > 1e-8
        pi = pi[keep] / pi[keep].sum()
        return [float(t) for t in times[keep.numpy()]], [float(p) for p in pi]

    # --- evaluation ---------------------------------------------------------------------------
    def _log_and_grad(self, X, t, want_grad, name="X"):
        self._check_fitted("times_")
        X = self.manifold.validate(X, name)
        tt = as_float_tensor(t, "t", dtype=X.dtype)
        if tt.ndim != 0 or not bool(torch.isfinite(tt)) or float(tt) < 0:
            raise ValueError(f"t must be a finite scalar >= 0, found {t!r}")
        logs, grads = [], []
        for tau_s, pi_s in zip(self.times_.tolist(), self.weights_.tolist()):
            lg, gr = self._log_one(X, tau_s + float(tt), want_grad)
            logs.append(lg + math.log(pi_s))
            grads.append(gr)
        L = torch.stack(logs, dim=1)
        out = torch.logsumexp(L, dim=1)
        if not want_grad:
            return out, None
        resp = torch.softmax(L, dim=1)
        g = sum(resp[:, s].reshape((-1,) + (1,) * (grads[s].ndim - 1)) * grads[s] for s in range(len(grads)))
        return out, g

    def _log_one(self, X, tau, want_grad):
        levels = self._spec.levels_for(tau) if self.route in ("auto", "spectral") else None
        if levels is not None:
            p, g, bound = self._spec.value_and_grad(X, tau, levels, want_grad)
            ok = p >= bound / RTOL
            out = torch.log(torch.where(ok, p, torch.ones_like(p)))
            grad = g / p.reshape((-1,) + (1,) * (g.ndim - 1)) if want_grad else None
            if not bool(ok.all()):
                idx = torch.nonzero(~ok).flatten()
                sub, gsub = self._ksum.log_and_grad(X[idx], tau, want_grad)
                out[idx] = sub
                if want_grad:
                    grad[idx] = gsub
            return out, grad
        route = "auto" if self.route == "spectral" else self.route
        return self._ksum.log_and_grad(X, tau, want_grad, route=route)

    def log_density(self, X, t=0.0):
        """(n,) log p̂_t(x): the fitted density diffused for a further time t ≥ 0 (w.r.t. dvol)."""
        return self._log_and_grad(X, t, False)[0]

    def grad_log_density(self, X, t=0.0):
        """(n, *ambient) ∇ log p̂_t(x), the Riemannian score of the time-t marginal."""
        return self._log_and_grad(X, t, True)[1]

    def score_samples(self, X):
        """(n,) log-density of each point under the fitted model (nats, w.r.t. dvol)."""
        return self.log_density(X, 0.0)

    def score(self, X):
        """Mean log-likelihood of X (higher is better)."""
        return float(self.score_samples(X).mean())

    def sample(self, n, rng=None):
        """(n, *pt) exact draws from p̂: a datum by weight, a time by mixture weight, then the
        exact forward noising for that time."""
        from heatscore.heat_kernels import sample_heat_kernel
        from heatscore._validation import check_positive_int

        self._check_fitted("times_")
        n = check_positive_int(n, "n", minimum=1)
        gen = as_generator(rng)
        idx = torch.multinomial(self.sample_weight_.cpu(), n, replacement=True, generator=gen)
        s = torch.multinomial(self.weights_.cpu(), n, replacement=True, generator=gen)
        return sample_heat_kernel(self.manifold, self.X_[idx.to(self.X_.device)],
                                  self.times_.to(self.X_)[s.to(self.X_.device)], rng=gen)

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path):
        """Write the fitted model to ``path`` (.npz, no pickle; atomic rename)."""
        self._check_fitted("times_")
        meta = {"class": type(self).__name__, "manifold": _manifold_spec(self.manifold),
                "time": self.time, "t_min": self.t_min, "route": self.route,
                "t_min_": self.t_min_, "format": 1}
        arrays = {"X": self.X_.cpu().numpy(), "sample_weight": self.sample_weight_.cpu().numpy(),
                  "times": self.times_.numpy(), "weights": self.weights_.numpy(),
                  "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
        if meta["manifold"]["kind"] == "TriangleMesh":
            arrays["mesh_vertices"] = self.manifold.vertices.cpu().numpy()
            arrays["mesh_faces"] = self.manifold.faces.cpu().numpy()
        for extra in ("grid_", "loo_log_likelihood_"):
            if hasattr(self, extra):
                arrays[extra] = getattr(self, extra).numpy()
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, suffix=".npz.tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path):
        """Read a model written by ``save`` (``allow_pickle=False``: loading runs no code)."""
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {meta.get('class')!r}, not a {cls.__name__}")
        m = _manifold_from_spec(meta["manifold"], arrays)
        est = cls(m, time=meta["time"], t_min=meta["t_min"], route=meta["route"])
        est.t_min_ = meta["t_min_"]
        est.X_ = torch.as_tensor(arrays["X"])
        est.sample_weight_ = torch.as_tensor(arrays["sample_weight"])
        est.times_ = torch.as_tensor(arrays["times"])
        est.weights_ = torch.as_tensor(arrays["weights"])
        if est.times_.numel() == 1:
            est.time_ = float(est.times_[0])
        for extra in ("grid_", "loo_log_likelihood_"):
            if extra in arrays:
                setattr(est, extra, torch.as_tensor(arrays[extra]))
        est._build()
        return est
