"""Heat kernel of the unit sphere S^d (d ≥ 2) as a function of the geodesic angle, and exact
draws of the angle of Brownian motion.

Conventions (DESIGN.md): ∂_t k = Δk, k_t(θ) is a density w.r.t. the area of S^d,

    k_t(θ) = Σ_l e^{−l(l+d−1)t} N(d, l)/|S^d| · C_l^{(λ)}(cos θ)/C_l^{(λ)}(1),  λ = (d − 1)/2,

and every function takes an angle array θ ∈ [0, π] (angles just above π read as 2π − θ) and
t > 0 broadcast against it, computes in float64 and returns the broadcast shape in the angle's
floating dtype and device. Values are logarithms (finite where k underflows).

Dimension raising. With x = cos θ, d/dx C_l^{(λ)} = 2λ C_{l−1}^{(λ+1)}, l(l+d−1) = (l−1)(l+d) + d
and N(d, l)/C_l^{(λ)}(1) = (l + λ)/λ give, term by term,

    k_{d+2}(θ, t) = e^{dt}/(2π) ∂_x k_d = −e^{dt}/(2π sin θ) ∂_θ k_d.

So k_{2p+1} = e^{p²t} (2π)^{−p} ∂_x^p k_1 (k_1 the wrapped Gaussian of variance 2t, as a function of
x), k_{2p+2} = e^{p(p+1)t} (2π)^{−p} ∂_x^p k_2, and d log k_d/dθ = −sin θ ∂_x^{p+1}(…)/∂_x^p(…):
the derivative is the next order of the same construction. Also k decreases in θ
(∂_θ k_d = −2π sin θ e^{−dt} k_{d+2} < 0), which the sampler uses.

Routes (per element; they agree to round-off where they switch, see the tests):

* t >= ``SERIES_MIN_T``: the Gegenbauer series (normalised recurrence, |R_l| <= 1), truncated by
  the addition-theorem bound Σ_{l>=L} N(d, l)(1 + λ_l) e^{−λ_l t}/|S^d| <= 1e-18/|S^d|.
* d = 2: :func:`heatscore.manifolds._closed_forms.sphere_log_heat_kernel` (Mehler–Dirichlet).
* d = 3, t < ``SERIES_MIN_T``: k = e^t (4πt)^{−3/2} Σ_n (θ + 2πn)/sin θ e^{−(θ+2πn)²/4t}, |n| <= 3,
  with the images ±n paired (cosh and sinh(a)/a) where πθ < t, and the images n, −1−n paired
  (2ε e^{−(c²+ε²)/4t}[(c²/2t) sinh(b)/b − cosh b], c = (2n+1)π, ε = π − θ, b = cε/2t) where
  πε < 2t: no 0/0 at θ = 0 or π. d log k/dθ by autograd through this form.
* odd d >= 5, t < ``SERIES_MIN_T``: ∂_x^p of f = Σ_n e^{−(θ+2πn)²/4t} (|n| <= 3), an entire function of
  x, by Cauchy's formula f^{(q)}(x) = q!/r^q · mean_j f(x + r e^{iφ_j}) e^{−iqφ_j} on ``_N_CONTOUR``
  points (trapezoid: error ~ r^M |f^{(q+M)}|/(q+M)!, negligible), in log form relative to f(x)
  (e^{−θ²/4t} factored out exactly) with the radius r = (p + ½)/|d log f/dx| (so the contour
  values exceed the result by a factor ~√(2πp) only); f is real on the real axis, so only the
  upper half of the contour is evaluated (the lower half holds the conjugates). The complex
  angle θ' of x + z comes from the half-angle sines, Δ(θ/2) = asin(−(z/2)(cos(θ/2)/(sin(θ/2) +
  sin(θ'/2)) + sin(θ/2)/(cos(θ/2) + cos(θ'/2)))), accurate at both poles; the contour never
  touches the real axis, so θ = 0 and θ = π need no limit.
* even d >= 4, t < ``SERIES_MIN_T``: differentiating the S² Mehler–Dirichlet integral under the
  integral sign (x-derivatives of its Abel form ∫_0^1 ψ(−1 + (1+x)v) v^{−1/2}(1−v)^{−1/2} dv,
  ψ(cos s) = g(s)/(√2 sin(s/2)) entire in cos s, g the S² image sum) gives

      ∂_x^p ∫_θ^π g(s)(cos θ − cos s)^{−1/2} ds
          = ∫_θ^π (cos(s/2)/cos(θ/2))^{2p} √2 sin(s/2) ψ^{(p)}(cos s) (cos θ − cos s)^{−1/2} ds:

  the S² quadratures (Gauss–Hermite / Gauss–Legendre in y, s² = θ² + 4ty², and the angle φ,
  cos(s/2) = cos(θ/2) cos φ, near the antipode) with each node's integrand multiplied by
  (cos(s/2)/cos(θ/2))^{2p} ψ^{(p)}/ψ, and ψ^{(p)}/ψ from the Cauchy formula at every node as for
  odd d. The integrand is differentiated analytically (by the contour), never numerically.

Every d >= 2 is covered; the tests pin d = 2 … 6 against mpmath (the Gegenbauer series at high
precision for t >= 0.05, the closed forms and recursions at small t).
"""

