"""Closed-form heat kernels of S², SO(3) and the flat torus as functions of the geodesic angle.

Conventions (DESIGN.md): ∂_t k = Δk, k_t(x, y) is a density w.r.t. the Riemannian volume, unit
sphere S² (volume 4π), SO(3) with g(U, V) = ½tr(UᵀV) (volume 8π², distance = rotation angle),
circle [0, 2π) w.r.t. dθ. Every function takes an angle array and a time broadcast against it
(t may be per element), computes in float64 and returns tensors of the broadcast shape in the
angle's floating dtype, on its device. Values are logarithms: they stay finite where k underflows.

Routes (each chosen per element; they agree to round-off where they switch, see the tests):

* S², t >= ``SPHERE_SERIES_MIN_T``: zonal series Σ_l (2l+1)/(4π) e^{−l(l+1)t} P_l(cos θ).
* S², t <= ``SPHERE_PARAMETRIX_MAX_T`` and θ <= ``SPHERE_PARAMETRIX_MAX_THETA``: the small-t
  parametrix (4πt)^{−1} e^{−θ²/4t} (θ/sin θ)^{1/2} (1 + t u_1(θ)) (DESIGN's closed form).
* S², other t < ``SPHERE_SERIES_MIN_T``: the Mehler–Dirichlet form
  k_t(θ) = √2 e^{t/4} (4πt)^{−3/2} ∫_θ^π g(s) (cos θ − cos s)^{−1/2} ds,
  g(s) = Σ_n (−1)^n (s − 2πn) e^{−(s−2πn)²/4t} (|n| <= 3), with e^{−θ²/4t} factored out and
  one of two substitutions that remove the singularity. s² = θ² + 4t y², y in [0, Y],
  Y² = (π² − θ²)/4t, turns the integral into ∫_0^Y e^{−y²} h(y) dy with h analytic in y²
  (Gauss–Hermite when Y >= ``_Y_CUT``, the rest beyond Y being negligible; Gauss–Legendre on
  [0, Y] for ``_Y_SWITCH`` <= Y < ``_Y_CUT``). Near the antipode, where [0, Y] collapses,
  cos(s/2) = cos(θ/2) cos φ (φ in [0, π/2], fixed) turns the singular weight into dφ and stays
  regular at θ = π (Gauss–Legendre in φ). So the quadratures are Gauss–Jacobi-type rules
  (weight v^{−1/2} e^{−v} in v = y², or Chebyshev in cos φ) for the singular integrand.
* SO(3), t >= ``SO3_SERIES_MIN_T``: character series
  (1/8π²) Σ_l (2l+1) e^{−l(l+1)t} sin((2l+1)θ/2)/sin(θ/2).
* SO(3), t < ``SO3_SERIES_MIN_T``: Poisson-summed form
  k_t(θ) = e^{t/4} (4πt)^{−3/2} (θ/2)/sin(θ/2) e^{−θ²/4t} B, B = 1 + Σ_{n≠0} (−1)^n (1 − 2πn/θ)
  e^{−πn(πn−θ)/t}, with the ±n terms paired (cosh / sinh(a)/a, a = πnθ/t) while πθ/t < 1 so
  that θ → 0 has no 0/0.
* Circle: image sum (log-sum-exp) for t <= ``CIRCLE_FOURIER_MIN_T``, Fourier series above.

Derivatives in the angle are exact derivatives of the same formulas (autograd through the
quadrature and series for S² and SO(3), analytic for the circle); they keep the autograd graph
when the inputs require grad, so second derivatives are available.
"""

import math

import numpy as np
import torch

from heatscore._validation import MANIFOLD_ATOL, as_float_tensor, check_finite, check_time

__all__ = [
    "sphere_log_heat_kernel",
    "sphere_dlog_heat_kernel_dtheta",
    "so3_log_heat_kernel",
    "so3_dlog_heat_kernel_dtheta",
    "circle_log_heat_kernel",
    "circle_dlog_heat_kernel_ddelta",
    "torus_log_heat_kernel",
    "torus_grad_log_heat_kernel",
    "levels_for_accuracy",
    "sphere_levels_for_accuracy",
    "so3_levels_for_accuracy",
    "torus_levels_for_accuracy",
]

PI = math.pi
TWO_PI = 2.0 * math.pi

