"""Sphere(d) for d >= 2: hyperspherical harmonics, zonal sums, the product quadrature, the heat
kernel of S^d and exact draws of the geodesic angle of Brownian motion.

References (independent of the implementation): deterministic quadrature and autograd
Laplacians for the harmonics, the addition theorem, mpmath's Gegenbauer polynomials; for the
kernel, the Gegenbauer series summed by mpmath with enough digits that it does not cancel
(t >= 0.05), and at small t mpmath evaluations of the dimension-raising recursion
k_{d+2} = e^{dt}/(2π) ∂_x k_d (x = cos θ) by high-precision finite differences (mp.diff): of the
wrapped Gaussian for odd d, and under the integral sign of the Abel form of the S² kernel for
even d (fixed Gauss–Legendre panels in the angle φ, integrand scaled to O(1) so that the
quadrature's absolute tolerance is meaningful).
"""

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import torch

from conftest import N_SIGMA, TOL
from heatscore.manifolds import Sphere
from heatscore.manifolds._closed_forms import sphere_dlog_heat_kernel_dtheta, sphere_log_heat_kernel
from heatscore.manifolds._hyperspherical import (HypersphericalHarmonics, level_multiplicity,
                                                 sphere_d_quadrature, zonal_sum)
from heatscore.manifolds._radial_sampling import sample_sphere_angle
from heatscore.manifolds._sphere_d_kernel import (
    SERIES_MIN_T, sample_sphere_d_angle, sphere_d_angle_log_density, sphere_d_dlog_heat_kernel_dtheta,
    sphere_d_levels_for_accuracy, sphere_d_log_heat_kernel)
from heatscore.manifolds.sphere import SphericalHarmonics, _sphere_volume

PI = math.pi
F64 = torch.float64
RTOL, ATOL = TOL[F64]

#: Fourth-order central differences along geodesics, step FD_STEP: truncation ~ h⁴ |Y^{(5)}|
#: ~ 1e-12 · l⁵ |Y| and round-off ~ 1e-16 |Y|/h, both below FD_ATOL (harmonics of degree <= 4).
FD_STEP = 1e-3
FD_ATOL = 1e-8
#: Derivatives of the kernel by central differences of log k, step KERNEL_FD_STEP·min(1, √t):
#: truncation ~ h²|(log k)'''| and round-off ~ 1e-16 |log k|/h, below KERNEL_FD_RTOL of the
#: derivative's natural size 1 + θ/2t.
KERNEL_FD_STEP = 1e-4
KERNEL_FD_RTOL = 1e-6
#: The heat equation by central differences in t (step 1e-4 t) and in θ (of the analytic
#: derivative): second-order truncation ~1e-8 relative to the size of the terms.
PDE_RTOL = 1e-6
#: Normalisation by composite Gauss–Legendre quadrature of the angle density: ~1e-14 observed.
NORM_ATOL = 1e-10
#: The sampler's acceptance bound at small t: log A + (θ²/4t) is a difference of ~θ²/4t-sized
#: terms, so round-off allows ~1e-15 (1 + θ²/4t).
BOUND_RTOL = 1e-13

THETAS = [0.0, 1e-8, PI / 2, PI - 1e-6, PI]
SMALL_TIMES = [1e-10, 1e-6, 1e-3]
LARGE_TIMES = [0.05, 0.2, SERIES_MIN_T, 2.0, 10.0]


def _angle(theta):
    """The float angle θ as mpmath reads it: θ itself below π/2, π − (math.pi − θ) above, the
    implementation's convention ε = math.pi − θ (math.pi is π rounded)."""
    return mp.mpf(theta) if theta <= PI / 2 else mp.pi - mp.mpf(PI - theta)


def _log_close(got, ref):
    """Round-off agreement of log k: |Δ log k| <= RTOL (1 + |log k|)."""
    return abs(got - ref) <= RTOL * (1 + abs(ref))


# ---------------------------------------------------------------------------------------------
# mpmath references (cached)


@functools.lru_cache(maxsize=None)
def ref_series(d, theta, t):
    """log of Σ_l e^{−l(l+d−1)t} N(d, l)/|S^d| C_l(cos θ)/C_l(1) with enough digits not to cancel."""
    digits = int(theta ** 2 / (4 * t) / math.log(10)) + 40
    with mp.workdps(digits):
        lam = mp.mpf(d - 1) / 2
        x, tt = mp.cos(_angle(theta)), mp.mpf(t)
        prev, cur = mp.mpf(1), x
        total = 1 + mp.exp(-d * tt) * (d + 1) * x
        for l in range(1, int(math.sqrt(digits * 2.4 / t)) + 10):
            prev, cur = cur, (2 * (l + lam) * x * cur - l * prev) / (l + 2 * lam)
            total += mp.exp(-(l + 1) * (l + d) * tt) * level_multiplicity(d, l + 1) * cur
        return float(mp.log(total / (2 * mp.pi ** ((d + 1) / mp.mpf(2)) / mp.gamma((d + 1) / mp.mpf(2)))))


def _cos(theta):
    with mp.workdps(80):
        return mp.cos(_angle(theta))


