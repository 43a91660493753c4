"""Sphere(d) geometry and the real spherical harmonics of Sphere(2).

References: closed forms (volumes, l(l+1), Y_1 ∝ (y, z, x)), geomstats' Hypersphere, scipy's
complex harmonics ``sph_harm_y_all``, Gauss–Legendre × trapezoid quadrature and finite differences.
"""

import math

import numpy as np
import pytest
import torch
from scipy.special import sph_harm_y_all

from conftest import N_SIGMA, TOL, assert_close
from heatscore.manifolds import Sphere

RTOL, ATOL = TOL[torch.float64]

#: Finite differences: fourth-order stencils with step FD_STEP. Truncation ~ FD_STEP⁴ times a
#: fifth/sixth derivative (~l⁵ to l⁶ for degree l ≤ 10), round-off ~ 1e-16/FD_STEP²; observed
#: errors are ≤ 1e-7 on derivatives of size up to ~100, so FD_ATOL leaves a margin of 10.
FD_STEP = 2e-3
FD_ATOL = 1e-6

#: Near the antipode log's direction is ill-conditioned: a perturbation ε of y turns it by ε/δ
#: at distance π − δ. With δ = 1e-9 and ε ≈ 1e-16 that is ~1e-7.
NEAR_ANTIPODE_DELTA = 1e-9
NEAR_ANTIPODE_ATOL = 1e-6

#: geomstats computes exp/log/dist with arccos and its own branches: agreement to ~1e-14 observed.
GEOMSTATS_ATOL = 1e-12

#: Agreement with scipy's harmonics (values up to ~2.2 at l = 30; sphericart's recurrences are
#: accurate to a few 1e-14).
SCIPY_ATOL = 1e-12
#: Gradients reach ~50 at l = 30 and scipy's come through 1/sin θ: observed agreement ~4e-13.
SCIPY_GRAD_ATOL = 1e-11
#: sphericart's gradients are tangent to round-off (~1e-15 relative to |∇Y| ≲ 50 at l = 30).
TANGENT_ATOL = 1e-13


def _unit_rows(gen, n, d=3):
    z = torch.randn(n, d, generator=gen, dtype=torch.float64)
    return z / z.norm(dim=1, keepdim=True)


def _unit_tangents(x, gen):
    """Unit tangent vectors at the rows of x."""
    v = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    v = v - (v * x).sum(1, keepdim=True) * x
    return v / v.norm(dim=1, keepdim=True)


def _fd_weights(h):
    """Fourth-order central stencils on offsets (−2h, −h, h, 2h) (first) and with 0 (second)."""
    first = (torch.tensor([1.0, -8.0, 8.0, -1.0], dtype=torch.float64) / (12 * h),
             torch.tensor([-2.0, -1.0, 1.0, 2.0], dtype=torch.float64) * h)
    second = (torch.tensor([-1.0, 16.0, -30.0, 16.0, -1.0], dtype=torch.float64) / (12 * h * h),
              torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=torch.float64) * h)
    return first, second


