"""CSV data files of the ``heatscore`` command: points on S^d, T^d, SO(3) and meshes.

Reading (``read_points``): comment lines (first non-blank character ``#``) and blank lines are
skipped; the first remaining row is a header when none of its fields is a number (the bundled
Earth files have either). Every other row must hold the same number of finite numbers. Formats:

- sphere: latitude/longitude in degrees (header names lat/latitude and lon/long/longitude/lng, or
  two columns without a header), or x_1..x_{d+1} (header x, y, z, or three or more columns);
- torus: every column is an angle, ``--angles deg|rad`` required, range (−180, 180] or [0, 360)
  (stated by ``angle_range`` or taken from the data: signed when any angle is negative);
- so3: nine columns (a 3×3 matrix, row-major) or four (a quaternion, ``quat_order`` required);
- mesh: x, y, z of points near the surface.

Near points are projected onto the manifold (x/|x| on the sphere, the nearest rotation by SVD,
q/|q|, the nearest surface point on a mesh); the largest deviation, in the manifold's own measure
(``Manifold._off_manifold``: | |x| − 1 |, max(‖RᵀR − I‖_F, |det R − 1|), | |q| − 1 |, distance to
the surface / bounding-box diagonal) is reported, and a row beyond ``PROJECT_RTOL`` is refused.

Every problem raises :class:`DataError`, one line naming the file, the line and what was wrong.
Writing is atomic (``heatscore._files``).
"""

import csv
import json
import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from heatscore._files import atomic_write

#: Largest deviation from the manifold that a loaded row may have and still be projected onto it
#: (relative: the radius of the unit sphere, a rotation's unit scale, the mesh's bounding-box
#: diagonal). Rows written with 4–6 decimals are off by about 1e-4.
PROJECT_RTOL = 1e-2

#: Relative slack on range checks (latitude ±90, angle bounds) for decimal round-off.
RANGE_SLACK = 1e-9

#: What each deviation measures (as reported).
SPHERE_MEASURE = "| |x| - 1 |"
MATRIX_MEASURE = "max of |RᵀR - I|_F and |det R - 1|"
QUATERNION_MEASURE = "| |q| - 1 |"
MESH_MEASURE = "distance to the surface / bounding-box diagonal"

LAT_NAMES = ("lat", "latitude")
LON_NAMES = ("lon", "long", "longitude", "lng")
XYZ_NAMES = ("x", "y", "z")
QUAT_ORDERS = ("wxyz", "xyzw")
ANGLE_UNITS = ("deg", "rad")
ANGLE_RANGES = ("signed", "unsigned")
#: Output number format: 12 significant digits (round-trips far below PROJECT_RTOL).
NUMBER_FORMAT = "%.12g"


class DataError(ValueError):
    """A user's file or option is wrong; the message is one line naming the file and row."""


@dataclass
class DataFormat:
    """How points were written: ``kind`` is latlon, xyz, angles, matrix, quaternion or mesh_xyz."""

    kind: str
    header: tuple = None          # output header names, or None (no header row)
    angles: str = None            # torus: "deg" | "rad"
    angle_range: str = None       # torus: "signed" (−180, 180] | "unsigned" [0, 360)
    lon_range: str = None         # latlon: "signed" (−180, 180] | "unsigned" [0, 360)
    quat_order: str = None        # quaternions: "wxyz" | "xyzw"

    def to_json(self):
        d = asdict(self)
        d["header"] = list(self.header) if self.header is not None else None
        return json.dumps(d)

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        if d.get("header") is not None:
            d["header"] = tuple(d["header"])
        return cls(**d)


#: The format of points as each command-line manifold holds them (``default_format``).
DEFAULT_FORMATS = {"sphere": {"kind": "xyz"}, "torus": {"kind": "angles", "angles": "rad",
                                                       "angle_range": "unsigned"},
                   "so3": {"kind": "matrix"}, "mesh": {"kind": "mesh_xyz"}}


def default_format(m):
    """The format of a model saved from Python (points as the manifold holds them)."""
    if m.cli_name not in DEFAULT_FORMATS:
        raise DataError(f"the command line handles sphere, torus, so3 and mesh models, found {m!r}")
    return DataFormat(header=m._column_names(), **DEFAULT_FORMATS[m.cli_name])


