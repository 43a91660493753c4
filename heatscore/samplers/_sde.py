"""Reverse-time SDE: geodesic random walk with an optional Langevin corrector."""

import bisect
import math
import numbers

import torch

from heatscore._validation import as_generator, check_positive_int
from heatscore.manifolds._base import rowdot
from heatscore.samplers._grid import check_times
from heatscore.samplers._process import NoiseBuffer, call_score, process_of, standard_normal
from heatscore.samplers._progress import ProgressBar


def _check_snr(snr):
    if isinstance(snr, bool) or not isinstance(snr, numbers.Real):
        raise TypeError(f"snr must be a real number, found {snr!r} ({type(snr).__name__})")
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"snr must be finite and > 0, found {snr}")
    return float(snr)


def _start(m, x_T, rng):
    """(validated starting points, generator on their device); an int n draws n points from the
    stationary law (on the CPU)."""
    if isinstance(x_T, numbers.Integral) and not isinstance(x_T, bool):
        gen = as_generator(rng)
        return m.sample_stationary(check_positive_int(x_T, "x_T", minimum=1), rng=gen), gen
    y = m.validate(x_T, "x_T")
    return y, as_generator(rng, y.device)


def _detached(y):
    """``y`` without autograd history (the same tensor if it has none, which keeps a mesh's
    location cache valid)."""
    return y.detach() if y.requires_grad else y


def langevin_step_size(m, x, score, noise, snr, diffusion):
    """Song et al.'s step ε = 2 (snr·mean|ξ| / mean|s|)² / D, norms in g, means over the batch.

    With the step exp_x(εD s + √(2εD) ξ) the ratio |εD s| / |√(2εD) ξ| of the batch-mean norms is
    ``snr``. Returns 0 when every score vanishes (nothing to correct).
    """
    score_norm = torch.sqrt(torch.clamp(m._inner(x, score, score), min=0)).mean()
    noise_norm = torch.sqrt(torch.clamp(m._inner(x, noise, noise), min=0)).mean()
    if float(score_norm) == 0.0:
        return 0.0
    return float(2 * (snr * noise_norm / score_norm) ** 2 / diffusion)


def reverse_sde(m, score_fn, x_T, times, rng=None, return_trajectory=False, corrector_steps=0,
                snr=0.16, progress=False):
    """Sample the reverse-time process Y_s = X_{T−s} by a geodesic random walk.

    Each step from t_k to t_{k+1} (h = t_k − t_{k+1}) moves every particle along a geodesic,

        y ← exp_y(h(−b(y) + 2D s_{t_k}(y)) + √(2Dh) ξ),   ξ ~ N(0, I) in T_yM, isotropic in g,

    with b and D of the forward process dX = b dt + √(2D) dB: b = 0, D = 1 on compact manifolds,
    b(x) = −x, D = s² on ``Euclidean(d, scale=s)`` (DESIGN's step at s = 1). Every iterate is on
    the manifold; the result is the last iterate, at ``times[-1]`` (no hidden denoising step).
    On a mesh each step is ``m.exp``'s face-to-face geodesic trace and particles keep their
    (face, barycentric) location between steps.

    Predictor–corrector (``corrector_steps`` > 0): after each step, Langevin steps for p_{t_{k+1}},
    y ← exp_y(εD s + √(2εD) ξ) with ε from :func:`langevin_step_size` (Song et al., 2021).

    Parameters
    ----------
    m : heatscore manifold.
    score_fn : callable ``(x (n, *point_shape), t float) -> (n, *ambient)``, ∇ log p_t (tangent;
        it is used through m.exp, which keeps the tangent part). ``x`` may be non-contiguous (on
        S^d the walk keeps its points column-major): reshape it, do not ``view`` it.
    x_T : (n, *point_shape) starting points at time ``times[0]``, or an int n: n draws from the
        stationary law (``m.sample_stationary``, with ``rng``).
    times : 1-D, strictly decreasing, ≥ 0: T = times[0] … t_end = times[-1] (see ``time_grid``).
    rng : torch.Generator, int seed or None.
    return_trajectory : also return every iterate.
    corrector_steps : int ≥ 0, Langevin steps per time.
    snr : float > 0, the corrector's signal-to-noise ratio.
    progress : show a bar on stderr (only when it is a terminal).

    Returns
    -------
    (n, *point_shape) samples at t_end, or ``(samples, trajectory)`` with trajectory
    ``(len(times), n, *point_shape)`` (after the corrector at each time).
    """
    steps = check_times(times, "times", decreasing=True)
    corrector_steps = check_positive_int(corrector_steps, "corrector_steps", minimum=0)
    snr = _check_snr(snr)
    process = process_of(m)
    y, gen = _start(m, x_T, rng)
    trajectory = [y] if return_trajectory else None
    walk = _walk_step(m, process, y)
    bar = ProgressBar(len(steps) - 1, progress, label="reverse_sde")
    for k, (t, t_next) in enumerate(zip(steps[:-1], steps[1:])):
        score = call_score(score_fn, m, y, t)
        y = _detached(walk(y, score, t - t_next, gen, k))
        for _ in range(corrector_steps):
            y = _langevin(m, score_fn, y, t_next, snr, process.diffusion, gen)
        if return_trajectory:
            trajectory.append(y)
        bar.update()
    bar.close()
    y = y.contiguous()
    if return_trajectory:
        return y, torch.stack(trajectory)
    return y


