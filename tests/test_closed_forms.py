"""Closed-form heat kernels of S², SO(3), the circle/torus, spectral levels, and radial samplers.

References: mpmath at high precision (zonal/character series with enough digits that they do not
cancel; the Mehler–Dirichlet integral by mpmath.quad after s = θ + u², which removes the endpoint
singularity, for small t; the Poisson-summed SO(3) form), brute image sums, Gauss–Legendre
quadrature of the angle densities, finite differences, and exact moments of the samplers.
Accuracy criterion (DESIGN, Closed forms): relative error <= 1e-6 for t >= 1e-3;
|Δ log k| <= 1e-8 + 1e-6 |log k| for 1e-10 <= t < 1e-3. Observed errors are ~1e-14 relative.
"""

import functools
import math

import mpmath as mp
import numpy as np
import pytest
import torch

from conftest import N_SIGMA
from heatscore.manifolds import _closed_forms as cf
from heatscore.manifolds._closed_forms import (
    circle_dlog_heat_kernel_ddelta, circle_log_heat_kernel, levels_for_accuracy,
    so3_dlog_heat_kernel_dtheta, so3_levels_for_accuracy, so3_log_heat_kernel,
    sphere_dlog_heat_kernel_dtheta, sphere_levels_for_accuracy, sphere_log_heat_kernel,
    torus_grad_log_heat_kernel, torus_levels_for_accuracy, torus_log_heat_kernel)
from heatscore.manifolds._radial_sampling import (
    HAAR_PROPOSAL_MIN_T, sample_so3_angle, sample_sphere_angle, so3_angle_log_density,
    sphere_angle_log_density)

PI = math.pi
F64 = torch.float64

#: Derivatives against mpmath: relative to the derivative's natural size 1 + θ/2t; observed
#: ~1e-15 (≤ 1e-10 next to the antipode, where the log-derivative is a difference of ~θ/2t terms).
DERIV_RTOL = 1e-8
#: Route switches: both sides are ~1e-15-accurate closed forms; observed jumps <= 3e-15.
SWITCH_ATOL = 1e-12
#: Normalisation by composite Gauss–Legendre quadrature (80 panels × 20 nodes): ~1e-14 observed.
NORM_ATOL = 1e-10
#: Central finite differences of log k, step FD_STEP·min(1, √t): truncation ~ h² |(log k)'''|
#: ~ FD_STEP² (1 + θ/2t)·O(1) and round-off ~ 1e-16 |log k| / h, below FD_RTOL of 1 + θ/2t.
FD_STEP = 1e-4
FD_RTOL = 1e-6

THETAS = [0.0, 1e-8, PI / 2, PI - 1e-6, PI]
SMALL_TIMES = [1e-10, 1e-6, 1e-3]
LARGE_TIMES = [0.05, 0.5, 10.0]


def _log_tolerance(log_k, t):
    """The DESIGN criterion as a bound on |Δ log k| (a relative error ε is |Δ log k| ≈ ε)."""
    return 1e-6 if t >= 1e-3 else 1e-8 + 1e-6 * abs(log_k)


# ---------------------------------------------------------------------------------------------
# mpmath references (cached: each is computed once per session)


def _mp_g(s, t, n_images=5):
    """g(s) = Σ_n (−1)^n (s − 2πn) e^{−(s−2πn)²/4t}."""
    return mp.fsum((-1) ** n * (s - 2 * mp.pi * n) * mp.exp(-(s - 2 * mp.pi * n) ** 2 / (4 * t))
                   for n in range(-n_images, n_images + 1))


def _digits(theta, t):
    """Working digits for a spectral series: its cancellation e^{θ²/4t} plus 40 beyond the caller's
    precision (mp.diff raises it)."""
    return int(float(theta) ** 2 / (4 * t) / math.log(10)) + 40 + mp.mp.dps


def _mp_sphere_series(theta, t):
    """log of Σ_l (2l+1)/(4π) e^{−l(l+1)t} P_l(cos θ) as an mpf (θ an mpf or float)."""
    digits = _digits(theta, t)
    with mp.workdps(digits):
        x, tt = mp.cos(theta), mp.mpf(t)
        p_prev, p_cur, total = mp.mpf(1), x, 1 + 3 * mp.exp(-2 * tt) * x
        for l in range(1, int(math.sqrt(digits * 2.4 / t)) + 10):
            p_prev, p_cur = p_cur, ((2 * l + 1) * x * p_cur - l * p_prev) / (l + 1)
            total += (2 * l + 3) * mp.exp(-(l + 1) * (l + 2) * tt) * p_cur
        return mp.log(total / (4 * mp.pi))