#: S²: zonal series for t >= this, Mehler–Dirichlet quadrature below.
SPHERE_SERIES_MIN_T = 0.5
#: S², t <= SPHERE_PARAMETRIX_MAX_T and θ <= SPHERE_PARAMETRIX_MAX_THETA: the two-term small-t
#: parametrix (relative error O(t²): ≤ 1e-9 here, inside DESIGN's 1e-8 + 1e-6|log k|), about
#: 50× cheaper than the quadrature; the kernel-sum estimators evaluate it at millions of pairs.
SPHERE_PARAMETRIX_MAX_T = 1e-4
SPHERE_PARAMETRIX_MAX_THETA = 1.0
#: SO(3): character series for t >= this, Poisson-summed form below.
SO3_SERIES_MIN_T = 0.5
#: Circle: Fourier series for t > this, image sum below.
CIRCLE_FOURIER_MIN_T = 1.0
#: Images n = −3..3 in the Poisson/Mehler–Dirichlet sums: the first omitted one is below
#: e^{−(7π)²/4t}·(relative) ~ e^{−120} at t = 1.
_N_IMAGES = 3
#: Below this t only the images n = 0, 1 of the Mehler–Dirichlet sum are kept: the others are
#: below e^{−π²/t} < 1e-21 relative.
_FAR_IMAGES_MIN_T = 0.2
#: Mehler–Dirichlet routes by Y = ((π² − θ²)/4t)^{1/2}: Gauss–Hermite in y for Y >= _Y_CUT
#: (the integral beyond Y is below e^{−Y_CUT²} ~ 1e-18 relative), Gauss–Legendre on [0, Y] for
#: _Y_SWITCH <= Y < _Y_CUT, the angle substitution φ below _Y_SWITCH (near the antipode).
_Y_CUT = 6.5
_Y_SWITCH = 1.5
#: Quadrature sizes (each route's relative error is ~1e-15, see the tests): positive nodes of
#: the Gauss–Hermite rule (the integrand is even in y), Gauss–Legendre nodes in y and in φ.
_N_HERMITE = 6
_N_LEGENDRE_Y = 24
_N_LEGENDRE_PHI = 16
#: Relative truncation of the spectral series (terms below this times the smallest value).
_SERIES_RTOL = 1e-18
#: Points per chunk of the S² quadrature (chunk × nodes × a few dozen float64 intermediates
#: stays small, also when autograd keeps them for the derivative), and of the SO(3) closed forms.
_CHUNK = 1 << 13
_CHUNK_SO3 = 1 << 18


# ---------------------------------------------------------------------------------------------
# input handling


def _prepare_angle(theta, t, theta_name, geodesic):
    """Validated flat float64 (angle, t), the broadcast shape and the output dtype.

    ``geodesic``: the angle must lie in [0, π] up to the off-manifold tolerance of its dtype
    (DESIGN: 1e-6 in float64, 1e-4 in float32); angles just above π are read as 2π − θ, an exact
    symmetry of the S² and SO(3) kernels (functions of cos θ). Otherwise any finite real is accepted.
    """
    theta = as_float_tensor(theta, theta_name)
    check_finite(theta, theta_name)
    out_dtype = theta.dtype
    if geodesic:
        slack = MANIFOLD_ATOL.get(out_dtype, MANIFOLD_ATOL[torch.float32])
        bad = (theta < 0) | (theta > PI + slack)
        if bool(bad.any()):
            raise ValueError(f"{theta_name} must be a geodesic angle in [0, π] (within {slack:g}), found "
                             f"{int(bad.sum())} entries outside (min {float(theta.min()):.6g}, "
                             f"max {float(theta.max()):.6g})")
    t = check_time(t, "t", device=theta.device)
    try:
        shape = torch.broadcast_shapes(theta.shape, t.shape)
    except RuntimeError:
        raise ValueError(f"t must broadcast against {theta_name}: found shapes {tuple(t.shape)} "
                         f"and {tuple(theta.shape)}") from None
    theta = theta.to(torch.float64)
    return theta.expand(shape).reshape(-1), t.expand(shape).reshape(-1), shape, out_dtype


def _reflect_above_pi(theta):
    """2π − θ for θ > π (k is a function of cos θ): part of the formula, so d/dθ flips there."""
    return torch.where(theta > PI, TWO_PI - theta, theta)


def _chunked(log_fn, theta, t, derivative=False, chunk=_CHUNK):
    """``log_fn`` on flat float64 inputs chunk by chunk; with ``derivative`` also d/dθ by autograd.

    The derivative keeps the autograd graph (for second derivatives) when the inputs require
    grad and grad mode is on; otherwise every chunk is detached as soon as it is done.
    """
    keep_graph = torch.is_grad_enabled() and (theta.requires_grad or t.requires_grad)
    values, derivs = [], []
    for start in range(0, theta.shape[0], chunk):
        th, tt = theta[start:start + chunk], t[start:start + chunk]
        if not derivative:
            values.append(log_fn(th, tt))
            continue
        with torch.enable_grad():
            if not (keep_graph and th.requires_grad):
                th = th.detach().requires_grad_(True)
            value = log_fn(th, tt)
            (deriv,) = torch.autograd.grad(value.sum(), th, create_graph=keep_graph)
        values.append(value if keep_graph else value.detach())
        derivs.append(deriv)
    if not values:
        return (theta.new_zeros(0), theta.new_zeros(0)) if derivative else theta.new_zeros(0)
    if not derivative:
        return torch.cat(values)
    return torch.cat(values), torch.cat(derivs)


