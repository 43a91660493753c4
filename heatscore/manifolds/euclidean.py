"""PLACEHOLDER: being written."""
from heatscore.manifolds._base import Manifold


class Euclidean(Manifold):
    pass
