"""Pictures (matplotlib, the ``plot`` extra; Agg backend; PNG, PDF or SVG files).

Every function draws one figure of ``size`` inches at ``dpi`` in the format its path's extension
names (``IMAGE_FORMATS``; a PNG has size·dpi pixels exactly), writes it to a temporary name and
renames it (no half-written file), and returns the path. ``log_density`` arguments are callables
X (n, *point_shape) -> (n,) log p, e.g. ``est.log_density``; maps show the top ``DYNAMIC_RANGE``
nats of log p (far from the data log p falls by hundreds).

- S²: :func:`plot_sphere_density` (Mollweide, equal-area) and :func:`plot_sphere_globe` (3-D),
  with the bundled Natural Earth 1:110m coastlines (``coastlines=False`` leaves them out);
- T²: :func:`plot_torus_density` (heat map on the angle square, Ramachandran style);
- SO(3): :func:`plot_so3` (rotation axes on a Mollweide map coloured by rotation angle, over the
  axis marginal of the density, beside the angle marginal and a histogram of the data's angles);
- meshes: :func:`plot_mesh_density` (faces coloured by density, data points on the visible side);
- any of these: :func:`plot_density` (picks the view), :func:`plot_samples` (samples beside
  data), :func:`plot_reverse_paths` (paths of a few particles of the reverse process).
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np
import torch

from heatscore._files import temporary_path
from heatscore._typing import ArrayLike, LogDensityFn, PathLike
from heatscore.datasets import latlon_to_unit, unit_to_latlon
from heatscore.datasets._coastlines import load_coastlines

if TYPE_CHECKING:
    from heatscore.manifolds import Manifold, TriangleMesh

#: Colour range of density maps, in nats below the maximum.
DYNAMIC_RANGE = 12.0
#: Colour map of densities (lightness increases with the density).
DENSITY_CMAP = "magma"
#: File formats, by the path's extension.
IMAGE_FORMATS = ("png", "pdf", "svg")
#: Data points over a density: a light face with a dark rim shows on every colour of the map;
#: on a blank background, plain dots.
DOTS_ON_DENSITY = {"c": "#3ee8ff", "edgecolors": "black", "linewidths": 0.3, "alpha": 0.9}
DOTS_PLAIN = {"c": "tab:blue", "linewidths": 0, "alpha": 0.7}
#: Coastlines over a density and on a blank map.
COAST_ON_DENSITY = {"color": "0.85", "lw": 0.5, "alpha": 0.8}
COAST_PLAIN = {"color": "0.45", "lw": 0.5}
#: Latitude grid lines and labels of Mollweide maps (matplotlib's default ±75° labels run into
#: the title).
LATITUDE_TICKS = (-60, -30, 0, 30, 60)
#: Torus heat maps: the map's axes rectangle (left, bottom, width, height, figure fractions) is
#: fixed, so a pixel of the PNG maps to a pair of angles.
TORUS_AXES = (0.13, 0.11, 0.66, 0.8)
TORUS_COLORBAR = (0.83, 0.11, 0.03, 0.8)
#: Default density grids: one cell per this many pixels of the picture.
CELL_PIXELS = 2.5
#: Rows evaluated per call of ``log_density`` (bounds the memory of a map).
CHUNK = 8192
#: Consecutive path points further apart than this (radians on a map, degrees on the torus
#: square) are a wrap-around: the line is broken there.
MAP_JUMP = math.pi / 2
TORUS_JUMP = 180.0


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("plotting needs matplotlib: pip install 'heatscore[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def image_format(path: PathLike, name: str = "path") -> str:
    """The format of a picture written to ``path`` ("png", "pdf" or "svg", from its extension);
    ``ValueError`` naming ``name`` for any other extension."""
    ext = os.path.splitext(os.fspath(path))[1].lower().lstrip(".")
    if ext not in IMAGE_FORMATS:
        raise ValueError(f"{name}: pictures are written as .png, .pdf or .svg (the format follows "
                         f"the extension), found {os.path.basename(os.fspath(path))!r}")
    return ext


def _figure(plt, size, dpi):
    w, h = (float(s) for s in size)
    if not (w > 0 and h > 0 and dpi > 0):
        raise ValueError(f"size and dpi must be positive, found size={size!r}, dpi={dpi!r}")
    return plt.figure(figsize=(w, h), dpi=dpi)


@contextlib.contextmanager
def _drawing(path, size, dpi):
    """Yield (pyplot, a new figure of ``size`` inches at ``dpi``) for a picture at ``path`` (its
    format checked first); the figure is closed after."""
    image_format(path)
    plt = _require_matplotlib()
    fig = _figure(plt, size, dpi)
    try:
        yield plt, fig
    finally:
        plt.close(fig)


def _save(fig, path):
    """Write ``fig`` to ``path`` in its extension's format (a PNG of exactly figsize·dpi pixels;
    atomic)."""
    with temporary_path(path) as tmp:
        fig.savefig(tmp, format=image_format(path), dpi=fig.dpi)


def _evaluate(log_density, X):
    """log_density on X in chunks of ``CHUNK`` rows, as a float64 numpy array."""
    out = []
    with torch.no_grad():
        for s in range(0, X.shape[0], CHUNK):
            out.append(torch.as_tensor(log_density(X[s:s + CHUNK])).detach().cpu().double())
    return torch.cat(out).numpy()


def _colour_floor(logp):
    """Lower end of the colour range: the top DYNAMIC_RANGE nats (or the 2% quantile above it)."""
    return max(float(np.quantile(logp, 0.02)), float(logp.max()) - DYNAMIC_RANGE)


def _points(data):
    return None if data is None else torch.as_tensor(data, dtype=torch.float64).detach().cpu()


def _dots(over_density, size):
    """Scatter keywords of data points of ``size`` (points²) over a density or a blank view."""
    return {"s": size, **(DOTS_ON_DENSITY if over_density else DOTS_PLAIN)}


# --- S² -------------------------------------------------------------------------------------------
def sphere_density_grid(log_density: LogDensityFn, n_lat: int = 180, n_lon: int = 360
                        ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lat (n_lat,), lon (n_lon,), log p (n_lat, n_lon)) of a callable X (n, 3) -> log p (n,)."""
    lat = np.linspace(-90 + 90 / n_lat, 90 - 90 / n_lat, n_lat)
    lon = np.linspace(-180 + 180 / n_lon, 180 - 180 / n_lon, n_lon)
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    X = latlon_to_unit(np.stack([LA.ravel(), LO.ravel()], axis=1))
    return lat, lon, _evaluate(log_density, X).reshape(n_lat, n_lon)


