"""PLACEHOLDER: being written."""
from heatscore.manifolds._base import Manifold


class Torus(Manifold):
    pass