def _odd_derivative(q, theta, t):
    """∂_x^q of Σ_n e^{−(arccos x + 2πn)²/4t} at x = cos θ (entire in x), by mp.diff."""
    tt, x0 = mp.mpf(t), _cos(theta)

    def f(x):
        a = mp.acos(x)
        return mp.fsum(mp.exp(-(a + 2 * mp.pi * n) ** 2 / (4 * tt)) for n in range(-3, 4))
    return mp.re(mp.diff(f, x0, q))


def _even_derivative(q, theta, t):
    """∂_x^q ∫_θ^π g(s)(cos θ − cos s)^{−1/2} ds = ∫_0^{π/2} 2 cos^{2q}φ ψ^{(q)}(−1 + (1+x)cos²φ) dφ,
    ψ(cos s) = g(s)/(√2 sin(s/2)), g(s) = s e^{−s²/4t} − (s − 2π) e^{−(s−2π)²/4t} (t <= 1e-3)."""
    tt, x = mp.mpf(t), _cos(theta)
    scale = mp.exp(_angle(theta) ** 2 / (4 * tt))

    def psi(y):
        s = mp.acos(y)
        g = s * mp.exp(-s * s / (4 * tt)) - (s - 2 * mp.pi) * mp.exp(-(s - 2 * mp.pi) ** 2 / (4 * tt))
        return scale * g / (mp.sqrt(2) * mp.sin(s / 2))

    def dpsi(y):
        return mp.re(mp.diff(psi, y, q, singular=True))
    if theta == PI:
        return dpsi(mp.mpf(-1)) * mp.beta(q + mp.mpf(1) / 2, mp.mpf(1) / 2) / scale
    th = _angle(theta)
    if th == 0:
        slope = 1 / (2 * tt)
    elif th <= mp.pi / 2:
        slope = th / (2 * tt * mp.sin(th))
    else:
        eps = mp.pi - th
        slope = mp.pi ** 2 / (4 * tt ** 2) if mp.pi * eps < 2 * tt else mp.pi / (2 * tt * eps)
    width = mp.sqrt(1 / (slope * (1 + x)))          # decay length of the integrand in φ
    breaks = [mp.mpf(0)] + [c * width for c in (1, 3, 8) if c * width < mp.pi / 2] + [mp.pi / 2]
    nodes, weights = np.polynomial.legendre.leggauss(20)
    total = 0
    for a, b in zip(breaks[:-1], breaks[1:]):
        half, mid = (b - a) / 2, (a + b) / 2
        total += half * mp.fsum(mp.mpf(float(w)) * 2 * mp.cos(mid + half * float(u)) ** (2 * q)
                                * dpsi(-1 + (1 + x) * mp.cos(mid + half * float(u)) ** 2)
                                for u, w in zip(nodes, weights))
    return total / scale


@functools.lru_cache(maxsize=None)
def ref_closed(d, theta, t):
    """(log k, d log k/dθ) at small t from the recursion (module doc)."""
    with mp.workdps(40):
        tt = mp.mpf(t)
        if d % 2:
            p = (d - 1) // 2
            value, nxt = _odd_derivative(p, theta, t), _odd_derivative(p + 1, theta, t)
            log_k = p * p * tt - p * mp.log(2 * mp.pi) - mp.log(4 * mp.pi * tt) / 2 + mp.log(value)
        else:
            p = (d - 2) // 2
            value, nxt = _even_derivative(p, theta, t), _even_derivative(p + 1, theta, t)
            log_k = (p * (p + 1) * tt - p * mp.log(2 * mp.pi)
                     + mp.log(mp.sqrt(2) * mp.exp(tt / 4) * (4 * mp.pi * tt) ** -1.5) + mp.log(value))
        return float(log_k), float(-mp.sin(_angle(theta)) * nxt / value)


def _at(fn, d, theta, t):
    return float(fn(d, torch.tensor([theta], dtype=F64), t)[0])


# ---------------------------------------------------------------------------------------------
# harmonics


@pytest.mark.parametrize("d", [2, 3, 4, 6])
def test_levels_eigenvalues_and_chains(d):
    ep = HypersphericalHarmonics(Sphere(d), 5)
    expected = [math.comb(l + d, d) - math.comb(l + d - 2, d) for l in range(5)]
    assert ep.multiplicities.tolist() == expected
    assert len(ep) == sum(expected) == ep.chains.shape[0]
    assert ep.chains.shape[1] == d
    assert torch.equal(ep.chains[:, 0], ep.levels)
    assert torch.equal(ep.eigenvalues, (ep.levels * (ep.levels + d - 1)).to(F64))
    assert bool((ep.levels[1:] >= ep.levels[:-1]).all())
    # the chain l >= l_{d−1} >= … >= |m| holds, and every chain appears once
    steps = torch.cat([ep.chains[:, :-1], ep.chains[:, -1:].abs()], dim=1)
    assert bool((steps[:, :-1] >= steps[:, 1:]).all())
    assert len({tuple(c) for c in ep.chains.tolist()}) == len(ep)