def _by_route(theta, t, routes):
    """Evaluate ``routes`` = [(mask, fn), ...] on their subsets and assemble (autograd-safe:
    no route ever sees an input outside its domain)."""
    out = theta.new_zeros(theta.shape)
    for mask, fn in routes:
        idx = torch.nonzero(mask, as_tuple=True)[0]
        if idx.numel():
            out = out.index_put((idx,), fn(theta[idx], t[idx]))
    return out


def _log_sinc(u):
    """log(sin u / u) for u in [0, π) (Taylor below 1e-2: exact derivatives, no 0/0)."""
    small = u < 1e-2
    u_safe = torch.where(small, torch.ones_like(u), u)
    u2 = u * u
    return torch.where(small, -u2 * (1.0 / 6.0 + u2 * (1.0 / 180.0 + u2 / 2835.0)),
                       torch.log(torch.sin(u_safe) / u_safe))


def _gauss_legendre_01(n, like):
    """Gauss–Legendre nodes and weights on [0, 1] (float64, on ``like``'s device)."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (torch.as_tensor(0.5 * (x + 1.0), dtype=torch.float64, device=like.device),
            torch.as_tensor(0.5 * w, dtype=torch.float64, device=like.device))


def _gauss_hermite_half(n, like):
    """Positive nodes and weights of the 2n-point Gauss–Hermite rule: Σ w f(y) = ∫_0^∞ e^{−y²} f(y) dy
    exactly for f an even polynomial of degree < 4n."""
    x, w = np.polynomial.hermite.hermgauss(2 * n)
    return (torch.as_tensor(x[n:], dtype=torch.float64, device=like.device),
            torch.as_tensor(w[n:], dtype=torch.float64, device=like.device))


def _series_degree(t_min, growth, rtol=_SERIES_RTOL):
    """Smallest L with growth(L) e^{−L(L+1) t_min} <= rtol."""
    lmax = 1
    while math.log(growth(lmax)) - lmax * (lmax + 1) * t_min > math.log(rtol):
        lmax += 1
    return lmax


# ---------------------------------------------------------------------------------------------
# S²


def _sphere_image_ratio(s, sigma, t):
    """1 + R(s) = g(s) e^{s²/4t} / s, R = Σ_{n≠0} (−1)^n (1 − 2πn/s) e^{−πn(π(n−1) + σ)/t}, σ = π − s.

    The n = 1 image, (2π − s)/s e^{−πσ/t}, matters near the antipode; the others only for
    t >= _FAR_IMAGES_MIN_T.
    """
    ratio = 1.0 + (TWO_PI - s) / s * torch.exp(-PI * sigma / t)
    if float(t.max()) >= _FAR_IMAGES_MIN_T:
        for n in range(-_N_IMAGES, _N_IMAGES + 1):
            if n not in (0, 1):
                sign = -1.0 if n % 2 else 1.0
                ratio = ratio + sign * (1.0 - TWO_PI * n / s) * torch.exp(-PI * n * (PI * (n - 1) + sigma) / t)
    return ratio


def _sphere_h(theta, t, eps, big_y, y, y_gap):
    """The y-integrand without its Gaussian: h(y) = 2√t ((s+θ)/(sin((s+θ)/2) sinc((s−θ)/2)))^{1/2} (1 + R(s)).

    Columns (m, 1) for θ, t, ε = π − θ and Y; nodes y and Y − y (m, q) or (q,).
    s² = θ² + 4ty², σ = π − s = 4t(Y−y)(Y+y)/(π+s), (s−θ)/2 = 2ty²/(s+θ); s + θ and its half-angle
    sine are taken from whichever side (0 or 2π) they are accurate on. h is analytic in y².
    """
    s = torch.sqrt(theta * theta + 4.0 * t * y * y)
    sigma = 4.0 * t * y_gap * (big_y + y) / (PI + s)
    s_plus = torch.where(theta < 0.5 * PI, s + theta, TWO_PI - eps - sigma)
    low = s_plus <= PI
    s_plus_low = torch.where(low, s_plus, torch.ones_like(s_plus))
    s_plus_high = torch.where(low, torch.full_like(s_plus, PI), s_plus)
    eps_sigma_high = torch.where(low, torch.full_like(s_plus, PI), eps + sigma)
    log_ratio = torch.where(low, math.log(2.0) - _log_sinc(0.5 * s_plus_low),
                            torch.log(s_plus_high) - torch.log(torch.sin(0.5 * eps_sigma_high)))
    log_sinc_gap = _log_sinc(2.0 * t * y * y / s_plus)
    return (2.0 * torch.sqrt(t) * torch.exp(0.5 * (log_ratio - log_sinc_gap))
            * _sphere_image_ratio(s, sigma, t))


def _sphere_columns(theta, t):
    eps = (PI - theta)[:, None]
    big_y = torch.sqrt(eps * (TWO_PI - eps) / (4.0 * t[:, None]))
    return theta[:, None], t[:, None], eps, big_y


def _sphere_log_integral_hermite(theta, t):
    """log ∫_0^∞ e^{−y²} h(y) dy by Gauss–Hermite (Y >= _Y_CUT: the part beyond Y is negligible)."""
    nodes, weights = _gauss_hermite_half(_N_HERMITE, theta)
    th, tt, eps, big_y = _sphere_columns(theta, t)
    h = _sphere_h(th, tt, eps, big_y, nodes, big_y - nodes)
    return torch.log((weights * h).sum(dim=1))


def _sphere_log_integral_legendre(theta, t):
    """log ∫_0^Y e^{−y²} h(y) dy by Gauss–Legendre on [0, Y] (_Y_SWITCH <= Y < _Y_CUT)."""
    nodes, weights = _gauss_legendre_01(_N_LEGENDRE_Y, theta)
    th, tt, eps, big_y = _sphere_columns(theta, t)
    y = big_y * nodes
    h = _sphere_h(th, tt, eps, big_y, y, big_y * (1.0 - nodes))
    return torch.log((big_y * weights * torch.exp(-y * y) * h).sum(dim=1))


def _sphere_log_integral_phi(theta, t):
    """log of √2 ∫_0^{π/2} s e^{−y²} (1 + R(s)) / cos(σ/2) dφ (Y < _Y_SWITCH, near θ = π).

    cos(s/2) = cos(θ/2) cos φ, i.e. σ = π − s = 2 arcsin(sin(ε/2) cos φ), ε = π − θ;
    y² = (s² − θ²)/4t = (ε − σ)(2π − ε − σ)/4t. Regular at θ = π (σ ≡ 0, s ≡ π).
    """
    nodes, weights = _gauss_legendre_01(_N_LEGENDRE_PHI, theta)
    phi = 0.5 * PI * nodes
    eps = (PI - theta)[:, None]
    tt = t[:, None]
    sigma = 2.0 * torch.asin(torch.sin(0.5 * eps) * torch.cos(phi))
    s = PI - sigma
    y2 = (eps - sigma) * (TWO_PI - eps - sigma) / (4.0 * tt)
    integrand = s * torch.exp(-y2) * _sphere_image_ratio(s, sigma, tt) / torch.cos(0.5 * sigma)
    return torch.log(math.sqrt(2.0) * 0.5 * PI * (weights * integrand).sum(dim=1))


def _sphere_log_mehler_dirichlet(theta, t):
    """log k_t(θ) = ½log 2 + t/4 − (3/2) log(4πt) − θ²/4t + log J (t < SPHERE_SERIES_MIN_T)."""
    eps = PI - theta
    y2 = eps * (TWO_PI - eps) / (4.0 * t)
    hermite = y2 >= _Y_CUT ** 2
    phi = y2 < _Y_SWITCH ** 2
    log_integral = _by_route(theta, t, [
        (hermite, _sphere_log_integral_hermite),
        (~hermite & ~phi, _sphere_log_integral_legendre),
        (phi, _sphere_log_integral_phi),
    ])
    return (0.5 * math.log(2.0) + 0.25 * t - 1.5 * torch.log(4.0 * PI * t)
            - theta * theta / (4.0 * t) + log_integral)


def _sphere_log_series(theta, t):
    """log of the zonal series Σ_l (2l+1)/(4π) e^{−l(l+1)t} P_l(cos θ) (t >= SPHERE_SERIES_MIN_T)."""
    lmax = _series_degree(float(t.min()), lambda l: 2 * l + 1)
    x = torch.cos(theta)
    p_prev, p_cur = torch.ones_like(x), x
    total = 1.0 + 3.0 * torch.exp(-2.0 * t) * x
    for l in range(1, lmax):
        p_prev, p_cur = p_cur, ((2 * l + 1) * x * p_cur - l * p_prev) / (l + 1)
        total = total + (2 * l + 3) * torch.exp(-(l + 1) * (l + 2) * t) * p_cur
    return torch.log(total) - math.log(4.0 * PI)


def _sphere_log_parametrix(theta, t):
    """log of the small-t parametrix (4πt)^{−1} e^{−θ²/4t} (θ/sin θ)^{1/2} (1 + t u_1(θ)),
    u_1 = ¼(1 + (1 − θ cot θ)/θ²); relative error O(t²) (≤ 7e-10 at t = 1e-4, θ ≤ 1: see the
    tests against the quadrature). Flat in/out, differentiable (series below θ = 1e-2)."""
    small = theta < 1e-2
    th = torch.where(small, torch.ones_like(theta), theta)
    th2 = theta * theta
    # log(θ/sin θ) and f = (1 − θ cot θ)/θ², by their Taylor series near 0
    log_ratio = torch.where(small, th2 / 6 + th2 * th2 / 180 + th2**3 / 2835,
                            torch.log(th / torch.sin(th)))
    f = torch.where(small, 1 / 3 + th2 / 45 + 2 * th2 * th2 / 945 + th2**3 / 4725,
                    (1 - th / torch.tan(th)) / (th * th))
    u1 = 0.25 * (1 + f)
    return -torch.log(4 * PI * t) - th2 / (4 * t) + 0.5 * log_ratio + torch.log1p(t * u1)


def _sphere_dlog_parametrix(theta, t):
    """d/dθ of ``_sphere_log_parametrix`` (analytic; series below θ = 1e-2). Flat in/out."""
    small = theta < 1e-2
    th = torch.where(small, torch.ones_like(theta), theta)
    th2 = theta * theta
    sin, cos = torch.sin(th), torch.cos(th)
    # d/dθ log(θ/sin θ) = 1/θ − cot θ;  f = (1 − θ cot θ)/θ², f' = (θ/sin²θ − cot θ)/θ² − 2f/θ
    dlog_ratio = torch.where(small, theta / 3 + theta * th2 / 45 + 2 * theta * th2 * th2 / 945,
                             1 / th - cos / sin)
    f = torch.where(small, 1 / 3 + th2 / 45 + 2 * th2 * th2 / 945 + th2**3 / 4725,
                    (1 - th * cos / sin) / (th * th))
    df = torch.where(small, 2 * theta / 45 + 8 * theta * th2 / 945 + 6 * theta * th2 * th2 / 4725,
                     (th / (sin * sin) - cos / sin) / (th * th) - 2 * f / th)
    return -theta / (2 * t) + 0.5 * dlog_ratio + t * 0.25 * df / (1 + t * 0.25 * (1 + f))


def _sphere_log_flat(theta, t):
    theta = _reflect_above_pi(theta)
    series = t >= SPHERE_SERIES_MIN_T
    parametrix = (t <= SPHERE_PARAMETRIX_MAX_T) & (theta <= SPHERE_PARAMETRIX_MAX_THETA)
    quadrature = ~series & ~parametrix
    return _by_route(theta, t, [(series, _sphere_log_series), (parametrix, _sphere_log_parametrix),
                                (quadrature, _sphere_log_mehler_dirichlet)])


def sphere_log_heat_kernel(theta, t):
    """log k_t(θ) of the unit sphere S² (w.r.t. area; ∂_t k = Δk) at geodesic angle θ in [0, π].

    theta : array (...), t > 0 broadcast against it. Returns log k, the broadcast shape.
    Zonal series for t >= SPHERE_SERIES_MIN_T, Mehler–Dirichlet quadrature below (module doc).
    """
    theta, t, shape, dtype = _prepare_angle(theta, t, "theta", geodesic=True)
    return _chunked(_sphere_log_flat, theta, t).reshape(shape).to(dtype)


def sphere_dlog_heat_kernel_dtheta(theta, t):
    """d log k_t(θ)/dθ on S² (0 at θ = 0 and θ = π), same inputs and routes as the value.

    The score of the kernel is (d log k/dθ) ∇_x θ. Exact derivative of the formulas (autograd).
    """
    theta, t, shape, dtype = _prepare_angle(theta, t, "theta", geodesic=True)
    _, deriv = _chunked(_sphere_log_flat, theta, t, derivative=True)
    return deriv.reshape(shape).to(dtype)


# ---------------------------------------------------------------------------------------------
# SO(3)


def _exp_sinhc(a, c):
    """e^{−c} sinh(a)/a for 0 <= a < 3 (Taylor below 1e-4: exact derivatives, no 0/0)."""
    small = a < 1e-4
    a_safe = torch.where(small, torch.ones_like(a), a)
    return torch.exp(-c) * torch.where(small, 1.0 + a * a / 6.0, torch.sinh(a_safe) / a_safe)


def _so3_bracket_unpaired(theta, t):
    """B = 1 + Σ_{n≠0} (−1)^n (1 − 2πn/θ) e^{−πn(πn−θ)/t}, for πθ/t >= 1."""
    total = torch.ones_like(theta)
    for n in range(-_N_IMAGES, _N_IMAGES + 1):
        if n:
            sign = -1.0 if n % 2 else 1.0
            total = total + sign * (1.0 - TWO_PI * n / theta) * torch.exp(-PI * n * (PI * n - theta) / t)
    return total


def _so3_bracket_paired(theta, t):
    """B with the ±n terms paired, for πθ/t < 1:
    B = 1 + Σ_{n>=1} (−1)^n [E⁻ + E⁺ − (4π²n²/t) e^{−π²n²/t} sinh(a)/a], a = πnθ/t,
    E^∓ = e^{−πn(πn∓θ)/t}; at θ = 0 this is Σ_n (−1)^n (1 − 2π²n²/t) e^{−π²n²/t}.
    """
    total = torch.ones_like(theta)
    for n in range(1, _N_IMAGES + 1):
        sign = -1.0 if n % 2 else 1.0
        e_minus = torch.exp(-PI * n * (PI * n - theta) / t)
        e_plus = torch.exp(-PI * n * (PI * n + theta) / t)
        sinhc = _exp_sinhc(PI * n * theta / t, PI ** 2 * n * n / t)
        total = total + sign * (e_minus + e_plus - 4.0 * PI ** 2 * n * n / t * sinhc)
    return total


def _so3_log_poisson(theta, t):
    """log k_t(θ) on SO(3) from the Poisson-summed form (t < SO3_SERIES_MIN_T). Flat in/out.

    k = e^{t/4} (4πt)^{−3/2} (θ/2)/sin(θ/2) e^{−θ²/4t} B(θ, t).
    """
    paired = PI * theta < t
    bracket = _by_route(theta, t, [(paired, _so3_bracket_paired), (~paired, _so3_bracket_unpaired)])
    return (0.25 * t - 1.5 * torch.log(4.0 * PI * t) - _log_sinc(0.5 * theta)
            - theta * theta / (4.0 * t) + torch.log(bracket))


def _so3_log_series(theta, t):
    """log of (1/8π²) Σ_l (2l+1) e^{−l(l+1)t} χ_l(θ), χ_l = 1 + 2 Σ_{m<=l} cos(mθ)."""
    lmax = _series_degree(float(t.min()), lambda l: (2 * l + 1) ** 2)
    c1 = torch.cos(theta)
    cos_prev, cos_cur = torch.ones_like(theta), c1
    chi = 1.0 + 2.0 * c1
    total = 1.0 + 3.0 * torch.exp(-2.0 * t) * chi
    for l in range(2, lmax + 1):
        cos_prev, cos_cur = cos_cur, 2.0 * c1 * cos_cur - cos_prev
        chi = chi + 2.0 * cos_cur
        total = total + (2 * l + 1) * torch.exp(-l * (l + 1) * t) * chi
    return torch.log(total) - math.log(8.0 * PI ** 2)


def _so3_log_flat(theta, t):
    theta = _reflect_above_pi(theta)
    series = t >= SO3_SERIES_MIN_T
    return _by_route(theta, t, [(series, _so3_log_series), (~series, _so3_log_poisson)])


def so3_log_heat_kernel(theta, t):
    """log k_t(θ) on SO(3) (w.r.t. the volume 8π², metric ½tr(UᵀV)) at rotation angle θ in [0, π].

    theta : array (...), t > 0 broadcast against it. Returns log k, the broadcast shape.
    k_t(I) = e^{t/4} (4πt)^{−3/2} Σ_n (−1)^n (1 − 2π²n²/t) e^{−π²n²/t} at small t.
    """
    theta, t, shape, dtype = _prepare_angle(theta, t, "theta", geodesic=True)
    return _chunked(_so3_log_flat, theta, t, chunk=_CHUNK_SO3).reshape(shape).to(dtype)


def so3_dlog_heat_kernel_dtheta(theta, t):
    """d log k_t(θ)/dθ on SO(3) (0 at θ = 0), same inputs and routes as the value (autograd)."""
    theta, t, shape, dtype = _prepare_angle(theta, t, "theta", geodesic=True)
    _, deriv = _chunked(_so3_log_flat, theta, t, derivative=True, chunk=_CHUNK_SO3)
    return deriv.reshape(shape).to(dtype)


# ---------------------------------------------------------------------------------------------
# circle and torus


def _circle_images(delta, t):
    """Image sum: log-weights −(δ + 2πm)²/4t and offsets δ + 2πm, m = −3..3 (t <= 1)."""
    m = torch.arange(-_N_IMAGES, _N_IMAGES + 1, dtype=torch.float64, device=delta.device)
    shifted = delta[:, None] + TWO_PI * m
    return shifted, -shifted * shifted / (4.0 * t[:, None])


def _circle_fourier(delta, t):
    """Fourier sums 1 + 2Σ e^{−k²t} cos kδ and its δ-derivative −2Σ k e^{−k²t} sin kδ."""
    kmax = 1
    t_min = float(t.min())
    while kmax * kmax * t_min < -math.log(_SERIES_RTOL):
        kmax += 1
    k = torch.arange(1, kmax + 1, dtype=torch.float64, device=delta.device)
    damp = torch.exp(-(k * k) * t[:, None])
    angle = k * delta[:, None]
    value = 1.0 + 2.0 * (damp * torch.cos(angle)).sum(dim=1)
    deriv = -2.0 * (k * damp * torch.sin(angle)).sum(dim=1)
    return value, deriv


def _circle_log_and_dlog(delta, t):
    """(log k, d log k/dδ) of the wrapped Gaussian of variance 2t, flat float64 in."""
    delta = torch.remainder(delta + PI, TWO_PI) - PI
    fourier = t > CIRCLE_FOURIER_MIN_T

    def images_log(d, tt):
        _, logw = _circle_images(d, tt)
        return torch.logsumexp(logw, dim=1) - 0.5 * torch.log(4.0 * PI * tt)

    def images_dlog(d, tt):
        shifted, logw = _circle_images(d, tt)
        weights = torch.softmax(logw, dim=1)
        return -(weights * shifted).sum(dim=1) / (2.0 * tt)

    def fourier_log(d, tt):
        return torch.log(_circle_fourier(d, tt)[0]) - math.log(TWO_PI)

    def fourier_dlog(d, tt):
        value, deriv = _circle_fourier(d, tt)
        return deriv / value

    log_k = _by_route(delta, t, [(fourier, fourier_log), (~fourier, images_log)])
    dlog_k = _by_route(delta, t, [(fourier, fourier_dlog), (~fourier, images_dlog)])
    return log_k, dlog_k


def circle_log_heat_kernel(delta, t):
    """log of the circle heat kernel (wrapped Gaussian of variance 2t w.r.t. dθ on [0, 2π)).

    delta : any real array (...) (periodic), t > 0 broadcast against it. Image sum for
    t <= CIRCLE_FOURIER_MIN_T, Fourier series (1/2π)(1 + 2Σ e^{−k²t} cos kδ) above.
    """
    delta, t, shape, dtype = _prepare_angle(delta, t, "delta", geodesic=False)
    return _circle_log_and_dlog(delta, t)[0].reshape(shape).to(dtype)


def circle_dlog_heat_kernel_ddelta(delta, t):
    """d log k_t(δ)/dδ of the circle heat kernel (analytic, same routes as the value)."""
    delta, t, shape, dtype = _prepare_angle(delta, t, "delta", geodesic=False)
    return _circle_log_and_dlog(delta, t)[1].reshape(shape).to(dtype)


def _torus_inputs(delta, t):
    delta = as_float_tensor(delta, "delta")
    if delta.ndim < 1:
        raise ValueError(f"delta must have a trailing coordinate axis (..., d), found shape {tuple(delta.shape)}")
    t = check_time(t, "t", device=delta.device)
    return delta, t.unsqueeze(-1)


def torus_log_heat_kernel(delta, t):
    """log k_t on the flat torus T^d = Σ_i log k_t^{circle}(δ_i) (w.r.t. dθ_1…dθ_d).

    delta : (..., d) coordinate differences, t > 0 broadcast against delta[..., 0]. Returns (...).
    """
    delta, t = _torus_inputs(delta, t)
    return circle_log_heat_kernel(delta, t).sum(dim=-1)


def torus_grad_log_heat_kernel(delta, t):
    """∂ log k_t/∂δ_i on T^d, shape (..., d) (the gradient in the first argument's coordinates)."""
    delta, t = _torus_inputs(delta, t)
    return circle_dlog_heat_kernel_ddelta(delta, t)


# ---------------------------------------------------------------------------------------------
# levels of a spectral sum


def levels_for_accuracy(eigenvalue_fn, multiplicity_fn, t, rtol, log_scale=0.0, max_levels=100_000):
    """Smallest L such that the levels l >= L of k_t = Σ_l e^{−λ_l t} Σ_{i in l} φ_i(x) φ_i(y) add
    at most ``rtol`` × e^{log_scale} / vol at every (x, y).

    eigenvalue_fn(l), multiplicity_fn(l): distinct eigenvalue and multiplicity of level l (l >= 0).
    Bound used (homogeneous spaces, addition theorem): |Σ_{i in l} φ_i(x) φ_i(y)| <= m_l / vol,
    so the truncation error is <= (1/vol) Σ_{l>=L} m_l e^{−λ_l t}. Once the term ratio
    r_l = m_{l+1} e^{−λ_{l+1} t} / (m_l e^{−λ_l t}) is < 1 and non-increasing in l (true for
    λ_l = l(l+1) with polynomial m_l: S², SO(3)), the tail from l is <= term_l / (1 − r_l); L is the
    first l where that bound is <= rtol e^{log_scale}. ``log_scale`` = 0 measures the error relative
    to the stationary density 1/vol; log(vol · min k_t) relative to the kernel's minimum.
    This bounds truncation only: a float64 sum whose terms are much larger than its value (small t
    at far points) also cancels, which the closed forms avoid.
    Returns L (keep levels 0 … L−1); ``ValueError`` if more than ``max_levels`` would be needed.
    """
    t = _positive_float(t, "t")
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), found {rtol}")

    def log_term(l):
        return math.log(multiplicity_fn(l)) - eigenvalue_fn(l) * t

    log_bound = math.log(rtol) + log_scale
    for l in range(1, max_levels + 1):
        step = log_term(l + 1) - log_term(l)
        if step < 0 and log_term(l) - math.log1p(-math.exp(step)) <= log_bound:
            return l
    raise ValueError(f"t = {t:.3g} needs more than max_levels = {max_levels} levels for rtol = {rtol:.3g}")