def _mp_sphere_mehler_dirichlet(theta, t):
    """log k_t(θ) from √2 e^{t/4} (4πt)^{−3/2} ∫_θ^π g(s) (cos θ − cos s)^{−1/2} ds, s = θ + u²."""
    with mp.workdps(30):
        th, tt = mp.mpf(theta), mp.mpf(t)
        log_c = mp.log(mp.sqrt(2) * mp.exp(tt / 4) * (4 * mp.pi * tt) ** (-1.5))
        if theta == PI:      # the limit θ → π of the integral is √2 (π/2) g(π)
            return float(log_c + mp.log(mp.sqrt(2) * mp.pi / 2 * _mp_g(mp.pi, tt)))
        scale = mp.exp(th ** 2 / (4 * tt))
        width = tt / max(th, mp.sqrt(tt))            # decay length of the integrand in s − θ
        breaks, k = [mp.mpf(0)], 1
        while width * k < mp.pi - th:
            breaks.append(mp.sqrt(width * k))
            k *= 4
        breaks.append(mp.sqrt(mp.pi - th))

        def integrand(u):
            s = th + u * u
            return 2 * u * _mp_g(s, tt) * scale / mp.sqrt(2 * mp.sin(th + u * u / 2) * mp.sin(u * u / 2))
        return float(log_c + mp.log(mp.quad(integrand, breaks)) - th ** 2 / (4 * tt))


def _mp_so3_series(theta, t):
    digits = _digits(theta, t)
    with mp.workdps(digits):
        th, tt = mp.mpf(theta), mp.mpf(t)
        chi = ((lambda l: 2 * l + 1) if theta == 0 else
               (lambda l: mp.sin((2 * l + 1) * th / 2) / mp.sin(th / 2)))
        total = mp.fsum((2 * l + 1) * mp.exp(-l * (l + 1) * tt) * chi(l)
                        for l in range(int(math.sqrt(digits * 2.4 / t)) + 10))
        return float(mp.log(total / (8 * mp.pi ** 2)))


def _mp_so3_poisson(theta, t):
    """log of e^{t/4} / (2 (4πt)^{3/2} sin(θ/2)) g(θ) (its limit at θ = 0), as an mpf."""
    with mp.workdps(60):
        th, tt = mp.mpf(theta), mp.mpf(t)
        if theta == 0:
            total = mp.fsum((-1) ** n * (1 - 2 * mp.pi ** 2 * n * n / tt) * mp.exp(-mp.pi ** 2 * n * n / tt)
                            for n in range(-5, 6))
            return mp.log(mp.exp(tt / 4) * (4 * mp.pi * tt) ** (-1.5) * total)
        return mp.log(mp.exp(tt / 4) / (2 * (4 * mp.pi * tt) ** 1.5 * mp.sin(th / 2)) * _mp_g(th, tt))


@functools.lru_cache(maxsize=None)
def ref_sphere(theta, t):
    return float(_mp_sphere_series(theta, t)) if t >= 0.05 else _mp_sphere_mehler_dirichlet(theta, t)


@functools.lru_cache(maxsize=None)
def ref_so3(theta, t):
    return _mp_so3_series(theta, t) if t >= 0.05 else float(_mp_so3_poisson(theta, t))


def _at(fn, theta, t):
    return float(fn(torch.tensor([theta], dtype=F64), t)[0])


# ---------------------------------------------------------------------------------------------
# values against mpmath


@pytest.mark.parametrize("t", SMALL_TIMES + LARGE_TIMES)
@pytest.mark.parametrize("theta", THETAS)
def test_sphere_log_kernel_matches_mpmath(theta, t):
    ref = ref_sphere(theta, t)
    got = _at(sphere_log_heat_kernel, theta, t)
    assert abs(got - ref) <= _log_tolerance(ref, t), (got, ref)


@pytest.mark.parametrize("t", SMALL_TIMES + LARGE_TIMES)
@pytest.mark.parametrize("theta", THETAS + [1e-4])
def test_so3_log_kernel_matches_mpmath(theta, t):
    ref = ref_so3(theta, t)
    got = _at(so3_log_heat_kernel, theta, t)
    assert abs(got - ref) <= _log_tolerance(ref, t), (got, ref)


@pytest.mark.parametrize("theta", [0.3, 2.5, PI - 1e-6])
def test_mpmath_references_agree(theta):
    """Series and Mehler–Dirichlet / Poisson references agree at t = 0.05 (guards the references)."""
    assert abs(float(_mp_sphere_series(theta, 0.05)) - _mp_sphere_mehler_dirichlet(theta, 0.05)) < 1e-13
    assert abs(_mp_so3_series(theta, 0.05) - float(_mp_so3_poisson(theta, 0.05))) < 1e-13


