"""Neural score models: network geometry, the three objectives, residual mode, persistence.

Closed forms used: on R^d (OU, scale 1) data N(μ, σ²I) have marginals p_t = N(e^{−t}μ, v_t I),
v_t = e^{−2t}σ² + 1 − e^{−2t}, score −(x − e^{−t}μ)/v_t, and the conditional (DSM) score is
−(x_t − e^{−t}x_0)/(1 − e^{−2t}). Statistical checks use N_SIGMA standard errors (conftest).
"""

import io
import math
import sys

import numpy as np
import pytest
import torch

from conftest import N_SIGMA, assert_close, cached_mesh
from heatscore import NotFittedError
from heatscore.estimators import DiffusionKernelSmoother, NeuralScoreModel, ScoreNetwork, dsm_per_example
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus
from heatscore.samplers._divergence import exact_divergence, score_and_divergence

MU = torch.tensor([1.0, -0.5], dtype=torch.float64)
SD = 0.5
TINY = dict(hidden=(16, 16), n_frequencies=2, batch_size=32)

#: Relative mean-square score error after 200 Adam steps (batch 128) of a (32, 32) network on
#: 2 000 draws of N(μ, σ²I): measured ≤ 0.016 for all three objectives at t ∈ [0.02, 2].
GAUSSIAN_SCORE_RTOL = 0.05
#: Residual mode over the exact score: what the zero-initialised network may pick up from the
#: noise of 200 DSM steps, relative to E|s|² (measured ~1e-4).
RESIDUAL_NOISE_RTOL = 0.01
#: Heun's probability-flow likelihood, 200 geometric steps from 0.05 to 12 on a Gaussian:
#: measured 4.7e-4 (1.8e-3 at 100 steps: second order).
LIKELIHOOD_ATOL = 2e-3
#: Reverse geodesic random walk, 100 geometric steps from 12 to 0.05 (Euler–Maruyama bias):
#: measured on 20 000 draws, mean off by ≤ 0.003, relative variance by ≤ 0.036.
SAMPLER_BIAS = 0.05


def gaussian_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return MU + SD * torch.randn(n, 2, generator=g, dtype=torch.float64)


def gaussian_variance(t):
    return math.exp(-2 * t) * SD ** 2 + 1 - math.exp(-2 * t)


class GaussianScore:
    """Exact scores of the OU marginals of N(μ, σ²I) data (per-point times accepted)."""

    def __init__(self, mu=MU, sd=SD):
        self.mu, self.sd = mu, sd

    def grad_log_density(self, X, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, 1)
        v = torch.exp(-2 * t) * self.sd ** 2 - torch.expm1(-2 * t)
        return -(torch.as_tensor(X) - torch.exp(-t) * self.mu) / v


class GaussianScoreWithDivergence(GaussianScore):
    """GaussianScore with its divergence −d/v_t in closed form (the likelihood then uses it)."""

    def divergence(self, X, t):
        v = math.exp(-2 * t) * self.sd ** 2 - math.expm1(-2 * t)
        return torch.full((X.shape[0],), -X.shape[1] / v, dtype=torch.float64)


def concentrated(m, n, seed, t=0.2):
    """n draws of k_t(·, x_c) around a fixed point x_c: non-uniform data on a compact manifold."""
    centre = m.random_uniform(1, rng=seed)
    return sample_heat_kernel(m, centre.expand((n,) + tuple(centre.shape[1:])), t, rng=seed + 1)


MANIFOLDS = [Sphere(2), Torus(2), SO3(), Euclidean(3)]


def data_on(m, n, seed):
    return m.sample_stationary(n, rng=seed) if isinstance(m, Euclidean) else concentrated(m, n, seed)