#: The sphere's walk rescales its iterates to unit norm every this many steps (rounding drift).
_SPHERE_RENORMALISE_EVERY = 32


def _column_major_unit(y):
    """y / |y| row-wise, stored column-major (a contiguous (d+1, n) block viewed as (n, d+1)).

    The sphere walk's layout: there, per-row scalars (n, 1) broadcast along contiguous columns,
    2–4× faster on the CPU than along (n, 3) rows; elementwise results keep the layout.
    """
    out = torch.empty(y.shape[::-1], dtype=y.dtype, device=y.device).T
    return torch.div(y, rowdot(y, y).sqrt_().unsqueeze(1), out=out)


#: Horner degrees of the sphere step: cos r = Σ_k (−1)^k r^{2k}/(2k)! and
#: sin r / r = Σ_k (−1)^k r^{2k}/(2k+1)! cut after k = K reach double precision (the first
#: omitted term, a bound on the error of these alternating series, is below 2^-56) for
#: r² ≤ ``_HORNER_MAX_R2[K]``; beyond the last, r > 2.37, the step uses sin and cos.
_HORNER_DEGREE = 12
_HORNER_MAX_R2 = [(2.0 ** -56 * math.factorial(2 * k + 2)) ** (1 / (k + 1))
                  for k in range(_HORNER_DEGREE + 1)]


class _SphereStep:
    """The sphere walk's step, y_next = exp_y(v) with v = 2Dh s + √(2Dh) ξ, ξ ~ N(0, I_{d+1}),
    computed in place on buffers reused from step to step (the walk is never differentiated).

    With c = 2Dh, v = √c w for w = ξ + √c s, and ``sphere.exp_unit``'s coefficient form reads

        y_next = (cos r − √c β d) y + √c β w,   β = sin r / r,  d = y·w,  r² = c(|w|² − d²).

    cos r and β are evaluated together as polynomials in r² (Horner, degree from the batch's
    largest r², see ``_HORNER_MAX_R2``; up to r = 2.37, e.g. steps h ≤ 0.1 of 10^4 particles
    on S²), which needs no square root, sine or cosine; longer steps use sin and cos. Iterates
    are unit and column-major (:func:`_column_major_unit` at the first step and every
    ``_SPHERE_RENORMALISE_EVERY`` steps); ξ is :func:`standard_normal`'s float32 draw of shape
    (d+1, n), transposed.
    """

    def __init__(self, y, diffusion):
        n, k = y.shape

        def buffer(*shape):
            return torch.empty(shape, dtype=y.dtype, device=y.device)
        self.diffusion = diffusion
        self.noise = NoiseBuffer((k, n))
        self.w, self.prod = buffer(k, n).T, buffer(k, n).T
        self.d, self.r2, self.cos_sinc = buffer(n), buffer(n), buffer(2, n)
        self.ones = torch.ones(k, dtype=y.dtype, device=y.device)
        terms = range(_HORNER_DEGREE + 1)
        coef = torch.tensor([[(-1) ** j / math.factorial(2 * j) for j in terms],
                             [(-1) ** j / math.factorial(2 * j + 1) for j in terms]],
                            dtype=y.dtype, device=y.device)
        self.coef = [coef[:, j:j + 1].clone() for j in terms]    # (2, 1): cos r's, sin r / r's

    def _cos_sinc(self, r2):
        """(2, n): cos r and sin r / r from r² (overwritten)."""
        out = self.cos_sinc
        largest = float(r2.max())
        if not largest <= _HORNER_MAX_R2[-1]:                # also NaN (overflowing scores)
            r = r2.clamp_min_(torch.finfo(r2.dtype).tiny).sqrt_()
            torch.cos(r, out=out[0])
            torch.sin(r, out=out[1]).div_(r)
            return out
        degree = bisect.bisect_left(_HORNER_MAX_R2, largest)
        if degree == 0:
            out.copy_(self.coef[0].expand_as(out))
        else:
            torch.addcmul(self.coef[degree - 1], self.coef[degree], r2, out=out)
            for j in range(degree - 2, -1, -1):
                torch.addcmul(self.coef[j], out, r2, out=out)
        return out

    def __call__(self, y, score, h, gen, k):
        if k % _SPHERE_RENORMALISE_EVERY == 0:
            y = _column_major_unit(y)
        c = 2 * self.diffusion * h
        w = self.w.copy_(self.noise.draw(gen, y.device).T).add_(score.detach(), alpha=math.sqrt(c))
        return self.exp(y, w, c)

    def exp(self, y, w, c):
        """exp_y(√c w): unit, column-major y and w (n, d+1) (w is only read); a fresh
        column-major (n, d+1) tensor."""
        root_c = math.sqrt(c)
        d = torch.mv(torch.mul(y, w, out=self.prod), self.ones, out=self.d)
        r2 = torch.mv(torch.mul(w, w, out=self.prod), self.ones, out=self.r2)
        r2.addcmul_(d, d, value=-1.0).mul_(c)
        a, b = self._cos_sinc(r2)
        b.mul_(root_c)                                       # √c β
        a.addcmul_(b, d, value=-1.0)                         # cos r − √c β d
        out = torch.empty_like(w)                            # column-major, like w
        return torch.mul(y, a.unsqueeze(1), out=out).addcmul_(w, b.unsqueeze(1))