@pytest.mark.parametrize("d, n_levels", [(3, 5), (4, 4), (5, 4)])
def test_orthonormal_by_quadrature(d, n_levels):
    """Products have degree <= 2(L − 1) <= 2n − 1: the product rule integrates them exactly."""
    ep = HypersphericalHarmonics(Sphere(d), n_levels)
    x, w = sphere_d_quadrature(d, n_levels)
    y = ep(x)
    gram = y.T @ (w[:, None] * y)
    torch.testing.assert_close(gram, torch.eye(len(ep), dtype=F64), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("d", [2, 3, 4, 5, 6])
def test_addition_theorem(d):
    """Σ_m Y_lm(x) Y_lm(y) = zonal_sum(d, l, x·y) for random pairs: with orthonormality and the
    count N(d, l), each level spans the degree-l eigenspace (the zonal functions span it)."""
    m = Sphere(d)
    ep = HypersphericalHarmonics(m, 6)
    x, y = m.random_uniform(20, rng=1), m.random_uniform(20, rng=2)
    x = torch.cat([x, torch.eye(d + 1, dtype=F64)[[0, d]]])      # the poles of the coordinates
    y = torch.cat([y, torch.eye(d + 1, dtype=F64)[[d, 0]]])
    yx, yy = ep(x), ep(y)
    cos = (x * y).sum(dim=1)
    for l in range(6):
        cols = ep.levels == l
        got = (yx[:, cols] * yy[:, cols]).sum(dim=1)
        scale = level_multiplicity(d, l) / m.volume
        torch.testing.assert_close(got, zonal_sum(d, l, cos), rtol=0, atol=ATOL * scale)


@pytest.mark.parametrize("d", [3, 4])
def test_eigenfunctions_by_autograd_laplacian(d):
    """The Euclidean Laplacian of Y(x/|x|) at |x| = 1 is Δ_{S^d} Y (degree-0 extension):
    autograd twice through the values gives −l(l + d − 1) Y."""
    m = Sphere(d)
    ep = HypersphericalHarmonics(m, 4)
    x = m.random_uniform(3, rng=3).requires_grad_(True)
    values = ep(x)
    lap = torch.zeros_like(values)
    for k in range(len(ep)):
        (g,) = torch.autograd.grad(values[:, k].sum(), x, create_graph=True)
        for i in range(d + 1):
            (h,) = torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)
            lap[:, k] = lap[:, k] + h[:, i]
    expected = -ep.eigenvalues * values.detach()
    torch.testing.assert_close(lap, expected, rtol=RTOL, atol=ATOL * float(ep.eigenvalues.max()))


@pytest.mark.parametrize("d", [3, 5])
def test_gradients_tangent_and_equal_geodesic_differences(d):
    m = Sphere(d)
    ep = HypersphericalHarmonics(m, 5)
    x = m.random_uniform(6, rng=4)
    x = torch.cat([x, torch.eye(d + 1, dtype=F64)[[0, 1, d]]])
    v = m.proj(x, torch.randn(x.shape, generator=torch.Generator().manual_seed(5), dtype=F64))
    v = v / v.norm(dim=1, keepdim=True)
    values, grads = ep.values_and_grad(x)
    torch.testing.assert_close(values, ep(x), rtol=0, atol=0)
    torch.testing.assert_close(grads, ep.grad(x), rtol=0, atol=0)
    assert float((grads * x[:, None, :]).sum(-1).abs().max()) <= ATOL
    h = FD_STEP

    def along(s):
        return ep(m.exp(x, s * v))
    fd = (-along(2 * h) + 8 * along(h) - 8 * along(-h) + along(-2 * h)) / (12 * h)
    torch.testing.assert_close((grads * v[:, None, :]).sum(-1), fd, rtol=0, atol=FD_ATOL)


def test_gradient_field_differentiable_once():
    """div grad Y = −λY: at |x| = 1 the degree-0 extension's Jacobian trace is the surface
    divergence (its radial derivative vanishes), by autograd through ``grad``."""
    m = Sphere(4)
    ep = HypersphericalHarmonics(m, 4)
    x = m.random_uniform(3, rng=6).requires_grad_(True)
    grads = ep.grad(x)
    div = torch.zeros(x.shape[0], len(ep), dtype=F64)
    for k in range(len(ep)):
        for i in range(5):
            (h,) = torch.autograd.grad(grads[:, k, i].sum(), x, retain_graph=True)
            div[:, k] = div[:, k] + h[:, i]
    torch.testing.assert_close(div, -ep.eigenvalues * ep(x.detach()), rtol=RTOL,
                               atol=ATOL * float(ep.eigenvalues.max()))


def test_same_spaces_as_spherical_harmonics_on_s2():
    """d = 2: each level's projector kernel Σ_m Y_lm(x) Y_lm(y) equals sphericart's."""
    m = Sphere(2)
    new, old = HypersphericalHarmonics(m, 7), SphericalHarmonics(m, 7)
    x, y = m.random_uniform(15, rng=7), m.random_uniform(11, rng=8)
    for l in range(7):
        a = new(x)[:, new.levels == l] @ new(y)[:, new.levels == l].T
        b = old(x)[:, old.levels == l] @ old(y)[:, old.levels == l].T
        torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("d", [2, 3, 6])
