#!/usr/bin/env python
"""Regenerate heatscore/datasets/data/coastlines/coastlines_110m.csv from the geopandas wheel.

    pip download geopandas==0.14.4 --no-deps -d /tmp/gpd       # ~1 MB wheel, never a dependency
    python scripts/make_coastlines.py /tmp/gpd/geopandas-0.14.4-py3-none-any.whl

The wheel holds Natural Earth's 1:110m Admin 0 countries (ne_110m_admin_0_countries, public
domain) as the shapefile geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp. Its
polygons (longitude, latitude in degrees, WGS 84) are read here with numpy (the shapefile format:
a 100-byte header, then records of a big-endian header and a little-endian polygon).

Coastlines are the edges of the country rings that no other ring shares (a land border is an
edge of two countries' rings, with the same vertices), less the artificial edges where Natural
Earth cuts polygons: along the antimeridian (both ends at longitude ±180) and along the south
pole (both ends at latitude −90). Each ring's runs of kept edges are written as polylines,
coordinates rounded to ``DECIMALS`` (about 1 km, below the 1:110m scale's detail); consecutive
repeated points are dropped. ``--out FILE`` writes elsewhere. Prints the counts.
"""

import argparse
import os
import struct
import zipfile

import numpy as np

SHAPEFILE = "geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp"
OUT = os.path.join(os.path.dirname(__file__), os.pardir, "heatscore", "datasets", "data",
                   "coastlines", "coastlines_110m.csv")
#: Decimals of the written coordinates (degrees).
DECIMALS = 2
#: Coordinates this close (degrees) to ±180 longitude or −90 latitude lie on a cut.
CUT_ATOL = 1e-9
#: Shapefile shape types: null and polygon.
NULL, POLYGON = 0, 5

HEADER = """\
# Coastlines, Natural Earth 1:110m (public domain, https://www.naturalearthdata.com/).
# Derived from ne_110m_admin_0_countries as shipped in the geopandas 0.14.4 wheel
# (geopandas/datasets/naturalearth_lowres/naturalearth_lowres.shp) by scripts/make_coastlines.py:
# the edges of country outlines that no other country shares, less the antimeridian and
# south-pole cuts; longitude, latitude in degrees (WGS 84) rounded to {decimals} decimals.
# One row per vertex; rows with the same part number form one polyline, in order.
part,lon,lat
"""


def read_rings(data):
    """The rings ((k, 2) arrays of lon, lat) of every polygon record of shapefile bytes."""
    code, = struct.unpack(">i", data[:4])
    shape_type, = struct.unpack("<i", data[32:36])
    if code != 9994 or shape_type != POLYGON:
        raise ValueError(f"expected a polygon shapefile (code 9994, type 5), found {code}, {shape_type}")
    rings, pos = [], 100
    while pos < len(data):
        _, words = struct.unpack(">ii", data[pos:pos + 8])
        content = data[pos + 8:pos + 8 + 2 * words]
        pos += 8 + 2 * words
        kind, = struct.unpack("<i", content[:4])
        if kind == NULL:
            continue
        if kind != POLYGON:
            raise ValueError(f"expected polygon records, found shape type {kind}")
        n_parts, n_points = struct.unpack("<ii", content[36:44])
        starts = np.frombuffer(content, "<i4", n_parts, 44)
        points = np.frombuffer(content, "<f8", 2 * n_points, 44 + 4 * n_parts).reshape(-1, 2)
        for a, b in zip(starts, list(starts[1:]) + [n_points]):
            rings.append(points[a:b])
    return rings


def _at(value, bound):
    """Is a coordinate at a cut (the file holds e.g. -179.99999999999997 for -180)?"""
    return abs(value - bound) < CUT_ATOL


def _key(p, q):
    return tuple(sorted((tuple(p), tuple(q))))


def coastlines(rings):
    """Polylines ((k, 2) arrays) of the unshared, uncut edges of ``rings`` (module docstring)."""
    count = {}
    for ring in rings:
        for p, q in zip(ring[:-1], ring[1:]):
            count[_key(p, q)] = count.get(_key(p, q), 0) + 1
    lines = []
    for ring in rings:
        keep = [count[_key(p, q)] == 1
                and not (_at(abs(p[0]), 180) and _at(abs(q[0]), 180))
                and not (_at(p[1], -90) and _at(q[1], -90))
                for p, q in zip(ring[:-1], ring[1:])]
        if all(keep):
            lines.append(ring)
            continue
        first = keep.index(False)                 # start at a dropped edge: runs never wrap
        order = list(range(first + 1, len(keep))) + list(range(first))
        run = []
        for i in order + [None]:
            if i is not None and keep[i]:
                run.append(i)
                continue
            if run:
                lines.append(np.vstack([ring[run], ring[run[-1] + 1]]))
            run = []
    return lines


def write(lines, path):
    rows = []
    for part, line in enumerate(lines):
        q = np.round(line, DECIMALS)
        q = q[np.concatenate([[True], (np.diff(q, axis=0) != 0).any(axis=1)])]
        if len(q) >= 2:
            rows.extend(f"{part},{lon:.{DECIMALS}f},{lat:.{DECIMALS}f}" for lon, lat in q)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(HEADER.format(decimals=DECIMALS))
        fh.write("\n".join(rows) + "\n")
    return len(rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", help="geopandas-0.14.4-py3-none-any.whl")
    parser.add_argument("--out", default=OUT, help="CSV to write (default: the package's)")
    args = parser.parse_args()
    with zipfile.ZipFile(args.wheel) as z:
        rings = read_rings(z.read(SHAPEFILE))
    lines = coastlines(rings)
    n = write(lines, args.out)
    print(f"{len(rings)} rings -> {len(lines)} coastlines, {n} points: wrote {os.path.normpath(args.out)}")


if __name__ == "__main__":
    main()
