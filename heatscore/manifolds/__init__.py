"""Manifolds with Laplace–Beltrami eigenpairs: Sphere, Torus, SO3, TriangleMesh, Euclidean and
their products (the protocol every manifold keeps: ``heatscore.manifolds._base``)."""

from heatscore.manifolds._base import Eigenpairs, Manifold, Process
from heatscore.manifolds._geomstats import from_geomstats
from heatscore.manifolds._registry import manifold_from_spec
from heatscore.manifolds.euclidean import Euclidean
from heatscore.manifolds.mesh import TriangleMesh
from heatscore.manifolds.product import ProductManifold
from heatscore.manifolds.so3 import SO3
from heatscore.manifolds.sphere import Sphere
from heatscore.manifolds.torus import Torus

__all__ = ["Manifold", "Eigenpairs", "Process", "Sphere", "Torus", "SO3", "TriangleMesh", "Euclidean",
           "ProductManifold", "from_geomstats", "manifold_from_spec"]
