"""Dispatch from geomstats spaces to heatscore manifolds (geomstats' own backend, never set here)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geomstats.geometry.manifold import Manifold as GeomstatsManifold

    from heatscore.manifolds._base import Manifold


def _check_default_metric(space, name):
    """``ValueError`` if ``space`` carries a metric other than its default (e.g. a rescaled one)."""
    metric = getattr(space, "metric", None)
    if metric is not None and not isinstance(metric, space.default_metric()):
        raise ValueError(f"from_geomstats supports {name} with its default metric "
                         f"{space.default_metric().__name__}, found {type(metric).__name__}")


def _is_extrinsic_circle(space, hypersphere_cls):
    return isinstance(space, hypersphere_cls) and space.dim == 1 and not space.intrinsic


def from_geomstats(space: GeomstatsManifold) -> Manifold:
    """The heatscore manifold matching a geomstats space.

    Supported, each with its default metric and the point representation heatscore converts:

    - ``Hypersphere(d)``, d >= 2 (extrinsic: unit vectors (n, d + 1)) -> ``Sphere(d)`` (eigenpairs
      on S² only);
    - ``SpecialOrthogonal(3)`` as matrices -> ``SO3()``;
    - the circle ``Hypersphere(1)`` (extrinsic), a ``ProductManifold`` of d such circles, or an
      ``NFoldManifold`` of one -> ``Torus(d)`` (``Torus(1)`` for a lone circle, which has the
      Fourier eigenpairs; points (n, d, 2): see ``Torus.from_geomstats_points``);
    - ``Euclidean(d)`` -> ``Euclidean(d)`` (scale 1).

    Anything else raises ``TypeError`` (not a geomstats space) or ``ValueError`` (a geomstats
    space heatscore does not cover), naming the space.
    """
    from geomstats.geometry.euclidean import Euclidean as GsEuclidean
    from geomstats.geometry.hypersphere import Hypersphere
    from geomstats.geometry.manifold import Manifold as GsManifold
    from geomstats.geometry.nfold_manifold import NFoldManifold
    from geomstats.geometry.product_manifold import ProductManifold
    from geomstats.geometry.special_orthogonal import _SpecialOrthogonalMatrices, _SpecialOrthogonalVectors

    if not isinstance(space, GsManifold):
        raise TypeError(f"space must be a geomstats manifold, found {type(space).__name__}")
    name = type(space).__name__

    if isinstance(space, Hypersphere):
        _check_default_metric(space, f"Hypersphere({space.dim})")
        if space.intrinsic:
            raise ValueError(f"Hypersphere({space.dim}, intrinsic=True) is not supported: heatscore "
                             "uses extrinsic coordinates (unit vectors); use intrinsic=False")
        if space.dim == 1:
            from heatscore.manifolds.torus import Torus
            return Torus(1)
        from heatscore.manifolds.sphere import Sphere
        return Sphere(space.dim)

    if isinstance(space, _SpecialOrthogonalMatrices):
        if space.n != 3:
            raise ValueError(f"from_geomstats supports SpecialOrthogonal(3), "
                             f"found SpecialOrthogonal({space.n})")
        _check_default_metric(space, "SpecialOrthogonal(3)")
        from heatscore.manifolds.so3 import SO3
        return SO3()

    if isinstance(space, _SpecialOrthogonalVectors):
        raise ValueError(f"SpecialOrthogonal({space.n}, point_type='vector') is not supported: heatscore "
                         "uses rotation matrices; use point_type='matrix'")

    if isinstance(space, (ProductManifold, NFoldManifold)):
        if isinstance(space, ProductManifold):
            factors = list(space.factors)
        else:
            factors = [space.base_manifold] * space.n_copies
        if not all(_is_extrinsic_circle(f, Hypersphere) for f in factors):
            kinds = ", ".join(sorted({type(f).__name__ + f"({getattr(f, 'dim', '?')})" for f in factors}))
            raise ValueError(f"from_geomstats supports products of extrinsic circles Hypersphere(1) "
                             f"only, found a {name} of {kinds}")
        _check_default_metric(space, name)
        for factor in factors:
            _check_default_metric(factor, "Hypersphere(1)")
        from heatscore.manifolds.torus import Torus
        return Torus(len(factors))

    if isinstance(space, GsEuclidean):
        _check_default_metric(space, f"Euclidean({space.dim})")
        from heatscore.manifolds.euclidean import Euclidean
        return Euclidean(space.dim)

    raise ValueError(f"from_geomstats has no heatscore counterpart for geomstats {name} "
                     f"(supported: Hypersphere(d), SpecialOrthogonal(3) matrices, products of "
                     f"circles Hypersphere(1), Euclidean(d))")


__all__ = ["from_geomstats"]
