"""Probability-flow ODE and likelihoods by a second-order geodesic (Heun) integrator.

Forward-time velocity v_t(x) = b(x) − D s_t(x) (b, D of the forward process: see ``_process``).
One step from t_a to t_b (dt = t_b − t_a, negative when running backward in time):

    k1 = v_{t_a}(x),  x̃ = exp_x(dt k1),  k2 = P_x v_{t_b}(x̃),  x ← exp_x(dt (k1 + k2)/2),

the trapezoidal (Heun) rule on the manifold. k2 is brought back to T_xM by the tangent projection
P_x instead of parallel transport along the geodesic x → x̃: the two differ by O(|dt k1|²)·|k2|
(on S² the projection shortens the component along the geodesic by cos|dt k1|), an O(dt³) local
error, so the scheme stays second order; on T^d and R^d the projection is exact. The log-density
increment uses the same stages, ∫ div v dt ≈ dt (div v_{t_a}(x) + div v_{t_b}(x̃))/2.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Optional, Tuple, Union, overload

import torch

from heatscore._typing import ArrayLike, Divergence, LogDensityFn, Rng, ScoreFn
from heatscore._validation import as_float_tensor, as_generator
from heatscore.samplers._divergence import score_and_divergence
from heatscore.samplers._grid import check_times
from heatscore.samplers._process import call_score

if TYPE_CHECKING:
    from heatscore.manifolds._base import Manifold

DIVERGENCE_METHODS = ("exact", "hutchinson")


def _reject_meshes(m, name):
    if not m.smooth_scores:
        raise ValueError(f"{name} is not available on {m!r}: the score of a P1 (piecewise-linear) "
                         "density jumps across edges, so the probability-flow ODE and its "
                         "divergence are not defined there; use reverse_sde")


def _velocity(process, x, score):
    """v = b(x) − D·s."""
    return process.drift(x).sub_(score, alpha=process.diffusion)


def _heun(m, x, dt, k1, velocity_at):
    """One trapezoidal step; ``velocity_at(x̃)`` returns (k2, extra). Returns (x_new, extra)."""
    x_pred = m._exp(x, dt * k1)
    k2, extra = velocity_at(x_pred)
    return m._exp(x, 0.5 * dt * (k1 + m._proj(x, k2))).detach(), extra


@overload
def probability_flow(m: Manifold, score_fn: ScoreFn, x_T: ArrayLike, times: ArrayLike,
                     return_trajectory: Literal[False] = ...) -> torch.Tensor: ...


@overload
def probability_flow(m: Manifold, score_fn: ScoreFn, x_T: ArrayLike, times: ArrayLike,
                     return_trajectory: Literal[True]) -> Tuple[torch.Tensor, torch.Tensor]: ...


@overload
def probability_flow(m: Manifold, score_fn: ScoreFn, x_T: ArrayLike, times: ArrayLike,
                     return_trajectory: bool = ...
                     ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]: ...


def probability_flow(m: Manifold, score_fn: ScoreFn, x_T: ArrayLike, times: ArrayLike,
                     return_trajectory: bool = False
                     ) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
    """Integrate the probability-flow ODE dY/ds = −b(Y) + D s_{T−s}(Y) from ``times[0]`` to ``times[-1]``.

    Deterministic: it transports p_T to p_{t_end} when ``score_fn`` is the exact score. Heun's
    method on the manifold (module docstring): two score evaluations per step, second order.
    Not available on meshes (``ValueError``).

    Parameters
    ----------
    m : heatscore manifold (not a mesh).
    score_fn : callable ``(x, t float) -> (n, *ambient)``, ∇ log p_t.
    x_T : (n, *point_shape) points at time ``times[0]``.
    times : 1-D, strictly decreasing, ≥ 0 (T … t_end).
    return_trajectory : also return every iterate, ``(len(times), n, *point_shape)``.

    Returns
    -------
    (n, *point_shape) points at ``times[-1]``, or ``(points, trajectory)``.
    """
    _reject_meshes(m, "probability_flow")
    steps = check_times(times, "times", decreasing=True)
    process = m._forward_process()
    x = m.validate(x_T, "x_T")

    def velocity(y, t):
        return _velocity(process, y, m._proj(y, call_score(score_fn, m, y, t))).detach()

    trajectory = [x] if return_trajectory else None
    for t, t_next in zip(steps[:-1], steps[1:]):
        x, _ = _heun(m, x, t_next - t, velocity(x, t), lambda y: (velocity(y, t_next), None))
        if return_trajectory:
            trajectory.append(x)
    if return_trajectory:
        return x, torch.stack(trajectory)
    return x


def log_likelihood(m: Manifold, score_fn: ScoreFn, x: ArrayLike, times: ArrayLike,
                   log_p_T: Optional[LogDensityFn] = None, divergence: Divergence = "exact",
                   rng: Rng = None) -> torch.Tensor:
    """log p_{t_0}(x) by the instantaneous change of variables along the forward ODE.

    With dx/dt = v_t(x) = b(x) − D s_t(x) from t_0 = ``times[0]`` to T = ``times[-1]``:

        log p_{t_0}(x_{t_0}) = log p_T(x_T) + ∫_{t_0}^T div_M v_t(x_t) dt,
        div_M v_t = div b − D div_M s_t   (div b = −d on R^d, 0 on compact manifolds),

    integrated with the same Heun stages as the path (module docstring). Densities are w.r.t.
    the Riemannian volume (Lebesgue on R^d). Not available on meshes (``ValueError``).

    Parameters
    ----------
    m : heatscore manifold (not a mesh).
    score_fn : callable ``(x, t float) -> (n, *ambient)``, ∇ log p_t, acting row by row and
        differentiable by autograd unless ``divergence`` is a callable.
    x : (n, *point_shape) points.
    times : 1-D, strictly increasing, ≥ 0 (t_0 … T).
    log_p_T : callable ``x -> (n,)`` log-density at T; None: the stationary law (−log vol on
        compact manifolds, N(0, s² I) on ``Euclidean(d, scale=s)``).
    divergence : "exact" (autograd along an orthonormal frame: dim score evaluations' worth of
        points per stage), "hutchinson" (one isotropic tangent direction per point and stage,
        unbiased) or a callable ``(x, t) -> (n,)`` returning div_M s_t(x) = Δ log p_t(x).
    rng : torch.Generator, int seed or None (used by "hutchinson").

    Returns
    -------
    (n,) tensor of log p_{t_0}(x).
    """
    _reject_meshes(m, "log_likelihood")
    steps = check_times(times, "times", decreasing=False)
    if not (callable(divergence) or (isinstance(divergence, str) and divergence in DIVERGENCE_METHODS)):
        raise ValueError(f"divergence must be one of {DIVERGENCE_METHODS} or a callable (x, t) -> (n,), "
                         f"found {divergence!r}")
    if log_p_T is not None and not callable(log_p_T):
        raise TypeError(f"log_p_T must be a callable x -> (n,) or None, found {type(log_p_T).__name__}")
    process = m._forward_process()
    x = m.validate(x, "x")
    gen = as_generator(rng, x.device)

    def velocity_and_divergence(y, t):
        s, div_s = score_and_divergence(score_fn, m, y, t, divergence, gen)
        div_v = process.drift_divergence - process.diffusion * div_s
        return _velocity(process, y, s).detach(), div_v.detach()

    integral = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    k1, div1 = velocity_and_divergence(x, steps[0])
    for t, t_next in zip(steps[:-1], steps[1:]):
        dt = t_next - t
        x, div2 = _heun(m, x, dt, k1, lambda y: velocity_and_divergence(y, t_next))
        integral = integral + 0.5 * dt * (div1 + div2)
        if t_next != steps[-1]:
            k1, div1 = velocity_and_divergence(x, t_next)
    log_end = (process.log_stationary if log_p_T is None else log_p_T)(x)
    log_end = as_float_tensor(log_end, "log_p_T output", dtype=x.dtype, device=x.device)
    if tuple(log_end.shape) != (x.shape[0],):
        raise ValueError(f"log_p_T must return shape ({x.shape[0]},), found {tuple(log_end.shape)}")
    return log_end + integral