def _map_coords(X):
    """(lon, lat) in radians of unit vectors (n, 3), for Mollweide axes."""
    ll = unit_to_latlon(X).numpy()
    return np.radians(ll[:, 1]), np.radians(ll[:, 0])


def _sphere_background(ax, log_density, n_lat, n_lon):
    lat, lon, logp = sphere_density_grid(log_density, n_lat, n_lon)
    return ax.pcolormesh(np.radians(lon), np.radians(lat), np.clip(logp, _colour_floor(logp), None),
                         shading="auto", cmap=DENSITY_CMAP)


def _mollweide(fig, *spec):
    ax = fig.add_subplot(*spec, projection="mollweide")
    ax.set_yticks(np.radians(LATITUDE_TICKS))
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    return ax


def _joined(lines):
    """One (k, 2) array of the (lon, lat) polylines with a NaN row between them."""
    gap = np.full((1, 2), np.nan)
    return np.concatenate([part for line in lines for part in (line, gap)])


def _map_coastlines(ax, over_density):
    """Draw the coastlines on a Mollweide axes."""
    lon, lat = np.radians(_joined(load_coastlines())).T
    ax.plot(lon, lat, **(COAST_ON_DENSITY if over_density else COAST_PLAIN))


def _cells(n, size_px, cap):
    """Grid cells along an axis: ``n`` if given, else one per CELL_PIXELS pixels, at most ``cap``."""
    return int(n) if n is not None else int(min(cap, max(12, round(size_px / CELL_PIXELS))))