def test_small_time_kernel_is_the_flat_limit():
    """At θ = 0, k_t(0) = (4πt)^{−1}(1 + t/3 + O(t²)) on S² and (4πt)^{−3/2}(1 + t/4 + ...) on SO(3)."""
    t = torch.tensor([1e-10, 1e-8], dtype=F64)
    zero = torch.zeros(2, dtype=F64)
    s2 = sphere_log_heat_kernel(zero, t) + torch.log(4 * PI * t)
    so3 = so3_log_heat_kernel(zero, t) + 1.5 * torch.log(4 * PI * t)
    torch.testing.assert_close(s2, t / 3, rtol=0, atol=1e-14)
    torch.testing.assert_close(so3, t / 4, rtol=0, atol=1e-14)


# ---------------------------------------------------------------------------------------------
# derivatives


@pytest.mark.parametrize("theta", [1e-8, 0.3, 2.5, PI - 1e-6])
@pytest.mark.parametrize("t", [0.05, 0.5, 3.0])
def test_sphere_dlog_matches_mpmath(theta, t):
    with mp.workdps(30):
        ref = float(mp.diff(lambda x: _mp_sphere_series(x, t), mp.mpf(theta)))
    got = _at(sphere_dlog_heat_kernel_dtheta, theta, t)
    assert abs(got - ref) <= DERIV_RTOL * (1 + theta / (2 * t)), (got, ref)


@pytest.mark.parametrize("theta", [1e-8, 0.3, 2.5, PI - 1e-6])
@pytest.mark.parametrize("t", [1e-10, 1e-5, 0.01, 0.5, 3.0])
def test_so3_dlog_matches_mpmath(theta, t):
    with mp.workdps(30):
        ref = float(mp.diff(lambda x: _mp_so3_poisson(x, t), mp.mpf(theta)))
    got = _at(so3_dlog_heat_kernel_dtheta, theta, t)
    assert abs(got - ref) <= DERIV_RTOL * (1 + theta / (2 * t)), (got, ref)


def test_sphere_dlog_matches_mehler_dirichlet_derivative():
    """Small t: d/dθ of the Mehler–Dirichlet integral by mpmath (differentiated under the integral,
    with the moving endpoint's term) at one interior point and next to the antipode."""
    t = 1e-6
    for theta in (0.3, PI - 1e-6):
        with mp.workdps(30):
            th, tt = mp.mpf(theta), mp.mpf(t)
            scale = mp.exp(th ** 2 / (4 * tt))
            gp = lambda s: mp.fsum((-1) ** n * (1 - (s - 2 * mp.pi * n) ** 2 / (2 * tt))
                                   * mp.exp(-(s - 2 * mp.pi * n) ** 2 / (4 * tt)) for n in range(-3, 4))
            weight = lambda u: 1 / mp.sqrt(2 * mp.sin(th + u * u / 2) * mp.sin(u * u / 2))
            top = mp.sqrt(mp.pi - th)
            w = float(t / theta)
            breaks = [0] + [mp.sqrt(w * 4 ** k) for k in range(30) if w * 4 ** k < PI - theta] + [top]
            value = mp.quad(lambda u: 2 * u * _mp_g(th + u * u, tt) * weight(u) * scale, breaks)
            inner = mp.quad(lambda u: 2 * u * weight(u) * scale * (
                gp(th + u * u) - _mp_g(th + u * u, tt) * mp.cot(th + u * u / 2) / 2), breaks)
            endpoint = -_mp_g(mp.pi, tt) * weight(top) * scale
            ref = float((inner + endpoint) / value)
        got = _at(sphere_dlog_heat_kernel_dtheta, theta, t)
        assert abs(got - ref) <= DERIV_RTOL * (1 + theta / (2 * t)), (theta, got, ref)


@pytest.mark.parametrize("fn, dfn", [(sphere_log_heat_kernel, sphere_dlog_heat_kernel_dtheta),
                                     (so3_log_heat_kernel, so3_dlog_heat_kernel_dtheta)],
                         ids=["sphere", "so3"])
@pytest.mark.parametrize("t", [1e-10, 1e-6, 1e-3, 0.1, 2.0])
def test_dlog_matches_finite_differences(fn, dfn, t):
    theta = torch.tensor([1e-3, 0.2, 1.0, 2.0, 3.0, 3.1], dtype=F64)
    h = FD_STEP * min(1.0, math.sqrt(t))
    fd = (fn(theta + h, t) - fn(theta - h, t)) / (2 * h)
    scale = 1 + theta / (2 * t)
    assert bool(((dfn(theta, t) - fd).abs() <= FD_RTOL * scale).all())


@pytest.mark.parametrize("dfn", [sphere_dlog_heat_kernel_dtheta, so3_dlog_heat_kernel_dtheta])
def test_dlog_vanishes_at_both_ends(dfn):
    t = torch.tensor([1e-10, 1e-6, 1e-3, 0.1, 0.7, 5.0], dtype=F64)
    ends = dfn(torch.zeros_like(t), t), dfn(torch.full_like(t, PI), t)
    for d in ends:
        assert bool((d.abs() <= 1e-9 * (1 + PI / (2 * t))).all()), d


