"""A neural peer in the same run: Riemannian flow matching (facebookresearch's ``flow-matching``).

    python benchmarks/bench_flow_matching.py                      # volcano, fire, general; 1 and 3 min
    python benchmarks/bench_flow_matching.py --budgets 60 180 600 # training budgets in seconds
    python benchmarks/bench_flow_matching.py --datasets volcano --budgets 30

``flow-matching`` is a benchmark-only peer (licence CC BY-NC): ``pip install flow-matching`` or
the ``peer`` extra; never a requirement. Without it the script prints a message and exits 0.

Protocol. Split 80/10/10 as :func:`heatscore.bench.earth.split` (seed ``--seed``); both models
fit the training 80% (validation unused), both are scored on the test 10%.
- heatscore: ``DiffusionKernelSmoother(time="multiscale")`` with its default t_min; fit time.
- flow matching, with the package's documented API: ``GeodesicProbPath(CondOTScheduler(), M)``
  on its ``Sphere`` (S², unit vectors) or ``FlatTorus`` ([0, 2π)²), source x_0 uniform on M,
  target x_1 the data, loss |v_θ(x_t, t) − dx_t|² (``path.sample(x_0, x_1, t).dx_t``). The
  velocity network: an MLP (``HIDDEN``, SiLU) on features of x (S²: x; T²: cos θ, sin θ, so the
  field is periodic) and t, its output projected onto the tangent space (``M.proju``). Adam,
  lr 1e-3, batch ``BATCH``, float32, on the CPU, trained for the largest budget in wall-clock
  seconds (the clock stops while it is evaluated).
- NLL of flow matching at checkpoints (the budgets and a few earlier times): the package has no
  Riemannian likelihood, so its velocity field is integrated with heatscore's
  :func:`heatscore.samplers.log_likelihood` (instantaneous change of variables, Heun steps,
  exact Riemannian divergence by autograd in float64): with τ = 1 − t the data-to-noise ODE is
  dx/dτ = −v_{1−τ}(x), i.e. heatscore's forward ODE −s_τ with s_τ = v_{1−τ}, ending in the
  uniform source law. log p is then w.r.t. the area of S² (log p_source = −log 4π) and Lebesgue
  dθ₁dθ₂ on [0, 2π)² (−log 4π²): heatscore's measures, so no conversion is needed.
"""

import argparse
import copy
import math
import os
import sys
import time

import numpy as np
import torch

try:
    from flow_matching.path import GeodesicProbPath
    from flow_matching.path.scheduler import CondOTScheduler
    from flow_matching.utils.manifolds import FlatTorus
    from flow_matching.utils.manifolds import Sphere as FMSphere
except ImportError:
    GeodesicProbPath = None

from heatscore.bench.earth import split
from heatscore.datasets import load_earth, load_protein_torsions
from heatscore.estimators import DiffusionKernelSmoother
from heatscore.manifolds import Sphere, Torus
from heatscore.samplers import log_likelihood

DATASETS = ("volcano", "fire", "general")
HIDDEN = (256, 256, 256)
BATCH = 512
LR = 1e-3
#: Checkpoints (seconds of training) before the budgets, where they are shorter.
EARLY = (15, 30)


def load(name):
    """(points (n, *), heatscore manifold, flow-matching manifold)."""
    if name == "general":
        return load_protein_torsions("general"), Torus(2), FlatTorus()
    return load_earth(name), Sphere(2), FMSphere()


class Velocity(torch.nn.Module):
    """v_θ(x, t): (n, ambient) tangent at x; x (n, ambient), t (n,) or a float in [0, 1]."""

    def __init__(self, manifold, ambient):
        super().__init__()
        self.manifold, self.torus = manifold, isinstance(manifold, FlatTorus)
        width = (2 * ambient if self.torus else ambient) + 1
        layers = []
        for h in HIDDEN:
            layers += [torch.nn.Linear(width, h), torch.nn.SiLU()]
            width = h
        self.net = torch.nn.Sequential(*layers, torch.nn.Linear(width, ambient))

    def forward(self, x, t):
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0]).reshape(-1, 1)
        f = torch.cat([torch.cos(x), torch.sin(x)], 1) if self.torus else x
        return self.manifold.proju(x, self.net(torch.cat([f, t], 1)))


