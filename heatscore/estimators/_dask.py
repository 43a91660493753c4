"""The Dask extra: ``DiffusionKernelSmoother`` on data held by a Dask cluster (``heatscore[dask]``).

``_smoother.py`` imports this module only when a dask array reaches ``fit``, the evaluation methods
or ``sample`` (or ``sample(chunks=...)`` is asked for), so ``import heatscore`` never needs dask.

What a model fitted on a dask array holds, and where:

- on the client: the parameters; the times and mixture weights, chosen by the in-memory
  leave-one-out search on a seeded uniform sample of ``SELECT_ROWS`` data rows (all rows when there
  are fewer: then the times are the in-memory fit's); that sample (it also bounds nearest-datum
  distances, below); the spectral coefficients ĉ_n = Σ_i w_i φ_n(x_i) for the levels that resolve
  the fitted times (a (K,) vector); the total and the smallest positive weight.
- on the cluster: the data ``X_`` and the normalised weights ``sample_weight_`` stay dask arrays
  (lazy: ``persist()`` them before ``fit`` to keep them in worker memory instead of re-reading
  their source at each evaluation). No data row other than the sample reaches the client.

Distributed fit. ĉ is a reduction: each chunk returns Σ_{i∈chunk} w_i φ(x_i) (rows in blocks of
8192, as in memory), dask sums the partials as a tree, and the client divides by Σ_i w_i. It equals
the in-memory ĉ to rounding (the summation order differs).

Evaluation (dask arrays in, dask arrays out): per query chunk, the spectral route where certified
(as in memory); the other rows by the kernel-sum route, spatially partitioned:

- queries are grouped into cells (S²: HEALPix pixels, nested order; other manifolds: a hash of a
  cubic grid in the embedding of ``SpatialIndex``) and cells into tiles (S²: the parent HEALPix
  pixel; elsewhere the cell hash modulo the tile count);
- query x needs every datum within r(x) = (d_1(x)² + 4τ(log(1/ε) − log w_min + log M))^{1/2} (the
  neighbour radius of ``KernelSum``, with the global w_min). The distance to the nearest point of
  the client's sample bounds d_1(x) from above, hence r(x) by R(x); a cell's halo is
  ρ = max_x (|x − c| + R(x)) around its centre c (in the embedding), and each data chunk sends to
  each tile the rows within the halo of one of its cells;
- each tile evaluates its queries once, on its region, by ``KernelSum``'s neighbour route: the
  region holds every datum within r(x) of each of its queries, so the kept pairs — and the error
  bound ε relative — are those of the global neighbour route;
- rows with R(x) > ``FAR_RADIUS`` (no sample point near: few, in empty places), and every row under
  ``route="dense"``, are summed over every data chunk (a log-sum-exp reduction of dense partials).

Sampling: rows are drawn in fixed virtual blocks of ``VBLOCK`` rows; block b draws from the
counter-based stream keyed by (seed, b), so a seed gives the same rows whatever the chunking of
the output (and, with uniform weights, of the data; with weights the datum of a row is fixed up
to round-off in the cumulative weights).
"""

import inspect
import math

import dask
import dask.array as da
import numpy as np
import torch

from heatscore._validation import as_generator, check_positive_int
from heatscore.estimators._kernel_sum import KernelSum, SpatialIndex, SpectralSum

#: Rows of the seeded uniform sample on which the times are chosen (and nearest-datum bounds read).
SELECT_ROWS = 20_000
#: Seed of that sample (fixed: refitting the same data gives the same model).
SELECT_SEED = 0
#: Rows per virtual block of the sampling streams (the unit of reproducibility).
VBLOCK = 2**16
#: Target data rows per tile of the kernel-sum route (the tile count follows the data size).
ROWS_PER_TILE = 2**20
#: Largest tile count (S²: HEALPix nside 8).
MAX_TILES = 768
#: Queries whose neighbour radius bound exceeds this (radians) go to the all-chunk reduction: it
#: keeps a region below about 6% of S² for uniformly spread data.
FAR_RADIUS = 0.5
#: Rows per block of the coefficient partial sums (as ``SpectralSum.coefficients``).
COEF_ROWS = 8192
#: The neighbour route's relative tolerance (``KernelSum``'s default).
EPS = inspect.signature(KernelSum.__init__).parameters["eps"].default


# --- helpers -----------------------------------------------------------------------------------
def _tensor(block):
    """A float64 tensor sharing a writable, contiguous copy of a numpy block."""
    return torch.from_numpy(np.require(block, np.float64, ["C", "W"]))


