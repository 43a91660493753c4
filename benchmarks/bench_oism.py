"""Operator-informed score matching (OISM) benchmarks: closed form vs neural score models.

    python benchmarks/bench_oism.py --part variance   # gradient / loss variance, residual vs DSM
    python benchmarks/bench_oism.py --part toy        # 2-D toys on T² and R²: log-likelihoods
    python benchmarks/bench_oism.py --part digits     # 64-d digits: training curves, bits/dim
    python benchmarks/bench_oism.py --part earth      # S² Earth data beside the smoother

Every table prints our figure (OISM or the OISM-residual network) beside the baseline's (a plain
DSM network) from the same run, and their ratio or difference. Sizes are flags and are printed.

Conventions.
- Toys: ``toy_2d`` draws in the box coordinates x ∈ [−4.5, 4.5)². T²: angles θ = (x + 4.5)π/4.5
  (``to_torus``), Brownian motion. R²: y = x / 2 (fixed affine map), OU with stationary N(0, I).
  Log-likelihoods are reported in the box coordinates x (T²: + 2 log(π/4.5); R²: − 2 log 2), so
  the rows compare with each other and with the true toy density (8 Gaussians: closed form).
- Digits: scikit-learn's 8×8 digits (1797 × 64 integers 0..16), a fixed permutation (seed 0),
  the first 1500 for training, the other 297 for testing; dequantised v = (k + u)/17, u ~ U(0, 1)
  (seed 1), and y = 4v − 2 ∈ [−2, 2)^64 under OU on Euclidean(64). Bits/dim of the dequantised
  pixels k + u: −(log p_y(y) + 64 log(4/17)) / (64 log 2).
- Held-out DSM losses compare models on the same clean points, times and x_t draws (fixed seed).
"""

import argparse
import math
import os
import time

import numpy as np
import torch

from heatscore.datasets import load_earth, to_torus, toy_2d
from heatscore.estimators import (DiffusionKernelSmoother, NeuralScoreModel, OperatorScoreMatching,
                                  dsm_per_example)
from heatscore.manifolds import Euclidean, Sphere, Torus

HALF_WIDTH = 4.5
R2_SCALE = 2.0
TOYS = ("8gaussians", "2spirals", "pinwheel")


def load():
    return "load average %.2f %.2f %.2f" % os.getloadavg()


def toy_data(name, space, n, seed):
    """(points on the manifold, log-Jacobian to add to get log-density in box coordinates)."""
    x = toy_2d(name, n, rng=seed)
    if space == "torus":
        return to_torus(x, HALF_WIDTH), 2 * math.log(math.pi / HALF_WIDTH)
    return x / R2_SCALE, -2 * math.log(R2_SCALE)


def manifold_of(space):
    return Torus(2) if space == "torus" else Euclidean(2)


def true_8gaussians_loglik(x):
    """log density of the 8 Gaussians toy at box points x (n, 2)."""
    k = torch.arange(8, dtype=torch.float64)
    c = 4 * torch.stack([torch.cos(k * math.pi / 4), torch.sin(k * math.pi / 4)], 1) / math.sqrt(2)
    var = 0.25 / 2
    d2 = ((x[:, None, :] - c[None]) ** 2).sum(-1)
    return torch.logsumexp(-d2 / (2 * var), 1) - math.log(8) - math.log(2 * math.pi * var)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


