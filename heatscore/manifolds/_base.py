"""The manifold protocol: what every heatscore manifold provides, and its base class.

A manifold holds points of shape ``point_shape`` batched first, ``(n, *point_shape)``; tangent
vectors are ambient arrays of shape ``(n, *ambient_shape)``. Distances and maps are row-paired
(row i of x with row i of y; a leading dimension of 1 broadcasts). Everything one geometry knows
lives with it (its module and its kernel module); the other layers (heat kernels, estimators,
samplers, the command line, pictures) use only the names below. Adding a manifold means its own
module(s), one line in ``_registry.KINDS`` and one entry in the contract tests' list
(``tests/test_manifold_contract.py``, which runs :mod:`heatscore.testing`).

Public API (validated inputs; DESIGN's API block): ``dim``, ``point_shape``, ``ambient_shape``,
``volume``; ``validate``, ``belongs``, ``proj``, ``exp``, ``log``, ``inner``, ``norm``, ``dist``,
``pairwise_dist``; ``random_uniform``, ``random_tangent_normal``, ``drift``, ``sample_stationary``;
``eigenpairs(n_levels)``; ``quadrature(n)``; ``to_geomstats``; ``==`` and ``hash``.

Internal protocol: unvalidated (the caller has validated the points), the methods other layers
may call. Defaults here serve compact manifolds with an induced metric; a manifold overrides
what differs.

Geometry
- ``_off_manifold(x)`` (n,): deviation in the manifold's measure (``_deviation_name``).
- ``_wrap(x)``: canonical coordinates (the torus' [0, 2π)); ``_safe_point(x)``: a valid point.
- ``_proj(x, v)``, ``_exp(x, v)``, ``_log(x, y)``, ``_dist(x, y)``, ``_inner(x, u, v)``.
- ``_random_tangent_normal(x, gen)``: ξ ~ N(0, I) in T_xM, isotropic in the metric.
- ``_tangent_frame(x)`` (n, dim, *ambient): a g-orthonormal frame (exact divergences).
- ``_smooth_curve(x, step)``: a curve with velocity ``step`` at 0, twice differentiable there.
- ``_metric_coordinates(x, v)`` (n, c): coordinates in which g is the dot product.
Forward process and spectrum
- ``_forward_process()``: the :class:`Process` (drift, its divergence, D, stationary law).
- ``_first_eigenvalue()``: λ_1, the time scale 1/λ_1 of every default.
- ``_log_reference(x)`` / ``_grad_log_reference(x)``: the eigenbasis' reference density w.r.t.
  dvol (None on compact manifolds; N(0, s² I) on R^d).
- ``_sample_heat_kernel(x0, t, gen)``: exact forward noising; ``_exp_random_direction`` helps
  isotropic kernels.
- ``_walk_step(y, process)``: the geodesic random walk's step; ``_tangent_noise(x, gen)``: the
  samplers' tangent noise (``_ambient_tangent_noise`` for induced metrics).
- ``_heat_backend()``: the heat-kernel backend (``_make_heat_backend``): row-paired
  ``log_and_grad(x, y, t, want_grad)``, spectral routes and tail bounds where they exist.
- ``_index_embedding()``: the :class:`IndexEmbedding` of kernel sums (None: dense sums only).
- ``smooth_scores`` (False on meshes: no ODE, divergence or ISM), ``discrete`` (True on meshes:
  densities as vertex values under the discrete heat flow).
Estimators
- ``_default_levels``: OISM's levels when none are given; ``_bases``: the eigenbases offered.
- ``_product_rule(n_levels)``: (product levels, quadrature resolution) of closed-form OISM.
- ``_features(x)`` (n, ``_n_features``): a score network's input features.
Persistence and front ends
- ``_key()`` (equality and hash), ``_spec()`` → (JSON dict with "kind", arrays) and the class
  method ``_from_spec(spec, arrays, build)``; ``manifold_from_spec`` inverts ``_spec``.
- ``cli_name`` (``--manifold``), ``_column_names()`` (CSV header), ``plot_view`` (the picture).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Tuple

import torch

from heatscore._validation import (
    MANIFOLD_ATOL,
    NoiseBuffer,
    as_float_tensor,
    as_generator,
    check_finite,
    check_positive_int,
    check_shape,
    randn,
    standard_normal,
)
from heatscore._typing import ArrayLike, Device, LogDensityFn, Quadrature, Rng, Shape, TangentFn
from heatscore._typing import ValuesAndGrad

if TYPE_CHECKING:
    from geomstats.geometry.manifold import Manifold as GeomstatsManifold

#: Largest intermediate a chunked pairwise call builds, in float64 entries (about 512 MB).
MAX_CHUNK_ENTRIES = 2**26
#: Rows ``validate`` checks at once (its temporaries stay ~ tens of MB at any n).
VALIDATE_ROWS = 2**20


def broadcast_rows(x: torch.Tensor, y: torch.Tensor, xname: str = "x",
                   yname: str = "y") -> Tuple[torch.Tensor, torch.Tensor]:
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


def rowsum(a: torch.Tensor) -> torch.Tensor:
    """(…,) sums over the last axis, as a product with a vector of ones (torch's sum over a
    short last axis, as for (n, 3) rows, is several times slower on the CPU)."""
    return a @ _ones(a.shape[-1], a.dtype, a.device)


def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(…,) inner products over the last axis (see :func:`rowsum`)."""
    return rowsum(a * b)


