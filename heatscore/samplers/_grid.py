"""Time grids for the samplers and their validation.

Reverse-time samplers take ``times`` decreasing from T to t_end; ``log_likelihood`` takes them
increasing from t_0 to T. Time is always forward diffusion time from the model's own t = 0.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, List, Literal

import torch

from heatscore._typing import ArrayLike, Time
from heatscore._validation import as_float_tensor, check_finite, check_positive_int

if TYPE_CHECKING:
    from heatscore.manifolds._base import Manifold

#: ``default_times`` starts at T = DEFAULT_MIXING / λ_1: the forward process is then within about
#: e^{−DEFAULT_MIXING} ≈ 4.5e-5 (times the initial L²(dvol) deviation) of its stationary law.
DEFAULT_MIXING = 10.0

GRID_KINDS = ("uniform", "geometric")


def _check_real(value, name):
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
        raise TypeError(f"{name} must be a real number, found {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, found {value}")
    return value


def time_grid(T: Time, t_end: Time, n_steps: int,
              kind: Literal["uniform", "geometric"] = "uniform") -> torch.Tensor:
    """(n_steps + 1,) float64 times decreasing from ``T`` to ``t_end`` (both included, exactly).

    ``kind="uniform"``: equal steps (T − t_end)/n_steps. ``kind="geometric"``: t_k =
    T (t_end/T)^{k/n_steps}, equal ratios, so steps shrink with t (needs t_end > 0); this is the
    grid to use with scores of small diffusion times, which need steps h ≪ t near t. Flip it
    (``time_grid(...).flip(0)``) for ``log_likelihood``.
    """
    T = _check_real(T, "T")
    t_end = _check_real(t_end, "t_end")
    n_steps = check_positive_int(n_steps, "n_steps", minimum=1)
    if not isinstance(kind, str) or kind not in GRID_KINDS:
        raise ValueError(f"kind must be one of {GRID_KINDS}, found {kind!r}")
    if t_end < 0:
        raise ValueError(f"t_end must be >= 0, found {t_end:g}")
    if T <= t_end:
        raise ValueError(f"T must be > t_end, found T = {T:g} and t_end = {t_end:g}")
    fraction = torch.arange(n_steps + 1, dtype=torch.float64) / n_steps
    if kind == "uniform":
        times = T + (t_end - T) * fraction
    else:
        if t_end == 0:
            raise ValueError("t_end must be > 0 for a geometric grid, found 0")
        times = T * torch.exp(fraction * math.log(t_end / T))
    times[0], times[-1] = T, t_end
    return times


def default_times(m: Manifold, t_end: Time, n_steps: int = 1000,
                  kind: Literal["uniform", "geometric"] = "geometric") -> torch.Tensor:
    """A grid scaled by the geometry: T = DEFAULT_MIXING/λ_1 down to ``t_end`` in ``n_steps``.

    λ_1 is the first positive eigenvalue of ``m`` (``m._first_eigenvalue()``; 1 on R^d), so the same
    surface in other units gets the same grid in its own units. ``t_end`` is explicit: a score
    with components at diffusion time t_j is only sampled faithfully down to a multiple of t_j.
    Returns ``time_grid(T, t_end, n_steps, kind)``.
    """
    return time_grid(DEFAULT_MIXING / m._first_eigenvalue(), t_end, n_steps, kind)


def check_times(times: ArrayLike, name: str = "times", decreasing: bool = True) -> List[float]:
    """Validate a 1-D grid of ≥ 2 finite times ≥ 0, strictly monotone; returns Python floats."""
    tt = as_float_tensor(times, name, dtype=torch.float64)
    if tt.ndim != 1 or tt.shape[0] < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 times, found shape {tuple(tt.shape)}")
    check_finite(tt, name)
    if bool((tt < 0).any()):
        raise ValueError(f"{name} must be >= 0, found min {float(tt.min()):.3g}")
    steps = tt[1:] - tt[:-1]
    bad = steps >= 0 if decreasing else steps <= 0
    if bool(bad.any()):
        k = int(torch.nonzero(bad)[0])
        order = "decreasing (T ... t_end)" if decreasing else "increasing (t_0 ... T)"
        raise ValueError(f"{name} must be strictly {order}, found {name}[{k}] = {float(tt[k]):.6g} "
                         f"and {name}[{k + 1}] = {float(tt[k + 1]):.6g}")
    return [float(t) for t in tt]
