"""R^d with the Ornstein–Uhlenbeck generator and its Hermite eigenbasis.

With ``scale`` s the OU conventions hold for u = x/s: du = −u dt + √2 dB, stationary law
γ = N(0, I) on u. In the original coordinates dx = −x dt + √2·s dB, so

    L f(x) = s² Δf(x) − x·∇f(x),        drift b(x) = −x,        stationary law N(0, s² I),

and the eigenfunctions φ_α(x/s) keep their eigenvalues |α| (Δ_x = s⁻²Δ_u, x·∇_x = u·∇_u).
For s = 1 this is DESIGN's L = Δ − x·∇. The metric is the flat one on x whatever s is.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Literal, NoReturn, Tuple

import numpy as np
import torch

from heatscore._typing import ArrayLike, Device, Quadrature, Rng, ValuesAndGrad
from heatscore._validation import as_generator, check_positive_int, randn
from heatscore.manifolds._base import (Eigenpairs, IndexEmbedding, Manifold, Process,
                                      coordinate_walk_increment, levels_from_eigenvalues, rowdot)

if TYPE_CHECKING:
    from geomstats.geometry.euclidean import Euclidean as GeomstatsEuclidean

BASES = ("total", "separable")


def normalised_hermite(u: torch.Tensor, max_degree: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """(…, max_degree + 1) values h_j(u) = He_j(u)/√(j!) and derivatives h_j'(u) = √j h_{j−1}(u).

    Probabilists' Hermite polynomials, orthonormal in L²(N(0, 1)), by the normalised three-term
    recurrence h_{j+1} = (u h_j − √j h_{j−1}) / √(j + 1) (no factorials, no overflow).
    """
    values = [torch.ones_like(u)]
    if max_degree >= 1:
        values.append(u.clone())
    for j in range(1, max_degree):
        values.append((u * values[j] - math.sqrt(j) * values[j - 1]) / math.sqrt(j + 1))
    h = torch.stack(values, dim=-1)
    sqrt_j = torch.sqrt(torch.arange(max_degree + 1, dtype=u.dtype, device=u.device))
    dh = torch.zeros_like(h)
    dh[..., 1:] = sqrt_j[1:] * h[..., :-1]
    return h, dh


def _multi_indices(d, max_degree):
    """(K, d) int64: every α ∈ N^d with |α| ≤ max_degree.

    Ordered by total degree, then descending lexicographic within a degree (for d = 2, degree 2:
    (2, 0), (1, 1), (0, 2)). Built one coordinate at a time, keeping only
    prefixes whose partial degree fits.
    """
    coords = torch.arange(max_degree, -1, -1, dtype=torch.long)
    points = torch.zeros((1, 0), dtype=torch.long)
    partial = torch.zeros(1, dtype=torch.long)
    for _ in range(d):
        m = points.shape[0]
        new_partial = (partial.unsqueeze(1) + coords.unsqueeze(0)).reshape(-1)
        keep = new_partial <= max_degree
        prefix = points.repeat_interleave(coords.numel(), dim=0)
        points = torch.cat([prefix, coords.repeat(m).unsqueeze(1)], dim=1)[keep]
        partial = new_partial[keep]
    order = torch.sort(partial, stable=True).indices
    return points[order]


class HermiteEigenpairs(Eigenpairs):
    """Normalised Hermite products φ_α(x) = Π_i He_{α_i}(x_i/s)/√(α_i!), L φ_α = −|α| φ_α.

    Orthonormal in L²(N(0, s² I)). ``multi_indices`` (K, d) int64 holds α of each function;
    ``basis`` is "total" (every α with |α| < n_levels: level k = total degree k, whole
    eigenspaces of multiplicity C(k + d − 1, d − 1), order by degree then descending
    lexicographic α) or "separable" (the constant, then He_j(x_i/s)/√(j!) for j = 1 … n_levels − 1
    and i = 1 … d, degree-major: level j = degree j with multiplicity d; only the
    one-coordinate part of each eigenspace beyond degree 1, so not whole eigenspaces).
    """

    def __init__(self, manifold: Euclidean, multi_indices: torch.Tensor, basis: str) -> None:
        eigenvalues = multi_indices.sum(dim=1).to(torch.float64)
        levels, multiplicities = levels_from_eigenvalues(eigenvalues)
        super().__init__(manifold, eigenvalues, levels, multiplicities)
        self.multi_indices = multi_indices
        self.basis = basis
        self._max_degree = int(multi_indices.max()) if multi_indices.numel() else 0

    def _hermite(self, x):
        return normalised_hermite(x / self.manifold.scale, self._max_degree)

    def _values(self, x):
        h, _ = self._hermite(x)
        return self._from_hermite(h, None)[0]

    def _grad(self, x):
        h, dh = self._hermite(x)
        return self._from_hermite(h, dh)[1]

    def values_and_grad(self, x: ArrayLike) -> ValuesAndGrad:
        """``(ep(x), ep.grad(x))`` from one Hermite evaluation."""
        x = self.manifold.validate(x, "x")
        h, dh = self._hermite(x)
        return self._from_hermite(h, dh)

    def _from_hermite(self, h, dh):
        """Values (n, K) and, if ``dh`` is given, gradients (n, K, d) from per-coordinate h, h'."""
        n, d = h.shape[0], h.shape[1]
        s = self.manifold.scale
        if self.basis == "separable":
            ones = torch.ones((n, 1), dtype=h.dtype, device=h.device)
            values = torch.cat([ones, h[:, :, 1:].transpose(1, 2).reshape(n, -1)], dim=1)
            if dh is None:
                return values, None
            deriv = dh[:, :, 1:].transpose(1, 2).reshape(n, -1) / s
            coord = torch.arange(d, device=h.device).repeat(self._max_degree)
            grad = torch.zeros((n, values.shape[1], d), dtype=h.dtype, device=h.device)
            grad[:, 1 + torch.arange(deriv.shape[1], device=h.device), coord] = deriv
            return values, grad
        alpha = self.multi_indices.to(h.device)
        # factors[n, K, i] = h_{α_i}(u_i)
        index = alpha.T.unsqueeze(0).expand(n, d, alpha.shape[0])
        factors = h.gather(2, index).transpose(1, 2)
        values = factors.prod(dim=2)
        if dh is None:
            return values, None
        dfactors = dh.gather(2, index).transpose(1, 2) / s
        # ∂_i φ_α = h'_{α_i}(u_i)/s · Π_{j≠i} h_{α_j}(u_j), via prefix and suffix products
        ones = torch.ones_like(factors[..., :1])
        before = torch.cumprod(torch.cat([ones, factors[..., :-1]], dim=2), dim=2)
        shifted = torch.flip(torch.cat([factors[..., 1:], ones], dim=2), [2])
        after = torch.flip(torch.cumprod(shifted, dim=2), [2])
        return values, dfactors * before * after


