"""Pictures: every plot function writes a PNG of the stated size (and nothing else), the drawn
density is where the data are, and the SO(3) marginals integrate as they must."""

import math
import os

import numpy as np
import pytest
import torch
from conftest import cached_mesh

pytest.importorskip("matplotlib")

from heatscore import plotting  # noqa: E402
from heatscore.datasets import latlon_to_unit  # noqa: E402
from heatscore.estimators import DiffusionKernelSmoother  # noqa: E402
from heatscore.heat_kernels import sample_heat_kernel  # noqa: E402
from heatscore.manifolds import SO3, Sphere, Torus  # noqa: E402
from heatscore.samplers import reverse_sde, time_grid  # noqa: E402

#: Small pictures keep the tests fast: (width, height) inches at DPI -> pixels.
DPI = 40
#: Midpoint rule of so3_marginals on an (n_lat, n_lon, n_angle) grid: the uniform density's
#: marginals are exact up to the latitude sum Σ cos(lat) Δlat = 2 (1 + O(Δlat²/24)).
UNIFORM_RTOL = 2e-3
#: A fitted density's angle marginal on a coarse grid integrates to 1 within this.
MARGINAL_ATOL = 2e-2


def png_size(path):
    """(width, height) in pixels from the PNG header; asserts the signature and a non-empty file."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and os.path.getsize(path) > 1000
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def only_file(folder, name):
    """The folder holds just ``name`` (no temporary files left behind)."""
    assert sorted(os.listdir(folder)) == [name]


def cluster(m, centre, t, n, n_uniform, seed):
    """n heat-kernel draws around ``centre`` (time t) plus n_uniform uniform points."""
    x0 = centre.expand((n,) + tuple(centre.shape[1:]))
    near = sample_heat_kernel(m, x0, t, rng=seed)
    return torch.cat([near, m.random_uniform(n_uniform, rng=seed + 1)])


def densest(m, X, radius):
    """The data point with the most data within ``radius`` (geodesic)."""
    counts = (m.pairwise_dist(X, X) < radius).sum(dim=1)
    return X[int(counts.argmax())]


@pytest.fixture(scope="module")
def sphere_fit():
    m = Sphere(2)
    X = cluster(m, latlon_to_unit([[35.0, -100.0]]), 0.002, 150, 60, seed=0)
    return X, DiffusionKernelSmoother(m, time=0.005).fit(X)


@pytest.fixture(scope="module")
def torus_fit():
    m = Torus(2)
    centre = torch.tensor([[math.radians(-60.0) % (2 * math.pi), math.radians(140.0)]],
                          dtype=torch.float64)
    X = cluster(m, centre, 0.01, 150, 30, seed=2)
    return X, DiffusionKernelSmoother(m, time=0.01).fit(X)


@pytest.fixture(scope="module")
def so3_fit():
    m = SO3()
    X = cluster(m, m.random_uniform(1, rng=5), 0.1, 80, 0, seed=6)
    return X, DiffusionKernelSmoother(m, time=0.05).fit(X)


@pytest.fixture(scope="module")
def mesh_fit():
    m = cached_mesh("spot")
    X = m.random_uniform(60, rng=7)
    return X, DiffusionKernelSmoother(m, time=0.01).fit(X)


def test_sphere_map_and_globe_sizes(sphere_fit, tmp_path):
    X, est = sphere_fit
    p = plotting.plot_sphere_density(est.log_density, X, str(tmp_path / "map.png"), title="t",
                                     size=(5, 2.7), dpi=DPI, n_lat=30, n_lon=60)
    assert png_size(p) == (200, 108)
    q = plotting.plot_sphere_globe(est.log_density, X, str(tmp_path / "globe.png"), size=(4, 4),
                                   dpi=DPI, n_lat=20, n_lon=40)
    assert png_size(q) == (160, 160)
    r = plotting.plot_sphere_density(None, X, str(tmp_path / "points.png"), size=(4, 2), dpi=DPI)
    assert png_size(r) == (160, 80)
    assert sorted(os.listdir(tmp_path)) == ["globe.png", "map.png", "points.png"]


def test_sphere_map_brightest_cell_is_at_the_densest_data(sphere_fit):
    X, est = sphere_fit
    lat, lon, logp = plotting.sphere_density_grid(est.log_density, 45, 90)   # 4° cells
    i, j = np.unravel_index(np.argmax(logp), logp.shape)
    brightest = latlon_to_unit([[lat[i], lon[j]]])
    peak = densest(est.manifold, X, math.radians(5))
    assert math.degrees(float(est.manifold.dist(brightest, peak[None]))) < 8.0


def test_torus_heat_map_brightest_pixel_is_at_the_densest_data(torus_fit, tmp_path):
    import matplotlib.image

    X, est = torus_fit
    w, h = 5.0, 4.25
    path = plotting.plot_torus_density(est.log_density, None, str(tmp_path / "t.png"),
                                       size=(w, h), dpi=DPI, n_grid=72)      # 5° cells
    W, H = png_size(path)
    assert (W, H) == (200, 170)
    rgb = matplotlib.image.imread(path)[:, :, :3]
    left, bottom, width, height = plotting.TORUS_AXES
    c0, c1 = int(math.ceil(left * W)) + 1, int(math.floor((left + width) * W)) - 1
    r0, r1 = int(math.ceil((1 - bottom - height) * H)) + 1, int(math.floor((1 - bottom) * H)) - 1
    lum = rgb[r0:r1, c0:c1] @ np.array([0.2126, 0.7152, 0.0722])
    r, c = np.unravel_index(np.argmax(lum), lum.shape)
    theta1 = -180 + 360 * (c0 + c + 0.5 - left * W) / (width * W)
    theta2 = -180 + 360 * ((1 - bottom) * H - (r0 + r + 0.5)) / (height * H)
    drawn = torch.tensor([[math.radians(theta1), math.radians(theta2)]], dtype=torch.float64) % (2 * math.pi)
    peak = densest(est.manifold, X, math.radians(8))
    assert math.degrees(float(est.manifold.dist(drawn, peak[None]))) < 15.0


def test_torus_unsigned_radians_and_points_only(torus_fit, tmp_path):
    X, est = torus_fit
    p = plotting.plot_torus_density(None, X, str(tmp_path / "pts.png"), degrees=False, signed=False,
                                    size=(3, 3), dpi=DPI)
    assert png_size(p) == (120, 120)
    c, logp = plotting.torus_density_grid(est.log_density, 8, degrees=False, signed=False)
    assert c.min() > 0 and c.max() < 2 * math.pi and logp.shape == (8, 8)


def test_so3_marginals_of_the_uniform_density_are_the_closed_forms():
    log_uniform = -math.log(8 * math.pi ** 2)
    lat, lon, axis, theta, angle = plotting.so3_marginals(
        lambda R: torch.full((R.shape[0],), log_uniform, dtype=torch.float64), 24, 48, 30)
    np.testing.assert_allclose(axis, 1 / (4 * math.pi), rtol=UNIFORM_RTOL)
    np.testing.assert_allclose(angle, (1 - np.cos(theta)) / math.pi, rtol=UNIFORM_RTOL)


def test_so3_view_and_angle_marginal_of_a_fit(so3_fit, tmp_path):
    X, est = so3_fit
    _, _, axis, theta, angle = plotting.so3_marginals(est.log_density, 16, 32, 24)
    assert abs(angle.sum() * math.pi / len(theta) - 1) < MARGINAL_ATOL
    p = plotting.plot_so3(X, str(tmp_path / "so3.png"), log_density=est.log_density, title="so3",
                          size=(6, 2.5), dpi=DPI, n_lat=8, n_lon=16, n_angle=12)
    assert png_size(p) == (240, 100)
    only_file(tmp_path, "so3.png")


def test_mesh_surface_sizes(mesh_fit, tmp_path):
    X, est = mesh_fit
    p = plotting.plot_mesh_density(est.manifold, est.log_density, X, str(tmp_path / "m.png"),
                                   size=(3, 3), dpi=DPI)
    assert png_size(p) == (120, 120)
    q = plotting.plot_mesh_density(est.manifold, None, X, str(tmp_path / "plain.png"), up="z",
                                   size=(2, 3), dpi=DPI)
    assert png_size(q) == (80, 120)


@pytest.mark.parametrize("name", ["sphere", "torus", "so3", "mesh"])
def test_samples_beside_data_and_dispatch(name, request, tmp_path):
    X, est = request.getfixturevalue(f"{name}_fit")
    S = est.sample(40, rng=0)
    density = None if name == "so3" else est.log_density     # the SO(3) panel's marginal is slow
    p = plotting.plot_samples(est.manifold, X, S, str(tmp_path / "s.png"), log_density=density,
                              size=(5, 2), dpi=DPI)
    assert png_size(p) == (200, 80)
    only_file(tmp_path, "s.png")


def test_reverse_paths(sphere_fit, torus_fit, mesh_fit, tmp_path):
    _, est = sphere_fit
    _, traj = reverse_sde(est.manifold, est.grad_log_density, 3, time_grid(5.0, 0.01, 8, "geometric"),
                          rng=0, return_trajectory=True)
    assert traj.shape == (9, 3, 3)
    p = plotting.plot_reverse_paths(est.manifold, traj, str(tmp_path / "sphere.png"),
                                    data=est.X_, log_density=est.log_density, size=(5, 2.7), dpi=DPI)
    assert png_size(p) == (200, 108)
    for name, (X, e) in (("torus", torus_fit), ("mesh", mesh_fit)):
        walk = torch.stack([e.manifold.random_uniform(2, rng=k) for k in range(5)])   # (5, 2, *pt)
        q = plotting.plot_reverse_paths(e.manifold, walk, str(tmp_path / f"{name}.png"), data=X,
                                        size=(3, 3), dpi=DPI)
        assert png_size(q) == (120, 120)


def test_errors_leave_no_file(sphere_fit, tmp_path):
    X, est = sphere_fit
    with pytest.raises(ValueError, match="pictures are drawn on Sphere"):
        plotting.plot_samples(Torus(3), None, None, str(tmp_path / "a.png"))
    with pytest.raises(ValueError, match="trajectory must have shape"):
        plotting.plot_reverse_paths(est.manifold, X, str(tmp_path / "b.png"))
    with pytest.raises(ValueError, match="size and dpi must be positive"):
        plotting.plot_sphere_density(None, X, str(tmp_path / "c.png"), size=(0, 3))

    def broken(_):
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        plotting.plot_torus_density(broken, None, str(tmp_path / "d.png"), size=(2, 2), dpi=DPI)
    assert os.listdir(tmp_path) == []


def test_formats_follow_the_extension(sphere_fit, tmp_path):
    X, _ = sphere_fit
    for ext, magic in (("pdf", b"%PDF"), ("svg", b"<?xml"), ("png", b"\x89PNG")):
        p = plotting.plot_sphere_density(None, X, str(tmp_path / f"a.{ext}"), size=(4, 2), dpi=DPI)
        assert open(p, "rb").read(len(magic)) == magic
    with pytest.raises(ValueError, match=r"path: pictures are written as \.png, \.pdf or \.svg"):
        plotting.plot_sphere_density(None, X, str(tmp_path / "a.jpg"), size=(4, 2), dpi=DPI)
    assert sorted(os.listdir(tmp_path)) == ["a.pdf", "a.png", "a.svg"]


def test_bundled_coastlines():
    from heatscore.datasets._coastlines import load_coastlines

    lines = load_coastlines()
    assert len(lines) > 200 and sum(len(x) for x in lines) > 4000
    P = np.concatenate(lines)
    assert np.abs(P[:, 0]).max() <= 180 and -90 < P[:, 1].min() and P[:, 1].max() < 84
    for x in lines:                              # no antimeridian or south-pole cut is drawn
        at_cut = (np.abs(x[:, 0]) == 180) | (x[:, 1] == -90)
        assert not (at_cut[1:] & at_cut[:-1]).any()
    assert not lines[0].flags.writeable


def test_the_coastline_script_drops_shared_edges_and_cuts():
    import importlib.util

    path = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "make_coastlines.py")
    spec = importlib.util.spec_from_file_location("make_coastlines", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    west = np.array([[170.0, 0], [175, 0], [175, 5], [170, 5], [170, 0]])       # shares x = 175
    east = np.array([[175.0, 0], [180, 0], [180, 5], [175, 5], [175, 0]])       # cut at x = 180
    lines = script.coastlines([west, east])
    edges = {script._key(p, q) for line in lines for p, q in zip(line[:-1], line[1:])}
    assert script._key([175, 0], [175, 5]) not in edges and script._key([180, 0], [180, 5]) not in edges
    assert len(edges) == 5 and len(lines) == 3          # west's C shape, east's two stubs


def test_maps_draw_coastlines_unless_told_not_to(sphere_fit, tmp_path):
    import matplotlib.image

    X, est = sphere_fit
    kw = {"size": (5, 2.7), "dpi": DPI, "n_lat": 20, "n_lon": 40}
    on = plotting.plot_sphere_density(est.log_density, None, str(tmp_path / "on.png"), **kw)
    off = plotting.plot_sphere_density(est.log_density, None, str(tmp_path / "off.png"),
                                       coastlines=False, **kw)
    changed = np.abs(matplotlib.image.imread(on) - matplotlib.image.imread(off)).max(axis=2) > 0.05
    assert 100 < changed.sum() < 0.2 * changed.size           # thin lines, not a different map
    p = plotting.plot_sphere_globe(None, X, str(tmp_path / "g.png"), size=(3, 3), dpi=DPI, n_lat=10,
                                   n_lon=20, coastlines=True)
    assert png_size(p) == (120, 120)


def test_map_latitude_labels_stay_clear_of_the_title():
    plt = plotting._require_matplotlib()
    fig = plt.figure()
    try:
        ax = plotting._mollweide(fig, 111)
        assert np.degrees(np.abs(ax.get_yticks())).max() <= 60 + 1e-9
    finally:
        plt.close(fig)


def test_data_dots_show_over_the_density(sphere_fit, tmp_path):
    """Over the brightest colours of the map the dots still draw a cyan face and a dark rim."""
    import matplotlib.colors
    import matplotlib.image

    X, est = sphere_fit
    kw = {"n_lat": 30, "n_lon": 60, "coastlines": False}          # the default size and dpi
    before, after = [matplotlib.image.imread(plotting.plot_sphere_density(
        est.log_density, data, str(tmp_path / f"{k}.png"), **kw))[:, :, :3]
        for k, data in enumerate((None, X))]
    drawn = np.abs(after - before).max(axis=2) > 0.1
    face = np.array(matplotlib.colors.to_rgb(plotting.DOTS_ON_DENSITY["c"]))
    assert (np.abs(after[drawn] - face).max(axis=1) < 0.15).sum() > 20
    lum = np.array([0.2126, 0.7152, 0.0722])
    bright = before[drawn] @ lum > 0.7                              # the map's lightest colours
    assert (after[drawn][bright] @ lum < 0.4).sum() > 20            # there the rims are dark
