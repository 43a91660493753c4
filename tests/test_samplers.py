"""Reverse-time samplers and likelihoods driven by exact scores of targets with known marginals.

Targets: heat-kernel mixtures p_t = Σ_j w_j k_{τ_j + t}(·, μ_j) on S², T² and SO(3), whose
eigenfunction moments are E_{p_t}[φ_n] = Σ_j w_j e^{−λ_n(τ_j + t)} φ_n(μ_j), and Gaussians under
Ornstein–Uhlenbeck on R^d. The mixtures' scores are evaluated by short series (zonal Legendre on
S², wrapped Gaussians on T², characters on SO(3)) that are pinned against ``HeatKernel`` below:
the library's certified closed forms cost ~0.1 s per 10^4 pairs, too slow to call at every step.

Statistical checks use N_SIGMA standard errors on eigenfunction moments (conftest: about 5.7e-7
false-failure chance per Gaussian statistic; a few dozen statistics here, so below 1e-4 overall).
"""

import io
import math

import pytest
import torch

from conftest import N_SIGMA, assert_close
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus, TriangleMesh
from heatscore.manifolds._mesh_geometry import icosphere
from heatscore.samplers import (DEFAULT_MIXING, default_times, log_likelihood, probability_flow,
                                reverse_sde, time_grid)
from heatscore.samplers._progress import ProgressBar
from heatscore._validation import standard_normal
from heatscore.samplers._sde import langevin_step_size

#: Levels of the S² zonal and SO(3) character series: the first omitted term is below
#: e^{−l(l+1)t} ≤ e^{−45} relative for every diffusion time t ≥ 0.15 used here.
SERIES_LEVELS = 17

#: Heun's method for the likelihood ODE: measured errors ≤ 5e-4 at the finer step counts used
#: below (second order: the error falls fourfold per doubling, also checked); with margin.
LIKELIHOOD_ATOL = 2e-3

#: Mesh walk against the discrete semigroup exp(−t M⁻¹S): the walk is Brownian motion on the
#: polyhedral surface, the semigroup its cotangent/lumped-mass discretisation. Measured moment
#: biases on icosphere(2) at t = 0.2: ≤ 0.014 (40 000 particles), the same at √(2h) = 0.5, 0.35
#: and 0.25 mean edges (so it is the discretisation of the Laplacian, not of time; 0.005 on
#: icosphere(3)); allowance on top of N_SIGMA standard errors.
MESH_BIAS_ATOL = 0.03


# --- targets --------------------------------------------------------------------------------
class HeatMixture:
    """p_t(x) = Σ_j w_j k_{τ_j + t}(x, μ_j); subclasses give k and ∇k as series in one variable."""

    def __init__(self, m, centres, taus, weights):
        self.m = m
        self.mu = torch.as_tensor(centres, dtype=torch.float64)
        self.tau = torch.as_tensor(taus, dtype=torch.float64)
        self.w = torch.as_tensor(weights, dtype=torch.float64)

    def density_and_grad(self, x, t):
        """(n,) p_t(x) and (n, *ambient) ∇p_t(x) (Riemannian)."""
        raise NotImplementedError

    def log_density(self, x, t):
        return torch.log(self.density_and_grad(x, t)[0])

    def score(self, x, t):
        p, grad = self.density_and_grad(x, t)
        return grad / p.reshape((-1,) + (1,) * (grad.ndim - 1))

    def reference_log_and_score(self, x, t):
        """The same mixture from HeatKernel.log_pairs / grad_log_pairs (logsumexp weights)."""
        k = HeatKernel(self.m)
        logs, grads = [], []
        for j in range(len(self.w)):
            mu = self.mu[j:j + 1].expand_as(x)
            logs.append(k.log_pairs(x, mu, float(self.tau[j]) + t))
            grads.append(k.grad_log_pairs(x, mu, float(self.tau[j]) + t))
        logs = torch.stack(logs, 1) + torch.log(self.w)
        pi = torch.softmax(logs, 1)
        return torch.logsumexp(logs, 1), torch.einsum("nj,nj...->n...", pi, torch.stack(grads, 1))

    def sample(self, n, t, gen):
        j = torch.multinomial(self.w, n, replacement=True, generator=gen)
        return sample_heat_kernel(self.m, self.mu[j], self.tau[j] + t, rng=gen)

    def moments(self, ep, t):
        """(K,) exact E_{p_t}[φ_n]."""
        decay = torch.exp(-ep.eigenvalues[None] * (self.tau[:, None] + t))
        return (self.w[:, None] * decay * ep(self.mu)).sum(0)


