"""PLACEHOLDER: being written."""
from heatscore.manifolds._base import Manifold


class SO3(Manifold):
    pass
