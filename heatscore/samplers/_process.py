"""The forward diffusion of each manifold, as the samplers need it, and the score-call checks.

Forward process (DESIGN, with Euclidean's ``scale`` s): dX = b(X) dt + √(2D) dB with a linear
drift b(x) = r·x (r the drift rate) and

- compact manifolds (S^d, T^d, SO(3), meshes): r = 0, D = 1, stationary law uniform, 1/vol;
- ``Euclidean(d, scale=s)``: r = −1, D = s² (generator s²Δ − x·∇), stationary N(0, s² I).

Hence the reverse SDE dY = (−b + 2D s) ds + √(2D) dB, the probability flow dY/ds = −b + D s and
the forward ODE velocity v_t = b − D s_t, with div v_t = div b − D div s_t (div b = −d on R^d).
At s = 1 these are DESIGN's formulas.
"""

import math
from dataclasses import dataclass
from typing import Callable

import torch

from heatscore._validation import as_float_tensor


@dataclass(frozen=True)
class Process:
    """Drift rate r (b(x) = r·x), diffusion coefficient D, div b = r·dim, stationary log-density."""

    drift_rate: float
    diffusion: float
    drift_divergence: float
    log_stationary: Callable


def process_of(m):
    """The :class:`Process` of a heatscore manifold (``TypeError`` for anything else)."""
    from heatscore.manifolds import Euclidean, Manifold

    if isinstance(m, Euclidean):
        s2 = float(m.scale) ** 2
        d = m.d

        def log_gaussian(x):
            return -0.5 * (x * x).sum(dim=1) / s2 - 0.5 * d * math.log(2 * math.pi * s2)

        return Process(drift_rate=-1.0, diffusion=s2, drift_divergence=-float(d),
                       log_stationary=log_gaussian)
    if isinstance(m, Manifold):
        log_volume = math.log(m.volume)
        return Process(drift_rate=0.0, diffusion=1.0, drift_divergence=0.0,
                       log_stationary=lambda x: torch.full((x.shape[0],), -log_volume,
                                                           dtype=x.dtype, device=x.device))
    raise TypeError(f"m must be a heatscore manifold, found {type(m).__name__}")


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


def tangent_frame(m, x):
    """(n, dim, *ambient): a g-orthonormal frame E_1 … E_dim of T_xM.

    - Torus, Euclidean: the coordinate basis;
    - SO(3): E_i = R[e_i]× (DESIGN: |R[ω]×|_g = |ω|);
    - Sphere(d): the columns of the Householder reflection H = I − 2wwᵀ/|w|², w = x + sign(x_k)e_k,
      k = argmax |x_k|, other than column k (H is orthogonal and H e_k = −sign(x_k) x).
    """
    from heatscore.manifolds import SO3, Euclidean, Sphere, Torus
    from heatscore.manifolds.so3 import hat

    n = x.shape[0]
    if isinstance(m, (Torus, Euclidean)):
        eye = torch.eye(m.dim, dtype=x.dtype, device=x.device)
        return eye.expand(n, m.dim, m.dim)
    if isinstance(m, SO3):
        eye = torch.eye(3, dtype=x.dtype, device=x.device)
        return torch.matmul(x[:, None], hat(eye))
    if isinstance(m, Sphere):
        u = x / torch.linalg.vector_norm(x, dim=1, keepdim=True)
        k = u.abs().argmax(dim=1)
        e_k = torch.nn.functional.one_hot(k, u.shape[1]).to(u.dtype)
        sign = torch.where(u.gather(1, k[:, None]) >= 0, 1.0, -1.0).to(u.dtype)
        w = u + sign * e_k
        H = torch.eye(u.shape[1], dtype=u.dtype, device=u.device) - 2 * (
            w[:, :, None] * w[:, None, :]) / (w * w).sum(dim=1)[:, None, None]
        keep = ~e_k.bool()                                   # drop column k of each H
        return H.transpose(1, 2)[keep].reshape(n, m.dim, u.shape[1])
    raise TypeError(f"no tangent frame for {m!r}: use divergence='hutchinson' or a callable")


def standard_normal(gen, shape, device=None):
    """``shape`` i.i.d. N(0, 1) draws from ``gen`` in float32: the noise of the random walks.

    torch's float32 normal generator (on the CPU, for 16 draws or more, vectorised Box–Muller on
    24-bit uniforms) is 4–8× faster than its float64 one, and the draw is most of a walk's step
    on S^d and R^d. The walks add these draws to their float64 iterates (the sum is float64).
    Their rounding (relative 2^-24) and their tail cut at √(48 ln 2) ≈ 5.77 (probability 8e-9 per
    draw) are far below a walk's O(h) discretisation error. Drawn on the generator's device,
    moved to ``device``.
    """
    return NoiseBuffer(shape).draw(gen, device)


class NoiseBuffer:
    """:func:`standard_normal`'s draws of one ``shape``, into a float32 buffer kept from call to
    call: each :meth:`draw` overwrites the previous one. For the walks, whose steps draw the same
    shape every time: a fresh multi-megabyte buffer per step costs its page faults (on R^64 with
    10^4 particles, about as much as the draw itself)."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.buffer = None

    def draw(self, gen, device=None):
        """(shape) float32 N(0, 1) draws from ``gen`` (on its device), moved to ``device``."""
        if self.buffer is None:
            self.buffer = torch.empty(self.shape, dtype=torch.float32, device=gen.device)
        out = self.buffer.normal_(generator=gen)
        return out if device is None else out.to(device)