def plot_sphere_density(log_density: LogDensityFn, data: Optional[ArrayLike] = None,
                        path: PathLike = "density.png", title: Optional[str] = None,
                        size: Tuple[float, float] = (10, 5.4), dpi: int = 100,
                        n_lat: Optional[int] = None, n_lon: Optional[int] = None,
                        coastlines: bool = True) -> PathLike:
    """Write a Mollweide map of log p with optional data points (n, 3); returns the path.

    ``log_density``: a callable (n, 3) -> (n,), or None for the data points alone.
    ``n_lat`` × ``n_lon`` grid cells (default: from the picture's width, at most 180 × 360).
    ``coastlines``: draw the Natural Earth 1:110m coastlines.
    """
    with _drawing(path, size, dpi) as (plt, fig):
        ax = _mollweide(fig, 111)
        if log_density is not None:
            n_lon = _cells(n_lon, size[0] * dpi, 360)
            mesh = _sphere_background(ax, log_density, _cells(n_lat, n_lon / 2 * CELL_PIXELS, 180), n_lon)
            fig.colorbar(mesh, ax=ax, orientation="horizontal", fraction=0.05, pad=0.06,
                         label="log density (nats, w.r.t. area)")
        if coastlines:
            _map_coastlines(ax, log_density is not None)
        X = _points(data)
        if X is not None:
            ax.scatter(*_map_coords(X), **_dots(log_density is not None, 5))
        if title:
            ax.set_title(title)
        _save(fig, path)
    return path


def plot_sphere_globe(log_density: LogDensityFn, data: Optional[ArrayLike] = None,
                      path: PathLike = "globe.png", centre: Optional[ArrayLike] = None,
                      title: Optional[str] = None, size: Tuple[float, float] = (6, 6),
                      dpi: int = 100, n_lat: int = 90, n_lon: int = 180,
                      coastlines: bool = True) -> PathLike:
    """Write a 3-D globe of log p (faces of an n_lat × n_lon latitude/longitude grid) with the data
    points (n, 3) and the coastlines (unless ``coastlines=False``) on the visible hemisphere;
    returns the path.

    ``centre``: (latitude, longitude) in degrees facing the viewer; None: the densest grid cell
    (or the data's mean direction when ``log_density`` is None).
    """
    with _drawing(path, size, dpi) as (plt, fig):
        import matplotlib
        from matplotlib import cm, colors

        ax = fig.add_subplot(111, projection="3d", computed_zorder=False)
        X = _points(data)
        lat_e = np.radians(np.linspace(-90, 90, n_lat + 1))
        lon_e = np.radians(np.linspace(-180, 180, n_lon + 1))
        LA, LO = np.meshgrid(lat_e, lon_e, indexing="ij")
        xs, ys, zs = np.cos(LA) * np.cos(LO), np.cos(LA) * np.sin(LO), np.sin(LA)
        if log_density is not None:
            lat, lon, logp = sphere_density_grid(log_density, n_lat, n_lon)
            norm = colors.Normalize(_colour_floor(logp), float(logp.max()))
            faces = matplotlib.colormaps[DENSITY_CMAP](norm(logp))
            if centre is None:
                i, j = np.unravel_index(np.argmax(logp), logp.shape)
                centre = (lat[i], lon[j])
            mappable = cm.ScalarMappable(norm=norm, cmap=DENSITY_CMAP)
            fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.02, label="log density (nats, w.r.t. area)")
        else:
            faces = np.broadcast_to(np.array([0.85, 0.88, 0.92, 1.0]), (n_lat, n_lon, 4))
        if centre is None:
            mean = X.mean(dim=0) if X is not None else torch.tensor([1.0, 0.0, 0.0])
            mean = mean if float(mean.norm()) > 1e-9 else torch.tensor([1.0, 0.0, 0.0])
            centre = tuple(unit_to_latlon((mean / mean.norm())[None])[0].tolist())
        ax.plot_surface(xs, ys, zs, facecolors=faces, rstride=1, cstride=1, shade=False,
                        linewidth=0, antialiased=False)
        elev, azim = float(centre[0]), float(centre[1])
        ax.view_init(elev=elev, azim=azim)
        eye = latlon_to_unit(np.array([[elev, azim]]))[0].numpy()
        if coastlines:
            ll = _joined(load_coastlines())
            C = latlon_to_unit(np.nan_to_num(ll[:, ::-1])).numpy() * 1.005
            C[np.isnan(ll[:, 0]) | (C @ eye <= 0)] = np.nan          # breaks and the far side
            ax.plot(C[:, 0], C[:, 1], C[:, 2], **(COAST_ON_DENSITY if log_density is not None
                                                  else COAST_PLAIN))
        if X is not None:
            P = (X / X.norm(dim=1, keepdim=True)).numpy()
            front = P[P @ eye > 0] * 1.01
            ax.scatter(front[:, 0], front[:, 1], front[:, 2], depthshade=False,
                       **_dots(log_density is not None, 5))
        ax.set(xlim=(-1, 1), ylim=(-1, 1), zlim=(-1, 1))
        ax.set_box_aspect((1, 1, 1), zoom=1.6)
        ax.set_axis_off()
        if title:
            ax.set_title(title)
        _save(fig, path)
    return path


