"""Data of the kernel-sum benchmark (``benchmarks/bench_kernel_sum.py``): a fixed 50-component
von Mises–Fisher mixture on S², its exact draws, and scikit-learn's haversine KDE on the same
points (a baseline; its (lat, lon) layout and normalisation converted to heatscore's); and the
benchmark's measurements: fit and query times (``time_sizes``), accuracy against heatscore's
dense route, peak added memory in fresh processes (``memory_sizes``), the further rows
(``multiscale_ratio``, ``fire_model``, ``identical_rows``), the issue's targets (``targets``)
and the markdown report (``report``)."""

import datetime
import gc
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
from scipy.stats import vonmises_fisher

#: Components of the mixture: centres uniform on S², concentrations log-uniform in [30, 1000].
N_COMPONENTS = 50
MIXTURE_SEED = 12345


def mixture():
    """(centres (50, 3), concentrations (50,)) of the benchmark's vMF mixture (equal weights)."""
    rng = np.random.default_rng(MIXTURE_SEED)
    mu = rng.normal(size=(N_COMPONENTS, 3))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    kappa = 10.0 ** rng.uniform(math.log10(30.0), 3.0, size=N_COMPONENTS)
    return mu, kappa


def draws(n, seed):
    """(n, 3) exact draws of the mixture (float64, unit rows)."""
    rng = np.random.default_rng(seed)
    mu, kappa = mixture()
    comp = rng.integers(N_COMPONENTS, size=n)
    out = np.empty((n, 3))
    for k in range(N_COMPONENTS):
        idx = np.flatnonzero(comp == k)
        if idx.size:
            out[idx] = vonmises_fisher(mu[k], kappa[k]).rvs(idx.size, random_state=rng)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def log_density(x):
    """(n,) exact log-density of the mixture w.r.t. the area of S²."""
    mu, kappa = mixture()
    # log vMF on S²: log κ − log(2π(1 − e^{−2κ})) + κ(μ·x − 1)
    logc = np.log(kappa) - np.log(2 * np.pi * -np.expm1(-2 * kappa))
    z = logc[None, :] + kappa[None, :] * (x @ mu.T - 1.0)
    zmax = z.max(axis=1, keepdims=True)
    return (zmax[:, 0] + np.log(np.exp(z - zmax).mean(axis=1)))


def to_latlon(x):
    """(n, 2) (lat, lon) in radians, scikit-learn's haversine layout."""
    return np.column_stack([np.arcsin(np.clip(x[:, 2], -1, 1)), np.arctan2(x[:, 1], x[:, 0])])


def sklearn_log_density(fitted_kde, x, h):
    """scikit-learn's haversine Gaussian KDE at x converted to a density w.r.t. area: its kernel
    is normalised as the flat Gaussian, 1/(2πh²), so values are read as they are (∫ over S² is
    1 − O(h²), negligible at h = 0.02)."""
    return fitted_kde.score_samples(to_latlon(x))


# --- the benchmark's measurements (benchmarks/bench_kernel_sum.py prints them) --------------------


#: The issue's fixed diffusion time and scikit-learn's matching bandwidth h = sqrt(2t) (rad).
TIME = 2e-4
BANDWIDTH = math.sqrt(2 * TIME)
#: Seeds of the data draws and of the (independent) query draws.
DATA_SEED, QUERY_SEED = 0, 1
#: scikit-learn's relative tolerances: exact (0) and the usual fast setting.
SKLEARN_RTOLS = (1e-6, 0.0)
#: The issue's targets.
MAX_ABS_ERROR = 1e-6        # max |Δ log p| against the dense route, every n
MAX_ADDED_MB = 256.0        # heatscore's peak added memory, every n
MIN_QUERY_RATIO = 3.0       # scikit-learn (rtol=1e-6) query time / heatscore's, at n = 1e5
AUTO_FIT_S_1E6 = 60.0       # time="auto" fit at n = 1e6
AUTO_QUERY_S_1E6 = 10.0     # 10^4 queries of the time="auto" model at n = 1e6
TOTAL_S_1E7 = 300.0         # fixed-t fit + 10^4 queries at n = 1e7
MAX_MULTISCALE_RATIO = 2.0  # multiscale / auto evaluation cost at n = 1e5
FIRE_SCORE_S = 5.0          # fire model: log p + ∇ log p at 10^5 of its exact draws
IDENTICAL_FIT_S = 10.0      # time="auto" fit of 10^6 identical rows
#: Rows of the bundled fire data set (the fire target is on all of them).
FIRE_POINTS = 12_809