class SphereMixture(HeatMixture):
    """Zonal series k_t(z) = Σ_l (2l+1)/4π e^{−l(l+1)t} P_l(z), z = x·μ; ∇z = μ − z x."""

    def density_and_grad(self, x, t):
        x = x.to(torch.float64)                                             # float32 callers too
        z = x @ self.mu.T                                                   # (n, J)
        tt = self.tau + t
        p_prev, p_cur = torch.ones_like(z), z
        d_prev, d_cur = torch.zeros_like(z), torch.ones_like(z)
        k = p_prev / (4 * math.pi) + 3 / (4 * math.pi) * torch.exp(-2 * tt) * p_cur
        dk = 3 / (4 * math.pi) * torch.exp(-2 * tt) * d_cur
        for l in range(1, SERIES_LEVELS):
            p_next = ((2 * l + 1) * z * p_cur - l * p_prev) / (l + 1)
            d_next = d_prev + (2 * l + 1) * p_cur                           # P'_{l+1} = P'_{l−1} + (2l+1)P_l
            c = (2 * l + 3) / (4 * math.pi) * torch.exp(-(l + 1) * (l + 2) * tt)
            k, dk = k + c * p_next, dk + c * d_next
            p_prev, p_cur, d_prev, d_cur = p_cur, p_next, d_cur, d_next
        wdk = self.w * dk
        grad = wdk @ self.mu - (wdk * z).sum(1, keepdim=True) * x
        return k @ self.w, grad


class TorusMixture(HeatMixture):
    """Products of wrapped Gaussians of variance 2t (|m| ≤ 4 windings: exact to 1e-16 for t ≤ 2)."""

    def density_and_grad(self, x, t):
        tt = (self.tau + t)[None, :, None, None]
        delta = (x[:, None, :] - self.mu[None])[..., None] + 2 * math.pi * torch.arange(-4, 5, dtype=x.dtype)
        g = torch.exp(-delta ** 2 / (4 * tt)) / torch.sqrt(4 * math.pi * tt)   # (n, J, d, windings)
        per_axis, d_axis = g.sum(-1), (-delta / (2 * tt) * g).sum(-1)          # (n, J, d)
        k = per_axis.prod(-1)
        dk = k[..., None] * d_axis / per_axis
        return k @ self.w, torch.einsum("j,njd->nd", self.w, dk)


class SO3Mixture(HeatMixture):
    """Characters k_t = Σ_l (2l+1)/8π² e^{−l(l+1)t} U_{2l}(c), c = cos(θ/2) = √((tr(μᵀR) + 1)/4);
    grad tr(μᵀR) = 2R skew(Rᵀμ) (twice the Frobenius projection), so ∇c = R skew(Rᵀμ)/(4c)."""

    def density_and_grad(self, x, t):
        n, J = x.shape[0], self.mu.shape[0]
        tr = x.reshape(n, 1, 9).mul(self.mu.reshape(1, J, 9)).sum(-1)         # tr(μ_jᵀR), (n, J)
        c = torch.sqrt(torch.clamp((tr + 1) / 4, min=1e-300))
        tt = self.tau + t
        u_prev, u_cur = torch.zeros_like(c), torch.ones_like(c)           # U_{−1}, U_0
        du_prev, du_cur = torch.zeros_like(c), torch.zeros_like(c)
        k, dk = torch.ones_like(c) / (8 * math.pi ** 2), torch.zeros_like(c)
        for l in range(1, SERIES_LEVELS):
            for _ in range(2):                                            # U_{2l−1}, U_{2l}
                u_prev, u_cur, du_prev, du_cur = (u_cur, 2 * c * u_cur - u_prev, du_cur,
                                                  2 * u_cur + 2 * c * du_cur - du_prev)
            coef = (2 * l + 1) / (8 * math.pi ** 2) * torch.exp(-l * (l + 1) * tt)
            k, dk = k + coef * u_cur, dk + coef * du_cur
        rt_mu = torch.matmul(x.transpose(1, 2)[:, None], self.mu[None])     # RᵀΜ_j, (n, J, 3, 3)
        tangent = torch.matmul(x[:, None], 0.5 * (rt_mu - rt_mu.transpose(-1, -2)))
        grad = ((self.w * dk / (4 * c))[..., None, None] * tangent).sum(1)
        return k @ self.w, grad


