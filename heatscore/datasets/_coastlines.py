"""Bundled coastlines: Natural Earth 1:110m (public domain), for maps of S².

The file is derived by ``scripts/make_coastlines.py`` (see its first lines for the provenance).
"""

import functools
from importlib import resources

import numpy as np


def coastlines_path():
    """Path of the bundled coastline CSV (part, lon, lat in degrees; one row per vertex)."""
    return str(resources.files("heatscore.datasets").joinpath("data", "coastlines",
                                                              "coastlines_110m.csv"))


@functools.lru_cache(maxsize=1)
def load_coastlines():
    """Tuple of read-only (k, 2) float64 arrays of (longitude, latitude) in degrees, one per
    polyline (Natural Earth 1:110m coastlines, about 270 lines and 5300 points)."""
    with open(coastlines_path(), encoding="utf-8") as fh:
        rows = [line for line in fh if not line.startswith("#")][1:]       # after the header
    table = np.loadtxt(rows, delimiter=",", ndmin=2)
    cuts = np.flatnonzero(np.diff(table[:, 0])) + 1
    lines = tuple(np.split(table[:, 1:], cuts))
    for line in lines:
        line.flags.writeable = False
    return lines