def test_dlog_keeps_the_graph_for_second_derivatives():
    """With theta requiring grad the derivative is differentiable again (divergences of scores)."""
    theta = torch.tensor([0.0, 0.4, 2.0, PI], dtype=F64, requires_grad=True)
    for dfn in (sphere_dlog_heat_kernel_dtheta, so3_dlog_heat_kernel_dtheta):
        for t in (1e-4, 0.05, 2.0):
            d = dfn(theta, t)
            (second,) = torch.autograd.grad(d.sum(), theta)
            h = 1e-5 * math.sqrt(t)
            th = theta.detach()
            lo, hi = (th - h).clamp(0, PI), (th + h).clamp(0, PI)
            fd = (dfn(hi, t) - dfn(lo, t)) / (hi - lo)
            torch.testing.assert_close(second, fd, rtol=1e-4, atol=1e-4 / t)


# ---------------------------------------------------------------------------------------------
# switches, robustness, normalisation


@pytest.mark.parametrize("t_switch, series, quadrature", [
    (cf.SPHERE_SERIES_MIN_T, cf._sphere_log_series, cf._sphere_log_mehler_dirichlet),
    (cf.SO3_SERIES_MIN_T, cf._so3_log_series, cf._so3_log_poisson),
], ids=["sphere", "so3"])
def test_time_switch_is_continuous(t_switch, series, quadrature):
    theta = torch.linspace(0, PI, 1001, dtype=F64)
    t = torch.full_like(theta, t_switch)
    assert float((series(theta, t) - quadrature(theta, t)).abs().max()) <= SWITCH_ATOL


@pytest.mark.parametrize("t", [1e-10, 1e-6, 1e-3, 0.05, 0.3])
def test_mehler_dirichlet_route_switches_are_continuous(t):
    """At Y = _Y_CUT (Hermite | Legendre) and Y = _Y_SWITCH (Legendre | φ), both neighbours agree."""
    for big_y, left, right in [(cf._Y_CUT, cf._sphere_log_integral_hermite, cf._sphere_log_integral_legendre),
                               (cf._Y_SWITCH, cf._sphere_log_integral_legendre, cf._sphere_log_integral_phi)]:
        c = 4 * t * big_y ** 2 * torch.linspace(0.9, 1.1, 21, dtype=F64)   # ε(2π − ε) = 4tY²
        c = c[c < PI ** 2]
        if c.numel() == 0:
            continue
        theta = PI - c / (PI + torch.sqrt(PI ** 2 - c))
        tt = torch.full_like(theta, t)
        assert float((left(theta, tt) - right(theta, tt)).abs().max()) <= SWITCH_ATOL, (t, big_y)


def test_so3_pairing_switch_is_continuous():
    t = torch.tensor([1e-8, 1e-3, 0.1, 0.4], dtype=F64)
    theta = t / PI                                   # πθ/t = 1: paired | unpaired
    torch.testing.assert_close(cf._so3_bracket_paired(theta, t), cf._so3_bracket_unpaired(theta, t),
                               rtol=1e-13, atol=0)


def test_values_across_a_switch_in_time_are_continuous():
    switch = torch.tensor(cf.SPHERE_SERIES_MIN_T, dtype=F64)
    t = torch.stack([torch.nextafter(switch, torch.zeros_like(switch)), switch])   # the two routes
    for theta in (0.0, 1.0, PI):
        for fn in (sphere_log_heat_kernel, so3_log_heat_kernel, sphere_dlog_heat_kernel_dtheta,
                   so3_dlog_heat_kernel_dtheta):
            v = fn(torch.full((2,), theta, dtype=F64), t)
            assert abs(float(v[0] - v[1])) <= SWITCH_ATOL


@pytest.mark.parametrize("fn", [sphere_log_heat_kernel, so3_log_heat_kernel, sphere_dlog_heat_kernel_dtheta,
                                so3_dlog_heat_kernel_dtheta])
def test_finite_everywhere(fn):
    """No NaN/inf (values are logs, so positivity of k is finiteness) on a dense grid incl. the ends."""
    theta = torch.cat([torch.linspace(0, PI, 101, dtype=F64),
                       PI - torch.logspace(-16, -1, 16, dtype=F64), torch.logspace(-16, -1, 16, dtype=F64)])
    t = torch.logspace(-12, 1.5, 28, dtype=F64)
    out = fn(theta[:, None], t[None, :])
    assert out.shape == (theta.numel(), t.numel())
    assert bool(torch.isfinite(out).all())


def test_log_kernel_is_decreasing_in_the_angle():
    theta = torch.linspace(0, PI, 2001, dtype=F64)
    for t in (1e-8, 1e-3, 0.3, 3.0):
        for fn in (sphere_log_heat_kernel, so3_log_heat_kernel):
            assert bool((fn(theta, t).diff() <= 1e-12).all())