def _real_sh_scipy(x, l_max):
    """Real harmonics built from scipy's complex ones with the documented convention:
    values (n, K) and ambient gradients (n, K, 3) = ∂θY e_θ + ∂φY/sin θ e_φ (off the poles)."""
    x = np.asarray(x)
    theta = np.arctan2(np.hypot(x[:, 0], x[:, 1]), x[:, 2])
    phi = np.arctan2(x[:, 1], x[:, 0])
    # (l, m, n) and (l, m, n, 2); negative m indexes from the end
    y, dy = sph_harm_y_all(l_max, l_max, theta, phi, diff_n=1)
    values = np.empty((x.shape[0], (l_max + 1) ** 2))
    d_theta, d_phi = np.empty_like(values), np.empty_like(values)
    for l in range(l_max + 1):
        for m in range(-l, l + 1):
            k = l * l + l + m
            part = np.imag if m < 0 else np.real
            factor = 1.0 if m == 0 else math.sqrt(2) * (-1) ** m
            values[:, k] = factor * part(y[l, abs(m)])
            d_theta[:, k] = factor * part(dy[l, abs(m), :, 0])
            d_phi[:, k] = factor * part(dy[l, abs(m), :, 1])
    ct, st, cp, sp = np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
    e_theta = np.stack([ct * cp, ct * sp, -st], -1)[:, None]
    e_phi = np.stack([-sp, cp, np.zeros_like(sp)], -1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        grads = d_theta[..., None] * e_theta + (d_phi / st[:, None])[..., None] * e_phi
    return values, grads


# --- construction ---------------------------------------------------------------------------

def test_dim_volume_repr():
    s = Sphere()
    assert s.dim == 2 and s.point_shape == (3,) and s.ambient_shape == (3,)
    assert repr(s) == "Sphere(2)"
    assert_close(s.volume, 4 * math.pi, rtol=1e-15, atol=0)
    for d, vol in [(1, 2 * math.pi), (3, 2 * math.pi ** 2), (4, 8 * math.pi ** 2 / 3),
                   (5, math.pi ** 3)]:
        expected = 2 * math.pi ** ((d + 1) / 2) / math.gamma((d + 1) / 2)
        assert_close(Sphere(d).volume, vol, rtol=1e-14, atol=0)
        assert_close(Sphere(d).volume, expected, rtol=1e-14, atol=0)


def test_dim_validation():
    with pytest.raises(ValueError, match="dim must be >= 1, found 0"):
        Sphere(0)
    with pytest.raises(TypeError, match="dim must be an integer"):
        Sphere(2.5)


# --- geometry -------------------------------------------------------------------------------

def test_belongs(gen):
    s = Sphere()
    x = _unit_rows(gen, 6)
    x[1] *= 1 + 1e-3
    x[2] *= 1 + 1e-8
    x[3, 0] = float("nan")
    assert s.belongs(x).tolist() == [True, False, True, False, True, True]
    assert s.belongs(x[:3], atol=1e-2).tolist() == [True, True, True]
    x32 = (_unit_rows(gen, 2) * torch.tensor([[1 + 5e-5], [1 + 5e-4]], dtype=torch.float64)).float()
    assert s.belongs(x32).tolist() == [True, False]


@pytest.mark.parametrize("d", [1, 2, 3])
def test_proj_idempotent_and_tangent(d, gen):
    s = Sphere(d)
    x = _unit_rows(gen, 50, d + 1)
    v = torch.randn(50, d + 1, generator=gen, dtype=torch.float64)
    p = s.proj(x, v)
    assert_close((p * x).sum(1), torch.zeros(50))
    assert_close(s.proj(x, p), p)
    t = _unit_tangents(x, gen)
    assert_close(s.proj(x, t), t)


@pytest.mark.parametrize("d", [1, 2, 3])
def test_exp_log_dist(d, gen):
    s = Sphere(d)
    x, y = _unit_rows(gen, 200, d + 1), _unit_rows(gen, 200, d + 1)
    v = s.log(x, y)
    assert_close((v * x).sum(1), torch.zeros(200))
    assert_close(s.exp(x, v), y)
    dist = s.dist(x, y)
    assert_close(dist, v.norm(dim=1))
    assert_close(dist, torch.arccos((x * y).sum(1).clamp(-1, 1)), rtol=1e-7, atol=1e-7)
    assert_close(s.dist(y, x), dist)
    assert bool(s.belongs(s.exp(x, 7.0 * v)).all())
    assert_close(s.exp(x, torch.zeros_like(x)), x)
    assert_close(s.log(x, x), torch.zeros_like(x))


def test_exp_closed_form_and_normal_part(gen):
    s = Sphere()
    x = _unit_rows(gen, 20)
    u = _unit_tangents(x, gen)
    r = torch.linspace(0.0, 3 * math.pi, 20, dtype=torch.float64).unsqueeze(1)
    expected = torch.cos(r) * x + torch.sin(r) * u
    assert_close(s.exp(x, r * u), expected)
    # the component of v along x is dropped (v is projected onto T_x first)
    assert_close(s.exp(x, r * u + 3.0 * x), expected)


def test_exp_differentiable_at_zero(gen):
    # exp_x(v) = x + P_x v + O(|v|²), so d<c, exp_x(v)>/dv at v = 0 is P_x c (finite, no NaN)
    s = Sphere()
    x = _unit_rows(gen, 5)
    c = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    v = torch.zeros_like(x, requires_grad=True)
    (s.exp(x, v) * c).sum().backward()
    assert_close(v.grad, s.proj(x, c))


def test_tiny_angles(gen):
    s = Sphere()
    x = _unit_rows(gen, 30)
    u = _unit_tangents(x, gen)
    eps = torch.logspace(-15, -3, 30, dtype=torch.float64).unsqueeze(1)
    y = torch.cos(eps) * x + torch.sin(eps) * u
    # y is exact to ~1e-16 per coordinate, so the angle is known to ~1e-16 absolutely.
    assert_close(s.dist(x, y), eps[:, 0], rtol=0, atol=1e-15)
    assert_close(s.log(x, y), eps * u, rtol=0, atol=1e-15)


def test_near_and_exact_antipode(gen):
    s = Sphere()
    x = _unit_rows(gen, 30)
    u = _unit_tangents(x, gen)
    theta = math.pi - NEAR_ANTIPODE_DELTA
    y = math.cos(theta) * x + math.sin(theta) * u
    assert_close(s.dist(x, y), torch.full((30,), theta, dtype=torch.float64), rtol=0, atol=1e-15)
    v = s.log(x, y)
    assert_close(v.norm(dim=1), s.dist(x, y))
    assert_close(v, theta * u, rtol=0, atol=NEAR_ANTIPODE_ATOL)
    assert_close(s.exp(x, v), y, rtol=0, atol=1e-14)
    # exact antipode: finite, tangent, length π, and exp returns −x
    w = s.log(x, -x)
    assert bool(torch.isfinite(w).all())
    assert_close(w.norm(dim=1), torch.full((30,), math.pi, dtype=torch.float64))
    assert_close((w * x).sum(1), torch.zeros(30))
    assert_close(s.exp(x, w), -x)
    assert_close(s.dist(x, -x), torch.full((30,), math.pi, dtype=torch.float64), rtol=0, atol=0)


def test_antipode_direction_is_documented():
    s = Sphere()
    north = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64)
    assert_close(s.log(north, -north), [[math.pi, 0.0, 0.0]], rtol=0, atol=0)
    x = torch.tensor([[0.6, 0.0, 0.8]], dtype=torch.float64)  # argmin |x_i| is i = 1
    assert_close(s.log(x, -x), [[0.0, math.pi, 0.0]], rtol=0, atol=0)
    x = torch.tensor([[0.0, 0.6, 0.8]], dtype=torch.float64)  # the first axis on ties
    assert_close(s.log(x, -x), [[math.pi, 0.0, 0.0]], rtol=0, atol=0)