# --- T² -------------------------------------------------------------------------------------------
def _torus_coords(X, degrees=True, signed=True):
    """Angles (n, 2) in [0, 2π) -> the plot's range: (−180, 180] / [0, 360) (or radians)."""
    A = X.numpy().copy()
    if signed:
        A = np.where(A > math.pi, A - 2 * math.pi, A)
    return np.degrees(A) if degrees else A


def _torus_extent(degrees, signed):
    full = 360.0 if degrees else 2 * math.pi
    return (-full / 2, full / 2) if signed else (0.0, full)


def torus_density_grid(log_density: LogDensityFn, n: int = 180, degrees: bool = True,
                       signed: bool = True) -> Tuple[np.ndarray, np.ndarray]:
    """(centres (n,), log p (n, n)) on the angle square; log p[i, j] at (θ_1 = c[j], θ_2 = c[i])
    (rows follow the vertical axis), centres in the plot's unit and range."""
    lo, hi = _torus_extent(degrees, signed)
    c = lo + (np.arange(n) + 0.5) * (hi - lo) / n
    T1, T2 = np.meshgrid(c, c, indexing="xy")
    rad = np.radians if degrees else (lambda a: a)
    X = torch.as_tensor(np.stack([rad(T1).ravel(), rad(T2).ravel()], axis=1) % (2 * math.pi))
    return c, _evaluate(log_density, X).reshape(n, n)


def plot_torus_density(log_density: LogDensityFn, data: Optional[ArrayLike] = None,
                       path: PathLike = "torus.png", degrees: bool = True, signed: bool = True,
                       labels: Sequence[str] = ("θ₁", "θ₂"), title: Optional[str] = None,
                       size: Tuple[float, float] = (6.4, 5.4), dpi: int = 100,
                       n_grid: Optional[int] = None) -> PathLike:
    """Write a heat map of log p on the angle square with data points (n, 2); returns the path.

    Axes: θ₁ horizontal, θ₂ vertical, in degrees (or radians), over (−180, 180] when ``signed``
    else [0, 360). The map fills the fixed rectangle ``TORUS_AXES`` of the figure, with
    ``n_grid`` × ``n_grid`` cells (default: from the picture's width, at most 180).
    ``log_density``: a callable (n, 2) -> (n,), or None for the data points alone.
    """
    with _drawing(path, size, dpi) as (plt, fig):
        ax = fig.add_axes(TORUS_AXES)
        lo, hi = _torus_extent(degrees, signed)
        if log_density is not None:
            n_grid = _cells(n_grid, TORUS_AXES[2] * size[0] * dpi, 180)
            _, logp = torus_density_grid(log_density, n_grid, degrees, signed)
            im = ax.imshow(np.clip(logp, _colour_floor(logp), None), origin="lower", cmap=DENSITY_CMAP,
                           extent=(lo, hi, lo, hi), aspect="auto", interpolation="nearest")
            fig.colorbar(im, cax=fig.add_axes(TORUS_COLORBAR), label="log density (nats, w.r.t. dθ₁dθ₂)")
        X = _points(data)
        if X is not None:
            A = _torus_coords(X, degrees, signed)
            ax.scatter(A[:, 0], A[:, 1], **_dots(log_density is not None, 6))
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel=labels[0], ylabel=labels[1])
        if title:
            ax.set_title(title)
        _save(fig, path)
    return path


