"""Compiled kernel sums for kernels that are decreasing functions of the chord |x − y| in an
embedding on the unit sphere of R^D (S^d, D = d + 1 ≤ ``MAX_DIM``): the fast path of
:class:`~heatscore.estimators._kernel_sum.KernelSum`.

Structure. The data (duplicates collapsed into weights) are sorted into a uniform grid of cubes of
side ``side`` in R^D; a query visits the cells of the box around it, so memory is O(n) for the grid
and O(1) per query (no list of (query, datum) pairs), and each query is independent: the compiled
loops release the GIL and the caller runs blocks of queries on threads (``run_blocks``; numba's
own threading layers are not used: its OpenMP layer aborts beside torch's OpenMP runtime).

Kernel. For each time τ a table of K(q) = k_τ(q)/k_τ(0) on q = |x − y|² ∈ [0, q_max] (the exact
closed form at uniform nodes; k_τ(0) = e^{c0}) is interpolated by the 4-point cubic, so a pair
costs no exp or log; the table's reach keeps K ≥ e^{−TABLE_REACH}, so the sums cannot underflow
for weights ≥ 1e-200. With q = 2 − 2x·y the Riemannian gradient is the tangential part of the
Euclidean one: ∇_x k = −2 K'(q) e^{c0} (y − (x·y) x).

Truncation, per query and per time s of a mixture Σ_s π_s Σ_j w_j k_s. Pass 1 keeps the data with
q ≤ q1_s = d_1² + 4τ_s·max(``PASS1`` + log π_s, 2), d_1 the chord to the nearest datum, giving the kept sum S_s and
kept weight W_s. Since k_s decreases in q, the dropped part of time s beyond a cut q_s is at most
(V_s − W_s) k_s(q_s), V_s the weight time s holds (1, or its points' total with per-point times); pass 2 extends each cut to the first table node with
π_s (1 − W_s) k_s(q_s) ≤ (ε/S) Σ_r π_r S_r, so that the whole dropped mass is ≤ ε times the
kept mixture. A time whose table ends before the nearest datum (a time far below the data's
spacing, as the smallest of a multiscale mixture) adds at most π_s k_s(q_end) and is dropped where
that is below its share. Queries whose cut would pass a table's end are flagged for the caller's
exact route.
"""

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

#: Embedding dimensions served (the box around a query holds ≥ 3^D cells).
MAX_DIM = 4
#: Pass-1 radius: q1 = d_1² + 4τ·PASS1 (kernel ratio e^{−PASS1} from the nearest datum).
PASS1 = 10.0
#: Table nodes per time (spacing ≤ 4τ·TABLE_REACH/TABLE_NODES ≈ τ/25: the cubic's relative
#: error on e^{−q/4τ} is ≈ (h/4τ)⁴/40 < 1e-9), and its reach 4τ·TABLE_REACH (beyond: the caller's
#: exact route).
TABLE_NODES = 16384
TABLE_REACH = 160.0
#: Largest q any table reaches: θ = 2.5 (the S² kernel focuses near the antipode on a scale
#: finer than the nodes; such far cuts are the exact routes' work).
Q_END = (2 * math.sin(1.25)) ** 2
#: Rings of cells the nearest-datum search grows through before leaving a query to the tree.
NEAREST_RINGS = 6
#: Largest float64 points + weights copy a grid makes into cell order; above it the grid holds
#: each point as uint32 offsets in its cell (``ChordGrid``). Either way reads are contiguous
#: (reading the caller's rows through the index is ~6× slower at 10^7 points: cache misses).
COPY_BYTES = 2**26
#: Offset units per cell side (a coordinate is cell corner + side · o / OFFSET_SCALE).
OFFSET_SCALE = 2.0**32


@numba.njit(cache=True)
def _cell_of(v, side):
    return int(math.floor((v + 1.0) / side))


@numba.njit(cache=True)
def _point(P, O, copied, j, cur, side, y):
    """Write slot j's point into y (D,): row j of P when ``copied``, else its cell's corner
    (cell ``cur``) plus its uint32 offsets O[j] (error ≤ side · 2^−32 a coordinate)."""
    for d in range(y.shape[0]):
        if copied:
            y[d] = P[j, d]
        else:
            y[d] = -1.0 + (cur[d] + O[j, d] / OFFSET_SCALE) * side


