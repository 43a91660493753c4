"""The unit sphere S^d ⊂ R^{d+1} with the induced metric, and real spherical harmonics on S².

Points are unit vectors ``(n, d+1)``; tangent vectors at x are ambient vectors ``(n, d+1)``
orthogonal to x. Points accepted by the validators may be off the sphere by the tolerance of
DESIGN.md (1e-6 in float64); the geometry uses their directions x/|x|.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Optional, Union

import numpy as np
import torch

from heatscore._typing import ArrayLike, Device, Quadrature, Rng, ValuesAndGrad
from heatscore._validation import as_generator, check_positive_int, randn
from heatscore.manifolds._base import Eigenpairs, IndexEmbedding, Manifold, rowdot, rows_per_chunk
from heatscore.manifolds._hyperspherical import (HypersphericalHarmonics, _sphere_volume, _unit,
                                                 sphere_d_quadrature)

if TYPE_CHECKING:
    from geomstats.geometry.hypersphere import Hypersphere


def _tangent_part(x, v):
    """v − (x·v) x for unit ``x``: the component of ``v`` orthogonal to ``x``."""
    return torch.addcmul(v, x, rowdot(x, v).unsqueeze(-1), value=-1.0)


def exp_unit(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """exp_x(v) = cos r x + (sin r / r) w for unit rows ``x``, w = v − d x, d = x·v, r = |w|.

    Evaluated as a x + b v with b = sin r / r, a = cos r − b d and r² = |v|² − d²: per-row
    scalars and four full-width operations, no tangent vector formed (cos r and sin r / r depend
    smoothly on r², so the cancellation in |v|² − d² costs only an absolute ε|v|² in r²).
    r = √max(r², tiny): sin r / r is exactly 1 there and the gradient stays finite at r = 0.
    """
    d = rowdot(x, v)
    r = torch.addcmul(rowdot(v, v), d, d, value=-1.0).clamp_min(torch.finfo(d.dtype).tiny).sqrt_()
    b = torch.sin(r).div_(r)
    a = torch.cos(r).addcmul_(b, d, value=-1.0)
    return torch.addcmul(x * a.unsqueeze(-1), v, b.unsqueeze(-1))


class _ChordEmbedding(IndexEmbedding):
    """The unit vectors themselves: chord c = 2 sin(θ/2)."""

    extent = 1.0
    radial_chord = True

    def __init__(self, dim):
        self.unit_sphere = dim == 2

    def to_chord(self, r, tau):
        return 2 * np.sin(np.minimum(r, math.pi) / 2)

    def from_chord(self, c, tau):
        return 2 * np.arcsin(np.minimum(c / 2, 1.0))

    def chord_bounds(self, tau):
        """2 sin(θ/2) between (2/π)θ and θ on [0, π]."""
        return 2 / math.pi, 1.0


class Sphere(Manifold):
    """The unit sphere S^d = {x ∈ R^{d+1}: |x| = 1} (default d = 2), induced metric.

    Volume 2π^{(d+1)/2}/Γ((d+1)/2) (4π on S²). Geodesic distance θ(x, y) =
    2·atan2(|y − x|, |y + x|), accurate for tiny angles and near the antipode. ``exp`` uses the
    tangent part of ``v`` (its component along x is dropped, as in geomstats). ``log`` at the
    exact antipode y = −x (where every direction is a minimising geodesic) returns π·u with u the
    unit tangent obtained by projecting the coordinate axis e_i, i = argmin_i |x_i| (the first
    such i on ties); e.g. log_{e_z}(−e_z) = π e_x. Eigenpairs, heat kernels and forward sampling
    for every d ≥ 2 (``eigenpairs``).
    """

    _deviation_name = "| |x| - 1 |"

    def __init__(self, dim: int = 2) -> None:
        self.dim = check_positive_int(dim, "dim", minimum=1)
        self.point_shape = (self.dim + 1,)
        self.ambient_shape = (self.dim + 1,)
        self.volume = _sphere_volume(self.dim)

    def __repr__(self) -> str:
        return f"Sphere({self.dim})"

    def _key(self):
        return (self.dim,)

    def _spec(self):
        return {"kind": "Sphere", "dim": self.dim}, {}

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        return cls(spec["dim"])

    def _features(self, x):
        """The unit vector x/|x|."""
        return _unit(x)

    cli_name = "sphere"

    @property
    def plot_view(self) -> Optional[str]:
        return "sphere" if self.dim == 2 else None

    def _column_names(self):
        return ("x", "y", "z") if self.dim == 2 else super()._column_names()

    # --- geometry on validated, broadcast rows ---------------------------------------------
    def _off_manifold(self, x):
        return (torch.linalg.vector_norm(x, dim=-1) - 1.0).abs()

    def _proj(self, x, v):
        """v − ((x·v)/(x·x)) x: the tangent part of ``v`` at the direction of ``x``."""
        return torch.addcmul(v, x, rowdot(x, v).div_(rowdot(x, x)).unsqueeze(-1), value=-1.0)

    def _exp(self, x, v):
        """exp_x(v) = cos|w| x + sin|w| w/|w| on the tangent part w of ``v`` (see :func:`exp_unit`)."""
        return exp_unit(_unit(x), v)

    def _log(self, x, y):
        """log_x(y) = θ w/|w|, w = y − (x·y)x, θ = dist(x, y); 0 at y = x; the rule above at y = −x.

        w is taken as the tangent part of y − x when x·y ≥ 0 and of y + x otherwise (equal
        mathematically, but each free of cancellation where it is used).
        """
        x, y = _unit(x), _unit(y)
        diff, summ = y - x, y + x
        nd = torch.linalg.vector_norm(diff, dim=-1, keepdim=True)
        ns = torch.linalg.vector_norm(summ, dim=-1, keepdim=True)
        theta = 2.0 * torch.atan2(nd, ns)
        w = _tangent_part(x, torch.where(nd <= ns, diff, summ))
        nw = torch.linalg.vector_norm(w, dim=-1, keepdim=True)
        degenerate = nw == 0
        # At the antipode, project the coordinate axis where |x_i| is smallest.
        axis = torch.nn.functional.one_hot(x.abs().argmin(dim=-1), x.shape[-1]).to(x.dtype)
        fallback = _tangent_part(x, axis)
        fallback = fallback / torch.linalg.vector_norm(fallback, dim=-1, keepdim=True)
        antipodal = degenerate & (nd > ns)
        direction = torch.where(antipodal, fallback, w / torch.where(degenerate, 1.0, nw))
        return theta * direction

    def _dist(self, x, y):
        x, y = _unit(x), _unit(y)
        return 2.0 * torch.atan2(torch.linalg.vector_norm(y - x, dim=-1),
                                 torch.linalg.vector_norm(y + x, dim=-1))

    # --- sampling ---------------------------------------------------------------------------
    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> torch.Tensor:
        """``n`` points uniform w.r.t. area: normalised standard Gaussian vectors, ``(n, d+1)``."""
        n = self._check_n(n)
        gen = as_generator(rng, device)
        z = randn(gen, (n, self.dim + 1), dtype=dtype, device=device)
        return _unit(z)

    # --- spectrum and interop ---------------------------------------------------------------
    def eigenpairs(self, n_levels: int) -> Union[SphericalHarmonics, HypersphericalHarmonics]:
        """Real spherical harmonics of degrees l = 0 … n_levels − 1, λ = l(l+d−1): on S² the
        sphericart ones (:class:`SphericalHarmonics`, 2l+1 per level), on S^d, d ≥ 3, the
        hyperspherical harmonics (:class:`heatscore.manifolds._hyperspherical.HypersphericalHarmonics`,
        C(l+d, d) − C(l+d−2, d) per level)."""
        n_levels = self._check_levels(n_levels)
        if self.dim == 2:
            return SphericalHarmonics(self, n_levels)
        return HypersphericalHarmonics(self, n_levels)

    def _tangent_frame(self, x):
        """The columns of the Householder reflection H = I − 2wwᵀ/|w|², w = u + sign(u_k)e_k,
        k = argmax |u_k| (u = x/|x|), other than column k (H is orthogonal, H e_k = −sign(u_k) u)."""
        n = x.shape[0]
        u = _unit(x)
        k = u.abs().argmax(dim=1)
        e_k = torch.nn.functional.one_hot(k, u.shape[1]).to(u.dtype)
        sign = torch.where(u.gather(1, k[:, None]) >= 0, 1.0, -1.0).to(u.dtype)
        w = u + sign * e_k
        H = torch.eye(u.shape[1], dtype=u.dtype, device=u.device) - 2 * (
            w[:, :, None] * w[:, None, :]) / (w * w).sum(dim=1)[:, None, None]
        keep = ~e_k.bool()                                   # drop column k of each H
        return H.transpose(1, 2)[keep].reshape(n, self.dim, u.shape[1])

    def _smooth_curve(self, x, step):
        """(x + step)/|x + step|: the normalised chord, twice differentiable at step = 0 (exp's
        |step| is not)."""
        y = x + step
        return y / torch.linalg.vector_norm(y, dim=1, keepdim=True)

    def _walk_step(self, y, process):
        """:class:`heatscore.manifolds._sphere_walk._SphereStep`: the step in closed form, ξ drawn
        in the ambient space (exp_y keeps only its tangent part, isotropic in T_yM)."""
        from heatscore.manifolds._sphere_walk import _SphereStep
        return _SphereStep(y, process.diffusion)

    def _tangent_noise(self, x, gen):
        return self._ambient_tangent_noise(x, gen)

    def _index_embedding(self):
        return _ChordEmbedding(self.dim)

    @property
    def _default_levels(self):
        """16 levels on S² (256 harmonics); on S^d the most levels with at most 1000 harmonics."""
        levels = 1
        while levels < 16 and len(self.eigenpairs(levels + 1)) <= 1000:
            levels += 1
        return levels

    def _product_rule(self, n_levels):
        """Products of degree ≤ L − 1 harmonics have degree ≤ 2(L − 1): 2L − 1 levels; the rule
        with 2L nodes is exact to degree 4L − 1."""
        return 2 * n_levels - 1, 2 * n_levels

    def quadrature(self, n: int) -> Quadrature:
        """Exact for polynomials of degree ≤ 2n − 1 (harmonics included): on S² Gauss–Legendre in
        cos θ (n nodes) × trapezoid in φ (2n nodes); on S^d the product rule of
        :func:`heatscore.manifolds._hyperspherical.sphere_d_quadrature` (2n·n^{d−1} nodes)."""
        return sphere_d_quadrature(self.dim, check_positive_int(n, "n"))

    def _make_heat_backend(self):
        from heatscore.manifolds._heat_backends import SphereBackend, SphereDBackend

        return SphereBackend(self) if self.dim == 2 else SphereDBackend(self)

    def _sample_heat_kernel(self, x0, t, gen):
        """The geodesic angle's exact draw, then a uniform direction (the kernel is isotropic)."""
        from heatscore.manifolds._sphere_d_kernel import sample_sphere_d_angle

        return self._exp_random_direction(x0, sample_sphere_d_angle(self.dim, t, x0.shape[0], gen), gen)

    def to_geomstats(self) -> Hypersphere:
        """geomstats ``Hypersphere(dim)`` (numpy backend; convert points through numpy)."""
        from geomstats.geometry.hypersphere import Hypersphere
        return Hypersphere(dim=self.dim)


