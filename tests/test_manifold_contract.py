"""The contract every manifold keeps (DESIGN: Tests). Manifold-specific closed forms live in
test_<manifold>.py; this file checks the shared API on all of them at once."""

import math

import pytest
import torch

from heatscore.datasets import spot_path
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh

#: Mesh log/dist come from the (vector) heat method: agreement is a fraction of the mean edge
#: length, not round-off.
MESH_EDGE_FRACTION = 0.25

_SPOT = {}


def _spot():
    if "m" not in _SPOT:
        _SPOT["m"] = TriangleMesh.from_file(spot_path())
    return _SPOT["m"]


MANIFOLDS = {
    "sphere": lambda: Sphere(2),
    "torus2": lambda: Torus(2),
    "torus3": lambda: Torus(3),
    "so3": lambda: SO3(),
    "euclidean3": lambda: Euclidean(3),
    "euclidean_scaled": lambda: Euclidean(2, scale=3.0),
    "mesh": _spot,
}
COMPACT = [k for k in MANIFOLDS if not k.startswith("euclidean")]


@pytest.fixture(params=list(MANIFOLDS))
def manifold(request):
    return request.param, MANIFOLDS[request.param]()


def _points(m, n, seed):
    return m.sample_stationary(n, rng=seed)


def _tol(name, m):
    """Absolute tolerance for geometric identities: round-off, or a fraction of the mesh edge."""
    if name == "mesh":
        return MESH_EDGE_FRACTION * m.mean_edge_length
    return 1e-9


def test_points_belong(manifold):
    name, m = manifold
    x = _points(m, 200, 0)
    assert x.shape == (200,) + tuple(m.point_shape)
    assert x.dtype == torch.float64
    assert bool(m.belongs(x).all())


def test_same_seed_same_points(manifold):
    _, m = manifold
    torch.testing.assert_close(_points(m, 50, 7), _points(m, 50, 7), rtol=0, atol=0)
    assert not torch.equal(_points(m, 50, 7), _points(m, 50, 8))


def test_global_random_state_untouched(manifold):
    _, m = manifold
    state = torch.get_rng_state()
    _points(m, 20, 3)
    m.random_tangent_normal(_points(m, 5, 4), rng=5)
    assert torch.equal(state, torch.get_rng_state())


def test_proj_idempotent_and_tangent_noise(manifold):
    _, m = manifold
    x = _points(m, 100, 1)
    v = torch.randn((100,) + tuple(m.ambient_shape), generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    p = m.proj(x, v)
    torch.testing.assert_close(m.proj(x, p), p, rtol=1e-12, atol=1e-12)
    xi = m.random_tangent_normal(x, rng=3)
    torch.testing.assert_close(m.proj(x, xi), xi, rtol=1e-12, atol=1e-12)


def test_exp_log_roundtrip_and_dist(manifold):
    name, m = manifold
    x = _points(m, 60, 4)
    xi = m.random_tangent_normal(x, rng=5)
    scale = 0.05 * (m.mean_edge_length * 20 if name == "mesh" else 1.0)
    y = m.exp(x, scale * xi)
    assert bool(m.belongs(y).all())
    v = m.log(x, y)
    tol = _tol(name, m)
    y2 = m.exp(x, v)
    err = m.dist(y, y2) if name != "mesh" else (y - y2).norm(dim=1)
    assert float(err.max()) <= tol
    torch.testing.assert_close(m.dist(x, y), m.norm(x, v), rtol=0, atol=tol)
    torch.testing.assert_close(m.dist(x, y), scale * m.norm(x, xi), rtol=0, atol=tol)


def test_dist_symmetric_pairwise_and_broadcast(manifold):
    name, m = manifold
    x, y = _points(m, 7, 6), _points(m, 5, 7)
    d = m.pairwise_dist(x, y)
    assert d.shape == (7, 5)
    tol = _tol(name, m)
    torch.testing.assert_close(d[2], m.dist(x[2:3], y), rtol=1e-9, atol=tol)
    torch.testing.assert_close(d.T, m.pairwise_dist(y, x), rtol=1e-6, atol=tol)
    torch.testing.assert_close(m.dist(x, x), torch.zeros(7, dtype=torch.float64), rtol=0, atol=tol)


def test_drift_and_stationary(manifold):
    name, m = manifold
    x = _points(m, 10, 8)
    b = m.drift(x)
    if name.startswith("euclidean"):
        torch.testing.assert_close(b, -x, rtol=0, atol=0)
        assert math.isinf(m.volume)
    else:
        assert torch.count_nonzero(b) == 0
        assert m.volume > 0 and math.isfinite(m.volume)


def test_eigenpairs_structure(manifold):
    name, m = manifold
    n_levels = 4
    ep = m.eigenpairs(n_levels)
    K = len(ep)
    assert ep.eigenvalues.shape == (K,) and ep.levels.shape == (K,)
    assert ep.multiplicities.shape == (n_levels,)
    assert int(ep.multiplicities.sum()) == K
    assert bool((ep.eigenvalues[1:] >= ep.eigenvalues[:-1] - 1e-12).all())
    assert float(ep.eigenvalues[0]) == pytest.approx(0.0, abs=1e-8)
    assert torch.equal(torch.bincount(ep.levels, minlength=n_levels), ep.multiplicities)
    x = _points(m, 9, 9)
    vals, grads = ep(x), ep.grad(x)
    assert vals.shape == (9, K)
    assert grads.shape == (9, K) + tuple(m.ambient_shape)
    assert torch.isfinite(vals).all() and torch.isfinite(grads).all()
    # Riemannian gradients are tangent.
    flat = grads.reshape((9 * K,) + tuple(m.ambient_shape))
    xr = x.repeat_interleave(K, dim=0)
    torch.testing.assert_close(m.proj(xr, flat), flat, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", COMPACT)
def test_constant_eigenfunction(name):
    m = MANIFOLDS[name]()
    ep = m.eigenpairs(1)
    x = _points(m, 11, 10)
    phi0 = ep(x)[:, 0]
    torch.testing.assert_close(phi0.abs(), torch.full_like(phi0, 1 / math.sqrt(m.volume)),
                               rtol=1e-8, atol=0)


def test_bad_points_raise(manifold):
    name, m = manifold
    x = _points(m, 4, 11).clone()
    x.view(4, -1)[1, 0] = float("nan")
    with pytest.raises(ValueError, match="x must be finite"):
        m.dist(x, x)
    bad_shape = torch.zeros((4,) + tuple(m.point_shape) + (1,), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x must be points of shape"):
        m.log(bad_shape, bad_shape)
    with pytest.raises(TypeError, match="x must be"):
        m.belongs("not an array")
    with pytest.raises(ValueError, match="n_levels"):
        m.eigenpairs(0)
    with pytest.raises(TypeError, match="n_levels"):
        m.eigenpairs(2.5)


@pytest.mark.parametrize("name", ["sphere", "so3", "mesh"])
def test_off_manifold_points_raise(name):
    m = MANIFOLDS[name]()
    x = _points(m, 5, 12) * 1.01
    with pytest.raises(ValueError, match=r"x has 5 of 5 points off"):
        m.dist(x, x)
    assert not bool(m.belongs(x).any())


def test_float32_points_accepted(manifold):
    name, m = manifold
    x = _points(m, 5, 13).to(torch.float32)
    assert bool(m.belongs(x).all())
    d = m.dist(x, x)
    assert d.dtype == torch.float32
    assert float(d.abs().max()) <= (MESH_EDGE_FRACTION * m.mean_edge_length if name == "mesh" else 1e-3)