# --- 1. variance -----------------------------------------------------------------------------
def part_variance(a):
    """Per-example DSM gradients (trace of their covariance) and losses (variance), residual over
    plain, at three times and two network states, on the same clean points and x_t draws."""
    print(f"## variance: {a.space}, 8gaussians, n_train={a.n_train}, n_eval={a.n_eval}, "
          f"OISM n_levels={a.levels}, hidden={a.hidden}, trained states after {a.steps} Adam steps "
          f"(batch {a.batch}); {load()}")
    m = manifold_of(a.space)
    lam1 = m._first_eigenvalue()
    X, _ = toy_data("8gaussians", a.space, a.n_train, 0)
    Xe, _ = toy_data("8gaussians", a.space, a.n_eval, 1)
    oism, fit_s = timed(lambda: OperatorScoreMatching(m, n_levels=a.levels).fit(X))
    common = dict(hidden=a.hidden, batch_size=a.batch, t_min=a.t_min / lam1, rng=0)
    init = NeuralScoreModel(m, residual=oism, n_steps=0, **common).fit(X)
    plain, plain_s = timed(lambda: NeuralScoreModel(m, n_steps=a.steps, **common).fit(X))
    resid, resid_s = timed(lambda: NeuralScoreModel(m, residual=oism, n_steps=a.steps, **common).fit(X))
    print(f"(OISM fit {fit_s:.1f} s; training {plain_s:.1f} s plain, {resid_s:.1f} s residual)\n")
    print("| network state | t·λ_1 | grad var, residual | grad var, DSM | ratio | loss var, residual "
          "| loss var, DSM | ratio | mean loss, residual | mean loss, DSM |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    states = [("init (zero output, s_θ = 0)", init, init), (f"each trained {a.steps} steps", resid, plain)]
    for label, model_r, model_p in states:
        for tl in a.times:
            t = tl / lam1
            lr, gr = dsm_per_example(model_r, Xe, t=t, rng=7, residual="fitted")
            lp, gp = dsm_per_example(model_p, Xe, t=t, rng=7, residual=None)
            vr, vp = float(gr.var(0).sum()), float(gp.var(0).sum())
            wr, wp = float(lr.var()), float(lp.var())
            print(f"| {label} | {tl:g} | {vr:.4g} | {vp:.4g} | {vr / vp:.3f} | {wr:.4g} | {wp:.4g} | "
                  f"{wr / wp:.3f} | {float(lr.mean()):.4g} | {float(lp.mean()):.4g} |")
    print()


# --- 2. toys ---------------------------------------------------------------------------------
def part_toy(a):
    print(f"## toy: n_train={a.n_train}, n_test={a.n_test}, ODE steps={a.ode_steps}, t_min={a.t_min}/λ_1, "
          f"OISM n_levels={a.levels} (T²) / {a.levels_r2} (R², total degree), DSM net hidden={a.hidden}, "
          f"{a.steps} Adam steps (8gaussians: {a.steps_8g}), batch {a.batch}, lr {a.lr}; {load()}\n")
    print("| space | data | OISM loglik | DSM loglik | OISM − DSM (nats) | true loglik | OISM fit+ODE s | "
          "DSM train s | DSM ODE s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for space in a.spaces:
        m = manifold_of(space)
        t_min = a.t_min / m._first_eigenvalue()
        for name in a.datasets:
            X, jac = toy_data(name, space, a.n_train, 0)
            Xt, _ = toy_data(name, space, a.n_test, 1)
            truth = float(true_8gaussians_loglik(toy_2d(name, a.n_test, rng=1)).mean()) \
                if name == "8gaussians" else float("nan")
            levels = a.levels if space == "torus" else a.levels_r2

            def oism_ll():
                est = OperatorScoreMatching(m, n_levels=levels, t_min=t_min).fit(X)
                return est.score(Xt, steps=a.ode_steps)

            ll_o, s_o = timed(oism_ll)
            steps = a.steps_8g if name == "8gaussians" else a.steps
            net, s_tr = timed(lambda: NeuralScoreModel(m, t_min=t_min, hidden=a.hidden, n_steps=steps,
                                                       batch_size=a.batch, lr=a.lr, rng=0).fit(X))
            ll_n, s_n = timed(lambda: net.score(Xt, steps=a.ode_steps))
            ll_o, ll_n = ll_o + jac, ll_n + jac
            print(f"| {space} | {name} | {ll_o:.3f} | {ll_n:.3f} | {ll_o - ll_n:+.3f} | {truth:.3f} | "
                  f"{s_o:.0f} | {s_tr:.0f} | {s_n:.0f} |", flush=True)
            if a.diagnose:
                diagnose(a, m, X, Xt, t_min, levels, net, jac)
    print()


def diagnose(a, m, X, Xt, t_min, levels, net, jac):
    """Where the DSM network loses to OISM: held-out DSM loss per time (OISM's through a residual
    model with n_steps=0, whose network is zero) and the network's likelihood at more ODE steps."""
    oism = OperatorScoreMatching(m, n_levels=levels, t_min=t_min).fit(X)
    base = NeuralScoreModel(m, residual=oism, t_min=t_min, hidden=a.hidden, n_steps=0, rng=0).fit(X)
    print("\n| t·λ_1 | held-out DSM loss, OISM | DSM network | network − OISM |\n|---|---|---|---|")
    lam1 = m._first_eigenvalue()
    for tl in (a.t_min, 1e-2, 1e-1, 1.0):
        lo, ln = base.loss(Xt, t=tl / lam1, rng=5), net.loss(Xt, t=tl / lam1, rng=5)
        print(f"| {tl:g} | {lo:.4f} | {ln:.4f} | {ln - lo:+.4f} |", flush=True)
    ln = net.score_samples(Xt, steps=4 * a.ode_steps) + jac
    lo = oism.score_samples(Xt, steps=4 * a.ode_steps) + jac
    print(f"\nAt {4 * a.ode_steps} ODE steps, loglik mean / median / 1% quantile: OISM "
          f"{float(lo.mean()):.3f} / {float(lo.median()):.3f} / {float(lo.quantile(0.01)):.3f}; DSM network "
          f"{float(ln.mean()):.3f} / {float(ln.median()):.3f} / {float(ln.quantile(0.01)):.3f}\n", flush=True)


# --- 3. digits -------------------------------------------------------------------------------
def digits_data():
    from sklearn.datasets import load_digits

    k = torch.as_tensor(load_digits().data, dtype=torch.float64)
    perm = torch.as_tensor(np.random.default_rng(0).permutation(k.shape[0]))
    u = torch.rand(k.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = 4 * (k[perm] + u[perm]) / 17 - 2
    return y[:1500], y[1500:]


def bits_per_dim(loglik_y):
    return -(loglik_y + 64 * math.log(4 / 17)) / (64 * math.log(2))


def part_digits(a):
    print(f"## digits: 1500 train / 297 test, OISM base separable n_levels={a.levels_digits}, "
          f"hidden={a.hidden}, {a.steps} Adam steps, batch {a.batch}, lr {a.lr}, t_min={a.t_min}, "
          f"held-out DSM loss every {a.eval_every} steps on the 297 test points (fixed times from "
          f"the residual model's 64-time grid, fixed x_t; evaluation time excluded from wall-clock); "
          f"{load()}\n")
    m = Euclidean(64)
    Xtr, Xte = digits_data()
    oism, fit_s = timed(lambda: OperatorScoreMatching(m, n_levels=a.levels_digits, basis="separable",
                                                      t_min=a.t_min).fit(Xtr))
    t_max = 10.0
    grid = torch.exp(torch.linspace(math.log(a.t_min), math.log(t_max), 64, dtype=torch.float64))
    t_test = grid[torch.randint(64, (Xte.shape[0],), generator=torch.Generator().manual_seed(3))]
    curves = {}
    for label, base in (("DSM", None), ("OISM residual", oism)):
        rows, spent = [], [0.0]

        def callback(model, step, _loss, rows=rows, spent=spent):
            if step % a.eval_every and step != a.steps - 1:
                return
            t0 = time.perf_counter()
            held = model.loss(Xte, t=t_test, rng=5)
            rows.append((step + 1, float(model.time_curve_[step]) - spent[0], held))
            spent[0] += time.perf_counter() - t0

        model = NeuralScoreModel(m, residual=base, t_min=a.t_min, t_max=t_max, hidden=a.hidden,
                                 n_steps=a.steps, batch_size=a.batch, lr=a.lr, rng=0, n_times=64)
        model.fit(Xtr, callback=callback)
        curves[label] = (model, rows)
    # the wall-clock of a row is the training time up to that step, evaluations excluded
    print("| step | DSM: s | DSM: held-out loss | residual: s | residual: held-out loss |")
    print("|---|---|---|---|---|")
    for (s1, w1, l1), (_, w2, l2) in zip(curves["DSM"][1], curves["OISM residual"][1]):
        print(f"| {s1} | {w1:.1f} | {l1:.3f} | {w2:.1f} | {l2:.3f} |")
    dsm_final, dsm_wall = curves["DSM"][1][-1][2], curves["DSM"][1][-1][1]
    reach = [w for _, w, l in curves["OISM residual"][1] if l <= dsm_final]
    setup = float(curves["OISM residual"][0].time_curve_[0] - curves["DSM"][0].time_curve_[0])
    print(f"\nOISM base alone (s_θ = 0, the residual model's first row) fit in {fit_s:.1f} s (not in "
          f"the curves); the residual model's first step is {setup:.1f} s longer than DSM's (α(t) "
          f"solved and cached for the 64 training times, ridge chosen per time; included in its s). "
          f"DSM final held-out loss {dsm_final:.3f} at {dsm_wall:.1f} s; the residual model reaches it "
          + (f"at {reach[0]:.1f} s = {reach[0] / dsm_wall:.2f} × DSM's wall-clock"
             f" ({'within' if reach[0] <= dsm_wall / 2 else 'not within'} half)." if reach
             else "not within the budget."))
    if a.bpd_points:
        xb = Xte[:a.bpd_points]
        print(f"\nbits/dim on the first {a.bpd_points} test points, {a.ode_steps} ODE steps "
              f"(networks: Hutchinson divergence, 1 probe; OISM: exact closed-form divergence):\n")
        print("| model | bits/dim | s |")
        print("|---|---|---|")
        ll, s = timed(lambda: oism.score(xb, steps=a.ode_steps))
        print(f"| OISM closed form (separable, {a.levels_digits} levels) | {bits_per_dim(ll):.3f} | {s:.0f} |",
              flush=True)
        for label, (model, _) in curves.items():
            ll, s = timed(lambda model=model: model.score(xb, steps=a.ode_steps, divergence="hutchinson", rng=0))
            print(f"| {label} network | {bits_per_dim(ll):.3f} | {s:.0f} |", flush=True)
    print()


# --- 4. earth --------------------------------------------------------------------------------
def part_earth(a):
    from heatscore.bench.earth import split

    name = a.earth
    print(f"## earth: {name}, split seed 0 (80/10/10; all fitted on train + validation), "
          f"t_min={a.earth_t_min}, OISM n_levels={a.levels_earth}, DSM hidden={a.hidden}, "
          f"{a.steps} Adam steps, batch {a.batch}, {a.ode_steps} ODE steps, test NLL (nats, area "
          f"measure of the unit sphere); {load()}\n")
    m = Sphere(2)
    X = load_earth(name)
    tr, va, te = split(X.shape[0], 0)
    Xf, Xt = X[np.concatenate([tr, va])], X[te]
    print("| model | test NLL | s |")
    print("|---|---|---|")
    nll, s = timed(lambda: -float(DiffusionKernelSmoother(m, t_min=a.earth_t_min).fit(Xf).score_samples(Xt).mean()))
    print(f"| smoother (baseline) | {nll:.3f} | {s:.0f} |", flush=True)
    nll, s = timed(lambda: -OperatorScoreMatching(m, n_levels=a.levels_earth, t_min=a.earth_t_min)
                   .fit(Xf).score(Xt, steps=a.ode_steps))
    print(f"| OISM closed form | {nll:.3f} | {s:.0f} |", flush=True)
    net, s_tr = timed(lambda: NeuralScoreModel(m, t_min=a.earth_t_min, hidden=a.hidden, n_steps=a.steps,
                                               batch_size=a.batch, lr=a.lr, rng=0).fit(Xf))
    nll, s = timed(lambda: -net.score(Xt, steps=a.ode_steps))
    print(f"| DSM network | {nll:.3f} | {s_tr + s:.0f} |\n", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", required=True, choices=["variance", "toy", "digits", "earth"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--space", default="torus", choices=["torus", "r2"], help="variance: the space")
    p.add_argument("--spaces", nargs="*", default=["torus", "r2"], help="toy: the spaces")
    p.add_argument("--datasets", nargs="*", default=list(TOYS))
    p.add_argument("--n-train", type=int, default=8000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-eval", type=int, default=2000, help="variance: points per estimate")
    p.add_argument("--times", type=float, nargs="*", default=[0.01, 0.1, 1.0], help="variance: t·λ_1")
    p.add_argument("--levels", type=int, default=40, help="OISM levels on T²")
    p.add_argument("--levels-r2", type=int, default=20, help="OISM total degree on R²")
    p.add_argument("--levels-digits", type=int, default=8)
    p.add_argument("--levels-earth", type=int, default=30)
    p.add_argument("--t-min", type=float, default=1e-3, help="× 1/λ_1 (digits: absolute)")
    p.add_argument("--hidden", type=int, nargs="*", default=[128, 128, 128])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--steps-8g", type=int, default=4000)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ode-steps", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--bpd-points", type=int, default=100)
    p.add_argument("--diagnose", action="store_true", help="toy: per-time losses, more ODE steps")
    p.add_argument("--earth", default="fire")
    p.add_argument("--earth-t-min", type=float, default=1e-5)
    a = p.parse_args()
    a.hidden = tuple(a.hidden)
    torch.set_num_threads(a.threads)
    {"variance": part_variance, "toy": part_toy, "digits": part_digits, "earth": part_earth}[a.part](a)


if __name__ == "__main__":
    main()
