"""MeshHeatDensity: the heat-diffused P1 histogram on a mesh, normalised on the real surface.

References: face quadrature (exact for P1), the mesh heat kernel (u_τ(v) = Σ_i w_i k_τ(v, x_i)),
finite differences inside faces, multinomial face counts and Dirichlet moments of the sampler,
repeated points, and the scaling of a mesh by 1000.
"""

import math

import numpy as np
import pytest
import torch
from conftest import N_SIGMA, TOL, cached_mesh

from heatscore.estimators._mesh_density import MeshHeatDensity
from heatscore.heat_kernels import HeatKernel
from heatscore.manifolds._mesh_kernel import LINEAR_FLOOR
from heatscore.manifolds import Sphere, TriangleMesh
from heatscore.manifolds._mesh_geometry import icosphere

#: Central finite differences of log p inside a face (step 1e-6 ē): round-off of log differences.
FD_RTOL = 1e-6

def _centroids(m):
    nf = m.faces.shape[0]
    return m.from_barycentric(torch.arange(nf), torch.full((nf, 3), 1.0 / 3, dtype=torch.float64))


@pytest.mark.parametrize("name", ["ico2", "spot"])
@pytest.mark.parametrize("tau", [1e-4, 3e-3])
def test_integrates_to_one_by_face_quadrature(name, tau, gen):
    m = cached_mesh(name)
    d = MeshHeatDensity(m, m.random_uniform(40, rng=gen), torch.rand(40, generator=gen))
    assert abs(d.integral(tau) - 1.0) <= TOL[torch.float64][0]
    p = torch.exp(d.log_and_grad(_centroids(m), tau, want_grad=False)[0])
    assert abs(float((m.face_areas * p).sum()) - 1.0) <= 1e-12                # centroid rule


@pytest.mark.parametrize("tau", [1e-14, 2e-3])
def test_equals_normalised_heat_kernel_mixture(tau, gen):
    """p_τ ∝ Σ_i w_i k_τ(·, x_i); at τ = 1e-14 most vertex values are far below float64's range."""
    m = cached_mesh("spot")
    X = m.random_uniform(3, rng=gen)
    w = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    d = MeshHeatDensity(m, X, w)
    k = HeatKernel(m)
    Q = m.random_uniform(6, rng=gen)
    log_mix = torch.logsumexp(k.log(Q, X, tau) + torch.log(w), dim=1)
    vertex_mix = (k(m.vertices, X, tau) * w).sum(1)
    Z = (m.face_areas * vertex_mix[m.faces].mean(1)).sum()
    log_p, grad = d.log_and_grad(Q, tau)
    assert bool(torch.isfinite(log_p).all()) and bool(torch.isfinite(grad).all())
    if tau < 1e-6:                                     # the linear values underflow at Q's corners
        corner_u = d._values(tau)[m.faces[m.locate(Q)[0]]]
        assert bool((corner_u < LINEAR_FLOOR * d._u0.max()).any())
    torch.testing.assert_close(log_p, log_mix - torch.log(Z), rtol=1e-10, atol=1e-9)


def test_gradient_matches_finite_differences(gen):
    m = cached_mesh("spot")
    d = MeshHeatDensity(m, m.random_uniform(30, rng=gen))
    Q = m.random_uniform(8, rng=gen)
    v = m.random_tangent_normal(Q, rng=gen)
    v = v / v.norm(dim=1, keepdim=True)
    eps = 1e-6 * m.mean_edge_length
    faces = m.locate(Q)[0]
    Qp, Qm = Q + eps * v, Q - eps * v
    assert bool((m.locate(Qp)[0] == faces).all()) and bool((m.locate(Qm)[0] == faces).all())
    tau = 1e-3
    log_p, g = d.log_and_grad(Q, tau)
    fd = (d.log_and_grad(Qp, tau, False)[0] - d.log_and_grad(Qm, tau, False)[0]) / (2 * eps)
    assert bool(((g * v).sum(1) - fd).abs().le(FD_RTOL * g.norm(dim=1)).all())
    assert float((g * m.face_normals[faces]).sum(1).abs().max()) <= 1e-10 * float(g.norm(dim=1).max())


