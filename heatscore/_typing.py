"""Type aliases of heatscore's public signatures (for users, IDEs and type checkers).

This module imports nothing from heatscore, so any module may import it without a cycle; names
of heatscore's own classes in annotations come under ``typing.TYPE_CHECKING`` guards instead.

- :data:`ArrayLike`: what the validators accept as points, vectors or weights: tensors, numpy
  arrays, nested sequences of numbers, scalars and array-likes (objects with ``__array__``, e.g.
  pandas frames); they return tensors.
- :data:`Time`: a diffusion time, a Python float, a 0-d tensor or an ``(n,)`` tensor (one per row).
- :data:`Rng`: a ``torch.Generator``, an int seed or None (fresh entropy).
- :data:`Device`: what ``torch.device`` accepts, or None.
- :data:`ScoreFn`: ``score_fn(x, t) -> (n, *ambient)``, ∇ log p_t at points x and a float time t.
"""

import os
from typing import Callable, Literal, Tuple, Union

import numpy as np
import numpy.typing as npt
import torch

__all__ = ["ArrayLike", "Time", "Rng", "Device", "PathLike", "Shape", "ScoreFn", "DivergenceFn",
           "Divergence", "LogDensityFn", "TangentFn", "Quadrature", "ValuesAndGrad"]

#: Input the validators accept: tensors, numpy arrays, nested sequences, scalars, array-likes.
ArrayLike = Union[torch.Tensor, np.ndarray, npt.ArrayLike]
#: A diffusion time: a float, a 0-d tensor or (where a function says so) one time per row (n,).
Time = Union[float, torch.Tensor]
#: A source of randomness: a generator (used as is), an int seed, or None (fresh entropy).
Rng = Union[torch.Generator, int, None]
#: A device for new tensors: a ``torch.device``, its name ("cpu", "cuda:0"), an index, or None.
Device = Union[torch.device, str, int, None]
#: A file path.
PathLike = Union[str, os.PathLike[str]]
#: A shape: ``point_shape``, ``ambient_shape``.
Shape = Tuple[int, ...]

#: ``score_fn(x (n, *point_shape), t) -> (n, *ambient)``: ∇ log p_t(x), tangent at x (the
#: samplers pass t as a Python float).
ScoreFn = Callable[[torch.Tensor, float], torch.Tensor]
#: ``div(x (n, *point_shape), t) -> (n,)``: div_M s_t(x) = Δ log p_t(x).
DivergenceFn = Callable[[torch.Tensor, float], torch.Tensor]
#: ``log_likelihood``'s divergence: "exact", "hutchinson" or a :data:`DivergenceFn`.
Divergence = Union[Literal["exact", "hutchinson"], DivergenceFn]
#: ``f(x (n, *point_shape)) -> (n,)``: a log-density (or any function of points).
LogDensityFn = Callable[[torch.Tensor], torch.Tensor]
#: ``f(x (n, *point_shape)) -> (n, *ambient)``: a field of tangent vectors (e.g. a drift).
TangentFn = Callable[[torch.Tensor], torch.Tensor]
#: ``(points (N, *point_shape), weights (N,))`` of a quadrature rule.
Quadrature = Tuple[torch.Tensor, torch.Tensor]
#: ``(values (n, K), gradients (n, K, *ambient))`` of eigenfunctions.
ValuesAndGrad = Tuple[torch.Tensor, torch.Tensor]
