"""Real hyperspherical harmonics on S^d ⊂ R^{d+1} (d ≥ 2), their zonal sums, and a product
quadrature rule on S^d.

Construction (Gelfand–Tsetlin chain, evaluated as polynomials). With ρ_k² = x_0² + … + x_k²
(ρ_d = 1 on the sphere), a chain l = l_d ≥ l_{d−1} ≥ … ≥ l_2 ≥ |m| = l_1 ≥ 0 and a sign of m,

    Y(x) = c_m Re/Im (x_0 + i x_1)^{|m|} · Π_{k=2}^{d} ρ_k^{n_k} p_{n_k}^{(λ_k)}(x_k / ρ_k),
    n_k = l_k − l_{k−1},  λ_k = l_{k−1} + (k − 1)/2,

where p_n^{(λ)} is the Gegenbauer polynomial orthonormal for the weight (1 − s²)^{λ−1/2} on
[−1, 1] (positive leading coefficient) and c_0 = (2π)^{−1/2}, c_m = π^{−1/2} (Re for m > 0, Im
for m < 0). Each factor ρ^n p_n(x_k/ρ) is a polynomial in (x_k, ρ_k²) (p_n has the parity of n),
so Y is a homogeneous harmonic polynomial of degree l: smooth everywhere on the sphere (no
coordinate singularity at the poles of hyperspherical coordinates). The factors come from the
orthonormal three-term recurrence in homogeneous form,

    P_{n+1} = (x_k P_n − α_n ρ_k² P_{n−1}) / α_{n+1},
    α_n² = n(n + 2λ − 1) / (4(n + λ)(n + λ − 1)),

whose values stay O(1)-scaled (no factorials: no overflow for d ≈ 10, l ≈ 30); with
dσ_d = Π_k sin^{k−1}θ_k dθ_k dφ the products are orthonormal w.r.t. the area of S^d.
Gradients are those of the polynomial H (the same recurrences differentiated in x_k and ρ_k²),
made Riemannian at the unit point u = x/|x| by Euler's identity: grad Y = ∇H − l H u.
"""

import functools
import math

import numpy as np
import torch

from heatscore._validation import as_float_tensor, check_finite, check_positive_int
from heatscore.manifolds._base import Eigenpairs, rowdot, rows_per_chunk

__all__ = ["HypersphericalHarmonics", "level_multiplicity", "zonal_sum", "sphere_d_quadrature"]

#: Float64 entries a call of the harmonics keeps per chunk of rows (2^25 entries: 256 MB).
_CHUNK_ENTRIES = 2**25


def _unit(x):
    """Rows of ``x`` scaled to unit length (validated points are within 1e-6 of it already, so
    |x|² neither overflows nor underflows)."""
    return x / rowdot(x, x).sqrt_().unsqueeze(-1)


def _sphere_volume(d):
    """Area of S^d: 2π^{(d+1)/2} / Γ((d+1)/2), by |S^d| = 2π/(d−1) |S^{d−2}|, |S^0| = 2, |S^1| = 2π."""
    vol = 2.0 if d % 2 == 0 else 2.0 * math.pi
    for k in range(2 if d % 2 == 0 else 3, d + 1, 2):
        vol *= 2.0 * math.pi / (k - 1)
    return vol


def check_sphere_dim(d, name="d"):
    """``d`` as an int >= 2 (``TypeError`` for a non-integer, ``ValueError`` below 2)."""
    return check_positive_int(d, name, minimum=2)


def level_multiplicity(d, l):
    """N(d, l) = C(l+d, d) − C(l+d−2, d): the dimension of the degree-l harmonics on S^d."""
    return math.comb(l + d, d) - math.comb(l + d - 2, d)


def gegenbauer_ratio_terms(lam, x, n_terms):
    """Yield R_l(x) = C_l^{(λ)}(x) / C_l^{(λ)}(1), l = 0 … n_terms − 1, by the normalised
    recurrence R_{l+1} = (2(l + λ) x R_l − l R_{l−1}) / (l + 2λ) (|R_l| ≤ 1 on [−1, 1]; stable
    forward)."""
    prev, cur = None, torch.ones_like(x)
    for l in range(n_terms):
        yield cur
        prev, cur = cur, (x * cur if l == 0 else (2 * (l + lam) * x * cur - l * prev) / (l + 2 * lam))