def test_level_one_and_sign_convention(d):
    m = Sphere(d)
    ep = HypersphericalHarmonics(m, 3)
    x = m.random_uniform(5, rng=9)
    level1 = ep(x)[:, ep.levels == 1]
    expected = math.sqrt((d + 1) / m.volume) * x.flip(1)
    torch.testing.assert_close(level1, expected, rtol=RTOL, atol=ATOL)
    zonal = ep(torch.eye(d + 1, dtype=F64)[[d]])[0, ep.levels == 2][0]
    assert float(zonal) > 0


@pytest.mark.parametrize("d, n_levels", [(3, 31), (10, 4), (6, 9)])
def test_high_degree_finite_and_normalised_at_awkward_points(d, n_levels):
    """No overflow: at the coordinate poles and next to them, Σ_m Y_lm(x)² = N(d, l)/|S^d|."""
    m = Sphere(d)
    eye = torch.eye(d + 1, dtype=F64)
    near = torch.tensor([1e-150, 1e-200] + [0.0] * (d - 2) + [1.0], dtype=F64)
    x = torch.cat([eye, near[None] / near.norm(), m.random_uniform(2, rng=10)])
    ep = HypersphericalHarmonics(m, n_levels)
    values, grads = ep.values_and_grad(x)
    assert bool(torch.isfinite(values).all()) and bool(torch.isfinite(grads).all())
    for l in range(n_levels):
        sums = (values[:, ep.levels == l] ** 2).sum(dim=1)
        torch.testing.assert_close(sums, torch.full_like(sums, level_multiplicity(d, l) / m.volume),
                                   rtol=RTOL, atol=0)
        # Σ_m |∇Y_lm|² = λ N/|S^d| (the Laplacian of the addition theorem on the diagonal)
        lam = l * (l + d - 1)
        gsum = (grads[:, ep.levels == l] ** 2).sum(dim=(1, 2))
        torch.testing.assert_close(gsum, torch.full_like(gsum, lam * level_multiplicity(d, l) / m.volume),
                                   rtol=RTOL, atol=ATOL)


def test_empty_input_and_chunking():
    ep = HypersphericalHarmonics(Sphere(3), 3)
    v, g = ep.values_and_grad(torch.zeros(0, 4, dtype=F64))
    assert v.shape == (0, len(ep)) and g.shape == (0, len(ep), 4)
    x = Sphere(3).random_uniform(7, rng=11)
    full = ep(x)
    ep._rows_per_chunk = lambda with_grad: 2          # force several chunks
    torch.testing.assert_close(ep(x), full, rtol=0, atol=0)


def test_harmonics_validators():
    with pytest.raises(ValueError, match="n_levels must be >= 1"):
        HypersphericalHarmonics(Sphere(3), 0)
    with pytest.raises(ValueError, match="manifold.dim must be >= 2"):
        HypersphericalHarmonics(Sphere(1), 2)
    ep = HypersphericalHarmonics(Sphere(3), 2)
    with pytest.raises(ValueError, match="off Sphere"):
        ep(torch.tensor([[1.0, 1.0, 0.0, 0.0]], dtype=F64))
    with pytest.raises(ValueError, match="shape"):
        ep(torch.ones(2, 3, dtype=F64))


# ---------------------------------------------------------------------------------------------
# zonal sums and quadrature


def test_zonal_sum_matches_mpmath_at_large_degree():
    d, l = 5, 300
    x = [-1.0, -0.999, -0.3, 0.0, 0.7, 0.9999, 1.0]
    got = zonal_sum(d, l, torch.tensor(x, dtype=F64))
    lam = (d - 1) / 2
    with mp.workdps(40):
        vol = 2 * mp.pi ** 3 / mp.gamma(3)
        ref = [float(level_multiplicity(d, l) / vol * mp.gegenbauer(l, lam, xi) / mp.gegenbauer(l, lam, 1))
               for xi in x]
    scale = level_multiplicity(d, l) / _sphere_volume(d)
    torch.testing.assert_close(got, torch.tensor(ref, dtype=F64), rtol=0, atol=1e-12 * scale)
    assert zonal_sum(3, 0, 0.3).shape == ()


def test_zonal_sum_validators():
    with pytest.raises(ValueError, match="d must be >= 2"):
        zonal_sum(1, 2, 0.5)
    with pytest.raises(ValueError, match="l must be >= 0"):
        zonal_sum(3, -1, 0.5)
    with pytest.raises(ValueError, match="cos_theta must lie in"):
        zonal_sum(3, 2, 1.1)
    with pytest.raises(ValueError, match="cos_theta must be finite"):
        zonal_sum(3, 2, float("nan"))
    with pytest.raises(TypeError, match="d must be an integer"):
        zonal_sum(3.0, 2, 0.5)