import math

import torch

from heatscore._validation import as_generator, check_positive_int, rand, randn
from heatscore.manifolds._closed_forms import (
    _FAR_IMAGES_MIN_T, _N_HERMITE, _N_LEGENDRE_PHI, _N_LEGENDRE_Y, _Y_CUT, _Y_SWITCH, _chunked, _exp_sinhc,
    _gauss_hermite_half, _gauss_legendre_01, _log_scale, _log_sinc, _prepare_angle,
    _reflect_above_pi, _sphere_columns, _sphere_h, _sphere_image_ratio, levels_for_accuracy,
    sphere_dlog_heat_kernel_dtheta, sphere_log_heat_kernel)
from heatscore.manifolds._hyperspherical import (_sphere_volume, check_sphere_dim,
                                                 gegenbauer_ratio_terms, level_multiplicity)
from heatscore.manifolds._radial_sampling import _times, sample_sphere_angle

__all__ = ["sphere_d_log_heat_kernel", "sphere_d_dlog_heat_kernel_dtheta",
           "sphere_d_levels_for_accuracy", "sample_sphere_d_angle", "sphere_d_angle_log_density"]

PI = math.pi
TWO_PI = 2.0 * math.pi

#: Gegenbauer series for t >= this, closed forms below.
SERIES_MIN_T = 0.5
#: Truncation of the series relative to 1/|S^d| (the kernel's minimum at t >= SERIES_MIN_T is
#: above 0.25/|S^d| for d >= 3, so this is below 1e-17 relative).
_SERIES_RTOL = 1e-18
#: Points on each Cauchy contour.
_N_CONTOUR = 24
#: Largest contour radius in x = cos θ (reached only near t = SERIES_MIN_T).
_MAX_RADIUS = 1.0
#: Angles per chunk of the contour routes (odd: chunk × contour; even: chunk × nodes × contour
#: complex entries, a few dozen temporaries each: ~100 MB).
_CHUNK_ODD = 1 << 12
_CHUNK_EVEN = 1 << 8
#: Images n = −3 … 3 of the wrapped Gaussian.
_N_IMAGES = 3


# ---------------------------------------------------------------------------------------------
# Gegenbauer series