def _composite_gauss_legendre(t, n_panels=40, n_nodes=20):
    """Nodes and weights on [0, π], panels refined on [0, min(π, 12√t)] where the mass lies."""
    inner = min(PI, 12 * math.sqrt(t))
    breaks = np.unique(np.concatenate([np.linspace(0, inner, n_panels + 1), np.linspace(inner, PI, n_panels + 1)]))
    x, w = np.polynomial.legendre.leggauss(n_nodes)
    a, b = breaks[:-1, None], breaks[1:, None]
    nodes = (0.5 * (b - a) * x + 0.5 * (a + b)).ravel()
    weights = (0.5 * (b - a) * w).ravel()
    return torch.as_tensor(nodes), torch.as_tensor(weights)


@pytest.mark.parametrize("t", [1e-10, 1e-6, 1e-3, 0.05, 0.5, 2.0])
def test_kernels_integrate_to_one(t):
    nodes, weights = _composite_gauss_legendre(t)
    sphere_mass = (weights * torch.exp(sphere_angle_log_density(nodes, t))).sum()
    so3_mass = (weights * torch.exp(so3_angle_log_density(nodes, t))).sum()
    assert abs(float(sphere_mass) - 1) <= NORM_ATOL
    assert abs(float(so3_mass) - 1) <= NORM_ATOL
    # the angle densities are the kernels times the geodesic-sphere areas 2π sin θ and 8π(1 − cos θ)
    torch.testing.assert_close(sphere_angle_log_density(nodes, t),
                               torch.log(2 * PI * torch.sin(nodes)) + sphere_log_heat_kernel(nodes, t))
    torch.testing.assert_close(so3_angle_log_density(nodes, t),
                               torch.log(16 * PI * torch.sin(nodes / 2) ** 2) + so3_log_heat_kernel(nodes, t))


def test_broadcasting_dtype_and_shapes():
    theta = torch.tensor([[0.1], [1.0], [3.0]], dtype=F64)
    t = torch.tensor([1e-4, 0.1, 1.0, 4.0], dtype=F64)
    for fn in (sphere_log_heat_kernel, so3_log_heat_kernel, sphere_dlog_heat_kernel_dtheta):
        out = fn(theta, t)
        assert out.shape == (3, 4)
        torch.testing.assert_close(out[2, 1], fn(3.0, 0.1))
    out32 = sphere_log_heat_kernel(theta.float(), 0.1)
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32, sphere_log_heat_kernel(theta, 0.1).float())
    assert sphere_log_heat_kernel(np.array([0.5, 1.5]), 0.2).shape == (2,)


def test_angles_rounded_above_pi_are_reflected():
    """θ = π + δ within the off-manifold tolerance is read as π − δ (k is a function of cos θ)."""
    over = torch.tensor([PI + 1e-7, PI + 4e-16], dtype=F64)
    for fn in (sphere_log_heat_kernel, so3_log_heat_kernel, sphere_dlog_heat_kernel_dtheta,
               so3_dlog_heat_kernel_dtheta):
        sign = -1.0 if "dlog" in fn.__name__ else 1.0
        torch.testing.assert_close(fn(over, 1e-3), sign * fn(2 * PI - over, 1e-3))


# ---------------------------------------------------------------------------------------------
# circle and torus


def _brute_circle(delta, t):
    """log Σ_m N(δ + 2πm; 0, 2t) over the 121 images nearest to δ (numpy, log-sum-exp per element)."""
    out = []
    for d in np.atleast_1d(delta):
        m = np.arange(-60, 61) - np.round(d / (2 * np.pi))
        log_terms = -(d + 2 * np.pi * m) ** 2 / (4 * t)
        top = log_terms.max()
        out.append(top + np.log(np.exp(log_terms - top).sum()) - 0.5 * np.log(4 * np.pi * t))
    return np.array(out)


@pytest.mark.parametrize("t", [1e-6, 0.01, 0.5, 1.0, 1.0 + 1e-12, 3.0, 40.0])
def test_circle_matches_brute_image_sum(t):
    delta = np.array([-100.3, -PI, -1.0, 0.0, 1e-3, 0.5, PI, 2 * PI, 7.0, 1e3])
    got = circle_log_heat_kernel(delta, t).numpy()
    np.testing.assert_allclose(got, _brute_circle(delta, t), rtol=1e-13, atol=1e-12)


@pytest.mark.parametrize("t", [1e-4, 0.3, 1.0, 2.5])
def test_circle_derivative_and_normalisation(t):
    delta = torch.tensor([-3.0, -0.01, 0.0, 0.4, 2.0, PI, 9.0], dtype=F64)
    h = 1e-5 * min(1.0, math.sqrt(t))
    fd = (circle_log_heat_kernel(delta + h, t) - circle_log_heat_kernel(delta - h, t)) / (2 * h)
    assert bool(((circle_dlog_heat_kernel_ddelta(delta, t) - fd).abs() <= 1e-6 * (1 + delta.abs() / t)).all())
    nodes, weights = _composite_gauss_legendre(t)
    mass = 2 * (weights * torch.exp(circle_log_heat_kernel(nodes, t))).sum()     # even in δ
    assert abs(float(mass) - 1) <= NORM_ATOL