@numba.njit(cache=True)
def _offsets(U, idx, side):
    """(m, D) uint32 offsets of the rows U[idx] in their cells (nearest unit, clamped)."""
    m, D = U.shape
    O = np.empty((m, D), np.uint32)
    top = OFFSET_SCALE - 1.0
    for j in range(m):
        for d in range(D):
            u = (U[idx[j], d] + 1.0) / side
            o = math.floor((u - math.floor(u)) * OFFSET_SCALE + 0.5)
            O[j, d] = np.uint32(min(max(o, 0.0), top))
    return O


@numba.njit(cache=True)
def _keys(P, side, G, out):
    """Linear cell key of each row of P (m, D) into ``out`` (m,) (int32 or int64)."""
    m, D = P.shape
    for i in range(m):
        k = 0
        for d in range(D):
            k = k * G + _cell_of(P[i, d], side)
        out[i] = k


@numba.njit(cache=True)
def _radix_order(keys, n_digits):
    """(m,) int32 stable order of the non-negative ``keys`` by an LSD radix sort on 16-bit
    digits (two int32 index arrays and a 65536-bin histogram: no int64 argsort)."""
    m = keys.shape[0]
    idx = np.arange(m).astype(np.int32)
    tmp = np.empty(m, np.int32)
    count = np.empty(65537, np.int64)
    for p in range(n_digits):
        shift = 16 * p
        count[:] = 0
        for i in range(m):
            count[((keys[idx[i]] >> shift) & 0xFFFF) + 1] += 1
        for b in range(65536):
            count[b + 1] += count[b]
        for i in range(m):
            b = (keys[idx[i]] >> shift) & 0xFFFF
            tmp[count[b]] = idx[i]
            count[b] += 1
        idx, tmp = tmp, idx
    return idx


@numba.njit(cache=True)
def _runs(keys, idx):
    """(sorted occupied keys (K,), starts (K + 1,)) of ``keys`` in the order ``idx``."""
    m = idx.shape[0]
    K = 0
    for i in range(m):
        if i == 0 or keys[idx[i]] != keys[idx[i - 1]]:
            K += 1
    cells = np.empty(K, np.int64)
    starts = np.empty(K + 1, np.int64)
    c = 0
    for i in range(m):
        if i == 0 or keys[idx[i]] != keys[idx[i - 1]]:
            cells[c] = keys[idx[i]]
            starts[c] = i
            c += 1
    starts[K] = m
    return cells, starts


@numba.njit(cache=True)
def _find(cells, key):
    """Index of ``key`` in the sorted ``cells``, or −1."""
    lo, hi = 0, cells.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if cells[mid] < key:
            lo = mid + 1
        else:
            hi = mid
    if lo < cells.shape[0] and cells[lo] == key:
        return lo
    return -1


@numba.njit(cache=True)
def _interp(tabs, dtabs, r, inv_h, q, want_grad):
    """(K(q), K'(q)) of table row r by the 4-point cubic through the nodes around q (K' from its
    own table of exact node derivatives; 0 unless ``want_grad``)."""
    u = q * inv_h
    i = int(u)
    n = tabs.shape[1]
    if i < 1:
        i = 1
    if i > n - 3:
        i = n - 3
    s = u - i
    # Lagrange weights on the nodes i − 1, i, i + 1, i + 2 at s
    sm1 = s - 1.0
    sm2 = s - 2.0
    sp1 = s + 1.0
    a0 = -(s * sm1 * sm2) / 6.0
    a1 = (sp1 * sm1 * sm2) / 2.0
    a2 = -(sp1 * s * sm2) / 2.0
    a3 = (sp1 * s * sm1) / 6.0
    val = a0 * tabs[r, i - 1] + a1 * tabs[r, i] + a2 * tabs[r, i + 1] + a3 * tabs[r, i + 2]
    der = 0.0
    if want_grad:
        der = a0 * dtabs[r, i - 1] + a1 * dtabs[r, i] + a2 * dtabs[r, i + 1] + a3 * dtabs[r, i + 2]
    return val, der