def _series_log_and_dlog(d, theta, t):
    """(log k, d log k/dθ) from the Gegenbauer series, flat θ ∈ [0, π], t >= SERIES_MIN_T.

    dk/dθ = −sin θ Σ_l e^{−λ_l t} N(d, l) (λ_l/d) R^{(λ+1)}_{l−1}(cos θ)/|S^d|, with
    R_l = C_l^{(λ)}/C_l^{(λ)}(1) (from d/dx C_l^{(λ)} = 2λ C_{l−1}^{(λ+1)}).
    """
    lam = 0.5 * (d - 1)
    n_levels = levels_for_accuracy(lambda l: l * (l + d - 1),
                                   lambda l: level_multiplicity(d, l) * (1 + l * (l + d - 1)),
                                   float(t.min()), _SERIES_RTOL)
    x = torch.cos(theta)
    total = torch.zeros_like(x)
    deriv = torch.zeros_like(x)
    upper = gegenbauer_ratio_terms(lam + 1, x, n_levels)
    for l, ratio in enumerate(gegenbauer_ratio_terms(lam, x, n_levels)):
        ev = l * (l + d - 1)
        weight = torch.exp(-ev * t) * level_multiplicity(d, l)
        total = total + weight * ratio
        if l:
            deriv = deriv + weight * (ev / d) * next(upper)
    return torch.log(total) - math.log(_sphere_volume(d)), -torch.sin(theta) * deriv / total


# ---------------------------------------------------------------------------------------------
# Cauchy contours in x = cos(angle)


def _contour_radius(order, angle, comp, t):
    """r = (order + ½)/a, a ≈ |d log f/dx| for f ≈ e^{−angle²/4t} + its antipodal image:
    angle/(2t sin angle) near the pole; (ε/sin ε)(π²/2t · tanh(u)/u − 1)/2t, u = πε/2t, ε = comp,
    near the antipode (where the pair is e^{−(π²+ε²)/4t} 2cosh u); a >= 1 and r <= _MAX_RADIUS."""
    pole = angle <= 0.5 * PI
    a_pole = 1.0 / (2.0 * t) / torch.exp(_log_sinc(torch.where(pole, angle, torch.zeros_like(angle))))
    u = PI * comp / (2.0 * t)
    small = u < 1e-6
    u_safe = torch.where(small, torch.ones_like(u), u)
    tanhc = torch.where(small, torch.ones_like(u), torch.tanh(u_safe) / u_safe)
    comp_safe = torch.where(pole, torch.zeros_like(comp), comp)
    a_anti = (PI * PI / (2.0 * t) * tanhc - 1.0) / (2.0 * t) / torch.exp(_log_sinc(comp_safe))
    a = torch.where(pole, a_pole, a_anti).clamp_min(1.0)
    return ((order + 0.5) / a).clamp_max(_MAX_RADIUS)