def test_circle_switch_is_continuous():
    delta = torch.linspace(-PI, PI, 401, dtype=F64)
    t = torch.tensor(cf.CIRCLE_FOURIER_MIN_T, dtype=F64)
    above = torch.nextafter(t, torch.full_like(t, 2.0))                           # the two routes
    below = circle_log_heat_kernel(delta, t)
    above = circle_log_heat_kernel(delta, above)
    assert float((below - above).abs().max()) <= SWITCH_ATOL
    d_below = circle_dlog_heat_kernel_ddelta(delta, t)
    d_above = circle_dlog_heat_kernel_ddelta(delta, torch.nextafter(t, torch.full_like(t, 2.0)))
    assert float((d_below - d_above).abs().max()) <= SWITCH_ATOL


def test_torus_is_the_product_of_circles():
    gen = torch.Generator().manual_seed(0)
    delta = 10 * torch.randn(5, 3, generator=gen, dtype=F64)
    t = torch.tensor([1e-3, 0.1, 0.9, 1.5, 7.0], dtype=F64)
    log_k = torus_log_heat_kernel(delta, t)
    assert log_k.shape == (5,)
    expected = torch.tensor([_brute_circle(delta[j].numpy(), float(t[j])).sum() for j in range(5)], dtype=F64)
    torch.testing.assert_close(log_k, expected, rtol=1e-12, atol=1e-10)
    grad = torus_grad_log_heat_kernel(delta, t)
    assert grad.shape == (5, 3)
    torch.testing.assert_close(grad, circle_dlog_heat_kernel_ddelta(delta, t[:, None]))


# ---------------------------------------------------------------------------------------------
# spectral levels


@pytest.mark.parametrize("t", [1e-3, 0.02, 0.3, 2.0])
@pytest.mark.parametrize("rtol", [1e-6, 1e-12])
def test_sphere_and_so3_levels_bound_the_truncation(t, rtol):
    for levels, mult in ((sphere_levels_for_accuracy, lambda l: 2 * l + 1),
                         (so3_levels_for_accuracy, lambda l: (2 * l + 1) ** 2)):
        n_levels = levels(t, rtol)
        tail = sum(mult(l) * math.exp(-l * (l + 1) * t) for l in range(n_levels, n_levels + 5000))
        assert tail <= rtol
        assert n_levels == 1 or sum(mult(l) * math.exp(-l * (l + 1) * t)
                                    for l in range(n_levels - 1, n_levels + 5000)) > rtol / 10


def test_levels_relative_to_the_minimum_give_the_closed_form():
    """With reference="minimum" the truncated zonal series matches the closed form to rtol everywhere."""
    t, rtol = 0.05, 1e-9
    n_levels = sphere_levels_for_accuracy(t, rtol, reference="minimum")
    assert n_levels > sphere_levels_for_accuracy(t, rtol)
    theta = torch.linspace(0, PI, 181, dtype=F64)
    x = torch.cos(theta)
    p_prev, p_cur, total = torch.ones_like(x), x, 1 + 3 * math.exp(-2 * t) * x
    for l in range(1, n_levels - 1):
        p_prev, p_cur = p_cur, ((2 * l + 1) * x * p_cur - l * p_prev) / (l + 1)
        total = total + (2 * l + 3) * math.exp(-(l + 1) * (l + 2) * t) * p_cur
    exact = torch.exp(sphere_log_heat_kernel(theta, t))
    cancellation = 1e-15 * float(total.abs().max() / (4 * PI * exact.min()))     # float64 round-off
    assert float(((total / (4 * PI) - exact) / exact).abs().max()) <= rtol + cancellation


@pytest.mark.parametrize("d, t", [(1, 0.01), (2, 0.01), (3, 0.01), (2, 0.3), (5, 0.3), (3, 3.0), (5, 3.0)])
def test_torus_levels_bound_the_truncation(d, t):
    """Brute force over the box |k_i| <= r (the part outside is below e^{−r²t} ~ e^{−30})."""
    rtol = 1e-8
    n_levels = torus_levels_for_accuracy(d, t, rtol)
    radius = int(math.sqrt(30 / t)) + 1
    axis = np.arange(-radius, radius + 1)
    squares = sum(np.meshgrid(*([axis ** 2] * d), indexing="ij", sparse=True)).ravel()
    distinct = np.unique(squares)
    kept = distinct[:n_levels]
    tail = np.exp(-squares[squares > kept[-1]] * t).sum()
    assert tail <= rtol


