"""Heat kernel of a triangle mesh: the discrete semigroup exp(−t M⁻¹S), w.r.t. the lumped mass M.

With A = M⁻¹S (S robust-laplacian's stiffness, M its lumped mass), the vertex kernel is
K_t = exp(−tA) M⁻¹: symmetric (= M^{-1/2} exp(−t M^{-1/2} S M^{-1/2}) M^{-1/2}), positive, and
1ᵀ M K_t = 1ᵀ. Between vertices it is P1-interpolated in both arguments,
k_t(x, y) = Σ_{a,b} b_a(x) K_t[a, b] b_b(y) (b the barycentric coordinates of each point's face),
so ∇_x k is constant on x's face: Σ_a ∇b_a Σ_b b_b(y) K_t[a, b].

Vertex heat flow (``VertexHeatFlow``) is computed by uniformization: with μ = max_i A_ii the
matrix P = I − A/μ is stochastic and non-negative (robust-laplacian's weights are non-negative),
and exp(−tA) = Σ_q Pois(q; μt) P^q. Every term is non-negative, so each entry of the result is
accurate *relative to itself* (no cancellation), not just relative to the column's maximum as
with Taylor/Krylov methods (scipy's ``expm_multiply``), whose small entries can even come out
negative. The cost is about μt + O(√(μt)) sparse products on the columns needed (μ is set by the
smallest vertex mass: μ·ē² ≈ 360 on Spot): large times on fine meshes are costly, and there the
spectral route (``HeatKernel(mesh, n_levels=...)``) is the fast one.

Underflow: at tiny t the kernel between far vertices falls below float64's range
(~ (μt)^d/d! at graph distance d). Entries below ``LINEAR_FLOOR`` × the column's maximum are
recomputed by the same series in log space where the caller needs them, so log k is finite
(and relatively accurate) for every pair on one connected component. Across components the
kernel is exactly 0: log k = −inf there, and ∇ log k is returned as 0.
"""

import math
import warnings
import weakref

import numpy as np
import scipy.sparse
from scipy.sparse.csgraph import connected_components
import torch

from heatscore._errors import TruncationWarning
from heatscore.manifolds._heat_backends import spectral_sum
from heatscore.manifolds._heat_backends import DEFAULT_RTOL

#: Linear-space entries are certified (relative error ≲ 1e-12) down to this fraction of their
#: column's maximum; entries a caller needs below it are recomputed in log space.
LINEAR_FLOOR = 1e-280

#: The dropped Poisson tail is at most this fraction of what it is compared with.
ROUNDOFF = 2.0 ** -53

#: float64 entries per working array (128 MB); column batches are sized to stay under it.
WORK_ENTRIES = 2 ** 24

#: The log-space series checks its stopping rule every this many terms.
LOG_CHECK_EVERY = 8

#: ``levels_needed`` returns None beyond this many eigenpairs (like the other backends).
MAX_LEVELS = 100_000

#: Paired kernels at large t: rows whose uniformization would take more than
#: SPECTRAL_FROM_PRODUCTS sparse products try the spectral sum, with the eigenpairs
#: ``levels_needed`` estimates for an absolute tail of SPECTRAL_TAIL/area, if at most
#: SPECTRAL_MAX_PAIRS (each pair is still certified by the tail bound before it is used).
SPECTRAL_FROM_PRODUCTS = 2000
SPECTRAL_TAIL = 1e-10
SPECTRAL_MAX_PAIRS = 512

#: CPU tensors run the series on numpy/scipy (torch's CPU sparse product is far slower, and the
#: per-term operations are small); other devices, or False here, use torch sparse tensors.
NUMPY_ON_CPU = True

_FLOWS = weakref.WeakKeyDictionary()


def vertex_heat_flow(mesh):
    """The mesh's ``VertexHeatFlow`` (built once per mesh, released with it)."""
    flow = _FLOWS.get(mesh)
    if flow is None:
        flow = _FLOWS[mesh] = VertexHeatFlow(mesh.stiffness, mesh.mass)
    return flow