@numba.njit(cache=True)
def _add(tabs, dtabs, inv_h, s, q, wj, y, acc, gacc, wsum, want_grad):
    """Add a datum at y (weight wj, squared chord q) to time s's sums."""
    k, dk = _interp(tabs, dtabs, s, inv_h[s], q, want_grad)
    acc[s] += wj * k
    wsum[s] += wj
    if want_grad:
        coef = -2.0 * wj * dk
        for d in range(y.shape[0]):
            gacc[s, d] += coef * y[d]


@numba.njit(cache=True)
def _visit(x, P, O, w, idx, copied, cells, starts, side, G, cls, qlo, qhi, tabs, dtabs, inv_h,
           ex_j, ex_w, acc, gacc, wsum, want_grad):
    """Add every datum with qlo_s < q ≤ qhi_s (for some time s) to the sums of query x:
    acc (S,) Σ w_j K_s(q_j), gacc (S, D) the gradient's Euclidean part Σ w_j K_s'(q_j)(−2 y_j),
    wsum (S,) the weight kept. Slot j's point: ``_point``; its weight w[j] (w[0] for all when
    w has one entry); its times: every s, or only s = cls[j] when ``cls`` is not empty."""
    D = x.shape[0]
    y = np.empty(D)
    uniform = w.shape[0] == 1
    by_class = cls.shape[0] > 0
    S = qlo.shape[0]
    qmax = 0.0
    qmin = np.inf
    for s in range(S):
        if qhi[s] > qmax:
            qmax = qhi[s]
        if qlo[s] < qmin:
            qmin = qlo[s]
    r = math.sqrt(qmax)
    lo = np.empty(D, np.int64)
    hi = np.empty(D, np.int64)
    for d in range(D):
        lo[d] = max(_cell_of(x[d] - r, side), 0)
        hi[d] = min(_cell_of(x[d] + r, side), G - 1)
    cur = lo.copy()
    while True:
        # the cell's nearest and farthest squared distances from x: skip a cell beyond the
        # largest cut, or one inside every time's inner cut (all its data summed already)
        near = 0.0
        far = 0.0
        for d in range(D):
            a = -1.0 + cur[d] * side - x[d]
            b = a + side
            if a > 0.0:
                near += a * a
            elif b < 0.0:
                near += b * b
            far += max(a * a, b * b)
        c = -1
        if near <= qmax and far > qmin:
            key = 0
            for d in range(D):
                key = key * G + cur[d]
            c = _find(cells, key)
        if c >= 0:
            for j in range(starts[c], starts[c + 1]):
                _point(P, O, copied, j, cur, side, y)
                q = 0.0
                for d in range(D):
                    e = x[d] - y[d]
                    q += e * e
                if q > qmax:
                    continue
                wj = w[0] if uniform else w[j]
                if idx[j] == ex_j:
                    wj -= ex_w
                if wj <= 0.0:
                    continue
                if by_class:
                    s = cls[j]
                    if qlo[s] < q <= qhi[s]:
                        _add(tabs, dtabs, inv_h, s, q, wj, y, acc, gacc, wsum, want_grad)
                    continue
                for s in range(S):
                    if qlo[s] < q <= qhi[s]:
                        _add(tabs, dtabs, inv_h, s, q, wj, y, acc, gacc, wsum, want_grad)
        # next cell of the box (odometer)
        d = D - 1
        while d >= 0:
            cur[d] += 1
            if cur[d] <= hi[d]:
                break
            cur[d] = lo[d]
            d -= 1
        if d < 0:
            break


@numba.njit(cache=True)
def _mixture(acc, logpi, c0):
    """log Σ_s π_s e^{c0_s} acc_s (−inf when every acc_s is 0)."""
    tot = -np.inf
    for s in range(acc.shape[0]):
        if acc[s] > 0.0:
            v = logpi[s] + c0[s] + math.log(acc[s])
            tot = max(tot, v) + math.log1p(math.exp(-abs(tot - v))) if tot > -np.inf else v
    return tot