def test_levels_for_accuracy_generic():
    # λ_l = l, m_l = 1: tail from L is e^{−Lt}/(1 − e^{−t}); the first L with that <= rtol
    t, rtol = 0.5, 1e-6
    expected = math.ceil(math.log(1 / (rtol * (1 - math.exp(-t)))) / t)
    assert levels_for_accuracy(lambda l: l, lambda l: 1, t, rtol) == expected


# ---------------------------------------------------------------------------------------------
# validation


def test_validators():
    with pytest.raises(ValueError, match="theta must be a geodesic angle in \\[0, π\\]"):
        sphere_log_heat_kernel(torch.tensor([-0.1, 1.0]), 0.1)
    with pytest.raises(ValueError, match="theta must be a geodesic angle .* \\(within 1e-06\\)"):
        so3_dlog_heat_kernel_dtheta(torch.tensor([PI + 1e-5], dtype=F64), 0.1)
    with pytest.raises(ValueError, match="theta must be a geodesic angle .* \\(within 0.0001\\)"):
        so3_log_heat_kernel(torch.tensor([PI + 1e-3], dtype=torch.float32), 0.1)
    with pytest.raises(ValueError, match="theta must be finite"):
        so3_log_heat_kernel(torch.tensor([float("nan")]), 0.1)
    with pytest.raises(ValueError, match="t must be > 0"):
        sphere_log_heat_kernel(1.0, 0.0)
    with pytest.raises(ValueError, match="t must be > 0"):
        circle_log_heat_kernel(1.0, torch.tensor([0.1, -1.0]))
    with pytest.raises(ValueError, match="t must broadcast against theta"):
        sphere_log_heat_kernel(torch.zeros(3), torch.ones(4))
    with pytest.raises(ValueError, match="delta must have a trailing coordinate axis"):
        torus_log_heat_kernel(torch.tensor(1.0), 0.1)
    with pytest.raises(TypeError, match="theta must be"):
        sphere_log_heat_kernel("a", 0.1)
    with pytest.raises(ValueError, match="rtol must be in \\(0, 1\\)"):
        sphere_levels_for_accuracy(0.1, rtol=2.0)
    with pytest.raises(ValueError, match="reference must be"):
        so3_levels_for_accuracy(0.1, reference="max")
    with pytest.raises(ValueError, match="t must be a finite number > 0"):
        torus_levels_for_accuracy(2, -1.0)
    with pytest.raises(ValueError, match="d must be an integer >= 1"):
        torus_levels_for_accuracy(0, 1.0)
    with pytest.raises(ValueError, match="needs more than max_levels"):
        levels_for_accuracy(lambda l: l, lambda l: 1, 1e-3, 1e-12, max_levels=10)
    with pytest.raises(ValueError, match="n must be >= 0"):
        sample_so3_angle(0.1, -1)
    with pytest.raises(ValueError, match="t must be a scalar or have shape \\(n,\\)"):
        sample_sphere_angle(torch.ones(3), 4)
    with pytest.raises(ValueError, match="t must be > 0"):
        sample_sphere_angle(torch.tensor([0.1, 0.0]), 2)


# ---------------------------------------------------------------------------------------------
# samplers


#: KS statistic bound at the N_SIGMA false-failure rate α ≈ 5.7e-7: the asymptotic Kolmogorov
#: tail P(√n D > x) ≈ 2 e^{−2x²} gives x = (ln(2/α)/2)^{1/2} ≈ 2.69.
KS_X = math.sqrt(math.log(2 / 5.7e-7) / 2)


def _cdf_table(log_density, t, n_grid=4001):
    """CDF of an angle density on a grid refined where its mass lies (trapezoid; error ~1e-7)."""
    inner = min(PI, 15 * math.sqrt(t))
    grid = torch.unique(torch.cat([torch.linspace(0, inner, n_grid, dtype=F64),
                                   torch.linspace(inner, PI, n_grid, dtype=F64)]))
    dens = torch.exp(log_density(grid, t))
    cdf = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(0.5 * (dens[1:] + dens[:-1]) * grid.diff(), 0)])
    return grid, cdf


def _pit(theta, t_values, t_index, log_density):
    """F_{t_i}(θ_i) for draws whose times are t_values[t_index]."""
    u = torch.empty_like(theta)
    for j, t in enumerate(t_values):
        grid, cdf = _cdf_table(log_density, t)
        mask = t_index == j
        u[mask] = torch.as_tensor(np.interp(theta[mask].numpy(), grid.numpy(), cdf.numpy()))
    return u


def _ks_uniform(u):
    u, _ = torch.sort(u)
    n = u.numel()
    ranks = torch.arange(1, n + 1, dtype=F64)
    return float(torch.maximum(ranks / n - u, u - (ranks - 1) / n).max())


