"""Closed-form operator-informed score matching: exact Gram matrices, exact scores of Gaussians,
the torus convergence target, the ISM objective against Monte Carlo, likelihood and samples."""

import math

import numpy as np
import pytest
import torch

from heatscore import NotFittedError
from heatscore.estimators import OperatorScoreMatching
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus
from heatscore.samplers import log_likelihood, time_grid
from heatscore.samplers._divergence import score_and_divergence
from conftest import N_SIGMA, cached_mesh

#: P1 mesh vs the smooth sphere on icosphere(4) (mean edge ≈ 0.06): discretisation of A_t and b_t.
MESH_VS_SPHERE_RTOL = 0.05
#: log p_{t_min} of a wrapped normal (σ² = 0.25, t_min = 0.02) from 20 levels: the error of the
#: truncated span in div s, integrated along the flow (0.05 measured; 30 levels give 0.015).
LIKELIHOOD_ATOL = 0.08


def _wrapped_normal(x, mu, var):
    """log-density and score of the product of wrapped normals N(mu_i, var) on T^d."""
    k = torch.arange(-10, 11, dtype=torch.float64)
    diff = x[..., None] - mu[:, None] + 2 * math.pi * k
    logw = -diff ** 2 / (2 * var)
    log_p = (torch.logsumexp(logw, -1) - 0.5 * math.log(2 * math.pi * var)).sum(-1)
    score = -(torch.softmax(logw, -1) * diff).sum(-1) / var
    return log_p, score


def _torus_grid(n):
    g = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    return torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)


MU = torch.tensor([math.pi, 2.0], dtype=torch.float64)


def _relative_error(est, t, sigma):
    """‖s − s*‖/‖s*‖ in L²(p_t) on a grid, s* the exact score of the wrapped normal at time t."""
    Q = _torus_grid(64)
    log_p, exact = _wrapped_normal(Q, MU, sigma ** 2 + 2 * t)
    p = torch.exp(log_p)
    err = ((est.grad_log_density(Q, t) - exact) ** 2).sum(-1)
    return math.sqrt(float((p * err).sum() / (p * (exact ** 2).sum(-1)).sum()))


def test_torus_error_falls_with_levels_population():
    # Exact population coefficients: a fine grid weighted by the wrapped-normal density.
    G = _torus_grid(128)
    w = torch.exp(_wrapped_normal(G, MU, 0.25)[0])
    errors = [_relative_error(OperatorScoreMatching(Torus(2), n_levels=L, ridge=0.0)
                              .fit(G, sample_weight=w), 0.05, 0.5) for L in (5, 10, 20, 40)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] <= 0.05


def test_torus_target_from_samples(gen):
    X = (MU + 0.5 * torch.randn(20000, 2, generator=gen, dtype=torch.float64)) % (2 * math.pi)
    est = OperatorScoreMatching(Torus(2), n_levels=40).fit(X)
    assert _relative_error(est, 0.05, 0.5) <= 0.05
    assert 0.05 in est.ridges_


@pytest.mark.parametrize("m, L, t, n_fine", [(Sphere(2), 5, 0.1, 60), (SO3(), 3, 0.3, 16),
                                              (Euclidean(2, scale=2.0), 4, 0.2, 40)])
def test_gram_matches_fine_quadrature_of_exact_density(m, L, t, n_fine, gen):
    """A_t = E_{p_t}⟨∇φ_m, ∇φ_n⟩ with p_t the exact heat-kernel mixture, by a fine quadrature."""
    X = m.random_uniform(7, rng=gen) if not isinstance(m, Euclidean) else \
        2.0 * torch.randn(7, 2, generator=gen, dtype=torch.float64)
    est = OperatorScoreMatching(m, n_levels=L, ridge=0.0).fit(X)
    A = est._terms.gram(est._stats, t)
    Q, wq = m.quadrature(n_fine)
    p = HeatKernel(m)(Q, X, t).mean(dim=1)
    G = est._terms.ep.grad(Q)[:, est._terms.keep].reshape(Q.shape[0], A.shape[0], -1)
    metric = 0.5 if isinstance(m, SO3) else 1.0
    reference = metric * torch.einsum("q,qmi,qni->mn", wq * p, G, G)
    assert float((A - reference).abs().max()) <= 1e-9 * float(reference.abs().max())


def test_product_basis_starts_with_score_basis(gen):
    for m, L in [(Sphere(2), 4), (Torus(2), 6), (SO3(), 3), (Euclidean(3), 4)]:
        terms = OperatorScoreMatching(m, n_levels=L, ridge=0.0).fit(m.sample_stationary(5, rng=gen))._terms
        x = m.sample_stationary(4, rng=gen)
        assert torch.equal(terms.ep_product(x)[:, :len(terms.ep)], terms.ep(x))


def _gaussian_rule(mu, sigma, nodes=12):
    """Gauss–Hermite nodes and weights of N(mu, σ² I) in 3-D: exact population moments."""
    z, wz = np.polynomial.hermite_e.hermegauss(nodes)
    Z = np.stack(np.meshgrid(z, z, z, indexing="ij"), -1).reshape(-1, 3)
    W = np.prod(np.stack(np.meshgrid(wz, wz, wz, indexing="ij"), -1).reshape(-1, 3), axis=1)
    return mu + sigma * torch.as_tensor(Z), torch.as_tensor(W)