def _estimator(time_mode, route="auto"):
    from heatscore.estimators import DiffusionKernelSmoother
    from heatscore.manifolds import Sphere
    return DiffusionKernelSmoother(Sphere(2), time=time_mode, route=route)


def _sklearn(rtol):
    from sklearn.neighbors import KernelDensity
    return KernelDensity(metric="haversine", algorithm="ball_tree", bandwidth=BANDWIDTH, rtol=rtol)


def _sides(with_sklearn, with_auto):
    """(label, fit(data), query(model, queries)) of each configuration, in the order they alternate.

    heatscore takes (n, 3) unit rows (torch); scikit-learn its (lat, lon) layout, converted once
    outside the timers (``to_latlon``)."""
    sides = [("heatscore", lambda d: _estimator(TIME).fit(d["X"]), lambda e, d: e.log_density(d["Q"]))]
    if with_auto:
        sides.append(("heatscore auto", lambda d: _estimator("auto").fit(d["X"]),
                      lambda e, d: e.log_density(d["Q"])))
    if with_sklearn:
        for rtol in SKLEARN_RTOLS:
            sides.append((f"sklearn rtol={rtol:g}", lambda d, r=rtol: _sklearn(r).fit(d["X_ll"]),
                          lambda k, d: k.score_samples(d["Q_ll"])))
    return sides


def data(n, n_queries, latlon=True):
    """The benchmark's data at size n: X (n, 3) and Q (n_queries, 3) torch float64, and their
    (lat, lon) layouts for scikit-learn (None with ``latlon=False``)."""
    import torch
    X, Q = draws(n, DATA_SEED), draws(n_queries, QUERY_SEED)
    return {"X": torch.from_numpy(X), "Q": torch.from_numpy(Q),
            "X_ll": to_latlon(X) if latlon else None, "Q_ll": to_latlon(Q) if latlon else None}


def time_sizes(sizes, n_queries=10_000, n_check=300, repeats=3, skip_sklearn_above=1e5,
               with_auto=True, out=None):
    """Fit and query times (medians over ``repeats``, the configurations alternating within each
    repeat, fit and query timed separately) and accuracy against heatscore's dense route on the
    first ``n_check`` queries; one dict per size."""
    rows = []
    for n in sizes:
        n = int(n)
        with_sk = n <= skip_sklearn_above
        d = data(n, n_queries, latlon=with_sk)
        sides = _sides(with_sk, with_auto)
        warm = data(500, 100, latlon=with_sk)  # first calls (lazy imports, thread pools) untimed
        for _, fit, query in sides:
            query(fit(warm), warm)
        fit_t = {s[0]: [] for s in sides}
        query_t = {s[0]: [] for s in sides}
        last = {}
        for _ in range(repeats):
            for label, fit, query in sides:
                t0 = time.perf_counter()
                model = fit(d)
                t1 = time.perf_counter()
                values = query(model, d)
                t2 = time.perf_counter()
                fit_t[label].append(t1 - t0)
                query_t[label].append(t2 - t1)
                last[label] = (model, values)
                del model, values
        row = {"n": n, "n_queries": n_queries, "n_check": min(n_check, n_queries), "repeats": repeats,
               "fit": {k: statistics.median(v) for k, v in fit_t.items()},
               "query": {k: statistics.median(v) for k, v in query_t.items()}}
        if with_auto:
            row["auto_time"] = float(last["heatscore auto"][0].time_)
        row.update(accuracy(d, last, row["n_check"]))
        rows.append(row)
        if out is not None:
            out(f"n = {n}: done ({time.strftime('%H:%M:%S')})")
        del d, last
        gc.collect()
    return rows


