"""PLACEHOLDER: being written."""
from heatscore.manifolds._base import Manifold


class Sphere(Manifold):
    pass
