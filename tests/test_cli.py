"""The ``heatscore`` command: every subcommand through the installed console script (run in
subprocesses, several at a time), the data formats, projection, and one-line errors that leave
no output (in-process through ``main``, which the script calls)."""

import math
import os
import pty
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import cached_mesh

from heatscore._cli_formats import PROJECT_RTOL, read_table
from heatscore.cli import main
from heatscore.datasets import earth_path, latlon_to_unit, load_earth_latlon, spot_path
from heatscore.estimators import DiffusionKernelSmoother
from heatscore.manifolds import SO3, Sphere, Torus
from heatscore.manifolds.so3 import quaternion_from_rotation

SCRIPT = os.path.join(os.path.dirname(sys.executable), "heatscore")
#: Subprocesses started at once (each spends ~2 s importing torch).
PARALLEL = 4
#: The CSV writer keeps 12 significant digits.
CSV_ATOL = 1e-9
#: Fixed, small diffusion times keep the fits instant.
SPHERE_TIME, MESH_TIME = "0.03", "0.01"


def run_all(commands, cwd, tty_stderr=()):
    """Run the console script with each argument list (PARALLEL at a time); returns a list of
    (exit status, stdout, stderr). Commands whose index is in ``tty_stderr`` get a terminal
    (a pseudo-tty) as stderr."""
    assert os.path.exists(SCRIPT), f"the console script is not installed at {SCRIPT}"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    results, running = [None] * len(commands), []

    def finish(item):
        i, proc, master = item
        out, err = proc.communicate(timeout=300)
        if master is not None:
            chunks = []
            while True:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            os.close(master)
            err = b"".join(chunks).decode()
        results[i] = (proc.returncode, out.decode(), err.decode() if isinstance(err, bytes) else err)

    for i, args in enumerate(commands):
        if len(running) == PARALLEL:
            finish(running.pop(0))
        master = None
        if i in tty_stderr:
            master, slave = pty.openpty()
            proc = subprocess.Popen([SCRIPT, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=slave)
            os.close(slave)
        else:
            proc = subprocess.Popen([SCRIPT, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE)
        running.append((i, proc, master))
    for item in running:
        finish(item)
    return results


def read_csv(path):
    table = read_table(str(path))
    return table.header, table.values()


@pytest.fixture(scope="module")
def spot_csv(tmp_path_factory):
    """80 points near the Spot mesh, offset off the surface and written with 4 decimals."""
    folder = tmp_path_factory.mktemp("spot")
    m = cached_mesh("spot")
    X = m.random_uniform(80, rng=0)
    X = X + 1e-3 * torch.randn(80, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    path = folder / "spot.csv"
    np.savetxt(path, X.numpy(), fmt="%.4f", delimiter=",", header="x,y,z", comments="# near Spot\n")
    return path


@pytest.fixture(scope="module")
def script_runs(tmp_path_factory, spot_csv):
    """Every subcommand through the console script, in two parallel waves."""
    cwd = tmp_path_factory.mktemp("cli")
    volcano, mesh = earth_path("volcano"), f"mesh:{spot_path()}"
    (cwd / "bad.csv").write_text("lat,lon\n10,20\n95,3\n")
    first = {
        "fit": ["fit", volcano, "--manifold", "sphere", "--time", SPHERE_TIME, "-o", "v.npz"],
        "fit_mesh": ["fit", str(spot_csv), "--manifold", mesh, "--time", MESH_TIME, "-o", "m.npz"],
        "bench": ["bench", "earth", "--datasets", "volcano", "--time", "auto"],
        "bad_lat": ["fit", "bad.csv", "--manifold", "sphere", "-o", "bad.npz"],
    }
    second = {
        "exact": ["sample", "v.npz", "-n", "50", "--seed", "3", "-o", "exact.csv"],
        "reverse": ["sample", "v.npz", "-n", "30", "--sampler", "reverse", "--steps", "20",
                    "--seed", "0", "-o", "reverse.csv"],
        "evaluate": ["evaluate", "v.npz", volcano, "--per-point", "logp.csv"],
        "plot": ["plot", "v.npz", "-o", "map.png", "--size", "400x216"],
    }
    out = dict(zip(first, run_all(list(first.values()), cwd)))
    order = list(second)
    out.update(zip(order, run_all(list(second.values()), cwd, tty_stderr={order.index("reverse")})))
    return cwd, out


def ok(result):
    status, stdout, stderr = result
    assert status == 0, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr
    return stdout, stderr


def one_line_error(result, *fragments):
    status, _, stderr = result
    assert status == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("heatscore ") and ": error: " in lines[0]
    for f in fragments:
        assert f in lines[0], lines[0]


def test_fit_sample_evaluate_on_the_sphere(script_runs, capsys, monkeypatch):
    cwd, r = script_runs
    monkeypatch.chdir(cwd)
    r["ode"] = call(capsys, "sample", "v.npz", "-n", "30", "--sampler", "ode", "--steps", "10",
                    "--seed", "0", "-o", "ode.csv")
    stdout, stderr = ok(r["fit"])
    assert "t* = 0.03" in stdout and stderr == ""        # lat/lon needs no projection
    est = DiffusionKernelSmoother.load(str(cwd / "v.npz"))
    assert isinstance(est.manifold, Sphere) and est.time_ == float(SPHERE_TIME)
    torch.testing.assert_close(est.X_, latlon_to_unit(load_earth_latlon("volcano")), rtol=0, atol=1e-15)

    _, stderr = ok(r["exact"])
    assert stderr == ""                                  # no bar when piped
    header, ll = read_csv(cwd / "exact.csv")
    assert header == ("Latitude", "Longitude")           # the input's header
    expected = est.sample(50, rng=3)                     # one chunk: the same stream
    torch.testing.assert_close(latlon_to_unit(ll), expected, rtol=0, atol=CSV_ATOL)

    for name in ("reverse", "ode"):
        header, ll = read_csv(cwd / f"{name}.csv")
        assert header == ("Latitude", "Longitude") and ll.shape == (30, 2)
        assert np.all(np.abs(ll[:, 0]) <= 90) and np.all(np.abs(ll[:, 1]) <= 180)
    _, bar = ok(r["reverse"])
    assert "reverse_sde [" in bar and "20/20" in bar     # a terminal gets the bar
    assert ok(r["ode"])[1] == ""

    stdout, _ = ok(r["evaluate"])
    X = latlon_to_unit(load_earth_latlon("volcano"))
    mean = float(stdout.split("mean log-likelihood:")[1].split()[0])
    assert abs(mean - est.score(X)) < 1e-6
    header, logp = read_csv(cwd / "logp.csv")
    assert header == ("log_density",) and logp.shape == (X.shape[0], 1)
    np.testing.assert_allclose(logp[:, 0], est.score_samples(X).numpy(), rtol=1e-10, atol=CSV_ATOL)


def test_plot_bench_and_mesh(script_runs, capsys, monkeypatch):
    import matplotlib.image

    cwd, r = script_runs
    monkeypatch.chdir(cwd)
    r["plot_mesh"] = call(capsys, "plot", "m.npz", "-o", "mesh.png", "--size", "240x200")
    r["sample_mesh"] = call(capsys, "sample", "m.npz", "-n", "40", "--seed", "1", "-o", "mesh_samples.csv")
    assert ok(r["plot"])[0].strip() == "wrote map.png"
    assert matplotlib.image.imread(cwd / "map.png").shape == (216, 400, 4)
    ok(r["plot_mesh"])
    assert matplotlib.image.imread(cwd / "mesh.png").shape == (200, 240, 4)

    for view, extra, shape in (("samples", ["-n", "60"], (100, 300, 4)),
                               ("paths", ["-n", "3", "--steps", "8"], (100, 300, 4)),
                               ("globe", [], (200, 200, 4))):
        size = "200x200" if view == "globe" else "300x100"
        ok(call(capsys, "plot", "v.npz", "--view", view, *extra, "--seed", "0", "--size", size,
                "-o", f"{view}.png"))
        assert matplotlib.image.imread(cwd / f"{view}.png").shape == shape
    volcano = earth_path("volcano")
    ok(call(capsys, "plot", volcano, "--manifold", "sphere", "--size", "300x160", "-o", "data.png"))
    assert matplotlib.image.imread(cwd / "data.png").shape == (160, 300, 4)
    one_line_error(call(capsys, "plot", volcano, "--manifold", "sphere", "--view", "paths", "-o", "p.png"),
                   "--view paths needs a model file")
    one_line_error(call(capsys, "plot", "m.npz", "--view", "globe", "-o", "g.png"), "--view globe draws S²")

    stdout, _ = ok(r["bench"])
    assert "| volcano | 1e-08 |" in stdout and "RSGM" in stdout
    stdout, _ = ok(call(capsys, "bench", "mesh"))              # quick: 1 subdivision, k = 10
    row = [line for line in stdout.splitlines() if line.startswith("| 10 |")][0]
    gap = float(row.split("|")[5].split("±")[0])
    assert 0 <= gap < 0.1                                       # nats above the true density

    stdout, stderr = ok(r["fit_mesh"])
    assert f"t* = {MESH_TIME} mesh units²" in stdout
    note = stderr.strip().splitlines()
    assert len(note) == 1 and "largest deviation" in note[0]
    deviation = float(note[0].split("largest deviation ")[1].split()[0])
    assert 1e-4 < deviation < PROJECT_RTOL                 # offsets of 1e-3 on a 2.6 diagonal
    ok(r["sample_mesh"])
    header, X = read_csv(cwd / "mesh_samples.csv")
    assert header == ("x", "y", "z") and X.shape == (40, 3)
    assert bool(cached_mesh("spot").belongs(torch.as_tensor(X), atol=1e-8).all())
    one_line_error(call(capsys, "sample", "m.npz", "-n", "3", "--sampler", "ode", "-o", "x.csv"),
                   "--sampler ode is not available on a mesh")
    assert not os.path.exists(cwd / "x.csv")


def test_bad_files_through_the_script(script_runs):
    cwd, r = script_runs
    one_line_error(r["bad_lat"], "bad.csv line 3", "latitude 95")
    assert not os.path.exists(cwd / "bad.npz")
    assert [f for f in os.listdir(cwd) if f.endswith(".tmp")] == []


# --- in-process: formats and errors -------------------------------------------------------------
def call(capsys, *argv):
    """(exit status, stdout, stderr) of ``main(argv)``."""
    try:
        status = main(list(argv))
    except SystemExit as exc:
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


BAD_SPHERE_FILES = {
    "missing column": ("lat,lon\n1,2\n3\n", "line 3: expected 2 fields, found 1"),
    "missing header column": ("lat,depth\n1,2\n", "names no longitude"),
    "latitude out of range": ("# c\n1,2\n-91,2\n", "line 3: latitude -91 is outside [-90, 90]"),
    "nan": ("lat,lon\n1,2\nnan,2\n", "line 3: field 1 ('nan') is not finite"),
    "text in a number": ("lat,lon\n1,2\n4,east\n", "line 3: field 2 ('east') is not a number"),
    "empty file": ("", "is empty"),
    "header only": ("# only a header\nlat,lon\n", "has no data rows"),
    "far off the sphere": ("x,y,z\n0,0,1\n0,1.5,0\n", "line 3: point is off Sphere(2) by 5.00e-01"),
}


@pytest.mark.parametrize("name", list(BAD_SPHERE_FILES))
def test_bad_sphere_files_give_one_line_and_no_output(name, capsys, tmp_path):
    text, fragment = BAD_SPHERE_FILES[name]
    data = tmp_path / "data.csv"
    data.write_text(text)
    status, out, err = call(capsys, "fit", str(data), "--manifold", "sphere", "--time", "0.1",
                            "-o", str(tmp_path / "model.npz"))
    assert status == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("heatscore fit: error: data.csv")
    assert fragment in err
    assert sorted(os.listdir(tmp_path)) == ["data.csv"]


def test_other_bad_inputs(capsys, tmp_path, monkeypatch):
    (tmp_path / "a.csv").write_text("phi,psi\n10,20\n")
    (tmp_path / "q.csv").write_text("w,x,y,z\n1,0,0,0\n")
    (tmp_path / "five.csv").write_text("1,0,0,0,0\n")
    (tmp_path / "mesh.csv").write_text("x,y,z\n0,0,0\n")
    (tmp_path / "nine.csv").write_text("1,0,0,0,0,0,0,0,0\n")
    # potpourri3d reads "nan" as another number (OBJ: 4e-323, PLY: 0): found in the text
    tetra = ["0 0 0", "1 0 0", "0 1 0", "nan 0 1"], ["0 1 2", "0 1 3", "1 2 3", "0 2 3"]
    (tmp_path / "nan.obj").write_text("".join(f"v {v}\n" for v in tetra[0]) + "".join(
        "f " + " ".join(str(int(i) + 1) for i in f.split()) + "\n" for f in tetra[1]))
    (tmp_path / "nan.ply").write_text(
        "ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\n"
        "property float z\nelement face 4\nproperty list uchar int vertex_indices\nend_header\n"
        + "".join(f"{v}\n" for v in tetra[0]) + "".join(f"3 {f}\n" for f in tetra[1]))
    out = str(tmp_path / "out.npz")
    cases = [
        (["fit", "a.csv", "--manifold", "torus"], "need --angles deg or --angles rad"),
        (["fit", "a.csv", "--manifold", "torus", "--angles", "rad"],
         "a.csv line 2: angle 10 is outside [-3.14159, 6.28319] radians (degrees? use --angles deg)"),
        (["fit", "a.csv", "--manifold", "torus", "--angles", "deg", "--angle-range", "unsigned",
          "--time", "0.1"], None),
        (["fit", "q.csv", "--manifold", "so3"], "need --quat-order wxyz or --quat-order xyzw"),
        (["fit", "q.csv", "--manifold", "so3", "--quat-order", "xyzw"], "the header says wxyz"),
        (["fit", "five.csv", "--manifold", "so3"], "expected 9 columns"),
        (["fit", "mesh.csv", "--manifold", "mesh:missing.obj"], "mesh:missing.obj: no such mesh file"),
        (["fit", "missing.csv", "--manifold", "sphere"], "missing.csv: no such file"),
        (["fit", "a.csv", "--manifold", "cube"],
         "--manifold must be sphere, sphere:D (D >= 2), torus, so3 or mesh:PATH"),
        (["fit", str(tmp_path), "--manifold", "sphere"], f"{tmp_path}: is a folder, expected a CSV file"),
        (["fit", "nine.csv", "--manifold", "sphere"],
         "nine.csv has 9 columns, which do not make points on S²: it takes 2 (latitude, longitude) "
         "or 3 (x, y, z); for 9 coordinates of points on S^8, pass --manifold sphere:8"),
        (["fit", "mesh.csv", "--manifold", "mesh:nan.obj"],
         "mesh:nan.obj line 4: a vertex coordinate is not finite ('v nan 0 1')"),
        (["fit", "mesh.csv", "--manifold", "mesh:nan.ply"],
         "mesh:nan.ply line 13: a vertex coordinate is not finite ('nan 0 1')"),
        (["fit", "mesh.csv", "--manifold", f"mesh:{tmp_path}"], "is a folder, expected a mesh file"),
        (["fit", "a.csv", "--manifold", "sphere", "--levels", "3"], "needs --shrinkage"),
    ]
    monkeypatch.chdir(tmp_path)
    for argv, fragment in cases:
        status, _, err = call(capsys, *argv, "-o", out)
        if fragment is None:                      # a valid torus fit, removed for the next case
            assert status == 0, err
            os.remove(out)
            continue
        assert status == 1 and err.count("\n") == 1 and fragment in err, (argv, err)
        assert not os.path.exists(out)
    status, _, err = call(capsys, "fit", "a.csv", "--manifold", "sphere", "-o", "no/dir/m.npz")
    assert status == 1 and "the folder" in err and "does not exist" in err
    status, _, err = call(capsys, "sample", "a.csv", "-n", "3", "-o", "s.csv")
    assert status == 1 and "not a heatscore model" in err
    status, _, err = call(capsys, "fit", "a.csv", "--manifold", "sphere", "--time", "-1", "-o", out)
    assert status == 2 and err.count("\n") == 1 and "argument --time" in err
    status, _, err = call(capsys, "sample", "a.csv", "-n", "3", "--t-end", "-1", "-o", "s.csv")
    assert status == 2 and "argument --t-end: expected a number >= 0" in err
    status, _, err = call(capsys, "fit", "a.csv", "--manifold", "sphere", "--columns", "0", "-o", out)
    assert status == 2 and "argument --columns" in err


def test_torus_round_trip_keeps_units_range_and_header(capsys, tmp_path):
    gen = np.random.default_rng(0)
    A = np.stack([gen.normal(-70, 15, 60), gen.normal(150, 20, 60)], axis=1)
    A = np.round((A + 180) % 360 - 180, 2)                       # (−180, 180], as written
    np.savetxt(tmp_path / "rama.csv", A, fmt="%.2f", delimiter=",", header="phi,psi", comments="")
    model, samples = str(tmp_path / "t.npz"), str(tmp_path / "s.csv")
    assert call(capsys, "fit", str(tmp_path / "rama.csv"), "--manifold", "torus", "--angles", "deg",
                "--time", "0.05", "-o", model)[0] == 0
    assert call(capsys, "sample", model, "-n", "200", "--seed", "0", "-o", samples)[0] == 0
    header, S = read_csv(samples)
    assert header == ("phi", "psi") and S.shape == (200, 2)
    assert S.min() > -180 and S.max() <= 180 and S.min() < 0
    est = DiffusionKernelSmoother.load(model)
    assert isinstance(est.manifold, Torus) and est.manifold.dim == 2
    torch.testing.assert_close(est.X_, torch.as_tensor(np.radians(A)) % (2 * math.pi), rtol=0, atol=1e-12)
    # radians in [0, 2π) give samples in [0, 2π); evaluation reads the model's units
    np.savetxt(tmp_path / "rad.csv", np.radians(A) % (2 * math.pi), fmt="%.9f", delimiter=",")
    assert call(capsys, "fit", str(tmp_path / "rad.csv"), "--manifold", "torus", "--angles", "rad",
                "--time", "0.05", "-o", model)[0] == 0
    assert call(capsys, "sample", model, "-n", "100", "--seed", "0", "-o", samples)[0] == 0
    header, S = read_csv(samples)
    assert header is None and S.min() >= 0 and S.max() < 2 * math.pi
    status, out, _ = call(capsys, "evaluate", model, str(tmp_path / "rad.csv"))
    est = DiffusionKernelSmoother.load(model)
    assert status == 0 and abs(float(out.split()[2]) - est.score(est.X_)) < 1e-5


def test_so3_quaternions_and_matrices(capsys, tmp_path):
    m = SO3()
    R = m.random_uniform(40, rng=3)
    q = quaternion_from_rotation(R).numpy()
    np.savetxt(tmp_path / "q.csv", q[:, [1, 2, 3, 0]], fmt="%.5f", delimiter=",", header="qx,qy,qz,qw",
               comments="")
    model, samples = str(tmp_path / "q.npz"), str(tmp_path / "s.csv")
    status, _, err = call(capsys, "fit", str(tmp_path / "q.csv"), "--manifold", "so3", "--quat-order",
                          "xyzw", "--time", "0.1", "-o", model)
    assert status == 0 and "largest deviation" in err and "| |q| - 1 |" in err
    est = DiffusionKernelSmoother.load(model)
    assert float((est.X_ - R).abs().max()) < 1e-4                # 5 decimals, then projected
    assert call(capsys, "sample", model, "-n", "30", "--seed", "0", "-o", samples)[0] == 0
    header, S = read_csv(samples)
    assert header == ("qx", "qy", "qz", "qw") and S.shape == (30, 4)
    np.testing.assert_allclose(np.linalg.norm(S, axis=1), 1.0, atol=CSV_ATOL)
    assert np.all(S[:, 3] >= 0)                                    # w ≥ 0, last in xyzw
    # 3×3 matrices (no header), rounded to 4 decimals: projected to the nearest rotation
    np.savetxt(tmp_path / "r.csv", R.reshape(-1, 9).numpy(), fmt="%.4f", delimiter=",")
    status, _, err = call(capsys, "fit", str(tmp_path / "r.csv"), "--manifold", "so3", "--time", "0.1",
                          "-o", model)
    deviation = float(err.split("largest deviation ")[1].split()[0])
    assert status == 0 and 1e-6 < deviation < 1e-3
    assert call(capsys, "sample", model, "-n", "5", "--seed", "0", "-o", samples)[0] == 0
    header, S = read_csv(samples)
    assert header is None and S.shape == (5, 9)
    assert bool(m.belongs(torch.as_tensor(S).reshape(-1, 3, 3), atol=1e-9).all())


def test_sphere_xyz_projection_and_python_saved_models(capsys, tmp_path):
    X = Sphere(2).random_uniform(50, rng=4)
    np.savetxt(tmp_path / "xyz.csv", X.numpy(), fmt="%.4f", delimiter=",")
    model, samples = str(tmp_path / "x.npz"), str(tmp_path / "s.csv")
    status, _, err = call(capsys, "fit", str(tmp_path / "xyz.csv"), "--manifold", "sphere", "--time",
                          "0.1", "-o", model)
    deviation = float(err.split("largest deviation ")[1].split()[0])
    assert status == 0 and 1e-6 < deviation < 2e-4
    est = DiffusionKernelSmoother.load(model)
    torch.testing.assert_close(est.X_.norm(dim=1), torch.ones(50, dtype=torch.float64))
    # a model saved from Python (no data format): samples come out as x, y, z
    est.save(str(tmp_path / "py.npz"))
    assert call(capsys, "sample", str(tmp_path / "py.npz"), "-n", "7", "-o", samples)[0] == 0
    header, S = read_csv(samples)
    assert header == ("x", "y", "z")
    np.testing.assert_allclose(np.linalg.norm(S, axis=1), 1.0, atol=CSV_ATOL)


def test_a_failed_command_keeps_an_existing_output(capsys, tmp_path):
    (tmp_path / "bad.csv").write_text("lat,lon\n1,2\n3,x\n")
    out = tmp_path / "model.npz"
    out.write_bytes(b"old")
    status, _, _ = call(capsys, "fit", str(tmp_path / "bad.csv"), "--manifold", "sphere", "-o", str(out))
    assert status == 1 and out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["bad.csv", "model.npz"]


# --- issue 18: what a new user hits first --------------------------------------------------------
def test_radians_are_noted_and_read_with_angles_rad(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    gen = np.random.default_rng(0)
    LL = np.stack([gen.uniform(-60, 60, 50), gen.uniform(-170, 170, 50)], axis=1)
    np.savetxt("rad.csv", np.radians(LL), fmt="%.9f", delimiter=",", header="lat,lon", comments="")
    status, _, err = call(capsys, "fit", "rad.csv", "--manifold", "sphere", "--time", "0.1",
                          "-o", "deg.npz")
    assert status == 0 and err.count("\n") == 1
    assert "as radians would be" in err and "pass --angles rad" in err
    assert call(capsys, "fit", "rad.csv", "--manifold", "sphere", "--angles", "deg", "--time",
                "0.1", "-o", "deg.npz")[2] == ""                         # asked for: no note
    status, _, err = call(capsys, "fit", "rad.csv", "--manifold", "sphere", "--angles", "rad",
                          "--time", "0.1", "-o", "rad.npz")
    assert status == 0 and err == ""
    est = DiffusionKernelSmoother.load("rad.npz")
    torch.testing.assert_close(est.X_, latlon_to_unit(LL), rtol=0, atol=1e-8)
    assert call(capsys, "sample", "rad.npz", "-n", "20", "--seed", "0", "-o", "s.csv")[0] == 0
    header, S = read_csv(tmp_path / "s.csv")                             # written back in radians
    assert header == ("lat", "lon") and np.abs(S[:, 0]).max() <= math.pi / 2
    torch.testing.assert_close(latlon_to_unit(np.degrees(S)), est.sample(20, rng=0), rtol=0, atol=1e-9)
    status, out, err = call(capsys, "evaluate", "rad.npz", "rad.csv")    # the model's unit
    assert status == 0 and err == "" and abs(float(out.split()[2]) - est.score(est.X_)) < 1e-5
    assert call(capsys, "plot", "rad.csv", "--manifold", "sphere", "--angles", "rad", "--size",
                "200x108", "-o", "p.png")[0] == 0
    np.savetxt("deg.csv", LL, fmt="%.4f", delimiter=",", header="lat,lon", comments="")
    status, _, err = call(capsys, "evaluate", "rad.npz", "deg.csv")
    assert status == 1 and "latitude" in err and "radians (degrees? use --angles deg)" in err


CITIES = "name,lat,lng\nTokyo,35.6897,139.6922\nJakarta,-6.175,106.8275\nDelhi,28.61,77.23\n" \
         "Lima,-12.06,-77.0375\nLagos,6.455,3.3841\n"


def test_text_columns_are_left_out_and_columns_chosen(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cities.csv").write_text(CITIES)
    status, out, err = call(capsys, "fit", "cities.csv", "--manifold", "sphere", "--time", "0.1",
                            "-o", "c.npz")
    assert status == 0 and "fitted Sphere(2) to 5 points" in out
    assert err.strip() == ("heatscore: cities.csv: used the columns lat, lng (left out: name; "
                           "choose others with --columns)")
    X = DiffusionKernelSmoother.load("c.npz").X_
    for columns in ("2,3", "lng,lat", "LAT,LNG"):                      # numbers or names, any case
        assert call(capsys, "fit", "cities.csv", "--manifold", "sphere", "--columns", columns,
                    "--time", "0.1", "-o", "k.npz")[2] == ""
        torch.testing.assert_close(DiffusionKernelSmoother.load("k.npz").X_, X, rtol=0, atol=0)
    # the chosen columns are read on evaluate and plot too; a torus takes any two columns
    assert call(capsys, "evaluate", "c.npz", "cities.csv", "--columns", "2,3")[0] == 0
    assert call(capsys, "plot", "cities.csv", "--manifold", "sphere", "--columns", "lat,lng",
                "--size", "200x108", "-o", "c.png")[0] == 0
    assert call(capsys, "fit", "cities.csv", "--manifold", "torus", "--angles", "deg", "--columns",
                "3,2", "--time", "0.1", "-o", "t.npz")[0] == 0
    (tmp_path / "bad.csv").write_text(CITIES + "Paris,48.85,east\n")
    cases = [
        (["fit", "bad.csv", "--manifold", "sphere"], "bad.csv line 7: field 3 ('east') is not a number"),
        (["fit", "cities.csv", "--manifold", "torus", "--angles", "deg"],
         "cities.csv line 2: field 1 ('Tokyo') is not a number (choose the columns with --columns)"),
        (["fit", "cities.csv", "--manifold", "sphere", "--columns", "1,2"],
         "cities.csv line 2: field 1 ('Tokyo') is not a number"),
        (["fit", "cities.csv", "--manifold", "sphere", "--columns", "lat,height"],
         "--columns height: cities.csv has no such column; its header is name, lat, lng"),
        (["fit", "cities.csv", "--manifold", "sphere", "--columns", "2,4"],
         "--columns 4: cities.csv has 3 columns"),
    ]
    for argv, fragment in cases:
        status, _, err = call(capsys, *argv, "-o", "x.npz")
        assert status == 1 and err.count("\n") == 1 and fragment in err, (argv, err)
    assert not os.path.exists(tmp_path / "x.npz")


def test_sphere_d_reads_d_plus_one_coordinates(tmp_path):
    from heatscore._cli_formats import read_points

    X = Sphere(8).random_uniform(30, rng=0)
    np.savetxt(tmp_path / "s8.csv", X.numpy(), fmt="%.10f", delimiter=",")
    m, Y, fmt, notes = read_points(str(tmp_path / "s8.csv"), "sphere", manifold=Sphere(8))
    assert m == Sphere(8) and fmt.kind == "xyz" and "largest deviation" in notes[0]
    torch.testing.assert_close(Y, X, rtol=0, atol=1e-9)


def test_library_warnings_become_one_line_notes(capsys, tmp_path, monkeypatch):
    import warnings

    from heatscore._errors import DegenerateDataWarning, TruncationWarning

    fit = DiffusionKernelSmoother.fit

    def stub(self, X, *args, **kwargs):                # the smoother's warnings, as it will raise them
        for _ in range(2):
            warnings.warn("all 50 points are identical:\nfitted at t_min", DegenerateDataWarning)
        warnings.warn("a truncated series", TruncationWarning)
        warnings.warn("another library's warning", UserWarning)
        return fit(self, X, *args, **kwargs)

    monkeypatch.setattr(DiffusionKernelSmoother, "fit", stub)
    (tmp_path / "same.csv").write_text("lat,lon\n" + "10,20\n" * 50)
    status, out, err = call(capsys, "fit", str(tmp_path / "same.csv"), "--manifold", "sphere",
                            "--time", "0.1", "-o", str(tmp_path / "m.npz"))
    assert status == 0 and "fitted" in out
    assert err.splitlines() == ["heatscore: note: all 50 points are identical: fitted at t_min",
                                "heatscore: note: a truncated series"]


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """A sphere model and a mesh model, as saved by the command line and by Python."""
    folder = tmp_path_factory.mktemp("models")
    m = Sphere(2)
    DiffusionKernelSmoother(m, time=0.1).fit(m.random_uniform(40, rng=0)).save(folder / "s.npz")
    mesh = cached_mesh("spot")
    DiffusionKernelSmoother(mesh, time=0.01).fit(mesh.random_uniform(30, rng=0)).save(folder / "m.npz")
    return folder


def _edited(src, dst, **changes):
    """Write ``dst``: the model ``src`` with arrays replaced (a callable of the old array) or
    removed (None)."""
    with np.load(src, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    for name, change in changes.items():
        if change is None:
            del arrays[name]
        else:
            arrays[name] = change(arrays[name])
    np.savez(dst, **arrays)
    return str(dst)


def _nan_row(a):
    a = a.copy()
    a[3] = np.nan
    return a


def _meta(**entries):
    def edit(raw):
        import json

        meta = dict(json.loads(raw.tobytes().decode()), **entries)
        return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return edit


BAD_MODELS = {
    "nan row": ("s", {"X": _nan_row}, "array 'X' holds 3 NaN/inf entries"),
    "float32 X": ("s", {"X": lambda x: x.astype(np.float32)},
                  "array 'sample_weight' has dtype float64, expected float32"),
    "wrong shape": ("s", {"X": lambda x: x[:, :2]}, "array 'X' must be points of shape (n, 3)"),
    "off the sphere": ("s", {"X": lambda x: 2 * x}, "array 'X' has 40 of 40 points off Sphere(2)"),
    "tag disagrees": ("s", {"meta": _meta(manifold={"kind": "SO3"})},
                      "array 'X' must be points of shape (n, 3, 3)"),
    "weights": ("s", {"sample_weight": lambda w: 2 * w}, "array 'sample_weight' must be non-negative "
                                                         "weights summing to 1"),
    "times": ("s", {"times": lambda t: -t}, "array 'times' must be positive diffusion times"),
    "mixture": ("s", {"weights": lambda w: w / 2}, "array 'weights' must be non-negative weights"),
    "missing": ("s", {"times": None}, "array 'times' is missing"),
    "parameters": ("s", {"meta": _meta(route="fast")}, "array 'meta' holds invalid parameters"),
    "mesh vertices": ("m", {"mesh_vertices": _nan_row}, "array 'mesh_vertices' holds 3 NaN/inf"),
    "mesh moved": ("m", {"mesh_vertices": lambda v: v * 2}, "array 'X' has 30 of 30 points off"),
    "mesh faces": ("m", {"mesh_point_faces": lambda f: np.roll(f, 1)},
                   "arrays 'mesh_point_faces' and 'mesh_point_bary' do not locate the points"),
    "mesh bary": ("m", {"mesh_point_bary": lambda b: b - 1},
                  "arrays 'mesh_point_faces' and 'mesh_point_bary' are not locations"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_model_files_are_validated_at_load(case, saved_models, tmp_path):
    source, changes, fragment = BAD_MODELS[case]
    path = _edited(saved_models / f"{source}.npz", tmp_path / "bad.npz", **changes)
    with pytest.raises(ValueError, match="bad.npz: ") as info:
        DiffusionKernelSmoother.load(path)
    assert fragment in str(info.value)


def test_a_bad_model_is_one_line_and_writes_nothing(saved_models, capsys, tmp_path):
    path = _edited(saved_models / "s.npz", tmp_path / "nan.npz", X=_nan_row)
    np.savetxt(tmp_path / "d.csv", Sphere(2).random_uniform(5, rng=1).numpy(), delimiter=",")
    for argv in (["sample", path, "-n", "5", "-o", str(tmp_path / "out.csv")],
                 ["evaluate", path, str(tmp_path / "d.csv"), "--per-point", str(tmp_path / "out.csv")],
                 ["plot", path, "-o", str(tmp_path / "out.png")]):
        status, _, err = call(capsys, *argv)
        assert status == 1 and err.count("\n") == 1, err
        assert f"error: {path}: array 'X' holds 3 NaN/inf entries" in err
    assert sorted(os.listdir(tmp_path)) == ["d.csv", "nan.npz"]
    status, _, err = call(capsys, "sample", str(tmp_path), "-n", "5", "-o", str(tmp_path / "o.csv"))
    assert status == 1 and "is a folder, expected a model file" in err


def test_plot_formats_follow_the_extension(saved_models, capsys, tmp_path):
    model = str(saved_models / "s.npz")
    for ext, magic in (("pdf", b"%PDF"), ("svg", b"<?xml"), ("PNG", b"\x89PNG")):
        status, out, _ = call(capsys, "plot", model, "--size", "200x108", "-o", str(tmp_path / f"p.{ext}"))
        assert status == 0 and (tmp_path / f"p.{ext}").read_bytes()[:len(magic)] == magic
    status, _, err = call(capsys, "plot", model, "-o", str(tmp_path / "p.jpg"))
    assert status == 1 and "-o " in err and "pictures are written as .png, .pdf or .svg" in err
    assert not os.path.exists(tmp_path / "p.jpg")
    status, _, _ = call(capsys, "plot", model, "--no-coastlines", "--size", "200x108", "-o",
                        str(tmp_path / "plain.png"))
    assert status == 0 and (tmp_path / "plain.png").read_bytes() != (tmp_path / "p.PNG").read_bytes()


def test_samplers_end_at_t_zero(saved_models, capsys, tmp_path):
    import argparse

    from heatscore.cli import _sampler_times

    est = DiffusionKernelSmoother.load(saved_models / "s.npz")
    times = _sampler_times(est, argparse.Namespace(t_end=0.0, steps=6))
    assert times.shape == (7,) and float(times[-1]) == 0 and float(times[-2]) == pytest.approx(1e-3)
    for sampler in ("reverse", "ode"):
        status, _, err = call(capsys, "sample", str(saved_models / "s.npz"), "-n", "4", "--sampler",
                              sampler, "--steps", "6", "--t-end", "0", "--seed", "0", "-o",
                              str(tmp_path / f"{sampler}.csv"))
        assert status == 0, err
        assert bool(Sphere(2).belongs(torch.as_tensor(read_csv(tmp_path / f"{sampler}.csv")[1])).all())


def test_bench_table_shows_mixtures_and_a_status_line(monkeypatch, capsys):
    import io

    from heatscore.bench import earth

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    row = {"nll": -1.0, "nll_far": -1.0, "dup_share": 0.0, "far_share": 1.0, "fit_s": 1.0,
           "time": float("nan"), "n_times": 7}
    monkeypatch.setattr(earth, "run_one", lambda *a: dict(row))
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    lines = []
    earth.run(datasets=("volcano", "fire"), seeds=range(2), t_mins=(1e-8,), out=lines.append)
    assert lines[2].endswith("| 7 times |") and "nan" not in "".join(lines)
    assert "fitting volcano, t_min 1e-08, seed 1 (2/4)" in stderr.getvalue()
    assert "fitting fire, t_min 1e-08, seed 1 (4/4)" in stderr.getvalue()
    monkeypatch.setattr(earth, "run_one", lambda *a: dict(row, time=2e-4, n_times=1))
    earth.run(datasets=("volcano",), seeds=range(1), t_mins=(1e-8,), out=lines.append)
    assert lines[-1].endswith("| 2.0e-04 |")