def _walk_step(m, process, y):
    """The step ``(y, score, h, gen, k) -> y_next`` of the geodesic random walk on ``m``,

        y_next = exp_y(h(−b(y) + 2D s) + √(2Dh) ξ),   ξ ~ N(0, I) in T_yM.

    Closed forms where they are cheaper than ``m._exp`` and ``m._random_tangent_normal``, with ξ
    from :func:`standard_normal` (float32 draws added to the float64 step):

    - ``Euclidean`` and ``Torus`` (coordinate frames, ξ ~ N(0, I_d)): y_next = exp_y(v) with
      v = 2Dh s + √(2Dh) ξ − rh y, i.e. (1 − rh) y + 2Dh s + √(2Dh) ξ on R^d (b = r y, exp = +)
      and the wrapped sum on T^d (r = 0);
    - ``Sphere`` (:class:`_SphereStep`): ξ is drawn in the ambient space, ξ ~ N(0, I_{d+1}),
      since exp_y keeps only the tangent part v − (y·v) y of v = 2h s + √(2h) ξ, and
      P_y ξ ~ N(0, I) in T_yM (isotropic); iterates are kept unit (rescaled every
      ``_SPHERE_RENORMALISE_EVERY`` steps against rounding drift) and column-major (``score_fn``
      sees them as non-contiguous (n, d+1) tensors), so exp_y applies without normalising them;
    - otherwise (SO(3), meshes) ``m._random_tangent_normal`` and ``m._exp`` (b = 0).
    """
    from heatscore.manifolds import Euclidean, Sphere, Torus

    D, rate = process.diffusion, process.drift_rate

    if isinstance(m, (Euclidean, Torus)):
        noise = NoiseBuffer(y.shape)

        def ambient_step(y, score, h, gen):
            """2Dh s + √(2Dh) ξ = √c (ξ + √c s), c = 2Dh (ξ cast into the fresh float64 result)."""
            root_c = math.sqrt(2 * D * h)
            return (torch.empty_like(y).copy_(noise.draw(gen, y.device))
                    .add_(score, alpha=root_c).mul_(root_c))

    if isinstance(m, Euclidean):
        def euclidean(y, score, h, gen, k):
            return ambient_step(y, score, h, gen).add_(y, alpha=1 - rate * h)
        return euclidean
    if isinstance(m, Torus):
        def torus(y, score, h, gen, k):
            return m._exp(y, ambient_step(y, score, h, gen))
        return torus
    if isinstance(m, Sphere):
        return _SphereStep(y, D)

    def geodesic(y, score, h, gen, k):
        return m._exp(y, m._random_tangent_normal(y, gen).mul_(math.sqrt(2 * D * h))
                      .add_(score, alpha=2 * D * h))
    return geodesic


def _tangent_noise(m, y, gen):
    """ξ ~ N(0, I) in T_yM: on S^d, T^d and R^d the projection of :func:`standard_normal`'s
    ambient draws (as the walk's), elsewhere ``m._random_tangent_normal``."""
    from heatscore.manifolds import Euclidean, Sphere, Torus

    if isinstance(m, (Euclidean, Sphere, Torus)):
        return m._proj(y, standard_normal(gen, y.shape, device=y.device).to(y.dtype))
    return m._random_tangent_normal(y, gen)


def _langevin(m, score_fn, y, t, snr, diffusion, gen):
    """One corrector step exp_y(εD s_t + √(2εD) ξ) (skipped when every score vanishes)."""
    score = call_score(score_fn, m, y, t)
    noise = _tangent_noise(m, y, gen)
    eps = langevin_step_size(m, y, score, noise, snr, diffusion)
    if eps == 0.0:
        return y
    return _detached(m._exp(y, eps * diffusion * score + math.sqrt(2 * eps * diffusion) * noise))