# --- SO(3) ----------------------------------------------------------------------------------------
def _axis_angle(X):
    """(axis lon, axis lat) in radians and rotation angle in degrees of rotations (n, 3, 3)."""
    from heatscore.manifolds.so3 import vector_from_rotation

    w = vector_from_rotation(X)
    theta = torch.linalg.vector_norm(w, dim=1)
    axis = torch.where(theta[:, None] > 0, w / torch.clamp(theta, min=1e-300)[:, None],
                       torch.tensor([0.0, 0.0, 1.0], dtype=w.dtype))
    lon, lat = _map_coords(axis)
    return lon, lat, np.degrees(theta.numpy())


def so3_marginals(log_density: LogDensityFn, n_lat: int = 30, n_lon: int = 60,
                  n_angle: int = 48) -> Tuple[np.ndarray, ...]:
    """Marginals of a density p on SO(3) (w.r.t. the Riemannian volume, total 8π²) in axis–angle
    coordinates, where dvol = 2(1 − cos θ) dθ dΩ (dΩ the area element of the axis sphere).

    Returns (lat (n_lat,), lon (n_lon,) degrees, axis density (n_lat, n_lon) per steradian,
    θ (n_angle,) radians, angle density (n_angle,) per radian), both by the midpoint rule on the
    grid: a(u) = ∫ p 2(1 − cos θ) dθ, m(θ) = 2(1 − cos θ) ∫ p dΩ. For the uniform density
    1/(8π²): a = 1/(4π), m = (1 − cos θ)/π.
    """
    from heatscore.manifolds.so3 import rotation_from_vector

    lat = np.linspace(-90 + 90 / n_lat, 90 - 90 / n_lat, n_lat)
    lon = np.linspace(-180 + 180 / n_lon, 180 - 180 / n_lon, n_lon)
    theta = (np.arange(n_angle) + 0.5) * math.pi / n_angle
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    U = latlon_to_unit(np.stack([LA.ravel(), LO.ravel()], axis=1))                # (A, 3)
    W = (torch.as_tensor(theta)[:, None, None] * U[None]).reshape(-1, 3)          # (T·A, 3)
    p = np.exp(_evaluate(log_density, rotation_from_vector(W))).reshape(n_angle, n_lat, n_lon)
    jac = 2 * (1 - np.cos(theta))[:, None, None]
    area = np.radians(180 / n_lat) * np.radians(360 / n_lon) * np.cos(np.radians(LA))
    axis_density = (p * jac).sum(axis=0) * (math.pi / n_angle)
    angle_density = (p * jac * area).sum(axis=(1, 2))
    return lat, lon, axis_density, theta, angle_density


def _so3_panel(fig, spec, X, marg=None, label="data"):
    """Mollweide map of rotation axes coloured by angle, over the axis marginal (grey)."""
    ax = _mollweide(fig, *spec)
    if marg is not None:
        lat, lon, axis_density = marg[:3]
        ax.pcolormesh(np.radians(lon), np.radians(lat), axis_density, shading="auto", cmap="Greys")
    sc = None
    if X is not None:
        lon_p, lat_p, angle = _axis_angle(X)
        sc = ax.scatter(lon_p, lat_p, c=angle, cmap="viridis", vmin=0, vmax=180, s=4, linewidths=0)
    ax.set_title(f"rotation axes ({label}), coloured by angle", fontsize=10)
    return ax, sc