# --- geometry ---------------------------------------------------------------------------------
@pytest.mark.parametrize("m", MANIFOLDS + ["mesh"], ids=repr)
def test_output_is_tangent(m):
    t_max = None
    if m == "mesh":                                    # short times: the mesh noising is a fine walk
        m, t_max = cached_mesh("ico1"), 0.05
    X = m.random_uniform(40, rng=0) if not isinstance(m, Euclidean) else m.sample_stationary(40, rng=0)
    est = NeuralScoreModel(m, n_steps=2, rng=0, t_max=t_max, **TINY).fit(X)
    t = torch.linspace(1e-3, 2.0, 40, dtype=torch.float64)
    s = est.grad_log_density(X, t)
    assert s.shape == (40,) + tuple(m.ambient_shape) and s.dtype == torch.float64
    assert float(s.abs().max()) > 0
    assert_close(m.proj(X, s), s)
    if isinstance(m, SO3):                                # R·skew: RᵀS is antisymmetric
        a = X.transpose(1, 2) @ s
        assert_close(a, -a.transpose(1, 2))
    if isinstance(m, Sphere):
        assert_close((X * s).sum(1), torch.zeros(40))


def test_time_embedding_and_scale():
    m = Euclidean(2, scale=3.0)
    net = ScoreNetwork(m, 1e-3, 10.0, hidden=(8,), n_frequencies=3, rng=0)
    t = torch.tensor([1e-3, 10.0], dtype=torch.float64)
    e = net.time_features(t)
    assert_close(e[:, 0], torch.tensor([-1.0, 1.0]))                  # u spans [−1, 1]
    assert e.shape == (2, 7)
    # σ(t)² is the OU marginal variance s²(1 − e^{−2t}) on Euclidean(d, scale=s)
    assert_close(net.sigma(t) ** 2, 9.0 * -torch.expm1(-2 * t))
    # ≈ 2t at small t on a compact manifold
    sphere = ScoreNetwork(Sphere(2), 1e-3, 10.0, hidden=(8,), rng=0)
    assert_close(sphere.sigma(torch.tensor([1e-8], dtype=torch.float64)) ** 2,
                 torch.tensor([2e-8]), rtol=1e-6)


# --- objectives ---------------------------------------------------------------------------
def test_dsm_target_is_the_conditional_score_on_rd():
    m = Euclidean(2)
    x0 = gaussian_data(50, 1)
    est = NeuralScoreModel(m, n_steps=0, rng=0, **TINY).fit(x0)
    t = torch.logspace(-3, 0.5, 50, dtype=torch.float64)
    xt, target = est._noised(x0, t, torch.Generator().manual_seed(5))
    tc = t[:, None]
    assert_close(target, -(xt - torch.exp(-tc) * x0) / -torch.expm1(-2 * tc))