def fm_log_likelihood(model, m, X, steps):
    """(n,) log p of the flow's model at X (heatscore's measure; module docstring)."""
    v = copy.deepcopy(model).double()
    times = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    return log_likelihood(m, lambda x, tau: v(x, 1.0 - tau), X, times)


def run_one(name, budgets, seed, steps, out=print):
    """Train flow matching on one split; prints and returns rows (seconds, Adam steps, test NLL)."""
    X, m, fm = load(name)
    tr, _, te = split(X.shape[0], seed)
    train, test = X[tr], X[te]
    t0 = time.perf_counter()
    est = DiffusionKernelSmoother(m, time="multiscale").fit(train)
    hs_fit = time.perf_counter() - t0
    hs_nll = -est.score(test)
    torch.manual_seed(seed)
    ambient = train.shape[1]
    model = Velocity(fm, ambient)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    path = GeodesicProbPath(CondOTScheduler(), fm)
    x1_all = train.to(torch.float32)
    gen = torch.Generator().manual_seed(seed)
    marks = sorted({c for c in EARLY if c < max(budgets)} | set(budgets))
    rows, clock, n_steps = [], 0.0, 0
    for mark in marks:
        start = time.perf_counter()
        while clock + (time.perf_counter() - start) < mark:
            x1 = x1_all[torch.randint(0, x1_all.shape[0], (BATCH,), generator=gen)]
            if isinstance(fm, FlatTorus):
                x0 = 2 * math.pi * torch.rand(BATCH, ambient, generator=gen)
            else:
                x0 = torch.nn.functional.normalize(torch.randn(BATCH, ambient, generator=gen), dim=1)
            t = torch.rand(BATCH, generator=gen)
            s = path.sample(x_0=x0, x_1=x1, t=t)
            loss = (model(s.x_t, s.t.reshape(-1)) - s.dx_t).pow(2).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            n_steps += 1
        clock += time.perf_counter() - start
        nll = -float(fm_log_likelihood(model, m, test, steps).mean())
        rows.append((clock, n_steps, nll))
        out(f"| {name} | {mark:g} | {n_steps} | {nll:.3f} | {hs_nll:.3f} | {hs_fit:.1f} | "
            f"{nll - hs_nll:+.3f} |")
    reached = [c for c, _, nll in rows if nll <= hs_nll]
    return rows, hs_nll, hs_fit, reached[0] if reached else None


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="*", default=list(DATASETS), choices=DATASETS)
    p.add_argument("--budgets", nargs="*", type=float, default=[60.0, 180.0],
                   help="training budgets in wall-clock seconds (default 60 180)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ode-steps", type=int, default=50,
                   help="Heun steps of the likelihood ODE (default 50: the default run stays within 15 minutes)")
    args = p.parse_args()
    if GeodesicProbPath is None:
        print("flow_matching is not installed (pip install flow-matching, a CC BY-NC benchmark-only "
              "peer): skipping this benchmark")
        return
    if any(b <= 0 for b in args.budgets):
        p.error(f"--budgets must be positive seconds, found {args.budgets}")
    torch.set_num_threads(2)
    print(f"load average {os.getloadavg()[0]:.2f}; seed {args.seed}; ODE steps {args.ode_steps}; "
          f"MLP {HIDDEN}, batch {BATCH}")
    print("| data | train s (budget) | Adam steps | FM test NLL | heatscore NLL | heatscore fit s | "
          "FM − heatscore |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for name in args.datasets:
        _, hs_nll, hs_fit, reached = run_one(name, args.budgets, args.seed, args.ode_steps)
        summary.append((name, reached))
    print(f"load average {os.getloadavg()[0]:.2f}")
    for name, reached in summary:
        print(f"{name}: flow matching " + (f"reached heatscore's NLL after {reached:.0f} s of training"
                                           if reached is not None else
                                           f"did not reach heatscore's NLL within {max(args.budgets):g} s"))


if __name__ == "__main__":
    sys.exit(main())
