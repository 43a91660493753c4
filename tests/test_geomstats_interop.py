"""from_geomstats: dispatch of geomstats spaces to heatscore manifolds, round trips and refusals."""

import os

import pytest
from geomstats.geometry.euclidean import Euclidean as GsEuclidean
from geomstats.geometry.hypersphere import Hypersphere
from geomstats.geometry.minkowski import Minkowski
from geomstats.geometry.nfold_manifold import NFoldManifold
from geomstats.geometry.product_manifold import ProductManifold
from geomstats.geometry.scalar_product_metric import ScalarProductMetric
from geomstats.geometry.spd_matrices import SPDMatrices
from geomstats.geometry.special_orthogonal import SpecialOrthogonal

from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, from_geomstats


@pytest.mark.parametrize("make, cls, dim", [
    (lambda: Sphere(2), Sphere, 2),
    (lambda: SO3(), SO3, 3),
    (lambda: Torus(1), Torus, 1),
    (lambda: Torus(3), Torus, 3),
    (lambda: Euclidean(2), Euclidean, 2),
])
def test_round_trip(make, cls, dim):
    m = make()
    back = from_geomstats(m.to_geomstats())
    assert type(back) is cls
    assert back.dim == dim and back.point_shape == m.point_shape


@pytest.mark.parametrize("space, cls, dim", [
    (Hypersphere(2), Sphere, 2),
    (SpecialOrthogonal(3), SO3, 3),
    (Hypersphere(1), Torus, 1),
    (ProductManifold([Hypersphere(1), Hypersphere(1)]), Torus, 2),
    (NFoldManifold(Hypersphere(1), 4), Torus, 4),
    (GsEuclidean(5), Euclidean, 5),
])
def test_dispatch(space, cls, dim):
    m = from_geomstats(space)
    assert type(m) is cls and m.dim == dim
    if cls is Euclidean:
        assert m.scale == 1.0


def _rescaled_sphere():
    space = Hypersphere(2)
    space.equip_with_metric(ScalarProductMetric(space, 4.0))
    return space


@pytest.mark.parametrize("space, message", [
    (SPDMatrices(3), r"no heatscore counterpart for geomstats SPDMatrices"),
    (SpecialOrthogonal(4), r"supports SpecialOrthogonal\(3\), found SpecialOrthogonal\(4\)"),
    (SpecialOrthogonal(3, point_type="vector"), r"point_type='vector'\) is not supported"),
    (Hypersphere(2, intrinsic=True), r"Hypersphere\(2, intrinsic=True\) is not supported"),
    (ProductManifold([Hypersphere(1), GsEuclidean(1)]), r"products of extrinsic circles.*Euclidean\(1\)"),
    (NFoldManifold(Hypersphere(2), 2), r"products of extrinsic circles.*Hypersphere\(2\)"),
    (_rescaled_sphere(),
     r"Hypersphere\(2\) with its default metric HypersphereMetric, found ScalarProductMetric"),
    (Minkowski(3), r"Euclidean\(3\) with its default metric .*found MinkowskiMetric"),
])
def test_unsupported_spaces_raise(space, message):
    with pytest.raises(ValueError, match=message):
        from_geomstats(space)


@pytest.mark.parametrize("obj", ["Hypersphere(2)", 3, None])
def test_non_geomstats_input_raises_type_error(obj):
    with pytest.raises(TypeError, match="space must be a geomstats manifold"):
        from_geomstats(obj)


def test_heatscore_manifold_is_not_a_geomstats_space():
    with pytest.raises(TypeError, match="found Torus"):
        from_geomstats(Torus(2))


def test_backend_environment_untouched():
    before = os.environ.get("GEOMSTATS_BACKEND")
    for m in (Torus(2), Euclidean(3), Sphere(2), SO3()):
        from_geomstats(m.to_geomstats())
    assert os.environ.get("GEOMSTATS_BACKEND") == before
