"""Base class of every manifold and the eigenpairs container.

A manifold holds points of shape ``point_shape`` batched first, ``(n, *point_shape)``; tangent
vectors are ambient arrays of shape ``(n, *ambient_shape)``. Distances and maps are row-paired
(row i of x with row i of y; a leading dimension of 1 broadcasts).
"""

import functools
import math

import torch

from heatscore._validation import (
    MANIFOLD_ATOL,
    as_float_tensor,
    as_generator,
    check_finite,
    check_positive_int,
    check_shape,
)

#: Largest intermediate a chunked pairwise call builds, in float64 entries (about 512 MB).
MAX_CHUNK_ENTRIES = 2**26


def broadcast_rows(x, y, xname="x", yname="y"):
    """Broadcast two batches row-wise: equal lengths, or one of them has a single row."""
    nx, ny = x.shape[0], y.shape[0]
    if nx == ny:
        return x, y
    if nx == 1:
        return x.expand((ny,) + tuple(x.shape[1:])), y
    if ny == 1:
        return x, y.expand((nx,) + tuple(y.shape[1:]))
    raise ValueError(f"{xname} and {yname} must have the same number of rows (or one row), "
                     f"found {nx} and {ny}")


@functools.lru_cache(maxsize=16)
def _ones(k, dtype, device):
    """A cached (k,) vector of ones (read only)."""
    return torch.ones(k, dtype=dtype, device=device)


def rowsum(a):
    """(…,) sums over the last axis, as a product with a vector of ones (torch's sum over a
    short last axis, as for (n, 3) rows, is several times slower on the CPU)."""
    return a @ _ones(a.shape[-1], a.dtype, a.device)


def rowdot(a, b):
    """(…,) inner products over the last axis (see :func:`rowsum`)."""
    return rowsum(a * b)


def rows_per_chunk(n_cols, entries_per_pair=1, budget=MAX_CHUNK_ENTRIES):
    """Rows of an ``(rows, n_cols)`` pairwise block that keep it under ``budget`` entries."""
    return max(1, budget // max(1, n_cols * entries_per_pair))


class IndexEmbedding:
    """How kernel sums find the data near a query: an embedding of points in R^k in which the
    kernel's distance r (geodesic, or what the kernel decays with) and the embedded (chord)
    distance c are increasing functions of each other.

    The identity embedding of flat coordinates is this base class; manifolds override the maps.
    ``copies``: the data embedding holds each datum this many times (SO(3): ±q), rows j + iN for
    datum j. ``boxsize``: period of every coordinate (a periodic k-d tree) or None.
    ``log_margin``: log of the factor by which the kernel may exceed the flat Gaussian
    exp(−r²/4τ) (curvature, wrapping) at the radii used; ``max_radius``: the largest kernel
    radius at which the neighbour route is used (the dense route beyond). ``unit_sphere``: the
    embedding is the unit sphere of R³ (HEALPix cells apply).
    """

    copies = 1
    boxsize = None
    #: The S² kernel exceeds the flat one by (θ/sin θ)^{1/2} ≤ 1.3 for θ ≤ 1.2; the wrapped
    #: Gaussian by < 2 for r < π: a factor 4 covers both.
    log_margin = math.log(4.0)
    max_radius = 1.2
    unit_sphere = False
    #: The embedding lies in a ball of this radius (None: unbounded).
    extent = None

    def data(self, Y):
        """(copies·N, k) float64 numpy embedding of the data rows ``Y``."""
        return Y.detach().cpu().numpy().reshape(Y.shape[0], -1)

    def query(self, X, tau):
        """(n, k) float64 numpy embedding of query rows at kernel time τ."""
        return X.detach().cpu().numpy().reshape(X.shape[0], -1)

    def to_chord(self, r, tau):
        """Kernel radius r (numpy) -> embedded radius."""
        return r

    def from_chord(self, c, tau):
        """Embedded distance c (numpy) -> kernel distance."""
        return c


class Eigenpairs:
    """Laplace–Beltrami eigenpairs: L φ_k = −λ_k φ_k, orthonormal in L²(dvol) (L²(γ) on R^d).

    Attributes
    ----------
    eigenvalues : (K,) float64 tensor, ascending, one per eigenfunction.
    levels : (K,) int64 tensor, the level (distinct eigenvalue index) of each eigenfunction.
    multiplicities : (n_levels,) int64 tensor.

    ``ep(x)`` returns values ``(n, K)``; ``ep.grad(x)`` Riemannian gradients ``(n, K, *ambient)``.
    Subclasses implement ``_values`` and ``_grad`` on validated points.
    """

    def __init__(self, manifold, eigenvalues, levels, multiplicities):
        self.manifold = manifold
        self.eigenvalues = eigenvalues
        self.levels = levels
        self.multiplicities = multiplicities

    @property
    def n_levels(self):
        return int(self.multiplicities.shape[0])

    def __len__(self):
        return int(self.eigenvalues.shape[0])

    def __call__(self, x):
        x = self.manifold.validate(x, "x")
        return self._values(x)

    def grad(self, x):
        x = self.manifold.validate(x, "x")
        return self._grad(x)

    def values_and_grad(self, x):
        """``(ep(x), ep.grad(x))``; subclasses override where both come cheaper together."""
        x = self.manifold.validate(x, "x")
        return self._values(x), self._grad(x)

    def __repr__(self):
        return (f"{type(self).__name__}({self.manifold!r}, n_levels={self.n_levels}, "
                f"n_eigenfunctions={len(self)})")


def levels_from_eigenvalues(eigenvalues, rtol=1e-8):
    """Group sorted eigenvalues into levels (distinct values up to ``rtol``): (levels, multiplicities)."""
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64)
    if ev.numel() == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)
    scale = torch.clamp(ev.abs(), min=1.0)
    new = torch.ones_like(ev, dtype=torch.bool)
    new[1:] = (ev[1:] - ev[:-1]) > rtol * scale[1:]
    levels = torch.cumsum(new.long(), 0) - 1
    multiplicities = torch.bincount(levels)
    return levels, multiplicities


