"""Weighted heat-kernel sums log Σ_j w_j k_τ(x, y_j) and their x-gradients, by three routes.

- ``dense``: every (query, data) pair, in row chunks under DESIGN's memory budget.
- ``neighbors``: a spatial index keeps, for each query x, only the data within a radius r(x)
  chosen so that the dropped terms are at most ``eps`` times the kept sum (error bound below).
- ``spectral``: Σ_n e^{−λ_n τ} ĉ_n φ_n(x) from the data's coefficients (cost independent of the
  data size), used only where its tail bound certifies relative accuracy ``rtol`` at x.

Neighbour bound. For kernels that decrease with the distance d (S², SO(3): exactly; T^d and R^d:
bounded by the flat Gaussian up to the factor M = e^{log_margin} of the manifold's
``IndexEmbedding``), the dropped mass is at most sup_{d ≥ r} k_τ(d) ≤ k_τ(r), and the kept sum is
at least w_min k_τ(d_1) with d_1 the distance to the nearest datum. With log k_τ(d) ≈ −d²/(4τ) +
const, the radius r² = d_1² + 4τ (log(1/eps) − log w_min + log M) bounds the relative error by
``eps``.
"""

import math

import numpy as np
import torch
from scipy.spatial import cKDTree

from heatscore.manifolds._base import rows_per_chunk

#: Below this many (query, datum) pairs the dense route is cheaper than building the index.
_DENSE_PAIRS = 20_000


class SpatialIndex:
    """Radius search over the data points of a manifold in its :class:`IndexEmbedding`
    (``manifold._index_embedding()``): a k-d tree of the embedded data, queried with the embedded
    radius of each kernel radius."""

    def __init__(self, manifold, Y):
        self.manifold = manifold
        self.embedding = manifold._index_embedding()
        if self.embedding is None:
            raise TypeError(f"no spatial index for {manifold!r}")
        self.n = Y.shape[0]
        self.tree = cKDTree(self.embedding.data(Y), boxsize=self.embedding.boxsize)

    def nearest(self, X, tau, k=1):
        """(n, k) distances (kernel metric) and indices of the k nearest data points."""
        d, j = self.tree.query(self.embedding.query(X, tau), k=k, workers=-1)
        d = np.asarray(d).reshape(X.shape[0], k)
        j = np.asarray(j).reshape(X.shape[0], k) % self.n
        return self.embedding.from_chord(d, tau), j

    def pairs(self, X, radius, tau):
        """Flattened (query index, data index) pairs with distance ≤ radius (per query)."""
        e = self.embedding
        lists = self.tree.query_ball_point(e.query(X, tau), e.to_chord(radius, tau),
                                           workers=-1, return_sorted=False)
        counts = np.fromiter((len(a) for a in lists), dtype=np.int64, count=len(lists))
        qi = np.repeat(np.arange(len(lists)), counts)
        dj = np.concatenate([np.asarray(a, dtype=np.int64) for a in lists]) if counts.sum() else np.zeros(0, np.int64)
        dj = dj % self.n
        if e.copies > 1:  # a datum may be found through several of its copies: once each
            key = np.unique(qi * self.n + dj)
            qi, dj = key // self.n, key % self.n
        return qi, dj


def segment_logsumexp(values, segments, n_segments):
    """log Σ exp(values) per segment id (−inf for empty segments), stable."""
    mx = torch.full((n_segments,), -math.inf, dtype=values.dtype, device=values.device)
    mx = mx.scatter_reduce(0, segments, values, reduce="amax", include_self=True)
    safe = torch.where(torch.isfinite(mx), mx, torch.zeros_like(mx))
    s = torch.zeros_like(mx).index_add_(0, segments, torch.exp(values - safe[segments]))
    return torch.log(s) + safe