@pytest.mark.parametrize("d", [2, 3, 4, 6])
def test_quadrature_weights_and_moments(d):
    n = 4
    x, w = sphere_d_quadrature(d, n)
    assert x.dtype == w.dtype == F64 and x.shape == (2 * n * n ** (d - 1), d + 1)
    vol = _sphere_volume(d)
    torch.testing.assert_close(w.sum(), torch.tensor(vol, dtype=F64), rtol=RTOL, atol=0)
    torch.testing.assert_close(x.norm(dim=1), torch.ones(x.shape[0], dtype=F64), rtol=RTOL, atol=0)
    # degree <= 2n − 1 = 7: ∫ x_i² = |S|/(d+1), ∫ x_i⁴ = 3|S|/((d+1)(d+3)),
    # ∫ x_i² x_j² = |S|/((d+1)(d+3)), ∫ x_i² x_j² x_k² = |S|/((d+1)(d+3)(d+5)); odd monomials 0
    def integral(f):
        return float((w * f).sum())
    for i in range(d + 1):
        assert abs(integral(x[:, i] ** 2) - vol / (d + 1)) <= RTOL * vol
        assert abs(integral(x[:, i] ** 4) - 3 * vol / ((d + 1) * (d + 3))) <= RTOL * vol
        assert abs(integral(x[:, i] ** 7 + x[:, i] * x[:, 0] ** 2)) <= RTOL * vol
    assert abs(integral(x[:, 0] ** 2 * x[:, d] ** 2) - vol / ((d + 1) * (d + 3))) <= RTOL * vol
    assert abs(integral((x[:, 0] * x[:, 1] * x[:, d]) ** 2) - vol / ((d + 1) * (d + 3) * (d + 5))) <= RTOL * vol


def test_quadrature_on_s2_is_the_sphere_rule():
    x, w = sphere_d_quadrature(2, 5)
    x2, w2 = Sphere(2).quadrature(5)
    torch.testing.assert_close(x, x2, rtol=0, atol=0)
    torch.testing.assert_close(w, w2, rtol=0, atol=0)


def test_quadrature_validators():
    with pytest.raises(ValueError, match="n must be >= 1"):
        sphere_d_quadrature(3, 0)
    with pytest.raises(ValueError, match="d must be >= 2"):
        sphere_d_quadrature(1, 3)


# ---------------------------------------------------------------------------------------------
# heat kernel: values and derivatives against mpmath


@pytest.mark.parametrize("t", LARGE_TIMES)
@pytest.mark.parametrize("d", [3, 4, 5, 6])
def test_log_kernel_matches_gegenbauer_series(d, t):
    got = sphere_d_log_heat_kernel(d, torch.tensor(THETAS + [0.3, 2.5], dtype=F64), t)
    for g, theta in zip(got.tolist(), THETAS + [0.3, 2.5]):
        assert _log_close(g, ref_series(d, theta, t)), (theta, g, ref_series(d, theta, t))


@pytest.mark.parametrize("d, t", [(3, t) for t in SMALL_TIMES] + [(5, t) for t in SMALL_TIMES]
                         + [(4, t) for t in SMALL_TIMES] + [(6, 1e-10), (6, 1e-3)])
def test_log_kernel_and_derivative_match_the_recursion_at_small_t(d, t):
    theta = torch.tensor(THETAS, dtype=F64)
    log_k = sphere_d_log_heat_kernel(d, theta, t)
    dlog = sphere_d_dlog_heat_kernel_dtheta(d, theta, t)
    for th, g, dg in zip(THETAS, log_k.tolist(), dlog.tolist()):
        ref, dref = ref_closed(d, th, t)
        assert _log_close(g, ref), (th, g, ref)
        assert abs(dg - dref) <= RTOL * (1 + th / (2 * t)), (th, dg, dref)


@pytest.mark.parametrize("theta", [0.3, 2.5])
def test_references_agree(theta):
    """The series and the recursion references agree where both are cheap (guards both)."""
    for d in (3, 4):
        assert _log_close(ref_closed(d, theta, 1e-3)[0], ref_series(d, theta, 1e-3))


@pytest.mark.parametrize("d", [3, 4, 5, 6])
@pytest.mark.parametrize("t", [1e-10, 1e-6, 1e-3, 0.1, 2.0])
def test_dlog_matches_finite_differences(d, t):
    theta = torch.tensor([1e-3, 0.2, 1.0, 2.0, 3.0, 3.1], dtype=F64)
    h = KERNEL_FD_STEP * min(1.0, math.sqrt(t))
    fd = (sphere_d_log_heat_kernel(d, theta + h, t) - sphere_d_log_heat_kernel(d, theta - h, t)) / (2 * h)
    scale = 1 + theta / (2 * t)
    assert bool(((sphere_d_dlog_heat_kernel_dtheta(d, theta, t) - fd).abs() <= KERNEL_FD_RTOL * scale).all())