@pytest.mark.parametrize("m", [Sphere(2), SO3(), Torus(2)], ids=repr)
def test_dsm_target_is_the_heat_kernel_score(m):
    """The DSM target is ∇_x log k_t(x_t, x_0): its frame components match central differences of
    log k_t along geodesics, and ``loss`` is the mean of σ²|s − target|²_g on the same draws."""
    x0 = concentrated(m, 30, 3)
    est = NeuralScoreModel(m, n_steps=0, rng=0, **TINY).fit(x0)
    t = 0.05
    xt, target = est._noised(x0, torch.full((30,), t, dtype=torch.float64), torch.Generator().manual_seed(7))
    kernel, h = HeatKernel(m), 1e-5
    frame = m._tangent_frame(xt)
    for i in range(m.dim):
        e = frame[:, i]
        fd = (kernel.log_pairs(m.exp(xt, h * e), x0, t) - kernel.log_pairs(m.exp(xt, -h * e), x0, t)) / (2 * h)
        assert_close(m.inner(xt, target, e), fd, rtol=1e-6, atol=1e-6)
    s = est.grad_log_density(xt, t)
    diff = s - target
    manual = float((est.network_.sigma(torch.tensor(t, dtype=torch.float64)) ** 2 * m.inner(xt, diff, diff)).mean())
    assert_close(est.loss(x0, t=t, rng=7), manual)


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
def test_divergence_matches_the_samplers(m):
    x = data_on(m, 20, 0)
    net = ScoreNetwork(m, 1e-3, 10.0, hidden=(16, 16), rng=1)
    t = 0.07
    s_ref, div_ref = score_and_divergence(lambda y, tau: net(y, tau), m, x, t, "exact", None)
    s, div = exact_divergence(net, m, x, torch.full((20,), t, dtype=torch.float64), False)
    assert_close(s, s_ref)
    assert_close(div, div_ref, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("m", MANIFOLDS, ids=repr)
@pytest.mark.parametrize("objective", ["ism", "ssm"])
def test_ism_and_ssm_equal_dsm_up_to_a_constant(m, objective):
    """For two networks A, B on the same draws (x_0, t, x_t), the per-example difference
    D = (DSM_A − DSM_B) − (J_A − J_B) has mean zero (integration by parts on the manifold)."""
    n = 4000
    x0 = m.sample_stationary(n, rng=11) if isinstance(m, Euclidean) else concentrated(m, n, 11, t=0.05)
    # A: briefly trained (its divergence has a clear mean, E div s ≈ −E|s|²); B: at initialisation
    models = [NeuralScoreModel(m, objective=objective, n_steps=steps, lr=1e-2, t_min=0.005, t_max=0.3,
                               rng=seed, **TINY).fit(x0[:1000]) for seed, steps in ((0, 30), (1, 0))]
    g = torch.Generator().manual_seed(3)
    t = torch.exp(math.log(0.005) + (math.log(0.3) - math.log(0.005)) * torch.rand(n, generator=g, dtype=torch.float64))
    terms = {}
    for k, est in enumerate(models):
        for obj in ("dsm", objective):
            with torch.no_grad():
                terms[obj, k] = est._per_example(x0, t, torch.Generator().manual_seed(9), False, objective=obj)
    d = (terms["dsm", 0] - terms["dsm", 1]) - (terms[objective, 0] - terms[objective, 1])
    se = float(d.std()) / math.sqrt(n)
    assert abs(float(d.mean())) < N_SIGMA * se
    # power: the divergence terms' share of D is many standard errors, so a divergence dropped
    # or off by a factor 2 would fail the check above
    xt = sample_heat_kernel(m, x0, t, rng=torch.Generator().manual_seed(9))
    divs = [exact_divergence(est.network_, m, xt, t, False)[1] for est in models]
    share = 2 * models[0].network_.sigma(t) ** 2 * (divs[0] - divs[1])
    assert abs(float(share.mean())) > 2 * N_SIGMA * se


def test_gaussian_score_recovered_on_rd():
    X = gaussian_data(2000, 0)
    g = torch.Generator().manual_seed(1)
    for objective in ("dsm", "ism", "ssm"):
        est = NeuralScoreModel(Euclidean(2), objective=objective, hidden=(32, 32), n_steps=200,
                               batch_size=128, lr=1e-2, rng=0, t_min=1e-2, t_max=5.0).fit(X)
        for t in (0.02, 0.1, 0.5, 2.0):
            v = gaussian_variance(t)
            x = math.exp(-t) * MU + math.sqrt(v) * torch.randn(4000, 2, generator=g, dtype=torch.float64)
            exact = GaussianScore().grad_log_density(x, t)
            err = ((est.grad_log_density(x, t) - exact) ** 2).sum(1).mean() / (exact ** 2).sum(1).mean()
            assert float(err) < GAUSSIAN_SCORE_RTOL, (objective, t, float(err))


# --- residual mode ---------------------------------------------------------------------------
def test_residual_over_exact_score_stays_near_zero_and_learns_a_correction():
    X = gaussian_data(2000, 0)
    g = torch.Generator().manual_seed(2)
    t = torch.exp(math.log(0.01) + (math.log(5.0) - math.log(0.01)) * torch.rand(3000, generator=g, dtype=torch.float64))
    v = torch.exp(-2 * t) * SD ** 2 - torch.expm1(-2 * t)
    x = torch.exp(-t)[:, None] * MU + torch.sqrt(v)[:, None] * torch.randn(3000, 2, generator=g, dtype=torch.float64)
    exact = GaussianScore().grad_log_density(x, t)
    size = float((exact ** 2).sum(1).mean())
    common = dict(hidden=(32, 32), n_steps=150, batch_size=128, lr=1e-2, rng=0, t_min=1e-2, t_max=5.0,
                  n_times=16)
    exact_base = NeuralScoreModel(Euclidean(2), residual=GaussianScore(), **common).fit(X)
    assert exact_base._base_per_point
    with torch.no_grad():
        residual = exact_base.network_(x, t)
    assert float((residual ** 2).sum(1).mean()) < RESIDUAL_NOISE_RTOL * size
    wrong = GaussianScore(mu=MU + 0.5, sd=0.8)
    corrected = NeuralScoreModel(Euclidean(2), residual=wrong, **common).fit(X)
    base_err = float(((wrong.grad_log_density(x, t) - exact) ** 2).sum(1).mean())
    model_err = float(((corrected.grad_log_density(x, t) - exact) ** 2).sum(1).mean())
    assert model_err < 0.05 * base_err


def test_residual_with_a_scalar_time_base():
    """DiffusionKernelSmoother (scalar t only) as the base, called per distinct time of a time
    grid; data drawn from it, so its diffused score is exact and the residual stays near zero."""
    m = Torus(2)
    smoother = DiffusionKernelSmoother(m, time=0.05).fit(concentrated(m, 30, 4))
    X = smoother.sample(1000, rng=5)
    est = NeuralScoreModel(m, residual=smoother, n_steps=30, rng=0, lr=3e-3, t_min=0.01, t_max=2.0,
                           n_times=6, **TINY).fit(X)
    assert_close(est.time_grid_, torch.logspace(-2, math.log10(2.0), 6, dtype=torch.float64))
    assert not est._base_per_point
    drawn = est._draw_times(500, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == set(est.time_grid_.tolist())
    x = smoother.sample(200, rng=6)
    t = torch.full((200,), 0.03, dtype=torch.float64)
    t[100:] = 0.3                                                    # two distinct times
    base = torch.cat([smoother.grad_log_density(x[:100], 0.03), smoother.grad_log_density(x[100:], 0.3)])
    assert_close(est._base_score(smoother, x, t), base)
    size = float((base ** 2).sum(1).mean())
    with torch.no_grad():
        assert float((est.network_(x, t) ** 2).sum(1).mean()) < RESIDUAL_NOISE_RTOL * size


# --- per-example gradients ---------------------------------------------------------------------
@pytest.mark.parametrize("m", [Euclidean(2), SO3()], ids=repr)
def test_per_example_gradients(m):
    X = data_on(m, 24, 2)
    base = GaussianScore() if isinstance(m, Euclidean) else None
    est = NeuralScoreModel(m, residual=base, n_steps=3, rng=0, **TINY).fit(X)
    for residual in ("fitted", None):
        losses, grads = dsm_per_example(est, X, t=0.1, rng=4, residual=residual)
        n_params = sum(p.numel() for p in est.network_.mlp.parameters())
        assert losses.shape == (24,) and grads.shape == (24, n_params)
        est_ref = est if residual == "fitted" else NeuralScoreModel(m, **TINY)
        if residual is None:                                          # same network, no base
            est_ref.network_, est_ref.device_, est_ref.t_min_, est_ref.t_max_, est_ref.time_grid_ = (
                est.network_, est.device_, est.t_min_, est.t_max_, None)
            est_ref.residual_ = None
            est_ref._prepare()
        est.network_.zero_grad()
        ref = est_ref._per_example(m.validate(X), torch.full((24,), 0.1, dtype=torch.float64),
                                   torch.Generator().manual_seed(4), True, objective="dsm")
        ref.mean().backward()
        flat = torch.cat([p.grad.reshape(-1) for p in est.network_.mlp.parameters()])
        assert_close(losses, ref.detach())
        assert_close(grads.mean(0), flat)


# --- likelihood and sampling -----------------------------------------------------------------
def test_likelihood_and_samples_of_an_exact_model():
    """A residual model over the exact score with its zero-initialised network (n_steps=0) is the
    exact p_t: its ODE likelihood is the closed-form Gaussian and its samples have its moments."""
    t_min = 0.05
    x = gaussian_data(20, 1)
    v = gaussian_variance(t_min)
    exact = -((x - math.exp(-t_min) * MU) ** 2).sum(1) / (2 * v) - math.log(2 * math.pi * v)
    for base in (GaussianScoreWithDivergence(), GaussianScore()):     # closed-form / autograd div
        est = NeuralScoreModel(Euclidean(2), residual=base, n_steps=0, t_min=t_min, t_max=12.0,
                               rng=0, **TINY).fit(gaussian_data(10, 0))
        assert_close(est.score_samples(x, steps=200), exact, atol=LIKELIHOOD_ATOL, rtol=0)
    n = 2000
    y = est.sample(n, rng=3, steps=100)
    assert torch.equal(y, est.sample(n, rng=3, steps=100))
    se = math.sqrt(v / n)
    assert float((y.mean(0) - math.exp(-t_min) * MU).abs().max()) < N_SIGMA * se + SAMPLER_BIAS
    assert float((y.var(0) / v - 1).abs().max()) < N_SIGMA * math.sqrt(2 / n) + SAMPLER_BIAS


def test_sample_on_the_sphere():
    m = Sphere(2)
    est = NeuralScoreModel(m, n_steps=1, rng=0, **TINY).fit(concentrated(m, 50, 0))
    y = est.sample(30, rng=1, steps=20)
    assert y.shape == (30, 3) and bool(m.belongs(y).all())
    assert est.score(y[:4], steps=3) == float(est.score_samples(y[:4], steps=3).mean())


# --- persistence, reproducibility, parameters ---------------------------------------------------
@pytest.mark.parametrize("m", [Sphere(2), SO3(), "mesh"], ids=repr)
def test_save_load_round_trip(tmp_path, m):
    t_max = None
    if m == "mesh":                                    # short times: the mesh noising is a fine walk
        m, t_max = cached_mesh("ico1"), 0.05
    X = m.random_uniform(40, rng=0)
    est = NeuralScoreModel(m, n_steps=2, rng=0, t_max=t_max, **TINY).fit(X)
    path = tmp_path / "model.npz"
    est.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert all(z[k].dtype != object for k in z.files)
    loaded = NeuralScoreModel.load(path)
    t = torch.linspace(0.01, 1.0, 40, dtype=torch.float64)
    assert torch.equal(loaded.grad_log_density(X, t), est.grad_log_density(X, t))
    assert torch.equal(loaded.loss_curve_, est.loss_curve_)
    assert loaded.get_params()["hidden"] == (16, 16)
    assert loaded.loss(X, t=0.1) == est.loss(X, t=0.1)


def test_save_load_residual_and_float32(tmp_path):
    X = gaussian_data(100, 0)
    est = NeuralScoreModel(Euclidean(2), residual=GaussianScore(), n_steps=3, dtype=torch.float32,
                           rng=0, **TINY).fit(X)
    assert est.network_.dtype == torch.float32
    path = tmp_path / "r.npz"
    est.save(path)
    with pytest.raises(ValueError, match="residual"):
        NeuralScoreModel.load(path)
    loaded = NeuralScoreModel.load(path, residual=GaussianScore())
    s = loaded.grad_log_density(X, 0.2)
    assert s.dtype == torch.float64
    assert torch.equal(s, est.grad_log_density(X, 0.2))


def test_same_seed_same_result():
    X = gaussian_data(200, 0)
    fits = [NeuralScoreModel(Euclidean(2), n_steps=20, rng=seed, **TINY).fit(X) for seed in (5, 5, 6)]
    assert torch.equal(fits[0].loss_curve_, fits[1].loss_curve_)
    assert torch.equal(fits[0].grad_log_density(X, 0.3), fits[1].grad_log_density(X, 0.3))
    assert not torch.equal(fits[0].loss_curve_, fits[2].loss_curve_)
    assert torch.equal(fits[0].sample(10, rng=1, steps=5), fits[1].sample(10, rng=1, steps=5))


def test_params_and_callback_and_progress(monkeypatch):
    est = NeuralScoreModel(Euclidean(2), n_steps=4, rng=0, progress=True, **TINY)
    assert set(est.get_params()) >= {"objective", "residual", "t_min", "t_max", "hidden", "lr", "rng"}
    assert est.set_params(lr=2e-3) is est and est.lr == 2e-3
    clone = NeuralScoreModel(**est.get_params())
    assert clone.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.grad_log_density(gaussian_data(3, 0), 0.1)
    stream = io.StringIO()
    stream.isatty = lambda: True
    monkeypatch.setattr(sys, "stderr", stream)
    seen = []
    est.fit(gaussian_data(50, 0), callback=lambda model, step, loss: seen.append((step, loss)))
    assert [s for s, _ in seen] == [0, 1, 2, 3]
    assert [l for _, l in seen] == est.loss_curve_.tolist()
    assert "NeuralScoreModel.fit" in stream.getvalue()
    assert bool((est.time_curve_[1:] >= est.time_curve_[:-1]).all())


@pytest.mark.parametrize("name, value, error", [
    ("objective", "score", ValueError), ("objective", 3, TypeError), ("residual", object(), TypeError),
    ("t_min", -1.0, ValueError), ("t_min", "small", TypeError), ("t_max", 0.0, ValueError),
    ("hidden", (0,), ValueError), ("hidden", "wide", TypeError), ("hidden", 64, TypeError),
    ("hidden", (), ValueError), ("n_frequencies", -1, ValueError), ("n_steps", -1, ValueError),
    ("n_steps", 1.5, TypeError), ("batch_size", 0, ValueError), ("lr", 0.0, ValueError),
    ("lr", float("nan"), ValueError), ("lr", None, TypeError), ("dtype", torch.float16, ValueError),
    ("progress", "yes", TypeError), ("device", "no-such-device", ValueError), ("device", 1.5, TypeError),
    ("n_times", 1, ValueError)])
def test_bad_arguments(name, value, error):
    """DESIGN's errors: TypeError for a wrong type, ValueError for a wrong value; both name it."""
    with pytest.raises(error, match=name):
        NeuralScoreModel(Euclidean(2), **{name: value}).fit(gaussian_data(5, 0))


def test_bad_combinations_and_inputs():
    X = gaussian_data(5, 0)
    with pytest.raises(ValueError, match="t_max"):
        NeuralScoreModel(Euclidean(2), t_min=1.0, t_max=0.5).fit(X)
    with pytest.raises(ValueError, match="objective"):
        NeuralScoreModel(Euclidean(2), objective="ism", residual=GaussianScore()).fit(X)
    with pytest.raises(ValueError, match="objective"):
        NeuralScoreModel(cached_mesh("ico1"), objective="ssm").fit(cached_mesh("ico1").random_uniform(5, rng=0))
    est = NeuralScoreModel(Euclidean(2), n_steps=0, **TINY).fit(X)
    with pytest.raises(ValueError, match="t"):
        est.grad_log_density(X, 0.0)
    with pytest.raises(ValueError, match="t"):
        est.grad_log_density(X, torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="X"):
        est.grad_log_density(torch.ones(4, 3), 0.1)
    with pytest.raises(ValueError, match="objective"):
        est.loss(X, objective="nll")
    with pytest.raises(TypeError, match="residual"):
        dsm_per_example(est, X, t=0.1, residual=object())