def _positive_float(value, name):
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, found {value}")
    return value


def _log_scale(reference, log_vol, log_min_kernel):
    if reference == "stationary":
        return 0.0
    if reference == "minimum":
        return log_vol + log_min_kernel()
    raise ValueError(f"reference must be 'stationary' or 'minimum', found {reference!r}")


def sphere_levels_for_accuracy(t, rtol=1e-10, reference="stationary"):
    """Levels of the S² zonal series (λ = l(l+1), m = 2l+1) for truncation error <= rtol × the
    reference: "stationary" (1/4π) or "minimum" (k_t(π), from the closed form)."""
    log_scale = _log_scale(reference, math.log(4.0 * PI),
                           lambda: float(sphere_log_heat_kernel(torch.tensor(PI, dtype=torch.float64), t)))
    return levels_for_accuracy(lambda l: l * (l + 1), lambda l: 2 * l + 1, t, rtol, log_scale)


def so3_levels_for_accuracy(t, rtol=1e-10, reference="stationary"):
    """Levels of the SO(3) character series (λ = l(l+1), m = (2l+1)²) for truncation error
    <= rtol × the reference: "stationary" (1/8π²) or "minimum" (k_t at angle π)."""
    log_scale = _log_scale(reference, math.log(8.0 * PI ** 2),
                           lambda: float(so3_log_heat_kernel(torch.tensor(PI, dtype=torch.float64), t)))
    return levels_for_accuracy(lambda l: l * (l + 1), lambda l: (2 * l + 1) ** 2, t, rtol, log_scale)