# --- reading tables ------------------------------------------------------------------------------
def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path):
    """``(header tuple or None, lines (n,) int, values (n, k) float64)`` of a CSV file.

    ``DataError`` for a missing or unreadable file, no data rows, a row with a different number of
    fields, a field that is not a number, or NaN/inf.
    """
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise DataError(f"{name}: not a UTF-8 text (CSV) file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    header, lines, rows, width = None, [], [], None
    for lineno, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader([stripped]))]
        if width is None:
            width = len(fields)
            if not any(_is_number(f) for f in fields):
                header = tuple(fields)
                continue
        if len(fields) != width:
            raise DataError(f"{name} line {lineno}: expected {width} fields, found {len(fields)}")
        values = []
        for j, f in enumerate(fields):
            try:
                v = float(f)
            except ValueError:
                raise DataError(f"{name} line {lineno}: field {j + 1} ({f!r}) is not a number") from None
            if not math.isfinite(v):
                raise DataError(f"{name} line {lineno}: field {j + 1} ({f!r}) is not finite")
            values.append(v)
        lines.append(lineno)
        rows.append(values)
    if not rows:
        what = "is empty" if width is None else "has no data rows"
        raise DataError(f"{name} {what} (comments and a header row only are not data)")
    return header, np.asarray(lines), np.asarray(rows, dtype=np.float64)


def _find(header, names):
    lowered = [h.lower() for h in header]
    for n in names:
        if n in lowered:
            return lowered.index(n)
    return None