class Manifold:
    """Common interface: geometry, sampling, generator drift and eigenpairs.

    Subclasses set ``dim``, ``point_shape``, ``ambient_shape`` and ``volume`` and implement
    ``_off_manifold`` (a per-point deviation), ``_proj``, ``_exp``, ``_log``, ``_inner``,
    ``random_uniform`` and ``eigenpairs``.
    """

    dim: int
    point_shape: tuple
    ambient_shape: tuple
    volume: float

    # --- validation -------------------------------------------------------------------------
    def _off_manifold(self, x):
        """(n,) deviation of each point from the manifold in DESIGN's measure."""
        raise NotImplementedError

    def _wrap(self, x):
        """Canonical form of valid points (identity except on the torus)."""
        return x

    def validate(self, x, name="x"):
        """Tensor of points on the manifold; ``ValueError`` naming ``name`` otherwise. Never projects."""
        x = as_float_tensor(x, name)
        check_shape(x, name, self.point_shape)
        check_finite(x, name)
        if x.shape[0]:
            dev = self._off_manifold(x)
            tol = MANIFOLD_ATOL.get(x.dtype, 1e-6)
            bad = dev > tol
            if bool(bad.any()):
                raise ValueError(
                    f"{name} has {int(bad.sum())} of {x.shape[0]} points off {self!r}: "
                    f"max {self._deviation_name} = {float(dev.max()):.2e} (tolerance {tol:g})")
        return self._wrap(x)

    _deviation_name = "deviation"

    def validate_tangent(self, x, v, name="v"):
        """Tensor of ambient vectors shaped like ``x``'s tangent vectors (not projected)."""
        v = as_float_tensor(v, name, dtype=x.dtype, device=x.device)
        check_shape(v, name, self.ambient_shape, what="tangent vectors")
        check_finite(v, name)
        return v

    def belongs(self, x, atol=None):
        """(n,) bool: each point within tolerance of the manifold (shape errors still raise)."""
        x = as_float_tensor(x, "x")
        check_shape(x, "x", self.point_shape)
        tol = MANIFOLD_ATOL.get(x.dtype, 1e-6) if atol is None else atol
        finite = torch.isfinite(x.reshape(x.shape[0], -1)).all(dim=1)
        xs = torch.where(finite.reshape((-1,) + (1,) * len(self.point_shape)), x, self._safe_point(x))
        return finite & (self._off_manifold(xs) <= tol)

    def _safe_point(self, x):
        """A point on the manifold shaped like ``x`` (stands in for non-finite rows in ``belongs``)."""
        return self.random_uniform(1, rng=0).to(x.dtype).to(x.device).expand_as(x)

    # --- geometry ---------------------------------------------------------------------------
    def proj(self, x, v):
        """Orthogonal projection of ambient ``v`` onto the tangent space at ``x``."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        x, v = broadcast_rows(x, v, "x", "v")
        return self._proj(x, v)

    def exp(self, x, v):
        """Exponential map exp_x(v), row-paired."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        x, v = broadcast_rows(x, v, "x", "v")
        return self._exp(x, v)

    def log(self, x, y):
        """Logarithm map log_x(y) (tangent at x), row-paired."""
        x = self.validate(x, "x")
        y = self.validate(y, "y").to(x.dtype)
        x, y = broadcast_rows(x, y)
        return self._log(x, y)

    def inner(self, x, u, v):
        """(n,) Riemannian inner product g_x(u, v)."""
        x = self.validate(x, "x")
        u = self.validate_tangent(x, u, "u")
        v = self.validate_tangent(x, v, "v")
        return self._inner(x, u, v)

    def norm(self, x, v):
        """(n,) Riemannian norm of tangent vectors."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        return torch.sqrt(torch.clamp(self._inner(x, v, v), min=0.0))

    def _inner(self, x, u, v):
        return rowsum((u * v).reshape(u.shape[0], -1))

    def dist(self, x, y):
        """(n,) geodesic distance, row-paired."""
        x = self.validate(x, "x")
        y = self.validate(y, "y").to(x.dtype)
        x, y = broadcast_rows(x, y)
        return self._dist(x, y)

    def _dist(self, x, y):
        v = self._log(x, y)
        return torch.sqrt(torch.clamp(self._inner(x, v, v), min=0.0))

    def pairwise_dist(self, x, y=None, chunk_size=None):
        """(n, m) geodesic distances between every row of ``x`` and every row of ``y``."""
        x = self.validate(x, "x")
        y = x if y is None else self.validate(y, "y").to(x.dtype)
        n, m = x.shape[0], y.shape[0]
        out = torch.empty((n, m), dtype=x.dtype, device=x.device)
        per_pair = max(1, 4 * int(torch.tensor(self.ambient_shape).prod()))
        step = chunk_size or rows_per_chunk(m, per_pair)
        for i in range(0, n, step):
            xi = x[i:i + step]
            k = xi.shape[0]
            xr = xi.unsqueeze(1).expand((k, m) + tuple(xi.shape[1:])).reshape((-1,) + tuple(xi.shape[1:]))
            yr = y.unsqueeze(0).expand((k, m) + tuple(y.shape[1:])).reshape((-1,) + tuple(y.shape[1:]))
            out[i:i + step] = self._dist(xr, yr).reshape(k, m)
        return out

    # --- sampling and the generator ---------------------------------------------------------
    def random_uniform(self, n, rng=None, dtype=torch.float64, device=None):
        """``n`` points uniform w.r.t. the Riemannian volume."""
        raise NotImplementedError

    def random_tangent_normal(self, x, rng=None):
        """ξ ~ N(0, I) in T_xM, isotropic in the metric: E[g(ξ, u)²] = g(u, u)."""
        x = self.validate(x, "x")
        gen = as_generator(rng, x.device)
        return self._random_tangent_normal(x, gen)

    def _random_tangent_normal(self, x, gen):
        from heatscore._validation import randn
        z = randn(gen, x.shape[:1] + tuple(self.ambient_shape), dtype=x.dtype, device=x.device)
        return self._proj(x, z)

    def drift(self, x):
        """Drift b(x) of the generator L = Δ + b·∇ (zero on compact manifolds)."""
        x = self.validate(x, "x")
        return torch.zeros(x.shape[:1] + tuple(self.ambient_shape), dtype=x.dtype, device=x.device)

    def sample_stationary(self, n, rng=None, dtype=torch.float64, device=None):
        """``n`` draws from the stationary law of the diffusion (uniform on compact manifolds)."""
        return self.random_uniform(n, rng=rng, dtype=dtype, device=device)

    def eigenpairs(self, n_levels):
        """Eigenfunctions of the first ``n_levels`` distinct eigenvalues (whole eigenspaces)."""
        raise NotImplementedError

    # --- heat kernels -----------------------------------------------------------------------
    def _index_embedding(self):
        """The :class:`IndexEmbedding` of kernel sums, or None (no neighbour route: dense sums)."""
        return None

    def _heat_backend(self):
        """The manifold's heat-kernel backend (built once by ``_make_heat_backend``)."""
        backend = self.__dict__.get("_heat_backend_cache")
        if backend is None:
            backend = self.__dict__["_heat_backend_cache"] = self._make_heat_backend()
        return backend

    def _make_heat_backend(self):
        raise NotImplementedError(f"{self!r} has no heat kernel")

    def _log_reference(self, x):
        """(n,) log of the density of the eigenbasis' reference measure w.r.t. dvol at x, or None
        where it is dvol itself (compact manifolds; N(0, scale² I) on R^d)."""
        return None

    def _grad_log_reference(self, x):
        """(n, *ambient) ∇ of ``_log_reference`` (only called where that is not None)."""
        raise NotImplementedError

    def to_geomstats(self):
        """The matching geomstats space (conversions of points go through numpy)."""
        raise NotImplementedError(f"{self!r} has no geomstats counterpart")

    @staticmethod
    def _check_n(n, name="n"):
        return check_positive_int(n, name, minimum=0)

    @staticmethod
    def _check_levels(n_levels):
        return check_positive_int(n_levels, "n_levels", minimum=1)
