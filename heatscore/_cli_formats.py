"""CSV data files of the ``heatscore`` command: points on S^d, T^d, SO(3) and meshes.

Reading (``read_points``): comment lines (first non-blank character ``#``) and blank lines are
skipped; the first remaining row is a header when none of its fields is a number (the bundled
Earth files have either). Every row must have the same number of fields. The columns read are
those ``--columns`` names (header names or 1-based numbers, in that order), or else those the
header names (below; the other columns, text or not, are left out with a note), or else all of
them; each of their fields must be a finite number (an error names the line and field). Formats:

- sphere (S²): latitude/longitude (header names lat/latitude and lon/long/longitude/lng, or two
  columns), in degrees or with ``--angles rad`` in radians, or x, y, z (header names x, y, z, or
  three columns). Any other number of columns is refused: points on S^D with D + 1 coordinates
  need ``--manifold sphere:D``. Latitudes within ±π/2 and longitudes within [−π, 2π] that spread
  over more than ``RADIANS_MIN_SPREAD`` are read as degrees with a note that they look like
  radians (unless ``--angles`` is given);
- torus: every column is an angle, ``--angles deg|rad`` required, range (−180, 180] or [0, 360)
  (stated by ``angle_range`` or taken from the data: signed when any angle is negative);
- so3: nine columns (a 3×3 matrix, row-major) or four (a quaternion, ``quat_order`` required);
- mesh: x, y, z of points near the surface (header names x, y, z, or three columns).

Near points are projected onto the manifold (x/|x| on the sphere, the nearest rotation by SVD,
q/|q|, the nearest surface point on a mesh); the largest deviation, in the manifold's own measure
(``Manifold._off_manifold``: | |x| − 1 |, max(‖RᵀR − I‖_F, |det R − 1|), | |q| − 1 |, distance to
the surface / bounding-box diagonal) is noted, and a row beyond ``PROJECT_RTOL`` is refused.

Every problem raises :class:`DataError`, one line naming the file, the line and what was wrong.
Writing is atomic (``heatscore._files``).
"""

import csv
import json
import math
import os
import re
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
    angles: str = None            # torus: "deg" | "rad"; latlon: "rad" or None (degrees)
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
    return _number(text) is not None


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def _parse_column(column):
    """(float64 values (n,), bool (n,): the field is text) of a column of fields; text is NaN."""
    try:
        return np.array(column, dtype=np.float64), np.zeros(len(column), dtype=bool)
    except ValueError:
        values = [_number(f) for f in column]
        text = np.array([v is None for v in values])
        return np.array([math.nan if v is None else v for v in values]), text


class Table:
    """The fields of a CSV file as text: ``header`` (names or None), ``lines`` (n,) line numbers,
    ``columns`` (``width`` sequences of n fields) and ``fields``, the 1-based field number in the
    file of each column (columns can be a selection, see :meth:`select`)."""

    def __init__(self, name, header, lines, columns, fields=None):
        self.name, self.header, self.lines, self.columns = name, header, lines, columns
        self.width = len(columns)
        self.fields = tuple(range(1, self.width + 1)) if fields is None else fields

    def select(self, cols):
        """The table of the columns ``cols`` (indices into this one), in that order."""
        header = None if self.header is None else tuple(self.header[c] for c in cols)
        return Table(self.name, header, self.lines, [self.columns[c] for c in cols],
                     tuple(self.fields[c] for c in cols))

    def values(self, hint=""):
        """(n, width) float64 of the fields; ``DataError`` at the first field (in file order)
        that is not a finite number, naming its line and field (``hint`` appended)."""
        out = np.empty((len(self.lines), self.width))
        first = None                                   # (row, column, text?) of the first bad field
        for j, column in enumerate(self.columns):
            out[:, j], text = _parse_column(column)
            bad = np.flatnonzero(~np.isfinite(out[:, j]))
            if bad.size and (first is None or bad[0] < first[0]):
                first = (int(bad[0]), j, bool(text[bad[0]]))
        if first is not None:
            i, j, text = first
            raise DataError(f"{self.name} line {int(self.lines[i])}: field {self.fields[j]} "
                            f"({self.columns[j][i].strip()!r}) is not "
                            f"{'a number' if text else 'finite'}" + (hint if text else ""))
        return out

    def find(self, names):
        """Index of the first column whose header is one of ``names`` (any case), or None."""
        lowered = [h.lower() for h in self.header]
        for n in names:
            if n in lowered:
                return lowered.index(n)
        return None