def plot_so3(data: Optional[ArrayLike] = None, path: PathLike = "so3.png",
             log_density: Optional[LogDensityFn] = None, title: Optional[str] = None,
             size: Tuple[float, float] = (12, 4.8), dpi: int = 100, n_lat: int = 30,
             n_lon: int = 60, n_angle: int = 48) -> PathLike:
    """Write a readable picture of rotations (n, 3, 3) and a density on SO(3); returns the path.

    Left: the rotation axes on a Mollweide map coloured by rotation angle, over the density's axis
    marginal (grey, darker = denser). Right: the density's angle marginal (see
    :func:`so3_marginals`), the uniform (Haar) law's (1 − cos θ)/π and a histogram of the data's
    angles.
    """
    with _drawing(path, size, dpi) as (plt, fig):
        X = _points(data)
        marg = so3_marginals(log_density, n_lat, n_lon, n_angle) if log_density is not None else None
        ax, sc = _so3_panel(fig, (1, 2, 1), X, marg)
        if sc is not None:
            fig.colorbar(sc, ax=ax, orientation="horizontal", fraction=0.05, pad=0.06,
                         label="rotation angle (degrees)")
        ax2 = fig.add_subplot(1, 2, 2)
        grid = np.linspace(0, 180, 181)
        ax2.plot(grid, (1 - np.cos(np.radians(grid))) / 180, "k--", lw=1, label="uniform (Haar)")
        if X is not None:
            ax2.hist(_axis_angle(X)[2], bins=36, range=(0, 180), density=True, color="tab:blue",
                     alpha=0.5, label="data")
        if marg is not None:
            ax2.plot(np.degrees(marg[3]), marg[4] * math.pi / 180, color="tab:red", lw=2, label="density")
        ax2.set(xlim=(0, 180), xlabel="rotation angle θ (degrees)", ylabel="density per degree")
        ax2.legend(fontsize=9)
        if title:
            fig.suptitle(title)
        _save(fig, path)
    return path


# --- meshes ---------------------------------------------------------------------------------------
def _outward_normals(mesh):
    """Face normals, flipped if needed so that they point out (positive enclosed signed volume)."""
    V, F = mesh.vertices, mesh.faces
    centroids = V[F].mean(dim=1)
    n = mesh.face_normals
    sign = 1.0 if float(((centroids - centroids.mean(0)) * n * mesh.face_areas[:, None]).sum()) >= 0 else -1.0
    return centroids, sign * n


def _eye(elev, azim):
    e, a = math.radians(elev), math.radians(azim)
    return np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)])


#: Display axes of a mesh's coordinates for each "up" axis: a cyclic permutation (a rotation, so
#: the picture is not mirrored) that makes ``up`` vertical.
_UP = {"z": [0, 1, 2], "y": [2, 0, 1], "x": [1, 2, 0]}


def _mesh_axes(fig, spec, mesh, view, up, log_density=None, X=None):
    """A 3-D axes with the mesh's faces (coloured by log p, or shaded grey) and the points of X on
    faces that face the viewer, drawn over the surface. Returns (axes, mappable or None)."""
    import matplotlib
    from matplotlib import cm, colors
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    if up not in _UP:
        raise ValueError(f"up must be 'x', 'y' or 'z', found {up!r}")
    perm = _UP[up]
    ax = fig.add_subplot(*spec, projection="3d", computed_zorder=False)
    V, F = mesh.vertices.numpy()[:, perm], mesh.faces.numpy()
    centroids, normals = _outward_normals(mesh)
    normals = normals.numpy()[:, perm]
    eye = _eye(*view)
    mappable = None
    if log_density is not None:
        logp = _evaluate(log_density, centroids)
        norm = colors.Normalize(_colour_floor(logp), float(logp.max()))
        face_colours = matplotlib.colormaps[DENSITY_CMAP](norm(logp))
        mappable = cm.ScalarMappable(norm=norm, cmap=DENSITY_CMAP)
    else:
        light = np.clip(normals @ eye, 0, 1)
        face_colours = np.stack([0.45 + 0.5 * light] * 3 + [np.ones_like(light)], axis=1)
    ax.add_collection3d(Poly3DCollection(V[F], facecolors=face_colours, linewidths=0, zorder=1))
    if X is not None and X.shape[0]:
        faces, _ = mesh.locate(X)
        front = normals[faces.numpy()] @ eye > 0
        P = X.numpy()[front][:, perm]
        ax.scatter(P[:, 0], P[:, 1], P[:, 2], depthshade=False, zorder=2,
                   **_dots(log_density is not None, 6))
    lo, hi = V.min(axis=0), V.max(axis=0)
    mid, half = (lo + hi) / 2, (hi - lo).max() / 2
    ax.set(xlim=(mid[0] - half, mid[0] + half), ylim=(mid[1] - half, mid[1] + half),
           zlim=(mid[2] - half, mid[2] + half))
    ax.set_box_aspect((1, 1, 1), zoom=1.3)
    ax.view_init(elev=view[0], azim=view[1])
    ax.set_axis_off()
    return ax, mappable


