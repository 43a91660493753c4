"""The score-call checks of the samplers.

The forward diffusion of each manifold is its ``_forward_process()`` (a
:class:`heatscore.manifolds.Process`): dX = b(X) dt + √(2D) dB, hence the reverse SDE
dY = (−b + 2D s) ds + √(2D) dB, the probability flow dY/ds = −b + D s and the forward ODE velocity
v_t = b − D s_t, with div v_t = div b − D div s_t.
"""

import math

import torch

from heatscore._validation import as_float_tensor


def call_score(score_fn, m, x, t):
    """score_fn(x, t) checked: a finite ``(n, *ambient)`` tensor of x's dtype (ValueError otherwise).

    The time is passed as it is given: a Python float (the samplers), or (n,) per-row times.
    """
    when = f"t = {t:g}" if not isinstance(t, torch.Tensor) or t.ndim == 0 else "per-row times"
    out = score_fn(x, t)
    if not isinstance(out, torch.Tensor):
        out = as_float_tensor(out, "score_fn output", dtype=x.dtype, device=x.device)
    expected = x.shape[:1] + tuple(m.ambient_shape)
    if tuple(out.shape) != tuple(expected):
        raise ValueError(f"score_fn must return tangent vectors of shape {tuple(expected)} for "
                         f"{x.shape[0]} points, found shape {tuple(out.shape)} at {when}")
    if not out.is_floating_point():
        out = out.to(x.dtype)
    if not math.isfinite(float(out.detach().sum())):         # one reduction; NaN/inf propagate
        bad = int((~torch.isfinite(out)).sum())
        if bad:
            raise ValueError(f"score_fn returned {bad} NaN/inf entries at {when}")
    return out.to(x.dtype)