def _compute(client, *objs):
    """Compute dask objects on ``client`` (None: dask's current scheduler or default client)."""
    if client is not None:
        return tuple(client.compute(list(objs), sync=True))
    return dask.compute(*objs)


def _row_blocks(x):
    """One delayed block per row chunk of a dask array chunked only along rows."""
    return list(x.to_delayed().ravel()) if x is not None else None


def _ambient_size(m):
    return int(np.prod(m.ambient_shape))


def _validate_block(block, m, name):
    return m.validate(_tensor(block), name).numpy()


def _points(X, m, name):
    """Validated dask points (n, *point_shape), float64, chunked along rows only (lazy checks per
    block; shapes and chunk sizes checked here)."""
    pt = tuple(m.point_shape)
    if X.ndim != 1 + len(pt) or tuple(X.shape[1:]) != pt:
        shape = "(n, " + ", ".join(str(s) for s in pt) + ")"
        raise ValueError(f"{name} must be points of shape {shape}, found shape {tuple(X.shape)}")
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise TypeError(f"{name} must hold real numbers, found dtype {X.dtype}")
    if any(math.isnan(c) for c in X.chunks[0]):
        raise ValueError(f"{name} has unknown chunk sizes: call {name}.compute_chunk_sizes() "
                         "(or read it with read_dask_points, which knows them)")
    X = X.astype(np.float64).rechunk({i: -1 for i in range(1, X.ndim)})
    return X.map_blocks(_validate_block, m, name, dtype=np.float64)


def _check_weight_block(block):
    w = np.asarray(block, dtype=np.float64)
    if not np.isfinite(w).all():
        raise ValueError(f"sample_weight must be finite: found {int((~np.isfinite(w)).sum())} NaN/inf entries")
    if (w < 0).any():
        raise ValueError(f"sample_weight must be non-negative, found min {float(w.min()):.3g}")
    return w


def _weights(sample_weight, X):
    """Raw weights as a dask array aligned with X's row chunks (checked per block), or None."""
    if sample_weight is None:
        return None
    n = X.shape[0]
    if isinstance(sample_weight, da.Array):
        w = sample_weight
    else:
        w = da.from_array(np.asarray(torch.as_tensor(sample_weight).cpu(), dtype=np.float64),
                          chunks=(X.chunks[0],))
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), found {tuple(w.shape)}")
    w = w.astype(np.float64).rechunk((X.chunks[0],))
    return w.map_blocks(_check_weight_block, dtype=np.float64)


def _halo2(m, tau, w_min):
    """4τ(log(1/ε) − log w_min + log M): r² − d_1² of ``KernelSum.radius`` for the whole data."""
    return 4 * tau * (math.log(1 / EPS) - math.log(w_min) + m._index_embedding().log_margin)


def _seed(*key):
    """A torch seed from a counter-based key (numpy's SeedSequence hashes the key)."""
    return int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0] >> 1)


# --- fitted state ----------------------------------------------------------------------------
class _FittedSpectralSum(SpectralSum):
    """``SpectralSum`` whose coefficients were reduced on the cluster for ``n_levels_`` levels.

    The eigenfunctions of fewer levels are the first columns of those of more (whole eigenspaces
    in a fixed order), so every τ whose certified level count is ≤ ``n_levels_`` reads the leading
    coefficients: the same expansion as in memory. Other τ get None (the kernel-sum route).
    """

    def __init__(self, manifold):
        super().__init__(manifold, None, None)
        self.n_levels_ = None
        self._stored = None

    def store(self, n_levels, coef):
        self.n_levels_ = n_levels
        self._stored = coef

    def levels_for(self, tau):
        levels = super().levels_for(tau)
        if levels is None or self.n_levels_ is None or levels > self.n_levels_:
            return None
        return levels

    def coefficients(self, n_levels):
        if n_levels not in self._coef:
            ep = self.manifold.eigenpairs(n_levels)
            self._coef[n_levels] = (ep, self._stored[:len(ep)])
        return self._coef[n_levels]


