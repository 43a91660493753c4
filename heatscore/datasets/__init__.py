"""Data that ships with heatscore: Earth-science events on S², the Spot mesh, 2-D toy densities.

Sources (see each CSV's first lines): NOAA NCEI significant volcanic eruptions and earthquakes,
the Dartmouth Flood Observatory archive, NASA FIRMS active fires; "Spot" the cow by Keenan Crane
(CC0).
"""

from heatscore.datasets._earth import (EARTH_DATASETS, earth_path, latlon_to_unit,
                                       load_earth, load_earth_latlon, unit_to_latlon)
from heatscore.datasets._meshes import spot_path
from heatscore.datasets._protein import (PROTEIN_KINDS, load_backbone_frames,
                                         load_backbone_rotations, load_protein_torsions,
                                         protein_path)
from heatscore.datasets._toy import TOY_DATASETS, to_torus, toy_2d

__all__ = ["EARTH_DATASETS", "earth_path", "load_earth", "load_earth_latlon", "latlon_to_unit",
           "unit_to_latlon", "spot_path", "TOY_DATASETS", "toy_2d", "to_torus",
           "PROTEIN_KINDS", "protein_path", "load_protein_torsions", "load_backbone_rotations",
           "load_backbone_frames"]
