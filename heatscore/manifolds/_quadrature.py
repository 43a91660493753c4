"""Deterministic quadrature rules w.r.t. the Riemannian volume (Lebesgue measure on R^d).

``quadrature(m, n)`` returns ``(points, weights)`` with Σ_i w_i f(x_i) ≈ ∫ f dvol; weights sum to
the volume on compact manifolds. Rules (n = resolution parameter):

- Sphere(2): Gauss–Legendre in cos θ (n nodes) × trapezoid in φ (2n nodes): exact for spherical
  harmonics of degree ≤ 2n − 1.
- Torus(d): uniform grid of n^d points: exact for trigonometric polynomials of degree < n.
- SO3: ZYZ Euler angles, trapezoid in α, γ (2n nodes each) × Gauss–Legendre in cos β (n nodes),
  dvol = sin β dα dβ dγ (total 8π²): exact for Wigner-D entries of degree ≤ 2n − 1.
- Euclidean(d, scale): tensor Gauss–Hermite (probabilists') with n nodes per axis, weights
  divided by the reference density, so Σ w f = ∫ f dx exactly for f = γ_scale × polynomial of
  degree ≤ 2n − 1 per axis.
- TriangleMesh: the vertices with the lumped mass (n ignored).
"""

import numpy as np
import torch


def quadrature(manifold, n):
    """(points (N, *point_shape), weights (N,)) float64 tensors; see the module docstring."""
    from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh

    if isinstance(manifold, Sphere) and manifold.dim == 2:
        z, wz = np.polynomial.legendre.leggauss(n)
        phi = 2 * np.pi * np.arange(2 * n) / (2 * n)
        Z, P = np.meshgrid(z, phi, indexing="ij")
        r = np.sqrt(1 - Z**2)
        pts = np.stack([r * np.cos(P), r * np.sin(P), Z], axis=-1).reshape(-1, 3)
        w = np.repeat(wz, 2 * n) * (2 * np.pi / (2 * n))
        return torch.as_tensor(pts), torch.as_tensor(w)
    if isinstance(manifold, Torus):
        g = 2 * np.pi * np.arange(n) / n
        grids = np.meshgrid(*([g] * manifold.dim), indexing="ij")
        pts = np.stack([a.ravel() for a in grids], axis=1)
        return torch.as_tensor(pts), torch.full((pts.shape[0],), (2 * np.pi / n) ** manifold.dim,
                                                dtype=torch.float64)
    if isinstance(manifold, SO3):
        z, wz = np.polynomial.legendre.leggauss(n)
        ang = 2 * np.pi * np.arange(2 * n) / (2 * n)
        A, Zb, G = np.meshgrid(ang, z, ang, indexing="ij")
        w = np.broadcast_to(wz[None, :, None], A.shape) * (2 * np.pi / (2 * n)) ** 2
        beta = np.arccos(Zb)
        R = _rz(A.ravel()) @ _ry(beta.ravel()) @ _rz(G.ravel())
        return torch.as_tensor(R), torch.as_tensor(np.ascontiguousarray(w).ravel())
    if isinstance(manifold, Euclidean):
        x, wx = np.polynomial.hermite_e.hermegauss(n)
        s = float(manifold.scale)
        d = manifold.dim
        grids = np.meshgrid(*([x] * d), indexing="ij")
        pts = np.stack([a.ravel() for a in grids], axis=1)
        wgrid = np.meshgrid(*([wx] * d), indexing="ij")
        w = np.prod(np.stack([a.ravel() for a in wgrid], axis=1), axis=1)
        # hermegauss integrates against e^{−u²/2}: divide it out, then change variables x = s u.
        w = w * np.exp(0.5 * (pts**2).sum(axis=1)) * s**d
        return torch.as_tensor(pts * s), torch.as_tensor(w)
    if isinstance(manifold, TriangleMesh):
        return manifold.vertices.clone(), torch.as_tensor(manifold.mass.diagonal()).to(torch.float64)
    raise TypeError(f"no quadrature rule for {manifold!r}")


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _ry(b):
    c, s = np.cos(b), np.sin(b)
    o, z = np.ones_like(b), np.zeros_like(b)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)