class OUGaussian:
    """p_0 = N(μ, σ² I) on Euclidean(d, scale=s): p_t = N(e^{−t}μ, v_t I), v_t = e^{−2t}σ² + s²(1 − e^{−2t})."""

    def __init__(self, m, mu, sigma):
        self.m, self.mu, self.sigma = m, torch.as_tensor(mu, dtype=torch.float64), float(sigma)

    def mean(self, t):
        return math.exp(-t) * self.mu

    def var(self, t):
        return math.exp(-2 * t) * self.sigma ** 2 + self.m.scale ** 2 * (1 - math.exp(-2 * t))

    def score(self, x, t):
        return -(x - self.mean(t)) / self.var(t)

    def score_divergence(self, x, t):
        return torch.full((x.shape[0],), -self.m.d / self.var(t), dtype=x.dtype)

    def log_density(self, x, t):
        v = self.var(t)
        return -0.5 * ((x - self.mean(t)) ** 2).sum(1) / v - 0.5 * self.m.d * math.log(2 * math.pi * v)

    def sample(self, n, t, gen):
        return self.mean(t) + math.sqrt(self.var(t)) * torch.randn(n, self.m.d, generator=gen,
                                                                   dtype=torch.float64)


def _sphere_target():
    mu = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -0.6, -0.8]]
    return SphereMixture(Sphere(2), mu, [0.1, 0.15, 0.2], [0.5, 0.3, 0.2])


def _torus_target():
    return TorusMixture(Torus(2), [[0.5, 1.0], [3.5, 4.0], [2.0, 5.5]], [0.1, 0.15, 0.2], [0.5, 0.3, 0.2])


def _so3_target():
    return SO3Mixture(SO3(), SO3().random_uniform(3, rng=5), [0.1, 0.15, 0.2], [0.5, 0.3, 0.2])