def plot_mesh_density(mesh: "TriangleMesh", log_density: Optional[LogDensityFn] = None,
                      data: Optional[ArrayLike] = None, path: PathLike = "mesh.png",
                      view: Tuple[float, float] = (20.0, 30.0), up: str = "y",
                      title: Optional[str] = None, size: Tuple[float, float] = (7, 6),
                      dpi: int = 100) -> PathLike:
    """Write the mesh with each face coloured by log p at its centroid and the data points (n, 3)
    on the faces that face the viewer; returns the path.

    ``view``: (elevation, azimuth) in degrees; ``up``: the coordinate drawn vertically ("y", the
    OBJ convention, as for the bundled Spot; or "z", "x").
    """
    with _drawing(path, size, dpi) as (plt, fig):
        ax, mappable = _mesh_axes(fig, (1, 1, 1), mesh, view, up, log_density, _points(data))
        if mappable is not None:
            fig.colorbar(mappable, ax=ax, shrink=0.6, pad=0.02, label="log density (nats, w.r.t. area)")
        if title:
            ax.set_title(title)
        _save(fig, path)
    return path


# --- any manifold -------------------------------------------------------------------------------
def _kind(m):
    """The manifold's ``plot_view`` (``ValueError`` where there is none)."""
    if getattr(m, "plot_view", None) is not None:
        return m.plot_view
    raise ValueError(f"manifold: pictures are drawn on Sphere(2), Torus(2), SO3() and triangle "
                     f"meshes, found {m!r}")


def plot_density(manifold: "Manifold", log_density: LogDensityFn, data: Optional[ArrayLike] = None,
                 path: PathLike = "density.png", **kwargs) -> PathLike:
    """The density picture of ``manifold``: a Mollweide map (S²), a heat map (T²), the axis–angle
    view (SO(3)) or the coloured surface (mesh). ``kwargs`` go to that function."""
    kind = _kind(manifold)
    if kind == "sphere":
        return plot_sphere_density(log_density, data, path, **kwargs)
    if kind == "torus":
        return plot_torus_density(log_density, data, path, **kwargs)
    if kind == "so3":
        return plot_so3(data, path, log_density=log_density, **kwargs)
    return plot_mesh_density(manifold, log_density, data, path, **kwargs)


def _panel(fig, spec, m, kind, X, log_density, label, view, up, coastlines):
    """One panel of ``kind`` with the points X over the density (if any) and, on S², the
    coastlines (if ``coastlines``)."""
    if kind == "mesh":
        ax, _ = _mesh_axes(fig, spec, m, view, up, log_density, X)
    elif kind == "so3":
        marg = so3_marginals(log_density) if log_density is not None else None
        ax, _ = _so3_panel(fig, spec, X, marg, label)
        return ax
    elif kind == "sphere":
        ax = _mollweide(fig, *spec)
        if log_density is not None:
            _sphere_background(ax, log_density, 90, 180)
        if coastlines:
            _map_coastlines(ax, log_density is not None)
        if X is not None:
            ax.scatter(*_map_coords(X), **_dots(log_density is not None, 4))
    else:
        ax = fig.add_subplot(*spec)
        lo, hi = _torus_extent(True, True)
        if log_density is not None:
            _, logp = torus_density_grid(log_density, 90)
            ax.imshow(np.clip(logp, _colour_floor(logp), None), origin="lower", cmap=DENSITY_CMAP,
                      extent=(lo, hi, lo, hi), aspect="auto", interpolation="nearest")
        if X is not None:
            A = _torus_coords(X)
            ax.scatter(A[:, 0], A[:, 1], **_dots(log_density is not None, 5))
        ax.set(xlim=(lo, hi), ylim=(lo, hi), xlabel="θ₁ (degrees)", ylabel="θ₂ (degrees)")
    ax.set_title(f"{label}" + (f" ({X.shape[0]} points)" if X is not None else ""), fontsize=10)
    return ax