def _contour(angle, comp, r):
    """Complex angles on the upper half of the circle x' = x + r e^{iφ_j} around x = cos(angle),
    φ_j = 2π(j + ½)/M, j < M/2 (the functions are real on the real axis: the lower half holds the
    complex conjugates).

    angle, comp = π − angle, r: real (...). Returns (angle', comp', Δ, sin(angle'/2), e^{iφ}) with a
    trailing contour axis (..., M): Δ = angle' − angle from the half-angle sines (module doc), so
    that angle' and comp' = comp − Δ keep their accuracy at both poles.
    """
    phi = (torch.arange(_N_CONTOUR // 2, dtype=torch.float64, device=angle.device) + 0.5) * (TWO_PI / _N_CONTOUR)
    e = torch.polar(torch.ones_like(phi), phi)
    z = r[..., None] * e
    a = torch.sin(0.5 * angle)[..., None]
    c = torch.sin(0.5 * comp)[..., None]
    a2 = torch.sqrt(a * a - 0.5 * z)
    c2 = torch.sqrt(c * c + 0.5 * z)
    delta = 2.0 * torch.asin(-0.5 * z * (c / (a + a2) + a / (c + c2)))
    return angle[..., None] + delta, comp[..., None] - delta, delta, a2, e


def _cauchy_factors(ratio, e, r, orders):
    """f^{(q)}(x)/f(x) = q!/r^q · (1/M) Σ_j ratio_j e^{−iqφ_j} for q in ``orders``, from the upper
    half of the contour (twice the real part)."""
    out = []
    for q in orders:
        mean = (ratio * e.conj() ** q).real.sum(dim=-1) * (2.0 / _N_CONTOUR)
        out.append(mean * math.factorial(q) / r ** q)
    return out


# ---------------------------------------------------------------------------------------------
# odd d


def _s3_log_generic(theta, t):
    """log k_3 − t + (3/2) log 4πt with the images unpaired (πθ >= t, πε >= 2t)."""
    eps = PI - theta
    images = torch.ones_like(theta)
    for n in range(1, _N_IMAGES + 1):
        images = images + (1.0 + TWO_PI * n / theta) * torch.exp(-PI * n * (PI * (n + 1) - eps) / t)
        images = images + (1.0 - TWO_PI * n / theta) * torch.exp(-PI * n * (PI * (n - 1) + eps) / t)
    pole = theta <= 0.5 * PI
    log_ratio = torch.where(pole, -_log_sinc(torch.where(pole, theta, torch.zeros_like(theta))),
                            torch.log(theta) - torch.log(torch.sin(torch.where(pole, torch.ones_like(eps), eps))))
    return -theta * theta / (4.0 * t) + log_ratio + torch.log(images)


def _s3_log_pole(theta, t):
    """The same with the images ±n paired (πθ < t):
    1 + Σ_{n>=1} e^{−π²n²/t}(2 cosh a − (4π²n²/t) sinh(a)/a), a = πnθ/t."""
    images = torch.ones_like(theta)
    for n in range(1, _N_IMAGES + 1):
        c = PI * PI * n * n / t
        a = PI * n * theta / t
        images = images + 2.0 * torch.exp(-c) * torch.cosh(a) - 4.0 * c * _exp_sinhc(a, c)
    return -theta * theta / (4.0 * t) - _log_sinc(theta) + torch.log(images)


def _s3_log_antipode(theta, t):
    """The same with the images n, −1−n paired (πε < 2t, ε = π − θ)."""
    eps = PI - theta
    total = torch.zeros_like(theta)
    for n in range(_N_IMAGES):
        c = (2 * n + 1) * PI
        b = c * eps / (2.0 * t)
        total = total + torch.exp(-PI * PI * n * (n + 1) / t) * (
            c * c / (2.0 * t) * _exp_sinhc(b, torch.zeros_like(b)) - torch.cosh(b))
    return -(PI * PI + eps * eps) / (4.0 * t) - _log_sinc(eps) + torch.log(2.0 * total)


def _s3_log_flat(theta, t):
    """log k_t(θ) on S³, t < SERIES_MIN_T (module doc). Flat in/out, differentiable."""
    theta = _reflect_above_pi(theta)
    pole = PI * theta < t
    antipode = PI * (PI - theta) < 2.0 * t
    out = theta.new_zeros(theta.shape)
    for mask, fn in ((pole, _s3_log_pole), (antipode, _s3_log_antipode),
                     (~pole & ~antipode, _s3_log_generic)):
        idx = torch.nonzero(mask, as_tuple=True)[0]
        if idx.numel():
            out = out.index_put((idx,), fn(theta[idx], t[idx]))
    return t - 1.5 * torch.log(4.0 * PI * t) + out


def _wrapped_images(angle, comp, t):
    """Σ_n e^{−(angle+2πn)²/4t} / e^{−angle²/4t}
    = 1 + Σ_{n>=1} e^{−πn(π(n+1) − ε)/t} + e^{−πn(π(n−1) + ε)/t}
    (ε = comp); below t = _FAR_IMAGES_MIN_T only n = −1, e^{−πε/t} (the others are < e^{−π²/t})."""
    total = 1.0 + torch.exp(-PI * comp / t)
    if float(t.max()) >= _FAR_IMAGES_MIN_T:
        for n in range(1, _N_IMAGES + 1):
            total = total + torch.exp(-PI * n * (PI * (n + 1) - comp) / t)
            if n > 1:
                total = total + torch.exp(-PI * n * (PI * (n - 1) + comp) / t)
    return total


def _odd_log_and_dlog(p, theta, t):
    """(log k, d log k/dθ) on S^{2p+1} (p >= 1), flat θ ∈ [0, π], t < SERIES_MIN_T, by the Cauchy
    formula for ∂_x^p of the wrapped Gaussian f (module doc)."""
    eps = PI - theta
    r = _contour_radius(p, theta, eps, t)
    ang, comp, delta, _, e = _contour(theta, eps, r)
    tt = t[:, None]
    base = _wrapped_images(theta, eps, t)
    ratio = (torch.exp(-delta * (2.0 * theta[:, None] + delta) / (4.0 * tt))
             * _wrapped_images(ang, comp, tt) / base[:, None])
    f_p, f_next = _cauchy_factors(ratio, e, r, (p, p + 1))
    log_k = (p * p * t - 0.5 * torch.log(4.0 * PI * t) - p * math.log(TWO_PI)
             - theta * theta / (4.0 * t) + torch.log(base) + torch.log(f_p))
    return log_k, -_sin(theta, eps) * f_next / f_p


def _sin(theta, eps):
    """sin θ, from ε = π − θ past π/2 (accurate near the antipode)."""
    return torch.where(theta <= 0.5 * PI, torch.sin(theta), torch.sin(eps))


# ---------------------------------------------------------------------------------------------
# even d


def _psi_factors(p, s, sigma, t):
    """ψ^{(q)}/ψ at x = cos s for q = p, p + 1: ψ(cos s) = s e^{−s²/4t} (1 + R(s)) / (√2 sin(s/2)),
    R the S² image ratio. s, σ = π − s: (m, q) real; t: (m, 1)."""
    r = _contour_radius(p, s, sigma, t)
    ang, comp, delta, half_sin, e = _contour(s, sigma, r)
    tt = t[..., None]
    half = 0.5 * s
    ratio = (torch.exp(-delta * (2.0 * s[..., None] + delta) / (4.0 * tt)) * (0.5 * ang / half_sin)
             * _sphere_image_ratio(ang, comp, tt)
             * (torch.sin(half) / half / _sphere_image_ratio(s, sigma, t))[..., None])
    return _cauchy_factors(ratio, e, r, (p, p + 1))


def _even_y_route(p, theta, t, hermite):
    """(J_p, J_{p+1}) with √2 e^{t/4}(4πt)^{−3/2} e^{−θ²/4t} factored out, on the y routes: nodes
    s² = θ² + 4ty², Gauss–Hermite (Y >= _Y_CUT) or Gauss–Legendre on [0, Y] (module doc)."""
    th, tt, eps, big_y = _sphere_columns(theta, t)
    if hermite:
        nodes, weights = _gauss_hermite_half(_N_HERMITE, theta)
        y, w = nodes, weights
    else:
        nodes, weights = _gauss_legendre_01(_N_LEGENDRE_Y, theta)
        y = big_y * nodes
        w = big_y * weights * torch.exp(-y * y)
    y_gap = big_y - y
    h = _sphere_h(th, tt, eps, big_y, y, y_gap)
    s = torch.sqrt(th * th + 4.0 * tt * y * y)
    sigma = 4.0 * tt * y_gap * (big_y + y) / (PI + s)
    s, sigma = torch.broadcast_tensors(s, sigma)
    d_p, d_next = _psi_factors(p, s, sigma, tt)
    cos_ratio2 = (torch.sin(0.5 * sigma) / torch.sin(0.5 * eps)) ** 2
    base = w * h * cos_ratio2 ** p
    return (base * d_p).sum(dim=1), (base * cos_ratio2 * d_next).sum(dim=1)


def _even_phi_route(p, theta, t):
    """(J_p, J_{p+1}), factored as on the y routes, by the angle cos(s/2) = cos(θ/2) cos φ (near
    the antipode: regular at θ = π)."""
    nodes, weights = _gauss_legendre_01(_N_LEGENDRE_PHI, theta)
    phi = 0.5 * PI * nodes
    eps = (PI - theta)[:, None]
    tt = t[:, None]
    sigma = 2.0 * torch.asin(torch.sin(0.5 * eps) * torch.cos(phi))
    s = PI - sigma
    y2 = (eps - sigma) * (TWO_PI - eps - sigma) / (4.0 * tt)
    integrand = s * torch.exp(-y2) * _sphere_image_ratio(s, sigma, tt) / torch.cos(0.5 * sigma)
    d_p, d_next = _psi_factors(p, s, sigma, tt)
    cos2 = torch.cos(phi) ** 2
    base = math.sqrt(2.0) * 0.5 * PI * weights * integrand * cos2 ** p
    return (base * d_p).sum(dim=1), (base * cos2 * d_next).sum(dim=1)


def _even_log_and_dlog(p, theta, t):
    """(log k, d log k/dθ) on S^{2p+2} (p >= 1), flat θ ∈ [0, π], t < SERIES_MIN_T."""
    eps = PI - theta
    y2 = eps * (TWO_PI - eps) / (4.0 * t)
    j_p, j_next = theta.new_zeros(theta.shape), theta.new_zeros(theta.shape)
    for mask, route in ((y2 >= _Y_CUT ** 2, lambda a, b: _even_y_route(p, a, b, hermite=True)),
                        ((y2 < _Y_CUT ** 2) & (y2 >= _Y_SWITCH ** 2),
                         lambda a, b: _even_y_route(p, a, b, hermite=False)),
                        (y2 < _Y_SWITCH ** 2, lambda a, b: _even_phi_route(p, a, b))):
        idx = torch.nonzero(mask, as_tuple=True)[0]
        if idx.numel():
            j_p[idx], j_next[idx] = route(theta[idx], t[idx])
    log_k = (p * (p + 1) * t - p * math.log(TWO_PI) + 0.5 * math.log(2.0) + 0.25 * t
             - 1.5 * torch.log(4.0 * PI * t) - theta * theta / (4.0 * t) + torch.log(j_p))
    return log_k, -_sin(theta, eps) * j_next / j_p


# ---------------------------------------------------------------------------------------------
# dispatch


def _closed_log_and_dlog(d, theta, t):
    """(log k, d log k/dθ), flat, t < SERIES_MIN_T, θ ∈ [0, π] already reflected (d >= 4)."""
    if d % 2:
        fn, chunk, p = _odd_log_and_dlog, _CHUNK_ODD, (d - 1) // 2
    else:
        fn, chunk, p = _even_log_and_dlog, _CHUNK_EVEN, (d - 2) // 2
    parts = [fn(p, theta[i:i + chunk], t[i:i + chunk]) for i in range(0, theta.shape[0], chunk)]
    return torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts])