def torus_levels_for_accuracy(d, t, rtol=1e-10, reference="stationary"):
    """Levels of T^d (distinct values of |k|², k in Z^d, ascending) for truncation error
    <= rtol × the reference: "stationary" (1/(2π)^d) or "minimum" (k_t at δ = (π, …, π)).

    Bound used: if |k|² >= N = d(j−1)² + 1 then some |k_i| >= j, so
    Σ_{|k|² >= N} e^{−|k|²t} <= d · T(j) · Θ^{d−1}, with T(j) = 2Σ_{i>=j} e^{−i²t} <=
    2e^{−j²t}/(1 − e^{−(2j+1)t}) and Θ = Σ_{i in Z} e^{−i²t} <= 1 + 2e^{−t}/(1 − e^{−3t}).
    j is the smallest integer meeting the tolerance; the result counts the distinct sums of d
    squares below N (all integers when d >= 4).
    """
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
        raise ValueError(f"d must be an integer >= 1, found {d!r}")
    t = _positive_float(t, "t")
    log_scale = _log_scale(reference, d * math.log(TWO_PI),
                           lambda: d * float(circle_log_heat_kernel(torch.tensor(PI, dtype=torch.float64), t)))
    if not 0 < rtol < 1:
        raise ValueError(f"rtol must be in (0, 1), found {rtol}")
    log_theta = math.log1p(2.0 * math.exp(-t) / -math.expm1(-3.0 * t))
    log_bound = math.log(rtol) + log_scale
    j = 1
    while (math.log(2.0 * d) - j * j * t - math.log(-math.expm1(-(2 * j + 1) * t))
           + (d - 1) * log_theta) > log_bound:
        j += 1
    return _count_sums_of_squares(d, d * (j - 1) ** 2 + 1)


def _count_sums_of_squares(d, n_bound):
    """How many integers in [0, n_bound) are sums of d squares (the levels of T^d below n_bound)."""
    if d == 1:
        return math.isqrt(n_bound - 1) + 1
    if d == 2:
        squares = np.arange(math.isqrt(n_bound - 1) + 1) ** 2
        reachable = np.zeros(n_bound, dtype=bool)
        for a2 in squares:
            reachable[a2 + squares[squares < n_bound - a2]] = True
        return int(reachable.sum())
    if d == 3:                                   # Legendre: all but n = 4^a (8b + 7)
        n = np.arange(n_bound)
        for _ in range(n_bound.bit_length() // 2 + 1):
            n = np.where((n % 4 == 0) & (n > 0), n // 4, n)
        return int((n % 8 != 7).sum())
    return n_bound                               # Lagrange: every integer, d >= 4
