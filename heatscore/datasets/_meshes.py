"""Bundled meshes."""

from importlib import resources


def spot_path() -> str:
    """Path of the bundled "Spot" cow mesh (Keenan Crane, CC0): 2930 vertices, 5856 faces."""
    return str(resources.files("heatscore.datasets").joinpath("data", "meshes", "spot.obj"))
