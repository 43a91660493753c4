"""DiffusionKernelSmoother: brute-force agreement, routes, normalisation, scores, persistence."""

import math

import pytest
import torch

from conftest import N_SIGMA
from heatscore import NotFittedError
from heatscore.estimators import DiffusionKernelSmoother
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus

#: Routes are certified to RTOL = 1e-7 relative; compare log-densities to this.
ROUTE_ATOL = 1e-6

MANIFOLDS = {
    "sphere": lambda: Sphere(2),
    "torus2": lambda: Torus(2),
    "so3": lambda: SO3(),
    "euclidean2": lambda: Euclidean(2),
}


def _clustered(m, n, seed, t=0.05):
    """n points around three centres (a heat-kernel mixture)."""
    centres = m.sample_stationary(3, rng=seed)
    idx = torch.arange(n) % 3
    return sample_heat_kernel(m, centres[idx], t, rng=seed + 1)


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_matches_brute_force_double_loop(name):
    m = MANIFOLDS[name]()
    X = _clustered(m, 40, 1)
    Q = m.sample_stationary(6, rng=3)
    t = 0.02
    est = DiffusionKernelSmoother(m, time=t).fit(X)
    k = HeatKernel(m)
    brute = torch.stack([torch.stack([torch.exp(k.log_pairs(Q[a:a + 1], X[b:b + 1], t))[0]
                                      for b in range(X.shape[0])]).mean() for a in range(Q.shape[0])])
    # the automatic route may be spectral: certified to RTOL, not round-off
    torch.testing.assert_close(est.score_samples(Q), torch.log(brute), rtol=0, atol=ROUTE_ATOL)
    # the t-marginal is the data diffused for t* + t
    torch.testing.assert_close(est.log_density(Q, 0.03), torch.log(k(Q, X, t + 0.03).mean(1)),
                               rtol=0, atol=ROUTE_ATOL)


@pytest.mark.parametrize("name", ["sphere", "torus2", "so3"])
@pytest.mark.parametrize("t", [3e-3, 0.05])
def test_routes_agree(name, t):
    m = MANIFOLDS[name]()
    X = _clustered(m, 300, 5)
    Q = torch.cat([m.sample_stationary(20, rng=6), X[:10]])
    outs = {}
    for route in ("dense", "neighbors", "spectral"):
        est = DiffusionKernelSmoother(m, time=t, route=route).fit(X)
        outs[route] = (est.log_density(Q), est.grad_log_density(Q))
    for route in ("neighbors", "spectral"):
        torch.testing.assert_close(outs[route][0], outs["dense"][0], rtol=0, atol=ROUTE_ATOL)
        torch.testing.assert_close(outs[route][1], outs["dense"][1], rtol=1e-5, atol=1e-5)


def test_neighbour_route_agrees_at_small_time_on_sphere():
    m = Sphere(2)
    X = _clustered(m, 2000, 7, t=1e-3)
    Q = torch.cat([sample_heat_kernel(m, X[:50], 1e-5, rng=8), m.random_uniform(20, rng=9)])
    dense = DiffusionKernelSmoother(m, time=1e-5, route="dense").fit(X)
    near = DiffusionKernelSmoother(m, time=1e-5, route="neighbors").fit(X)
    torch.testing.assert_close(near.log_density(Q), dense.log_density(Q), rtol=0, atol=ROUTE_ATOL)