def test_sampler_face_frequencies_and_linear_density_inside(gen):
    m = cached_mesh("ico1")
    d = MeshHeatDensity(m, m.random_uniform(3, rng=gen))
    tau = 0.02
    n = 40000
    Y = d.sample(n, tau, rng=11)
    assert bool(m.belongs(Y).all())
    faces, bary = m.locate(Y)
    nf = m.faces.shape[0]
    # face probabilities: the exact integral of p over each face (corner rule, exact for P1)
    corners = m.from_barycentric(torch.arange(nf).repeat_interleave(3),
                                 torch.eye(3, dtype=torch.float64).repeat(nf, 1))
    p_corner = torch.exp(d.log_and_grad(corners, tau, False)[0]).reshape(nf, 3)
    prob = m.face_areas * p_corner.mean(1)
    torch.testing.assert_close(prob.sum(), torch.tensor(1.0, dtype=torch.float64))
    counts = torch.bincount(faces, minlength=nf).to(torch.float64)
    se = torch.sqrt(n * prob * (1 - prob))
    assert bool(((counts - n * prob).abs() <= N_SIGMA * se).all())
    # inside a face the density ∝ Σ_a u_a b_a: E[b_c] = (1 + u_c / Σ_a u_a) / 4
    u = p_corner[faces]
    resid = bary - (1 + u / u.sum(1, keepdim=True)) / 4                          # (n, 3)
    se_b = resid.std(0) / math.sqrt(n)
    assert bool((resid.mean(0).abs() <= N_SIGMA * se_b).all())
    torch.testing.assert_close(Y, d.sample(n, tau, rng=11), rtol=0, atol=0)


def test_integer_weights_equal_repeated_points(gen):
    m = cached_mesh("ico2")
    X = m.random_uniform(3, rng=gen)
    weighted = MeshHeatDensity(m, X, torch.tensor([2.0, 1.0, 3.0]))
    repeated = MeshHeatDensity(m, X[torch.tensor([0, 0, 1, 2, 2, 2])])
    Q = m.random_uniform(10, rng=gen)
    for tau in (1e-3, 0.05):
        a, ga = weighted.log_and_grad(Q, tau)
        b, gb = repeated.log_and_grad(Q, tau)
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(ga, gb)


def test_scale_invariance(gen):
    """Mesh × 1000 with times × 1e6: the same density × 1e-6 (per unit area), gradient × 1e-3."""
    V, F = icosphere(2)
    m, big = TriangleMesh(V, F), TriangleMesh(1000.0 * V, F)
    X = m.random_uniform(20, rng=gen)
    Q = m.random_uniform(10, rng=gen)
    d, d_big = MeshHeatDensity(m, X), MeshHeatDensity(big, 1000.0 * X)
    for tau in (1e-3, 0.1):
        a, ga = d.log_and_grad(Q, tau)
        b, gb = d_big.log_and_grad(1000.0 * Q, 1e6 * tau)
        torch.testing.assert_close(b, a - math.log(1e6), rtol=0, atol=1e-9)
        torch.testing.assert_close(1000.0 * gb, ga, rtol=1e-9, atol=1e-9)


def test_heldout_path_equals_fresh_fits(gen):
    m = cached_mesh("spot")
    X = m.random_uniform(60, rng=gen)
    w = torch.rand(60, generator=gen, dtype=torch.float64)
    d = MeshHeatDensity(m, X, w)
    train, test = torch.arange(0, 45), torch.arange(45, 60)
    taus = [3e-3, 1e-4, 1e-3]                                                   # any order
    scores = d.heldout_log_likelihood(train, test, taus)
    fresh = MeshHeatDensity(m, X[train], w[train])
    wt = w[test] / w[test].sum()
    for tau, score in zip(taus, scores):
        expected = (wt * fresh.log_and_grad(X[test], tau, False)[0]).sum()
        torch.testing.assert_close(score, expected, rtol=1e-10, atol=1e-10)