def accuracy(d, last, n_check):
    """max |Δ log p| of each configuration against the dense route on the first ``n_check``
    queries, and the max relative error |Δ∇|/|∇| of heatscore's score against the dense one."""
    Qc = d["Q"][:n_check]
    dense = _estimator(TIME, route="dense").fit(d["X"])
    ref = dense.log_density(Qc)
    gref = dense.grad_log_density(Qc)
    est, values = last["heatscore"]
    g = est.grad_log_density(Qc)
    err = {}
    for label, (_, v) in last.items():
        if label == "heatscore auto":  # another time: no fixed-t reference
            continue
        v = v[:n_check]
        v = v.numpy() if hasattr(v, "numpy") else np.asarray(v)
        err[label] = float(np.abs(v - ref.numpy()).max())
    grad_err = float(((g - gref).norm(dim=1) / gref.norm(dim=1)).max())
    return {"max_abs_err": err, "grad_rel_err": grad_err}


# --- peak added memory, each configuration in a fresh process ------------------------------------

def _rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def memory_one(cfg):
    """Run in a fresh process (``--one``): load the saved data, warm up on 500 of its points and 100 queries, read
    ru_maxrss, fit and query one configuration, read it again. ``cfg``: side ("heatscore" |
    "sklearn"), time or rtol, folder (holding X.npy, Q.npy and for scikit-learn X_ll.npy, Q_ll.npy:
    loaded, not generated, so no transient of the data's creation sits under the first reading),
    threads, warmup (default True)."""
    import torch
    torch.set_num_threads(int(cfg.get("threads", 2)))
    folder = cfg["folder"]
    if cfg["side"] == "heatscore":
        from heatscore.estimators import DiffusionKernelSmoother  # noqa: F401  (import before the reading)
        X = torch.from_numpy(np.load(os.path.join(folder, "X.npy")))
        Q = torch.from_numpy(np.load(os.path.join(folder, "Q.npy")))

        def run(X, Q):
            return _estimator(cfg["time"]).fit(X).log_density(Q)
    else:
        import sklearn.neighbors  # noqa: F401
        X = np.load(os.path.join(folder, "X_ll.npy"))
        Q = np.load(os.path.join(folder, "Q_ll.npy"))

        def run(X, Q):
            return _sklearn(float(cfg["rtol"])).fit(X).score_samples(Q)
    if cfg.get("warmup", True):  # first calls (lazy imports, thread pools, allocator arenas) come
        run(X[:500], Q[:100])    # before the first reading: the figure is what the data size adds
    gc.collect()
    before = _rss_mb()
    t0 = time.perf_counter()
    values = run(X, Q)
    seconds = time.perf_counter() - t0
    after = _rss_mb()
    return {"added_mb": after - before, "baseline_mb": before, "peak_mb": after,
            "seconds": seconds, "n": int(X.shape[0]), "finite": bool(np.isfinite(np.asarray(values)).all())}