@pytest.mark.parametrize("sampler, log_density", [(sample_sphere_angle, sphere_angle_log_density),
                                                  (sample_so3_angle, so3_angle_log_density)],
                         ids=["sphere", "so3"])
def test_sampler_matches_the_cdf_with_per_point_times(sampler, log_density):
    t_values = [1e-8, 0.01, 0.3, HAAR_PROPOSAL_MIN_T, HAAR_PROPOSAL_MIN_T * (1 + 1e-9), 3.0]
    n = 30_000
    gen = torch.Generator().manual_seed(7)
    t_index = torch.arange(n) % len(t_values)
    times = torch.tensor(t_values, dtype=F64)[t_index]
    theta = sampler(times, n, rng=gen)
    assert theta.shape == (n,) and bool(((theta >= 0) & (theta <= PI)).all())
    u = _pit(theta, t_values, t_index, log_density)
    assert _ks_uniform(u) <= KS_X / math.sqrt(n)
    for j in range(len(t_values)):          # each time on its own as well
        uj = u[t_index == j]
        assert _ks_uniform(uj) <= KS_X / math.sqrt(uj.numel())


@pytest.mark.parametrize("t", [1e-6, 0.05, 0.5, 1.0, 2.0])
def test_sampler_moments(t):
    """E[P_1(cos θ)] = e^{−2t} on S²; E[tr R] = E[1 + 2 cos θ] = 3 e^{−2t} on SO(3) (l = 1, λ = 2)."""
    n = 40_000
    gen = torch.Generator().manual_seed(11)
    for sampler, stat, expected in ((sample_sphere_angle, torch.cos, math.exp(-2 * t)),
                                    (sample_so3_angle, lambda th: 1 + 2 * torch.cos(th), 3 * math.exp(-2 * t))):
        values = stat(sampler(t, n, rng=gen))
        se = float(values.std()) / math.sqrt(n)
        assert abs(float(values.mean()) - expected) <= N_SIGMA * se + 1e-15


def test_sampler_flat_limit():
    """t → 0: θ²/4t ~ Gamma(1) (Exp) on S² and Gamma(3/2) on SO(3); means 1 and 3/2, variances 1, 3/2."""
    n, t = 40_000, 1e-10
    gen = torch.Generator().manual_seed(3)
    for sampler, shape in ((sample_sphere_angle, 1.0), (sample_so3_angle, 1.5)):
        g = sampler(t, n, rng=gen) ** 2 / (4 * t)
        assert abs(float(g.mean()) - shape) <= N_SIGMA * math.sqrt(shape / n)


def test_sampler_reproducible_and_empty():
    a = sample_sphere_angle(torch.full((50,), 0.2, dtype=F64), 50, rng=5)
    b = sample_sphere_angle(0.2, 50, rng=5)
    assert torch.equal(a, b)
    assert sample_so3_angle(0.1, 0, rng=0).shape == (0,)


def test_sphere_parametrix_route_matches_quadrature():
    """The small-t parametrix route agrees with the Mehler–Dirichlet quadrature to DESIGN's
    criterion |Δ log k| ≤ 1e-8 + 1e-6 |log k|, values and derivatives, up to its switch."""
    from heatscore.manifolds import _closed_forms as cf

    theta = torch.linspace(0.0, cf.SPHERE_PARAMETRIX_MAX_THETA, 401, dtype=torch.float64)
    for t in (1e-10, 1e-8, 1e-6, 1e-5, cf.SPHERE_PARAMETRIX_MAX_T):
        tt = torch.full_like(theta, t)
        quad = cf._sphere_log_mehler_dirichlet(theta, tt)
        par = cf._sphere_log_parametrix(theta, tt)
        assert bool(((par - quad).abs() <= 1e-8 + 1e-6 * quad.abs()).all())
        th = theta.clone().requires_grad_(True)
        dq, = torch.autograd.grad(cf._sphere_log_mehler_dirichlet(th, tt).sum(), th)
        th2 = theta.clone().requires_grad_(True)
        dp, = torch.autograd.grad(cf._sphere_log_parametrix(th2, tt).sum(), th2)
        torch.testing.assert_close(dp, dq, rtol=1e-7, atol=1e-7)


def test_sphere_parametrix_derivative_is_analytic_derivative():
    from heatscore.manifolds import _closed_forms as cf

    theta = torch.cat([torch.linspace(0.0, 1.0, 301, dtype=torch.float64),
                       torch.tensor([1e-9, 9.9e-3, 1.0e-2, 1.01e-2], dtype=torch.float64)])
    for t in (1e-9, 1e-6, 1e-4):
        tt = torch.full_like(theta, t)
        th = theta.clone().requires_grad_(True)
        auto, = torch.autograd.grad(cf._sphere_log_parametrix(th, tt).sum(), th)
        torch.testing.assert_close(cf._sphere_dlog_parametrix(theta, tt), auto, rtol=1e-10, atol=1e-10)