class _DaskData:
    """The cluster side of a fitted model: data, raw weights and the figures read from them."""

    def __init__(self, manifold, X, w, total, w_min, sample):
        self.manifold = manifold
        self.X = X              # dask (n, *pt), validated lazily per block
        self.w = w              # dask (n,) raw weights, or None (uniform)
        self.total = total      # Σ raw weights (n when uniform)
        self.w_min = w_min      # smallest positive normalised weight
        self.sample = sample    # (S, *pt) tensor: data rows on the client
        n = X.shape[0]
        self.n_tiles = int(min(MAX_TILES, max(1, math.ceil(n / ROWS_PER_TILE))))


def _coef_block(block, wblock, m, n_levels):
    """(1, K) partial sum Σ_i w_i φ(x_i) over one chunk (w = 1 when wblock is None)."""
    ep = m.eigenpairs(n_levels)
    Y = _tensor(block)
    w = None if wblock is None else _tensor(wblock)
    c = torch.zeros(len(ep), dtype=torch.float64)
    for a in range(0, Y.shape[0], COEF_ROWS):
        phi = ep._values(Y[a:a + COEF_ROWS])
        c += phi.sum(0) if w is None else w[a:a + COEF_ROWS] @ phi
    return c.numpy()[None]


def _partial_sums(X, w, m, n_levels):
    """Dask (K,) Σ_i w_i φ_n(x_i): one partial per chunk, summed by dask's tree reduction."""
    K = len(m.eigenpairs(n_levels))
    wb = _row_blocks(w) or [None] * X.numblocks[0]
    parts = [da.from_delayed(dask.delayed(_coef_block)(xb, wbb, m, n_levels), (1, K), np.float64)
             for xb, wbb in zip(_row_blocks(X), wb)]
    return da.concatenate(parts).sum(axis=0)


def fit(est, X, sample_weight, client):
    """The fitted state of ``est.fit`` on a dask array X (n, *point_shape), weights None,
    array-like or dask (n,): a dict of attribute names and values, which ``fit`` sets."""
    est._validate_params()
    m = est.manifold
    if m._index_embedding() is None:
        raise TypeError("a dask array X needs a manifold with a kernel-sum index (Sphere, Torus, "
                        f"SO3, Euclidean), found {m!r}")
    if est.shrinkage:
        raise ValueError("shrinkage=True is not available for a dask array X (fit it in memory)")
    X = _points(X, m, "X")
    n = X.shape[0]
    if n == 0:
        raise ValueError("X must hold at least one point, found 0")
    w = _weights(sample_weight, X)
    state = {"t_min_": 2e-8 / m._first_eigenvalue() if est.t_min is None else float(est.t_min)}
    rows = np.arange(n)
    if n > SELECT_ROWS:
        rows = np.sort(np.random.default_rng(SELECT_SEED).choice(n, SELECT_ROWS, replace=False))
    spec = _FittedSpectralSum(m)
    spectral = est.route in ("auto", "spectral")
    fixed = not isinstance(est.time, str)
    levels = SpectralSum.levels_for(spec, float(est.time)) if fixed and spectral else None
    # one pass over the data: totals, the sample, and (a fixed time) the coefficients
    jobs = [X[rows]]
    if w is not None:
        jobs += [w.sum(), da.where(w > 0, w, np.inf).min(), w[rows]]
    if levels is not None:
        jobs.append(_partial_sums(X, w, m, levels))
    out = list(_compute(client, *jobs))
    sample = torch.from_numpy(out.pop(0))
    if w is None:
        total, w_min, w_sample = float(n), 1.0 / n, None
    else:
        total, w_pos, w_sample = float(out.pop(0)), float(out.pop(0)), torch.from_numpy(out.pop(0))
        if not total > 0:
            raise ValueError(f"sample_weight must have a positive sum, found {total}")
        w_min = w_pos / total
    if fixed:
        times, weights = [float(est.time)], [1.0]
    else:  # the in-memory search on the sample (all rows when n ≤ SELECT_ROWS)
        if n < 2:
            raise ValueError(f"time={est.time!r} needs at least 2 points, found {n}")
        sub = type(est)(m, time=est.time, t_min=est.t_min, route=est.route).fit(
            sample, sample_weight=w_sample)
        times, weights = sub.times_.tolist(), sub.weights_.tolist()
        state.update(grid_=sub.grid_, loo_log_likelihood_=sub.loo_log_likelihood_)
    if spectral and levels is None:  # the levels that resolve the fitted times, if any
        found = [SpectralSum.levels_for(spec, tau) for tau in times]
        levels = max((L for L in found if L is not None), default=None)
        if levels is not None:
            out = list(_compute(client, _partial_sums(X, w, m, levels)))
    if levels is not None:
        spec.store(levels, torch.from_numpy(out.pop(0)) / total)
    state.update(times_=torch.tensor(times, dtype=torch.float64),
                 weights_=torch.tensor(weights, dtype=torch.float64), X_=X,
                 sample_weight_=(da.full((n,), 1.0 / n, chunks=(X.chunks[0],), dtype=np.float64)
                                 if w is None else w / total),
                 _spec=spec, _dask=_DaskData(m, X, w, total, w_min, sample))
    if len(times) == 1:
        state["time_"] = times[0]
    return state