def _log_and_dlog_flat(d, theta, t, want_dlog):
    """(log k, d log k/dθ or None) on flat float64 θ (validated) and t, d >= 3."""
    log_k = theta.new_zeros(theta.shape)
    dlog = theta.new_zeros(theta.shape) if want_dlog else None
    series = t >= SERIES_MIN_T
    idx = torch.nonzero(series, as_tuple=True)[0]
    if idx.numel():
        th = _reflect_above_pi(theta[idx])
        a, b = _series_log_and_dlog(d, th, t[idx])
        log_k[idx] = a
        if want_dlog:
            dlog[idx] = torch.where(theta[idx] > PI, -b, b)
    idx = torch.nonzero(~series, as_tuple=True)[0]
    if idx.numel():
        th, tt = theta[idx], t[idx]
        if d == 3:
            if want_dlog:
                log_k[idx], dlog[idx] = _chunked(_s3_log_flat, th, tt, derivative=True)
            else:
                log_k[idx] = _chunked(_s3_log_flat, th, tt)
        else:
            a, b = _closed_log_and_dlog(d, _reflect_above_pi(th), tt)
            log_k[idx] = a
            if want_dlog:
                dlog[idx] = torch.where(th > PI, -b, b)
    return log_k, dlog


def sphere_d_log_heat_kernel(d, theta, t):
    """log k_t(θ) of the unit sphere S^d (w.r.t. area; ∂_t k = Δk) at geodesic angle θ ∈ [0, π].

    d : int >= 2. theta : array (...); t > 0 broadcast against it. Returns log k, the broadcast
    shape. Exact and positive for every t > 0 and θ (θ = π included); routes: module doc
    (d = 2: the S² closed forms).
    """
    d = check_sphere_dim(d)
    if d == 2:
        return sphere_log_heat_kernel(theta, t)
    theta, t, shape, dtype = _prepare_angle(theta, t, "theta", geodesic=True)
    log_k, _ = _log_and_dlog_flat(d, theta, t, want_dlog=False)
    return log_k.reshape(shape).to(dtype)