def read_table(path):
    """The :class:`Table` of the CSV file ``path``.

    ``DataError`` for a missing file, a folder, an unreadable or non-UTF-8 file, no data rows or a
    row with a different number of fields. Fields are numbers only when read
    (:meth:`Table.values`).
    """
    name = os.path.basename(path)
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, expected a CSV file")
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            text = fh.read()
    except UnicodeDecodeError:
        raise DataError(f"{name}: not a UTF-8 text (CSV) file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    numbered = [(lineno, t) for lineno, t in enumerate(text.splitlines(), 1)
                if t.strip() and not t.lstrip().startswith("#")]
    if not numbered:
        raise DataError(f"{name} is empty (comments and a header row only are not data)")
    rows = list(csv.reader(t.strip() for _, t in numbered))
    header = None
    if not any(_is_number(f) for f in rows[0]):
        header, rows, numbered = tuple(f.strip() for f in rows[0]), rows[1:], numbered[1:]
    if not rows:
        raise DataError(f"{name} has no data rows (comments and a header row only are not data)")
    width = len(rows[0] if header is None else header)
    wrong = [i for i, row in enumerate(rows) if len(row) != width]
    if wrong:
        raise DataError(f"{name} line {numbered[wrong[0]][0]}: expected {width} fields, found "
                        f"{len(rows[wrong[0]])}")
    return Table(name, header, np.asarray([lineno for lineno, _ in numbered]), list(zip(*rows)))


def parse_columns(text):
    """``--columns``: comma-separated names or 1-based indices -> tuple of str and int."""
    items = [t.strip() for t in text.split(",")]
    if not all(items):
        raise ValueError(f"expected comma-separated column names or 1-based numbers, found {text!r}")
    out = tuple(int(t) if t.isdigit() else t for t in items)
    if any(c == 0 for c in out) or len(set(out)) < len(out):
        raise ValueError(f"expected distinct names or numbers from 1, found {text!r}")
    return out


def _chosen(table, columns):
    """The table of the ``--columns`` choice (names or 1-based indices)."""
    cols = []
    for c in columns:
        if isinstance(c, int):
            if c > table.width:
                raise DataError(f"--columns {c}: {table.name} has {table.width} columns")
            cols.append(c - 1)
        elif table.header is None:
            raise DataError(f"--columns {c}: {table.name} has no header row; give column numbers")
        else:
            i = table.find((c.lower(),))
            if i is None:
                raise DataError(f"--columns {c}: {table.name} has no such column; its header is "
                                f"{', '.join(table.header)}")
            cols.append(i)
    return table.select(cols)


def _first_bad(table, bad, message):
    """Raise ``DataError`` at the first row flagged in ``bad`` (numpy bool (n,))."""
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{table.name} line {int(table.lines[i])}: {message(i)}")


def _outside(v, lo, hi):
    slack = RANGE_SLACK * max(abs(lo), abs(hi))
    return (v < lo - slack) | (v > hi + slack)


# --- manifolds from the command line -------------------------------------------------------------
def parse_manifold(spec):
    """``--manifold``: ``"sphere"``, ``"sphere:D"``, ``"torus"``, ``"so3"`` or ``"mesh:PATH"`` ->
    (kind, the manifold when the option fixes it, else None: S², T^d and SO(3) follow the file)."""
    from heatscore.manifolds import Sphere

    if spec in ("sphere", "torus", "so3"):
        return spec, None
    if spec.startswith("sphere:") and spec[7:].isdigit() and int(spec[7:]) >= 2:
        return "sphere", Sphere(int(spec[7:]))
    if spec.startswith("mesh:") and len(spec) > 5:
        return "mesh", load_mesh(spec[5:])
    raise DataError(f"--manifold must be sphere, sphere:D (D >= 2), torus, so3 or mesh:PATH, "
                    f"found {spec!r}")


#: Keywords that start a vertex line of a text mesh file (OBJ "v", ASCII STL "vertex"); OFF and
#: ASCII PLY vertex lines are bare numbers.
_VERTEX_KEYWORDS = ("v", "vertex")


def _non_finite_vertex(data):
    """(line number, text) of the first line of a text mesh file whose fields (after a vertex
    keyword) are all numbers, one of them NaN or inf; None if there is none or the file is binary.

    potpourri3d's readers turn such coordinates into other numbers without a word (a tiny float
    in OBJ, a copy of another vertex in OFF, 0 in PLY), so they are looked for in the text."""
    if b"\0" in data[:4096] or not re.search(rb"(?i)nan|inf", data):
        return None
    for lineno, raw in enumerate(data.decode("latin-1").splitlines(), 1):
        tokens = raw.split()
        if tokens and tokens[0].lower() in _VERTEX_KEYWORDS:
            tokens = tokens[1:]
        if tokens and all(_is_number(t) for t in tokens) \
                and not all(math.isfinite(float(t)) for t in tokens):
            return lineno, raw.strip()
    return None