# --- evaluation ------------------------------------------------------------------------------
def _model_block(block, est, t, want_grad):
    """(n, 1 + A) [log p, ∇log p] of an in-memory model on one query block."""
    out, g = est._log_and_grad(_tensor(block), t, want_grad)
    cols = [out[:, None]] + ([g.reshape(g.shape[0], -1)] if want_grad else [])
    return torch.cat(cols, dim=1).numpy()


def _spectral_block(block, spec, tau, levels, want_grad, rtol, coef):
    """(n, 2 + A) [log p, certified, ∇log p] by the spectral route (as ``_log_one``); ``coef``:
    coefficients for ``levels`` reduced at evaluation (None: the fitted ones)."""
    if coef is not None:
        spec = _FittedSpectralSum(spec.manifold)
        spec.store(levels, torch.from_numpy(coef))
    X = _tensor(block)
    p, g, bound = spec.value_and_grad(X, tau, levels, want_grad)
    ok = p >= bound / rtol
    safe = torch.where(ok, p, torch.ones_like(p))
    cols = [torch.log(safe)[:, None], ok.to(p.dtype)[:, None]]
    if want_grad:
        cols.append(g.reshape(g.shape[0], -1) / safe[:, None])
    return torch.cat(cols, dim=1).numpy()


def _merge_block(spec_res, ks_res):
    """Spectral rows where certified, kernel-sum rows elsewhere: (n, 1 + A)."""
    ok = spec_res[:, 1:2] > 0
    return np.where(ok, np.delete(spec_res, 1, axis=1), ks_res)


def _lse_columns(parts, log_pi=0.0):
    """log Σ_s π_s e^{l_s} and Σ_s resp_s g_s from (n, 1 + A) blocks [l_s, g_s] (g: ∇ of l_s)."""
    L = np.stack([p[:, 0] for p in parts], axis=1) + np.asarray(log_pi)
    top = L.max(axis=1, keepdims=True)
    out = top[:, 0] + np.log(np.exp(L - top).sum(axis=1))
    cols = [out[:, None]]
    if parts[0].shape[1] > 1:
        resp = np.exp(L - out[:, None])
        cols.append(sum(resp[:, s:s + 1] * parts[s][:, 1:] for s in range(len(parts))))
    return np.concatenate(cols, axis=1)


def _mix_block(*parts, log_pi):
    """The mixture Σ_s π_s p_s of the per-time blocks: (n, 1 + A) [log p, ∇log p]."""
    return _lse_columns(parts, log_pi)


def log_and_grad(est, X, t, want_grad, name, rtol):
    """(log p̂_t, ∇log p̂_t or None) for dask queries, or for any queries on a dask-fitted model.

    Dask queries give dask arrays (lazy); tensors on a dask-fitted model give tensors (computed).
    """
    m = est.manifold
    on_cluster = isinstance(est.X_, da.Array)
    as_tensor = not isinstance(X, da.Array)
    if as_tensor:
        Xt = m.validate(X, name).cpu().numpy()
        X = da.from_array(Xt, chunks=(max(1, min(len(Xt), VBLOCK)),) + Xt.shape[1:])
    Xq = _points(X, m, name)
    width = 1 + (_ambient_size(m) if want_grad else 0)
    if not on_cluster:  # an in-memory model mapped over the query blocks
        res = Xq.map_blocks(_model_block, dask.delayed(est, pure=False), t, want_grad,
                            chunks=(Xq.chunks[0], (width,)), drop_axis=list(range(2, Xq.ndim)),
                            dtype=np.float64)
    else:
        per_time = [_log_one(est, Xq, tau + t, want_grad, width, rtol) for tau in est.times_.tolist()]
        log_pi = np.log(est.weights_.numpy())
        res = da.map_blocks(_mix_block, *per_time, log_pi=log_pi, chunks=per_time[0].chunks,
                            dtype=np.float64)
    out = res[:, 0]
    grad = res[:, 1:].reshape((-1,) + tuple(m.ambient_shape)) if want_grad else None
    if as_tensor:
        out, grad = dask.compute(out, grad)
        out = torch.from_numpy(out)
        grad = torch.from_numpy(grad) if want_grad else None
    return out, grad


