"""Forward (noising) process: draw X_t given X_0 = x0.

Exact on T^d (wrapped Gaussian), R^d (Ornstein–Uhlenbeck Gaussian), S² and SO(3) (inverse CDF of
the geodesic angle from the radial kernel, then a uniform direction: the kernel is isotropic).
On meshes a fine geodesic random walk (its bias is stated in ``MESH_WALK_STEP``).
"""

import math

import torch

from heatscore._validation import as_generator, randn
from heatscore._validation import check_kernel_time

#: Mesh random walk: each step's standard deviation √(2h) per axis is at most this fraction of
#: the mean edge length. The walk's generator matches the surface Laplacian to O(h) inside faces
#: and to first order across edges, so moments carry a bias of a few percent at this step; the
#: tests allow for it.
MESH_WALK_STEP = 0.25


def sample_heat_kernel(manifold, x0, t, rng=None, return_steps=False):
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
    from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh

    m = manifold
    x0 = m.validate(x0, "x0")
    n = x0.shape[0]
    tt = check_kernel_time(t, n=n, dtype=x0.dtype, device=x0.device).expand(n)
    gen = as_generator(rng, x0.device)
    if isinstance(m, Torus):
        z = randn(gen, x0.shape, dtype=x0.dtype, device=x0.device)
        return m._wrap(x0 + torch.sqrt(2 * tt).reshape(-1, 1) * z)
    if isinstance(m, Euclidean):
        z = randn(gen, x0.shape, dtype=x0.dtype, device=x0.device)
        tc = tt.reshape(-1, 1)
        return torch.exp(-tc) * x0 + float(m.scale) * torch.sqrt(-torch.expm1(-2 * tc)) * z
    if isinstance(m, Sphere):
        if m.dim != 2:
            raise NotImplementedError(f"exact heat-kernel sampling on {m!r}: only Sphere(2)")
        from heatscore.manifolds._radial_sampling import sample_sphere_angle
        theta = sample_sphere_angle(tt, n, gen)
        return _radial_step(m, x0, theta, gen)
    if isinstance(m, SO3):
        from heatscore.manifolds._radial_sampling import sample_so3_angle
        theta = sample_so3_angle(tt, n, gen)
        return _radial_step(m, x0, theta, gen)
    if isinstance(m, TriangleMesh):
        return _mesh_walk(m, x0, tt, gen)
    raise TypeError(f"manifold must be a heatscore manifold, found {type(m).__name__}")


def _radial_step(m, x0, theta, gen):
    """exp_{x0}(θ u) with u uniform on the unit sphere of T_{x0}M (isotropic kernels)."""
    xi = m._random_tangent_normal(x0, gen)
    norm = torch.sqrt(torch.clamp(m._inner(x0, xi, xi), min=1e-300))
    shape = (-1,) + (1,) * (xi.ndim - 1)
    return m._exp(x0, (theta / norm).reshape(shape) * xi)


def _mesh_walk(m, x0, t, gen):
    """Geodesic random walk y ← exp_y(√(2h_i) ξ_i), ξ_i ~ N(0, I) in the face plane.

    Every point takes the same number of steps, ⌈max t / h_max⌉ with h_max =
    (MESH_WALK_STEP·ē)²/2, each with its own step h_i = t_i / n_steps ≤ h_max. All points move
    at every step, and ``exp`` returns them already located on their faces, so no point is
    searched for again after the start.
    """
    h_max = 0.5 * (MESH_WALK_STEP * float(m.mean_edge_length)) ** 2
    n_steps = max(1, math.ceil(float(t.max()) / h_max))
    scale = torch.sqrt(2 * t / n_steps).reshape(-1, 1)
    y = x0
    for _ in range(n_steps):
        y = m._exp(y, scale * m._random_tangent_normal(y, gen))
    return y