def plot_samples(manifold: "Manifold", data: ArrayLike, samples: ArrayLike,
                 path: PathLike = "samples.png", log_density: Optional[LogDensityFn] = None,
                 title: Optional[str] = None, size: Tuple[float, float] = (12, 5), dpi: int = 100,
                 view: Tuple[float, float] = (20.0, 30.0), up: str = "y",
                 coastlines: bool = True) -> PathLike:
    """Write samples (n, *pt) beside data (m, *pt) in two panels of the manifold's view, over the
    density when ``log_density`` is given (``coastlines``: on S² maps). Returns the path."""
    with _drawing(path, size, dpi) as (plt, fig):
        kind = _kind(manifold)
        for spec, X, label in (((1, 2, 1), data, "data"), ((1, 2, 2), samples, "samples")):
            _panel(fig, spec, manifold, kind, _points(X), log_density, label, view, up, coastlines)
        if title:
            fig.suptitle(title)
        _save(fig, path)
    return path


def _broken(u, v, jump):
    """Insert NaN between consecutive points whose u or v differ by more than ``jump``."""
    cut = np.flatnonzero((np.abs(np.diff(u)) > jump) | (np.abs(np.diff(v)) > jump)) + 1
    return np.insert(u, cut, np.nan), np.insert(v, cut, np.nan)


def plot_reverse_paths(manifold: "Manifold", trajectory: ArrayLike, path: PathLike = "paths.png",
                       data: Optional[ArrayLike] = None,
                       log_density: Optional[LogDensityFn] = None, title: Optional[str] = None,
                       size: Tuple[float, float] = (10, 5.4), dpi: int = 100,
                       view: Tuple[float, float] = (20.0, 30.0), up: str = "y",
                       coastlines: bool = True) -> PathLike:
    """Write the paths of a few particles of the reverse process; returns the path.

    ``trajectory``: (K + 1, n, *point_shape) iterates from T (open circles) to t_end (dots), e.g.
    the second output of ``reverse_sde(..., return_trajectory=True)``; data and the density (and
    on S² the coastlines, unless ``coastlines=False``) are drawn beneath when given. Lines break
    where a path wraps around the map.
    """
    kind = _kind(manifold)
    traj = torch.as_tensor(trajectory, dtype=torch.float64).detach().cpu()
    if traj.ndim != len(manifold.point_shape) + 2:
        point = ", ".join(map(str, manifold.point_shape))
        raise ValueError(f"trajectory must have shape (K + 1, n, {point}), found {tuple(traj.shape)}")
    with _drawing(path, size, dpi) as (plt, fig):
        ax = _panel(fig, (1, 1, 1), manifold, kind, _points(data), log_density, "reverse process",
                    view, up, coastlines)
        colours = plt.get_cmap("tab10")
        for j in range(traj.shape[1]):
            c = colours(j % 10)
            P = traj[:, j]
            if kind == "mesh":
                Q = P.numpy()[:, _UP[up]]
                ax.plot(Q[:, 0], Q[:, 1], Q[:, 2], color=c, lw=1)
                ax.scatter(*Q[0], s=25, facecolors="none", edgecolors=[c])
                ax.scatter(*Q[-1], s=25, color=[c])
                continue
            if kind == "sphere":
                u, v = _map_coords(P)
                jump = MAP_JUMP
            elif kind == "so3":
                u, v, _ = _axis_angle(P)
                jump = MAP_JUMP
            else:
                A = _torus_coords(P)
                u, v, jump = A[:, 0], A[:, 1], TORUS_JUMP
            ax.plot(*_broken(u, v, jump), color=c, lw=1)
            ax.scatter(u[:1], v[:1], s=30, facecolors="none", edgecolors=[c], zorder=3)
            ax.scatter(u[-1:], v[-1:], s=30, color=[c], zorder=3)
        ax.set_title(f"reverse process: {traj.shape[1]} particles, {traj.shape[0] - 1} steps "
                     "(circle: start at T, dot: end)" if title is None else title, fontsize=10)
        _save(fig, path)
    return path


__all__ = ["plot_sphere_density", "plot_sphere_globe", "plot_torus_density", "plot_so3",
           "plot_mesh_density", "plot_density", "plot_samples", "plot_reverse_paths",
           "sphere_density_grid", "torus_density_grid", "so3_marginals", "image_format",
           "DYNAMIC_RANGE", "IMAGE_FORMATS"]