@pytest.mark.parametrize("basis, L", [("total", 3), ("total", 5), ("separable", 3), ("separable", 6)])
def test_gaussian_score_is_exact_in_the_span(basis, L, gen):
    """OU from N(μ, σ²I) with scale s: p_t = N(e^{−t}μ, (e^{−2t}σ² + s²(1 − e^{−2t}))I)."""
    s, t, sigma = 2.0, 0.3, 0.7
    mu = torch.tensor([0.5, -1.0, 0.3], dtype=torch.float64)
    X, w = _gaussian_rule(mu, sigma)
    est = OperatorScoreMatching(Euclidean(3, scale=s), n_levels=L, ridge=0.0, basis=basis)
    est.fit(X, sample_weight=w)
    Y = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    v = math.exp(-2 * t) * sigma ** 2 + s ** 2 * (1 - math.exp(-2 * t))
    exact = -(Y - math.exp(-t) * mu) / v
    torch.testing.assert_close(est.grad_log_density(Y, t), exact, rtol=0, atol=1e-10)


def test_gaussian_score_from_samples_to_sampling_error(gen):
    n, t, sigma = 20000, 0.2, 0.6
    mu = torch.tensor([1.0, -0.5], dtype=torch.float64)
    X = mu + sigma * torch.randn(n, 2, generator=gen, dtype=torch.float64)
    est = OperatorScoreMatching(Euclidean(2), n_levels=3).fit(X)
    v = math.exp(-2 * t) * sigma ** 2 + 1 - math.exp(-2 * t)
    Y = math.exp(-t) * mu + math.sqrt(v) * torch.randn(2000, 2, generator=gen, dtype=torch.float64)
    exact = -(Y - math.exp(-t) * mu) / v
    rel = float((est.grad_log_density(Y, t) - exact).norm() / exact.norm())
    # the coefficients of 5 basis functions carry relative errors ~ 1/√n each
    assert rel <= 5 * math.sqrt(5 / n)


@pytest.mark.parametrize("m, L, t", [(Sphere(2), 5, 0.1), (SO3(), 3, 0.3), (Euclidean(2, scale=2.0), 4, 0.2),
                                     (Torus(2), 6, 0.1)])
def test_ism_objective_and_divergence_against_monte_carlo(m, L, t, gen):
    """J_t = E_{p_t}[|s|² + 2 div s] by noising the data exactly, div s by autograd."""
    X = m.random_uniform(7, rng=gen) if not isinstance(m, Euclidean) else \
        2.0 * torch.randn(7, 2, generator=gen, dtype=torch.float64)
    est = OperatorScoreMatching(m, n_levels=L, ridge=0.0).fit(X)
    Xt = sample_heat_kernel(m, X.repeat(4000, *([1] * (X.ndim - 1))), t, rng=gen)
    s, div = score_and_divergence(lambda x, tt: est.grad_log_density(x, tt), m, Xt, t, "exact", gen)
    torch.testing.assert_close(est.divergence(Xt, t), div, rtol=1e-10, atol=1e-10)
    values = m._inner(Xt, s, s) + 2 * div
    se = float(values.std()) / math.sqrt(values.shape[0])
    assert abs(est.ism_objective(X, t) - float(values.mean())) <= N_SIGMA * se


def test_fitted_coefficients_minimise_the_training_objective(gen):
    m = Sphere(2)
    X = m.random_uniform(50, rng=gen)
    est = OperatorScoreMatching(m, n_levels=4, ridge=0.0).fit(X)
    t = 0.05
    J = est.ism_objective(X, t)
    alpha = est.coefficients(t)
    A, b = est._terms.gram(est._stats, t), est._terms.linear(est._stats, t)
    for _ in range(5):
        other = alpha + 0.01 * torch.randn(alpha.shape, generator=gen, dtype=torch.float64)
        assert float(other @ A @ other - 2 * b @ other) > J


def test_per_point_times_match_scalar_calls(gen):
    m = Sphere(2)
    est = OperatorScoreMatching(m, n_levels=4).fit(m.random_uniform(40, rng=gen))
    Y = m.random_uniform(6, rng=gen)
    t = torch.tensor([0.1, 0.2, 0.1, 0.3, 0.2, 0.1], dtype=torch.float64)
    out = est.grad_log_density(Y, t)
    for i in range(6):
        torch.testing.assert_close(out[i:i + 1], est.grad_log_density(Y[i:i + 1], float(t[i])))