TARGETS = {"sphere": (_sphere_target, 3), "torus": (_torus_target, 3), "so3": (_so3_target, 2)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These walks are thousands of small tensor ops: with 2 intra-op threads on a shared 2-core
    machine the file took 90 s (94 s CPU, mostly OpenMP spin-waits) against 13 s on one thread.
    Restored after the module."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _zero_score(x, t):
    return torch.zeros_like(x)


def _check_moments(values, exact, extra_atol=0.0):
    """|sample mean − exact| ≤ N_SIGMA standard errors (+ an allowance) for every column."""
    n = values.shape[0]
    se = values.std(0) / math.sqrt(n)
    err = (values.mean(0) - exact).abs()
    worst = int(torch.argmax(err / (N_SIGMA * se + extra_atol)))
    assert bool((err <= N_SIGMA * se + extra_atol).all()), (
        f"moment {worst}: error {float(err[worst]):.4g}, standard error {float(se[worst]):.3g}")


# --- the targets are what they claim ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TARGETS))
@pytest.mark.parametrize("t", [0.05, 0.7])
def test_targets_match_heat_kernel(name, t):
    target = TARGETS[name][0]()
    m = target.m
    x = torch.cat([m.random_uniform(20, rng=3), target.mu])
    log_ref, score_ref = target.reference_log_and_score(x, t)
    assert_close(target.log_density(x, t), log_ref, rtol=1e-8, atol=1e-8)
    assert_close(target.score(x, t), score_ref, rtol=1e-7, atol=1e-7)


# --- reverse SDE ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_reverse_sde_reproduces_mixture_moments(name):
    make, n_levels = TARGETS[name]
    target = make()
    m = target.m
    gen = torch.Generator().manual_seed(11)
    n, t_end = 6000, 0.05
    x_T = target.sample(n, 1.0, gen)                           # exact p_T: no truncation error
    y = reverse_sde(m, target.score, x_T, time_grid(1.0, t_end, 100, "geometric"), rng=gen)
    assert bool(m.belongs(y).all())
    ep = m.eigenpairs(n_levels)
    _check_moments(ep(y)[:, 1:], target.moments(ep, t_end)[1:])


def test_reverse_sde_gaussian_mean_and_variance_with_scale():
    m = Euclidean(4, scale=0.5)
    target = OUGaussian(m, [1.0, -0.5, 0.0, 2.0], 0.3)
    gen = torch.Generator().manual_seed(3)
    n, t_end = 10_000, 0.02
    x_T = target.sample(n, 3.0, gen)
    y = reverse_sde(m, target.score, x_T, time_grid(3.0, t_end, 150, "geometric"), rng=gen)
    mean, var = target.mean(t_end), target.var(t_end)
    _check_moments(y, mean)
    _check_moments((y - mean) ** 2, torch.full((4,), var))


def test_reverse_sde_from_the_stationary_law_by_default():
    m = Euclidean(3, scale=2.0)
    target = OUGaussian(m, [0.5, 0.0, -0.5], 0.4)
    gen = torch.Generator().manual_seed(4)
    times = default_times(m, 0.05, n_steps=200)
    assert float(times[0]) == DEFAULT_MIXING                     # λ_1 = 1 on R^d
    y = reverse_sde(m, target.score, 8000, times, rng=gen)
    _check_moments(y, target.mean(0.05))


def test_so3_zero_score_walk_pins_the_factor_two_and_converges():
    """From the identity, E[tr R] = 3 e^{−2t} (λ = 2 for the l = 1 entries). The walk with N steps
    h = t/N has exactly E[tr R] = 3 a^N, a = (1 + 2(1 − 2h)e^{−h})/3 (E cos(√(2h)|ω|) for ω ~ N(0, I₃)
    is (1 − 2h)e^{−h}), so its bias against 3e^{−2t} is known and shrinks like 1/N."""
    m, t, n = SO3(), 1.0, 100_000
    x0 = torch.eye(3, dtype=torch.float64).expand(n, 3, 3)
    errors = []
    for n_steps in (2, 4, 8):
        y = reverse_sde(m, _zero_score, x0, time_grid(t, 0.0, n_steps), rng=n_steps)
        trace = torch.diagonal(y, dim1=1, dim2=2).sum(-1)
        h = t / n_steps
        walk = 3 * ((1 + 2 * (1 - 2 * h) * math.exp(-h)) / 3) ** n_steps
        _check_moments(trace[:, None], torch.tensor([walk]))
        errors.append(abs(float(trace.mean()) - 3 * math.exp(-2 * t)))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0]                          # first order: ≈ 0.25


def test_mesh_zero_score_walk_follows_the_discrete_semigroup(monkeypatch):
    """Zero score on a mesh: E[φ_j(X_t)] = e^{−λ_j t} φ_j(x0) (the discrete semigroup, P1 φ_j);
    particles stay located on their faces (no spatial-index query after the start)."""
    m = TriangleMesh(*icosphere(2))
    ep = m.eigenpairs(9)
    n, t = 5000, 0.2
    x0 = m.vertices[:1].expand(n, 3).clone()
    m.validate(x0)
    calls = []
    original = m._locator.locate
    monkeypatch.setattr(m._locator, "locate", lambda P: calls.append(len(P)) or original(P))
    h = 0.5 * (0.5 * m.mean_edge_length) ** 2
    y = reverse_sde(m, _zero_score, x0, time_grid(t, 0.0, math.ceil(t / h)), rng=2)
    assert calls == []
    exact = torch.exp(-ep.eigenvalues * t) * ep(x0[:1])[0]
    _check_moments(ep(y)[:, 1:], exact[1:], extra_atol=MESH_BIAS_ATOL)