@pytest.mark.parametrize("d", [3, 4])
def test_dimension_raising_between_routes(d):
    """d log k_d/dθ = −2π sin θ e^{−dt} k_{d+2}/k_d: the S³ autograd route against S⁵'s contour,
    and S⁴'s contour derivative against S⁶'s value."""
    theta = torch.tensor([0.0, 0.1, 1.0, 2.0, 3.0, PI - 1e-7, PI], dtype=F64)
    for t in (1e-5, 0.01, 0.3, 1.5):
        lhs = sphere_d_dlog_heat_kernel_dtheta(d, theta, t)
        ratio = torch.exp(sphere_d_log_heat_kernel(d + 2, theta, t) - sphere_d_log_heat_kernel(d, theta, t))
        rhs = -2 * PI * torch.sin(theta) * math.exp(-d * t) * ratio
        torch.testing.assert_close(lhs, rhs, rtol=RTOL, atol=RTOL * (1 + PI / (2 * t)))


def test_d2_is_the_sphere_closed_form():
    theta = torch.tensor([0.0, 1.0, 2.0, PI], dtype=F64)
    for t in (1e-6, 0.1, 2.0):
        assert torch.equal(sphere_d_log_heat_kernel(2, theta, t), sphere_log_heat_kernel(theta, t))
        assert torch.equal(sphere_d_dlog_heat_kernel_dtheta(2, theta, t),
                           sphere_dlog_heat_kernel_dtheta(theta, t))


# ---------------------------------------------------------------------------------------------
# heat kernel: structure


@pytest.mark.parametrize("d", [3, 4, 5, 6])
def test_route_switches_are_continuous(d):
    """Across SERIES_MIN_T, the S³ pairings (πθ = t, πε = 2t) and the even-d y/φ routes."""
    t = torch.tensor([SERIES_MIN_T * (1 - 1e-12), SERIES_MIN_T], dtype=F64)
    for th in (0.0, 1.0, PI):
        a, b = sphere_d_log_heat_kernel(d, torch.full((2,), th, dtype=F64), t).tolist()
        assert abs(a - b) <= RTOL * (1 + abs(a))
    for tt in (1e-6, 0.01, 0.2):
        # θ where πθ/t = 1, πε/2t = 1 (S³), where y² = (π² − θ²)/4t crosses 6.5² and 1.5² (even d)
        switches = [tt / PI, PI - 2 * tt / PI]
        for y in (6.5, 1.5):
            if PI ** 2 - 4 * tt * y * y > 0:
                switches.append(math.sqrt(PI ** 2 - 4 * tt * y * y))
        for th in switches:
            pair = torch.tensor([th * (1 - 1e-13), th * (1 + 1e-13)], dtype=F64).clamp(max=PI)
            a, b = sphere_d_log_heat_kernel(d, pair, tt).tolist()
            slope = abs(_at(sphere_d_dlog_heat_kernel_dtheta, d, th, tt)) * 2e-13 * th
            assert abs(a - b) <= RTOL * (1 + abs(a)) + slope, (tt, th, a, b)


@pytest.mark.parametrize("d", [3, 4, 5, 6, 8])
def test_positive_finite_and_decreasing_everywhere(d):
    theta = torch.cat([torch.linspace(0, PI, 41, dtype=F64), torch.tensor([PI - 1e-12, PI + 5e-7], dtype=F64)])
    for t in (1e-10, 1e-7, 1e-4, 0.02, 0.3, 0.6, 5.0, 100.0):
        log_k = sphere_d_log_heat_kernel(d, theta, t)
        dlog = sphere_d_dlog_heat_kernel_dtheta(d, theta, t)
        assert bool(torch.isfinite(log_k).all()) and bool(torch.isfinite(dlog).all())
        assert bool((dlog[:-1] <= RTOL * (1 + PI / (2 * t))).all())
        assert bool((log_k[1:41] <= log_k[:40] + RTOL * (1 + log_k[:40].abs())).all())
        # an angle rounded above π reads as 2π − θ: same value, derivative of opposite sign
        mirror = torch.tensor([PI - 5e-7], dtype=F64)
        above, below = float(log_k[-1]), float(sphere_d_log_heat_kernel(d, mirror, t)[0])
        assert abs(above - below) <= RTOL * (1 + abs(below))
        slope_above = float(dlog[-1])
        slope_below = float(sphere_d_dlog_heat_kernel_dtheta(d, mirror, t)[0])
        assert abs(slope_above + slope_below) <= RTOL * (1 + PI / (2 * t))


def test_stationary_limit_and_flat_limit():
    for d in (3, 4, 6):
        vol = _sphere_volume(d)
        got = sphere_d_log_heat_kernel(d, torch.tensor([0.0, PI], dtype=F64), 100.0)
        torch.testing.assert_close(got, torch.full((2,), -math.log(vol), dtype=F64), rtol=0, atol=ATOL)
        # k_t(0)(4πt)^{d/2} = 1 + d(d−1)t/6 + O(t²) (scalar curvature d(d−1))
        t = 1e-8
        flat = float(sphere_d_log_heat_kernel(d, 0.0, t)) + 0.5 * d * math.log(4 * PI * t)
        assert abs(flat - d * (d - 1) * t / 6) <= 1e-14