def load_mesh(path):
    """A ``TriangleMesh`` read from ``path``; ``DataError`` when missing, a folder, unreadable, or
    with a vertex coordinate that is not finite (binary files: the mesh's own check)."""
    from heatscore.manifolds import TriangleMesh

    if os.path.isdir(path):
        raise DataError(f"mesh:{path}: is a folder, expected a mesh file (OBJ, PLY, OFF or STL)")
    if not os.path.isfile(path):
        raise DataError(f"mesh:{path}: no such mesh file")
    with open(path, "rb") as fh:
        bad = _non_finite_vertex(fh.read())
    if bad is not None:
        raise DataError(f"mesh:{path} line {bad[0]}: a vertex coordinate is not finite ({bad[1]!r})")
    try:
        return TriangleMesh.from_file(path)
    except (RuntimeError, ValueError, TypeError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"mesh:{path}: cannot read the mesh ({first})") from None


# --- points --------------------------------------------------------------------------------------
def read_points(path, kind, manifold=None, angles=None, angle_range=None, quat_order=None,
                columns=None):
    """Read points of ``kind`` (sphere, torus, so3, mesh) from the CSV ``path``.

    ``manifold``: the manifold the points must be on (a model's, a mesh, or ``--manifold
    sphere:D``); None: S², T^d or SO(3) as the file says. ``angles``: "deg" | "rad" | None (torus:
    required; sphere lat/lon: None reads degrees and notes columns that look like radians).
    ``columns``: the ``--columns`` choice (see ``parse_columns``), or None. Returns ``(manifold,
    X (n, *point_shape) float64, DataFormat, notes)``, ``notes`` a list of lines for the user
    (columns left out, projection, likely radians).
    """
    table = read_table(path)
    notes = []
    if columns is not None:
        table = _chosen(table, columns)
    if kind == "sphere":
        return _read_sphere(table, manifold, angles, columns is not None, notes)
    hint = "" if columns is not None else COLUMNS_HINT
    if kind == "torus":
        return _read_torus(table, angles, angle_range, manifold, hint, notes)
    if kind == "so3":
        return _read_so3(table, quat_order, hint, notes)
    if kind == "mesh":
        return _read_mesh(table, manifold, columns is not None, notes)
    raise DataError(f"unknown manifold kind {kind!r}")


#: Appended to errors in files read whole (no --columns choice, no columns found by name).
COLUMNS_HINT = " (choose the columns with --columns)"


def _by_name(table, cols, notes):
    """The columns ``cols`` of ``table``, with a note naming them when others are left out."""
    if len(cols) < table.width:
        left = [h for i, h in enumerate(table.header) if i not in cols]
        notes.append(f"{table.name}: used the columns {', '.join(table.header[c] for c in cols)} "
                     f"(left out: {', '.join(left)}; choose others with --columns)")
    return table.select(cols)


def _project(table, m, projected, deviation, measure, notes):
    """Refuse rows beyond PROJECT_RTOL; note the largest deviation; returns the projected points."""
    dev = deviation.detach().cpu().numpy()
    _first_bad(table, dev > PROJECT_RTOL,
               lambda i: f"point is off {m!r} by {dev[i]:.2e} ({measure}); rows "
                         f"within {PROJECT_RTOL:g} are projected onto it, this one is refused")
    notes.append(f"projected the points of {table.name} onto {m!r}: largest deviation "
                 f"{float(dev.max()):.2e} ({measure}; rows beyond {PROJECT_RTOL:g} are refused)")
    return projected


#: Latitude/longitude read as degrees look like radians when every |lat| <= π/2 and every lon in
#: [−π, 2π] while the columns spread over more than this (radians: about 3°; as degrees such
#: points sit within 6.3° of 0°N 0°E in the Gulf of Guinea).
RADIANS_MIN_SPREAD = 0.05