@numba.njit(nogil=True, cache=True)
def chord_sums(X, d1sq, P, O, w, idx, copied, cells, starts, side, G, cls, wtot, tabs, dtabs,
               inv_h, c0, qtop, taus, logpi, ex_j, ex_w, log_eps, want_grad, out, grad, flag):
    """Mixture log Σ_s π_s Σ_j w_j k_s(x_i, y_j) (out (n,)) and its Riemannian gradient
    (grad (n, D)) for every query row of X (n, D); flag[i] = 1 where the table cannot certify
    the truncation (module docstring). Table row s holds K_s(q) = k_s(q) e^{−c0_s} at nodes
    q = k/inv_h_s (dtabs: K_s'). ``ex_j``/``ex_w`` (n,): the datum (unique index, −1 for none) whose weight is
    reduced by ex_w for that query (leave-one-out). With ``cls`` (slot order, not empty) slot j
    enters time cls[j] only, and time s holds the weight wtot[s] (else every time holds all the
    data, weight wtot[s] = 1): the sum is then log Σ_j π_{c_j} w_j k_{c_j}(x, y_j)."""
    n, D = X.shape
    S = taus.shape[0]
    log_share = log_eps - math.log(S)
    zero = np.full(S, -1.0)
    for i in range(n):
        x = X[i]
        acc = np.zeros(S)
        gacc = np.zeros((S, D))
        wsum = np.zeros(S)
        q1 = np.empty(S)
        beyond = np.zeros(S, np.bool_)
        for s in range(S):
            q1[s] = d1sq[i] + 4.0 * taus[s] * max(PASS1 + logpi[s], 2.0)
            if d1sq[i] > qtop[s]:   # every datum beyond the table: bounded below, not summed
                beyond[s] = True
                q1[s] = -1.0
            elif q1[s] > qtop[s]:
                q1[s] = qtop[s]
        _visit(x, P, O, w, idx, copied, cells, starts, side, G, cls, zero, q1, tabs, dtabs, inv_h,
               ex_j[i], ex_w[i], acc, gacc, wsum, want_grad)
        tot = _mixture(acc, logpi, c0)
        bad = tot == -np.inf
        for s in range(S):  # a time with all data beyond its table adds ≤ π_s k_s(qtop)
            if beyond[s] and logpi[s] + c0[s] + math.log(tabs[s, tabs.shape[1] - 3]) > log_share + tot:
                bad = True
        if bad:
            flag[i] = 1
            continue
        # each time's cut: the first node beyond q1 with π_s (1 − W_s) k_s(q) ≤ (ε/S) p
        q2 = q1.copy()
        extend = False
        for s in range(S):
            out_w = wtot[s] - wsum[s]
            if out_w <= 0.0 or beyond[s]:
                continue
            bound = math.exp(log_share + tot - logpi[s] - c0[s] - math.log(out_w))
            lo = int(math.ceil(q1[s] * inv_h[s]))
            hi = int(qtop[s] * inv_h[s])
            if lo > hi or tabs[s, hi] > bound:
                bad = True
                break
            if tabs[s, lo] > bound:  # K decreases: bisect for the first node ≤ bound
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if tabs[s, mid] > bound:
                        lo = mid
                    else:
                        hi = mid
                q2[s] = hi / inv_h[s]
                extend = True
        if bad:
            flag[i] = 1
            continue
        if extend:
            _visit(x, P, O, w, idx, copied, cells, starts, side, G, cls, q1, q2, tabs, dtabs, inv_h,
                   ex_j[i], ex_w[i], acc, gacc, wsum, want_grad)
            tot = _mixture(acc, logpi, c0)
        out[i] = tot
        if want_grad:
            a = np.zeros(D)
            for s in range(S):
                if acc[s] > 0.0:
                    f = math.exp(logpi[s] + c0[s] - tot)
                    for d in range(D):
                        a[d] += f * gacc[s, d]
            xa = 0.0
            for d in range(D):
                xa += x[d] * a[d]
            for d in range(D):
                grad[i, d] = a[d] - xa * x[d]


