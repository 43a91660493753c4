"""Reverse-time samplers and likelihoods for any score: geodesic random walk, predictor–corrector,
probability-flow ODE and the instantaneous change-of-variables log-likelihood.

Conventions (DESIGN): time is forward diffusion time; the forward process is dX = b dt + √(2D) dB
with b = 0, D = 1 on compact manifolds and b(x) = −x, D = s² on ``Euclidean(d, scale=s)``.
``score_fn(x, t)`` returns ∇ log p_t(x), tangent at x, shape ``(n, *ambient)``.

- :func:`reverse_sde`: y ← exp_y(h(−b + 2D s) + √(2Dh) ξ), optional Langevin corrector;
- :func:`probability_flow`: dY/ds = −b + D s, Heun's method on the manifold;
- :func:`log_likelihood`: log p_{t_0}(x) = log p_T(x_T) + ∫ div_M (b − D s_t) dt;
- :func:`time_grid`, :func:`default_times`: uniform and geometric grids (T from 1/λ_1).
"""

from heatscore.samplers._grid import DEFAULT_MIXING, default_times, time_grid
from heatscore.samplers._ode import log_likelihood, probability_flow
from heatscore.samplers._sde import reverse_sde

__all__ = ["reverse_sde", "probability_flow", "log_likelihood", "time_grid", "default_times",
           "DEFAULT_MIXING"]