def _first_bad(name, lines, bad, message):
    """Raise ``DataError`` at the first row flagged in ``bad`` (numpy bool (n,))."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name} line {int(lines[i])}: {message(i)}")


def _outside(v, lo, hi):
    slack = RANGE_SLACK * max(abs(lo), abs(hi))
    return (v < lo - slack) | (v > hi + slack)


# --- manifolds from the command line -------------------------------------------------------------
def parse_manifold(spec):
    """``"sphere"``, ``"torus"``, ``"so3"`` or ``"mesh:PATH"`` -> (kind, mesh path or None)."""
    if spec in ("sphere", "torus", "so3"):
        return spec, None
    if spec.startswith("mesh:") and len(spec) > 5:
        return "mesh", spec[5:]
    raise DataError(f"--manifold must be sphere, torus, so3 or mesh:PATH, found {spec!r}")


def load_mesh(path):
    """A ``TriangleMesh`` read from ``path`` (``DataError`` when missing or unreadable)."""
    from heatscore.manifolds import TriangleMesh

    if not os.path.isfile(path):
        raise DataError(f"mesh:{path}: no such mesh file")
    try:
        return TriangleMesh.from_file(path)
    except (RuntimeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"mesh:{path}: cannot read the mesh ({first})") from None


# --- points --------------------------------------------------------------------------------------
def read_points(path, kind, mesh=None, angles=None, angle_range=None, quat_order=None,
                manifold=None):
    """Read points of ``kind`` (sphere, torus, so3, mesh) from the CSV ``path``.

    ``manifold``: the model's manifold when reading data for a fitted model (the file must then
    match its dimension). Returns ``(manifold, X (n, *point_shape) float64, DataFormat,
    deviation)``: ``(largest deviation, what it measures)``, or None where the format needs no
    projection (latitude/longitude, angles).
    """
    header, lines, V = read_table(path)
    name = os.path.basename(path)
    if kind == "sphere":
        return _read_sphere(name, header, lines, V, manifold)
    if kind == "torus":
        return _read_torus(name, header, lines, V, angles, angle_range, manifold)
    if kind == "so3":
        return _read_so3(name, header, lines, V, quat_order)
    if kind == "mesh":
        return _read_mesh(name, header, lines, V, mesh)
    raise DataError(f"unknown manifold kind {kind!r}")


def _project(name, m, lines, projected, deviation, measure):
    """Refuse rows beyond PROJECT_RTOL; returns (projected points, (max deviation, measure))."""
    dev = deviation.detach().cpu().numpy()
    _first_bad(name, lines, dev > PROJECT_RTOL,
               lambda i: f"point is off {m!r} by {dev[i]:.2e} ({measure}); rows "
                         f"within {PROJECT_RTOL:g} are projected onto it, this one is refused")
    return projected, (float(dev.max()), measure)


def _read_sphere(name, header, lines, V, manifold):
    from heatscore.datasets import latlon_to_unit
    from heatscore.manifolds import Sphere

    k = V.shape[1]
    if header is not None:
        i_lat, i_lon = _find(header, LAT_NAMES), _find(header, LON_NAMES)
        xyz = [_find(header, (n,)) for n in XYZ_NAMES]
        if i_lat is not None and i_lon is not None:
            cols, kind = [i_lat, i_lon], "latlon"
        elif i_lat is not None or i_lon is not None:
            missing = "longitude (lon)" if i_lon is None else "latitude (lat)"
            raise DataError(f"{name}: the header names no {missing} column; found "
                            f"{', '.join(header)}")
        elif all(i is not None for i in xyz):
            cols, kind = xyz, "xyz"
        else:
            raise DataError(f"{name}: the header names neither lat/lon nor x/y/z columns; found "
                            f"{', '.join(header)}")
        out_header = tuple(header[c] for c in cols)
    elif k == 2:
        cols, kind, out_header = [0, 1], "latlon", None
    elif k >= 3:
        cols, kind, out_header = list(range(k)), "xyz", None
    else:
        raise DataError(f"{name}: expected 2 columns (latitude, longitude in degrees) or 3 "
                        f"(x, y, z) on the sphere, found {k}")
    P = V[:, cols]
    dim = 2 if kind == "latlon" else len(cols) - 1
    m = Sphere(dim) if manifold is None else manifold
    if m != Sphere(dim):
        raise DataError(f"{name}: points on S^{dim} do not fit the model's {m!r}")
    if kind == "latlon":
        lat, lon = P[:, 0], P[:, 1]
        _first_bad(name, lines, _outside(lat, -90, 90),
                   lambda i: f"latitude {lat[i]:g} is outside [-90, 90] degrees")
        _first_bad(name, lines, _outside(lon, -180, 360),
                   lambda i: f"longitude {lon[i]:g} is outside [-180, 360] degrees")
        lat = np.clip(lat, -90, 90)
        lon_range = "unsigned" if (lon > 180).any() else "signed"
        X = latlon_to_unit(np.stack([lat, lon], axis=1))
        return m, X, DataFormat("latlon", header=out_header, lon_range=lon_range), None
    x = torch.as_tensor(P)
    norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
    X, dev = _project(name, m, lines, x / torch.clamp(norm, min=1e-300), m._off_manifold(x),
                      SPHERE_MEASURE)
    return m, X, DataFormat("xyz", header=out_header), dev


def _read_torus(name, header, lines, V, angles, angle_range, manifold):
    from heatscore.manifolds import Torus
    from heatscore.manifolds.torus import wrap_angles

    if angles not in ANGLE_UNITS:
        raise DataError(f"{name}: torus angles need --angles deg or --angles rad")
    if angle_range is not None and angle_range not in ANGLE_RANGES:
        raise DataError(f"--angle-range must be signed or unsigned, found {angle_range!r}")
    d = V.shape[1]
    m = Torus(d) if manifold is None else manifold
    if m != Torus(d):
        raise DataError(f"{name}: {d} angle columns do not fit the model's {m!r}")
    half = 180.0 if angles == "deg" else math.pi
    lo, hi = {"signed": (-half, half), "unsigned": (0.0, 2 * half), None: (-half, 2 * half)}[angle_range]
    unit = "degrees" if angles == "deg" else "radians"
    bad = _outside(V, lo, hi).any(axis=1)
    _first_bad(name, lines, bad, lambda i: (
        f"angle {V[i][_outside(V[i], lo, hi)][0]:g} is outside [{lo:g}, {hi:g}] {unit}"
        + (" (degrees? use --angles deg)" if angles == "rad" and np.abs(V[i]).max() <= 360 else "")))
    if angle_range is None:
        angle_range = "signed" if (V < 0).any() else "unsigned"
    rad = V * (math.pi / 180) if angles == "deg" else V
    X = wrap_angles(torch.as_tensor(rad))
    return m, X, DataFormat("angles", header=header, angles=angles, angle_range=angle_range), None


def _read_so3(name, header, lines, V, quat_order):
    from heatscore.manifolds import SO3
    from heatscore.manifolds.so3 import rotation_from_quaternion

    m = SO3()
    k = V.shape[1]
    if k == 9:
        M = torch.as_tensor(V).reshape(-1, 3, 3)
        U, _, Vh = torch.linalg.svd(M)
        det = torch.linalg.det(U @ Vh)
        U = torch.cat([U[:, :, :2], U[:, :, 2:] * det[:, None, None]], dim=2)
        X, dev = _project(name, m, lines, U @ Vh, m._off_manifold(M), MATRIX_MEASURE)
        return m, X, DataFormat("matrix", header=header), dev
    if k != 4:
        raise DataError(f"{name}: expected 9 columns (a 3×3 rotation matrix, row by row) or 4 (a "
                        f"quaternion) for SO(3), found {k}")
    if quat_order not in QUAT_ORDERS:
        raise DataError(f"{name}: quaternion rows need --quat-order wxyz or --quat-order xyzw")
    if header is not None:
        named = "".join(h.lower().lstrip("q") for h in header)
        if sorted(named) == sorted("wxyz") and len(named) == 4 and named != quat_order:
            raise DataError(f"{name}: the header says {named} but --quat-order is {quat_order}")
    q = torch.as_tensor(V)
    if quat_order == "xyzw":
        q = q[:, [3, 0, 1, 2]]
    norm = torch.linalg.vector_norm(q, dim=1)
    unit = q / torch.clamp(norm, min=1e-300)[:, None]
    X, dev = _project(name, m, lines, rotation_from_quaternion(unit), (norm - 1).abs(),
                      QUATERNION_MEASURE)
    return m, X, DataFormat("quaternion", header=header, quat_order=quat_order), dev


def _read_mesh(name, header, lines, V, mesh):
    if mesh is None:
        raise DataError("mesh data need --manifold mesh:PATH")
    if header is not None:
        cols = [_find(header, (n,)) for n in XYZ_NAMES]
        if any(c is None for c in cols):
            raise DataError(f"{name}: the header names no x, y, z columns; found {', '.join(header)}")
        out_header = tuple(header[c] for c in cols)
    else:
        if V.shape[1] != 3:
            raise DataError(f"{name}: expected 3 columns (x, y, z) near the mesh, found {V.shape[1]}")
        cols, out_header = [0, 1, 2], None
    x = torch.as_tensor(np.ascontiguousarray(V[:, cols]))
    faces, bary, deviation = mesh._located(x)
    X, dev = _project(name, mesh, lines, mesh.from_barycentric(faces, bary), deviation,
                      MESH_MEASURE)
    return mesh, X, DataFormat("mesh_xyz", header=out_header), dev


def format_points(X, fmt):
    """(header or None, (n, k) float64 array) of points X in the data format ``fmt``."""
    from heatscore.datasets import unit_to_latlon
    from heatscore.manifolds.so3 import quaternion_from_rotation

    X = torch.as_tensor(X, dtype=torch.float64).detach().cpu()
    if fmt.kind == "latlon":
        A = unit_to_latlon(X).numpy()
        if fmt.lon_range == "unsigned":
            A[:, 1] = np.where(A[:, 1] < 0, A[:, 1] + 360.0, A[:, 1])
    elif fmt.kind == "angles":
        from heatscore.manifolds.torus import wrap_angles

        full = 360.0 if fmt.angles == "deg" else 2 * math.pi
        A = wrap_angles(X).numpy() * (full / (2 * math.pi))         # in [0, full)
        if fmt.angle_range == "signed":
            A = np.where(A > full / 2, A - full, A)
    elif fmt.kind == "matrix":
        A = X.reshape(-1, 9).numpy()
    elif fmt.kind == "quaternion":
        q = quaternion_from_rotation(X)
        A = (q[:, [1, 2, 3, 0]] if fmt.quat_order == "xyzw" else q).numpy()
    elif fmt.kind in ("xyz", "mesh_xyz"):
        A = X.numpy()
    else:
        raise DataError(f"unknown data format {fmt.kind!r}")
    return fmt.header, A


def write_points(path, X, fmt):
    """Write points X to the CSV ``path`` in the format ``fmt`` (atomic)."""
    header, A = format_points(X, fmt)
    write_csv(path, A, header)


def write_csv(path, A, header=None):
    """Write the (n, k) array ``A`` (with an optional header row) to ``path`` (atomic)."""
    A = np.asarray(A, dtype=np.float64).reshape(len(A), -1)

    def write(fh):
        if header is not None:
            fh.write(",".join(header) + "\n")
        np.savetxt(fh, A, fmt=NUMBER_FORMAT, delimiter=",")

    atomic_write(path, write, text=True)


def check_output(path, option="-o"):
    """``DataError`` unless ``path`` can be written: its folder exists and it is not a folder."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise DataError(f"{option} {path}: the folder {directory} does not exist")
    if os.path.isdir(path):
        raise DataError(f"{option} {path}: is a folder, expected a file name")