def test_mesh_agrees_with_the_sphere(gen):
    mesh = cached_mesh("ico4")
    X = mesh.random_uniform(4000, rng=gen)
    U = X / X.norm(dim=1, keepdim=True)
    w = torch.exp(2.0 * U[:, 2] + U[:, 0])
    t = 0.1
    on_mesh = OperatorScoreMatching(mesh, n_levels=16, ridge=0.0).fit(X, sample_weight=w)
    on_sphere = OperatorScoreMatching(Sphere(2), n_levels=4, ridge=0.0).fit(U, sample_weight=w)
    Q = mesh.random_uniform(2000, rng=gen)
    sm = on_mesh.grad_log_density(Q, t)
    ss = on_sphere.grad_log_density(Q / Q.norm(dim=1, keepdim=True), t)
    assert float((sm - ss).norm() / ss.norm()) <= MESH_VS_SPHERE_RTOL
    with pytest.raises(ValueError, match="TriangleMesh"):
        on_mesh.divergence(Q[:3], t)


def test_likelihood_of_a_wrapped_normal():
    """score_samples = log p_{t_min} of the exact wrapped normal (population coefficients), up to
    the truncation of the score span (LIKELIHOOD_ATOL), and equals the autograd-divergence path."""
    G = _torus_grid(128)
    sigma2 = 0.25
    w = torch.exp(_wrapped_normal(G, MU, sigma2)[0])
    est = OperatorScoreMatching(Torus(2), n_levels=20, ridge=0.0, t_min=0.02).fit(G, sample_weight=w)
    Y = (MU + 0.4 * torch.randn(8, 2, generator=torch.Generator().manual_seed(3),
                                dtype=torch.float64)) % (2 * math.pi)
    ours = est.score_samples(Y, steps=100)
    exact = _wrapped_normal(Y, MU, sigma2 + 2 * 0.02)[0]
    torch.testing.assert_close(ours, exact, rtol=0, atol=LIKELIHOOD_ATOL)
    times = time_grid(10.0, 0.02, 100, "geometric").flip(0)
    autograd = log_likelihood(Torus(2), lambda x, t: est.grad_log_density(x, t), Y, times)
    torch.testing.assert_close(ours, autograd, rtol=0, atol=1e-9)


def test_samples_match_the_target_moments():
    """Reverse-walk draws of p_{t_min} against E[cos(x_i − μ_i)] = e^{−v/2} of the wrapped normal."""
    G = _torus_grid(128)
    sigma2, t_min = 0.25, 0.02
    w = torch.exp(_wrapped_normal(G, MU, sigma2)[0])
    est = OperatorScoreMatching(Torus(2), n_levels=20, ridge=0.0, t_min=t_min).fit(G, sample_weight=w)
    Y = est.sample(4000, rng=5, steps=200)
    c = torch.cos(Y - MU)
    expected = math.exp(-(sigma2 + 2 * t_min) / 2)
    se = c.std(dim=0) / math.sqrt(Y.shape[0])
    # bias of 200 geometric reverse steps is far below the 5-SE band (~0.01)
    assert bool(((c.mean(dim=0) - expected).abs() <= N_SIGMA * se + 5e-3).all())
    torch.testing.assert_close(est.sample(10, rng=5, steps=20), est.sample(10, rng=5, steps=20))


def test_validation_and_conventions(gen):
    m = Sphere(2)
    X = m.random_uniform(20, rng=gen)
    with pytest.raises(NotFittedError):
        OperatorScoreMatching(m).grad_log_density(X, 0.1)
    with pytest.raises(ValueError, match="ridge"):
        OperatorScoreMatching(m, ridge=-1.0).fit(X)
    with pytest.raises(ValueError, match="t_min"):
        OperatorScoreMatching(m, t_min=0.0).fit(X)
    with pytest.raises(ValueError, match="basis"):
        OperatorScoreMatching(m, basis="separable").fit(X)
    with pytest.raises(ValueError, match="n_levels"):
        OperatorScoreMatching(m, n_levels=1).fit(X)
    with pytest.raises(ValueError, match="off Sphere"):
        OperatorScoreMatching(m).fit(2 * X)
    est = OperatorScoreMatching(m, n_levels=3).fit(X)
    with pytest.raises(ValueError, match="t must be > 0"):
        est.grad_log_density(X, 0.0)
    with pytest.raises(ValueError, match="shape"):
        est.grad_log_density(X, torch.ones(3, dtype=torch.float64))
    assert est.get_params()["n_levels"] == 3
    assert est.set_params(ridge=0.0).ridge == 0.0
    assert est.t_min_ == pytest.approx(1e-3 / 2)


def test_separable_basis_equals_total_degree_in_one_dimension():
    """On R^1 the separable and the total-degree Hermite bases are the same functions: the fitted
    scores and the ISM objective (its constant term included) agree."""
    m = Euclidean(1, scale=1.5)
    X = 1.5 * torch.randn(300, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.4
    a = OperatorScoreMatching(m, n_levels=5, ridge=0.0).fit(X)
    b = OperatorScoreMatching(m, n_levels=5, ridge=0.0, basis="separable").fit(X)
    Q = X[:7]
    torch.testing.assert_close(a.grad_log_density(Q, 0.1), b.grad_log_density(Q, 0.1), rtol=1e-9, atol=1e-9)
    assert a.ism_objective(X, 0.1) == pytest.approx(b.ism_objective(X, 0.1), rel=1e-9)
    torch.testing.assert_close(a.divergence(Q, 0.1), b.divergence(Q, 0.1), rtol=1e-9, atol=1e-9)