def test_broadcast_leading_one(gen):
    s = Sphere()
    x, y = _unit_rows(gen, 1), _unit_rows(gen, 7)
    xe = x.expand(7, 3)
    assert_close(s.dist(x, y), s.dist(xe, y))
    assert_close(s.dist(y, x), s.dist(y, xe))
    assert_close(s.log(x, y), s.log(xe, y))
    v = s.log(xe, y)
    assert_close(s.exp(x, v), y)
    assert_close(s.proj(x, y), s.proj(xe, y))
    with pytest.raises(ValueError, match="same number of rows"):
        s.dist(y[:3], y[:2])


def test_pairwise_dist(gen):
    s = Sphere()
    x, y = _unit_rows(gen, 5), _unit_rows(gen, 4)
    d = s.pairwise_dist(x, y)
    assert_close(d, torch.arccos((x @ y.T).clamp(-1, 1)), rtol=1e-7, atol=1e-7)


def test_float32_follows_input(gen):
    s = Sphere()
    x, y = _unit_rows(gen, 4).float(), _unit_rows(gen, 4).float()
    assert s.log(x, y).dtype == torch.float32
    assert s.dist(x, y).dtype == torch.float32
    assert s.eigenpairs(3)(x).dtype == torch.float32
    assert s.random_uniform(3, rng=0, dtype=torch.float32).dtype == torch.float32


def test_agrees_with_geomstats(gen):
    from geomstats.geometry.hypersphere import Hypersphere
    space = Sphere().to_geomstats()
    assert isinstance(space, Hypersphere) and space.dim == 2
    s = Sphere()
    x, y = _unit_rows(gen, 50), _unit_rows(gen, 50)
    keep = (x * y).sum(1) > -0.99  # geomstats' log loses accuracy at the antipode
    x, y = x[keep], y[keep]
    v = s.log(x, y)
    xn, yn, vn = x.numpy(), y.numpy(), v.numpy()
    assert_close(s.exp(x, v), space.metric.exp(vn, xn), rtol=0, atol=GEOMSTATS_ATOL)
    assert_close(v, space.metric.log(yn, xn), rtol=0, atol=GEOMSTATS_ATOL)
    assert_close(s.dist(x, y), space.metric.dist(xn, yn), rtol=0, atol=GEOMSTATS_ATOL)
    assert bool(torch.as_tensor(space.belongs(s.random_uniform(10, rng=3).numpy())).all())


# --- sampling -------------------------------------------------------------------------------