def sphere_d_dlog_heat_kernel_dtheta(d, theta, t):
    """d log k_t(θ)/dθ on S^d (0 at θ = 0 and θ = π; negative in between), same inputs and routes.

    The score of the kernel is (d log k/dθ) ∇_x θ. Exact derivative of the formulas: the next
    order of the same Cauchy contour (d >= 4), autograd (d = 3, and d = 2 by the S² closed form),
    or the differentiated series.
    """
    d = check_sphere_dim(d)
    if d == 2:
        return sphere_dlog_heat_kernel_dtheta(theta, t)
    theta, t, shape, dtype = _prepare_angle(theta, t, "theta", geodesic=True)
    _, dlog = _log_and_dlog_flat(d, theta, t, want_dlog=True)
    return dlog.reshape(shape).to(dtype)


def sphere_d_levels_for_accuracy(d, t, rtol=1e-10, reference="stationary"):
    """Levels of the S^d Gegenbauer series (λ = l(l+d−1), m = N(d, l)) for truncation error
    <= rtol × the reference: "stationary" (1/|S^d|) or "minimum" (k_t(π), from the closed form).
    See :func:`heatscore.manifolds._closed_forms.levels_for_accuracy` for the bound."""
    d = check_sphere_dim(d)
    log_scale = _log_scale(reference, math.log(_sphere_volume(d)),
                           lambda: float(sphere_d_log_heat_kernel(d, torch.tensor(PI, dtype=torch.float64), t)))
    return levels_for_accuracy(lambda l: l * (l + d - 1), lambda l: level_multiplicity(d, l), t, rtol, log_scale)


