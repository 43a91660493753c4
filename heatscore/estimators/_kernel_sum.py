"""Weighted heat-kernel sums log Σ_j w_j k_τ(x, y_j) and their x-gradients, by four routes.

- ``compiled``: S^d (d ≤ 3) through :mod:`heatscore.estimators._chord_sums`: a cell grid of the
  data and a compiled per-query loop with its own certified cut (no pair lists; several times of a
  mixture and value + gradient in one pass over the neighbours).
- ``dense``: every (query, data) pair, in blocks of ``PAIR_BUDGET`` pairs.
- ``neighbors``: a spatial index keeps, for each query x, only the data within a radius r(x)
  chosen so that the dropped terms are at most ``eps`` times the kept sum (error bound below),
  query chunks holding at most ``PAIR_BUDGET`` pairs (counted by the tree first).
- ``spectral``: Σ_n e^{−λ_n τ} ĉ_n φ_n(x) from the data's coefficients (cost independent of the
  data size), used only where its tail bound certifies relative accuracy ``rtol`` at x.

Exact duplicate rows are collapsed into one point with their summed weight (``unique``); a
leave-one-out query lowers its own point's weight by its row's weight rather than dropping it.

Neighbour bound. For kernels that decrease with the distance d (S², SO(3): exactly; T^d and R^d:
bounded by the flat Gaussian up to the factor M = e^{log_margin} of the manifold's
``IndexEmbedding``), the dropped mass is at most sup_{d ≥ r} k_τ(d) ≤ k_τ(r), and the kept sum is
at least w_min k_τ(d_1) with d_1 the distance to the nearest datum. With log k_τ(d) ≈ −d²/(4τ) +
const, the radius r² = d_1² + 4τ (log(1/eps) − log w_min + log M) bounds the relative error by
``eps``.
"""

import math
from collections import OrderedDict

import numba
import numpy as np
import torch
from scipy.spatial import cKDTree

from heatscore.estimators import _chord_sums as chord

#: Below this many (query, datum) pairs the dense route is cheaper than building the index.
_DENSE_PAIRS = 20_000
#: Most (query, datum) pairs held at once by the dense and neighbour routes (each pair costs a
#: few hundred bytes of intermediates with gradients: ~100 MB).
PAIR_BUDGET = 2**19
#: Cell grids kept (one per cell side; each holds 4 to 36 bytes a point, ``ChordGrid``).
MAX_GRIDS = 1
#: Kernel tables kept, shared by every KernelSum (keyed by manifold and time; ~260 KB each):
#: per-point times and their per-class fallbacks reuse the same lattice of times.
MAX_TABLES = 128
_TABLES = OrderedDict()
#: Grid cell side² as a share of the pass-1 cut q1 (finer cells prune more but cost more
#: visits; 4, 16 and 64 measured at 10^6 and 10^7 points: 4 is fastest or within 7%).
SIDE_DIV = 4.0


@numba.njit(cache=True)
def _row_hashes(bits):
    """(n,) uint64 hash of each row of the bit patterns ``bits`` (n, k) (FNV-1a over the words,
    splitmix64's finaliser)."""
    n, k = bits.shape
    out = np.empty(n, np.uint64)
    for i in range(n):
        h = np.uint64(14695981039346656037)
        for c in range(k):
            h = (h ^ np.uint64(bits[i, c])) * np.uint64(1099511628211)
        h ^= h >> np.uint64(31)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(29)
        out[i] = h
    return out


@numba.njit(cache=True)
def _groups(flat, h, order):
    """(inverse (n,) int64, first row of each group (m,)) of the rows of ``flat`` (n, k) taken
    in the hash order ``order``: a row joins an earlier group of its run of equal hashes whose
    first row equals it exactly, else opens a group (a hash collision costs nothing but time)."""
    n, k = flat.shape
    inverse = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    m = 0
    run_start = 0
    for a in range(n):
        i = order[a]
        if a == 0 or h[i] != h[order[a - 1]]:
            run_start = m
        g = -1
        for c in range(run_start, m):
            same = True
            for d in range(k):
                if flat[i, d] != flat[first[c], d]:
                    same = False
                    break
            if same:
                g = c
                break
        if g < 0:
            first[m] = i
            g = m
            m += 1
        inverse[i] = g
    return inverse, first[:m]


