"""Reverse-time SDE: geodesic random walk with an optional Langevin corrector."""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Literal, Tuple, Union, overload

import torch

from heatscore._typing import ArrayLike, Rng, ScoreFn
from heatscore._validation import as_generator, check_positive_int
from heatscore.samplers._grid import check_times
from heatscore.samplers._process import call_score
from heatscore.samplers._progress import ProgressBar

if TYPE_CHECKING:
    from heatscore.manifolds._base import Manifold


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


def langevin_step_size(m: Manifold, x: torch.Tensor, score: torch.Tensor, noise: torch.Tensor,
                       snr: float, diffusion: float) -> float:
    """Song et al.'s step ε = 2 (snr·mean|ξ| / mean|s|)² / D, norms in g, means over the batch.

    With the step exp_x(εD s + √(2εD) ξ) the ratio |εD s| / |√(2εD) ξ| of the batch-mean norms is
    ``snr``. Returns 0 when every score vanishes (nothing to correct).
    """
    score_norm = torch.sqrt(torch.clamp(m._inner(x, score, score), min=0)).mean()
    noise_norm = torch.sqrt(torch.clamp(m._inner(x, noise, noise), min=0)).mean()
    if float(score_norm) == 0.0:
        return 0.0
    return float(2 * (snr * noise_norm / score_norm) ** 2 / diffusion)


@overload
def reverse_sde(m: Manifold, score_fn: ScoreFn, x_T: Union[int, ArrayLike], times: ArrayLike,
                rng: Rng = ..., return_trajectory: Literal[False] = ...,
                corrector_steps: int = ..., snr: float = ...,
                progress: bool = ...) -> torch.Tensor: ...


@overload
def reverse_sde(m: Manifold, score_fn: ScoreFn, x_T: Union[int, ArrayLike], times: ArrayLike,
                rng: Rng = ..., *, return_trajectory: Literal[True], corrector_steps: int = ...,
                snr: float = ..., progress: bool = ...) -> Tuple[torch.Tensor, torch.Tensor]: ...


@overload
def reverse_sde(m: Manifold, score_fn: ScoreFn, x_T: Union[int, ArrayLike], times: ArrayLike,
                rng: Rng = ..., return_trajectory: bool = ..., corrector_steps: int = ...,
                snr: float = ...,
                progress: bool = ...) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]: ...


def reverse_sde(m: Manifold, score_fn: ScoreFn, x_T: Union[int, ArrayLike], times: ArrayLike,
                rng: Rng = None, return_trajectory: bool = False, corrector_steps: int = 0,
                snr: float = 0.16,
                progress: bool = False) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
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
    process = m._forward_process()
    y, gen = _start(m, x_T, rng)
    trajectory = [y] if return_trajectory else None
    walk = m._walk_step(y, process)
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


def _langevin(m, score_fn, y, t, snr, diffusion, gen):
    """One corrector step exp_y(εD s_t + √(2εD) ξ) (skipped when every score vanishes)."""
    score = call_score(score_fn, m, y, t)
    noise = m._tangent_noise(y, gen)
    eps = langevin_step_size(m, y, score, noise, snr, diffusion)
    if eps == 0.0:
        return y
    return _detached(m._exp(y, eps * diffusion * score + math.sqrt(2 * eps * diffusion) * noise))