class KernelSum:
    """log p(x) = log Σ_s π_s Σ_j w_j k_{τ_s}(x, y_j) and ∇_x log p (compact manifolds and R^d).

    Parameters
    ----------
    manifold, Y (n, *pt) data, w (n,) weights summing to one.
    eps : relative error allowed to the neighbour route (see the module docstring).
    """

    def __init__(self, manifold, Y, w, eps=1e-10):
        self.manifold = manifold
        self.Y = Y
        self.w = w
        self.log_w = torch.log(w)
        self.eps = eps
        self.backend = manifold._heat_backend()
        self._index = None

    @property
    def index(self):
        if self._index is None:
            self._index = SpatialIndex(self.manifold, self.Y)
        return self._index

    # --- one time τ -----------------------------------------------------------------------
    def radius(self, d1, tau):
        """Per-query neighbour radius from the nearest-datum distance d1 (module docstring)."""
        w_min = float(self.w[self.w > 0].min())
        extra = 4 * tau * (math.log(1 / self.eps) - math.log(w_min) + self.index.embedding.log_margin)
        return np.sqrt(d1**2 + extra)

    def log_and_grad(self, X, tau, want_grad=False, exclude_rows=None, route="auto"):
        """(n,) log Σ_j w_j k_τ(x, y_j) and (n, *ambient) its gradient (or None).

        ``exclude_rows`` (n,) int: query i is datum ``exclude_rows[i]``, which is left out
        (leave-one-out; the remaining weights are renormalised to sum to one).
        """
        n = X.shape[0]
        if route == "auto":
            route = "dense"
            if n * self.Y.shape[0] > _DENSE_PAIRS:
                d1 = self._nearest(X, tau, exclude_rows)
                if float(np.quantile(self.radius(d1, tau), 0.9)) <= self.index.embedding.max_radius:
                    route = "neighbors"
        if route == "neighbors":
            return self._neighbors(X, tau, want_grad, exclude_rows)
        return self._dense(X, tau, want_grad, exclude_rows)

    def _nearest(self, X, tau, exclude_rows):
        """(n,) distance from each query to its nearest datum (other than its excluded row)."""
        if exclude_rows is None:
            return self.index.nearest(X, tau, k=1)[0][:, 0]
        d, j = self.index.nearest(X, tau, k=2)
        own = j[:, 0] == exclude_rows.cpu().numpy()
        return np.where(own, d[:, 1], d[:, 0])

    def _pairs_eval(self, X, qi, dj, tau, want_grad, n):
        """Per-query logsumexp over the given (query, datum) pairs."""
        qi_t = torch.as_tensor(qi, device=X.device)
        dj_t = torch.as_tensor(dj, device=X.device)
        P = qi_t.shape[0]
        step = rows_per_chunk(1, budget=2**22)
        logs, grads = [], []
        for a in range(0, P, step):
            xa, ya = X[qi_t[a:a + step]], self.Y[dj_t[a:a + step]]
            lg, gr = self.backend.log_and_grad(xa, ya, torch.full((xa.shape[0],), tau, dtype=X.dtype,
                                                                     device=X.device), want_grad)
            logs.append(lg + self.log_w[dj_t[a:a + step]])
            grads.append(gr)
        vals = torch.cat(logs) if logs else X.new_zeros(0)
        out = segment_logsumexp(vals, qi_t, n)
        if not want_grad:
            return out, None
        g = torch.cat(grads) if grads else X.new_zeros((0,) + tuple(self.manifold.ambient_shape))
        resp = torch.exp(vals - out[qi_t])                                   # responsibilities
        shape = (-1,) + (1,) * (g.ndim - 1)
        grad = X.new_zeros((n,) + tuple(g.shape[1:])).index_add_(0, qi_t, resp.reshape(shape) * g)
        return out, grad

    def _renormalise(self, out, exclude_rows):
        if exclude_rows is not None:
            out = out - torch.log1p(-self.w[exclude_rows])
        return out

    def _neighbors(self, X, tau, want_grad, exclude_rows):
        n = X.shape[0]
        d1 = self._nearest(X, tau, exclude_rows)
        qi, dj = self.index.pairs(X, self.radius(d1, tau), tau)
        if exclude_rows is not None:
            keep = dj != exclude_rows.cpu().numpy()[qi]
            qi, dj = qi[keep], dj[keep]
        out, grad = self._pairs_eval(X, qi, dj, tau, want_grad, n)
        return self._renormalise(out, exclude_rows), grad

    def _dense(self, X, tau, want_grad, exclude_rows):
        n, m = X.shape[0], self.Y.shape[0]
        step = rows_per_chunk(m, 8 * (1 + int(np.prod(self.manifold.ambient_shape))))
        excl = None if exclude_rows is None else exclude_rows.cpu().numpy()
        outs, grads = [], []
        for a in range(0, n, step):
            r = min(step, n - a)
            qi = np.repeat(np.arange(r), m)
            dj = np.tile(np.arange(m), r)
            if excl is not None:
                keep = excl[a + qi] != dj
                qi, dj = qi[keep], dj[keep]
            o, g = self._pairs_eval(X[a:a + r], qi, dj, tau, want_grad, r)
            outs.append(o)
            grads.append(g)
        out = self._renormalise(torch.cat(outs), exclude_rows)
        return out, (torch.cat(grads) if want_grad else None)