class _OUEmbedding(IndexEmbedding):
    """u = y/s for the data, e^τ x/s for queries: the kernel N(x; e^{−τ}y, s²(1 − e^{−2τ}) I)
    depends on r = |x − e^{−τ}y|/s, and the chord is e^τ r (the kernel falls at least as fast as
    the flat bound e^{−r²/4τ}, since 1 − e^{−2τ} ≤ 2τ)."""

    def __init__(self, scale):
        self.scale = scale

    def data(self, Y):
        return Y.detach().cpu().numpy() / self.scale

    def query(self, X, tau):
        return X.detach().cpu().numpy() * (math.exp(tau) / self.scale)

    def to_chord(self, r, tau):
        return r * math.exp(tau)

    def from_chord(self, c, tau):
        return c * math.exp(-tau)

    def chord_bounds(self, tau):
        return math.exp(tau), math.exp(tau)


class Euclidean(Manifold):
    """R^d with the Ornstein–Uhlenbeck generator L = s²Δ − x·∇ (see the module docstring).

    Points ``(n, d)``, any finite values; flat metric; volume inf (``random_uniform`` raises);
    drift b(x) = −x; stationary law N(0, s² I); eigenpairs are Hermite products in x/s.
    """

    _deviation_name = "off-manifold deviation"
    volume = math.inf

    def __init__(self, d: int, scale: float = 1.0) -> None:
        self.d = check_positive_int(d, "d", minimum=1)
        if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
            raise TypeError(f"scale must be a real number, found {scale!r} ({type(scale).__name__})")
        scale = float(scale)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be finite and > 0, found {scale}")
        self.scale = scale
        self.dim = self.d
        self.point_shape = (self.d,)
        self.ambient_shape = (self.d,)

    def __repr__(self) -> str:
        return f"Euclidean({self.d})" if self.scale == 1.0 else f"Euclidean({self.d}, scale={self.scale!r})"

    def _key(self):
        return (self.d, self.scale)

    def _spec(self):
        return {"kind": "Euclidean", "dim": self.d, "scale": self.scale}, {}

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        return cls(spec["dim"], scale=spec["scale"])

    def _features(self, x):
        """x/s (O(1) under the stationary law)."""
        return x / self.scale

    # --- geometry ---------------------------------------------------------------------------
    def _off_manifold(self, x):
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def _safe_point(self, x):
        return torch.zeros_like(x)

    def _proj(self, x, v):
        return v

    def _exp(self, x, v):
        return x + v

    def _log(self, x, y):
        return y - x

    def _dist(self, x, y):
        return torch.linalg.vector_norm(y - x, dim=1)

    # --- sampling and the generator ---------------------------------------------------------
    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> NoReturn:
        """Not defined: R^d has infinite volume. Use :meth:`sample_stationary`."""
        raise NotImplementedError(f"{self!r} has infinite volume: there is no uniform distribution; "
                                  "use sample_stationary for the stationary law N(0, scale² I)")

    def _forward_process(self):
        """b(x) = −x, D = s² (dx = −x dt + √2·s dB), stationary N(0, s² I)."""
        return Process(drift=torch.neg, drift_divergence=-float(self.d), diffusion=self.scale ** 2,
                       log_stationary=self._log_reference)

    def _first_eigenvalue(self):
        return 1.0

    def _walk_step(self, y, process):
        """(1 + h) y + 2Dh s + √(2Dh) ξ: the walk with −b(y) = y and exp_y(v) = y + v."""
        increment = coordinate_walk_increment(y, process.diffusion)

        def step(y, score, h, gen, k):
            return increment(y, score, h, gen).add_(y, alpha=1 + h)
        return step

    def _tangent_noise(self, x, gen):
        return self._ambient_tangent_noise(x, gen)

    def _tangent_frame(self, x):
        eye = torch.eye(self.d, dtype=x.dtype, device=x.device)
        return eye.expand(x.shape[0], self.d, self.d)

    def sample_stationary(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                          device: Device = None) -> torch.Tensor:
        """``n`` draws from N(0, s² I): shape (n, d)."""
        n = self._check_n(n)
        gen = as_generator(rng, device)
        return self.scale * randn(gen, (n, self.d), dtype=dtype, device=device)

    # --- spectrum ---------------------------------------------------------------------------
    def eigenpairs(self, n_levels: int,
                   basis: Literal["total", "separable"] = "total") -> HermiteEigenpairs:
        """Hermite eigenpairs, L φ_α = −|α| φ_α, orthonormal in L²(N(0, s² I)).

        ``basis="total"``: every α with total degree |α| < n_levels (whole eigenspaces,
        C(n_levels − 1 + d, d) functions). ``basis="separable"``: the constant and
        He_j(x_i/s)/√(j!) for 1 ≤ j < n_levels (n_levels = maximum per-coordinate degree + 1;
        1 + d(n_levels − 1) functions, linear in d; not whole eigenspaces beyond degree 1).
        See :class:`HermiteEigenpairs` for the order.
        """
        if not isinstance(basis, str) or basis not in BASES:
            raise ValueError(f"basis must be one of {BASES}, found {basis!r}")
        n_levels = self._check_levels(n_levels)
        max_degree = n_levels - 1
        if basis == "total":
            alpha = _multi_indices(self.d, max_degree)
        else:
            degrees = torch.arange(1, n_levels, dtype=torch.long).repeat_interleave(self.d)
            coords = torch.arange(self.d).repeat(max_degree)
            alpha = torch.zeros((1 + degrees.numel(), self.d), dtype=torch.long)
            alpha[1 + torch.arange(degrees.numel()), coords] = degrees
        return HermiteEigenpairs(self, alpha, basis)

    def _index_embedding(self):
        return _OUEmbedding(self.scale)

    def _sample_heat_kernel(self, x0, t, gen):
        """e^{−t} x0 + s √(1 − e^{−2t}) N(0, I)."""
        z = randn(gen, x0.shape, dtype=x0.dtype, device=x0.device)
        tc = t.reshape(-1, 1)
        return torch.exp(-tc) * x0 + self.scale * torch.sqrt(-torch.expm1(-2 * tc)) * z

    _default_levels = 6
    _bases = BASES

    def _product_rule(self, n_levels):
        """∇φ_m·∇φ_n has degree ≤ 2L − 4: 2L − 3 levels; Gauss–Hermite with 2L − 2 nodes per
        axis is exact to degree 4L − 5."""
        return max(2 * n_levels - 3, 1), max(2 * n_levels - 2, 1)

    def quadrature(self, n: int) -> Quadrature:
        """Tensor Gauss–Hermite (probabilists') with n nodes per axis, weights divided by the
        reference density: Σ w f = ∫ f dx exactly for f = N(0, s² I) × a polynomial of degree
        ≤ 2n − 1 per axis."""
        n = check_positive_int(n, "n")
        x, wx = np.polynomial.hermite_e.hermegauss(n)
        s, d = self.scale, self.d
        grids = np.meshgrid(*([x] * d), indexing="ij")
        pts = np.stack([a.ravel() for a in grids], axis=1)
        wgrid = np.meshgrid(*([wx] * d), indexing="ij")
        w = np.prod(np.stack([a.ravel() for a in wgrid], axis=1), axis=1)
        # hermegauss integrates against e^{−u²/2}: divide it out, then change variables x = s u.
        w = w * np.exp(0.5 * (pts**2).sum(axis=1)) * s**d
        return torch.as_tensor(pts * s), torch.as_tensor(w)

    def _make_heat_backend(self):
        from heatscore.manifolds._heat_backends import OUBackend
        return OUBackend(self)

    def _log_reference(self, x):
        """log N(x; 0, s² I): the Hermite functions are orthonormal in L²(N(0, s² I))."""
        s2 = self.scale ** 2
        return -0.5 * rowdot(x, x) / s2 - 0.5 * self.d * math.log(2 * math.pi * s2)

    def _grad_log_reference(self, x):
        return -x / self.scale ** 2

    # --- geomstats --------------------------------------------------------------------------
    def to_geomstats(self) -> GeomstatsEuclidean:
        """geomstats Euclidean(d) (flat; ``scale`` is a property of the generator, not the metric)."""
        from geomstats.geometry.euclidean import Euclidean as GeomstatsEuclidean
        return GeomstatsEuclidean(self.d)

    def to_geomstats_points(self, x: ArrayLike) -> np.ndarray:
        """numpy (n, d): points (and tangent vectors) are the same arrays in geomstats."""
        return self.validate(x, "x").detach().cpu().numpy()

    def from_geomstats_points(self, p: ArrayLike) -> torch.Tensor:
        """Tensor (n, d) of geomstats points."""
        return self.validate(p, "p")


__all__ = ["Euclidean", "HermiteEigenpairs", "normalised_hermite"]