def zonal_sum(d, l, cos_theta):
    """Σ_{m in level l} Y_lm(x) Y_lm(y) = N(d, l)/|S^d| · C_l^{(λ)}(cos θ)/C_l^{(λ)}(1), λ = (d−1)/2.

    The addition theorem for any orthonormal basis of the degree-l harmonics on S^d.
    cos_theta : array (...) in [−1, 1] (within 1e-6). Returns the same shape in its floating
    dtype (float64 by default), O(l) work by the normalised recurrence.
    """
    d = check_sphere_dim(d)
    l = check_positive_int(l, "l", minimum=0)
    x = as_float_tensor(cos_theta, "cos_theta")
    check_finite(x, "cos_theta")
    if x.numel() and float(x.abs().max()) > 1.0 + 1e-6:
        raise ValueError(f"cos_theta must lie in [-1, 1] (within 1e-6), found max |cos_theta| = "
                         f"{float(x.abs().max()):.6g}")
    *_, ratio = gegenbauer_ratio_terms(0.5 * (d - 1), x.to(torch.float64), l + 1)
    return (level_multiplicity(d, l) / _sphere_volume(d) * ratio).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# quadrature


def sphere_d_quadrature(d, n):
    """(points (N, d+1), weights (N,)) float64: Σ w_i f(x_i) = ∫_{S^d} f dσ exactly for
    polynomials of degree ≤ 2n − 1; weights sum to |S^d|; N = 2n · n^{d−1}.

    Product rule in hyperspherical coordinates x_d = cos θ_d, (x_0, …, x_{d−1}) = sin θ_d ω:
    n-point Gauss–Jacobi nodes in s_k = cos θ_k for the weight (1 − s²)^{(k−2)/2} (Gauss–Legendre
    for k = 2), k = d … 2, and 2n equispaced angles φ on the circle (x_0, x_1). A monomial of
    odd degree in the lower coordinates integrates to zero on each lower rule and one of even
    degree b gives s^a (1 − s²)^{b/2}, a polynomial of degree a + b: hence the exactness by
    induction. Order: s_d slowest, …, φ fastest (for d = 2 it is ``Sphere(2).quadrature(n)``).
    """
    from scipy.special import roots_jacobi

    d = check_sphere_dim(d)
    n = check_positive_int(n, "n")
    phi = 2 * np.pi * np.arange(2 * n) / (2 * n)
    pts = np.stack([np.cos(phi), np.sin(phi)], axis=1)          # S^1, coordinates (x_0, x_1)
    w = np.full(2 * n, 2 * np.pi / (2 * n))
    for k in range(2, d + 1):
        if k == 2:
            s, ws = np.polynomial.legendre.leggauss(n)
        else:
            s, ws = roots_jacobi(n, 0.5 * (k - 2), 0.5 * (k - 2))
        r = np.sqrt(1 - s**2)
        lower = (r[:, None, None] * pts[None]).reshape(n, -1, k)
        pts = np.concatenate([lower, np.broadcast_to(s[:, None, None], (n, pts.shape[0], 1))],
                             axis=2).reshape(-1, k + 1)
        w = (ws[:, None] * w[None]).reshape(-1)
    return torch.as_tensor(pts), torch.as_tensor(w)


# ---------------------------------------------------------------------------------------------
# harmonics


def _alpha(n, lam):
    """α_n of the orthonormal Gegenbauer recurrence (0 for n = 0), numpy over λ."""
    if n == 0:
        return np.zeros_like(lam)
    return np.sqrt(n * (n + 2 * lam - 1) / (4 * (n + lam) * (n + lam - 1)))


@functools.lru_cache(maxsize=32)
def _plan(d, l_max):
    """Index plan of the chain construction (numpy, cached): (stages, degree (K,), chains (K, d)).

    Stage k = 2 … d is (src, pair, p_0, α): per new column, the column of the stage-(k−1)
    harmonic it multiplies and the flat index j·L + n of its factor p_n^{(λ_j)}, λ_j = j + (k−1)/2;
    then p_0 = h_0(λ_j)^{−1/2} (L,) and α_n(λ_j) (L+1, L) of the recurrence.
    """
    L = l_max + 1
    # stage 1: 1, then sin, cos of each degree m
    degree = [0] + [m for m in range(1, L) for _ in (0, 1)]
    chains = [[0]] + [[s * m] for m in range(1, L) for s in (-1, 1)]
    stages = []
    for k in range(2, d + 1):
        degree_arr = np.asarray(degree)
        src, pair, new_degree, new_chains = [], [], [], []
        for l in range(L):
            for j in range(l + 1):
                cols = np.nonzero(degree_arr == j)[0]
                src.extend(cols)
                pair.extend([j * L + (l - j)] * len(cols))
                new_degree.extend([l] * len(cols))
                new_chains.extend([[l] + chains[c] for c in cols])
        lam = np.arange(L) + 0.5 * (k - 1)
        log_h0 = 0.5 * math.log(math.pi) + np.array([math.lgamma(v + 0.5) - math.lgamma(v + 1) for v in lam])
        alphas = np.stack([_alpha(n, lam) for n in range(L + 1)])          # (L+1, L): α_n(λ_j)
        stages.append((np.asarray(src), np.asarray(pair), np.exp(-0.5 * log_h0), alphas))
        degree, chains = new_degree, new_chains
    return stages, np.asarray(degree), np.asarray(chains)