def test_predictor_corrector_on_gaussian():
    """Langevin corrector steps pull a wrong start towards p_{t_end}; without them the error stays."""
    m = Euclidean(8)
    target = OUGaussian(m, torch.linspace(-1, 1, 8), 0.5)
    times = torch.tensor([0.11, 0.1], dtype=torch.float64)
    start = m.sample_stationary(20_000, rng=0)                  # N(0, I), far from p_0.1
    plain = reverse_sde(m, target.score, start, times, rng=1)
    corrected = reverse_sde(m, target.score, start, times, rng=1, corrector_steps=150, snr=0.16)
    mean, var = target.mean(0.1), target.var(0.1)
    err_plain = float((plain.mean(0) - mean).abs().max())
    err_corrected = float((corrected.mean(0) - mean).abs().max())
    assert err_corrected < 0.05 * err_plain
    _check_moments(corrected, mean)
    # unadjusted Langevin on a Gaussian: exact stationary mean, variance inflated by 1/(1 − ε/2v);
    # at stationarity ε ≈ 2 snr² v (|ξ|² ≈ d, |s|² ≈ d/v), so about 2.6 % here
    assert abs(float(corrected.var(0).mean()) / var - 1) < 0.05


def test_langevin_step_size_matches_song_et_al():
    m = Sphere(2)
    x = m.random_uniform(100, rng=0)
    score = 3.0 * m.random_tangent_normal(x, rng=1)
    noise = m.random_tangent_normal(x, rng=2)
    eps = langevin_step_size(m, x, score, noise, 0.2, 1.0)
    ratio = score.norm(dim=1).mean() / noise.norm(dim=1).mean()
    assert eps == pytest.approx(2 * (0.2 / float(ratio)) ** 2, rel=1e-12)
    assert langevin_step_size(m, x, torch.zeros_like(x), noise, 0.2, 1.0) == 0.0


def test_corrector_keeps_sphere_iterates_on_the_manifold():
    target = _sphere_target()
    x_T = target.sample(200, 1.0, torch.Generator().manual_seed(0))
    y, path = reverse_sde(target.m, target.score, x_T, time_grid(1.0, 0.1, 5), rng=0,
                          return_trajectory=True, corrector_steps=2)
    assert path.shape == (6, 200, 3) and torch.equal(path[-1], y) and torch.equal(path[0], x_T)
    assert bool(target.m.belongs(path.reshape(-1, 3)).all())


def test_float32_points_stay_float32_and_on_the_manifold():
    target = _sphere_target()
    x_T = target.m.random_uniform(100, rng=0, dtype=torch.float32)
    times = time_grid(1.0, 0.1, 10)
    y = reverse_sde(target.m, target.score, x_T, times, rng=0, corrector_steps=1)
    z = probability_flow(target.m, target.score, x_T, times)
    assert y.dtype == z.dtype == torch.float32
    assert bool(target.m.belongs(y).all()) and bool(target.m.belongs(z).all())


def test_same_seed_same_samples():
    target = _so3_target()
    x_T = target.m.random_uniform(50, rng=0)
    times = time_grid(1.0, 0.1, 10)
    a = reverse_sde(target.m, target.score, x_T, times, rng=7, corrector_steps=1)
    b = reverse_sde(target.m, target.score, x_T, times, rng=torch.Generator().manual_seed(7),
                    corrector_steps=1)
    c = reverse_sde(target.m, target.score, x_T, times, rng=8, corrector_steps=1)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_walk_noise_moments_tails_and_reproducibility():
    """float32 draws: mean 0, variance 1, fourth moment 3 within N_SIGMA standard errors, the
    two-sided tail mass beyond 3 within N_SIGMA binomial standard errors; seeds reproduce."""
    n = 2_000_001
    z = standard_normal(torch.Generator().manual_seed(3), (n,))
    assert z.shape == (n,) and z.dtype == torch.float32
    u = z.double()
    # (k, E Z^k, Var Z^k = E Z^2k − (E Z^k)²)
    for k, exact, var in ((1, 0.0, 1.0), (2, 1.0, 2.0), (3, 0.0, 15.0), (4, 3.0, 96.0)):
        assert abs(float((u ** k).mean()) - exact) < N_SIGMA * math.sqrt(var / n)
    tail = math.erfc(3 / math.sqrt(2))
    assert abs(float((u.abs() > 3).double().mean()) - tail) < N_SIGMA * math.sqrt(tail / n)
    a = standard_normal(torch.Generator().manual_seed(5), (7, 3))
    assert a.shape == (7, 3) and torch.equal(a, standard_normal(torch.Generator().manual_seed(5), (7, 3)))


