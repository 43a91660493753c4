"""Per-manifold heat-kernel computations on row-paired points.

Every backend gives ``log_and_grad(x, y, t, want_grad)`` for P pairs (x (P, *pt), y (P, *pt),
t (P,)) -> (log k (P,), ∇_x log k (P, *ambient) or None), and the spectral sum with its tail
bound. Radial kernels (S², SO(3)) use the chain rule ∇_x log k = (d log k/dθ) ∇_x θ with
∇_x θ = −log_x(y)/θ, the unit vector pointing away from y.
"""

import functools
import math
import warnings
from typing import TYPE_CHECKING, Optional, Tuple

import torch

from heatscore._errors import TruncationWarning
from heatscore.manifolds import _closed_forms as cf
from heatscore.manifolds._base import MAX_CHUNK_ENTRIES, rows_per_chunk
from heatscore.manifolds._lattice import _lattice_eigenvalues, lattice_count

if TYPE_CHECKING:
    from heatscore.manifolds._base import Eigenpairs, Manifold

#: Relative accuracy the automatic routes aim at (DESIGN: relative error ≤ 1e-6).
DEFAULT_RTOL = 1e-6


def spectral_sum(manifold: "Manifold", x: torch.Tensor, y: torch.Tensor, t: torch.Tensor,
                 n_levels: int, want_grad: bool = False, eigenpairs: Optional["Eigenpairs"] = None
                 ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
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
    log_ref = manifold._log_reference(x)
    if log_ref is not None:
        # φ_n are orthonormal in L²(μ), μ = e^{log_ref} dvol (N(0, scale² I) on R^d): k = μ(x) Σ ...
        ref = torch.exp(log_ref)
        if want_grad:
            shape = (-1,) + (1,) * (g.ndim - 1)
            g = ref.reshape(shape) * (g + k.reshape(shape) * manifold._grad_log_reference(x))
        k = k * ref
    return k, g


class _SpectralMixin:
    """Spectral route and level counts shared by the compact homogeneous spaces.

    Addition theorem: Σ_{φ in level l} φ(x)² = m_l / vol for every x, so the kernel's tail beyond
    level L is bounded uniformly in (x, y) by Σ_{l ≥ L} m_l e^{−λ_l t} / vol (the level counts come
    from :mod:`heatscore.manifolds._closed_forms`, which states each bound).
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


class RadialTable:
    """log k_τ(θ) on [0, π] for one time τ by quintic Hermite interpolation on a uniform grid.

    Nodes carry the exact log k, d log k/dθ and d² log k/dθ² (the closed forms and autograd), so
    the interpolant reproduces polynomials of degree 5 exactly (the −θ²/4τ part included) and its
    error is h⁶ max|∂⁶ log k| / 46080 with h = π/``N_INTERVALS``; the kernel's scale is √τ, so
    ∂⁶ log k ~ τ^{−3} and the error is ≤ 1e-9 for τ ≥ ``MIN_T`` away from the antipode (pinned by
    the tests). Used for
    the many pairs at one time that kernel sums evaluate; the derivative is the interpolant's.
    """

    N_INTERVALS = 2048
    MIN_T = 1e-4
    #: Near the antipode the kernel focuses on a scale ~τ, finer than the grid: the closed form
    #: is used within this distance of π.
    ANTIPODE_MARGIN = 0.05

    def __init__(self, log_fn, tau):
        self.h = math.pi / self.N_INTERVALS
        theta = torch.linspace(0.0, math.pi, self.N_INTERVALS + 1, dtype=torch.float64)
        with torch.enable_grad():  # the nodes' derivatives, also when called under no_grad
            theta.requires_grad_(True)
            f = log_fn(theta, torch.full_like(theta, tau))
            d1, = torch.autograd.grad(f.sum(), theta, create_graph=True)
            d2, = torch.autograd.grad(d1.sum(), theta)
        self.f, self.d1, self.d2 = f.detach(), d1.detach(), d2.detach()

    def __call__(self, theta, want_grad):
        """(log k (P,), d log k/dθ (P,) or None) at angles θ in [0, π]."""
        u = theta.detach() / self.h
        i = torch.clamp(u.floor().long(), 0, self.N_INTERVALS - 1)
        s = u - i
        h = self.h
        f0, f1 = self.f.to(theta.device)[i], self.f.to(theta.device)[i + 1]
        a0, a1 = h * self.d1.to(theta.device)[i], h * self.d1.to(theta.device)[i + 1]
        b0, b1 = h * h * self.d2.to(theta.device)[i], h * h * self.d2.to(theta.device)[i + 1]
        s2 = s * s
        s3 = s2 * s
        # coefficients of the quintic in s matching (f, h f', h² f'') at both ends
        c3 = 10 * (f1 - f0) - 6 * a0 - 4 * a1 - 1.5 * b0 + 0.5 * b1
        c4 = -15 * (f1 - f0) + 8 * a0 + 7 * a1 + 1.5 * b0 - b1
        c5 = 6 * (f1 - f0) - 3 * a0 - 3 * a1 - 0.5 * b0 + 0.5 * b1
        val = f0 + a0 * s + 0.5 * b0 * s2 + s3 * (c3 + s * (c4 + s * c5))
        if not want_grad:
            return val, None
        der = a0 + b0 * s + s2 * (3 * c3 + s * (4 * c4 + 5 * c5 * s))
        return val, der / h


class SphereBackend(_RadialBackend):
    log_radial = staticmethod(cf.sphere_log_heat_kernel)
    dlog_radial = staticmethod(cf.sphere_dlog_heat_kernel_dtheta)
    _levels_for = staticmethod(cf.sphere_levels_for_accuracy)
    #: Pairs at one time from which the interpolation table pays for itself.
    TABLE_MIN_PAIRS = 50_000
    #: Matrices by harmonics products where at most this many levels (576 harmonics) make the
    #: series' tail negligible: t ≳ 0.08.
    GEMM_MAX_LEVELS = 24
    #: Relative error the harmonics route certifies (half of DESIGN's 1e-6).
    GEMM_RTOL = 5e-7

    def log_and_grad(self, x, y, t, want_grad):
        """Large batches at one time τ take a fast exact route: the small-t parametrix (τ ≤
        SPHERE_PARAMETRIX_MAX_T, where the closed forms use it too) or ``RadialTable``."""
        tau = float(t[0]) if t.numel() else 0.0
        if (t.numel() < self.TABLE_MIN_PAIRS or tau >= cf.SPHERE_SERIES_MIN_T
                or (cf.SPHERE_PARAMETRIX_MAX_T < tau < RadialTable.MIN_T)
                or bool((t != t[0]).any())):
            return super().log_and_grad(x, y, t, want_grad)
        radial = self._parametrix if tau <= cf.SPHERE_PARAMETRIX_MAX_T else self._table(tau)
        m = self.manifold
        if not want_grad:
            theta = m._dist(x, y)
            return self._fast_or_exact(radial, theta, tau, False)[0], None
        v = m._log(x, y)
        theta = torch.sqrt(torch.clamp(m._inner(x, v, v), min=0.0))
        lg, d = self._fast_or_exact(radial, theta, tau, True)
        safe = torch.where(theta > 0, theta, torch.ones_like(theta))
        coef = torch.where(theta > 0, -d / safe, torch.zeros_like(theta))
        return lg, coef.reshape((-1,) + (1,) * (v.ndim - 1)) * v

    def _gemm_plan(self, tau, want_grad):
        """(eigenpairs, k_min) of the harmonics route at time τ; None where it needs more than
        ``GEMM_MAX_LEVELS`` levels.

        Level l (λ = l(l+1), 2l+1 harmonics): Σ_m |Y_lm(x) Y_lm(y)| ≤ (2l+1)/4π (addition theorem)
        and Σ_m |∇Y_lm(x)| |Y_lm(y)| ≤ √λ (2l+1)/4π (Σ_m |∇Y_lm|² = λ(2l+1)/4π). With
        S = Σ_l e^{−λt} (2l+1)/4π (1 + √λ with gradients), the K-term sums round to within 4KuS
        (the worst-case dot-product bound Ku, ×4 for the harmonics' own rounding; u = 2⁻⁵³) and
        the levels kept leave a tail ≤ u/4π ≤ uS. Entries with k ≥ k_min = 2(4K + 1)uS / GEMM_RTOL
        are then within GEMM_RTOL (and ∇ log k within GEMM_RTOL (1 + |∇ log k|)).
        """
        grad_factor = (lambda l: 1.0 + math.sqrt(l * (l + 1))) if want_grad else (lambda l: 1.0)
        try:
            levels = cf.levels_for_accuracy(lambda l: l * (l + 1),
                                            lambda l: (2 * l + 1) * grad_factor(l), tau, 2.0**-53,
                                            max_levels=self.GEMM_MAX_LEVELS)
        except ValueError:
            return None
        ep = self._eigenpairs(levels)
        s = sum(math.exp(-l * (l + 1) * tau) * (2 * l + 1) * grad_factor(l) for l in range(levels))
        s /= 4.0 * math.pi
        return ep, 2.0 * (4 * len(ep) + 1) * 2.0**-53 * s / self.GEMM_RTOL

    def matrix_log_and_grad(self, x, y, t, want_grad):
        """(n, m) log k_t(x_i, y_j) and (n, m, 3) ∇_x log k or None; t a 0-d tensor.

        Moderate t (``_gemm_plan``): k = Φ(x) diag(e^{−λt}) Φ(y)ᵀ and ∇_x k = ∇Φ(x) diag(e^{−λt})
        Φ(y)ᵀ, matrix products of real spherical harmonics, then log; the entries below k_min
        (far pairs, where the sum cancels) and every entry at other t by the pair routes
        (``log_and_grad``). Blocks of rows and columns under ``MAX_CHUNK_ENTRIES``.
        """
        n, m = x.shape[0], y.shape[0]
        log = x.new_empty((n, m))
        grad = x.new_empty((n, m, 3)) if want_grad else None
        plan = self._gemm_plan(float(t), want_grad)
        col_step = row_cap = max(1, n, m)
        if plan is not None:
            ep, k_min = plan
            w = torch.exp(-ep.eigenvalues.to(x) * t)
            col_step = row_cap = rows_per_chunk(4 * len(ep))              # harmonics and ∇
        for j in range(0, m, col_step):
            yj = y[j:j + col_step]
            c = yj.shape[0]
            wy = ep._values(yj) * w if plan is not None else None           # (c, K)
            step = min(row_cap, rows_per_chunk(c, 32 if want_grad else 16))
            for i in range(0, n, step):
                xi = x[i:i + step]
                r = xi.shape[0]
                if plan is None:
                    todo = torch.ones((r, c), dtype=torch.bool, device=x.device)
                else:
                    if want_grad:
                        phi, dphi = ep.values_and_grad(xi)                  # (r, K), (r, K, 3)
                    else:
                        phi = ep._values(xi)
                    k = phi @ wy.T
                    todo = ~(k >= k_min)
                    kc = torch.clamp(k, min=k_min)
                    log[i:i + r, j:j + c] = torch.log(kc)
                    if want_grad:
                        gk = (dphi.transpose(1, 2).reshape(3 * r, -1) @ wy.T).reshape(r, 3, c)
                        grad[i:i + r, j:j + c] = gk.transpose(1, 2) / kc.unsqueeze(-1)
                ii, jj = todo.nonzero(as_tuple=True)
                if ii.numel():
                    lg, gr = self.log_and_grad(xi[ii], yj[jj], t.expand(ii.numel()), want_grad)
                    log[i + ii, j + jj] = lg
                    if want_grad:
                        grad[i + ii, j + jj] = gr
        return log, grad

    @staticmethod
    def _parametrix(theta, want_grad, tau):
        t = torch.full_like(theta, tau)
        return (cf._sphere_log_parametrix(theta, t),
                cf._sphere_dlog_parametrix(theta, t) if want_grad else None)

    def _fast_or_exact(self, radial, theta, tau, want_grad):
        """The fast route up to its angle limit; the closed form on the (rare) pairs beyond."""
        if radial is self._parametrix:
            lg, d = radial(theta, want_grad, tau)
            far = theta > cf.SPHERE_PARAMETRIX_MAX_THETA
        else:
            lg, d = radial(theta, want_grad)
            far = theta > math.pi - RadialTable.ANTIPODE_MARGIN
        if bool(far.any()):
            tf = torch.full_like(theta[far], tau)
            lg[far] = cf.sphere_log_heat_kernel(theta[far], tf)
            if want_grad:
                d[far] = cf.sphere_dlog_heat_kernel_dtheta(theta[far], tf)
        return lg, d

    def _table(self, tau):
        cache = self.__dict__.setdefault("_tables", {})
        if tau not in cache:
            if len(cache) > 64:
                cache.clear()
            cache[tau] = RadialTable(cf.sphere_log_heat_kernel, tau)
        return cache[tau]

    def n_functions(self, n_levels):
        return n_levels**2


class SphereDBackend(_RadialBackend):
    """S^d, d ≥ 3: the closed forms of :mod:`heatscore.manifolds._sphere_d_kernel` (exact and
    positive at every t; the route per t and d is stated there) and the S^d level counts."""

    def __init__(self, manifold):
        from heatscore.manifolds import _sphere_d_kernel as sd

        super().__init__(manifold)
        d = manifold.dim
        self.log_radial = functools.partial(sd.sphere_d_log_heat_kernel, d)
        self.dlog_radial = functools.partial(sd.sphere_d_dlog_heat_kernel_dtheta, d)
        self._levels_for = functools.partial(sd.sphere_d_levels_for_accuracy, d)

    def n_functions(self, n_levels):
        from heatscore.manifolds._hyperspherical import level_multiplicity

        return sum(level_multiplicity(self.manifold.dim, l) for l in range(n_levels))


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

    def n_functions(self, n_levels):
        """Counted, not built (the lattice of a high-dimensional torus is large)."""
        d = self.manifold.dim
        return lattice_count(d, _lattice_eigenvalues(d, n_levels)[-1])

    #: Fast route for one time τ ≤ FAST_MAX_T: the image sum with |n| ≤ 2 (the first omitted
    #: image is below e^{−(3π)²/4τ} ≤ e^{−44} relative), without the closed forms' per-element
    #: routing; the closed forms elsewhere.
    FAST_MAX_T = 0.5

    def log_and_grad(self, x, y, t, want_grad):
        delta = x - y
        if t.numel() and float(t[0]) <= self.FAST_MAX_T and not bool((t != t[0]).any()):
            return self._images(delta, float(t[0]), want_grad)
        lg = cf.torus_log_heat_kernel(delta, t)
        return lg, (cf.torus_grad_log_heat_kernel(delta, t) if want_grad else None)

    @staticmethod
    def _images(delta, tau, want_grad):
        """Σ_i log Σ_{|n|≤2} N(δ_i − 2πn; 0, 2τ) and its δ-gradient, δ wrapped to (−π, π]."""
        d = torch.remainder(delta + math.pi, 2 * math.pi) - math.pi
        shifts = 2 * math.pi * torch.arange(-2, 3, dtype=d.dtype, device=d.device)
        z = d.unsqueeze(-1) - shifts                                          # (P, dim, 5)
        e = -z * z / (4 * tau)
        lse = torch.logsumexp(e, dim=-1)                                     # (P, dim)
        lg = (lse - 0.5 * math.log(4 * math.pi * tau)).sum(dim=-1)
        if not want_grad:
            return lg, None
        r = torch.softmax(e, dim=-1)
        return lg, (r * (-z / (2 * tau))).sum(dim=-1)


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