def collapse_duplicates(Y, w):
    """(unique rows (m, *pt), summed weights (m,), inverse (n,) int64 with Y = unique[inverse],
    or None when every row is distinct: then Y and w themselves are returned, not copied).

    Rows are compared exactly (by value, after a hash of their bit patterns narrows the
    candidates: 8 bytes a row when there are no duplicates); the unique rows come in hash order."""
    n = Y.shape[0]
    flat = Y.detach().cpu().numpy().reshape(n, -1)
    if not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat)
    words = {8: np.uint64, 4: np.uint32, 2: np.uint16}[flat.dtype.itemsize]
    h = _row_hashes(flat.view(words))
    h.sort()
    if n < 2 or not bool((h[1:] == h[:-1]).any()):
        return Y, w, None               # distinct hashes: distinct rows
    h = _row_hashes(flat.view(words))   # again, in row order (cheaper than a second array)
    inverse, first = _groups(flat, h, np.argsort(h, kind="stable"))
    del h
    wu = np.bincount(inverse, weights=w.detach().cpu().numpy(), minlength=first.shape[0])
    U = Y[torch.as_tensor(first, device=Y.device)]
    return U, torch.as_tensor(wu, dtype=w.dtype, device=w.device), inverse


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

    def counts(self, X, radius, tau):
        """(n,) number of embedded data rows (copies included) within each query's radius."""
        e = self.embedding
        return np.asarray(self.tree.query_ball_point(e.query(X, tau), e.to_chord(radius, tau),
                                                     workers=-1, return_length=True))

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


def _side(q):
    """Cell side of the compiled route's grid for a typical squared cut radius q: the power of
    two at or below its radius (at most 1/2)."""
    return 2.0 ** min(-1, math.floor(math.log2(max(math.sqrt(q), 1e-6))))


def _chunks_by_count(counts, budget):
    """Consecutive (start, stop) query ranges whose counts sum to ≤ budget (a query over the
    budget alone)."""
    bounds, start, acc = [], 0, 0
    for i, c in enumerate(counts.tolist()):
        if acc and acc + c > budget:
            bounds.append((start, i))
            start, acc = i, 0
        acc += c
    if start < len(counts):
        bounds.append((start, len(counts)))
    return bounds