def test_random_uniform_shape_and_reproducible():
    s = Sphere()
    x = s.random_uniform(100, rng=7)
    assert x.shape == (100, 3) and x.dtype == torch.float64
    assert bool(s.belongs(x).all())
    assert torch.equal(x, s.random_uniform(100, rng=7))
    assert not torch.equal(x, s.random_uniform(100, rng=8))
    assert s.random_uniform(0, rng=0).shape == (0, 3)
    assert Sphere(4).random_uniform(3, rng=0).shape == (3, 5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        s.random_uniform(-1)
    with pytest.raises(TypeError, match="n must be an integer"):
        s.random_uniform(2.5)


def test_random_uniform_moments():
    """E φ_k = 0 for k ≥ 1 and E φ_k² = 1/4π under the uniform law (orthonormality w.r.t. area).

    Each of the 35 means is within N_SIGMA standard errors of 0 (s.e. = (1/(4π n))^½);
    false-failure chance about 35 × 5.7e-7.
    """
    n = 40_000
    s = Sphere()
    values = s.eigenpairs(6)(s.random_uniform(n, rng=11))[:, 1:]
    se = math.sqrt(1 / (4 * math.pi * n))
    assert float(values.mean(0).abs().max()) < N_SIGMA * se
    # the second moments: a looser, deterministic-seed sanity check (10% of 1/4π)
    assert float((values.pow(2).mean(0) * 4 * math.pi - 1).abs().max()) < 0.1


def test_random_tangent_normal_isotropic():
    """ξ ~ N(0, I₂) in an orthonormal frame (e1, e2) of T_x: covariance within N_SIGMA s.e. of I.

    s.e. of a diagonal entry √(2/n), off-diagonal √(1/n); false-failure chance ~3 × 5.7e-7.
    """
    n = 20_000
    s = Sphere()
    x = s.random_uniform(n, rng=5)
    xi = s.random_tangent_normal(x, rng=6)
    assert_close((xi * x).sum(1), torch.zeros(n))
    axis = torch.nn.functional.one_hot(x.abs().argmin(1), 3).to(x.dtype)
    e1 = axis - (axis * x).sum(1, keepdim=True) * x
    e1 = e1 / e1.norm(dim=1, keepdim=True)
    e2 = torch.linalg.cross(x, e1)
    c = torch.stack([(xi * e1).sum(1), (xi * e2).sum(1)], 1)
    cov = c.T @ c / n
    assert abs(float(cov[0, 0]) - 1) < N_SIGMA * math.sqrt(2 / n)
    assert abs(float(cov[1, 1]) - 1) < N_SIGMA * math.sqrt(2 / n)
    assert abs(float(cov[0, 1])) < N_SIGMA * math.sqrt(1 / n)
    assert torch.equal(xi, s.random_tangent_normal(x, rng=6))


# --- eigenpairs -----------------------------------------------------------------------------

def test_eigenpair_metadata():
    ep = Sphere().eigenpairs(5)
    l = torch.tensor([l for l in range(5) for _ in range(2 * l + 1)])
    m = torch.tensor([m for l in range(5) for m in range(-l, l + 1)])
    assert len(ep) == 25 and ep.n_levels == 5 and ep.l_max == 4
    assert torch.equal(ep.levels, l)
    assert torch.equal(ep.orders, m)
    assert torch.equal(ep.multiplicities, torch.tensor([1, 3, 5, 7, 9]))
    assert ep.eigenvalues.dtype == torch.float64
    assert torch.equal(ep.eigenvalues, (l * (l + 1)).double())
    assert repr(ep) == "SphericalHarmonics(Sphere(2), n_levels=5, n_eigenfunctions=25)"


def test_eigenpairs_validation():
    s = Sphere()
    with pytest.raises(ValueError, match="n_levels must be >= 1, found 0"):
        s.eigenpairs(0)
    with pytest.raises(TypeError, match="n_levels must be an integer"):
        s.eigenpairs(2.5)
    with pytest.raises(ValueError, match="manifold.dim must be >= 2"):
        Sphere(1).eigenpairs(2)                       # the circle's eigenpairs: Torus(1)


def test_degree_one_closed_form(gen):
    x = _unit_rows(gen, 10)
    ep = Sphere().eigenpairs(2)
    c = math.sqrt(3 / (4 * math.pi))
    assert_close(ep(x), torch.cat([torch.full((10, 1), 0.5 / math.sqrt(math.pi), dtype=torch.float64),
                                   c * x[:, [1, 2, 0]]], 1))
    grad = ep.grad(x)
    proj = torch.eye(3, dtype=torch.float64) - x.unsqueeze(2) * x.unsqueeze(1)
    assert_close(grad[:, 0], torch.zeros(10, 3))
    assert_close(grad[:, 1:], c * proj[:, [1, 2, 0]])


def test_orthonormal_by_quadrature():
    """Gauss–Legendre in cos θ (L + 2 nodes) × trapezoid in φ (2L + 2 nodes) is exact for the
    products of harmonics of degree ≤ L: trig degree ≤ 2L in φ, and where the φ-integral is not
    zero the cos θ factor is a polynomial of degree ≤ 2L."""
    l_max = 20
    t, w = np.polynomial.legendre.leggauss(l_max + 2)
    n_phi = 2 * l_max + 2
    phi = 2 * np.pi * np.arange(n_phi) / n_phi
    st = np.sqrt(1 - t ** 2)
    x = np.stack([np.outer(st, np.cos(phi)), np.outer(st, np.sin(phi)),
                  np.outer(t, np.ones(n_phi))], -1).reshape(-1, 3)
    weights = torch.as_tensor(np.outer(w, np.full(n_phi, 2 * np.pi / n_phi)).ravel())
    values = Sphere().eigenpairs(l_max + 1)(x)
    gram = values.T @ (weights.unsqueeze(1) * values)
    assert_close(gram, torch.eye(values.shape[1], dtype=torch.float64), rtol=0, atol=1e-12)


def test_matches_scipy_to_l30(gen):
    l_max = 30
    x = _unit_rows(gen, 300)
    eps = torch.tensor([1e-15, 1e-12, 1e-9, 1e-6, 1e-3], dtype=torch.float64)
    near_pole = torch.stack([eps * math.cos(0.7), eps * math.sin(0.7), torch.sqrt(1 - eps ** 2)], 1)
    poles = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]], dtype=torch.float64)
    x = torch.cat([x, near_pole, -near_pole, poles])
    ep = Sphere().eigenpairs(l_max + 1)
    values, grads = ep.values_and_grad(x)
    ref_values, ref_grads = _real_sh_scipy(x.numpy(), l_max)
    assert_close(values, ref_values, rtol=0, atol=SCIPY_ATOL)
    assert_close(ep(x), ref_values, rtol=0, atol=SCIPY_ATOL)
    # gradients (up to ~50 at l = 30): against scipy off the poles, tangent everywhere
    assert_close(grads[:300], ref_grads[:300], rtol=0, atol=SCIPY_GRAD_ATOL)
    assert_close(ep.grad(x), grads, rtol=0, atol=0)
    assert_close((grads * x.unsqueeze(1)).sum(-1), torch.zeros(len(x), len(ep)), rtol=0,
                 atol=TANGENT_ATOL)