@pytest.mark.parametrize("m", [Sphere(2), Sphere(4), Torus(2), Euclidean(5, scale=0.7)], ids=repr)
def test_fast_walk_step_is_the_geodesic_step(m):
    """The closed-form sphere, torus and Euclidean steps (ambient noise, unit iterates) equal
    exp_y(h(−b + 2D s) + √(2Dh) P_y ξ) with the same ξ (drawn from a copy of the generator; on
    the sphere in the walk's column-major order)."""
    process = m._forward_process()
    D, h = process.diffusion, 0.03
    y = m.sample_stationary(64, rng=0)
    score = m.proj(y, 2.0 * torch.randn(y.shape, generator=torch.Generator().manual_seed(1),
                                         dtype=y.dtype))
    gen = torch.Generator().manual_seed(2)
    copy = torch.Generator().manual_seed(2)
    xi = standard_normal(copy, y.shape[::-1]).T if isinstance(m, Sphere) else standard_normal(copy, y.shape)
    xi = math.sqrt(2 * D * h) * xi.double()
    expected = m.exp(y, m.proj(y, xi) + 2 * D * h * score - h * process.drift(y))
    actual = m._walk_step(y, process)(y, score, h, gen, 0)
    assert actual.dtype == torch.float64
    assert_close(actual, expected)
    assert bool(m.belongs(actual).all())


@pytest.mark.parametrize("d", [2, 4])
@pytest.mark.parametrize("h", [1e-20, 1e-12, 1e-4, 0.03, 0.1, 1.5])
def test_sphere_step_is_the_geodesic_step_at_every_step_length(d, h):
    """The sphere step's cos r and sin r / r as polynomials in r² (Horner degrees 0, 1, 4, 8–9
    and 10–12 at these step lengths) and, for the longest steps (r beyond 2.37), as sin and cos:
    the step equals exp_y(√(2h) P_y ξ + 2h s) to rounding and stays on the sphere."""
    m = Sphere(d)
    y = m.sample_stationary(500, rng=1)
    score = m.proj(y, torch.randn(y.shape, generator=torch.Generator().manual_seed(2), dtype=y.dtype))
    xi = standard_normal(torch.Generator().manual_seed(3), y.shape[::-1]).T.double()
    expected = m.exp(y, m.proj(y, math.sqrt(2 * h) * xi) + 2 * h * score)
    actual = m._walk_step(y, m._forward_process())(y, score, h, torch.Generator().manual_seed(3), 0)
    assert_close(actual, expected, atol=1e-13 * max(1.0, h), rtol=0)
    assert float((actual.norm(dim=1) - 1).abs().max()) < 1e-14


# --- probability flow -----------------------------------------------------------------------------
def test_probability_flow_is_the_exact_gaussian_map_to_second_order():
    """For a Gaussian the flow is affine: x_t = m_t + √(v_t/v_T)(x_T − m_T)."""
    m = Euclidean(3, scale=1.5)
    target = OUGaussian(m, [1.0, 0.0, -2.0], 0.2)
    x_T = m.sample_stationary(5, rng=0)
    T, t_end = 2.0, 0.01
    exact = target.mean(t_end) + math.sqrt(target.var(t_end) / target.var(T)) * (x_T - target.mean(T))
    errors = [float((probability_flow(m, target.score, x_T, time_grid(T, t_end, n, "geometric"))
                     - exact).abs().max()) for n in (50, 100)]
    assert errors[1] < 1e-3
    assert 3.0 < errors[0] / errors[1] < 5.0                    # second order


def test_probability_flow_transports_sphere_mixture():
    target = _sphere_target()
    gen = torch.Generator().manual_seed(5)
    x_T = target.sample(6000, 1.0, gen)
    y, path = probability_flow(target.m, target.score, x_T, time_grid(1.0, 0.05, 40, "geometric"),
                               return_trajectory=True)
    assert path.shape == (41, 6000, 3) and bool(target.m.belongs(y).all())
    ep = target.m.eigenpairs(3)
    _check_moments(ep(y)[:, 1:], target.moments(ep, 0.05)[1:])


