"""Earth-science event locations on the unit sphere (latitude/longitude in degrees).

The four files differ in format (comment lines start with ``#``; volcano, earthquake and flood have
a header row, fire has none): the loader takes each as it is.
"""

from __future__ import annotations

import math
from importlib import resources

import numpy as np
import torch

from heatscore._typing import ArrayLike

EARTH_DATASETS = ("volcano", "earthquake", "flood", "fire")


def earth_path(name: str) -> str:
    """Path of the bundled CSV ``name`` (one of ``EARTH_DATASETS``)."""
    if name not in EARTH_DATASETS:
        raise ValueError(f"name must be one of {EARTH_DATASETS}, found {name!r}")
    return str(resources.files("heatscore.datasets").joinpath("data", "earth", f"{name}.csv"))


def load_earth_latlon(name: str) -> np.ndarray:
    """(n, 2) float64 numpy array of (latitude, longitude) in degrees, rows in file order."""
    rows = []
    with open(earth_path(name), encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split(",")
            try:
                lat, lon = float(fields[0]), float(fields[1])
            except (ValueError, IndexError):
                if not rows:  # the header row
                    continue
                raise ValueError(f"{name}.csv line {lineno}: expected two numbers, found {line!r}")
            rows.append((lat, lon))
    return np.asarray(rows, dtype=np.float64)


def latlon_to_unit(latlon: ArrayLike) -> torch.Tensor:
    """(n, 2) latitude/longitude in degrees -> (n, 3) unit vectors (x towards lon 0, z north)."""
    if isinstance(latlon, torch.Tensor):
        ll = latlon.to(torch.float64)
    else:                                           # a copy: read-only arrays (pyarrow) stay intact
        ll = torch.from_numpy(np.array(latlon, dtype=np.float64))
    if ll.ndim != 2 or ll.shape[1] != 2:
        raise ValueError(f"latlon must have shape (n, 2), found {tuple(ll.shape)}")
    if not bool(torch.isfinite(ll).all()):
        raise ValueError("latlon must be finite")
    if bool((ll[:, 0].abs() > 90).any()):
        raise ValueError(f"latitude must lie in [-90, 90], found max |lat| = {float(ll[:, 0].abs().max())}")
    lat, lon = ll[:, 0] * (math.pi / 180), ll[:, 1] * (math.pi / 180)
    return torch.stack([torch.cos(lat) * torch.cos(lon), torch.cos(lat) * torch.sin(lon),
                        torch.sin(lat)], dim=1)


def unit_to_latlon(x: ArrayLike) -> torch.Tensor:
    """(n, 3) unit vectors -> (n, 2) latitude/longitude in degrees."""
    x = torch.as_tensor(x, dtype=torch.float64)
    lat = torch.atan2(x[:, 2], torch.hypot(x[:, 0], x[:, 1]))
    lon = torch.atan2(x[:, 1], x[:, 0])
    return torch.stack([lat, lon], dim=1) * (180 / math.pi)


def load_earth(name: str) -> torch.Tensor:
    """(n, 3) float64 tensor of unit vectors for the bundled data set ``name``."""
    return latlon_to_unit(load_earth_latlon(name))
