"""The contract every heatscore manifold keeps, as checks a test suite runs.

Each ``check_*`` function takes a manifold (and what it needs: times, resolutions, tolerances) and
raises ``AssertionError`` with a message when the manifold breaks the contract; it returns None
otherwise. heatscore's own tests run every check over one list of all manifolds, so a new manifold
is covered by adding it there; a user's new manifold can run them the same way:

    from heatscore import testing
    for check in testing.CHECKS:
        check(my_manifold)

The checks use only the public API and the protocol of ``heatscore.manifolds._base``: points
belong, projections are idempotent, exp(x, log(x, y)) = y and dist = |log|, the forward process
(drift −x on R^d, zero on compact manifolds), eigenpairs (structure, tangent gradients,
orthonormality by deterministic quadrature), the heat kernel (∫ k_t(x, y) dvol(x) = 1, the
semigroup k_s ∗ k_t = k_{s+t} on compact manifolds, and the equation ∂_t k = L_y k by finite
differences, L = DΔ + b·∇; on meshes the discrete semigroup's ∂_t K = −M⁻¹S K), and the forward
sampler's moments (E φ(X_t) = e^{−λt} φ(x_0) within ``N_SIGMA`` standard errors).

Defaults are sized for a fast suite: times and tolerances scale with the manifold (1/λ_1; on
meshes the mean edge length).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Optional, Sequence, Tuple

import torch

from heatscore.heat_kernels import HeatKernel, sample_heat_kernel

if TYPE_CHECKING:
    from heatscore.manifolds._base import Manifold

__all__ = ["CHECKS", "N_SIGMA", "check_points", "check_tangent_spaces", "check_exp_log",
           "check_forward_process", "check_eigenpairs", "check_orthonormality",
           "check_heat_kernel_normalised", "check_semigroup", "check_heat_equation",
           "check_forward_sampling"]

#: Statistical checks use this many standard errors: for a Gaussian statistic the two-sided chance
#: of a false failure is about 5.7e-7 per checked moment.
N_SIGMA = 5.0
#: Mesh log/dist come from the (vector) heat method: agreement is a fraction of the mean edge
#: length, not round-off.
MESH_EDGE_FRACTION = 0.25


def _fail(condition, message):
    if not condition:
        raise AssertionError(message)


def _compact(m):
    return math.isfinite(m.volume)


def _edge(m):
    """The mean edge length of a mesh (or of a product's mesh factors, the smallest), else None."""
    edges = [getattr(f, "mean_edge_length", None) for f in getattr(m, "factors", (m,))]
    edges = [e for e in edges if e is not None]
    return min(edges) if edges else None


def _geometric_tol(m, atol):
    """Round-off, or a fraction of the mean edge length on a mesh (approximate log and dist)."""
    edge = _edge(m)
    return max(atol, MESH_EDGE_FRACTION * edge) if edge is not None else atol


def _max_abs(a, b):
    return float((torch.as_tensor(a) - torch.as_tensor(b)).abs().max()) if torch.as_tensor(a).numel() else 0.0


def check_points(m: Manifold, n: int = 200) -> None:
    """Stationary draws are points of the manifold, float64, reproducible by seed, different for
    another seed, and never touch torch's global random state."""
    state = torch.get_rng_state()
    x = m.sample_stationary(n, rng=0)
    _fail(tuple(x.shape) == (n,) + tuple(m.point_shape), f"{m!r}: points of shape {tuple(x.shape)}")
    _fail(x.dtype == torch.float64, f"{m!r}: points of dtype {x.dtype}")
    _fail(bool(m.belongs(x).all()), f"{m!r}: stationary draws off the manifold")
    _fail(torch.equal(x, m.sample_stationary(n, rng=0)), f"{m!r}: one seed, two results")
    _fail(not torch.equal(x, m.sample_stationary(n, rng=1)), f"{m!r}: two seeds, one result")
    m.random_tangent_normal(x[:5], rng=2)
    _fail(torch.equal(state, torch.get_rng_state()), f"{m!r}: the global random state changed")


def check_tangent_spaces(m: Manifold, n: int = 100, atol: float = 1e-12) -> None:
    """proj is idempotent; tangent normal draws are tangent; the metric's frame is orthonormal."""
    x = m.sample_stationary(n, rng=3)
    v = torch.randn((n,) + tuple(m.ambient_shape), generator=torch.Generator().manual_seed(4),
                    dtype=torch.float64)
    p = m.proj(x, v)
    _fail(_max_abs(m.proj(x, p), p) <= atol * max(1.0, float(p.abs().max())),
          f"{m!r}: proj is not idempotent")
    xi = m.random_tangent_normal(x, rng=5)
    _fail(_max_abs(m.proj(x, xi), xi) <= atol * max(1.0, float(xi.abs().max())),
          f"{m!r}: random_tangent_normal is not tangent")
    if m.smooth_scores:
        frame = m._tangent_frame(x)                                     # (n, dim, *ambient)
        _fail(tuple(frame.shape) == (n, m.dim) + tuple(m.ambient_shape), f"{m!r}: frame shape")
        gram = torch.stack([torch.stack([m._inner(x, frame[:, i], frame[:, j]) for j in range(m.dim)], 1)
                            for i in range(m.dim)], 1)
        eye = torch.eye(m.dim, dtype=x.dtype).expand_as(gram)
        _fail(_max_abs(gram, eye) <= 1e-10, f"{m!r}: the tangent frame is not g-orthonormal")


def check_exp_log(m: Manifold, n: int = 60, scale: float = 0.05, atol: float = 1e-9) -> None:
    """exp(x, log(x, y)) = y, dist(x, y) = |log_x y| = scale·|ξ| for y = exp(x, scale·ξ), and
    pairwise_dist agrees with dist, symmetric, zero on the diagonal (mesh: within a fraction of
    the edge length)."""
    x = m.sample_stationary(n, rng=6)
    xi = m.random_tangent_normal(x, rng=7)
    edge = _edge(m)
    step = scale * (20 * edge if edge is not None else 1.0)
    y = m.exp(x, step * xi)
    _fail(bool(m.belongs(y).all()), f"{m!r}: exp leaves the manifold")
    tol = _geometric_tol(m, atol)
    v = m.log(x, y)
    y2 = m.exp(x, v)
    err = m.dist(y, y2) if edge is None else (y - y2).norm(dim=1)
    _fail(float(err.max()) <= tol, f"{m!r}: exp(x, log(x, y)) ≠ y by {float(err.max()):.2e}")
    _fail(_max_abs(m.dist(x, y), m.norm(x, v)) <= tol, f"{m!r}: dist ≠ |log|")
    _fail(_max_abs(m.dist(x, y), step * m.norm(x, xi)) <= tol, f"{m!r}: dist(x, exp(x, v)) ≠ |v|")
    a, b = x[:7], y[:5]
    d = m.pairwise_dist(a, b)
    _fail(tuple(d.shape) == (7, 5), f"{m!r}: pairwise_dist shape {tuple(d.shape)}")
    _fail(_max_abs(d[2], m.dist(a[2:3], b)) <= tol, f"{m!r}: pairwise_dist ≠ dist")
    _fail(_max_abs(d.T, m.pairwise_dist(b, a)) <= max(tol, 1e-6), f"{m!r}: dist is not symmetric")
    _fail(float(m.dist(a, a).abs().max()) <= tol, f"{m!r}: dist(x, x) ≠ 0")


def check_forward_process(m: Manifold, n: int = 10) -> None:
    """The drift is zero on compact manifolds (finite positive volume); on R^d (infinite volume)
    it is the OU drift on the Euclidean coordinates, divergent as stated."""
    x = m.sample_stationary(n, rng=8)
    b = m.drift(x)
    _fail(tuple(b.shape) == (n,) + tuple(m.ambient_shape), f"{m!r}: drift shape {tuple(b.shape)}")
    process = m._forward_process()
    if _compact(m):
        _fail(m.volume > 0, f"{m!r}: volume {m.volume}")
        _fail(int(torch.count_nonzero(b)) == 0, f"{m!r}: a compact manifold with a drift")
        _fail(process.drift_divergence == 0.0, f"{m!r}: nonzero drift divergence")
        lp = process.log_stationary(x)
        _fail(_max_abs(lp, torch.full_like(lp, -math.log(m.volume))) <= 1e-12,
              f"{m!r}: the stationary law is not uniform")
    else:
        _fail(process.drift_divergence < 0, f"{m!r}: an OU drift has negative divergence")
        _fail(_max_abs(m._proj(x, b), b) <= 1e-12, f"{m!r}: the drift is not tangent")


def check_eigenpairs(m: Manifold, n_levels: int = 4, n: int = 9) -> None:
    """Eigenvalues ascending from 0, one level per distinct value (whole eigenspaces), values and
    finite Riemannian gradients of the right shapes, gradients tangent; on compact manifolds the
    constant is 1/√vol."""
    ep = m.eigenpairs(n_levels)
    K = len(ep)
    _fail(ep.eigenvalues.shape == (K,) and ep.levels.shape == (K,), f"{m!r}: eigenpair shapes")
    _fail(ep.multiplicities.shape == (n_levels,), f"{m!r}: {ep.multiplicities.shape[0]} levels")
    _fail(int(ep.multiplicities.sum()) == K, f"{m!r}: multiplicities do not add up")
    _fail(bool((ep.eigenvalues[1:] >= ep.eigenvalues[:-1] - 1e-12).all()), f"{m!r}: not ascending")
    _fail(abs(float(ep.eigenvalues[0])) <= 1e-8, f"{m!r}: λ_0 = {float(ep.eigenvalues[0])}")
    _fail(torch.equal(torch.bincount(ep.levels, minlength=n_levels), ep.multiplicities),
          f"{m!r}: levels and multiplicities disagree")
    x = m.sample_stationary(n, rng=9)
    vals, grads = ep(x), ep.grad(x)
    _fail(vals.shape == (n, K), f"{m!r}: values of shape {tuple(vals.shape)}")
    _fail(grads.shape == (n, K) + tuple(m.ambient_shape), f"{m!r}: gradients of shape {tuple(grads.shape)}")
    _fail(bool(torch.isfinite(vals).all() and torch.isfinite(grads).all()), f"{m!r}: NaN/inf")
    flat = grads.reshape((n * K,) + tuple(m.ambient_shape))
    xr = x.repeat_interleave(K, dim=0)
    _fail(_max_abs(m.proj(xr, flat), flat) <= 1e-9 * max(1.0, float(flat.abs().max())),
          f"{m!r}: gradients are not tangent")
    if _compact(m) and not m.discrete:
        const = torch.full((n,), 1 / math.sqrt(m.volume), dtype=torch.float64)
        _fail(_max_abs(vals[:, 0].abs(), const) <= 1e-8,
              f"{m!r}: the constant eigenfunction is not 1/√vol")


def _resolution(m, n_levels):
    """A quadrature resolution exact for products of eigenfunctions of n_levels levels."""
    rule = m._product_rule(n_levels)
    return rule[1] if rule is not None else 2 * n_levels


def _kernel_resolution(m, t, tail=25.0):
    """A quadrature resolution that integrates k_t exactly to round-off: exact for the
    eigenfunctions of the levels with λ t ≤ ``tail`` (e^{−25} ≈ 1e-11 beyond); meshes' vertex
    rule has no resolution."""
    if m.discrete:
        return None
    levels = 2
    while float(m.eigenpairs(levels).eigenvalues[-1]) * t < tail:
        levels += 1
    return _resolution(m, levels)


def _product_kernel_identity(m, t):
    """Products: log k_t = Σ_f log k_{f,t} at random pairs (the factors' checks do the rest)."""
    x, y = m.sample_stationary(6, rng=18), m.sample_stationary(6, rng=19)
    total = sum(HeatKernel(f).log_pairs(p, q, t) for f, p, q in zip(m.factors, m.split(x), m.split(y)))
    err = _max_abs(HeatKernel(m).log_pairs(x, y, t), total)
    _fail(err <= 1e-10 * max(1.0, float(total.abs().max())),
          f"{m!r}: the product kernel is not the product of the factors' ({err:.2e})")


def check_orthonormality(m: Manifold, n_levels: int = 3, n: Optional[int] = None,
                         atol: float = 1e-9) -> None:
    """Φᵀ W Φ = I by the manifold's deterministic quadrature (w.r.t. dvol on compact manifolds,
    the reference measure μ of the eigenbasis on R^d, the lumped mass on meshes)."""
    z, w = m.quadrature(_resolution(m, n_levels) if n is None else n)
    log_ref = m._log_reference(z)
    if log_ref is not None:
        w = w * torch.exp(log_ref)
    phi = m.eigenpairs(n_levels)(z)
    gram = (phi * w[:, None]).T @ phi
    err = _max_abs(gram, torch.eye(gram.shape[0], dtype=gram.dtype))
    _fail(err <= atol, f"{m!r}: eigenfunctions are not orthonormal (max error {err:.2e})")


def _time(m, t):
    return t / m._first_eigenvalue()


def check_heat_kernel_normalised(m: Manifold, t: float = 0.5, n: Optional[int] = None,
                                 rtol: float = 1e-7, n_points: int = 3) -> None:
    """∫ k_t(x, y) dvol(x) = 1 for a few y, by quadrature (t in units of 1/λ_1); on products the
    factors' normalisations and k = Π k_f (a quadrature of the product is too large)."""
    tt = _time(m, t)
    if getattr(m, "factors", None) is not None:
        _product_kernel_identity(m, tt)
        for f in m.factors:
            check_heat_kernel_normalised(f, tt * f._first_eigenvalue(), rtol=rtol)
        return
    z, w = m.quadrature(_kernel_resolution(m, tt) if n is None else n)
    y = m.sample_stationary(n_points, rng=10)
    total = w @ HeatKernel(m)(z, y, tt)
    err = _max_abs(total, torch.ones(n_points, dtype=torch.float64))
    _fail(err <= rtol, f"{m!r}: ∫ k_t dvol − 1 = {err:.2e} at t = {tt:.3g}")


def check_semigroup(m: Manifold, s: float = 0.2, t: float = 0.3, n: Optional[int] = None,
                    rtol: float = 1e-7) -> None:
    """Compact manifolds: ∫ k_s(x, z) k_t(z, y) dvol(z) = k_{s+t}(x, y) by quadrature (products:
    the factors' semigroups and k = Π k_f)."""
    if not _compact(m):
        return
    ss, tt = _time(m, s), _time(m, t)
    if getattr(m, "factors", None) is not None:
        _product_kernel_identity(m, ss)
        for f in m.factors:
            lam = f._first_eigenvalue()
            check_semigroup(f, ss * lam, tt * lam, rtol=rtol)
        return
    z, w = m.quadrature(_kernel_resolution(m, min(ss, tt)) if n is None else n)
    x, y = m.sample_stationary(4, rng=11), m.sample_stationary(3, rng=12)
    k = HeatKernel(m)
    lhs = (k(z, x, ss).T * w) @ k(z, y, tt)                 # k is symmetric on compact manifolds
    rhs = k(x, y, ss + tt)
    err = float(((lhs - rhs).abs() / rhs.abs()).max())
    _fail(err <= rtol, f"{m!r}: semigroup violated by {err:.2e} (relative)")


def check_heat_equation(m: Manifold, t: float = 0.05, h: float = 1e-4, rtol: float = 1e-4,
                        n: int = 5) -> None:
    """∂_t k_t(x, y) = L_y k_t(x, y) with L = DΔ + b·∇ (the generator acting on the starting point;
    on compact manifolds k is symmetric and this is the heat equation in either argument), by
    central differences in t and along geodesics of a g-orthonormal frame at y; on meshes the
    discrete semigroup's ∂_t K = −M⁻¹S K at the vertices."""
    tt = _time(m, t)
    k = HeatKernel(m)
    ht = 1e-5 * tt
    if m.discrete:
        verts = m.vertices
        cols = m.sample_stationary(n, rng=13)
        K = k(verts, cols, tt)
        dKdt = (k(verts, cols, tt + ht) - k(verts, cols, tt - ht)) / (2 * ht)
        SK = torch.as_tensor(m.stiffness @ K.numpy()) / torch.as_tensor(m.mass.diagonal())[:, None]
        err = float((dKdt + SK).abs().max() / dKdt.abs().max())
        _fail(err <= rtol, f"{m!r}: ∂_t K + M⁻¹S K = {err:.2e} (relative)")
        return
    if not m.smooth_scores:              # a product with a mesh factor: no frame across faces
        return
    x, y = m.sample_stationary(n, rng=13), m.sample_stationary(n, rng=14)
    process = m._forward_process()

    def f(yy):
        return torch.exp(k.log_pairs(x, yy, tt))

    dkdt = (torch.exp(k.log_pairs(x, y, tt + ht)) - torch.exp(k.log_pairs(x, y, tt - ht))) / (2 * ht)
    frame = m._tangent_frame(y)
    b = process.drift(y)
    f0, gen = f(y), 0.0
    for i in range(m.dim):
        e = frame[:, i]
        fp, fm = f(m._exp(y, h * e)), f(m._exp(y, -h * e))
        gen = gen + process.diffusion * (fp + fm - 2 * f0) / h ** 2 + m._inner(y, b, e) * (fp - fm) / (2 * h)
    err = float(((dkdt - gen).abs() / (dkdt.abs() + f0.abs() / tt)).max())
    _fail(err <= rtol, f"{m!r}: ∂_t k − L_y k = {err:.2e} (relative to |∂_t k| + k/t) at t = {tt:.3g}")


def check_forward_sampling(m: Manifold, times: Sequence[float] = (1e-3, 0.05, 0.6),
                           n_samples: int = 20000, n_levels: int = 3,
                           bias: float = 0.0) -> None:
    """E φ_j(X_t) = e^{−λ_j t} φ_j(x_0) for X_t = ``sample_heat_kernel`` from x_0, within
    N_SIGMA standard errors (+ ``bias``, for samplers with a stated bias: the mesh walk)."""
    ep = m.eigenpairs(n_levels)
    x0 = m.sample_stationary(2, rng=16)
    for t in times:
        tt = _time(m, t)
        for i in range(2):
            start = x0[i:i + 1].expand((n_samples,) + tuple(m.point_shape))
            xt = sample_heat_kernel(m, start, tt, rng=17 + i)
            _fail(bool(m.belongs(xt).all()), f"{m!r}: forward draws off the manifold")
            vals = ep(xt)
            mean, se = vals.mean(0), vals.std(0) / math.sqrt(n_samples)
            expected = torch.exp(-ep.eigenvalues * tt) * ep(x0[i:i + 1])[0]
            dev = (mean - expected).abs() - bias * expected.abs().clamp_min(1.0)
            worst = float((dev / (se + 1e-300)).max())
            _fail(bool((dev <= N_SIGMA * se + 1e-12).all()),
                  f"{m!r}: forward moments off by {worst:.1f} standard errors at t = {tt:.3g}")


#: Every check, in the order a suite runs them (each with its defaults).
CHECKS: Tuple[Callable[[Manifold], None], ...] = (
    check_points, check_tangent_spaces, check_exp_log, check_forward_process, check_eigenpairs,
    check_orthonormality, check_heat_kernel_normalised, check_semigroup, check_heat_equation,
    check_forward_sampling)
