"""Heat-kernel contract over every manifold (DESIGN: Tests), forward sampling and embeddings."""

import math
import warnings

import pytest
import torch

from conftest import N_SIGMA
from heatscore import TruncationWarning
from heatscore.heat_kernels import (HeatKernel, diffusion_distance, diffusion_map,
                                    heat_kernel_signature, kernel_mean_embedding, mmd,
                                    mmd_permutation_test, sample_heat_kernel, spectral_sum)
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus

#: Quadrature of a smooth kernel at the stated resolutions: relative error well below this.
QUAD_RTOL = 1e-8
#: Finite differences (central, step 1e-4 in time and space): O(h²) truncation and round-off.
FD_RTOL = 1e-5

ANALYTIC = {
    "sphere": (lambda: Sphere(2), 48),
    "torus2": (lambda: Torus(2), 48),
    "so3": (lambda: SO3(), 20),
    "euclidean2": (lambda: Euclidean(2), 60),
    "euclidean_scaled": (lambda: Euclidean(2, scale=2.0), 60),
}
COMPACT = ["sphere", "torus2", "so3"]


def _make(name):
    factory, n = ANALYTIC[name]
    return factory(), n


def _frame(m, x):
    """Orthonormal tangent frame at each point: (n, dim, *ambient)."""
    if isinstance(m, Sphere):
        a = torch.zeros_like(x)
        a[:, 0] = 1.0
        alt = torch.zeros_like(x)
        alt[:, 1] = 1.0
        a = torch.where((x[:, :1].abs() > 0.9), alt, a)
        e1 = a - (a * x).sum(1, keepdim=True) * x
        e1 = e1 / e1.norm(dim=1, keepdim=True)
        e2 = torch.cross(x, e1, dim=1)
        return torch.stack([e1, e2], dim=1)
    if isinstance(m, SO3):
        hats = torch.zeros(3, 3, 3, dtype=x.dtype)
        for i, (j, k) in enumerate([(1, 2), (2, 0), (0, 1)]):
            hats[i, j, k], hats[i, k, j] = -1.0, 1.0
        return torch.einsum("nab,ibc->niac", x, hats)
    eye = torch.eye(x.shape[1], dtype=x.dtype)
    return eye.expand(x.shape[0], -1, -1)


def _laplacian_fd(m, f, x, h=1e-4):
    """Δf(x) = Σ_i d²/ds² f(exp_x(s e_i)) at s = 0 (geodesic normal coordinates)."""
    frame = _frame(m, x)
    out = -2 * m.dim * f(x)
    for i in range(m.dim):
        e = frame[:, i]
        out = out + f(m.exp(x, h * e)) + f(m.exp(x, -h * e))
    return out / h**2


@pytest.mark.parametrize("name", list(ANALYTIC))
@pytest.mark.parametrize("t", [0.05, 0.5])
def test_integrates_to_one(name, t):
    m, n = _make(name)
    if name.startswith("euclidean") and t < 0.5:
        pytest.skip("Gauss–Hermite needs the kernel's width comparable to γ's (t >= 0.5)")
    z, w = m.quadrature(n)
    y = m.sample_stationary(3, rng=1)
    k = HeatKernel(m)(z, y, t)
    torch.testing.assert_close(w @ k, torch.ones(3, dtype=torch.float64), rtol=QUAD_RTOL, atol=0)