def _circle_factors(x0, x1, L, with_grad):
    """Stage 1: (c, 2L−1) values c_m Re/Im (x_0 + i x_1)^m and their (c, 2L−1, 2) gradients."""
    re, im = [torch.ones_like(x0)], [torch.zeros_like(x0)]
    for _ in range(1, L):
        re_m, im_m = re[-1], im[-1]
        re.append(x0 * re_m - x1 * im_m)
        im.append(x0 * im_m + x1 * re_m)
    c0, c = 1 / math.sqrt(2 * math.pi), 1 / math.sqrt(math.pi)
    values = [c0 * re[0]]
    for m in range(1, L):
        values += [c * im[m], c * re[m]]
    values = torch.stack(values, dim=1)
    if not with_grad:
        return values, None
    grads = [torch.zeros_like(x0), torch.zeros_like(x0)]
    grads = [torch.stack(grads, dim=1)]
    for m in range(1, L):
        # ∂_0 z^m = m z^{m−1}, ∂_1 z^m = i m z^{m−1}
        grads.append(torch.stack([c * m * im[m - 1], c * m * re[m - 1]], dim=1))
        grads.append(torch.stack([c * m * re[m - 1], -c * m * im[m - 1]], dim=1))
    return values, torch.stack(grads, dim=1)


def _factor_table(xk, s, p0, alphas, L, with_grad):
    """(c, L·L) values P_n^{(λ_j)}(x_k, s) at flat index j·L + n (entries with j + n ≥ L unused)
    and, with gradients, their derivatives in x_k and in s = ρ_k²."""
    xk, s = xk[:, None], s[:, None]
    p0 = torch.as_tensor(p0, dtype=xk.dtype, device=xk.device)
    al = torch.as_tensor(alphas, dtype=xk.dtype, device=xk.device)
    zero = torch.zeros_like(xk * p0)
    P, Px, Ps = [p0 + zero], [zero], [zero]
    prev, prev_x, prev_s = zero, zero, zero
    for n in range(L - 1):
        a_n, a_next = al[n], al[n + 1]
        cur, cur_x, cur_s = P[-1], Px[-1], Ps[-1]
        P.append((xk * cur - a_n * s * prev) / a_next)
        if with_grad:
            Px.append((cur + xk * cur_x - a_n * s * prev_x) / a_next)
            Ps.append((xk * cur_s - a_n * prev - a_n * s * prev_s) / a_next)
            prev_x, prev_s = cur_x, cur_s
        prev = cur
    table = torch.stack(P, dim=2).reshape(xk.shape[0], L * L)   # (c, j, n) -> j·L + n
    if not with_grad:
        return table, None, None
    return (table, torch.stack(Px, dim=2).reshape(xk.shape[0], L * L),
            torch.stack(Ps, dim=2).reshape(xk.shape[0], L * L))


def _evaluate(u, d, l_max, with_grad, out=None):
    """Values (c, K) and Riemannian gradients (c, K, d+1) (or None) at unit rows ``u``; written
    into ``out`` = (values, gradients) when given (only without autograd).

    Stage k multiplies each harmonic h of S^{k−1} (a polynomial in x_0 … x_{k−1}) by a factor
    P(x_k, s), s = ρ_k²: ∇(Ph) = P ∇h + h (∂P/∂s) 2x_{0…k−1} in the old coordinates and
    h (∂P/∂x_k + 2x_k ∂P/∂s) in the new one. The last stage folds in −l H u (Euler's identity
    x·∇H = lH makes ∇H − lHu the tangential part at unit u).
    """
    L = l_max + 1
    autograd = torch.is_grad_enabled() and u.requires_grad
    stages, degree, _ = _plan(d, l_max)
    values, grads = _circle_factors(u[:, 0], u[:, 1], L, with_grad)
    s = u[:, 0] * u[:, 0] + u[:, 1] * u[:, 1]
    for k, (src, pair, p0, alphas) in enumerate(stages, start=2):
        xk = u[:, k]
        s = s + xk * xk
        table, t_x, t_s = _factor_table(xk, s, p0, alphas, L, with_grad)
        src_t = torch.as_tensor(src, device=u.device)
        pair_t = torch.as_tensor(pair, device=u.device)
        f = table.index_select(1, pair_t)
        lower = values.index_select(1, src_t)
        last_stage = k == d
        values = torch.mul(f, lower, out=out[0]) if last_stage and out is not None else f * lower
        if with_grad:
            radial = 2 * t_s.index_select(1, pair_t) * lower                 # h ∂P/∂s · 2 (∇ρ² = 2x)
            if last_stage:
                radial = radial - torch.as_tensor(degree, dtype=u.dtype, device=u.device) * values
            lower_grads, t_x = grads.index_select(1, src_t), t_x.index_select(1, pair_t)
            if autograd:
                inner = torch.addcmul(radial[:, :, None] * u[:, None, :k], f[:, :, None], lower_grads)
                last = torch.addcmul(radial * xk[:, None], lower, t_x)
                grads = torch.cat([inner, last[:, :, None]], dim=2)
                continue
            # in place, into the caller's buffer at the last stage
            grads = out[1] if last_stage and out is not None else u.new_empty(values.shape + (k + 1,))
            torch.mul(radial[:, :, None], u[:, None, :k], out=grads[:, :, :k])
            grads[:, :, :k].addcmul_(f[:, :, None], lower_grads)
            torch.mul(radial, xk[:, None], out=grads[:, :, k])
            grads[:, :, k].addcmul_(lower, t_x)
    return values, grads