# --- likelihood ----------------------------------------------------------------------------------
def test_log_likelihood_gaussian_matches_closed_form():
    """DESIGN's check: p_0 = N(μ, σ² I), div(b − s_t) = d(s²/v_t − 1); scale s = 0.8."""
    m = Euclidean(3, scale=0.8)
    target = OUGaussian(m, [0.3, -0.2, 0.1], 1.7)
    x = target.sample(6, 0.0, torch.Generator().manual_seed(0))
    exact = target.log_density(x, 0.0)
    errors = []
    for n_steps in (100, 200):
        times = time_grid(10.0, 0.0, n_steps).flip(0)
        ll = log_likelihood(m, target.score, x, times)
        errors.append(float((ll - exact).abs().max()))
        assert_close(log_likelihood(m, target.score, x, times, divergence=target.score_divergence),
                     ll, rtol=1e-12, atol=1e-12)
    assert errors[1] < LIKELIHOOD_ATOL
    assert 3.0 < errors[0] / errors[1] < 5.0                    # second order


def test_hutchinson_is_unbiased():
    m = Euclidean(3)
    target = OUGaussian(m, [0.3, -0.2, 0.1], 0.6)
    x = target.sample(1, 0.0, torch.Generator().manual_seed(0)).expand(4000, 3)
    times = time_grid(8.0, 0.0, 40).flip(0)
    exact_path = log_likelihood(m, target.score, x[:1], times)
    estimates = log_likelihood(m, target.score, x, times, divergence="hutchinson", rng=3)
    assert float(estimates.std()) > 0.1                          # it is random ...
    _check_moments(estimates[:, None], exact_path)              # ... and centred on the exact rule
    again = log_likelihood(m, target.score, x[:10], times, divergence="hutchinson", rng=3)
    assert torch.equal(again, log_likelihood(m, target.score, x[:10], times, divergence="hutchinson",
                                             rng=3))


@pytest.mark.parametrize("name", ["sphere", "so3"])
def test_log_likelihood_mixture_exact_divergence(name):
    """log p_0.1 of the mixture from p_1.5 (exact end density): second order in the step count."""
    target = TARGETS[name][0]()
    m = target.m
    x = target.sample(8, 0.1, torch.Generator().manual_seed(1))
    exact = target.log_density(x, 0.1)
    errors = []
    for n_steps in (40, 80):
        times = time_grid(1.5, 0.1, n_steps, "geometric").flip(0)
        ll = log_likelihood(m, target.score, x, times, log_p_T=lambda y: target.log_density(y, 1.5))
        errors.append(float((ll - exact).abs().max()))
    assert errors[1] < LIKELIHOOD_ATOL
    assert 3.0 < errors[0] / errors[1] < 5.0


def test_log_likelihood_torus_default_stationary_end():
    target = _torus_target()
    x = target.sample(8, 0.1, torch.Generator().manual_seed(2))
    times = time_grid(12.0, 0.1, 160, "geometric").flip(0)
    ll = log_likelihood(target.m, target.score, x, times)      # log p_12 ≈ −log 4π² (e^{−12})
    assert_close(ll, target.log_density(x, 0.1), rtol=0, atol=LIKELIHOOD_ATOL)


# --- grids, progress, validation ------------------------------------------------------------------
def test_time_grids():
    u = time_grid(2.0, 0.5, 3)
    assert_close(u, [2.0, 1.5, 1.0, 0.5])
    g = time_grid(1.0, 1e-3, 3, "geometric")
    assert_close(g, [1.0, 0.1, 0.01, 1e-3])
    assert float(g[-1]) == 1e-3 and g.dtype == torch.float64


def test_default_times_scale_with_the_geometry():
    assert float(default_times(Sphere(2), 1e-3, 10)[0]) == pytest.approx(DEFAULT_MIXING / 2)
    assert float(default_times(SO3(), 1e-3, 10)[0]) == pytest.approx(DEFAULT_MIXING / 2)
    assert float(default_times(Torus(2), 1e-3, 10)[0]) == pytest.approx(DEFAULT_MIXING)
    V, F = icosphere(1)
    small = default_times(TriangleMesh(V, F), 1e-3, 10)
    large = default_times(TriangleMesh(3 * V, F), 9e-3, 10)
    assert_close(large, 9 * small)


