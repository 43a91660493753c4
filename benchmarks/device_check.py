"""The main paths on every device present: fit, score, grad, sample, reverse_sde and OISM, on the
CPU and on ``cuda`` when torch sees one, with the timings side by side and a check that every
output lives on its input's device and agrees with the CPU result.

    python benchmarks/device_check.py [--n 20000] [--queries 5000]

Without a GPU it runs the CPU column only and says so.
"""

import argparse
import time

import torch

from heatscore.datasets import load_earth
from heatscore.estimators import DiffusionKernelSmoother, OperatorScoreMatching
from heatscore.heat_kernels import sample_heat_kernel
from heatscore.manifolds import ProductManifold, Sphere, Torus
from heatscore.samplers import default_times, reverse_sde


def _timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def _paths(device, n, n_queries):
    """{path name: (seconds, output on the CPU)} for one device."""
    out = {}
    X = load_earth("fire")[:n].to(device)
    Q = Sphere(2).random_uniform(n_queries, rng=0).to(device)
    est, s = _timed(lambda: DiffusionKernelSmoother(Sphere(2), time=2e-4).fit(X))
    out["smoother fit (S², fire)"] = (s, est.times_.cpu())
    for name, fn in [("score_samples", lambda: est.score_samples(Q)),
                     ("grad_log_density t=0.01", lambda: est.grad_log_density(Q, 0.01)),
                     ("sample", lambda: est.sample(n_queries, rng=0))]:
        value, s = _timed(fn)
        _check_device(name, value, device)
        out[name] = (s, value.cpu())
    times = default_times(Sphere(2), 2e-4, n_steps=50)
    value, s = _timed(lambda: reverse_sde(Sphere(2), est.grad_log_density, Q[:1000], times, rng=0))
    _check_device("reverse_sde", value, device)
    out["reverse_sde (1000 × 50 steps)"] = (s, value.cpu())
    T2 = Torus(2)
    Y = sample_heat_kernel(T2, T2.random_uniform(8, rng=1).repeat(250, 1), 0.05, rng=2).to(device)
    oism, s = _timed(lambda: OperatorScoreMatching(T2, n_levels=12).fit(Y))
    out["OISM fit (T², 12 levels)"] = (s, oism.coef_.cpu())
    value, s = _timed(lambda: oism.grad_log_density(Y[:500], 0.05))
    _check_device("OISM grad_log_density", value, device)
    out["OISM grad_log_density"] = (s, value.cpu())
    P = ProductManifold(Torus(2), Sphere(2))
    Z = sample_heat_kernel(P, P.random_uniform(8, rng=3).repeat(100, 1), 0.05, rng=4).to(device)
    prod, s = _timed(lambda: DiffusionKernelSmoother(P, time=0.05).fit(Z))
    value, s2 = _timed(lambda: prod.grad_log_density(Z[:200], 0.01))
    _check_device("product grad_log_density", value, device)
    out["T²×S² fit + grad"] = (s + s2, value.cpu())
    return out


def _check_device(name, value, device):
    if value.device.type != torch.device(device).type:
        raise AssertionError(f"{name}: output on {value.device}, input on {device}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=12_809)
    p.add_argument("--queries", type=int, default=5_000)
    a = p.parse_args()
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    if len(devices) == 1:
        print("torch sees no GPU: the CPU column only")
    results = {d: _paths(d, a.n, a.queries) for d in devices}
    print("| path | " + " | ".join(f"{d} s" for d in devices)
          + (" | ratio | max rel. diff |" if len(devices) > 1 else " |"))
    print("|---" * (len(devices) + 1 + (2 if len(devices) > 1 else 0)) + "|")
    for name, (s_cpu, v_cpu) in results["cpu"].items():
        row = f"| {name} | {s_cpu:.3f}"
        if len(devices) > 1:
            s_gpu, v_gpu = results["cuda"][name]
            rel = float(((v_gpu - v_cpu).abs() / v_cpu.abs().clamp_min(1e-12)).max()) if "sample" not in name \
                and "reverse" not in name else float("nan")
            row += f" | {s_gpu:.3f} | {s_cpu / s_gpu:.1f}× | {rel:.1e}"
        print(row + " |")


if __name__ == "__main__":
    main()