@functools.lru_cache(maxsize=None)
def _calculator(l_max):
    """The cached sphericart calculator of degrees ≤ ``l_max`` (one per l_max)."""
    import sphericart.torch
    return sphericart.torch.SphericalHarmonics(l_max)


def _evaluate(u, l_max, with_values):
    """Values ``(n, K)`` (or None) and gradients ``(n, K, 3)`` at unit ``u``, by rows.

    sphericart differentiates the degree-0 homogeneous extension Y(x/|x|), whose radial
    derivative is 0 (x·∇Y = 0): at unit u its gradient is the Riemannian gradient, tangent to
    round-off (|u·∇Y| ≲ 1e-15 |∇Y|), so no projection is applied.
    """
    n, k = u.shape[0], (l_max + 1) ** 2
    values = torch.empty((n, k), dtype=u.dtype, device=u.device) if with_values else None
    grads = torch.empty((n, k, 3), dtype=u.dtype, device=u.device)
    step = rows_per_chunk(4 * k)
    for i in range(0, n, step):
        v, g = _calculator(l_max).compute_with_gradients(u[i:i + step])
        grads[i:i + step] = g.transpose(1, 2)
        if with_values:
            values[i:i + step] = v
    return values, grads


class _HarmonicGradients(torch.autograd.Function):
    """Gradients ``(n, K, 3)`` at unit ``u`` from sphericart's forward derivatives.

    Backward: for the incoming c = ∂L/∂G, ∂L/∂u_j = ∂_j ψ with ψ(u) = Σ_{k,i} c_{k,i} ∂_i Y_k(u),
    by sphericart's double backpropagation. It is differentiable in c (create_graph works, e.g.
    to train through a divergence); a third derivative in u raises sphericart's error.
    """

    @staticmethod
    def forward(ctx, u, l_max):
        ctx.save_for_backward(u)
        ctx.l_max = l_max
        return _evaluate(u, l_max, with_values=False)[1]

    @staticmethod
    def backward(ctx, grad_out):
        (u,) = ctx.saved_tensors
        create_graph = torch.is_grad_enabled()
        parts = []
        step = rows_per_chunk(4 * grad_out.shape[1])
        with torch.enable_grad():
            u = u if u.requires_grad else u.detach().requires_grad_()
            for start in range(0, u.shape[0], step):
                ui, ci = u[start:start + step], grad_out[start:start + step]
                values = _calculator(ctx.l_max)(ui)
                psi = 0.0
                for i in range(3):
                    (d,) = torch.autograd.grad((values * ci[:, :, i]).sum(), ui, create_graph=True)
                    psi = psi + d[:, i].sum()
                (part,) = torch.autograd.grad(psi, ui, create_graph=create_graph)
                parts.append(part)
        return (torch.cat(parts) if parts else torch.zeros_like(u)), None