@pytest.mark.parametrize("t", [1e-6, 1e-3, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("d", [3, 4, 5, 6])
def test_angle_density_integrates_to_one(d, t):
    """∫_0^π |S^{d−1}| sin^{d−1}θ k_t(θ) dθ = 1, composite Gauss–Legendre on panels geometric
    in √t near 0 (where the mass is) and uniform beyond."""
    scale = math.sqrt(t)
    breaks = sorted({0.0, PI} | {min(PI, scale * 2.0 ** k) for k in range(-2, 12)} | set(np.linspace(0, PI, 9)))
    nodes, weights = np.polynomial.legendre.leggauss(20)
    a, b = np.array(breaks[:-1]), np.array(breaks[1:])
    theta = ((a + b)[:, None] + (b - a)[:, None] * nodes) / 2
    w = (b - a)[:, None] / 2 * weights
    density = torch.exp(sphere_d_angle_log_density(d, torch.as_tensor(theta.ravel()), t))
    total = float((density * torch.as_tensor(w.ravel())).sum())
    assert abs(total - 1) <= NORM_ATOL


@pytest.mark.parametrize("d", [3, 4, 5, 6])
def test_heat_equation_by_finite_differences(d):
    """∂_t log k = (log k)'' + ((log k)')² + (d − 1) cot θ (log k)', the radial form of ∂_t k = Δk."""
    theta = torch.tensor([0.3, 1.5, 2.8], dtype=F64)
    for t in (1e-3, 0.05, 0.3, 2.0):
        dt, dth = 1e-4 * t, 1e-5
        lhs = (sphere_d_log_heat_kernel(d, theta, t + dt) - sphere_d_log_heat_kernel(d, theta, t - dt)) / (2 * dt)
        g = sphere_d_dlog_heat_kernel_dtheta(d, theta, t)
        g2 = (sphere_d_dlog_heat_kernel_dtheta(d, theta + dth, t)
              - sphere_d_dlog_heat_kernel_dtheta(d, theta - dth, t)) / (2 * dth)
        rhs = g2 + g * g + (d - 1) / torch.tan(theta) * g
        size = lhs.abs() + g2.abs() + g * g + ((d - 1) / torch.tan(theta) * g).abs()
        assert bool(((lhs - rhs).abs() <= PDE_RTOL * size).all()), (t, lhs, rhs)


def test_broadcasting_and_dtype():
    theta = torch.tensor([[0.1], [1.0]], dtype=torch.float32)
    t = torch.tensor([1e-3, 0.7], dtype=F64)
    out = sphere_d_log_heat_kernel(4, theta, t)
    assert out.shape == (2, 2) and out.dtype == torch.float32
    assert sphere_d_dlog_heat_kernel_dtheta(5, np.array([0.5, 1.0]), 0.2).dtype == F64


def test_levels_bound_the_truncation():
    """The series truncated at sphere_d_levels_for_accuracy levels is within rtol of the closed
    form (relative to 1/|S^d|, or to the kernel's minimum)."""
    theta = torch.tensor([0.0, 1.0, 2.0, PI], dtype=F64)
    for d in (3, 4, 6):
        vol = _sphere_volume(d)
        for t, rtol in ((0.3, 1e-6), (1.0, 1e-10)):
            exact = torch.exp(sphere_d_log_heat_kernel(d, theta, t))
            for reference in ("stationary", "minimum"):
                levels = sphere_d_levels_for_accuracy(d, t, rtol, reference)
                series = sum(math.exp(-l * (l + d - 1) * t) * zonal_sum(d, l, torch.cos(theta))
                             for l in range(levels))
                bound = rtol / vol if reference == "stationary" else rtol * float(exact[-1])
                # float64 sums of terms up to ~k_t(0) add ~1e-16 k_t(0) of their own
                assert float((series - exact).abs().max()) <= bound + 1e-14 * float(exact[0])
            assert (sphere_d_levels_for_accuracy(d, t, rtol, "minimum")
                    >= sphere_d_levels_for_accuracy(d, t, rtol))


def test_kernel_validators():
    with pytest.raises(ValueError, match="d must be >= 2"):
        sphere_d_log_heat_kernel(1, 0.5, 0.1)
    with pytest.raises(TypeError, match="d must be an integer"):
        sphere_d_dlog_heat_kernel_dtheta(3.5, 0.5, 0.1)
    with pytest.raises(ValueError, match="t must be > 0"):
        sphere_d_log_heat_kernel(3, 0.5, 0.0)
    with pytest.raises(ValueError, match="t must be > 0"):
        sphere_d_dlog_heat_kernel_dtheta(4, 0.5, -1.0)
    with pytest.raises(ValueError, match="theta must be a geodesic angle"):
        sphere_d_log_heat_kernel(5, 3.2, 0.1)
    with pytest.raises(ValueError, match="theta must be a geodesic angle"):
        sphere_d_angle_log_density(4, -0.1, 0.1)
    with pytest.raises(ValueError, match="t must broadcast"):
        sphere_d_log_heat_kernel(3, torch.zeros(3), torch.ones(2))
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        sphere_d_levels_for_accuracy(3, 0.0)
    with pytest.raises(ValueError, match="rtol must be in"):
        sphere_d_levels_for_accuracy(3, 0.1, rtol=2.0)
    with pytest.raises(ValueError, match="reference must be"):
        sphere_d_levels_for_accuracy(3, 0.1, reference="max")
    with pytest.raises(ValueError, match="d must be >= 2"):
        sphere_d_levels_for_accuracy(1, 0.1)


# ---------------------------------------------------------------------------------------------
# sampler


def _mean_and_se(values):
    return float(values.mean()), float(values.std()) / math.sqrt(values.numel())


# Each moment check is at N_SIGMA = 5 standard errors: a false failure has probability about
# 5.7e-7 per check (Gaussian limit), about 2.4e-5 for the 42 checks of this file together.
@pytest.mark.parametrize("d, n", [(3, 20000), (4, 3000), (5, 20000), (6, 3000)])
@pytest.mark.parametrize("t", [1e-10, 1e-3, 0.05, 0.3, 2.0])
def test_sampler_harmonic_moments(d, n, t):
    """E cos θ = e^{−dt} (cos θ is a degree-1 harmonic, λ_1 = d) and E R_2(cos θ) = e^{−2(d+1)t},
    R_2 = ((d+1)cos²θ − 1)/d, written as E[2 sin²(θ/2)] = 1 − e^{−dt} and
    E[sin²θ] = d(1 − e^{−2(d+1)t})/(d + 1) so that they stay exact at small t."""
    theta = sample_sphere_d_angle(d, t, n, rng=12)
    assert theta.shape == (n,) and theta.dtype == F64
    assert bool(torch.isfinite(theta).all()) and bool(((theta >= 0) & (theta <= PI)).all())
    m1, se1 = _mean_and_se(2 * torch.sin(theta / 2) ** 2)
    assert abs(m1 + math.expm1(-d * t)) <= N_SIGMA * se1
    m2, se2 = _mean_and_se(torch.sin(theta) ** 2)
    assert abs(m2 + d * math.expm1(-2 * (d + 1) * t) / (d + 1)) <= N_SIGMA * se2


def test_sampler_per_point_times_and_reproducible():
    d, n = 5, 8000
    t = torch.tensor([1e-3, 0.4] * (n // 2), dtype=F64)
    theta = sample_sphere_d_angle(d, t, n, rng=13)
    for tt, part in ((1e-3, theta[0::2]), (0.4, theta[1::2])):
        m, se = _mean_and_se(2 * torch.sin(part / 2) ** 2)
        assert abs(m + math.expm1(-d * tt)) <= N_SIGMA * se
    assert torch.equal(theta, sample_sphere_d_angle(d, t, n, rng=13))
    gen = torch.Generator().manual_seed(13)
    assert torch.equal(theta, sample_sphere_d_angle(d, t, n, rng=gen))
    assert not torch.equal(theta, sample_sphere_d_angle(d, t, n, rng=14))
    assert sample_sphere_d_angle(4, 0.1, 0, rng=1).shape == (0,)


def test_sampler_on_s2_is_the_sphere_sampler():
    assert torch.equal(sample_sphere_d_angle(2, 0.2, 50, rng=3), sample_sphere_angle(0.2, 50, rng=3))


@pytest.mark.parametrize("d", [3, 4, 5, 6, 8])
def test_sampler_acceptance_bound(d):
    """The flat proposal's acceptance A = p/(e^{κt} q) <= (sin θ/θ)^{(d−1)/2} (Feynman–Kac bound
    of the sampler's docstring) on a grid of angles and times."""
    theta = torch.linspace(0, PI, 400, dtype=F64)[:-1]
    kappa = d * (d - 1) / 6
    for t in (1e-10, 1e-6, 1e-3, 0.05, 0.3, 0.6, 2.0):
        log_density = sphere_d_angle_log_density(d, theta[1:], t)
        log_flat = (math.log(_sphere_volume(d - 1)) + (d - 1) * torch.log(theta[1:])
                    - 0.5 * d * math.log(4 * PI * t) - theta[1:] ** 2 / (4 * t))
        log_a = log_density - log_flat - kappa * t
        bound = 0.5 * (d - 1) * torch.log(torch.sin(theta[1:]) / theta[1:])
        assert bool((log_a <= bound + BOUND_RTOL * (1 + theta[1:] ** 2 / (4 * t))).all())


def test_angle_log_density_formula():
    theta = torch.tensor([0.5, 2.0], dtype=F64)
    got = sphere_d_angle_log_density(4, theta, 0.1)
    expected = (math.log(_sphere_volume(3)) + 3 * torch.log(torch.sin(theta))
                + sphere_d_log_heat_kernel(4, theta, 0.1))
    torch.testing.assert_close(got, expected, rtol=RTOL, atol=ATOL)


def test_sampler_validators():
    with pytest.raises(ValueError, match="t must be > 0"):
        sample_sphere_d_angle(3, 0.0, 10, rng=0)
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \(n,\)"):
        sample_sphere_d_angle(3, torch.ones(3, dtype=F64), 10, rng=0)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_sphere_d_angle(4, 0.1, -1, rng=0)
    with pytest.raises(ValueError, match="d must be >= 2"):
        sample_sphere_d_angle(1, 0.1, 10, rng=0)
    with pytest.raises(ValueError, match="rng seed must be non-negative"):
        sample_sphere_d_angle(5, 0.1, 10, rng=-3)