@numba.njit(nogil=True, cache=True)
def nearest_sq(X, P, O, w, idx, copied, cells, starts, side, G, ex_j, ex_w, max_rings, out):
    """Squared chord from each query to its nearest datum with positive (reduced) weight, by
    growing boxes of cells; −1 where none lies within ``max_rings`` rings (the caller's tree)."""
    n, D = X.shape
    y = np.empty(D)
    uniform = w.shape[0] == 1
    for i in range(n):
        x = X[i]
        home = np.empty(D, np.int64)
        for d in range(D):
            home[d] = _cell_of(x[d], side)
        best = np.inf
        out[i] = -1.0
        for ring in range(max_rings + 1):
            lo = np.empty(D, np.int64)
            hi = np.empty(D, np.int64)
            for d in range(D):
                lo[d] = max(home[d] - ring, 0)
                hi[d] = min(home[d] + ring, G - 1)
            cur = lo.copy()
            while True:
                on_shell = ring == 0
                for d in range(D):
                    if abs(cur[d] - home[d]) == ring:
                        on_shell = True
                if on_shell:
                    key = 0
                    for d in range(D):
                        key = key * G + cur[d]
                    c = _find(cells, key)
                    if c >= 0:
                        for j in range(starts[c], starts[c + 1]):
                            wj = w[0] if uniform else w[j]
                            if idx[j] == ex_j[i]:
                                wj -= ex_w[i]
                            if wj <= 0.0:
                                continue
                            _point(P, O, copied, j, cur, side, y)
                            q = 0.0
                            for d in range(D):
                                e = x[d] - y[d]
                                q += e * e
                            if q < best:
                                best = q
                d = D - 1
                while d >= 0:
                    cur[d] += 1
                    if cur[d] <= hi[d]:
                        break
                    cur[d] = lo[d]
                    d -= 1
                if d < 0:
                    break
            # every point within ring·side of x lies in the box searched so far
            if best <= (ring * side) ** 2:
                out[i] = best
                break


class ChordGrid:
    """The collapsed data sorted into cubes of side ``side`` (module docstring).

    idx (m,) int32: the unique index (row of the caller's U, wu) of each slot, slots ordered by
    cell; cells (K,) sorted occupied keys, starts (K + 1,) each cell's first slot. The points in
    slot order: P (m, D) float64 when points and weights fit in ``COPY_BYTES`` (``copied``),
    else O (m, D) uint32 offsets in their cells (4 bytes a coordinate; a point moves by at most
    side · 2^−32, a relative change ≲ 1e-8 in any kernel term at the cuts used). w: the weights
    in slot order, or one entry when all are equal. The side is enlarged where needed to keep
    G^D < 2^62.
    """

    def __init__(self, U, wu, side):
        m, D = U.shape
        self.side = max(float(side), 2.0 / (2.0 ** (62.0 / D) - 3.0))
        self.G = int(math.floor(2.0 / self.side)) + 2
        wide = self.G ** D >= 2**31
        keys = np.empty(m, np.int64 if wide else np.int32)
        _keys(U, self.side, self.G, keys)
        self.idx = _radix_order(keys, 4 if wide else 2)
        self.cells, self.starts = _runs(keys, self.idx)
        del keys
        self.copied = U.nbytes + wu.nbytes <= COPY_BYTES
        empty = np.empty((0, D))
        if self.copied:
            self.P, self.O = np.ascontiguousarray(U[self.idx]), empty.astype(np.uint32)
        else:
            self.P, self.O = empty, _offsets(U, self.idx, self.side)
        uniform = m > 0 and wu.min() == wu.max()
        self.w = wu[:1].copy() if uniform else np.ascontiguousarray(wu[self.idx])

    def args(self):
        """The grid's arguments of ``chord_sums`` and ``nearest_sq``, in their order."""
        return (self.P, self.O, self.w, self.idx, self.copied, self.cells, self.starts, self.side,
                self.G)


def run_blocks(fn, n, *, min_rows=256):
    """Call ``fn(a, b)`` on consecutive row blocks [a, b) of n rows, on ``numba.config.
    NUMBA_NUM_THREADS`` threads (the compiled loops release the GIL)."""
    threads = max(1, int(numba.config.NUMBA_NUM_THREADS))
    step = max(min_rows, -(-n // (4 * threads)))
    blocks = [(a, min(n, a + step)) for a in range(0, n, step)]
    if threads == 1 or len(blocks) == 1:
        for a, b in blocks:
            fn(a, b)
        return
    with ThreadPoolExecutor(threads) as pool:
        for f in [pool.submit(fn, a, b) for a, b in blocks]:
            f.result()