class SphericalHarmonics(Eigenpairs):
    """Real spherical harmonics Y_{l,m} on S², orthonormal w.r.t. area (∫ Y² dA = 1).

    Order: l = 0 … l_max ascending, within l m = −l … l; Y_{l,m} is column k = l² + l + m, with
    eigenvalue l(l+1) and level l (K = (l_max + 1)² columns, l_max = n_levels − 1).

    Sign convention (Wikipedia's real harmonics, as computed by sphericart). With x = (sin θ cos φ,
    sin θ sin φ, cos θ) and the complex harmonics Y_l^m of scipy's ``sph_harm_y`` (which carry
    the Condon–Shortley phase (−1)^m):

        Y_{l,m} = √2 (−1)^m Re Y_l^m      (m > 0)
        Y_{l,0} = Y_l^0
        Y_{l,m} = √2 (−1)^m Im Y_l^{|m|}  (m < 0)

    i.e. Y_{l,m} = √2 N_l^{|m|} P_l^{|m|}(cos θ) · (cos mφ if m > 0, sin |m|φ if m < 0) with
    P_l^m free of the Condon–Shortley phase and N_l^m = √((2l+1)/(4π) (l−m)!/(l+m)!). So
    Y_{1,−1}, Y_{1,0}, Y_{1,1} = √(3/4π) (y, z, x).

    ``grad`` returns the Riemannian gradient (ambient, tangent) ``(n, K, 3)``. Autograd goes
    twice through values and once through ``grad`` in x (e.g. for a divergence, which may itself
    be differentiated in other parameters); a further derivative in x raises.
    """

    def __init__(self, manifold: Sphere, n_levels: int) -> None:
        self.l_max = n_levels - 1
        degrees = torch.arange(n_levels, dtype=torch.long)
        multiplicities = 2 * degrees + 1
        levels = torch.repeat_interleave(degrees, multiplicities)
        eigenvalues = (levels * (levels + 1)).to(torch.float64)
        super().__init__(manifold, eigenvalues, levels, multiplicities)

    @property
    def orders(self) -> torch.Tensor:
        """(K,) order m ∈ {−l, …, l} of each column (its degree l is ``levels``)."""
        k = torch.arange(len(self))
        return k - self.levels ** 2 - self.levels

    def _values(self, x):
        return _calculator(self.l_max)(_unit(x))

    def _grad(self, x):
        u = _unit(x)
        if torch.is_grad_enabled() and u.requires_grad:
            return _HarmonicGradients.apply(u, self.l_max)
        return _evaluate(u, self.l_max, with_values=False)[1]

    def values_and_grad(self, x: ArrayLike) -> ValuesAndGrad:
        """``(ep(x), ep.grad(x))`` from one sphericart pass where no autograd is needed."""
        x = self.manifold.validate(x, "x")
        if torch.is_grad_enabled() and x.requires_grad:
            return self._values(x), self._grad(x)
        return _evaluate(_unit(x), self.l_max, with_values=True)
