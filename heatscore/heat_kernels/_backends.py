"""Per-manifold heat-kernel computations on row-paired points.

Every backend gives ``log_and_grad(x, y, t, want_grad)`` for P pairs (x (P, *pt), y (P, *pt),
t (P,)) -> (log k (P,), ∇_x log k (P, *ambient) or None), and the spectral sum with its tail
bound. Radial kernels (S², SO(3)) use the chain rule ∇_x log k = (d log k/dθ) ∇_x θ with
∇_x θ = −log_x(y)/θ, the unit vector pointing away from y.
"""

import math
import warnings

import torch

from heatscore._errors import TruncationWarning
from heatscore.heat_kernels import _closed_forms as cf


def backend_for(manifold):
    """The backend of a heatscore manifold (dispatch on its class)."""
    from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh

    if isinstance(manifold, Sphere):
        if manifold.dim != 2:
            raise NotImplementedError(f"heat kernel on {manifold!r}: only Sphere(2) is implemented")
        return SphereBackend(manifold)
    if isinstance(manifold, SO3):
        return SO3Backend(manifold)
    if isinstance(manifold, Torus):
        return TorusBackend(manifold)
    if isinstance(manifold, Euclidean):
        return OUBackend(manifold)
    if isinstance(manifold, TriangleMesh):
        from heatscore.heat_kernels._mesh_kernel import MeshBackend
        return MeshBackend(manifold)
    raise TypeError(f"manifold must be a heatscore manifold, found {type(manifold).__name__}")


def spectral_sum(manifold, x, y, t, n_levels, want_grad=False, eigenpairs=None):
    """Truncated Σ_n e^{−λ_n t} φ_n(x_i) φ_n(y_i) over ``n_levels`` levels, row-paired.

    Returns (k (P,), ∇_x k (P, *ambient) or None). No positivity guarantee: a truncated sum can
    go negative at small t (callers certify the tail first). On R^d the sum is γ(x) Σ ... (the
    density w.r.t. Lebesgue).
    """
    ep = manifold.eigenpairs(n_levels) if eigenpairs is None else eigenpairs
    w = torch.exp(-ep.eigenvalues.to(x) * t.reshape(-1, 1))            # (P, K)
    phi_y = ep._values(y)
    wy = w * phi_y
    if want_grad:
        phi_x, grad_x = ep.values_and_grad(x)
    else:
        phi_x, grad_x = ep._values(x), None
    k = (wy * phi_x).sum(dim=1)
    g = None
    if want_grad:
        g = torch.einsum("pk,pk...->p...", wy, grad_x)
    from heatscore.manifolds import Euclidean
    if isinstance(manifold, Euclidean):
        # φ_α are orthonormal in L²(γ) on u = x/scale: multiply by the N(0, scale² I) density.
        s2 = float(manifold.scale) ** 2
        ref = torch.exp(-0.5 * (x * x).sum(dim=1) / s2 - 0.5 * x.shape[1] * math.log(2 * math.pi * s2))
        if want_grad:
            shape = (-1,) + (1,) * (g.ndim - 1)
            g = ref.reshape(shape) * (g - k.reshape(shape) * x / s2)
        k = k * ref
    return k, g


