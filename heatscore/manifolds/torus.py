"""The flat torus T^d = R^d / 2πZ^d with angle coordinates and its Fourier eigenbasis."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from heatscore._typing import ArrayLike, Device, Quadrature, Rng, ValuesAndGrad
from heatscore._validation import (
    MANIFOLD_ATOL,
    as_float_tensor,
    as_generator,
    check_finite,
    check_positive_int,
    check_shape,
    rand,
    randn,
)
from heatscore.manifolds._base import (Eigenpairs, IndexEmbedding, Manifold, broadcast_rows,
                                      coordinate_walk_increment, levels_from_eigenvalues)
from heatscore.manifolds._lattice import _lattice_ball, _lattice_eigenvalues, _sums_of_squares

if TYPE_CHECKING:
    import numpy as np
    from geomstats.geometry.product_manifold import ProductManifold as GeomstatsProduct

TWO_PI = 2.0 * math.pi


def wrap_angles(x: torch.Tensor) -> torch.Tensor:
    """Angles reduced into [0, 2π) (in the dtype's own 2π), elementwise.

    ``torch.fmod`` is exact, so huge inputs still land in range; a tiny negative remainder whose
    sum with 2π rounds up to 2π (e.g. −1e-17) is mapped to 0, so 2π itself never comes out.
    """
    two_pi = torch.tensor(TWO_PI, dtype=x.dtype, device=x.device)
    r = torch.fmod(x, two_pi)
    r = torch.where(r < 0, r + two_pi, r)
    return torch.where(r >= two_pi, torch.zeros_like(r), r)


class TorusEigenpairs(Eigenpairs):
    """Real Fourier basis of T^d: Δφ = −|k|² φ, orthonormal in L²(dvol), vol = (2π)^d.

    Functions: the constant (2π)^{−d/2}, then for every k in the half-lattice (k ≠ 0 whose first
    nonzero coordinate is positive) cos(k·x)·√2(2π)^{−d/2} and sin(k·x)·√2(2π)^{−d/2}.
    Order: by |k|² (the level), within a level by k in increasing lexicographic order, cos
    before sin for each k. A level's multiplicity is the number of k ∈ Z^d with that |k|².

    Attributes (besides the base ones): ``wave_vectors`` (K, d) int64, the k of each
    function (zero for the constant); ``is_sine`` (K,) bool.
    """

    def __init__(self, manifold: Torus, wave_vectors: torch.Tensor, is_sine: torch.Tensor) -> None:
        eigenvalues = (wave_vectors ** 2).sum(dim=1).to(torch.float64)
        levels, multiplicities = levels_from_eigenvalues(eigenvalues)
        super().__init__(manifold, eigenvalues, levels, multiplicities)
        self.wave_vectors = wave_vectors
        self.is_sine = is_sine
        d = manifold.dim
        self._norm = math.sqrt(2.0) * TWO_PI ** (-d / 2.0)
        self._const = TWO_PI ** (-d / 2.0)

    def _phases(self, x):
        """(n, M) phases k·x over the half-lattice (the cos/sin pairs)."""
        k = self.wave_vectors[1::2].to(dtype=x.dtype, device=x.device)
        return x @ k.T

    def _values(self, x):
        return self._from_phases(x, self._phases(x), want_grad=False)[0]

    def _grad(self, x):
        """(n, K, d): ∇cos(k·x) = −sin(k·x) k, ∇sin(k·x) = cos(k·x) k."""
        return self._from_phases(x, self._phases(x))[1]

    def values_and_grad(self, x: ArrayLike) -> ValuesAndGrad:
        """``(ep(x), ep.grad(x))`` from one evaluation of the phases."""
        x = self.manifold.validate(x, "x")
        return self._from_phases(x, self._phases(x))

    def _from_phases(self, x, phase, want_grad=True):
        n = x.shape[0]
        cos, sin = torch.cos(phase), torch.sin(phase)
        const = torch.full((n, 1), self._const, dtype=x.dtype, device=x.device)
        values = torch.cat([const, self._norm * torch.stack([cos, sin], dim=-1).reshape(n, -1)], dim=1)
        if not want_grad:
            return values, None
        coeff = torch.cat([torch.zeros_like(const),
                           self._norm * torch.stack([-sin, cos], dim=-1).reshape(n, -1)], dim=1)
        k = self.wave_vectors.to(dtype=x.dtype, device=x.device)
        return values, coeff.unsqueeze(-1) * k.unsqueeze(0)


class _PeriodicEmbedding(IndexEmbedding):
    """The angles in [0, 2π)^d with a periodic k-d tree: the embedded distance is the geodesic one."""

    boxsize = TWO_PI

    def flat(self):
        return _CircleEmbedding()


class _CircleEmbedding(IndexEmbedding):
    """(cos θ_i, sin θ_i) per angle: per coordinate the chord 2 sin(δ_i/2), between (2/π)δ_i and
    δ_i (δ_i ∈ [0, π] the wrapped difference), so the chord is between (2/π) r and r."""

    extent = math.sqrt(2)

    def data(self, Y):
        return self.query(Y, 0.0)

    def query(self, X, tau):
        x = X.detach().cpu()
        return torch.cat([torch.cos(x), torch.sin(x)], dim=1).numpy()

    def chord_bounds(self, tau):
        return 2 / math.pi, 1.0

    def to_chord(self, r, tau):
        return r

    def from_chord(self, c, tau):
        return c / self.chord_bounds(tau)[0]


class Torus(Manifold):
    """The flat torus T^d = R^d / 2πZ^d: points are angles ``(n, d)``.

    Any finite real is a valid coordinate; every output point is wrapped into [0, 2π).
    Flat metric, volume (2π)^d, exp_x(v) = wrap(x + v), log_x(y) = the difference y − x
    wrapped into (−π, π], Brownian motion (zero drift), uniform stationary law.
    """

    _deviation_name = "deviation (always 0: every finite angle is valid)"

    def __init__(self, d: int) -> None:
        self.d = check_positive_int(d, "d", minimum=1)
        self.dim = self.d
        self.point_shape = (self.d,)
        self.ambient_shape = (self.d,)
        self.volume = TWO_PI ** self.d

    def __repr__(self) -> str:
        return f"Torus({self.d})"

    def _key(self):
        return (self.d,)

    def _spec(self):
        return {"kind": "Torus", "dim": self.d}, {}

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        return cls(spec["dim"])

    def _features(self, x):
        """(cos x, sin x): continuous across the wrap."""
        return torch.cat([torch.cos(x), torch.sin(x)], dim=1)

    @property
    def _n_features(self):
        return 2 * self.d

    cli_name = "torus"

    @property
    def plot_view(self) -> Optional[str]:
        return "torus" if self.d == 2 else None

    def _column_names(self):
        return tuple(f"theta{i + 1}" for i in range(self.d))

    # --- geometry ---------------------------------------------------------------------------
    def _off_manifold(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def _wrap(self, x):
        return wrap_angles(x)

    def _safe_point(self, x):
        return torch.zeros_like(x)

    def _proj(self, x, v):
        return v

    def _exp(self, x, v):
        return wrap_angles(x + v)

    def _log(self, x, y):
        half_turn = torch.tensor(math.pi, dtype=x.dtype, device=x.device)
        return half_turn - wrap_angles(half_turn - (y - x))

    def _dist(self, x, y):
        return torch.linalg.vector_norm(self._log(x, y), dim=1)

    # --- sampling ---------------------------------------------------------------------------
    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> torch.Tensor:
        """``n`` angles uniform on [0, 2π)^d: shape (n, d)."""
        n = self._check_n(n)
        gen = as_generator(rng, device)
        return wrap_angles(TWO_PI * rand(gen, (n, self.d), dtype=dtype, device=device))

    # --- spectrum ---------------------------------------------------------------------------
    def eigenpairs(self, n_levels: int) -> TorusEigenpairs:
        """Fourier eigenpairs of the first ``n_levels`` distinct values of |k|² (whole eigenspaces).

        Level j is the j-th distinct value of |k|², k ∈ Z^d (not every integer is a sum of d
        squares: for d = 1 the levels are 0, 1, 4, 9, …). See :class:`TorusEigenpairs` for the
        basis and its order.
        """
        n_levels = self._check_levels(n_levels)
        lam_max = _lattice_eigenvalues(self.d, n_levels)[-1]
        ball = _lattice_ball(self.d, lam_max)
        nonzero = ball != 0
        first = torch.argmax(nonzero.long(), dim=1)
        lead = ball.gather(1, first.unsqueeze(1)).squeeze(1)
        half = ball[nonzero.any(dim=1) & (lead > 0)]
        order = torch.sort((half ** 2).sum(dim=1), stable=True).indices
        half = half[order]
        wave_vectors = torch.cat([torch.zeros((1, self.d), dtype=torch.long),
                                  half.repeat_interleave(2, dim=0)], dim=0)
        is_sine = torch.zeros(wave_vectors.shape[0], dtype=torch.bool)
        is_sine[2::2] = True
        return TorusEigenpairs(self, wave_vectors, is_sine)

    def _index_embedding(self):
        return _PeriodicEmbedding()

    def _walk_step(self, y, process):
        """wrap(y + 2Dh s + √(2Dh) ξ)."""
        increment = coordinate_walk_increment(y, process.diffusion)

        def step(y, score, h, gen, k):
            return wrap_angles(increment(y, score, h, gen).add_(y))
        return step

    def _tangent_noise(self, x, gen):
        return self._ambient_tangent_noise(x, gen)

    def _tangent_frame(self, x):
        eye = torch.eye(self.d, dtype=x.dtype, device=x.device)
        return eye.expand(x.shape[0], self.d, self.d)

    def _sample_heat_kernel(self, x0, t, gen):
        """x0 + √(2t) N(0, I), wrapped."""
        z = randn(gen, x0.shape, dtype=x0.dtype, device=x0.device)
        return wrap_angles(x0 + torch.sqrt(2 * t).reshape(-1, 1) * z)

    _default_levels = 20

    def _product_rule(self, n_levels):
        """Fourier products e^{i(k ± k')x} have |k ± k'|² ≤ 4λ_max: the levels up to 4λ_max; the
        grid with 4√λ_max + 2 points per axis is exact for the per-axis degrees ≤ 4√λ_max."""
        lam_max = _lattice_eigenvalues(self.d, n_levels)[-1]
        n_product = int(torch.count_nonzero(_sums_of_squares(self.d, 4 * lam_max)))
        return n_product, 4 * math.isqrt(lam_max) + 2

    def quadrature(self, n: int) -> Quadrature:
        """The uniform grid of n^d points, exact for trigonometric polynomials of degree < n."""
        n = check_positive_int(n, "n")
        g = torch.arange(n, dtype=torch.float64) * (TWO_PI / n)
        pts = torch.cartesian_prod(*([g] * self.d)).reshape(-1, self.d)
        return pts, torch.full((pts.shape[0],), (TWO_PI / n) ** self.d, dtype=torch.float64)

    def _make_heat_backend(self):
        from heatscore.manifolds._heat_backends import TorusBackend
        return TorusBackend(self)

    # --- geomstats --------------------------------------------------------------------------
    def to_geomstats(self) -> GeomstatsProduct:
        """geomstats ProductManifold of ``d`` circles Hypersphere(1) (extrinsic): points (n, d, 2).

        Convert points with :meth:`to_geomstats_points` / :meth:`from_geomstats_points` and
        tangent vectors with :meth:`to_geomstats_tangent` / :meth:`from_geomstats_tangent`.
        """
        from geomstats.geometry.hypersphere import Hypersphere
        from geomstats.geometry.product_manifold import ProductManifold
        return ProductManifold([Hypersphere(1) for _ in range(self.d)])

    def to_geomstats_points(self, x: ArrayLike) -> np.ndarray:
        """numpy (n, d, 2): angle θ ↦ (cos θ, sin θ) on each circle."""
        x = self.validate(x, "x")
        return torch.stack([torch.cos(x), torch.sin(x)], dim=-1).detach().cpu().numpy()

    def from_geomstats_points(self, p: ArrayLike) -> torch.Tensor:
        """Angles (n, d) in [0, 2π) of geomstats points (n, d, 2) on the product of unit circles."""
        p = self._check_circle_points(p, "p")
        return wrap_angles(torch.atan2(p[..., 1], p[..., 0]))

    def to_geomstats_tangent(self, x: ArrayLike, v: ArrayLike) -> np.ndarray:
        """numpy (n, d, 2): the velocity v_i at angle θ_i is v_i·(−sin θ_i, cos θ_i)."""
        x = self.validate(x, "x")
        v = self.validate_tangent(x, v, "v")
        x, v = broadcast_rows(x, v, "x", "v")
        return (v.unsqueeze(-1) * torch.stack([-torch.sin(x), torch.cos(x)], dim=-1)).detach().cpu().numpy()

    def from_geomstats_tangent(self, p: ArrayLike, w: ArrayLike) -> torch.Tensor:
        """Velocities (n, d) of geomstats tangent vectors ``w`` (n, d, 2) at points ``p``.

        Each circle's velocity is w_i·(−sin θ_i, cos θ_i) (the tangential component).
        """
        p = self._check_circle_points(p, "p")
        w = as_float_tensor(w, "w", dtype=p.dtype, device=p.device)
        check_shape(w, "w", (self.d, 2), what="tangent vectors")
        check_finite(w, "w")
        p, w = broadcast_rows(p, w, "p", "w")
        return -w[..., 0] * p[..., 1] + w[..., 1] * p[..., 0]

    def _check_circle_points(self, p, name):
        p = as_float_tensor(p, name)
        check_shape(p, name, (self.d, 2))
        check_finite(p, name)
        if p.shape[0]:
            dev = (torch.linalg.vector_norm(p, dim=-1) - 1.0).abs().amax(dim=1)
            tol = MANIFOLD_ATOL.get(p.dtype, 1e-6)
            bad = dev > tol
            if bool(bad.any()):
                raise ValueError(
                    f"{name} has {int(bad.sum())} of {p.shape[0]} points off the product of unit "
                    f"circles: max | |p_i| - 1 | = {float(dev.max()):.2e} (tolerance {tol:g})")
        return p


__all__ = ["Torus", "TorusEigenpairs", "wrap_angles"]
