"""The geodesic random walk's step on S^d in closed form (``Sphere._walk_step``)."""

import bisect
import math

import torch

from heatscore._validation import NoiseBuffer
from heatscore.manifolds._base import rowdot


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
    ``_SPHERE_RENORMALISE_EVERY`` steps); ξ is the float32 draw of
    :func:`heatscore._validation.standard_normal`, of shape (d+1, n), transposed.
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