def _log_one(est, Xq, tau, want_grad, width, rtol):
    """(n, width) dask [log p_τ, ∇log p_τ] of the data diffused for τ (spectral values certified
    to ``rtol``)."""

    state = est._dask
    spectral = est.route in ("auto", "spectral")
    levels = SpectralSum.levels_for(est._spec, tau) if spectral else None
    if levels is None:
        return _kernel_sum(state, Xq, None, tau, want_grad, width, dense=est.route == "dense")
    coef = None
    if est._spec.levels_for(tau) is None:  # more levels than fitted: one more reduction (lazy)
        coef = (_partial_sums(state.X, state.w, est.manifold, levels) / state.total).to_delayed().ravel()[0]
    spec_res = Xq.map_blocks(_spectral_block, dask.delayed(est._spec, pure=False), tau, levels,
                             want_grad, rtol, coef, chunks=(Xq.chunks[0], (width + 1,)),
                             drop_axis=list(range(2, Xq.ndim)), dtype=np.float64)
    need = spec_res[:, 1] == 0
    ks_res = _kernel_sum(state, Xq, need, tau, want_grad, width, dense=False)
    return da.map_blocks(_merge_block, spec_res, ks_res, chunks=ks_res.chunks, dtype=np.float64)


# --- the partitioned kernel-sum route --------------------------------------------------------
class _Partition:
    """Query cells and tiles in the embedding of ``SpatialIndex`` (module docstring).

    S² (embedded in R³): cells are HEALPix pixels (nested) at ``nside_cell``, tiles their parents
    at ``nside_tile``. Otherwise cells are cubes of side ``side`` (periodic on the torus) keyed by
    their integer coordinates, and a cell's tile is a hash of those modulo ``n_tiles``.
    """

    _PRIMES = np.array([73856093, 19349663, 83492791, 49979687, 67867967, 86028121], dtype=np.int64)

    def __init__(self, index, n_tiles, halo, tau):
        self.index = index
        self.tau = tau
        e = index.embedding
        self.healpix = e.unit_sphere
        if self.healpix:
            self.nside_tile = 1
            while 12 * self.nside_tile**2 < n_tiles and self.nside_tile < 8:
                self.nside_tile *= 2
            self.n_tiles = 12 * self.nside_tile**2
            self.nside_cell = 4 * self.nside_tile
            while self.nside_cell < 256 and 1.0 / self.nside_cell > halo:
                self.nside_cell *= 2
            return
        self.n_tiles = n_tiles
        side = float(e.to_chord(np.array([halo]), tau)[0])
        if e.boxsize is not None:      # a whole number of cells per period
            side = e.boxsize / min(64, max(1, int(e.boxsize / max(side, 1e-12))))
        elif e.extent is not None:     # at most 64 cells across a bounded embedding
            side = max(side, 2.0 * e.extent / 64)
        self.side = max(side, 1e-12)

    def embed(self, X):
        return np.asarray(self.index.embedding.query(X, self.tau), dtype=np.float64)

    def keys(self, E):
        """(n, k) int64 cell keys of embedded points."""
        import healpy

        if self.healpix:
            return healpy.vec2pix(self.nside_cell, E[:, 0], E[:, 1], E[:, 2], nest=True)[:, None]
        keys = np.floor(E / self.side).astype(np.int64)
        if self.index.embedding.boxsize is not None:
            keys %= int(round(self.index.embedding.boxsize / self.side))
        return keys

    def centres(self, keys):
        import healpy

        if self.healpix:
            return np.stack(healpy.pix2vec(self.nside_cell, keys[:, 0], nest=True), axis=1)
        return (keys + 0.5) * self.side

    def tiles(self, keys):
        if self.healpix:
            shift = 2 * int(round(math.log2(self.nside_cell // self.nside_tile)))
            return keys[:, 0] >> shift
        mixed = (keys * self._PRIMES[np.arange(keys.shape[1]) % len(self._PRIMES)]).sum(axis=1)
        return np.abs(mixed) % self.n_tiles

    def dist(self, E, C):
        d = E - C
        period = self.index.embedding.boxsize
        if period is not None:
            d = np.abs(d)
            d = np.minimum(d, period - d)
        return np.linalg.norm(d, axis=1)


def _summarise(qblock, need, sample, part, tau, h2, far_all):
    """Per query chunk: rows for the tiles (with cell keys and halos) and far rows."""
    X = _tensor(qblock)
    rows = np.arange(X.shape[0]) if need is None else np.nonzero(np.asarray(need))[0]
    empty = np.zeros(0, np.int64)
    if far_all or rows.size == 0:
        return {"near": empty, "keys": None, "rho": None, "far": rows}
    index = SpatialIndex(part.index.manifold, torch.from_numpy(sample))
    d1 = index.nearest(X[rows], tau)[0][:, 0]
    R = np.sqrt(d1**2 + h2)
    far = R > FAR_RADIUS
    near = rows[~far]
    E = part.embed(X[near])
    keys = part.keys(E)
    rho = part.dist(E, part.centres(keys)) + index.embedding.to_chord(R[~far], tau)
    return {"near": near, "keys": keys, "rho": rho, "far": rows[far]}


def _plan(part, *summaries):
    """Cells with queries: keys, centres, halos (max over their queries) and tiles."""
    parts = [s for s in summaries if s["near"].size]
    if not parts:
        return None
    keys, inv = np.unique(np.concatenate([s["keys"] for s in parts]), axis=0, return_inverse=True)
    rho = np.zeros(len(keys))
    np.maximum.at(rho, inv.ravel(), np.concatenate([s["rho"] for s in parts]))
    return {"centres": part.centres(keys), "rho": rho, "tiles": part.tiles(keys)}


def _route_data(yblock, wblock, plan, m, n_tiles):
    """Split one data chunk into per-tile pieces: the rows within a halo of the tile's cells."""
    out = [None] * n_tiles
    if plan is None or len(yblock) == 0:
        return out
    Y = _tensor(yblock)
    index = SpatialIndex(m, Y)
    lists = index.tree.query_ball_point(plan["centres"], plan["rho"], return_sorted=False)
    counts = np.fromiter((len(a) for a in lists), dtype=np.int64, count=len(lists))
    if counts.sum() == 0:
        return out
    tile = np.repeat(plan["tiles"], counts)
    row = np.concatenate([np.asarray(a, dtype=np.int64) for a in lists]) % index.n
    key = np.unique(tile * index.n + row)          # each datum once per tile
    tile, row = key // index.n, key % index.n
    bounds = np.searchsorted(tile, np.arange(n_tiles + 1))
    for b in range(n_tiles):
        r = row[bounds[b]:bounds[b + 1]]
        if r.size:
            out[b] = (yblock[r], None if wblock is None else wblock[r])
    return out


def _route_queries(qblock, summary, part):
    """Split one query chunk's near rows by tile: per tile (rows in the chunk, points)."""
    out = [None] * part.n_tiles
    if summary["near"].size == 0:
        return out
    tiles = part.tiles(summary["keys"])
    for b in np.unique(tiles):
        rows = summary["near"][tiles == b]
        out[b] = (rows, qblock[rows])
    return out


def _eval_tile(region, queries, m, tau, total, w_min, want_grad):
    """One tile: its queries (from every query chunk) by the neighbour route on its region."""
    pieces = [q for q in queries if q is not None]
    if not pieces:
        return [None] * len(queries)
    data = [r for r in region if r is not None]
    Y = _tensor(np.concatenate([d[0] for d in data]))
    if data[0][1] is None:
        w = torch.full((Y.shape[0],), 1.0 / total, dtype=torch.float64)
    else:
        w = _tensor(np.concatenate([d[1] for d in data])) / total
    ks = _RegionKernelSum(m, Y, w, w_min)
    X = _tensor(np.concatenate([p[1] for p in pieces]))
    lg, g = ks.log_and_grad(X, tau, want_grad, route="neighbors")
    vals = _columns(lg, g)
    out, start = [], 0
    for q in queries:
        if q is None:
            out.append(None)
            continue
        out.append((q[0], vals[start:start + len(q[0])]))
        start += len(q[0])
    return out


class _RegionKernelSum(KernelSum):
    """``KernelSum`` over a tile's region with the neighbour radius of the whole data (its w_min;
    the compiled route's own cut would not see the data beyond the region)."""

    compiled = False

    def __init__(self, manifold, Y, w, w_min):
        super().__init__(manifold, Y, w, eps=EPS)
        self.w_min = w_min

    def radius(self, d1, tau):
        return np.sqrt(d1**2 + _halo2(self.manifold, tau, self.w_min))


def _columns(lg, g):
    cols = [lg[:, None]] + ([g.reshape(g.shape[0], -1)] if g is not None else [])
    return torch.cat(cols, dim=1).numpy()


def _dense_part(qblock, summary, yblock, wblock, m, tau, total, want_grad):
    """Far rows of one query chunk against one data chunk: (log Σ_{j∈chunk} w_j k, ∇ of that log)."""
    rows = summary["far"]
    if rows.size == 0 or len(yblock) == 0:
        return None
    w = (torch.full((len(yblock),), 1.0 / total, dtype=torch.float64) if wblock is None
         else _tensor(wblock) / total)
    if not bool((w > 0).any()):
        return None
    lg, g = KernelSum(m, _tensor(yblock), w).log_and_grad(_tensor(qblock[rows]), tau, want_grad,
                                                           route="dense")
    return _columns(lg, g)


def _lse_combine(summary, *parts):
    """Combine per-chunk partial log-sums (and gradients of their logs) of the far rows."""
    parts = [p for p in parts if p is not None]
    if not parts:
        return None
    return (summary["far"], _lse_columns(parts))


def _assemble(n, width, far, *tile_parts):
    """(n, width) rows of one query chunk from its tile pieces and far rows (other rows: 0)."""
    out = np.zeros((n, width))
    for piece in tile_parts + (far,):
        if piece is not None:
            out[piece[0]] = piece[1]
    return out


def _kernel_sum(state, Xq, need, tau, want_grad, width, dense):
    """(n, width) dask kernel sums log Σ_j w_j k_τ(x, y_j) (and gradients) for the rows ``need``
    (dask bool (n,), None: all); other rows hold 0. Graph in the module docstring."""
    m = state.manifold
    delayed = dask.delayed
    h2 = _halo2(state.manifold, tau, state.w_min)
    far_all = dense or math.sqrt(h2) > FAR_RADIUS
    qb = _row_blocks(Xq)
    nb = _row_blocks(need) or [None] * len(qb)
    yb = _row_blocks(state.X)
    wb = _row_blocks(state.w) or [None] * len(yb)
    sample = delayed(state.sample.numpy())
    part = _Partition(SpatialIndex(m, state.sample[:1]), state.n_tiles, math.sqrt(h2), tau)
    B = part.n_tiles
    summ = [delayed(_summarise, pure=False)(q, nd, sample, part, tau, h2, far_all)
            for q, nd in zip(qb, nb)]
    tile_parts = [[None] * B for _ in qb]
    if not far_all:
        plan = delayed(_plan, pure=False)(part, *summ)
        splits = [delayed(_route_data, nout=B, pure=False)(y, w, plan, m, B) for y, w in zip(yb, wb)]
        qsplits = [delayed(_route_queries, nout=B, pure=False)(q, s, part) for q, s in zip(qb, summ)]
        for b in range(B):
            region = [s[b] for s in splits]
            res = delayed(_eval_tile, nout=len(qb), pure=False)(
                region, [qs[b] for qs in qsplits], m, tau, state.total, state.w_min, want_grad)
            for q in range(len(qb)):
                tile_parts[q][b] = res[q]
    blocks = []
    for q, (xq, s) in enumerate(zip(qb, summ)):
        parts = [delayed(_dense_part, pure=False)(xq, s, y, w, m, tau, state.total, want_grad)
                 for y, w in zip(yb, wb)]
        far = delayed(_lse_combine, pure=False)(s, *parts)
        n_q = Xq.chunks[0][q]
        blocks.append(da.from_delayed(delayed(_assemble, pure=False)(n_q, width, far, *tile_parts[q]),
                                      (n_q, width), np.float64))
    return da.concatenate(blocks)


# --- sampling --------------------------------------------------------------------------------
def _stream(base, b, n_rows):
    """(n_rows, 2) uniforms of virtual block b: [datum, time] (stream (base, b, 0))."""
    gen = torch.Generator().manual_seed(_seed(base, b, 0))
    return torch.rand((n_rows, 2), generator=gen, dtype=torch.float64).numpy()


def _uniform_block(base, block_id=None, block_info=None):
    n_rows = block_info[None]["chunk-shape"][0]
    return _stream(base, block_id[0], n_rows)


def _time_index(u, cum):
    return np.minimum(np.searchsorted(cum, u * cum[-1], side="right"), len(cum) - 1)


def _noise_block(x0, base, cum, times, m, block_id=None):
    """Exact forward noising of one virtual block (stream (base, b, 1)); times from stream 0."""
    b = block_id[0]
    u = _stream(base, b, x0.shape[0])
    tau = torch.from_numpy(times[_time_index(u[:, 1], cum)])
    gen = torch.Generator().manual_seed(_seed(base, b, 1))
    from heatscore.heat_kernels import sample_heat_kernel

    return sample_heat_kernel(m, _tensor(x0), tau, rng=gen).numpy()


def sample(est, n, rng, chunks):
    """(n, *pt) dask array of exact draws from p̂ (``est.sample``'s law), keyed by virtual block."""
    n = check_positive_int(n, "n", minimum=1)
    if est.shrinkage or est.manifold.discrete:
        raise ValueError("a dask sample needs the exact sampler: not available with shrinkage=True "
                         f"or on {est.manifold!r}")
    gen = as_generator(rng)
    base = int(torch.randint(0, 2**62, (1,), generator=gen))
    m = est.manifold
    if isinstance(est.X_, da.Array):
        Y, w, total = est._dask.X, est._dask.w, est._dask.total
    else:
        Xn = est.X_.cpu().numpy()
        Y = da.from_array(Xn, chunks=(VBLOCK,) + Xn.shape[1:])
        sw = est.sample_weight_.cpu().numpy()
        w = None if np.all(sw == sw[0]) else da.from_array(sw, chunks=VBLOCK)
        total = 1.0
    N = Y.shape[0]
    nb = -(-n // VBLOCK)
    vchunks = (VBLOCK,) * (nb - 1) + (n - VBLOCK * (nb - 1),)
    u = da.map_blocks(_uniform_block, base, chunks=(vchunks, (2,)), dtype=np.float64)
    if w is None:
        idx = da.minimum((u[:, 0] * N).astype(np.int64), N - 1)
    else:
        idx = da.minimum(da.searchsorted(da.cumsum(w), u[:, 0] * total, side="right"), N - 1)
    x0 = Y[idx]
    cum = np.cumsum(est.weights_.numpy())
    out = x0.map_blocks(_noise_block, base, cum, est.times_.numpy(), m, dtype=np.float64)
    if chunks is not None:
        out = out.rechunk({0: chunks})
    return out


# --- reading ---------------------------------------------------------------------------------
def read_dask_points(path, columns=None, latlon=False, blocksize="64MB"):
    """A directory (or glob) of Parquet or CSV files as one dask array (n, k) float64.

    Parameters
    ----------
    path : a directory of ``.parquet``/``.pq`` or ``.csv`` files (any fsspec URL dask can read).
    columns : the columns to read, in order (None: all).
    latlon : the two columns are latitude and longitude in degrees: return unit vectors (n, 3)
        on S² (``heatscore.datasets.latlon_to_unit``, per block).
    blocksize : CSV bytes per chunk (Parquet: one chunk per row group or file).

    Chunk sizes are known (counted per file on the workers), as ``fit`` needs; nothing is read
    into the client.
    """
    import dask.dataframe as dd
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    names = [p for p in fs.ls(root, detail=False)] if fs.isdir(root) else fs.glob(root)
    kinds = {("parquet" if p.endswith((".parquet", ".pq")) else "csv" if p.endswith(".csv") else None)
             for p in names} - {None}
    if len(kinds) != 1:
        raise ValueError(f"path must hold .parquet or .csv files (one kind), found {sorted(kinds) or 'none'} "
                         f"in {path!r}")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    files = sorted(p for p in names if p.endswith((".parquet", ".pq", ".csv")))
    if protocol not in ("file", "local"):
        files = [f"{protocol}://{p}" for p in files]
    if kinds == {"parquet"}:
        df = dd.read_parquet(files, columns=columns)
    else:
        df = dd.read_csv(files, usecols=columns, blocksize=blocksize)
        if columns is not None:
            df = df[list(columns)]
    X = df.to_dask_array(lengths=True).astype(np.float64)
    if latlon:
        if X.shape[1] != 2:
            raise ValueError(f"latlon=True needs two columns (latitude, longitude), found {X.shape[1]}")
        from heatscore.datasets import latlon_to_unit

        X = X.map_blocks(lambda b: latlon_to_unit(b).numpy(), chunks=(X.chunks[0], (3,)),
                         dtype=np.float64)
    return X