def memory_subprocess(cfg, script, timeout=None):
    """``memory_one(cfg)`` in a fresh ``python script --one JSON``, returning its JSON.

    The child is started through /bin/sh, which forks it: a process exec'd straight from this
    one inherits this process's peak RSS in its ru_maxrss (Linux keeps the exec'ing image's high
    water mark in the signal struct; subprocess's vfork/fork + exec does exactly that), which
    would hide the child's own peak under the parent's."""
    cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', sys.executable, script, "--one", json.dumps(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"memory child {cfg} failed (rc {r.returncode}):\n{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def memory_sizes(sizes, script, n_queries=10_000, skip_sklearn_above=1e5, with_auto=True, threads=2,
                 out=None):
    """Peak added memory (MB) of each configuration at each size, one fresh process each."""
    rows = []
    for n in sizes:
        n = int(n)
        with_sk = n <= skip_sklearn_above
        with tempfile.TemporaryDirectory() as folder:
            X, Q = draws(n, DATA_SEED), draws(n_queries, QUERY_SEED)
            np.save(os.path.join(folder, "X.npy"), X)
            np.save(os.path.join(folder, "Q.npy"), Q)
            if with_sk:
                np.save(os.path.join(folder, "X_ll.npy"), to_latlon(X))
                np.save(os.path.join(folder, "Q_ll.npy"), to_latlon(Q))
            del X, Q
            cfgs = {"heatscore": {"side": "heatscore", "time": TIME}}
            if with_auto:
                cfgs["heatscore auto"] = {"side": "heatscore", "time": "auto"}
            if with_sk:
                for rtol in SKLEARN_RTOLS:
                    cfgs[f"sklearn rtol={rtol:g}"] = {"side": "sklearn", "rtol": rtol}
            row = {"n": n}
            for label, cfg in cfgs.items():
                cfg.update(folder=folder, threads=threads)
                row[label] = memory_subprocess(cfg, script)
            rows.append(row)
        if out is not None:
            out(f"memory n = {n}: done ({time.strftime('%H:%M:%S')})")
    return rows


# --- further rows ---------------------------------------------------------------------------------

def multiscale_ratio(n=100_000, n_queries=10_000, repeats=3):
    """Evaluation cost of time="multiscale" ÷ time="auto" at size n: log p and log p + ∇ log p
    of n_queries queries (medians, alternating)."""
    d = data(n, n_queries, latlon=False)
    models = {"auto": _estimator("auto").fit(d["X"]), "multiscale": _estimator("multiscale").fit(d["X"])}
    t = {(k, w): [] for k in models for w in ("log p", "grad")}
    for _ in range(repeats):
        for k, m in models.items():
            t0 = time.perf_counter()
            m.log_density(d["Q"])
            t1 = time.perf_counter()
            m.grad_log_density(d["Q"])
            t2 = time.perf_counter()
            t[(k, "log p")].append(t1 - t0)
            t[(k, "grad")].append(t2 - t1)
    med = {k: statistics.median(v) for k, v in t.items()}
    return {"n": n, "n_queries": n_queries, "n_times": int(models["multiscale"].times_.numel()),
            "auto_time": float(models["auto"].time_),
            "auto_log_s": med[("auto", "log p")], "multi_log_s": med[("multiscale", "log p")],
            "auto_grad_s": med[("auto", "grad")], "multi_grad_s": med[("multiscale", "grad")],
            "ratio_log": med[("multiscale", "log p")] / med[("auto", "log p")],
            "ratio_grad": med[("multiscale", "grad")] / med[("auto", "grad")]}


def fire_model(n_draws=100_000, time_mode="multiscale", repeats=3, n_points=None):
    """The smoother fitted to the fire data (its first ``n_points`` rows; None: all); log p +
    ∇ log p at n_draws of its exact draws (``est.sample(n_draws, rng=0)``), median over repeats."""
    from heatscore.datasets import load_earth
    X = load_earth("fire")[:n_points]
    t0 = time.perf_counter()
    est = _estimator(time_mode).fit(X)
    fit_s = time.perf_counter() - t0
    Q = est.sample(n_draws, rng=0)
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        est.log_density(Q)
        est.grad_log_density(Q)
        ts.append(time.perf_counter() - t0)
    return {"n_data": int(X.shape[0]), "n_draws": n_draws, "time_mode": time_mode, "fit_s": fit_s,
            "n_times": int(est.times_.numel()), "score_s": statistics.median(ts)}


