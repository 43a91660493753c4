"""The contract every manifold keeps (DESIGN: Tests), run over ONE list of all manifolds: the
checks of :mod:`heatscore.testing` (a new manifold is covered by adding it to ``MANIFOLDS``), and
the validators' negative tests. Manifold-specific closed forms live in test_<manifold>.py."""

import math

import pytest
import torch

from conftest import cached_mesh
from heatscore import testing
from heatscore.manifolds import SO3, Euclidean, ProductManifold, Sphere, Torus

#: The mesh's times: a few squared edge lengths (its heat kernel is the discrete semigroup, whose
#: cost grows with t / ē²), in units of 1/λ_1 as the checks take them.
MESH_TIMES = {"t": 4.0, "s": 3.0}
#: S^5: an exact rule of resolution n has 2n·n⁴ nodes, so its quadrature checks use times at which
#: the kernel's expansion ends near degree 15 (resolution 8): t λ_1 = 2.5 leaves e^{−48}.
SPHERE5 = {"check_heat_kernel_normalised": {"t": 2.5, "n": 8},
           "check_semigroup": {"s": 1.2, "t": 1.3, "n": 8}}


#: name -> (factory, {check name: keyword overrides, or None to skip it with the reason above}).
MANIFOLDS = {
    "sphere2": (lambda: Sphere(2), {}),
    "sphere3": (lambda: Sphere(3), {}),
    "sphere5": (lambda: Sphere(5), SPHERE5),
    "torus2": (lambda: Torus(2), {}),
    "torus3": (lambda: Torus(3), {}),
    "so3": (lambda: SO3(), {}),
    "euclidean3": (lambda: Euclidean(3), {}),
    "euclidean_scaled": (lambda: Euclidean(2, scale=3.0), {}),
    "mesh": (lambda: cached_mesh("spot"), "mesh"),
    "torus2_x_sphere2": (lambda: ProductManifold(Torus(2), Sphere(2)), {}),
    "euclidean3_x_so3": (lambda: ProductManifold(Euclidean(3), SO3()), {}),
    "sphere2_x_torus1_x_torus1": (lambda: ProductManifold(Sphere(2), Torus(1), Torus(1)), {}),
    "sphere3_x_torus1": (lambda: ProductManifold(Sphere(3), Torus(1)), {}),
    "sphere2_x_mesh": (lambda: ProductManifold(Sphere(2), cached_mesh("spot")), "mesh"),
}
_BUILT = {}


def _manifold(name):
    if name not in _BUILT:
        _BUILT[name] = MANIFOLDS[name][0]()
    return _BUILT[name]


def _options(name, check):
    m = _manifold(name)
    options = MANIFOLDS[name][1]
    if options == "mesh":
        edge = min(getattr(f, "mean_edge_length", math.inf) for f in getattr(m, "factors", (m,)))
        scale = edge ** 2 * m._first_eigenvalue()
        options = {"check_heat_kernel_normalised": {"t": MESH_TIMES["t"] * scale},
                   "check_semigroup": {"s": MESH_TIMES["s"] * scale, "t": MESH_TIMES["t"] * scale},
                   "check_heat_equation": {"t": MESH_TIMES["t"] * scale},
                   "check_forward_sampling": None}   # the mesh walk's moments: test_mesh.py
    return options.get(check.__name__, {})


@pytest.mark.parametrize("check", testing.CHECKS, ids=lambda c: c.__name__[len("check_"):])
@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_contract(name, check):
    options = _options(name, check)
    if options is None:
        pytest.skip(f"{check.__name__} is tested for {name} in its own file")
    check(_manifold(name), **options)


@pytest.fixture(params=list(MANIFOLDS))
def manifold(request):
    return request.param, _manifold(request.param)


def _points(m, n, seed):
    return m.sample_stationary(n, rng=seed)


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


@pytest.mark.parametrize("name", ["sphere2", "so3", "mesh", "torus2_x_sphere2"])
def test_off_manifold_points_raise(name):
    m = _manifold(name)
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
    edge = min(getattr(f, "mean_edge_length", math.inf) for f in getattr(m, "factors", (m,)))
    assert float(d.abs().max()) <= (testing.MESH_EDGE_FRACTION * edge if math.isfinite(edge) else 1e-3)


def test_equality_and_hash():
    """Equal manifolds compare and hash equal; a spec rebuilds an equal manifold."""
    from heatscore.manifolds import manifold_from_spec

    for name in MANIFOLDS:
        m = _manifold(name)
        again = manifold_from_spec(*m._spec())
        assert again == m and hash(again) == hash(m)
    assert Sphere(2) == Sphere(2) and Sphere(2) != Sphere(3) and Sphere(2) != Torus(2)
    assert len({Sphere(2), Sphere(2), Euclidean(2), Euclidean(2, scale=2.0)}) == 3
    assert ProductManifold(Torus(2), Sphere(2)) != ProductManifold(Sphere(2), Torus(2))