def rows_per_chunk(n_cols: int, entries_per_pair: int = 1, budget: int = MAX_CHUNK_ENTRIES) -> int:
    """Rows of an ``(rows, n_cols)`` pairwise block that keep it under ``budget`` entries."""
    return max(1, budget // max(1, n_cols * entries_per_pair))


@dataclass(frozen=True)
class Process:
    """The forward diffusion dX = b(X) dt + √(2D) dB of a manifold (DESIGN: b = 0, D = 1 on compact
    manifolds; b(x) = −x, D = s² on ``Euclidean(d, scale=s)``).

    ``drift``: x -> (n, *ambient) b(x) on validated points; ``drift_divergence``: div_M b, a constant
    (−d on R^d); ``diffusion``: D; ``log_stationary``: x -> (n,) log-density of the stationary law
    w.r.t. dvol.
    """

    drift: TangentFn
    drift_divergence: float
    diffusion: float
    log_stationary: LogDensityFn


def coordinate_walk_increment(y, diffusion):
    """``(y, score, h, gen) -> 2Dh s + √(2Dh) ξ``, ξ ~ N(0, I_d) in coordinates (T^d, R^d): the
    geodesic random walk's increment, ξ from :func:`heatscore._validation.standard_normal`
    (float32 draws into a buffer reused from step to step, cast into the fresh float64 result)."""
    noise = NoiseBuffer(y.shape)

    def increment(y, score, h, gen):
        root_c = math.sqrt(2 * diffusion * h)      # 2Dh s + √(2Dh) ξ = √c (ξ + √c s), c = 2Dh
        return (torch.empty_like(y).copy_(noise.draw(gen, y.device))
                .add_(score, alpha=root_c).mul_(root_c))
    return increment


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
    embedding is the unit sphere of R³ (HEALPix cells apply). ``radial_chord``: the points are unit
    vectors of R^D, the kernel is a decreasing function of the chord |x − y| alone (the backend's
    ``log_radial`` of θ = 2 asin(|x − y|/2)) and the Riemannian gradient is the tangential part of
    the Euclidean one (the compiled kernel sums of ``estimators._chord_sums`` apply).
    """

    copies = 1
    boxsize = None
    #: The S² kernel exceeds the flat one by (θ/sin θ)^{1/2} ≤ 1.3 for θ ≤ 1.2; the wrapped
    #: Gaussian by < 2 for r < π: a factor 4 covers both.
    log_margin = math.log(4.0)
    max_radius = 1.2
    unit_sphere = False
    radial_chord = False
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

    def chord_bounds(self, tau):
        """(b, a) with b·r ≤ c ≤ a·r between the kernel distance r and the chord c of a pair
        (what a product's conservative radius maps need)."""
        return 1.0, 1.0

    def flat(self):
        """This embedding without a periodic box (for products, whose trees are not periodic)."""
        return self


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

    def __init__(self, manifold: Manifold, eigenvalues: torch.Tensor, levels: torch.Tensor,
                 multiplicities: torch.Tensor) -> None:
        self.manifold = manifold
        self.eigenvalues = eigenvalues
        self.levels = levels
        self.multiplicities = multiplicities

    @property
    def n_levels(self) -> int:
        return int(self.multiplicities.shape[0])

    def __len__(self) -> int:
        return int(self.eigenvalues.shape[0])

    def __call__(self, x: ArrayLike) -> torch.Tensor:
        x = self.manifold.validate(x, "x")
        return self._values(x)

    def grad(self, x: ArrayLike) -> torch.Tensor:
        x = self.manifold.validate(x, "x")
        return self._grad(x)

    def values_and_grad(self, x: ArrayLike) -> ValuesAndGrad:
        """``(ep(x), ep.grad(x))``; subclasses override where both come cheaper together."""
        x = self.manifold.validate(x, "x")
        return self._values(x), self._grad(x)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.manifold!r}, n_levels={self.n_levels}, "
                f"n_eigenfunctions={len(self)})")