class SpectralSum:
    """p_τ(x) = Σ_n e^{−λ_n τ} ĉ_n φ_n(x) with ĉ_n = Σ_j w_j φ_n(y_j) (compact manifolds).

    The levels are chosen so that the uniform tail bound Σ_{l ≥ L} m_l e^{−λ_l τ}/vol (addition
    theorem) is ≤ E = TAIL/vol; it holds for every x because Σ_j w_j = 1, so a value is certified
    to relative accuracy ``rtol`` where p_τ(x) ≥ E/rtol.
    """

    #: Most eigenfunctions the spectral route evaluates (about 50 levels on S²).
    MAX_FUNCTIONS = 2600
    #: Absolute tail target, relative to the uniform density 1/vol.
    TAIL = 1e-9

    def __init__(self, manifold, Y, w):
        self.manifold = manifold
        self.Y = Y
        self.w = w
        self.backend = manifold._heat_backend()
        self._coef = {}
        self._levels = {}

    def levels_for(self, tau):
        """Levels whose tail is ≤ TAIL/vol at τ, or None (no bound, or over MAX_FUNCTIONS)."""
        if not hasattr(self.backend, "levels_for"):
            return None
        if tau not in self._levels:
            self._levels[tau] = self._levels_uncached(tau)
        return self._levels[tau]

    def _levels_uncached(self, tau):
        from heatscore.manifolds._heat_backends import _RadialBackend

        if isinstance(self.backend, _RadialBackend):
            # λ_l = l(l+1): the single term at the largest affordable level already exceeds
            # the tail target when τ is too small; skip the level search then
            cap = 1
            while self.backend.n_functions(cap + 1) <= self.MAX_FUNCTIONS:
                cap += 1
            if cap * (cap + 1) * tau < math.log(1 / self.TAIL):
                return None
        levels = self.backend.levels_for(tau, self.TAIL, "stationary")
        if levels is None or levels > 4 * self.MAX_FUNCTIONS:
            return None
        return levels if self.backend.n_functions(levels) <= self.MAX_FUNCTIONS else None

    def coefficients(self, n_levels):
        if n_levels not in self._coef:
            ep = self.manifold.eigenpairs(n_levels)
            c = torch.zeros(len(ep), dtype=self.Y.dtype, device=self.Y.device)
            for a in range(0, self.Y.shape[0], 8192):
                c += self.w[a:a + 8192] @ ep._values(self.Y[a:a + 8192])
            self._coef[n_levels] = (ep, c)
        return self._coef[n_levels]

    def value_and_grad(self, X, tau, n_levels, want_grad):
        """(p (n,), ∇p (n, *ambient) or None, tail bound E)."""
        ep, c = self.coefficients(n_levels)
        a = torch.exp(-ep.eigenvalues.to(X) * tau) * c
        p, g = [], []
        step = max(1, (2**23) // max(1, len(ep) * (1 + int(np.prod(self.manifold.ambient_shape)))))
        for s in range(0, X.shape[0], step):
            if want_grad:
                v, gr = ep.values_and_grad(X[s:s + step])
                g.append(torch.einsum("k,nk...->n...", a, gr))
            else:
                v = ep._values(X[s:s + step])
            p.append(v @ a)
        bound = self.TAIL / self.manifold.volume
        return torch.cat(p), (torch.cat(g) if want_grad else None), bound
