"""Forward (noising) process: draw X_t given X_0 = x0 (each manifold's exact sampler).

Exact on T^d (wrapped Gaussian), R^d (Ornstein–Uhlenbeck Gaussian), S² and SO(3) (inverse CDF of
the geodesic angle from the radial kernel, then a uniform direction: the kernel is isotropic).
On meshes a fine geodesic random walk (its bias is stated in ``heatscore.manifolds.mesh``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from heatscore._typing import ArrayLike, Rng, Time
from heatscore._validation import as_generator, check_kernel_time

if TYPE_CHECKING:
    import torch

    from heatscore.manifolds._base import Manifold


def sample_heat_kernel(manifold: Manifold, x0: ArrayLike, t: Time, rng: Rng = None) -> torch.Tensor:
    """X_t given X_0 = x0 for the forward process dX = b dt + √2 dB.

    Parameters
    ----------
    manifold : heatscore manifold.
    x0 : (n, *point_shape) starting points.
    t : float, 0-d tensor or (n,) tensor of positive times.
    rng : torch.Generator, int seed or None.

    Returns
    -------
    (n, *point_shape) tensor of points on the manifold.
    """
    x0 = manifold.validate(x0, "x0")
    n = x0.shape[0]
    tt = check_kernel_time(t, n=n, dtype=x0.dtype, device=x0.device).expand(n)
    return manifold._sample_heat_kernel(x0, tt, as_generator(rng, x0.device))
