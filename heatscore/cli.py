"""The ``heatscore`` command: from a CSV of points to a model, samples, likelihoods and pictures.

    heatscore fit DATA --manifold sphere|sphere:D|torus|so3|mesh:PATH [--time auto|multiscale|adaptive|T]
                  [--columns A,B] [--angles deg|rad] -o MODEL
    heatscore sample MODEL -n N [--sampler exact|reverse|ode] [--steps K] -o OUT
    heatscore evaluate MODEL DATA [--per-point OUT]
    heatscore plot MODEL|DATA -o PNG|PDF|SVG [--view density|globe|samples|paths] [--no-coastlines]
    heatscore bench earth [--datasets ...] [--seeds N]
    heatscore bench mesh [--full]
    heatscore demo [-o DIR] [--full]

Data formats are described in :mod:`heatscore._cli_formats` (and ``heatscore fit --help``). A user's
error is one line on stderr (``heatscore: error: ...``) and exit status 1 (2 for a wrong option);
no traceback (set HEATSCORE_DEBUG=1 to see one). Library warnings are not shown, except
TruncationWarning and DegenerateDataWarning, each printed once as a one-line note on stderr when
it is raised. Outputs are written to a temporary name and renamed. Long loops show a progress bar
when stderr is a terminal.
"""

import argparse
import math
import os
import sys
import warnings

#: Rows per chunk of the exact sampler and of evaluation (one progress-bar step each).
CHUNK = 4096
#: Reverse and ODE samplers: default number of steps on the geometric grid.
DEFAULT_STEPS = 500
#: Their default end time, as a fraction of the smallest fitted diffusion time (so the samples
#: are the model diffused for a further 1% of its time: see DiffusionKernelSmoother._sample_reverse).
T_END_FRACTION = 0.01
#: Particles drawn by ``plot --view paths`` and samples drawn by ``plot --view samples``.
DEFAULT_PATHS = 6
DEFAULT_PLOT_SAMPLES = 1000