def _log_poisson(q, lam, log_lam):
    """log Pois(q; λ) = −λ + q log λ − log q!  (q a Python int or a tensor)."""
    lg = math.lgamma(q + 1) if isinstance(q, int) else torch.lgamma(q + 1.0)
    return -lam + q * log_lam - lg


def _log_tail(q, lam):
    """log of a bound on Σ_{q' > q} Pois(q'; λ), valid for q + 2 > λ:
    Pois(q + 1; λ) / (1 − λ/(q + 2)) (the terms then shrink at least geometrically)."""
    return _log_poisson(q + 1.0, lam, torch.log(lam)) - torch.log1p(-lam / (q + 2.0))


def poisson_terms(lam, log_target):
    """Smallest integer q ≥ ⌈λ⌉ whose Poisson tail bound is ≤ exp(log_target), elementwise."""
    lo = torch.ceil(lam)
    step = torch.ceil(torch.sqrt(lam)) + 16.0
    hi = lo + step
    while True:                                               # grow until the bound holds
        bad = _log_tail(hi, lam) > log_target
        if not bool(bad.any()):
            break
        hi = torch.where(bad, hi + step, hi)
        step = torch.where(bad, 2 * step, step)
    while bool((hi - lo > 1).any()):                          # bisection: tail(hi) ≤ target
        mid = torch.floor(0.5 * (lo + hi))
        ok = _log_tail(mid, lam) <= log_target
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    return torch.where(_log_tail(lo, lam) <= log_target, lo, hi).long()