def test_laplacian_eigenfunctions(gen):
    """Δ_S φ = Δ_{R³} F on |x| = 1 for the degree-0 extension F(x) = φ(x/|x|); ΔF by 4th-order FD."""
    l_max = 8
    ep = Sphere().eigenpairs(l_max + 1)
    x = _unit_rows(gen, 20)
    (_, _), (w2, offsets) = _fd_weights(FD_STEP)
    lap = torch.zeros(20, len(ep), dtype=torch.float64)
    for axis in range(3):
        e = torch.zeros(3, dtype=torch.float64)
        e[axis] = 1.0
        for wi, oi in zip(w2, offsets):
            p = x + oi * e
            lap += wi * ep(p / p.norm(dim=1, keepdim=True))
    expected = -ep.eigenvalues * ep(x)
    assert_close(lap, expected, rtol=0, atol=FD_ATOL)


def test_gradient_matches_finite_differences_along_geodesics(gen):
    """d/ds φ(exp_x(s u)) at s = 0 equals ⟨grad φ(x), u⟩ for unit tangent u."""
    s = Sphere()
    ep = s.eigenpairs(11)
    x = torch.cat([_unit_rows(gen, 20), torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, -1.0]],
                                                     dtype=torch.float64)])
    u = _unit_tangents(x, gen)
    (w1, offsets), _ = _fd_weights(FD_STEP)
    fd = sum(wi * ep(s.exp(x, oi * u)) for wi, oi in zip(w1, offsets))
    grad = ep.grad(x)
    assert grad.shape == (22, 121, 3)
    assert_close((grad * x.unsqueeze(1)).sum(-1), torch.zeros(22, 121), rtol=0, atol=TANGENT_ATOL)
    directional = (grad * u.unsqueeze(1)).sum(-1)
    assert_close(directional, fd, rtol=0, atol=FD_ATOL)
    values, grad2 = ep.values_and_grad(x)
    assert_close(values, ep(x), rtol=0, atol=0)
    assert_close(grad2, grad, rtol=0, atol=0)


