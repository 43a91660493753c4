"""Riemannian divergence of a score field by autograd along geodesics.

For an embedded manifold with the induced metric (S^d ⊂ R^{d+1}; SO(3) ⊂ R^{3×3} with ½ the
Frobenius product; T^d and R^d in coordinates) the Levi-Civita derivative is the tangent part of
the ambient one, so for a tangent field s and a g-orthonormal frame E_i of T_xM

    div_M s(x) = Σ_i g(∇_{E_i} s, E_i) = Σ_i d/dε g_x(s(c_i(ε)), E_i) at ε = 0,

c_i any curve with c_i(0) = x, c_i'(0) = E_i (the manifold's ``_smooth_curve``: exp_x(εE_i); on
the sphere the normalised chord, twice differentiable at 0).

The score is projected onto the tangent space before it is differentiated (a normal component
would add a shape-operator term). ``exact`` evaluates the score once on n·dim points
c_{n,i}(ε_{n,i}) and differentiates Σ g(s, E) by the ε's in one backward pass: each copy
depends on its own ε only, so this needs ``score_fn`` to act row by row. ``hutchinson`` uses one
direction per point, ξ ~ N(0, I) in T_xM isotropic in g: E[g(∇_ξ s, ξ)] = div_M s (unbiased,
one score evaluation on n points).
"""

import torch

from heatscore._validation import as_float_tensor
from heatscore.samplers._process import call_score

#: ``exact`` divergence: at most this many replicated points per score evaluation (memory).
MAX_REPLICATED_POINTS = 2**16


def _directional(score_fn, m, x, directions, t, create_graph=False):
    """(score at x (n, *ambient), g_x(∇_{E} s, E) (n,)) for one tangent direction E per row.

    Autograd of g_x(P s(c(ε)), E) in ε at ε = 0 along ``_curve`` (only c'(0) = E matters). ``t``
    a float, or (n,) per-row times passed to ``score_fn`` as they are. ``create_graph``: keep
    both outputs differentiable (e.g. in a network's parameters).
    """
    eps = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device, requires_grad=True)
    shape = (-1,) + (1,) * (directions.ndim - 1)
    y = m._smooth_curve(x, eps.reshape(shape) * directions)
    raw = call_score(score_fn, m, y, t)
    if not raw.requires_grad:
        raise ValueError("divergence='exact' or 'hutchinson' differentiates score_fn by autograd, "
                         "but its output does not depend on x through autograd; pass "
                         "divergence=callable(x, t) returning div_M s_t(x) instead")
    s = m._proj(y, raw)
    pairing = m._inner(x, s, directions)
    (derivative,) = torch.autograd.grad(pairing.sum(), eps, create_graph=create_graph)
    return (s if create_graph else s.detach()), derivative


def exact_divergence(score_fn, m, x, t, create_graph=False):
    """(s_t(x) (n, *ambient), div_M s_t(x) (n,)) over a g-orthonormal frame: n·dim score
    evaluations, in chunks of at most MAX_REPLICATED_POINTS points. ``t`` a float or (n,)."""
    frame = m._tangent_frame(x)                                           # (n, k, *ambient)
    n, k = frame.shape[:2]
    step = max(1, MAX_REPLICATED_POINTS // k)
    per_row = isinstance(t, torch.Tensor) and t.ndim == 1
    scores, divs = [], []
    for i in range(0, n, step):
        xi, fi = x[i:i + step], frame[i:i + step]
        rows = xi.shape[0]
        xr = xi.unsqueeze(1).expand((rows, k) + tuple(xi.shape[1:])).reshape((-1,) + tuple(xi.shape[1:]))
        ti = t[i:i + step].repeat_interleave(k) if per_row else t
        s, d = _directional(score_fn, m, xr, fi.reshape((-1,) + tuple(fi.shape[2:])), ti, create_graph)
        scores.append(s.reshape((rows, k) + tuple(s.shape[1:]))[:, 0])
        divs.append(d.reshape(rows, k).sum(dim=1))
    return torch.cat(scores), torch.cat(divs)


def score_and_divergence(score_fn, m, x, t, method, gen):
    """(s_t(x) (n, *ambient), div_M s_t(x) (n,)) with ``method`` "exact", "hutchinson" or callable."""
    if callable(method):
        s = m._proj(x, call_score(score_fn, m, x, t))
        div = as_float_tensor(method(x, t), "divergence output", dtype=x.dtype, device=x.device)
        if tuple(div.shape) != (x.shape[0],):
            raise ValueError(f"divergence must return shape ({x.shape[0]},), found "
                             f"{tuple(div.shape)} at t = {t:g}")
        return s, div
    with torch.enable_grad():
        if method == "hutchinson":
            return _directional(score_fn, m, x, m._random_tangent_normal(x, gen), t)
        return exact_divergence(score_fn, m, x, t)