class VertexHeatFlow:
    """exp(−t M⁻¹S) applied to non-negative vertex data, by uniformization (see module docstring).

    Parameters: ``S`` the stiffness (symmetric, non-positive off the diagonal, zero row sums) and
    ``M`` the diagonal lumped mass, scipy sparse (nv, nv).

    Guarantees, for V ≥ 0 with column maxima v_j: ``apply`` returns exp(−tA)V with each entry
    u ≥ LINEAR_FLOOR·v_j accurate to relative error ≲ 1e-16·(terms + μt·log(μt)) (round-off of
    non-negative sums and of the Poisson weights); entries below that are only known to be small.
    ``log_apply`` computes log u in log space, relatively accurate for every entry reachable
    from the column's support; entries on components the column does not touch are −inf.
    """

    def __init__(self, S, M):
        S = scipy.sparse.csr_matrix(S, dtype=np.float64)
        mass = np.asarray(M.diagonal(), dtype=np.float64)
        if np.any(mass <= 0):
            raise ValueError(f"M must have a positive diagonal, found {int((mass <= 0).sum())} "
                             "non-positive masses")
        off = S - scipy.sparse.diags(S.diagonal())
        if off.nnz and off.data.max() > 0:
            raise ValueError(f"S has {int((off.data > 0).sum())} positive off-diagonal entries "
                             "(negative edge weights): exp(−t M⁻¹S) would not be positive")
        A = scipy.sparse.diags(1.0 / mass) @ S
        self.nv = S.shape[0]
        self.rate = float(A.diagonal().max())                # μ: P = I − A/μ is stochastic
        P = (scipy.sparse.identity(self.nv, format="csr") - A / self.rate).tocsr()
        P.data = np.maximum(P.data, 0.0)                      # round-off of the zero diagonal
        P.eliminate_zeros()
        P.sort_indices()
        self._P = P
        self.mass = torch.as_tensor(mass)
        _, labels = connected_components(P, directed=False)
        self.labels = torch.as_tensor(labels)
        coo = P.tocoo()
        self._coo = (torch.as_tensor(coo.row.astype(np.int64)), torch.as_tensor(coo.col.astype(np.int64)),
                     torch.log(torch.as_tensor(coo.data)))
        self._on_device = {}

    def _device_tables(self, device):
        """(row, col, log P) of P's non-zeros in CSR order and the vertex component labels."""
        key = str(device)
        if key not in self._on_device:
            row, col, logp = (a.to(device) for a in self._coo)
            self._on_device[key] = (row, col, logp, self.labels.to(device))
        return self._on_device[key]

    def _torch_P(self, device):
        """P as a torch sparse CSR tensor on ``device`` (built on first use)."""
        key = ("csr", str(device))
        if key not in self._on_device:
            _, col, logp, _ = self._device_tables(device)
            crow = torch.as_tensor(self._P.indptr.astype(np.int64), device=device)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
                self._on_device[key] = torch.sparse_csr_tensor(
                    crow, col, torch.exp(logp), size=(self.nv, self.nv), check_invariants=True)
        return self._on_device[key]

    @staticmethod
    def _numpy(device):
        return device.type == "cpu" and NUMPY_ON_CPU

    def _step(self, cur):
        """P @ cur (nv, c): scipy on numpy arrays, torch sparse on tensors."""
        if isinstance(cur, np.ndarray):
            return self._P @ cur
        return torch.sparse.mm(self._torch_P(cur.device), cur)

    def _log_step(self, logcur):
        """log(P exp(logcur)) (nv, c), computed in log space (a row-wise logsumexp over each
        row's non-zeros; numpy's segment reductions on the CPU)."""
        if self._numpy(logcur.device):
            row, col, logp = (a.numpy() for a in self._coo)
            starts = self._P.indptr[:-1]                      # every row has a non-zero
            Z = logcur.numpy()[col] + logp[:, None]
            peak = np.maximum.reduceat(Z, starts, axis=0)
            peak = np.where(np.isfinite(peak), peak, 0.0)
            with np.errstate(divide="ignore"):
                total = np.log(np.add.reduceat(np.exp(Z - peak[row]), starts, axis=0))
            return torch.from_numpy(peak + total)
        row, col, logp, _ = self._device_tables(logcur.device)
        Z = logcur[col] + logp[:, None]                       # (nnz, c)
        idx = row[:, None].expand_as(Z)
        peak = torch.full_like(logcur, -math.inf).scatter_reduce(0, idx, Z, reduce="amax")
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        total = torch.zeros_like(logcur).index_add_(0, row, torch.exp(Z - peak[row]))
        return peak + torch.log(total)

    @staticmethod
    def _check(V, T):
        if T.dtype != torch.float64:                          # a float32 time is off by ~1e-8
            raise TypeError(f"T must be float64 times, found dtype {T.dtype}")
        if V.ndim != 2 or T.ndim != 2 or T.shape[0] != V.shape[1]:
            raise ValueError(f"V (nv, c) and T (c, s) do not match: {tuple(V.shape)}, {tuple(T.shape)}")
        if bool((V < 0).any()) or bool((T <= 0).any()):
            raise ValueError("V must be non-negative and T positive")

    def apply(self, V, T, rows=None):
        """(r, c, s) rows of exp(−T[j, k] A) V[:, j] for V (nv, c) ≥ 0 and times T (c, s) > 0.

        Uniformization in linear space; one run of products serves every time of a column.
        ``rows`` (r,) long: the rows wanted (None: all). Columns run in batches under
        ``WORK_ENTRIES``, longest series first, each column dropping out when its series ends.
        On the CPU the loop runs on numpy arrays (``NUMPY_ON_CPU``).
        """
        self._check(V, T)
        V, T = V.to(torch.float64), T.to(V.device)
        c, s = T.shape
        if rows is not None and rows.shape[0] == self.nv and bool((rows == torch.arange(
                self.nv, device=rows.device)).all()):
            rows = None
        r = self.nv if rows is None else rows.shape[0]
        out = V.new_zeros((r, c, s))
        scale = V.amax(dim=0)
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        lam = T * self.rate
        col_terms = poisson_terms(lam, math.log(ROUNDOFF * LINEAR_FLOOR)).amax(dim=1)
        order = torch.argsort(col_terms, descending=True)
        xp, arr = (np, lambda a: a.numpy()) if self._numpy(V.device) else (torch, lambda a: a)
        wanted = None if rows is None else arr(rows)
        batch = max(1, WORK_ENTRIES // (2 * self.nv + r * s))
        for start in range(0, c, batch):
            idx = order[start:start + batch]
            terms = col_terms[idx].tolist()
            lam_b = arr(lam[idx])
            log_lam_b = xp.log(lam_b)
            cur = arr(V[:, idx] / scale[idx])
            picked = cur if wanted is None else cur[wanted]
            acc = picked[:, :, None] * xp.exp(-lam_b)[None]
            active = len(terms)
            for q in range(1, terms[0] + 1):
                while terms[active - 1] < q:
                    active -= 1
                cur = self._step(cur[:, :active])
                picked = cur if wanted is None else cur[wanted]
                w = xp.exp(q * log_lam_b[:active] - lam_b[:active] - math.lgamma(q + 1))
                acc[:, :active] += picked[:, :, None] * w[None]
            out[:, idx] = torch.as_tensor(acc, device=V.device) * scale[idx][None, :, None]
        return out

    def reachable(self, V, rows):
        """(r, c) bool: row on a connected component where column j of V has mass."""
        labels = self._device_tables(V.device)[3]
        n_comp = int(self.labels.max()) + 1
        has = torch.zeros((n_comp, V.shape[1]), dtype=torch.bool, device=V.device)
        has.index_put_((labels[:, None].expand_as(V)[V > 0], torch.nonzero(V > 0)[:, 1]),
                       torch.tensor(True, device=V.device))
        return has[labels[rows]]

    def log_apply(self, V, T, rows):
        """(r, c, s) log of rows of exp(−T[j, k] A) V[:, j], relatively accurate for every entry
        reachable from column j's support (−inf elsewhere). Same series as ``apply`` in log
        space (~5× the cost per term); it runs until the Poisson tail is below ROUNDOFF × the
        smallest wanted entry, i.e. at least to the graph distance of the farthest wanted row."""
        self._check(V, T)
        V, T = V.to(torch.float64), T.to(V.device)
        c, s = T.shape
        r = rows.shape[0]
        out = V.new_empty((r, c, s))
        reach = self.reachable(V, rows)                         # (r, c)
        nnz = self._coo[0].shape[0]
        batch = max(1, WORK_ENTRIES // (2 * nnz + r * s))
        for start in range(0, c, batch):
            sl = slice(start, start + batch)
            lam = T[sl] * self.rate
            log_lam = torch.log(lam)
            logcur = torch.log(V[:, sl])
            log_scale = logcur.amax(dim=0)[:, None]               # (c', 1): the tail's unit
            logacc = logcur[rows][:, :, None] - lam[None]
            wanted = reach[:, sl, None].expand_as(logacc)
            q_min = int(torch.ceil(lam.max()))
            q = 0
            while True:
                q += 1
                logcur = self._log_step(logcur)
                w = _log_poisson(q, lam, log_lam)
                logacc = torch.logaddexp(logacc, logcur[rows][:, :, None] + w[None])
                if q >= q_min and q % LOG_CHECK_EVERY == 0:
                    smallest = torch.where(wanted, logacc, torch.full_like(logacc, math.inf))
                    smallest = smallest.amin(dim=0)             # (c', s)
                    tail = _log_tail(torch.tensor(float(q), device=lam.device), lam) + log_scale
                    if bool((tail <= smallest + math.log(ROUNDOFF)).all()):
                        break
            out[:, sl] = torch.where(wanted, logacc, torch.full_like(logacc, -math.inf))
        return out

    def log_flow(self, V, T, rows=None, linear=None):
        """(r, c, s) log exp(−T A)V at ``rows``: ``apply`` (or the given ``linear`` result of it),
        with the wanted entries below LINEAR_FLOOR × their column's maximum recomputed by
        ``log_apply`` (only the columns that have some)."""
        rows = torch.arange(self.nv, device=V.device) if rows is None else rows
        lin = self.apply(V, T, rows) if linear is None else linear
        out = torch.log(lin)
        scale = V.to(torch.float64).amax(dim=0)
        low = (lin < LINEAR_FLOOR * scale[None, :, None]) & self.reachable(V, rows)[:, :, None]
        cols = torch.nonzero(low.any(dim=2).any(dim=0)).flatten()
        if cols.numel():
            exact = self.log_apply(V[:, cols], T[cols], rows)
            sub = out[:, cols]
            sub[low[:, cols]] = exact[low[:, cols]]
            out[:, cols] = sub
        return out


def _interpolate(block, bx, by, grad_bary):
    """P1 interpolation of log vertex kernels in both arguments.

    block (p, 3, 3) log K[a of x's face, b of y's face] (or (p, 3, m, 3) against m columns),
    bx (p, 3), by (p, 3) (or (m, 3)), grad_bary (p, 3, 3) or None.
    Returns log k (p,) (or (p, m)) and ∇_x log k (p, 3) (or (p, m, 3)) or None.
    """
    if block.ndim == 3:
        log_kt = torch.logsumexp(block + torch.log(by)[:, None, :], dim=2)      # (p, 3)
        log_k = torch.logsumexp(log_kt + torch.log(bx), dim=1)
        expand = log_k[:, None]
    else:
        log_kt = torch.logsumexp(block + torch.log(by)[None, None], dim=3)      # (p, 3, m)
        log_k = torch.logsumexp(log_kt + torch.log(bx)[:, :, None], dim=1)      # (p, m)
        expand = log_k[:, None, :]
    if grad_bary is None:
        return log_k, None
    finite = torch.isfinite(expand)
    ratio = torch.where(finite, torch.exp(log_kt - torch.where(finite, expand, torch.zeros_like(expand))),
                        torch.zeros_like(log_kt))
    if block.ndim == 3:
        return log_k, torch.einsum("pa,pad->pd", ratio, grad_bary)
    return log_k, torch.einsum("pam,pad->pmd", ratio, grad_bary)


class MeshBackend:
    """HeatKernel backend of a ``TriangleMesh`` (see the module docstring for the kernel).

    Exact route: the discrete semigroup (``log_and_grad``, ``matrix_log_and_grad``). Spectral
    route: Σ_{k<K} e^{−λ_k t} φ_k(x) φ_k(y) with P1-interpolated M-orthonormal eigenvectors
    (exact when K = nv). Tail bound, for every x, y: since M_v φ_k(v)² ≤ φ_kᵀMφ_k = 1 and the
    P1 interpolant stays within its vertex values, |tail| ≤ (nv − K) e^{−λ_{K−1} t} / min_v M_v.
    ``spectral_ok`` certifies that this is ≤ rtol / area (the stationary value 1/area): an
    absolute error bound, a relative one only where k ≥ 1/area (true everywhere as t → ∞); it
    relies on the computed eigenvalues (the eigen-solver checks that none below λ_{K−1} is
    missed). Pairs where the truncated sum is below tail / DEFAULT_RTOL fall back to the
    semigroup with a ``TruncationWarning``.
    """

    def __init__(self, mesh):
        self.manifold = mesh

    @property
    def flow(self):
        return vertex_heat_flow(self.manifold)

    def _vertex_log_kernel(self, rows, cols, t_cols):
        """(r, c) log K_t[rows, cols] = log(exp(−tA) e_col / M_col), a time per column."""
        flow = self.flow
        c = cols.shape[0]
        V = torch.zeros((flow.nv, c), dtype=torch.float64, device=cols.device)
        V[cols, torch.arange(c, device=cols.device)] = 1.0
        L = flow.log_flow(V, t_cols.to(torch.float64)[:, None], rows)[:, :, 0]
        return L - torch.log(flow.mass.to(cols.device)[cols])[None]

    # --- semigroup route --------------------------------------------------------------------
    def log_and_grad(self, x, y, t, want_grad):
        """Row-paired log k_t(x_i, y_i) (P,) and ∇_x log k (P, 3) or None; t (P,).

        Rows whose uniformization would take more than ``SPECTRAL_FROM_PRODUCTS`` sparse products
        (large t) take the spectral sum where its tail bound certifies DEFAULT_RTOL (eigenpairs
        as the SPECTRAL_* constants say); the others the semigroup (``_semigroup_log_and_grad``).
        """
        big = self.flow.rate * t.to(torch.float64) >= SPECTRAL_FROM_PRODUCTS
        K = self.levels_needed(float(t[big].min()), SPECTRAL_TAIL) if bool(big.any()) else None
        if K is None or K > SPECTRAL_MAX_PAIRS:
            return self._semigroup_log_and_grad(x, y, t, want_grad)
        ep = self.manifold.eigenpairs(K)
        idx = torch.nonzero(big).flatten()
        k, g = spectral_sum(self.manifold, x[idx], y[idx], t[idx], K, want_grad, eigenpairs=ep)
        tail = self._tail_bound(K, t[idx].to(torch.float64), float(ep.eigenvalues[-1])).to(k)
        ok = k * DEFAULT_RTOL > tail
        log_k = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
        grad = torch.empty((x.shape[0], 3), dtype=x.dtype, device=x.device) if want_grad else None
        done = idx[ok]
        log_k[done] = torch.log(k[ok]).to(x.dtype)
        if want_grad:
            grad[done] = (g[ok] / k[ok][:, None]).to(x.dtype)
        rest = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        rest[done] = False
        if bool(rest.any()):
            lg, gr = self._semigroup_log_and_grad(x[rest], y[rest], t[rest], want_grad)
            log_k[rest] = lg
            if want_grad:
                grad[rest] = gr
        return log_k, grad

    def _semigroup_log_and_grad(self, x, y, t, want_grad):
        """``log_and_grad`` by uniformization: rows grouped by (vertex of y's face, time), one
        run serving them all."""
        m = self.manifold
        fx, bx, _ = m._located(x)
        fy, by, _ = m._located(y)
        tables = m._table(x.device)
        nv = self.flow.nv
        n = x.shape[0]
        t_vals, t_idx = torch.unique(t.to(torch.float64), return_inverse=True)
        log_k = torch.empty(n, dtype=torch.float64, device=x.device)
        grad = torch.empty((n, 3), dtype=torch.float64, device=x.device) if want_grad else None
        step = max(1, WORK_ENTRIES // (6 * nv))
        for i in range(0, n, step):
            sl = slice(i, i + step)
            keys, colpos = torch.unique(t_idx[sl, None] * nv + tables.F[fy[sl]], return_inverse=True)
            rows, rowpos = torch.unique(tables.F[fx[sl]], return_inverse=True)
            L = self._vertex_log_kernel(rows, keys % nv, t_vals[keys // nv])
            block = L[rowpos[:, :, None], colpos[:, None, :]]
            G = tables.grad_bary[fx[sl]] if want_grad else None
            lk, g = _interpolate(block, bx[sl], by[sl], G)
            log_k[sl] = lk
            if want_grad:
                grad[sl] = g
        return log_k.to(x.dtype), (grad.to(x.dtype) if want_grad else None)

    def matrix_log_and_grad(self, x, y, t, want_grad):
        """(n, m) log k_t(x_i, y_j) and (n, m, 3) ∇_x log k or None; t a 0-d tensor.

        One semigroup run on the distinct vertices of y's faces, then W_x K W_yᵀ in log space,
        in row chunks of x under ``WORK_ENTRIES``.
        """
        m = self.manifold
        fx, bx, _ = m._located(x)
        fy, by, _ = m._located(y)
        tables = m._table(x.device)
        n, k = x.shape[0], y.shape[0]
        log_k = torch.empty((n, k), dtype=torch.float64, device=x.device)
        grad = torch.empty((n, k, 3), dtype=torch.float64, device=x.device) if want_grad else None
        if n and k:
            cols, colpos = torch.unique(tables.F[fy], return_inverse=True)
            rows, rowpos = torch.unique(tables.F[fx], return_inverse=True)
            tt = t.to(torch.float64).reshape(1).expand(cols.shape[0])
            L = self._vertex_log_kernel(rows, cols, tt)
            step = max(1, WORK_ENTRIES // (20 * k))           # block, logs, ratios, gradient
            for i in range(0, n, step):
                sl = slice(i, i + step)
                block = L[rowpos[sl][:, :, None, None], colpos[None, None]]    # (p, 3, m, 3)
                G = tables.grad_bary[fx[sl]] if want_grad else None
                lk, g = _interpolate(block, bx[sl], by, G)
                log_k[sl] = lk
                if want_grad:
                    grad[sl] = g
        return log_k.to(x.dtype), (grad.to(x.dtype) if want_grad else None)

    # --- spectral route ---------------------------------------------------------------------
    def n_functions(self, n_levels):
        """Eigenfunctions in ``n_levels`` levels: one each on a mesh (capped at nv)."""
        return min(n_levels, self.flow.nv)

    def _tail_bound(self, n_levels, t, last_eigenvalue):
        """(nv − K) e^{−λ_{K−1} t} / min M: the tail of the K-term sum at any (x, y)."""
        nv = self.flow.nv
        if n_levels >= nv:
            return torch.zeros_like(torch.as_tensor(t, dtype=torch.float64))
        t = torch.as_tensor(t, dtype=torch.float64)
        return (nv - n_levels) * torch.exp(-last_eigenvalue * t) / float(self.flow.mass.min())

    def spectral_ok(self, n_levels, t, rtol):
        """Whether ``n_levels`` eigenpairs certify |tail| ≤ rtol / area at time t (computes them)."""
        K = self.n_functions(n_levels)
        if K >= self.flow.nv:
            return True
        lam = float(self.manifold.eigenpairs(K).eigenvalues[-1])
        return float(self._tail_bound(K, t, lam)) <= rtol / self.manifold.area

    def levels_needed(self, t, rtol):
        """Estimated eigenpairs for ``spectral_ok`` at time t (Weyl's law λ_k ≈ 4πk/area stands
        in for the unknown eigenvalues: an estimate, not a certificate). At most nv (all
        eigenpairs: exact); None beyond ``MAX_LEVELS``."""
        nv = self.flow.nv
        area = self.manifold.area
        log_need = math.log(nv * area / (float(self.flow.mass.min()) * rtol))
        K = 1 + math.ceil(area * max(log_need, 0.0) / (4 * math.pi * t))
        K = min(K, nv)
        return None if K > MAX_LEVELS else K

    def spectral_log_and_grad(self, x, y, t, n_levels, want_grad):
        """Row-paired spectral log k and ∇_x log k; pairs the tail bound does not certify to
        DEFAULT_RTOL (relative) use the semigroup, with a ``TruncationWarning``."""
        K = self.n_functions(n_levels)
        ep = self.manifold.eigenpairs(K)
        k, g = spectral_sum(self.manifold, x, y, t, K, want_grad, eigenpairs=ep)
        tail = self._tail_bound(K, t.to(torch.float64), float(ep.eigenvalues[-1])).to(k)
        bad = ~(k * DEFAULT_RTOL > tail) if K < self.flow.nv else ~(k > 0)
        log_k = torch.log(torch.where(bad, torch.ones_like(k), k))
        if want_grad:
            g = g / torch.where(bad, torch.ones_like(k), k)[:, None]
        if bool(bad.any()):
            warnings.warn(f"the {K}-eigenpair spectral sum is not certified at {int(bad.sum())} "
                          "pairs; using the semigroup there", TruncationWarning, stacklevel=4)
            lg, gr = self._semigroup_log_and_grad(x[bad], y[bad], t[bad], want_grad)
            log_k[bad] = lg
            if want_grad:
                g[bad] = gr
        return log_k, g