def identical_rows(n=1_000_000):
    """time="auto" fit of n copies of one point (the first draw): its time and every warning
    raised (category and message)."""
    import torch
    X = torch.from_numpy(np.repeat(draws(1, DATA_SEED), n, axis=0))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        est = _estimator("auto").fit(X)
        fit_s = time.perf_counter() - t0
    return {"n": n, "fit_s": fit_s, "time_": float(est.time_),
            "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}


def growth_exponent(ns, ts):
    """Least-squares slope of log t against log n (None with fewer than two sizes)."""
    pairs = [(math.log(n), math.log(t)) for n, t in zip(ns, ts) if t is not None and t > 0]
    if len(pairs) < 2:
        return None
    x, y = np.array(pairs).T
    return float(np.polyfit(x, y, 1)[0])


# --- targets and the report -----------------------------------------------------------------------

MET, NOT_MET, NOT_RUN = "met", "NOT MET", "not measured"


def _status(ok):
    return NOT_RUN if ok is None else (MET if ok else NOT_MET)


def _at(rows, n):
    return next((r for r in rows if r["n"] == int(n)), None)


def targets(res):
    """[(target, measured, status)] from the measurements in ``res`` (the keys of ``run``)."""
    sizes, mem = res.get("sizes") or [], res.get("memory") or []
    out = []
    if sizes:
        worst = max(sizes, key=lambda r: r["max_abs_err"]["heatscore"])
        e = worst["max_abs_err"]["heatscore"]
        out.append((f"max abs Δ log p vs dense ≤ {MAX_ABS_ERROR:g}, every n",
                    f"{e:.1e} (n = {worst['n']})", _status(e <= MAX_ABS_ERROR)))
    else:
        out.append((f"max abs Δ log p vs dense ≤ {MAX_ABS_ERROR:g}, every n", "—", NOT_RUN))
    hs_mem = [(r["n"], k, r[k]["added_mb"]) for r in mem for k in r if k.startswith("heatscore")]
    if hs_mem:
        n, k, mb = max(hs_mem, key=lambda x: x[2])
        out.append((f"heatscore peak added memory ≤ {MAX_ADDED_MB:g} MB, every n",
                    f"{mb:.0f} MB max ({k}, n = {n})", _status(mb <= MAX_ADDED_MB)))
    else:
        out.append((f"heatscore peak added memory ≤ {MAX_ADDED_MB:g} MB, every n", "—", NOT_RUN))
    r = _at(sizes, 1e5)
    sk = "sklearn rtol=1e-06"
    if r and sk in r["query"]:
        ratio = r["query"][sk] / r["query"]["heatscore"]
        out.append((f"n = 1e5: sklearn (rtol=1e-6) query time / heatscore's ≥ {MIN_QUERY_RATIO:g}",
                    f"{ratio:.2f}x", _status(ratio >= MIN_QUERY_RATIO)))
    else:
        out.append((f"n = 1e5: sklearn (rtol=1e-6) query time / heatscore's ≥ {MIN_QUERY_RATIO:g}", "—", NOT_RUN))
    r = _at(sizes, 1e6)
    ok = r is not None and "heatscore auto" in r["fit"]
    out.append((f"n = 1e6: time=\"auto\" fit ≤ {AUTO_FIT_S_1E6:g} s",
                f"{r['fit']['heatscore auto']:.2f} s" if ok else "—",
                _status(r["fit"]["heatscore auto"] <= AUTO_FIT_S_1E6 if ok else None)))
    out.append((f"n = 1e6: 10^4 queries of the time=\"auto\" model ≤ {AUTO_QUERY_S_1E6:g} s",
                f"{r['query']['heatscore auto']:.2f} s ({r['n_queries']} queries)" if ok else "—",
                _status(r["query"]["heatscore auto"] <= AUTO_QUERY_S_1E6 if ok else None)))
    r = _at(sizes, 1e7)
    total = r["fit"]["heatscore"] + r["query"]["heatscore"] if r else None
    out.append((f"n = 1e7: fixed-t fit + 10^4 queries ≤ {TOTAL_S_1E7:g} s",
                f"{total:.1f} s" if r else "—", _status(total <= TOTAL_S_1E7 if r else None)))
    m = _at(mem, 1e7)
    out.append((f"n = 1e7: fixed-t peak added memory ≤ {MAX_ADDED_MB:g} MB",
                f"{m['heatscore']['added_mb']:.0f} MB" if m else "—",
                _status(m["heatscore"]["added_mb"] <= MAX_ADDED_MB if m else None)))
    ms = res.get("multiscale")
    at_1e5 = ms is not None and ms["n"] == 100_000
    worst = max(ms["ratio_log"], ms["ratio_grad"]) if ms else None
    out.append((f"n = 1e5: multiscale / auto evaluation cost ≤ {MAX_MULTISCALE_RATIO:g}",
                f"{worst:.2f} (log p {ms['ratio_log']:.2f}, ∇ {ms['ratio_grad']:.2f}; n = {ms['n']})" if ms else "—",
                _status(worst <= MAX_MULTISCALE_RATIO if at_1e5 else None)))
    f = res.get("fire")
    full = f is not None and f["n_draws"] == 100_000 and f["n_data"] == FIRE_POINTS
    out.append((f"fire model: log p + ∇ log p at 10^5 draws ≤ {FIRE_SCORE_S:g} s",
                f"{f['score_s']:.2f} s ({f['n_draws']} draws)" if f else "—",
                _status(f["score_s"] <= FIRE_SCORE_S if full else None)))
    i = res.get("identical")
    full = i is not None and i["n"] == 1_000_000
    out.append((f"10^6 identical rows: time=\"auto\" fit ≤ {IDENTICAL_FIT_S:g} s",
                f"{i['fit_s']:.2f} s ({i['n']} rows)" if i else "—",
                _status(i["fit_s"] <= IDENTICAL_FIT_S if full else None)))
    return out


def _s(x, fmt="{:.3f}"):
    return "—" if x is None else fmt.format(x)


def _ratio(a, b):
    return "—" if a is None or b is None else f"{a / b:.2f}x"


def report(res, command, out=print):
    """The markdown report (command line and date first) of the measurements in ``res``."""
    out(f"`{command}`  ")
    out(f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; torch threads {res.get('threads', '?')}; "
        f"t = {TIME:g} (h = sqrt(2t) = {BANDWIDTH:g} rad); {N_COMPONENTS}-component vMF mixture on S²; "
        f"queries: independent draws (seed {QUERY_SEED})")
    out("")
    sizes = res.get("sizes") or []
    if sizes:
        r0 = sizes[0]
        out(f"Times in s, medians of {r0['repeats']} (configurations alternating); queries: "
            f"{r0['n_queries']} log-densities; ratio = scikit-learn / heatscore.")
        out("")
        out("| n | heatscore fit (t fixed) | heatscore query | sklearn fit (rtol=1e-6) | sklearn query (rtol=1e-6) "
            "| ratio query (rtol=1e-6) | sklearn fit (rtol=0) | sklearn query (rtol=0) | ratio query (rtol=0) "
            "| heatscore fit (auto) | heatscore query (auto) | t* (auto) |")
        out("|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sizes:
            f, q = r["fit"], r["query"]
            hs = q["heatscore"]
            s6, s0 = "sklearn rtol=1e-06", "sklearn rtol=0"
            out(f"| {r['n']:,} | {_s(f['heatscore'])} | {_s(hs)} | {_s(f.get(s6))} | {_s(q.get(s6))} | "
                f"{_ratio(q.get(s6), hs)} | {_s(f.get(s0))} | {_s(q.get(s0))} | {_ratio(q.get(s0), hs)} | "
                f"{_s(f.get('heatscore auto'))} | {_s(q.get('heatscore auto'))} | "
                f"{_s(r.get('auto_time'), '{:.3g}')} |")
        out("")
        out(f"Accuracy against heatscore's dense route (route=\"dense\", t fixed) on the first "
            f"{r0['n_check']} queries: max |Δ log p|; score: max |Δ∇ log p| / |∇ log p|.")
        out("")
        out("| n | heatscore max abs Δ log p | sklearn (rtol=1e-6) max abs Δ log p | sklearn (rtol=0) max abs Δ log p "
            "| heatscore score max rel Δ |")
        out("|---|---|---|---|---|")
        for r in sizes:
            e = r["max_abs_err"]
            out(f"| {r['n']:,} | {e['heatscore']:.1e} | {_s(e.get('sklearn rtol=1e-06'), '{:.1e}')} | "
                f"{_s(e.get('sklearn rtol=0'), '{:.1e}')} | {r['grad_rel_err']:.1e} |")
        out("")
        ns = [r["n"] for r in sizes]
        g = {k: growth_exponent(ns, [r[w].get(lab) for r in sizes])
             for k, (w, lab) in {"heatscore fit (t fixed)": ("fit", "heatscore"),
                                 "heatscore query (t fixed)": ("query", "heatscore"),
                                 "heatscore fit (auto)": ("fit", "heatscore auto"),
                                 "heatscore query (auto)": ("query", "heatscore auto"),
                                 "sklearn query (rtol=1e-6)": ("query", "sklearn rtol=1e-06")}.items()}
        out("Growth exponents (log-log slope of time against n over the sizes run): "
            + "; ".join(f"{k} {_s(v, '{:.2f}')}" for k, v in g.items()))
        out("")
    mem = res.get("memory") or []
    if mem:
        out("Peak added memory (MB): ru_maxrss after the fit and query minus ru_maxrss after imports and "
            "data loading, each configuration in a fresh process.")
        out("")
        labels = ["heatscore", "heatscore auto", "sklearn rtol=1e-06", "sklearn rtol=0"]
        out("| n | heatscore (t fixed) | heatscore (auto) | sklearn (rtol=1e-6) | sklearn (rtol=0) |")
        out("|---|---|---|---|---|")
        for r in mem:
            out(f"| {r['n']:,} | " + " | ".join(_s(r[k]["added_mb"] if k in r else None, "{:.0f}")
                                                   for k in labels) + " |")
        out("")
    rows = []
    ms = res.get("multiscale")
    if ms:
        rows.append((f"time=\"multiscale\" ({ms['n_times']} times) / time=\"auto\", n = {ms['n']:,}, "
                     f"{ms['n_queries']} queries",
                     f"log p {ms['multi_log_s']:.3f} / {ms['auto_log_s']:.3f} s = {ms['ratio_log']:.2f}; "
                     f"∇ log p {ms['multi_grad_s']:.3f} / {ms['auto_grad_s']:.3f} s = {ms['ratio_grad']:.2f}"))
    f = res.get("fire")
    if f:
        rows.append((f"fire model (time=\"{f['time_mode']}\", {f['n_data']} points, {f['n_times']} times): "
                     f"log p + ∇ log p at {f['n_draws']} exact draws",
                     f"{f['score_s']:.2f} s (fit {f['fit_s']:.2f} s)"))
    i = res.get("identical")
    if i:
        rows.append((f"{i['n']:,} identical rows: time=\"auto\" fit",
                     f"{i['fit_s']:.2f} s, t* = {i['time_']:.3g}; warnings: "
                     + ("; ".join(i["warnings"]) if i["warnings"] else "none")))
    if rows:
        out("| further row | measured |")
        out("|---|---|")
        for a, b in rows:
            out(f"| {a} | {b} |")
        out("")
    out("| target | measured | status |")
    out("|---|---|---|")
    for a, b, c in targets(res):
        out(f"| {a} | {b} | {c} |")