EXIT_ERROR = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit status 2)."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parsed(text, convert, valid, expected):
    """``convert(text)`` if it succeeds and passes ``valid``; an argparse error otherwise."""
    try:
        value = convert(text)
    except ValueError:
        value = None
    if value is None or not valid(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def _positive_int(text):
    return _parsed(text, int, lambda v: v >= 1, "a positive integer")


def _positive_float(text):
    return _parsed(text, float, lambda v: math.isfinite(v) and v > 0, "a positive number")


def _nonnegative_float(text):
    return _parsed(text, float, lambda v: math.isfinite(v) and v >= 0, "a number >= 0")


def _columns(text):
    from heatscore._cli_formats import parse_columns

    try:
        return parse_columns(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _time_option(text):
    if text in ("auto", "multiscale", "adaptive"):
        return text
    return _parsed(text, float, lambda v: math.isfinite(v) and v > 0,
                   "auto, multiscale, adaptive or a positive number")


def _size(text):
    return _parsed(text, lambda t: tuple(int(p) for p in t.lower().split("x")),
                   lambda v: len(v) == 2 and min(v) >= 50, "WIDTHxHEIGHT in pixels (each >= 50)")


def _note(message):
    print(f"heatscore: {message}", file=sys.stderr)


def _time_unit(m):
    """The unit of diffusion times on ``m``, as printed after a time."""
    return " mesh units²" if m.cli_name == "mesh" else ""


def _format_options(p, fitting):
    p.add_argument("--columns", type=_columns, default=None, metavar="A,B",
                   help="the columns to read: header names or 1-based numbers, comma-separated, "
                        "in the order the format takes them (default: the columns the header "
                        "names, e.g. lat,lon, else all)")
    p.add_argument("--angles", choices=("deg", "rad"),
                   help="the unit of angle columns: torus angles" + (" (required)" if fitting else
                                                                    "") + "; sphere latitude, "
                        "longitude (default deg" + ("" if fitting else ", or the model's") + ")")
    p.add_argument("--angle-range", choices=("signed", "unsigned"),
                   help="torus: angles in (-180, 180] (signed) or [0, 360) (unsigned); default: "
                        "signed when the file holds a negative angle")
    p.add_argument("--quat-order", choices=("wxyz", "xyzw"),
                   help="SO(3) with 4 columns: the order of the quaternion components (required "
                        "for quaternions" + ("" if fitting else "; default: the model's") + ")")


def _progress_chunks(n, label):
    from heatscore.samplers._progress import ProgressBar

    return ProgressBar(math.ceil(n / CHUNK), True, label=label)


# --- fit ---------------------------------------------------------------------------------------
def _read_data(args, kind, manifold=None, fmt=None):
    """(manifold, points, data format) of ``args.data``; its notes are printed."""
    from heatscore._cli_formats import read_points

    angles = args.angles or (fmt.angles if fmt is not None else None)
    quat_order = args.quat_order or (fmt.quat_order if fmt is not None else None)
    m, X, data_fmt, notes = read_points(args.data, kind, manifold=manifold, angles=angles,
                                        angle_range=args.angle_range, quat_order=quat_order,
                                        columns=args.columns)
    for note in notes:
        _note(note)
    return m, X, data_fmt


def _fit(args):
    from heatscore._cli_formats import DataError, check_output, parse_manifold
    from heatscore._model_files import save_model
    from heatscore.estimators import DiffusionKernelSmoother

    check_output(args.output)
    if args.levels is not None and not args.shrinkage:
        raise DataError("--levels sets the levels of the shrunk expansion: it needs --shrinkage")
    m, X, fmt = _read_data(args, *parse_manifold(args.manifold))
    est = DiffusionKernelSmoother(m, time=args.time, t_min=args.t_min, shrinkage=args.shrinkage,
                                  n_levels=args.levels)
    try:
        est.fit(X)
    except ValueError as exc:                       # name the option, not the Python argument
        raise DataError(str(exc).replace("pass n_levels", "pass --levels N")) from None
    save_model(est, fmt, args.output)
    times = ", ".join(f"{t:.3g}" for t in est.times_.tolist()) + _time_unit(m)
    what = f"t* = {times}" if len(est.times_) == 1 else f"{len(est.times_)} times ({times})"
    print(f"fitted {m!r} to {X.shape[0]} points: {what}; wrote {args.output}")
    return 0


# --- sample ------------------------------------------------------------------------------------
def _sampler_times(est, args):
    """The reverse/ODE grid: geometric from T down to ``--t-end`` (default T_END_FRACTION × the
    smallest fitted time); ``--t-end 0`` (the fitted density itself: the model's scores hold at
    every t >= 0) takes its last step from T_END_FRACTION × the smallest time to 0."""
    import torch

    from heatscore.samplers import default_times

    t_near = T_END_FRACTION * float(est.times_.min())
    if args.t_end != 0:
        return default_times(est.manifold, t_near if args.t_end is None else args.t_end,
                             n_steps=args.steps)
    head = default_times(est.manifold, t_near, n_steps=max(1, args.steps - 1))
    return torch.cat([head, head.new_zeros(1)])


def _draw(est, args, n, trajectory=False):
    """n samples of the model by ``args.sampler`` (and the trajectory when asked)."""
    import torch

    from heatscore._cli_formats import DataError
    from heatscore._validation import as_generator
    from heatscore.samplers import probability_flow, reverse_sde
    from heatscore.samplers._progress import ProgressBar

    gen = as_generator(args.seed)
    m = est.manifold
    if args.sampler == "exact":
        bar = _progress_chunks(n, "sample")
        parts = []
        for s in range(0, n, CHUNK):
            parts.append(est.sample(min(CHUNK, n - s), rng=gen))
            bar.update()
        bar.close()
        return torch.cat(parts)
    times = _sampler_times(est, args)
    if args.sampler == "reverse":
        return reverse_sde(m, est.grad_log_density, n, times, rng=gen, progress=True,
                           return_trajectory=trajectory)
    if not m.smooth_scores:
        raise DataError("--sampler ode is not available on a mesh (the score of a piecewise-linear "
                        "density jumps across edges); use --sampler reverse or exact")
    bar = ProgressBar(2 * (len(times) - 1), True, label="probability_flow")

    def score(x, t):
        bar.update()
        return est.grad_log_density(x, t)

    out = probability_flow(m, score, m.sample_stationary(n, rng=gen), times,
                           return_trajectory=trajectory)
    bar.close()
    return out


def _sample(args):
    from heatscore._cli_formats import check_output, write_points
    from heatscore._model_files import load_model

    check_output(args.output)
    est, fmt = load_model(args.model)
    X = _draw(est, args, args.n)
    write_points(args.output, X, fmt)
    print(f"wrote {X.shape[0]} samples ({args.sampler}) to {args.output}")
    return 0


# --- evaluate ----------------------------------------------------------------------------------
def _evaluate(args):
    import torch

    from heatscore._cli_formats import check_output, write_csv
    from heatscore._model_files import load_model

    if args.per_point is not None:
        check_output(args.per_point, "--per-point")
    est, fmt = load_model(args.model)
    m = est.manifold
    _, X, data_fmt = _read_data(args, m.cli_name, manifold=m, fmt=fmt)
    bar = _progress_chunks(X.shape[0], "evaluate")
    parts = []
    for s in range(0, X.shape[0], CHUNK):
        parts.append(est.score_samples(X[s:s + CHUNK]))
        bar.update()
    bar.close()
    logp = torch.cat(parts)
    print(f"mean log-likelihood: {float(logp.mean()):.6f} nats per point over {X.shape[0]} points "
          f"(w.r.t. the Riemannian volume of {m!r}, total {m.volume:.6g})")
    if args.per_point is not None:
        write_csv(args.per_point, logp.numpy()[:, None],
                  ("log_density",) if data_fmt.header is not None else None)
        print(f"wrote per-point log-densities to {args.per_point}")
    return 0


# --- plot --------------------------------------------------------------------------------------
def _plot(args):
    from heatscore import plotting
    from heatscore._cli_formats import DataError, check_output, parse_manifold
    from heatscore._model_files import is_model_file, load_model

    check_output(args.output)
    plotting.image_format(args.output, f"-o {args.output}")
    kw = {"dpi": args.dpi}
    if args.size is not None:
        kw["size"] = (args.size[0] / args.dpi, args.size[1] / args.dpi)
    if args.title:
        kw["title"] = args.title
    if is_model_file(args.input):
        est, fmt = load_model(args.input)
        m, X, log_density = est.manifold, est.X_, est.log_density
    else:
        if args.manifold is None:
            raise DataError(f"{args.input} is a data file: pass --manifold (or give a model file)")
        if args.view in ("samples", "paths"):
            raise DataError(f"--view {args.view} needs a model file, found the data file {args.input}")
        args.data = args.input
        m, X, fmt = _read_data(args, *parse_manifold(args.manifold))
        est, log_density = None, None
    view = plotting._kind(m)                                 # a manifold the pictures can draw
    if view == "sphere":
        kw["coastlines"] = not args.no_coastlines
    if args.view == "globe":
        if view != "sphere":
            raise DataError(f"--view globe draws S², found {m!r}")
        plotting.plot_sphere_globe(log_density, X, args.output, **kw)
    elif args.view == "samples":
        S = _draw(est, args, args.n or DEFAULT_PLOT_SAMPLES)
        plotting.plot_samples(m, X, S, args.output, log_density=log_density, **kw)
    elif args.view == "paths":
        if args.sampler == "exact":
            args.sampler = "reverse"
        _, trajectory = _draw(est, args, args.n or DEFAULT_PATHS, trajectory=True)
        plotting.plot_reverse_paths(m, trajectory, args.output, data=X, log_density=log_density, **kw)
    else:
        if m.cli_name == "torus":
            kw["degrees"] = fmt.angles != "rad"
            kw["signed"] = fmt.angle_range != "unsigned"
            if fmt.header is not None:
                kw["labels"] = fmt.header[:2]
        plotting.plot_density(m, log_density, X, args.output, **kw)
    print(f"wrote {args.output}")
    return 0


# --- bench and demo ------------------------------------------------------------------------------
def _bench(args):
    if args.name == "mesh":
        return _bench_mesh(args)
    from heatscore.bench.earth import run
    from heatscore.datasets import EARTH_DATASETS

    names = EARTH_DATASETS if args.datasets is None else tuple(args.datasets.split(","))
    unknown = [n for n in names if n not in EARTH_DATASETS]
    if unknown:
        from heatscore._cli_formats import DataError

        raise DataError(f"--datasets: unknown data set {unknown[0]!r}; expected some of "
                        f"{', '.join(EARTH_DATASETS)}")
    t_mins = (1e-8, 1e-6, 1e-5) if args.full else (1e-8,)
    seeds = range(5) if args.full else range(args.seeds)
    print("Earth-science benchmark on S^2: test NLL (nats, w.r.t. area; lower is better)")
    run(datasets=names, seeds=seeds, t_mins=t_mins, time_mode=args.time)
    return 0


def _bench_mesh(args):
    """The mesh benchmark: quick (1 subdivision, k = 10, 2·10^4 points) or ``--full``."""
    from heatscore.bench.mesh import run

    if args.full:
        run(subdivisions=3, ks=(10, 50, 100), n=100_000)
    else:
        run(subdivisions=1, ks=(10,), n=20_000)
    return 0


def _demo(args):
    import numpy as np
    import torch

    from heatscore.bench.earth import run, split, status
    from heatscore.datasets import load_earth
    from heatscore.estimators import DiffusionKernelSmoother
    from heatscore.manifolds import Sphere
    from heatscore.plotting import plot_sphere_density

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    os.makedirs(args.output, exist_ok=True)
    print("Earth-science benchmark on S^2: test NLL (nats, w.r.t. area; lower is better)")
    print("(heatscore fits train+validation, 90%; the published models trained on 80%)")
    if args.full:
        run(time_mode="multiscale")
    else:
        run(seeds=[0], t_mins=[1e-8], time_mode="multiscale")
    X = load_earth("fire")
    tr, va, _ = split(X.shape[0], 0)
    status("fitting fire for the map ...")
    est = DiffusionKernelSmoother(Sphere(2), time="multiscale").fit(X[np.concatenate([tr, va])])
    status("")
    path = os.path.join(args.output, "fire_density.png")
    plot_sphere_density(est.log_density, None, path, title="fire: multiscale heat-kernel density "
                        f"({len(est.times_)} diffusion times, t_min = {est.t_min_:.0e})")
    print(f"wrote {path}")
    return 0


# --- the parser -----------------------------------------------------------------------------------
DATA_HELP = """data files (CSV): lines starting with # are comments; a first row without numbers is a
header. The columns read are those --columns names (header names or 1-based numbers), else those
the header names (other columns, text or not, are left out with a note), else all. sphere (S²):
latitude,longitude in degrees, or radians with --angles rad (header lat/latitude and
lon/long/longitude/lng, or two columns), or x,y,z (header x,y,z, or three columns); sphere:D:
D+1 coordinates on S^D. torus: one angle per column, with --angles. so3: 9 columns (a 3x3
rotation matrix, row by row) or 4 (a quaternion, with --quat-order). mesh:PATH (an
OBJ/PLY/OFF/STL file): x,y,z of points near the surface. Points within 1e-2 of the manifold are
projected onto it (the largest deviation is reported); farther rows are refused."""


def _build_parser():
    parser = _Parser(prog="heatscore", description="Diffusion models on manifolds from the heat "
                     "kernel: fit, sample, evaluate and draw densities of points on S², T^d, SO(3) "
                     "and meshes.", epilog=DATA_HELP)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    fit = sub.add_parser("fit", help="fit a heat-kernel density to a CSV of points",
                         description="Fit DiffusionKernelSmoother to DATA and save it (.npz, no "
                         "pickle).", epilog=DATA_HELP)
    fit.add_argument("data", metavar="DATA", help="CSV of points")
    fit.add_argument("--manifold", required=True, metavar="sphere|sphere:D|torus|so3|mesh:PATH")
    fit.add_argument("--time", type=_time_option, default="auto",
                     metavar="auto|multiscale|adaptive|T",
                     help="diffusion time: chosen by leave-one-out likelihood (auto), a mixture of "
                          "times (multiscale), a time per point (adaptive; not on a mesh) or a "
                          "fixed positive number (default auto); on a "
                          "mesh, times are in mesh units²")
    fit.add_argument("--t-min", type=_positive_float, default=None, metavar="T",
                     help="smallest diffusion time searched (default 2e-8/lambda_1; mesh units² "
                          "on a mesh)")
    fit.add_argument("--shrinkage", action="store_true",
                     help="James-Stein shrinkage of the spectral coefficients (not on meshes)")
    fit.add_argument("--levels", type=_positive_int, default=None, metavar="N",
                     help="levels of the shrunk spectral expansion (with --shrinkage; default: "
                          "the levels that resolve the fitted time)")
    _format_options(fit, fitting=True)
    fit.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file to write")

    def sampler_options(p, default_sampler):
        p.add_argument("--sampler", choices=("exact", "reverse", "ode"), default=default_sampler,
                       help="exact draws from the model; reverse: the reverse geodesic random "
                            "walk; ode: the probability-flow ODE (not on meshes); both with the "
                            "model's closed-form score, from the stationary law at T = 10/lambda_1 "
                            f"(default {default_sampler})")
        p.add_argument("--steps", type=_positive_int, default=DEFAULT_STEPS, metavar="K",
                       help=f"steps of the reverse/ode samplers, geometric grid (default {DEFAULT_STEPS})")
        p.add_argument("--t-end", type=_nonnegative_float, default=None, metavar="T",
                       help="end time (>= 0) of the reverse/ode samplers (default "
                            f"{T_END_FRACTION:g} x the smallest fitted time; 0: the fitted "
                            "density, the last step from that default to 0)")
        p.add_argument("--seed", type=int, default=None, help="random seed (default: fresh)")

    sample = sub.add_parser("sample", help="draw samples from a fitted model",
                            description="Draw N points from MODEL; they are written in the format "
                            "of the data the model was fitted to.")
    sample.add_argument("model", metavar="MODEL")
    sample.add_argument("-n", type=_positive_int, required=True, metavar="N", help="number of samples")
    sampler_options(sample, "exact")
    sample.add_argument("-o", "--output", required=True, metavar="OUT", help="CSV file to write")

    ev = sub.add_parser("evaluate", help="mean log-likelihood of data under a model",
                        description="Print the mean log-likelihood of DATA under MODEL (nats "
                        "per point, w.r.t. the Riemannian volume).")
    ev.add_argument("model", metavar="MODEL")
    ev.add_argument("data", metavar="DATA")
    _format_options(ev, fitting=False)
    ev.add_argument("--per-point", metavar="OUT", default=None,
                    help="also write each point's log-density to this CSV")

    plot = sub.add_parser("plot", help="draw a model's density or a data file (PNG, PDF or SVG)",
                          description="Draw MODEL's density with its data, or the points of a "
                          "DATA file (with --manifold).", epilog=DATA_HELP)
    plot.add_argument("input", metavar="MODEL|DATA")
    plot.add_argument("-o", "--output", required=True, metavar="FILE",
                      help="picture to write: .png, .pdf or .svg (the format follows the extension)")
    plot.add_argument("--view", choices=("density", "globe", "samples", "paths"), default="density",
                      help="density (default): map / heat map / axis-angle view / surface; globe: "
                           "3-D globe (S²); samples: samples beside the data; paths: reverse-"
                           "process paths of a few particles")
    plot.add_argument("--manifold", default=None, metavar="sphere|torus|so3|mesh:PATH",
                      help="the manifold of a DATA file")
    plot.add_argument("--no-coastlines", action="store_true",
                      help="S² maps and globes: leave out the coastlines (Natural Earth 1:110m)")
    _format_options(plot, fitting=False)
    plot.add_argument("-n", type=_positive_int, default=None, metavar="N",
                      help=f"samples (--view samples, default {DEFAULT_PLOT_SAMPLES}) or "
                           f"particles (--view paths, default {DEFAULT_PATHS})")
    sampler_options(plot, "exact")
    plot.add_argument("--size", type=_size, default=None, metavar="WxH",
                      help="picture size in pixels (default: 1000x540 for maps, 640x540 for "
                           "the torus, 1200x480 for SO(3), 700x600 for meshes at --dpi 100)")
    plot.add_argument("--dpi", type=_positive_int, default=100)
    plot.add_argument("--title", default=None)

    bench = sub.add_parser("bench", help="run a benchmark (earth: the Earth-science data on S²; "
                                         "mesh: densities on the refined Spot mesh)")
    bench.add_argument("name", choices=("earth", "mesh"))
    bench.add_argument("--datasets", default=None, metavar="A,B",
                       help="comma-separated subset of volcano,earthquake,flood,fire (default all)")
    bench.add_argument("--seeds", type=_positive_int, default=1, metavar="N",
                       help="splits per data set (default 1)")
    bench.add_argument("--time", choices=("auto", "multiscale"), default="multiscale")
    bench.add_argument("--full", action="store_true",
                       help="earth: 5 seeds and 3 t_min values; mesh: the published recipe (3 "
                            "subdivisions, k = 10, 50, 100, 10^5 points; minutes)")

    demo = sub.add_parser("demo", help="fit the bundled Earth data and draw the fire density")
    demo.add_argument("-o", "--output", default="heatscore-demo", help="output folder")
    demo.add_argument("--full", action="store_true", help="5 seeds and 3 t_min values (minutes)")
    return parser


COMMANDS = {"fit": _fit, "sample": _sample, "evaluate": _evaluate, "plot": _plot,
            "bench": _bench, "demo": _demo}


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = _build_parser().parse_args(argv)
    from heatscore._errors import DegenerateDataWarning, TruncationWarning

    shown = set()

    def show(message, category, *_args, **_kwargs):          # warnings.showwarning's signature
        if issubclass(category, (TruncationWarning, DegenerateDataWarning)) \
                and str(message) not in shown:
            shown.add(str(message))
            _note(f"note: {_one_line(message)}")

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            return COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print("heatscore: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, NotImplementedError) as exc:
        if os.environ.get("HEATSCORE_DEBUG"):
            raise
        print(f"heatscore {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # noqa: BLE001 - a bug, but still one line for the user
        if os.environ.get("HEATSCORE_DEBUG"):
            raise
        print(f"heatscore {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set HEATSCORE_DEBUG=1 for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