# ---------------------------------------------------------------------------------------------
# the geodesic angle of Brownian motion


def sphere_d_angle_log_density(d, theta, t):
    """log p_t(θ) = log(|S^{d−1}| sin^{d−1} θ) + log k_t(θ): the density of the S^d geodesic angle
    on [0, π] (same inputs as :func:`sphere_d_log_heat_kernel`)."""
    log_k = sphere_d_log_heat_kernel(d, theta, t)
    theta = _reflect_above_pi(torch.as_tensor(theta, dtype=torch.float64, device=log_k.device))
    sin = _sin(theta, PI - theta)
    return (math.log(_sphere_volume(d - 1)) + (d - 1) * torch.log(sin)).to(log_k.dtype) + log_k


#: Rounds of rejection before giving up (each round accepts >= ~25 % of what is left for d <= 6).
_MAX_ROUNDS = 400


def sample_sphere_d_angle(d, t, n, rng=None):
    """Draw the geodesic angle θ (n,) of Brownian motion on S^d at time t (scalar or (n,)) from
    its start: density |S^{d−1}| sin^{d−1}θ k_t(θ) on [0, π]. float64 on t's device; ``rng``: a
    torch.Generator, an int seed or None.

    d = 2: :func:`heatscore.manifolds._radial_sampling.sample_sphere_angle`. d >= 3: exact
    rejection, per draw from whichever proposal accepts more often:

    * flat: θ = √(2t)|N(0, I_d)| (the Bessel process, density q ∝ θ^{d−1} e^{−θ²/4t}), θ > π
      rejected, accepted with probability A = p/(e^{κt} q), κ = d(d−1)/6. A <= 1: with
      m = (d−1)/2, the ground-state transforms by sin^m θ and θ^m turn the radial generators of
      S^d and R^d into ∂² − W, W_S = m(m−1)/sin²θ − m² on (0, π) and W_B = m(m−1)/θ² on (0, ∞);
      m(m−1) >= 0 for d >= 3 and 1/sin²θ − 1/θ² >= 1/3, so W_S >= W_B − κ, and Feynman–Kac
      (killed paths; the interval (0, π) lies inside (0, ∞)) gives p <= e^{κt} (sin θ/θ)^m q.
      Acceptance rate e^{−κt}; A is tested against (sin θ/θ)^m first (a squeeze).
    * uniform on S^d (θ = atan2(|z_{1…d}|, z_0), z ~ N(0, I_{d+1})), accepted with probability
      k_t(θ)/k_t(0) <= 1 (k decreases in θ: module doc). Acceptance rate 1/(|S^d| k_t(0)).
    """
    d = check_sphere_dim(d)
    if d == 2:
        return sample_sphere_angle(t, n, rng=rng)
    n = check_positive_int(n, "n", minimum=0)
    times = _times(t, n)
    device = times.device
    gen = as_generator(rng, device=device)
    kappa = d * (d - 1) / 6.0
    log_volume = math.log(_sphere_volume(d))
    distinct, which = torch.unique(times, return_inverse=True)
    log_k0 = sphere_d_log_heat_kernel(d, torch.zeros_like(distinct), distinct)[which]
    flat_all = kappa * times <= log_volume + log_k0
    out = torch.empty(n, dtype=torch.float64, device=device)
    pending = torch.arange(n, device=device)
    for _ in range(_MAX_ROUNDS):
        if pending.numel() == 0:
            return out
        m = pending.numel()
        tt, flat = times[pending], flat_all[pending]
        normals = randn(gen, (m, d + 1), device=device)
        u = rand(gen, (m,), device=device)
        theta = torch.where(flat, torch.sqrt(2.0 * tt) * torch.linalg.vector_norm(normals[:, :d], dim=1),
                            torch.atan2(torch.linalg.vector_norm(normals[:, 1:], dim=1), normals[:, 0]))
        inside = theta <= PI
        th = torch.where(inside, theta, torch.zeros_like(theta))
        # squeeze: A <= (sin θ/θ)^m (flat) and <= 1 (uniform); the kernel only where u is below
        upper = torch.where(flat, torch.exp(0.5 * (d - 1) * _log_sinc(th)), torch.ones_like(th))
        candidate = torch.nonzero(inside & (u < upper), as_tuple=True)[0]
        th_c, tt_c = th[candidate], tt[candidate]
        log_k = sphere_d_log_heat_kernel(d, th_c, tt_c)
        log_flat = ((d - 1) * _log_sinc(th_c) + log_k + 0.5 * d * torch.log(4.0 * PI * tt_c)
                    + th_c * th_c / (4.0 * tt_c) - kappa * tt_c)
        log_accept = torch.where(flat[candidate], log_flat, log_k - log_k0[pending[candidate]])
        accept = torch.zeros(m, dtype=torch.bool, device=device)
        accept[candidate] = u[candidate] < torch.exp(log_accept)
        out[pending[accept]] = theta[accept]
        pending = pending[~accept]
    raise RuntimeError(f"sample_sphere_d_angle: {pending.numel()} draws still rejected after "
                       f"{_MAX_ROUNDS} rounds")
