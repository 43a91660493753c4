"""The manifold classes by the "kind" their ``_spec`` writes (one line per class), and the
inverse of ``_spec``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Mapping

from heatscore.manifolds.euclidean import Euclidean
from heatscore.manifolds.mesh import TriangleMesh
from heatscore.manifolds.product import ProductManifold
from heatscore.manifolds.so3 import SO3
from heatscore.manifolds.sphere import Sphere
from heatscore.manifolds.torus import Torus

if TYPE_CHECKING:
    import numpy as np

    from heatscore.manifolds._base import Manifold

KINDS = {cls.__name__: cls for cls in (Sphere, Torus, SO3, Euclidean, TriangleMesh, ProductManifold)}


def manifold_from_spec(spec: Dict[str, Any], arrays: Mapping[str, np.ndarray]) -> Manifold:
    """The manifold described by ``spec`` (a dict from ``m._spec()``) and its ``arrays``."""
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in KINDS:
        raise ValueError(f"unknown manifold kind {kind!r} (known: {', '.join(KINDS)})")
    return KINDS[kind]._from_spec(spec, arrays, manifold_from_spec)