@pytest.mark.parametrize("name", list(ANALYTIC))
def test_symmetry_or_detailed_balance(name):
    m, _ = _make(name)
    x, y = m.sample_stationary(6, rng=2), m.sample_stationary(5, rng=3)
    k = HeatKernel(m)
    for t in (1e-3, 0.3):
        kxy, kyx = k.log(x, y, t), k.log(y, x, t).T
        if isinstance(m, Euclidean):
            # γ(y) k(x, y) = γ(x) k(y, x) in log form.
            s2 = m.scale**2
            kxy = kxy - 0.5 * (y**2).sum(1)[None, :] / s2
            kyx = kyx - 0.5 * (x**2).sum(1)[:, None] / s2
        torch.testing.assert_close(kxy, kyx, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", COMPACT)
def test_semigroup(name):
    m, n = _make(name)
    z, w = m.quadrature(n)
    x, y = m.sample_stationary(4, rng=4), m.sample_stationary(3, rng=5)
    k = HeatKernel(m)
    s, t = 0.07, 0.11
    lhs = (k(x, z, s) * w) @ k(z, y, t)
    torch.testing.assert_close(lhs, k(x, y, s + t), rtol=QUAD_RTOL, atol=0)


@pytest.mark.parametrize("name", COMPACT)
@pytest.mark.parametrize("t", [0.02, 0.4])
def test_heat_equation_residual(name, t):
    m, _ = _make(name)
    k = HeatKernel(m)
    x, y = m.sample_stationary(5, rng=6), m.sample_stationary(5, rng=7)
    ht = 1e-5 * t
    dkdt = (torch.exp(k.log_pairs(x, y, t + ht)) - torch.exp(k.log_pairs(x, y, t - ht))) / (2 * ht)
    lap = _laplacian_fd(m, lambda p: torch.exp(k.log_pairs(p, y, t)), x)
    scale = torch.exp(k.log_pairs(x, y, t)).abs().max() / t
    assert float((dkdt - lap).abs().max()) <= FD_RTOL * float(scale) * 10


@pytest.mark.parametrize("name", ["euclidean2", "euclidean_scaled"])
def test_ou_kernel_solves_backward_equation(name):
    """∂_t k(x, y) = L_y k = s² Δ_y k − y·∇_y k (the generator acting on the starting point)."""
    m, _ = _make(name)
    k = HeatKernel(m)
    x, y = m.sample_stationary(5, rng=8), m.sample_stationary(5, rng=9)
    t, ht, h = 0.3, 1e-5, 1e-4
    f = lambda yy: torch.exp(k.log_pairs(x, yy, t))
    dkdt = (torch.exp(k.log_pairs(x, y, t + ht)) - torch.exp(k.log_pairs(x, y, t - ht))) / (2 * ht)
    s2 = m.scale**2
    gen = 0
    for i in range(2):
        e = torch.zeros_like(y)
        e[:, i] = h
        fp, fm, f0 = f(y + e), f(y - e), f(y)
        gen = gen + s2 * (fp + fm - 2 * f0) / h**2 - y[:, i] * (fp - fm) / (2 * h)
    torch.testing.assert_close(dkdt, gen, rtol=FD_RTOL * 10, atol=1e-6 * float(f(y).abs().max()))


@pytest.mark.parametrize("name", COMPACT)
def test_large_time_tends_to_uniform(name):
    m, _ = _make(name)
    x, y = m.sample_stationary(3, rng=10), m.sample_stationary(4, rng=11)
    kv = HeatKernel(m)(x, y, 40.0)
    torch.testing.assert_close(kv, torch.full_like(kv, 1 / m.volume), rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", COMPACT + ["euclidean2"])
def test_closed_form_equals_spectral_sum(name):
    m, _ = _make(name)
    x, y = m.sample_stationary(6, rng=12), m.sample_stationary(6, rng=13)
    t = 1.0 if name == "euclidean2" else 0.2  # the Mehler series converges like e^{−kt}
    exact = torch.exp(HeatKernel(m).log_pairs(x, y, t))
    levels = 30 if name == "euclidean2" else HeatKernel(m, rtol=1e-10).levels_needed(t)
    spec, _ = spectral_sum(m, x, y, torch.full((6,), t, dtype=torch.float64), levels)
    torch.testing.assert_close(spec, exact, rtol=1e-9, atol=0)
    if name != "euclidean2":
        kern = HeatKernel(m, n_levels=levels)
        assert kern.spectral_ok(t)
        torch.testing.assert_close(torch.exp(kern.log_pairs(x, y, t)), exact, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", COMPACT)
def test_too_few_levels_warns_and_falls_back(name):
    m, _ = _make(name)
    x, y = m.sample_stationary(4, rng=14), m.sample_stationary(4, rng=15)
    kern = HeatKernel(m, n_levels=3)
    with pytest.warns(TruncationWarning, match="levels cannot give"):
        lg = kern.log_pairs(x, y, 1e-3)
    torch.testing.assert_close(lg, HeatKernel(m).log_pairs(x, y, 1e-3), rtol=0, atol=0)
    assert kern.levels_needed(1e-3) > 3


@pytest.mark.parametrize("name", list(ANALYTIC))
@pytest.mark.parametrize("t", [1e-3, 0.3])
def test_grad_log_matches_finite_differences(name, t):
    m, _ = _make(name)
    k = HeatKernel(m)
    x, y = m.sample_stationary(6, rng=16), m.sample_stationary(6, rng=17)
    y = m.exp(x, 0.05 * m.random_tangent_normal(x, rng=18)) if t < 0.01 else y
    g = k.grad_log_pairs(x, y, t)
    v = m.random_tangent_normal(x, rng=19)
    h = 1e-5
    fd = (k.log_pairs(m.exp(x, h * v), y, t) - k.log_pairs(m.exp(x, -h * v), y, t)) / (2 * h)
    torch.testing.assert_close(m.inner(x, g, v), fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", list(ANALYTIC))
def test_matrix_forms_match_pairs(name):
    m, _ = _make(name)
    k = HeatKernel(m, chunk_size=2)
    x, y = m.sample_stationary(5, rng=20), m.sample_stationary(3, rng=21)
    lg, glog, g = k.log(x, y, 0.1), k.grad_log(x, y, 0.1), k.grad(x, y, 0.1)
    assert lg.shape == (5, 3) and glog.shape == (5, 3) + tuple(m.ambient_shape)
    for j in range(3):
        torch.testing.assert_close(lg[:, j], k.log_pairs(x, y[j:j + 1], 0.1))
        torch.testing.assert_close(glog[:, j], k.grad_log_pairs(x, y[j:j + 1], 0.1))
    torch.testing.assert_close(g, glog * torch.exp(lg).reshape(lg.shape + (1,) * (g.ndim - 2)))
    t_rows = torch.tensor([0.01, 0.1, 1.0, 0.5, 0.2], dtype=torch.float64)
    per_row = k.log_pairs(x, y[:1], t_rows)
    for i in range(5):
        torch.testing.assert_close(per_row[i], k.log_pairs(x[i:i + 1], y[:1], float(t_rows[i]))[0])


@pytest.mark.parametrize("name", ["sphere", "so3", "torus2"])
def test_small_times_positive_and_finite(name):
    m, _ = _make(name)
    x = m.sample_stationary(50, rng=22)
    y = m.sample_stationary(50, rng=23)
    k = HeatKernel(m)
    for t in (1e-10, 1e-8, 1e-5, 1e-3):
        lg = k.log(x, y, t)
        g = k.grad_log(x, y, t)
        assert torch.isfinite(lg).all() and torch.isfinite(g).all()
        diag = k.log_pairs(x, x, t)
        # At x = y the kernel is the flat peak (4πt)^{−dim/2} to leading order.
        torch.testing.assert_close(diag, torch.full_like(diag, -0.5 * m.dim * math.log(4 * math.pi * t)),
                                   rtol=0, atol=0.01 if t < 1e-2 else 0.1)


def test_time_validation():
    m = Sphere(2)
    k = HeatKernel(m)
    x = m.random_uniform(3, rng=0)
    with pytest.raises(ValueError, match="t must be > 0"):
        k.log(x, x, 0.0)
    with pytest.raises(ValueError, match="t must be > 0"):
        k.log_pairs(x, x, torch.tensor([0.1, -1.0, 0.2]))
    with pytest.raises(ValueError, match=r"t must be a scalar or shape \(3,\)"):
        k.log_pairs(x, x, torch.ones(4))
    with pytest.raises(ValueError, match="t must be a scalar"):
        k.log(x, x, torch.ones(3))
    with pytest.raises(ValueError, match="t must be finite"):
        k.log(x, x, float("nan"))
    with pytest.raises(ValueError, match="n_levels must be >= 1"):
        HeatKernel(m, n_levels=0)
    with pytest.raises(ValueError, match="x0 must be finite"):
        sample_heat_kernel(m, torch.full((2, 3), float("nan")), 0.1)


# --- forward sampling -------------------------------------------------------------------------

SAMPLING = ["sphere", "torus2", "so3", "euclidean2", "euclidean_scaled"]


@pytest.mark.parametrize("name", SAMPLING)
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.6])
def test_forward_sampling_moments(name, t):
    """E[φ_j(X_t)] = e^{−λ_j t} φ_j(x0) for X_t ~ k_t(·, x0), within N_SIGMA standard errors
    (chance of a false failure ≈ 6e-7 per eigenfunction)."""
    m, _ = _make(name)
    n = 20000
    x0 = m.sample_stationary(2, rng=24)
    ep = m.eigenpairs(3)
    for i in range(2):
        start = x0[i:i + 1].expand((n,) + tuple(m.point_shape))
        xt = sample_heat_kernel(m, start, t, rng=25 + i)
        assert bool(m.belongs(xt).all())
        vals = ep(xt)
        mean, se = vals.mean(0), vals.std(0) / math.sqrt(n)
        expected = torch.exp(-ep.eigenvalues * t) * ep(x0[i:i + 1])[0]
        assert bool(((mean - expected).abs() <= N_SIGMA * se + 1e-12).all()), (mean - expected) / se


def test_forward_sampling_per_point_time_and_seed():
    m = Sphere(2)
    x0 = m.random_uniform(4, rng=1)
    t = torch.tensor([1e-6, 1e-3, 0.1, 2.0], dtype=torch.float64)
    a = sample_heat_kernel(m, x0, t, rng=3)
    torch.testing.assert_close(a, sample_heat_kernel(m, x0, t, rng=3), rtol=0, atol=0)
    d = m.dist(a, x0)
    assert float(d[0]) < 0.01


# --- embeddings -------------------------------------------------------------------------------

def test_kernel_mean_embedding_weights_equal_repeats():
    m = Sphere(2)
    X = m.random_uniform(20, rng=2)
    w = torch.arange(1, 21, dtype=torch.float64)
    rep = X.repeat_interleave(w.long(), dim=0)
    torch.testing.assert_close(kernel_mean_embedding(m, X, 0.1, 5, sample_weight=w),
                               kernel_mean_embedding(m, rep, 0.1, 5))
    with pytest.raises(ValueError, match="sample_weight must have shape"):
        kernel_mean_embedding(m, X, 0.1, 5, sample_weight=w[:3])
    with pytest.raises(ValueError, match="X must hold at least one point"):
        kernel_mean_embedding(m, X[:0], 0.1, 5)


def test_embedding_is_the_diffused_density():
    """Σ_n e^{−λ_n t} ĉ_n φ_n(x) = mean_i k_t(x, x_i) when the levels suffice."""
    m = Sphere(2)
    X, x = m.random_uniform(30, rng=3), m.random_uniform(7, rng=4)
    t = 0.3
    emb = kernel_mean_embedding(m, X, t, 20)
    torch.testing.assert_close(m.eigenpairs(20)(x) @ emb, HeatKernel(m)(x, X, t).mean(1), rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", COMPACT)
def test_hks_and_diffusion_distance(name):
    m, _ = _make(name)
    x, y = m.sample_stationary(5, rng=5), m.sample_stationary(5, rng=6)
    t = 0.25
    lam = m.eigenpairs(30 if name != "so3" else 12)
    psi_x = diffusion_map(m, x, t, 30 if name != "so3" else 12)
    psi_y = diffusion_map(m, y, t, 30 if name != "so3" else 12)
    assert psi_x.shape == (5, len(lam) - 1)
    torch.testing.assert_close(diffusion_distance(m, x, y, t), (psi_x - psi_y).norm(dim=1), rtol=1e-7, atol=1e-10)
    hks = heat_kernel_signature(m, x, t)
    torch.testing.assert_close(hks, torch.exp(HeatKernel(m).log_pairs(x, x, t)))
    # On homogeneous spaces the HKS is constant: Σ_l m_l e^{−λ_l t} / vol.
    torch.testing.assert_close(hks, torch.full_like(hks, float(hks[0])), rtol=1e-10, atol=0)


def test_mmd_separates_and_permutation_test():
    m = Sphere(2)
    X = m.random_uniform(150, rng=7)
    Y = m.random_uniform(150, rng=8)
    north = torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand(150, 3)
    Z = sample_heat_kernel(m, north, 0.3, rng=9)
    assert float(mmd(m, X, Z, 0.1)) > 5 * abs(float(mmd(m, X, Y, 0.1)))
    _, p_same = mmd_permutation_test(m, X, Y, 0.1, n_permutations=99, rng=1)
    _, p_diff = mmd_permutation_test(m, X, Z, 0.1, n_permutations=99, rng=1)
    assert p_diff == pytest.approx(0.01)
    assert p_same > 0.01
    with pytest.raises(ValueError, match="at least 2 points"):
        mmd(m, X[:1], Y, 0.1)


def test_chunked_equals_unchunked():
    m = SO3()
    x, y = m.random_uniform(7, rng=1), m.random_uniform(9, rng=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = HeatKernel(m, chunk_size=3).grad_log(x, y, 0.05)
        b = HeatKernel(m).grad_log(x, y, 0.05)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sphere_interpolation_table_matches_closed_form():
    """Large same-time batches on S² go through the parametrix or RadialTable: DESIGN's accuracy
    criterion holds
    for values (|Δ log k| ≤ 1e-8 + 1e-6|log k|) and gradients, including near the antipode."""
    from heatscore.manifolds import _closed_forms as cf
    from heatscore.manifolds._heat_backends import SphereBackend

    m = Sphere(2)
    n = SphereBackend.TABLE_MIN_PAIRS
    x = m.random_uniform(n, rng=1)
    y = torch.cat([m.random_uniform(n - 100, rng=2), -x[n - 100:]])  # 100 antipodal pairs
    backend = SphereBackend(m)
    for tau in (1e-8, 1e-4, 2e-4, 1e-3, 0.05, 0.4):
        t = torch.full((n,), tau, dtype=torch.float64)
        lg, g = backend.log_and_grad(x, y, t, True)
        assert (tau in backend.__dict__.get("_tables", {})) == (tau > cf.SPHERE_PARAMETRIX_MAX_T)
        theta = m._dist(x, y)
        exact = cf.sphere_log_heat_kernel(theta, t)
        assert bool(((lg - exact).abs() <= 1e-8 + 1e-6 * exact.abs()).all())
        lg_ref, g_ref = super(SphereBackend, backend).log_and_grad(x, y, t, True)
        torch.testing.assert_close(g, g_ref, rtol=1e-8, atol=1e-8)


def test_torus_fast_image_route_matches_closed_form():
    from heatscore.manifolds import _closed_forms as cf
    from heatscore.manifolds._heat_backends import TorusBackend

    m = Torus(3)
    x, y = m.random_uniform(500, rng=1), m.random_uniform(500, rng=2)
    y[:5] = x[:5]
    for tau in (1e-8, 1e-3, 0.1, TorusBackend.FAST_MAX_T):
        t = torch.full((500,), tau, dtype=torch.float64)
        lg, g = TorusBackend(m).log_and_grad(x, y, t, True)
        exact = cf.torus_log_heat_kernel(x - y, t)
        assert bool(((lg - exact).abs() <= 1e-12 + 1e-12 * exact.abs()).all())
        torch.testing.assert_close(g, cf.torus_grad_log_heat_kernel(x - y, t), rtol=1e-10, atol=1e-10)


def test_large_batches_work_under_no_grad():
    """The interpolation table differentiates its nodes itself (plots call under no_grad)."""
    from heatscore.manifolds._heat_backends import SphereBackend

    m = Sphere(2)
    x = m.random_uniform(SphereBackend.TABLE_MIN_PAIRS, rng=3)
    with torch.no_grad():
        lg = HeatKernel(m).log_pairs(x, x.flip(0), 0.003)
    assert torch.isfinite(lg).all()


def test_sphere_harmonics_matrix_route_matches_closed_form():
    """Moderate-t S² matrices are products of spherical harmonics; the entries too small for
    that sum's rounding bound go to the pair routes. Both meet DESIGN's relative 1e-6 (values)
    and the gradients agree with the pair route, coincident and antipodal pairs included."""
    from heatscore.manifolds import _closed_forms as cf
    from heatscore.manifolds._heat_backends import SphereBackend

    m = Sphere(2)
    x, y = m.random_uniform(60, rng=5), m.random_uniform(50, rng=6)
    y[:5], y[5:10] = x[:5], -x[5:10]
    k = HeatKernel(m)
    theta = m._dist(x.unsqueeze(1), y.unsqueeze(0))
    assert SphereBackend(m)._gemm_plan(0.01, False) is None       # small t: pair routes only
    for t in (0.08, 0.1, 0.3, 2.0):
        exact = cf.sphere_log_heat_kernel(theta, torch.tensor(t))
        for want_grad in (False, True):                           # (k_min is larger with ∇)
            _, k_min = SphereBackend(m)._gemm_plan(t, want_grad)
            lg = k.log(x, y, t) if not want_grad else k._matrix(x, y, t, want_grad=True)[0]
            assert bool(((lg - exact).abs() <= 1e-6).all())       # |Δ log k| ≤ 1e-6: relative error
            if t <= 0.1:
                assert bool((exact < math.log(k_min)).any() and (exact > math.log(k_min)).any())
        ref = k.grad_log_pairs(x.repeat_interleave(50, 0), y.repeat(60, 1), t).reshape(60, 50, 3)
        err = (k.grad_log(x, y, t) - ref).norm(dim=-1) / (1 + ref.norm(dim=-1))
        assert float(err.max()) <= 1e-6