class HypersphericalHarmonics(Eigenpairs):
    """Real hyperspherical harmonics on S^d (d ≥ 2), orthonormal w.r.t. the area of S^d.

    Levels l = 0 … n_levels − 1 (whole eigenspaces), eigenvalue l(l + d − 1), multiplicity
    N(d, l) = C(l+d, d) − C(l+d−2, d). Construction and formula: module docstring.

    Order: by level l; within a level, lexicographic in (l_{d−1}, l_{d−2}, …, l_2, |m|)
    ascending, and for |m| > 0 the sine (m < 0) before the cosine (m > 0). ``chains`` (K, d)
    lists (l, l_{d−1}, …, l_2, m) per column. Sign: every factor has a positive leading
    coefficient, so level 1 is √((d+1)/|S^d|) (x_d, x_{d−1}, …, x_1, x_0), and the zonal
    function of level l (m = l_2 = … = l_{d−1} = 0) is positive at the pole e_d.

    ``grad`` returns the Riemannian gradient (ambient, tangent at x/|x|) ``(n, K, d+1)``. Both
    are plain torch expressions of x/|x|: autograd differentiates the values and the gradients
    as often as needed. Rows are processed in chunks of at most about 256 MB.
    """

    def __init__(self, manifold, n_levels):
        self.dim = check_sphere_dim(manifold.dim, "manifold.dim")
        n_levels = check_positive_int(n_levels, "n_levels", minimum=1)
        self.l_max = n_levels - 1
        _, degree, chains = _plan(self.dim, self.l_max)
        levels = torch.as_tensor(degree, dtype=torch.long)
        multiplicities = torch.tensor([level_multiplicity(self.dim, l) for l in range(n_levels)],
                                      dtype=torch.long)
        eigenvalues = (levels * (levels + self.dim - 1)).to(torch.float64)
        super().__init__(manifold, eigenvalues, levels, multiplicities)
        self.chains = torch.as_tensor(chains, dtype=torch.long)

    def _rows_per_chunk(self, with_grad):
        per_row = len(self) * ((4 * self.dim + 8) if with_grad else 4)   # live (c, K[, ·]) entries
        return rows_per_chunk(per_row, budget=_CHUNK_ENTRIES)

    def _compute(self, x, with_grad):
        u = _unit(x)
        step = self._rows_per_chunk(with_grad)
        n, k = u.shape[0], len(self)
        if torch.is_grad_enabled() and u.requires_grad:
            parts = [_evaluate(u[i:i + step], self.dim, self.l_max, with_grad)
                     for i in range(0, n, step)]
            if not parts:
                parts = [_evaluate(u, self.dim, self.l_max, with_grad)]
            values = torch.cat([p[0] for p in parts])
            grads = torch.cat([p[1] for p in parts]) if with_grad else None
            return values, grads
        values = u.new_empty((n, k))
        grads = u.new_empty((n, k, self.dim + 1)) if with_grad else None
        for i in range(0, n, step):
            out = (values[i:i + step], grads[i:i + step] if with_grad else None)
            _evaluate(u[i:i + step], self.dim, self.l_max, with_grad, out=out)
        return values, grads

    def _values(self, x):
        return self._compute(x, with_grad=False)[0]

    def _grad(self, x):
        return self._compute(x, with_grad=True)[1]

    def values_and_grad(self, x):
        """``(ep(x), ep.grad(x))`` in one pass."""
        x = self.manifold.validate(x, "x")
        return self._compute(x, with_grad=True)
