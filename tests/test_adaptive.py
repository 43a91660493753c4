"""time="adaptive": a diffusion time per datum, p̂ = Σ_i w_i k_{t_i}(·, x_i), exactly."""

import math

import numpy as np
import pytest
import torch

from conftest import N_SIGMA
from heatscore.estimators import DiffusionKernelSmoother
from heatscore.estimators import _smoother
from heatscore.heat_kernels import sample_heat_kernel
from heatscore.manifolds import Sphere, Torus, TriangleMesh
from heatscore.manifolds._mesh_geometry import icosphere


def _two_scales(m, seed):
    """A tight cluster of 60 points beside a wide one of 60, with 5 exact repeats."""
    c = m.sample_stationary(2, rng=seed)
    x = torch.cat([sample_heat_kernel(m, c[:1].expand(60, *c.shape[1:]), 1e-4, rng=seed + 1),
                   sample_heat_kernel(m, c[1:].expand(60, *c.shape[1:]), 0.05, rng=seed + 2)])
    x[100:105] = x[3]
    return x


def _brute(m, est, Q, t):
    """(log p, ∇ log p) of Σ_i w_i k_{t_i + t}(q, x_i), pair by pair."""
    X, w, ti = est.X_, est.sample_weight_, est.point_times_
    n, k = X.shape[0], Q.shape[0]
    lg, g = m._heat_backend().log_and_grad(Q.repeat_interleave(n, 0), X.repeat(k, 1),
                                           (ti + t).repeat(k), True)
    v = (lg + torch.log(w).repeat(k)).reshape(k, n)
    resp = torch.softmax(v, dim=1).reshape(-1, 1)
    return torch.logsumexp(v, dim=1), (resp * g).reshape(k, n, -1).sum(dim=1)


@pytest.fixture(scope="module", params=["sphere", "torus"])
def fitted(request):
    m = Sphere(2) if request.param == "sphere" else Torus(2)
    X = _two_scales(m, 0)
    w = torch.linspace(1.0, 2.0, X.shape[0], dtype=torch.float64)
    # t_min above the torus's slow level search at tiny times (the repeats start the grid there)
    return m, DiffusionKernelSmoother(m, time="adaptive", t_min=1e-5).fit(X, sample_weight=w)


def test_rule_and_its_times(fitted):
    m, est = fitted
    pt = est.point_times_
    assert pt.shape == (est.X_.shape[0],) and bool((pt > 0).all())
    assert bool((pt >= est.t_min_ * (1 - 1e-12)).all())
    assert bool((pt <= 1.0 / m._first_eigenvalue() * (1 + 1e-12)).all())
    assert torch.equal(torch.unique(pt), est.times_)
    assert bool((pt[100:105] == pt[3]).all())                      # equal rows, equal times
    k = torch.log(pt / est.pilot_time_) / math.log(_smoother.RHO)  # on the lattice
    assert torch.allclose(k, torch.round(k), atol=1e-9)
    assert est.alpha_ in (0.0,) + _smoother.ALPHAS
    assert abs(float(est.weights_.sum()) - 1) < 1e-12
    # two scales of data: the tight cluster gets the shorter times
    assert float(pt[:60].median()) < float(pt[60:].median())


@pytest.mark.parametrize("t", [0.0, 3e-3])
def test_density_and_score_are_the_per_point_sum(fitted, t):
    """log p̂_t and ∇ log p̂_t against the pair-by-pair sum at times t_i + t (semigroup)."""
    m, est = fitted
    Q = torch.cat([m.sample_stationary(30, rng=5), est.X_[:20]])
    ref, gref = _brute(m, est, Q, t)
    out = est.log_density(Q, t)
    assert float((out - ref).abs().max()) < 1e-6
    g = est.grad_log_density(Q, t)
    rel = (g - gref).norm(dim=1) / gref.norm(dim=1).clamp(min=1.0)
    assert float(rel.max()) < 1e-6


def test_adaptive_beats_or_matches_the_pilot(fitted):
    """The search includes α = 0 (the pilot's single time): its LOO score is no worse."""
    m, est = fitted
    pilot = DiffusionKernelSmoother(m, time=est.pilot_time_).fit(est.X_, sample_weight=est.sample_weight_)
    rows = est._loo_rows
    w = est.sample_weight_[rows]
    loo = pilot._loo(est.pilot_time_, rows)
    assert est.adaptive_log_likelihood_ >= float((w * loo).sum() / w.sum()) - 1e-9


def test_exact_samples_use_each_points_time():
    """E cos(y_1) = Σ_i w_i e^{−t_i} cos(x_i1) on T² (the circle's heat semigroup)."""
    m = Torus(2)
    est = DiffusionKernelSmoother(m, time="adaptive", t_min=1e-5).fit(_two_scales(m, 1))
    n = 20000
    Y = est.sample(n, rng=3)
    exact = float((est.sample_weight_ * torch.exp(-est.point_times_) * torch.cos(est.X_[:, 0])).sum())
    got = torch.cos(Y[:, 0])
    assert abs(float(got.mean()) - exact) < N_SIGMA * float(got.std()) / math.sqrt(n)


def test_save_and_load_round_trip(tmp_path, fitted):
    m, est = fitted
    path = tmp_path / "adaptive.npz"
    est.save(path)
    back = DiffusionKernelSmoother.load(path)
    Q = m.sample_stationary(20, rng=9)
    assert torch.equal(back.point_times_, est.point_times_)
    assert back.alpha_ == est.alpha_ and back.pilot_time_ == est.pilot_time_
    assert torch.equal(back.log_density(Q, 1e-3), est.log_density(Q, 1e-3))


def test_load_rejects_inconsistent_point_times(tmp_path, fitted):
    m, est = fitted
    path = tmp_path / "adaptive.npz"
    est.save(path)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    bad = dict(arrays, point_times_=arrays["point_times_"] * 1.5)
    np.savez(path, **bad)
    with pytest.raises(ValueError, match="point_times_"):
        DiffusionKernelSmoother.load(path)
    dup = arrays["point_times_"].copy()
    dup[100] = dup[0] if dup[0] != dup[3] else dup[60]           # a repeated row, another time
    if not np.array_equal(np.unique(dup), arrays["times"]):
        pytest.skip("the changed time is not among the saved times")
    np.savez(path, **dict(arrays, point_times_=dup))
    with pytest.raises(ValueError, match="equal rows"):
        DiffusionKernelSmoother.load(path)
    missing = {k: v for k, v in arrays.items() if k != "point_times_"}
    np.savez(path, **missing)
    with pytest.raises(ValueError, match="point_times_"):
        DiffusionKernelSmoother.load(path)


def test_what_adaptive_does_not_serve():
    mesh = TriangleMesh(*icosphere(1))
    with pytest.raises(NotImplementedError, match="adaptive"):
        DiffusionKernelSmoother(mesh, time="adaptive").fit(mesh.random_uniform(20, rng=0))
    X = Sphere(2).sample_stationary(20, rng=0)
    with pytest.raises(ValueError, match="shrinkage"):
        DiffusionKernelSmoother(Sphere(2), time="adaptive", shrinkage=True).fit(X)
    with pytest.raises(ValueError, match="time must be"):
        DiffusionKernelSmoother(Sphere(2), time="adaptiv").fit(X)