class _SpectralMixin:
    """Spectral route and level counts shared by the compact homogeneous spaces.

    Addition theorem: Σ_{φ in level l} φ(x)² = m_l / vol for every x, so the kernel's tail beyond
    level L is bounded uniformly in (x, y) by Σ_{l ≥ L} m_l e^{−λ_l t} / vol (the level counts come
    from :mod:`heatscore.heat_kernels._closed_forms`, which states each bound).
    """

    def levels_for(self, t, rtol, reference):
        """Levels whose truncation error is ≤ rtol × reference ("stationary": 1/vol;
        "minimum": the kernel's minimum, which certifies relative accuracy everywhere), or None
        if more than 100 000 levels would be needed."""
        try:
            return self._levels_for(t, rtol, reference)
        except ValueError:
            return None

    def levels_needed(self, t, rtol):
        return self.levels_for(t, rtol, "minimum")

    def spectral_ok(self, n_levels, t, rtol):
        needed = self.levels_needed(t, rtol)
        return needed is not None and n_levels >= needed

    def n_functions(self, n_levels):
        """Number of eigenfunctions in the first ``n_levels`` levels."""
        return len(self._eigenpairs(n_levels))

    def spectral_log_and_grad(self, x, y, t, n_levels, want_grad):
        k, g = spectral_sum(self.manifold, x, y, t, n_levels, want_grad, self._eigenpairs(n_levels))
        bad = ~(k > 0)
        if bool(bad.any()):
            warnings.warn(f"the {n_levels}-level spectral sum is not positive at {int(bad.sum())} "
                          "pairs; using the exact route there", TruncationWarning, stacklevel=4)
            lg_exact, g_exact = self.log_and_grad(x[bad], y[bad], t[bad], want_grad)
        lg = torch.log(torch.where(bad, torch.ones_like(k), k))
        if want_grad:
            g = g / k.reshape((-1,) + (1,) * (g.ndim - 1))
        if bool(bad.any()):
            lg[bad] = lg_exact
            if want_grad:
                g[bad] = g_exact
        return lg, g

    def _eigenpairs(self, n_levels):
        cache = self.__dict__.setdefault("_ep_cache", {})
        if n_levels not in cache:
            cache[n_levels] = self.manifold.eigenpairs(n_levels)
        return cache[n_levels]


class _RadialBackend(_SpectralMixin):
    """Kernels that depend on the geodesic distance only: log k = f(θ, t)."""

    def __init__(self, manifold):
        self.manifold = manifold

    def log_and_grad(self, x, y, t, want_grad):
        m = self.manifold
        if not want_grad:
            return self.log_radial(m._dist(x, y), t), None
        v = m._log(x, y)
        theta = torch.sqrt(torch.clamp(m._inner(x, v, v), min=0.0))
        lg = self.log_radial(theta, t)
        d = self.dlog_radial(theta, t)
        safe = torch.where(theta > 0, theta, torch.ones_like(theta))
        coef = torch.where(theta > 0, -d / safe, torch.zeros_like(theta))
        return lg, coef.reshape((-1,) + (1,) * (v.ndim - 1)) * v


class SphereBackend(_RadialBackend):
    log_radial = staticmethod(cf.sphere_log_heat_kernel)
    dlog_radial = staticmethod(cf.sphere_dlog_heat_kernel_dtheta)
    _levels_for = staticmethod(cf.sphere_levels_for_accuracy)

    def n_functions(self, n_levels):
        return n_levels**2


class SO3Backend(_RadialBackend):
    log_radial = staticmethod(cf.so3_log_heat_kernel)
    dlog_radial = staticmethod(cf.so3_dlog_heat_kernel_dtheta)
    _levels_for = staticmethod(cf.so3_levels_for_accuracy)

    def n_functions(self, n_levels):
        return sum((2 * l + 1) ** 2 for l in range(n_levels))


class TorusBackend(_SpectralMixin):
    """Product of wrapped Gaussians of variance 2t per angle."""

    def __init__(self, manifold):
        self.manifold = manifold

    def _levels_for(self, t, rtol, reference):
        return cf.torus_levels_for_accuracy(self.manifold.dim, t, rtol, reference)

    def log_and_grad(self, x, y, t, want_grad):
        delta = x - y
        lg = cf.torus_log_heat_kernel(delta, t)
        return lg, (cf.torus_grad_log_heat_kernel(delta, t) if want_grad else None)


class OUBackend:
    """Ornstein–Uhlenbeck transition density on R^d in the coordinates u = x/scale:
    k_t(x, y) = N(x; e^{−t} y, scale² (1 − e^{−2t}) I) w.r.t. Lebesgue measure in x."""

    def __init__(self, manifold):
        self.manifold = manifold

    def log_and_grad(self, x, y, t, want_grad):
        s2 = float(self.manifold.scale) ** 2
        d = x.shape[1]
        tt = t.reshape(-1, 1)
        var = s2 * (-torch.expm1(-2 * tt))                                  # (P, 1)
        diff = x - torch.exp(-tt) * y
        lg = -0.5 * (diff * diff / var).sum(dim=1) - 0.5 * d * torch.log(2 * math.pi * var[:, 0])
        return lg, (-diff / var if want_grad else None)

    def levels_needed(self, t, rtol):
        return None  # Hermite functions are unbounded: no uniform tail bound on R^d

    def spectral_ok(self, n_levels, t, rtol):
        return False