def test_integer_weights_equal_repeated_points():
    m = Sphere(2)
    X = _clustered(m, 30, 11)
    w = (torch.arange(30) % 4 + 1).to(torch.float64)
    Q = m.random_uniform(8, rng=12)
    a = DiffusionKernelSmoother(m, time=0.01).fit(X, sample_weight=w)
    b = DiffusionKernelSmoother(m, time=0.01).fit(X.repeat_interleave(w.long(), dim=0))
    torch.testing.assert_close(a.score_samples(Q), b.score_samples(Q), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name,n_quad", [("sphere", 64), ("torus2", 96), ("so3", 20)])
def test_density_integrates_to_one(name, n_quad):
    m = MANIFOLDS[name]()
    est = DiffusionKernelSmoother(m, time=0.05 if name != "so3" else 0.1).fit(_clustered(m, 50, 13))
    z, w = m.quadrature(n_quad)
    total = float(w @ torch.exp(est.score_samples(z)))
    assert total == pytest.approx(1.0, rel=1e-8)


@pytest.mark.parametrize("name", list(MANIFOLDS))
def test_grad_log_density_matches_finite_differences(name):
    m = MANIFOLDS[name]()
    est = DiffusionKernelSmoother(m, time=0.02).fit(_clustered(m, 60, 14))
    x = m.sample_stationary(8, rng=15)
    v = m.random_tangent_normal(x, rng=16)
    h = 1e-5
    for t in (0.0, 0.1):
        g = est.grad_log_density(x, t)
        fd = (est.log_density(m.exp(x, h * v), t) - est.log_density(m.exp(x, -h * v), t)) / (2 * h)
        torch.testing.assert_close(m.inner(x, g, v), fd, rtol=1e-6, atol=1e-6)


def test_auto_time_maximises_leave_one_out_and_uses_all_data():
    m = Sphere(2)
    X = _clustered(m, 400, 17, t=0.01)
    est = DiffusionKernelSmoother(m).fit(X)
    assert est.t_min_ == pytest.approx(1e-8)
    assert est.X_.shape[0] == 400
    assert est.time_ >= est.t_min_
    best = float(est.loo_log_likelihood_.max())
    assert est._loo_score(est.time_) >= best - 1e-12
    # the true spread t = 0.01 is within a factor ~10 of the selected smoothing time
    assert 1e-4 < est.time_ < 0.1


def test_multiscale_weights_and_density():
    m = Sphere(2)
    X = torch.cat([_clustered(m, 100, 19, t=0.05), m.random_uniform(50, rng=20)])
    est = DiffusionKernelSmoother(m, time="multiscale").fit(X)
    assert est.weights_.sum().item() == pytest.approx(1.0)
    assert len(est.times_) >= 1 and bool((est.weights_ > 0).all())
    # the LOO likelihood is concave in the mixture weights, so EM's optimum beats every single time
    L = torch.stack([est._loo(float(t)) for t in est.times_], dim=1)
    mixture = float(torch.logsumexp(L + torch.log(est.weights_), dim=1).mean())
    assert mixture >= float(L.mean(0).max()) - 1e-9
    # 64 Gauss–Legendre nodes resolve kernels down to t ≈ 1e-3
    assert float(est.times_.min()) > 1e-3
    z, w = m.quadrature(64)
    assert float(w @ torch.exp(est.score_samples(z))) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("name", ["sphere", "so3", "torus2"])
def test_sample_moments_and_seed(name):
    """E[φ_n(X)] under p̂ is e^{−λ_n t*} ĉ_n: checked within N_SIGMA standard errors."""
    m = MANIFOLDS[name]()
    X = _clustered(m, 20, 21)
    est = DiffusionKernelSmoother(m, time=0.05).fit(X)
    s = est.sample(20000, rng=4)
    torch.testing.assert_close(s, est.sample(20000, rng=4), rtol=0, atol=0)
    ep = m.eigenpairs(3)
    vals = ep(s)
    expected = torch.exp(-ep.eigenvalues * 0.05) * ep(X).mean(0)
    se = vals.std(0) / math.sqrt(s.shape[0])
    assert bool(((vals.mean(0) - expected).abs() <= N_SIGMA * se + 1e-12).all())


@pytest.mark.parametrize("time", [0.01, "auto"])
def test_save_load_roundtrip(tmp_path, time):
    m = Sphere(2)
    est = DiffusionKernelSmoother(m, time=time).fit(_clustered(m, 100, 22))
    path = tmp_path / "model.npz"
    est.save(path)
    back = DiffusionKernelSmoother.load(path)
    Q = m.random_uniform(10, rng=23)
    torch.testing.assert_close(back.score_samples(Q), est.score_samples(Q), rtol=0, atol=0)
    torch.testing.assert_close(back.grad_log_density(Q, 0.1), est.grad_log_density(Q, 0.1), rtol=0, atol=0)
    torch.testing.assert_close(back.sample(5, rng=1), est.sample(5, rng=1), rtol=0, atol=0)
    assert back.get_params()["time"] == time
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"]


def test_errors():
    m = Sphere(2)
    est = DiffusionKernelSmoother(m, time=0.1)
    x = m.random_uniform(5, rng=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        est.score_samples(x)
    with pytest.raises(ValueError, match="X has 1 of 5 points off Sphere"):
        est.fit(torch.cat([x[:4], 2 * x[4:]]))
    with pytest.raises(ValueError, match="X must be points of shape"):
        est.fit(x[:, :2])
    with pytest.raises(ValueError, match="X must hold at least one point"):
        est.fit(x[:0])
    with pytest.raises(ValueError, match="time must be a positive float"):
        DiffusionKernelSmoother(m, time=-1.0).fit(x)
    with pytest.raises(ValueError, match="time must be a positive float"):
        DiffusionKernelSmoother(m, time="best").fit(x)
    est.fit(x)
    with pytest.raises(ValueError, match="t must be a finite scalar >= 0"):
        est.log_density(x, -0.1)
    with pytest.raises(ValueError, match="sample_weight must be non-negative"):
        DiffusionKernelSmoother(m, time=0.1).fit(x, sample_weight=-torch.ones(5))
    with pytest.raises(ValueError, match="Invalid parameter .bandwidth."):
        est.set_params(bandwidth=1.0)
    assert est.set_params(time=0.2) is est and est.get_params()["time"] == 0.2


def _vmf_sample(mu, kappa, n, seed):
    """Exact von Mises–Fisher draws on S² (inverse CDF of w = μ·x, uniform azimuth)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, generator=g, dtype=torch.float64)
    w = 1 + torch.log(u + (1 - u) * math.exp(-2 * kappa)) / kappa
    v = Sphere(2).random_tangent_normal(mu.expand(n, 3), rng=seed + 1)
    v = v / v.norm(dim=1, keepdim=True)
    return w[:, None] * mu + torch.sqrt(torch.clamp(1 - w * w, min=0))[:, None] * v


def test_james_stein_shrinkage_lowers_coefficient_error_on_vmf():
    """vMF(κ = 50) on S²: E[Y_lm(X)] = A_l(κ) Y_lm(μ) with A_l = I_{l+1/2}(κ)/I_{1/2}(κ)
    (Funk–Hecke). Averaged over replicates, the shrunk coefficients are closer to the truth."""
    from scipy.special import ive

    m = Sphere(2)
    mu = torch.tensor([[0.3, -0.4, math.sqrt(0.75)]], dtype=torch.float64)
    kappa, levels = 50.0, 12
    ep = m.eigenpairs(levels)
    a_l = torch.as_tensor(ive(ep.levels.numpy() + 0.5, kappa) / ive(0.5, kappa))
    truth = (a_l * ep(mu)[0])[1:]
    err_raw, err_js = 0.0, 0.0
    for rep in range(10):
        X = _vmf_sample(mu, kappa, 60, 100 + rep)
        est = DiffusionKernelSmoother(m, time=1e-8, shrinkage=True, n_levels=levels).fit(X)
        raw = ep(X).mean(0)[1:]
        assert 0.0 <= est.shrinkage_factor_ < 1.0
        torch.testing.assert_close(est.coef_[1:], est.shrinkage_factor_ * raw)
        err_raw += float(((raw - truth) ** 2).sum())
        err_js += float(((est.coef_[1:] - truth) ** 2).sum())
    assert err_js < err_raw


def test_shrunk_model_density_and_fallback():
    m = Sphere(2)
    X = _clustered(m, 80, 30, t=0.05)
    est = DiffusionKernelSmoother(m, time=0.05, shrinkage=True, n_levels=20).fit(X)
    z, w = m.quadrature(48)
    p = torch.exp(est.score_samples(z))
    assert bool(torch.isfinite(p).all()) and bool((p > 0).all())
    # away from negativity the density is the truncated shrunk expansion; it integrates to ~1
    assert float(w @ p) == pytest.approx(1.0, abs=0.05)
    x = m.random_uniform(5, rng=31)
    v = m.random_tangent_normal(x, rng=32)
    h = 1e-5
    fd = (est.log_density(m.exp(x, h * v), 0.1) - est.log_density(m.exp(x, -h * v), 0.1)) / (2 * h)
    torch.testing.assert_close(m.inner(x, est.grad_log_density(x, 0.1), v), fd, rtol=1e-6, atol=1e-6)


def test_shrunk_model_samples_through_reverse_sampler_and_roundtrips(tmp_path):
    m = Sphere(2)
    X = _clustered(m, 80, 33, t=0.05)
    est = DiffusionKernelSmoother(m, time=0.05, shrinkage=True, n_levels=16).fit(X)
    s = est.sample(1500, rng=5)
    assert s.shape == (1500, 3) and bool(m.belongs(s).all())
    # level-1 moments of the shrunk density (its coefficients at time t* (1 + 1%)), 5 s.e.
    ep = m.eigenpairs(2)
    vals = ep(s)[:, 1:]
    expected = math.exp(-2 * 0.05 * 1.01) * est.coef_[1:4]
    se = vals.std(0) / math.sqrt(1500)
    # the walk's step bias is O(h); allow it on top of N_SIGMA standard errors
    assert bool(((vals.mean(0) - expected).abs() <= N_SIGMA * se + 0.01).all())
    est.save(tmp_path / "shrunk.npz")
    back = DiffusionKernelSmoother.load(tmp_path / "shrunk.npz")
    Q = m.random_uniform(6, rng=7)
    torch.testing.assert_close(back.score_samples(Q), est.score_samples(Q), rtol=0, atol=0)
    assert back.shrinkage_factor_ == est.shrinkage_factor_


@pytest.mark.parametrize("time", ["auto", "multiscale", 0.002])
def test_mesh_smoother_fit_score_sample_roundtrip(tmp_path, time):
    from heatscore.manifolds import TriangleMesh
    from heatscore.manifolds._mesh_geometry import icosphere

    V, F = icosphere(2)
    m = TriangleMesh(V, F)
    X = sample_heat_kernel(m, m.random_uniform(3, rng=1)[torch.arange(120) % 3], 0.01, rng=2)
    est = DiffusionKernelSmoother(m, time=time).fit(X)
    assert est.weights_.sum().item() == pytest.approx(1.0)
    for tau in est.times_.tolist():
        assert est._mesh_density.integral(tau) == pytest.approx(1.0, rel=1e-10)
    # plain coordinates (a clone carries no location cached by the mesh that drew it)
    Q = m.random_uniform(20, rng=3).clone()
    lp, g = est.score_samples(Q), est.grad_log_density(Q, 0.01)
    assert torch.isfinite(lp).all() and torch.isfinite(g).all()
    s = est.sample(50, rng=4)
    assert bool(m.belongs(s).all())
    torch.testing.assert_close(s, est.sample(50, rng=4), rtol=0, atol=1e-12)
    est.save(tmp_path / "mesh.npz")
    back = DiffusionKernelSmoother.load(tmp_path / "mesh.npz")
    torch.testing.assert_close(back.score_samples(Q), lp, rtol=0, atol=0)
    with pytest.raises(ValueError, match="shrinkage=True needs an analytic manifold"):
        DiffusionKernelSmoother(m, time=0.01, shrinkage=True).fit(X)
