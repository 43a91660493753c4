"""Pictures (matplotlib, the ``plot`` extra): densities on S² as equal-area world maps.

``plot_sphere_density(log_density, data, path)`` draws log p on a Mollweide map (equal-area, so
the colour of a region is comparable everywhere) with the data points over it and writes a PNG.
"""

import os
import tempfile

import numpy as np
import torch

from heatscore.datasets import latlon_to_unit, unit_to_latlon

#: Colour range of density maps, in nats below the maximum.
DYNAMIC_RANGE = 12.0


def _require_matplotlib():
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("plotting needs matplotlib: pip install 'heatscore[plot]'") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def sphere_density_grid(log_density, n_lat=180, n_lon=360):
    """(lat (n_lat,), lon (n_lon,), log p (n_lat, n_lon)) of a callable X (n, 3) -> log p (n,)."""
    lat = np.linspace(-90 + 90 / n_lat, 90 - 90 / n_lat, n_lat)
    lon = np.linspace(-180 + 180 / n_lon, 180 - 180 / n_lon, n_lon)
    LA, LO = np.meshgrid(lat, lon, indexing="ij")
    X = latlon_to_unit(np.stack([LA.ravel(), LO.ravel()], axis=1))
    with torch.no_grad():
        logp = log_density(X).reshape(n_lat, n_lon).cpu().numpy()
    return lat, lon, logp


def plot_sphere_density(log_density, data=None, path="density.png", title=None, size=(10, 5.4),
                        dpi=100, n_lat=180, n_lon=360):
    """Write a Mollweide PNG of log p with optional data points (n, 3); returns the path.

    ``log_density``: a callable (n, 3) -> (n,) log-density, e.g. ``est.log_density``.
    The file is written to a temporary name and renamed (no half-written file on failure).
    """
    plt = _require_matplotlib()
    lat, lon, logp = sphere_density_grid(log_density, n_lat, n_lon)
    fig = plt.figure(figsize=size, dpi=dpi)
    ax = fig.add_subplot(111, projection="mollweide")
    # show the top DYNAMIC_RANGE nats: far from the data log p falls by hundreds of nats
    lo = max(np.quantile(logp, 0.02), logp.max() - DYNAMIC_RANGE)
    mesh = ax.pcolormesh(np.radians(lon), np.radians(lat), np.clip(logp, lo, None), shading="auto",
                         cmap="magma")
    fig.colorbar(mesh, ax=ax, orientation="horizontal", fraction=0.05, pad=0.06,
                 label="log density (nats, w.r.t. area)")
    if data is not None:
        ll = unit_to_latlon(torch.as_tensor(data, dtype=torch.float64)).numpy()
        ax.scatter(np.radians(ll[:, 1]), np.radians(ll[:, 0]), s=1.5, c="cyan", alpha=0.6,
                   linewidths=0)
    ax.grid(True, alpha=0.3)
    ax.set_xticklabels([])
    if title:
        ax.set_title(title)
    _save(fig, path, plt)
    return path


def _save(fig, path, plt):
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


__all__ = ["plot_sphere_density", "sphere_density_grid"]