def test_progress_bar_only_on_a_terminal(capsys):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    out = Terminal()
    bar = ProgressBar(4, True, label="demo", stream=out)
    for _ in range(4):
        bar.update()
    bar.close()
    assert "4/4 100%" in out.getvalue() and out.getvalue().endswith("\n")
    quiet = Terminal()
    ProgressBar(4, False, stream=quiet).update()
    assert quiet.getvalue() == ""
    reverse_sde(Sphere(2), _zero_score, 5, time_grid(1.0, 0.5, 3), rng=0, progress=True)
    assert capsys.readouterr().err == ""                         # pytest's stderr is not a tty


def test_validation_errors():
    m = Sphere(2)
    x = m.random_uniform(4, rng=0)
    times = time_grid(1.0, 0.1, 4)
    with pytest.raises(ValueError, match="times must be strictly decreasing"):
        reverse_sde(m, _zero_score, x, times.flip(0))
    with pytest.raises(ValueError, match="times must be strictly increasing"):
        log_likelihood(m, _zero_score, x, times)
    with pytest.raises(ValueError, match="times must be a 1-D array of at least 2"):
        probability_flow(m, _zero_score, x, times[:1])
    with pytest.raises(ValueError, match="times must be >= 0"):
        reverse_sde(m, _zero_score, x, torch.tensor([1.0, -0.1]))
    with pytest.raises(ValueError, match="x_T must be points of shape"):
        reverse_sde(m, _zero_score, x[:, :2], times)
    with pytest.raises(ValueError, match="x_T has 1 of 4 points off"):
        probability_flow(m, _zero_score, x * torch.tensor([[1.0], [1.0], [1.1], [1.0]]), times)
    with pytest.raises(ValueError, match=r"score_fn must return tangent vectors of shape \(4, 3\)"):
        reverse_sde(m, lambda y, t: y[:, :2], x, times)
    with pytest.raises(ValueError, match="score_fn returned 12 NaN/inf"):
        probability_flow(m, lambda y, t: y * float("nan"), x, times)
    with pytest.raises(ValueError, match="snr must be finite and > 0"):
        reverse_sde(m, _zero_score, x, times, corrector_steps=1, snr=0.0)
    with pytest.raises(ValueError, match="corrector_steps must be >= 0"):
        reverse_sde(m, _zero_score, x, times, corrector_steps=-1)
    with pytest.raises(ValueError, match="divergence must be one of"):
        log_likelihood(m, _zero_score, x, times.flip(0), divergence="trace")
    with pytest.raises(ValueError, match="does not depend on x through autograd"):
        log_likelihood(m, _zero_score, x, times.flip(0))
    with pytest.raises(ValueError, match=r"divergence must return shape \(4,\)"):
        log_likelihood(m, _zero_score, x, times.flip(0), divergence=lambda y, t: torch.zeros(3))
    with pytest.raises(ValueError, match=r"log_p_T must return shape \(4,\)"):
        log_likelihood(m, _zero_score, x, times.flip(0), divergence=lambda y, t: torch.zeros(4),
                       log_p_T=lambda y: torch.zeros(4, 1))
    with pytest.raises(ValueError, match="T must be > t_end"):
        time_grid(0.1, 0.1, 5)
    with pytest.raises(ValueError, match="t_end must be > 0 for a geometric grid"):
        time_grid(1.0, 0.0, 5, "geometric")
    with pytest.raises(ValueError, match="kind must be one of"):
        time_grid(1.0, 0.1, 5, "log")
    with pytest.raises(ValueError, match="n_steps must be >= 1"):
        time_grid(1.0, 0.1, 0)
    mesh = TriangleMesh(*icosphere(1))
    y = mesh.random_uniform(3, rng=0)
    for fn in (lambda: probability_flow(mesh, _zero_score, y, times),
               lambda: log_likelihood(mesh, _zero_score, y, times.flip(0))):
        with pytest.raises(ValueError, match="score of a P1 .* jumps across edges"):
            fn()