def test_gradient_equals_autograd_of_values(gen):
    ep = Sphere().eigenpairs(6)
    x = _unit_rows(gen, 8).requires_grad_()
    values = ep(x)
    coeffs = torch.randn(values.shape[1], generator=gen, dtype=torch.float64)
    (auto,) = torch.autograd.grad((values @ coeffs).sum(), x)
    assert_close(auto, torch.einsum("nki,k->ni", ep.grad(x.detach()), coeffs))


def test_gradient_autograd_hessian(gen):
    """Autograd through ep.grad (e.g. a divergence) vs finite differences along geodesics."""
    s = Sphere()
    ep = s.eigenpairs(7)
    x = _unit_rows(gen, 10)
    u = _unit_tangents(x, gen)
    c = torch.randn(10, len(ep), 3, generator=gen, dtype=torch.float64)
    xr = x.clone().requires_grad_()
    (auto,) = torch.autograd.grad((ep.grad(xr) * c).sum(), xr)
    (w1, offsets), _ = _fd_weights(FD_STEP)
    fd = sum(wi * (ep.grad(s.exp(x, oi * u)) * c).sum((1, 2)) for wi, oi in zip(w1, offsets))
    assert_close((auto * u).sum(1), fd, rtol=0, atol=FD_ATOL)
    # divergence of grad φ is Δφ = −l(l+1)φ: the trace of the tangent part of ∂(grad φ)/∂x
    xr = x[:1].clone().requires_grad_()
    k = 20  # (l, m) = (4, 0)
    rows = [torch.autograd.grad(ep.grad(xr)[0, k, i], xr)[0][0] for i in range(3)]
    jac = torch.stack(rows)  # ∂g_i/∂x_j
    proj = torch.eye(3, dtype=torch.float64) - x[0].unsqueeze(1) * x[0].unsqueeze(0)
    div = torch.trace(proj @ jac @ proj)
    assert_close(div, -20.0 * ep(x[:1])[0, k])
    # create_graph through ep.grad: differentiable in outer coefficients, not again in x
    a = torch.tensor(2.0, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(a * (ep.grad(xr) * c[:1]).sum(), xr, create_graph=True)
    (da,) = torch.autograd.grad((g * u[:1]).sum(), a)
    assert_close(da, (auto[:1] * u[:1]).sum())
    with pytest.raises(RuntimeError, match="Third derivatives"):
        (g,) = torch.autograd.grad((ep.grad(xr) * c[:1]).sum(), xr, create_graph=True)
        torch.autograd.grad(g.sum(), xr)


def test_eigenpair_point_validation(gen):
    ep = Sphere().eigenpairs(3)
    x = _unit_rows(gen, 5)
    bad = x.clone()
    bad[2] *= 1.01
    message = r"x has 1 of 5 points off Sphere\(2\): max \| \|x\| - 1 \| = 1\.00e-02"
    with pytest.raises(ValueError, match=message):
        ep(bad)
    with pytest.raises(ValueError, match="off Sphere"):
        ep.grad(bad)
    nan = x.clone()
    nan[0, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite: found 1 NaN/inf"):
        ep(nan)
    with pytest.raises(ValueError, match=r"x must be points of shape \(n, 3\), found shape \(5, 4\)"):
        ep(torch.zeros(5, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be points of shape \(n, 3\), found shape \(3,\)"):
        ep(x[0])
    with pytest.raises(TypeError, match="x must be a numpy array or torch tensor"):
        ep("north pole")


def test_geometry_validation(gen):
    s = Sphere()
    x = _unit_rows(gen, 4)
    with pytest.raises(ValueError, match=r"y has 1 of 4 points off Sphere\(2\)"):
        s.log(x, x * torch.tensor([[1.0], [1.0], [2.0], [1.0]], dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x has 4 of 4 points off Sphere\(2\)"):
        s.dist(2 * x, x)
    with pytest.raises(ValueError, match=r"v must be tangent vectors of shape \(n, 3\)"):
        s.exp(x, torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="v must be finite"):
        s.exp(x, torch.full((4, 3), float("inf"), dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must be points of shape \(n, 4\)"):
        Sphere(3).random_tangent_normal(x)