def _sphere_columns(table, m, explicit, notes):
    """(table of the point columns, "latlon" | "xyz") for points on the sphere ``m`` (None: S²)."""
    dim = 2 if m is None else m.dim
    if table.header is not None and dim == 2:
        i_lat, i_lon = table.find(LAT_NAMES), table.find(LON_NAMES)
        xyz = [table.find((n,)) for n in XYZ_NAMES]
        if i_lat is not None and i_lon is not None:
            return _by_name(table, [i_lat, i_lon], notes), "latlon"
        if (i_lat is not None or i_lon is not None) and not explicit:
            missing = "longitude (lon)" if i_lon is None else "latitude (lat)"
            raise DataError(f"{table.name}: the header names no {missing} column; found "
                            f"{', '.join(table.header)}")
        if all(i is not None for i in xyz):
            return _by_name(table, xyz, notes), "xyz"
        if not explicit:
            raise DataError(f"{table.name}: the header names neither lat/lon nor x/y/z columns; "
                            f"found {', '.join(table.header)}{COLUMNS_HINT}")
    k = table.width
    if dim == 2 and k in (2, 3):
        return table, "latlon" if k == 2 else "xyz"
    if dim > 2 and k == dim + 1:
        return table, "xyz"
    taken = "the chosen columns" if explicit else f"{table.name} has {k} columns, which"
    if dim == 2:
        raise DataError(f"{taken} do not make points on S²: it takes 2 (latitude, longitude) or "
                        f"3 (x, y, z)" + (f"; for {k} coordinates of points on S^{k - 1}, pass "
                                          f"--manifold sphere:{k - 1}" if k > 3 and m is None
                                          else "")
                        + ("" if explicit else COLUMNS_HINT))
    raise DataError(f"{taken} do not make points on {m!r}: it takes {dim + 1} coordinates"
                    + ("" if explicit else COLUMNS_HINT))


def _read_sphere(table, manifold, angles, explicit, notes):
    from heatscore.datasets import latlon_to_unit
    from heatscore.manifolds import Sphere

    if angles is not None and angles not in ANGLE_UNITS:
        raise DataError(f"--angles must be deg or rad, found {angles!r}")
    table, kind = _sphere_columns(table, manifold, explicit, notes)
    P = table.values("" if explicit or table.header is not None else COLUMNS_HINT)
    m = Sphere(2 if kind == "latlon" else P.shape[1] - 1) if manifold is None else manifold
    if kind == "xyz":
        x = torch.as_tensor(P)
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        X = _project(table, m, x / torch.clamp(norm, min=1e-300), m._off_manifold(x),
                     SPHERE_MEASURE, notes)
        return m, X, DataFormat("xyz", header=table.header), notes
    if m != Sphere(2):
        raise DataError(f"{table.name}: latitude, longitude (points on S²) do not fit {m!r}")
    lat, lon = P[:, 0], P[:, 1]
    half = 90.0 if angles != "rad" else math.pi / 2
    unit = "radians" if angles == "rad" else "degrees"
    hint = " (degrees? use --angles deg)" if angles == "rad" else ""
    _first_bad(table, _outside(lat, -half, half),
               lambda i: f"latitude {lat[i]:g} is outside [{-half:g}, {half:g}] {unit}"
                         + (hint if abs(lat[i]) <= 90 else ""))
    _first_bad(table, _outside(lon, -2 * half, 4 * half),
               lambda i: f"longitude {lon[i]:g} is outside [{-2 * half:g}, {4 * half:g}] {unit}"
                         + (hint if abs(lon[i]) <= 360 else ""))
    if angles is None and np.abs(lat).max() <= math.pi / 2 and lon.min() >= -math.pi \
            and lon.max() <= 2 * math.pi and max(np.ptp(lat), np.ptp(lon)) > RADIANS_MIN_SPREAD:
        notes.append(f"{table.name}: every latitude is within ±π/2 and every longitude within "
                     "[-π, 2π], as radians would be; they were read as degrees (points near 0°N "
                     "0°E): pass --angles rad if they are radians (--angles deg: no note)")
    lon_range = "unsigned" if (lon > 2 * half).any() else "signed"
    if angles == "rad":
        lat, lon = np.degrees(lat), np.degrees(lon)
    X = latlon_to_unit(np.stack([np.clip(lat, -90, 90), lon], axis=1))
    return m, X, DataFormat("latlon", header=table.header, lon_range=lon_range,
                            angles="rad" if angles == "rad" else None), notes