def test_select_time_picks_the_best_scored_time(gen):
    """Data drawn from p_{τ0} of five centres: the held-out optimum is a moderate time, the
    search stops past it, and it beats the uniform density."""
    m = cached_mesh("spot")
    tau0 = 2e-3
    data = MeshHeatDensity(m, m.random_uniform(5, rng=gen)).sample(400, tau0, rng=gen)
    d = MeshHeatDensity(m, data)
    t_lo, t_hi = m.mean_edge_length ** 2 / 10, 1 / 1.59
    tau, times, scores = d.select_time(t_lo, t_hi, rng=3)
    assert t_lo <= tau < 30 * tau0 and float(times.max()) < t_hi
    assert tau == float(times[int(torch.argmax(scores))])
    assert bool((times[1:] > times[:-1]).all())
    again = d.select_time(t_lo, t_hi, rng=3)
    assert again[0] == tau and torch.equal(again[2], scores)
    assert float(scores.max()) > -math.log(m.area) + 0.5


def test_components_without_data_have_zero_density():
    V, F = icosphere(1)
    m = TriangleMesh(np.vstack([V, V + 5.0]), np.vstack([F, F + len(V)]))
    X = torch.as_tensor(V[:3])
    d = MeshHeatDensity(m, X)
    Q = torch.as_tensor(np.vstack([V[5], V[7] + 5.0]))
    log_p, grad = d.log_and_grad(Q, 0.05)
    assert math.isfinite(float(log_p[0])) and float(log_p[1]) == -math.inf
    assert bool((grad[1] == 0).all())
    assert abs(d.integral(0.05) - 1.0) <= TOL[torch.float64][0]
    assert bool((m.locate(d.sample(200, 0.05, rng=0))[0] < F.shape[0]).all())


def test_validation():
    m = cached_mesh("ico1")
    X = m.random_uniform(5, rng=0)
    with pytest.raises(TypeError, match="mesh must be a TriangleMesh"):
        MeshHeatDensity(Sphere(2), X)
    with pytest.raises(ValueError, match="at least one point"):
        MeshHeatDensity(m, X[:0])
    with pytest.raises(ValueError, match="X has 1 of 5 points off"):
        MeshHeatDensity(m, X + torch.tensor([[10.0, 0, 0]] + [[0.0, 0, 0]] * 4))
    with pytest.raises(ValueError, match=r"sample_weight must have shape \(5,\)"):
        MeshHeatDensity(m, X, torch.ones(4))
    with pytest.raises(ValueError, match="non-negative with a positive sum"):
        MeshHeatDensity(m, X, -torch.ones(5))
    d = MeshHeatDensity(m, X)
    with pytest.raises(ValueError, match="tau must be > 0"):
        d.log_and_grad(X, 0.0)
    with pytest.raises(ValueError, match="taus must be > 0"):
        d.heldout_log_likelihood([0, 1], [2], [1e-3, -1.0])
    with pytest.raises(ValueError, match=r"test_idx has indices out of range \[0, 5\)"):
        d.heldout_log_likelihood([0, 1], [7], [1e-3])
    with pytest.raises(ValueError, match="train_idx must be a non-empty 1-d integer"):
        d.heldout_log_likelihood([], [2], [1e-3])
    with pytest.raises(ValueError, match="t_hi must exceed t_lo"):
        d.select_time(1e-2, 1e-3)
    with pytest.raises(ValueError, match="holdout must be in"):
        d.select_time(1e-3, 1e-2, holdout=1.5)
    with pytest.raises(ValueError, match="at least 2 points"):
        MeshHeatDensity(m, X[:1]).select_time(1e-3, 1e-2)
    with pytest.raises(ValueError, match="n must be >= 1"):
        d.sample(0, 1e-3)


def test_large_times_take_the_certified_spectral_sum(gen, monkeypatch):
    """At large τ the spectral sum replaces uniformization and agrees with it (bound 1e-10)."""
    import heatscore.manifolds._mesh_kernel as mk

    m = cached_mesh("ico3")
    X = m.random_uniform(50, rng=gen)
    dens = MeshHeatDensity(m, X)
    tau = 1.5 * mk.SPECTRAL_FROM_PRODUCTS / dens.flow.rate
    spectral = dens._spectral(tau)
    assert spectral is not None
    monkeypatch.setattr(mk, "SPECTRAL_FROM_PRODUCTS", math.inf)
    series = MeshHeatDensity(m, X)._values(tau)
    torch.testing.assert_close(spectral, series, rtol=1e-9, atol=0)
    assert MeshHeatDensity(m, X)._spectral(1e-3) is None          # small τ: the series