class KernelSum:
    """log p(x) = log Σ_s π_s Σ_j w_j k_{τ_s}(x, y_j) and ∇_x log p (compact manifolds and R^d).

    Parameters
    ----------
    manifold, Y (n, *pt) data, w (n,) weights summing to one.
    eps : relative error allowed to the truncated routes (see the module docstring).

    Attributes: ``unique`` (m, *pt) the distinct rows, ``unique_weight`` (m,), ``inverse`` (n,)
    numpy int64 (row i of Y is ``unique[inverse[i]]``), or None when every row is distinct
    (then ``unique`` is Y).
    """

    #: Whether the compiled route may serve this sum (a subclass with its own radius rule sets
    #: False).
    compiled = True

    def __init__(self, manifold, Y, w, eps=1e-10):
        self.manifold = manifold
        self.Y = Y
        self.w = w
        self.eps = eps
        self.backend = manifold._heat_backend()
        self.unique, self.unique_weight, self.inverse = collapse_duplicates(Y, w)
        self._log_w = None
        self._index = None
        self._grids = OrderedDict()
        self._classes = None
        e = manifold._index_embedding()
        self._chord_ok = (self.compiled and e is not None and getattr(e, "radial_chord", False)
                          and int(np.prod(manifold.ambient_shape)) <= chord.MAX_DIM
                          and hasattr(self.backend, "log_radial"))

    @property
    def index(self):
        """The :class:`SpatialIndex` of the unique rows (its indices are into ``unique``)."""
        if self._index is None:
            self._index = SpatialIndex(self.manifold, self.unique)
        return self._index

    @property
    def log_w(self):
        """(m,) log of the unique weights (made on the exact routes' first use)."""
        if self._log_w is None:
            self._log_w = torch.log(self.unique_weight)
        return self._log_w

    @property
    def n_unique(self):
        return self.unique.shape[0]

    def _exclusion(self, exclude_rows):
        """(unique index (n,), weight removed (n,)) numpy arrays of leave-one-out rows."""
        rows = exclude_rows.cpu().numpy()
        own = rows if self.inverse is None else self.inverse[rows]
        return own.astype(np.int64), self.w.detach().cpu().numpy()[rows]

    # --- one time τ -----------------------------------------------------------------------
    def radius(self, d1, tau):
        """Per-query neighbour radius from the nearest-datum distance d1 (module docstring)."""
        w_min = float(self.unique_weight[self.unique_weight > 0].min())
        extra = 4 * tau * (math.log(1 / self.eps) - math.log(w_min) + self.index.embedding.log_margin)
        return np.sqrt(d1**2 + extra)

    def log_and_grad(self, X, tau, want_grad=False, exclude_rows=None, route="auto"):
        """(n,) log Σ_j w_j k_τ(x, y_j) and (n, *ambient) its gradient (or None).

        ``exclude_rows`` (n,) int: query i is datum ``exclude_rows[i]``, whose weight is left out
        (leave-one-out; the remaining weights are renormalised to sum to one).
        """
        return self.mixture_log_and_grad(X, [tau], [0.0], want_grad, exclude_rows, route)

    def mixture_log_and_grad(self, X, taus, log_pis, want_grad=False, exclude_rows=None,
                             route="auto", classes=None):
        """(n,) log Σ_s π_s Σ_j w_j k_{τ_s}(x, y_j) and its gradient (or None): the compiled
        route in one pass over the neighbours for all times where it applies, else per time.

        ``classes`` (m,) int numpy array (m = ``n_unique``): unique point j enters time
        τ_{classes[j]} only, i.e. log Σ_j π_{c_j} w_j k_{τ_{c_j}}(x, y_j) (per-point times)."""
        ex = self._exclusion(exclude_rows) if exclude_rows is not None else None
        out, grad = self._certified(X, taus, log_pis, want_grad, ex, route, classes)
        if ex is not None:
            out = out - torch.log1p(-torch.as_tensor(ex[1], dtype=out.dtype, device=out.device))
        return out, grad

    def _certified(self, X, taus, log_pis, want_grad, ex, route, classes):
        """``mixture_log_and_grad`` before the leave-one-out renormalisation; ``ex`` as
        ``_exclusion`` gives it (unique index −1: nothing left out)."""
        n = X.shape[0]
        out = X.new_full((n,), -math.inf)
        grad = X.new_zeros((n,) + tuple(self.manifold.ambient_shape)) if want_grad else None
        todo = torch.ones(n, dtype=torch.bool)
        if self._chord_ok and route in ("auto", "neighbors") and n:
            out, grad, flag = self._compiled(X, taus, log_pis, want_grad, ex, classes)
            todo = torch.as_tensor(flag.astype(bool))
        if not bool(todo.any()):
            return out, grad
        idx = torch.nonzero(todo).flatten().to(X.device)
        sub_ex = None if ex is None else (ex[0][idx.cpu().numpy()], ex[1][idx.cpu().numpy()])
        logs, grads = [], []
        for s, (tau, lp) in enumerate(zip(taus, log_pis)):
            if classes is None:
                lg, g = self._one_time(X[idx], float(tau), want_grad, sub_ex, route)
            else:  # time s over its own points only (their own certified cut first)
                part, local = self._class_sum(classes, s)
                if part is None:
                    continue
                part_ex = None if sub_ex is None else (
                    np.where(sub_ex[0] >= 0, local[sub_ex[0]], -1), sub_ex[1])
                lg, g = part._certified(X[idx], [tau], [0.0], want_grad, part_ex, route, None)
            logs.append(lg + lp)
            grads.append(g)
        L = torch.stack(logs, dim=1)
        out[idx] = torch.logsumexp(L, dim=1)
        if want_grad:
            resp = torch.softmax(L, dim=1)
            shape = (-1,) + (1,) * (grads[0].ndim - 1)
            grad[idx] = sum(resp[:, s].reshape(shape) * grads[s] for s in range(len(grads)))
        return out, grad

    def _class_sum(self, classes, s):
        """(KernelSum of the unique points of class s, or None when it has none; (m,) their
        local index, −1 elsewhere), cached for the last ``classes``."""
        if self._classes is None or not np.array_equal(self._classes[0], classes):
            self._classes = (classes.copy(), {})
        parts = self._classes[1]
        if s not in parts:
            rows = np.flatnonzero(classes == s)
            local = np.full(self.n_unique, -1, np.int64)
            local[rows] = np.arange(rows.size)
            r = torch.as_tensor(rows, device=self.unique.device)
            part = (KernelSum(self.manifold, self.unique[r], self.unique_weight[r], self.eps)
                    if rows.size else None)
            parts[s] = (part, local)
        return parts[s]

    def _one_time(self, X, tau, want_grad, ex, route):
        n = X.shape[0]
        if route == "auto":
            route = "dense"
            if n * self.n_unique > _DENSE_PAIRS:
                d1 = self._nearest(X, tau, ex)
                if float(np.quantile(self.radius(d1, tau), 0.9)) <= self.index.embedding.max_radius:
                    route = "neighbors"
        if route == "neighbors":
            return self._neighbors(X, tau, want_grad, ex)
        return self._dense(X, tau, want_grad, ex)

    def _nearest(self, X, tau, ex):
        """(n,) distance from each query to its nearest datum of positive (reduced) weight."""
        if ex is None:
            return self.index.nearest(X, tau, k=1)[0][:, 0]
        d, j = self.index.nearest(X, tau, k=2)
        wu = self.unique_weight.detach().cpu().numpy()
        gone = (j[:, 0] == ex[0]) & (wu[j[:, 0]] - ex[1] <= 0)
        return np.where(gone, d[:, 1], d[:, 0])

    def _pairs_eval(self, X, qi, dj, tau, want_grad, n, ex):
        """Per-query logsumexp over the given (query, datum) pairs (at most ``PAIR_BUDGET``)."""
        if ex is not None:  # the left-out row's weight, off its own point
            own = dj == ex[0][qi]
            keep = ~own | (self.unique_weight.detach().cpu().numpy()[dj] - ex[1][qi] > 0)
            qi, dj, own = qi[keep], dj[keep], own[keep]
        qi_t = torch.as_tensor(qi, device=X.device)
        dj_t = torch.as_tensor(dj, device=X.device)
        xa, ya = X[qi_t], self.unique[dj_t]
        lg, g = self.backend.log_and_grad(xa, ya, torch.full((xa.shape[0],), tau, dtype=X.dtype,
                                                             device=X.device), want_grad)
        lw = self.log_w[dj_t]
        if ex is not None and own.any():
            o = torch.as_tensor(own, device=X.device)
            reduced = self.unique_weight[dj_t[o]] - torch.as_tensor(ex[1][qi[own]]).to(lw)
            lw = lw.clone()
            lw[o] = torch.log(reduced)
        vals = lg + lw
        out = segment_logsumexp(vals, qi_t, n)
        if not want_grad:
            return out, None
        resp = torch.exp(vals - out[qi_t])                                   # responsibilities
        shape = (-1,) + (1,) * (g.ndim - 1)
        grad = X.new_zeros((n,) + tuple(g.shape[1:])).index_add_(0, qi_t, resp.reshape(shape) * g)
        return out, grad

    def _blocks(self, X, tau, want_grad, ex, bounds, pairs_of):
        """Evaluate the query ranges ``bounds`` with pairs from ``pairs_of(a, b)``; concatenated."""
        outs, grads = [], []
        for a, b in bounds:
            qi, dj = pairs_of(a, b)
            sub = None if ex is None else (ex[0][a:b], ex[1][a:b])
            o, g = self._pairs_eval(X[a:b], qi, dj, tau, want_grad, b - a, sub)
            outs.append(o)
            grads.append(g)
        out = torch.cat(outs) if outs else X.new_zeros(0)
        return out, (torch.cat(grads) if want_grad and grads else None)

    def _neighbors(self, X, tau, want_grad, ex):
        R = self.radius(self._nearest(X, tau, ex), tau)
        bounds = _chunks_by_count(self.index.counts(X, R, tau), PAIR_BUDGET)
        return self._blocks(X, tau, want_grad, ex, bounds,
                            lambda a, b: self.index.pairs(X[a:b], R[a:b], tau))

    def _dense(self, X, tau, want_grad, ex):
        n, m = X.shape[0], self.n_unique
        step = max(1, PAIR_BUDGET // max(1, m))
        bounds = [(a, min(n, a + step)) for a in range(0, n, step)]
        return self._blocks(X, tau, want_grad, ex, bounds,
                            lambda a, b: (np.repeat(np.arange(b - a), m), np.tile(np.arange(m), b - a)))

    # --- the compiled route ----------------------------------------------------------------
    def _grid(self, side):
        """The cell grid of the unique points at cell side ``side`` (a power of two)."""
        if side not in self._grids:
            if len(self._grids) >= MAX_GRIDS:
                self._grids.popitem(last=False)
            U = np.ascontiguousarray(self.unique.detach().cpu().numpy().reshape(self.n_unique, -1))
            self._grids[side] = chord.ChordGrid(U, self.unique_weight.detach().cpu().numpy(), side)
        self._grids.move_to_end(side)
        return self._grids[side]

    def _table(self, tau):
        """(K and K' at the nodes, 1/spacing, c0 = log k_τ(0), last usable q) of ``_chord_sums``:
        K(q) = k_τ(q)/k_τ(0), K'(q) = K(q) (d log k/dθ)/(2 sin θ) (dq/dθ = 2 sin θ; its limit at
        q = 0 from θ = 1e-7 √τ)."""
        key = (self.manifold, tau)
        if key not in _TABLES:
            if len(_TABLES) >= MAX_TABLES:
                _TABLES.popitem(last=False)
            q_end = min(4 * tau * chord.TABLE_REACH, chord.Q_END)
            h = q_end / chord.TABLE_NODES
            q = torch.arange(chord.TABLE_NODES + 1, dtype=torch.float64) * h
            theta = 2 * torch.asin(torch.sqrt(q) / 2)
            t = torch.full_like(theta, tau)
            logk = self.backend.log_radial(theta, t)
            c0 = float(logk[0])
            K = torch.exp(logk - c0)
            theta[0] = 1e-7 * math.sqrt(tau)   # d log k/dq at 0 as its limit
            dK = K * self.backend.dlog_radial(theta, t) / (2 * torch.sin(theta))
            _TABLES[key] = (K.numpy(), dK.detach().numpy(), 1.0 / h, c0,
                            (chord.TABLE_NODES - 2) * h)
        _TABLES.move_to_end(key)
        return _TABLES[key]

    def _compiled(self, X, taus, log_pis, want_grad, ex, classes=None):
        """The compiled route: (out (n,), grad or None, flag (n,) rows it left to the others)."""
        n, D = X.shape[0], int(np.prod(self.manifold.ambient_shape))
        taus_np = np.asarray(taus, dtype=np.float64)
        tabs = [self._table(float(t)) for t in taus_np]
        T = np.stack([t[0] for t in tabs])
        dT = np.stack([t[1] for t in tabs])
        inv_h = np.array([t[2] for t in tabs])
        c0 = np.array([t[3] for t in tabs])
        qtop = np.array([t[4] for t in tabs])
        Xn = np.ascontiguousarray(X.detach().cpu().numpy().reshape(n, D), dtype=np.float64)
        # one grid, its cells about half the largest pass-1 radius or the data's mean spacing
        # (vol/m)^{1/d}, whichever is larger
        p1 = 4 * float(taus_np.max()) * chord.PASS1
        spacing = (self.manifold.volume / self.n_unique) ** (1.0 / self.manifold.dim)
        grid = self._grid(_side(max(p1 / SIDE_DIV, spacing**2)))
        # queries in cell order: neighbouring queries visit the same data while it is in cache
        keys = np.empty(n, np.int64)
        chord._keys(Xn, grid.side, grid.G, keys)
        order = np.argsort(keys, kind="stable")
        Xn = Xn[order]
        ex_j = np.full(n, -1, np.int64) if ex is None else np.ascontiguousarray(ex[0][order], np.int64)
        ex_w = np.zeros(n) if ex is None else np.ascontiguousarray(ex[1][order], np.float64)
        out = np.full(n, -np.inf)
        grad = np.zeros((n, D)) if want_grad else np.zeros((1, D))
        flag = np.zeros(n, np.int8)
        d1sq = self._nearest_sq(Xn, grid, ex_j, ex_w)
        far = d1sq < 0
        flag[far] = 1
        d1sq[far] = np.inf
        log_pis = np.asarray(log_pis, dtype=np.float64)
        if classes is None:
            cls, wtot = np.empty(0, np.int32), np.ones(len(taus_np))
        else:
            cls = np.ascontiguousarray(classes[grid.idx], dtype=np.int32)
            wtot = np.bincount(classes, weights=self.unique_weight.detach().cpu().numpy(),
                               minlength=len(taus_np))

        def block(a, b):
            chord.chord_sums(Xn[a:b], d1sq[a:b], *grid.args(), cls, wtot, T, dT, inv_h, c0, qtop,
                             taus_np, log_pis, ex_j[a:b], ex_w[a:b], math.log(self.eps), want_grad,
                             out[a:b], grad[a:b] if want_grad else grad, flag[a:b])

        chord.run_blocks(block, n)
        back = np.empty(n, np.int64)
        back[order] = np.arange(n)
        out, flag = out[back], flag[back]
        if want_grad:
            grad = grad[back]
        out_t = torch.as_tensor(out, dtype=X.dtype, device=X.device)
        grad_t = (torch.as_tensor(grad, dtype=X.dtype, device=X.device).reshape(
            (n,) + tuple(self.manifold.ambient_shape)) if want_grad else None)
        return out_t, grad_t, flag

    def _nearest_sq(self, Xn, grid, ex_j, ex_w):
        """(n,) squared chord to the nearest datum (of positive reduced weight) by the grid,
        −1 where it is farther than ``chord.NEAREST_RINGS`` cells."""
        out = np.empty(Xn.shape[0])
        chord.run_blocks(lambda a, b: chord.nearest_sq(
            Xn[a:b], *grid.args(), ex_j[a:b], ex_w[a:b], chord.NEAREST_RINGS, out[a:b]),
            Xn.shape[0])
        return out

    def nearest_other(self):
        """(n,) kernel distance from each data row to the nearest other row (0 for a repeated
        row): the nearest-neighbour distances that time selection scales by."""
        if self.inverse is None and self.n_unique > 1:
            return self.index.nearest(self.unique, 0.0, k=2)[0][:, 1]
        if self.inverse is None:
            return np.zeros(self.n_unique)
        mult = np.bincount(self.inverse, minlength=self.n_unique)
        d_unique = np.zeros(self.n_unique)
        single = mult == 1
        if single.any() and self.n_unique > 1:
            d_unique[single] = self.index.nearest(self.unique[torch.as_tensor(single)], 0.0, k=2)[0][:, 1]
        return d_unique[self.inverse]


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