def _read_torus(table, angles, angle_range, manifold, hint, notes):
    from heatscore.manifolds import Torus
    from heatscore.manifolds.torus import wrap_angles

    if angles not in ANGLE_UNITS:
        raise DataError(f"{table.name}: torus angles need --angles deg or --angles rad")
    if angle_range is not None and angle_range not in ANGLE_RANGES:
        raise DataError(f"--angle-range must be signed or unsigned, found {angle_range!r}")
    V = table.values(hint)
    d = V.shape[1]
    m = Torus(d) if manifold is None else manifold
    if m != Torus(d):
        raise DataError(f"{table.name}: {d} angle columns do not fit {m!r}")
    half = 180.0 if angles == "deg" else math.pi
    lo, hi = {"signed": (-half, half), "unsigned": (0.0, 2 * half), None: (-half, 2 * half)}[angle_range]
    unit = "degrees" if angles == "deg" else "radians"
    bad = _outside(V, lo, hi).any(axis=1)
    _first_bad(table, bad, lambda i: (
        f"angle {V[i][_outside(V[i], lo, hi)][0]:g} is outside [{lo:g}, {hi:g}] {unit}"
        + (" (degrees? use --angles deg)" if angles == "rad" and np.abs(V[i]).max() <= 360 else "")))
    if angle_range is None:
        angle_range = "signed" if (V < 0).any() else "unsigned"
    rad = V * (math.pi / 180) if angles == "deg" else V
    X = wrap_angles(torch.as_tensor(rad))
    fmt = DataFormat("angles", header=table.header, angles=angles, angle_range=angle_range)
    return m, X, fmt, notes


def _read_so3(table, quat_order, hint, notes):
    from heatscore.manifolds import SO3
    from heatscore.manifolds.so3 import rotation_from_quaternion

    m = SO3()
    k = table.width
    if k not in (4, 9):
        raise DataError(f"{table.name}: expected 9 columns (a 3×3 rotation matrix, row by row) "
                        f"or 4 (a quaternion) for SO(3), found {k}{hint}")
    if k == 4 and quat_order not in QUAT_ORDERS:
        raise DataError(f"{table.name}: quaternion rows need --quat-order wxyz or --quat-order xyzw")
    V = table.values(hint)
    if k == 9:
        M = torch.as_tensor(V).reshape(-1, 3, 3)
        U, _, Vh = torch.linalg.svd(M)
        det = torch.linalg.det(U @ Vh)
        U = torch.cat([U[:, :, :2], U[:, :, 2:] * det[:, None, None]], dim=2)
        X = _project(table, m, U @ Vh, m._off_manifold(M), MATRIX_MEASURE, notes)
        return m, X, DataFormat("matrix", header=table.header), notes
    if table.header is not None:
        named = "".join(h.lower().lstrip("q") for h in table.header)
        if sorted(named) == sorted("wxyz") and len(named) == 4 and named != quat_order:
            raise DataError(f"{table.name}: the header says {named} but --quat-order is {quat_order}")
    q = torch.as_tensor(V)
    if quat_order == "xyzw":
        q = q[:, [3, 0, 1, 2]]
    norm = torch.linalg.vector_norm(q, dim=1)
    unit = q / torch.clamp(norm, min=1e-300)[:, None]
    X = _project(table, m, rotation_from_quaternion(unit), (norm - 1).abs(), QUATERNION_MEASURE,
                 notes)
    return m, X, DataFormat("quaternion", header=table.header, quat_order=quat_order), notes


def _read_mesh(table, mesh, explicit, notes):
    if mesh is None:
        raise DataError("mesh data need --manifold mesh:PATH")
    cols = [table.find((n,)) for n in XYZ_NAMES] if table.header is not None else None
    if cols is not None and all(c is not None for c in cols):
        table = _by_name(table, cols, notes)
    elif table.header is not None and not explicit:
        raise DataError(f"{table.name}: the header names no x, y, z columns; found "
                        f"{', '.join(table.header)}{COLUMNS_HINT}")
    elif table.width != 3:
        raise DataError(f"{table.name}: expected 3 columns (x, y, z) near the mesh, found "
                        f"{table.width}" + ("" if explicit else COLUMNS_HINT))
    x = torch.as_tensor(table.values())
    faces, bary, deviation = mesh._located(x)
    X = _project(table, mesh, mesh.from_barycentric(faces, bary), deviation, MESH_MEASURE, notes)
    return mesh, X, DataFormat("mesh_xyz", header=table.header), notes


def format_points(X, fmt):
    """(header or None, (n, k) float64 array) of points X in the data format ``fmt``."""
    from heatscore.datasets import unit_to_latlon
    from heatscore.manifolds.so3 import quaternion_from_rotation

    X = torch.as_tensor(X, dtype=torch.float64).detach().cpu()
    if fmt.kind == "latlon":
        A = unit_to_latlon(X).numpy()
        if fmt.lon_range == "unsigned":
            A[:, 1] = np.where(A[:, 1] < 0, A[:, 1] + 360.0, A[:, 1])
        if fmt.angles == "rad":
            A = np.radians(A)
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