def levels_from_eigenvalues(eigenvalues: ArrayLike,
                            rtol: float = 1e-8) -> Tuple[torch.Tensor, torch.Tensor]:
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
    point_shape: Shape
    ambient_shape: Shape
    volume: float
    #: Whether scores of densities on the manifold are smooth fields (False on meshes, whose P1
    #: functions have gradients that jump across edges: no probability-flow ODE, no divergence,
    #: no implicit score matching there).
    smooth_scores = True
    #: Whether densities are vertex values with P1 interpolation and the discrete heat semigroup
    #: (meshes): estimators then use the discrete heat flow of the data.
    discrete = False

    # --- identity and persistence ----------------------------------------------------------
    def _key(self):
        """A hashable value that identifies the manifold (equal manifolds, equal keys)."""
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._key() == self._key()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._key()))

    def __deepcopy__(self, memo):
        """Manifolds are immutable values (their caches derive from them): copies share them, so
        scikit-learn's ``clone`` of an estimator keeps its manifold (and the manifold's caches)."""
        return self

    def _spec(self):
        """(JSON-able dict with a "kind" entry, {name: numpy array}): what rebuilds the manifold
        (``heatscore.manifolds.manifold_from_spec``), e.g. in a saved model file."""
        raise NotImplementedError(f"{self!r} cannot be saved")

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        """The manifold of a ``_spec``; ``build(spec, arrays)`` rebuilds any manifold (a product's
        factors)."""
        raise NotImplementedError

    # --- front ends ------------------------------------------------------------------------
    #: The name of the manifold on the ``heatscore`` command line (``--manifold``), or None.
    cli_name: Optional[str] = None

    @property
    def plot_view(self) -> Optional[str]:
        """The picture ``heatscore.plotting`` draws of densities on the manifold ("sphere",
        "torus", "so3", "mesh"), or None."""
        return None

    def _column_names(self):
        """Names of the columns of flattened points in a CSV file."""
        return tuple(f"x{i + 1}" for i in range(math.prod(self.point_shape)))

    def _features(self, x):
        """(n, F) float64 input features of a score network at points x (flattened points
        unless a manifold has better ones: O(1) in size, continuous, injective)."""
        return x.reshape(x.shape[0], -1)

    @property
    def _n_features(self):
        return math.prod(self.point_shape)

    # --- validation -------------------------------------------------------------------------
    def _off_manifold(self, x):
        """(n,) deviation of each point from the manifold in DESIGN's measure."""
        raise NotImplementedError

    def _wrap(self, x):
        """Canonical form of valid points (identity except on the torus)."""
        return x

    def validate(self, x: ArrayLike, name: str = "x") -> torch.Tensor:
        """Tensor of points on the manifold; ``ValueError`` naming ``name`` otherwise. Never projects."""
        x = as_float_tensor(x, name)
        check_shape(x, name, self.point_shape)
        tol = MANIFOLD_ATOL.get(x.dtype, 1e-6)
        nonfinite = off = 0
        worst = 0.0
        # row blocks bound the temporaries (x itself when it is one block: a mesh caches the
        # location of the tensor it was given)
        for part in (x,) if x.shape[0] <= VALIDATE_ROWS else x.split(VALIDATE_ROWS):
            nonfinite += int((~torch.isfinite(part)).sum())
            if not nonfinite and part.shape[0]:
                dev = self._off_manifold(part)
                off += int((dev > tol).sum())
                worst = max(worst, float(dev.max()))
        if nonfinite:
            raise ValueError(f"{name} must be finite: found {nonfinite} NaN/inf entries")
        if off:
            raise ValueError(
                f"{name} has {off} of {x.shape[0]} points off {self!r}: "
                f"max {self._deviation_name} = {worst:.2e} (tolerance {tol:g})")
        return self._wrap(x)

    _deviation_name = "deviation"

    def validate_tangent(self, x: torch.Tensor, v: ArrayLike, name: str = "v") -> torch.Tensor:
        """Tensor of ambient vectors shaped like ``x``'s tangent vectors (not projected)."""
        v = as_float_tensor(v, name, dtype=x.dtype, device=x.device)
        check_shape(v, name, self.ambient_shape, what="tangent vectors")
        check_finite(v, name)
        return v

    def belongs(self, x: ArrayLike, atol: Optional[float] = None) -> torch.Tensor:
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
    def proj(self, x: ArrayLike, v: ArrayLike) -> torch.Tensor:
        """Orthogonal projection of ambient ``v`` onto the tangent space at ``x``."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        x, v = broadcast_rows(x, v, "x", "v")
        return self._proj(x, v)

    def exp(self, x: ArrayLike, v: ArrayLike) -> torch.Tensor:
        """Exponential map exp_x(v), row-paired."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        x, v = broadcast_rows(x, v, "x", "v")
        return self._exp(x, v)

    def log(self, x: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """Logarithm map log_x(y) (tangent at x), row-paired."""
        x = self.validate(x, "x")
        y = self.validate(y, "y").to(x.dtype)
        x, y = broadcast_rows(x, y)
        return self._log(x, y)

    def inner(self, x: ArrayLike, u: ArrayLike, v: ArrayLike) -> torch.Tensor:
        """(n,) Riemannian inner product g_x(u, v)."""
        x = self.validate(x, "x")
        u = self.validate_tangent(x, u, "u")
        v = self.validate_tangent(x, v, "v")
        return self._inner(x, u, v)

    def norm(self, x: ArrayLike, v: ArrayLike) -> torch.Tensor:
        """(n,) Riemannian norm of tangent vectors."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        return torch.sqrt(torch.clamp(self._inner(x, v, v), min=0.0))

    def _inner(self, x, u, v):
        return rowsum((u * v).reshape(u.shape[0], -1))

    def dist(self, x: ArrayLike, y: ArrayLike) -> torch.Tensor:
        """(n,) geodesic distance, row-paired."""
        x = self.validate(x, "x")
        y = self.validate(y, "y").to(x.dtype)
        x, y = broadcast_rows(x, y)
        return self._dist(x, y)

    def _dist(self, x, y):
        v = self._log(x, y)
        return torch.sqrt(torch.clamp(self._inner(x, v, v), min=0.0))

    def pairwise_dist(self, x: ArrayLike, y: Optional[ArrayLike] = None,
                      chunk_size: Optional[int] = None) -> torch.Tensor:
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

    def _tangent_frame(self, x):
        """(n, dim, *ambient): a g-orthonormal frame E_1 … E_dim of T_xM (exact divergences)."""
        raise TypeError(f"no tangent frame for {self!r}: use divergence='hutchinson' or a callable")

    def _smooth_curve(self, x, step):
        """A curve through x with velocity ``step``/ε at ε = 0 (its second derivatives finite at
        ε = 0, as autograd divergences need): exp_x(step) unless a manifold says otherwise."""
        return self._exp(x, step)

    def _metric_coordinates(self, x, v):
        """(n, c) coordinates of tangent vectors v at x in which g is the dot product (the flattened
        ambient vector for an induced metric)."""
        return v.reshape(v.shape[0], -1)

    # --- sampling and the generator ---------------------------------------------------------
    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> torch.Tensor:
        """``n`` points uniform w.r.t. the Riemannian volume."""
        raise NotImplementedError

    def _forward_process(self):
        """The :class:`Process` of the forward diffusion (compact: b = 0, D = 1, uniform law)."""
        log_volume = math.log(self.volume)

        def zero(x):
            return torch.zeros(x.shape[:1] + tuple(self.ambient_shape), dtype=x.dtype, device=x.device)

        def uniform(x):
            return torch.full((x.shape[0],), -log_volume, dtype=x.dtype, device=x.device)
        return Process(drift=zero, drift_divergence=0.0, diffusion=1.0, log_stationary=uniform)

    def _first_eigenvalue(self):
        """λ_1, the smallest positive eigenvalue of −L (the time scale 1/λ_1 of every default)."""
        lam = self.__dict__.get("_lambda1")
        if lam is None:
            ep = self.eigenpairs(2)
            lam = self.__dict__["_lambda1"] = float(ep.eigenvalues[ep.levels == 1][0])
        return lam

    def _walk_step(self, y, process):
        """The geodesic random walk's step ``(y, score, h, gen, k) -> y_next`` (k: step index),

            y_next = exp_y(h(−b(y) + 2D s) + √(2Dh) ξ),   ξ ~ N(0, I) in T_yM,

        for points shaped like ``y``: here by ``_random_tangent_normal`` and ``_exp`` with b = 0;
        manifolds override it with closed forms where those are cheaper."""
        D = process.diffusion

        def geodesic(y, score, h, gen, k):
            return self._exp(y, self._random_tangent_normal(y, gen).mul_(math.sqrt(2 * D * h))
                             .add_(score, alpha=2 * D * h))
        return geodesic

    def _tangent_noise(self, x, gen):
        """ξ ~ N(0, I) in T_xM for the samplers (``_random_tangent_normal`` unless overridden)."""
        return self._random_tangent_normal(x, gen)

    def _ambient_tangent_noise(self, x, gen):
        """The projection of float32 ambient draws (:func:`standard_normal`): ξ ~ N(0, I) in T_xM
        wherever the projection of an isotropic ambient Gaussian is isotropic (induced metrics)."""
        return self._proj(x, standard_normal(gen, x.shape, device=x.device).to(x.dtype))

    def random_tangent_normal(self, x: ArrayLike, rng: Rng = None) -> torch.Tensor:
        """ξ ~ N(0, I) in T_xM, isotropic in the metric: E[g(ξ, u)²] = g(u, u)."""
        x = self.validate(x, "x")
        gen = as_generator(rng, x.device)
        return self._random_tangent_normal(x, gen)

    def _random_tangent_normal(self, x, gen):
        z = randn(gen, x.shape[:1] + tuple(self.ambient_shape), dtype=x.dtype, device=x.device)
        return self._proj(x, z)

    def drift(self, x: ArrayLike) -> torch.Tensor:
        """Drift b(x) of the generator L = Δ + b·∇ (zero on compact manifolds)."""
        return self._forward_process().drift(self.validate(x, "x"))

    def sample_stationary(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                          device: Device = None) -> torch.Tensor:
        """``n`` draws from the stationary law of the diffusion (uniform on compact manifolds)."""
        return self.random_uniform(n, rng=rng, dtype=dtype, device=device)

    def eigenpairs(self, n_levels: int) -> Eigenpairs:
        """Eigenfunctions of the first ``n_levels`` distinct eigenvalues (whole eigenspaces)."""
        raise NotImplementedError

    #: Levels of the score basis of closed-form OISM when none are given.
    _default_levels = None
    #: The eigenbases ``eigenpairs(n_levels, basis=...)`` offers.
    _bases = ("total",)

    def _product_rule(self, n_levels):
        """(product levels, quadrature resolution) for products of eigenfunctions of the first
        ``n_levels`` levels: the eigenfunctions of ``product levels`` levels span every φ_k that
        ⟨∇φ_m, ∇φ_n⟩ sees, and ``quadrature(resolution)`` integrates φ_k⟨∇φ_m, ∇φ_n⟩ exactly;
        None where products are not band-limited in this sense."""
        return None

    def quadrature(self, n: int) -> Quadrature:
        """(points (N, *point_shape), weights (N,)) float64: a deterministic rule with
        Σ_i w_i f(x_i) ≈ ∫ f dvol (Lebesgue on R^d), weights summing to the volume on compact
        manifolds; ``n`` sets its resolution (each manifold states what it integrates exactly)."""
        raise NotImplementedError(f"no quadrature rule for {self!r}")

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

    def _sample_heat_kernel(self, x0, t, gen):
        """(n, *point_shape) exact draws of X_t given X_0 = x0 (validated), t (n,) > 0."""
        raise NotImplementedError(f"no forward sampler on {self!r}")

    def _exp_random_direction(self, x0, theta, gen):
        """exp_{x0}(θ u) with u uniform on the unit sphere of T_{x0}M: the forward step of an
        isotropic kernel once its geodesic angle θ (n,) is drawn."""
        xi = self._random_tangent_normal(x0, gen)
        norm = torch.sqrt(torch.clamp(self._inner(x0, xi, xi), min=1e-300))
        shape = (-1,) + (1,) * (xi.ndim - 1)
        return self._exp(x0, (theta / norm).reshape(shape) * xi)

    def _log_reference(self, x):
        """(n,) log of the density of the eigenbasis' reference measure w.r.t. dvol at x, or None
        where it is dvol itself (compact manifolds; N(0, scale² I) on R^d)."""
        return None

    def _grad_log_reference(self, x):
        """(n, *ambient) ∇ of ``_log_reference`` (only called where that is not None)."""
        raise NotImplementedError

    def to_geomstats(self) -> GeomstatsManifold:
        """The matching geomstats space (conversions of points go through numpy)."""
        raise NotImplementedError(f"{self!r} has no geomstats counterpart")

    @staticmethod
    def _check_n(n, name="n"):
        return check_positive_int(n, name, minimum=0)

    @staticmethod
    def _check_levels(n_levels):
        return check_positive_int(n_levels, "n_levels", minimum=1)
