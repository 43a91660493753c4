"""Torus(d): wrapping, geometry against brute force, Fourier eigenpairs against closed forms,
sampling moments and geomstats agreement."""

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import N_SIGMA, assert_close, coordinate_gradient

from heatscore.manifolds import Torus, from_geomstats
from heatscore.manifolds.torus import wrap_angles

TWO_PI = 2 * math.pi

#: Fourth-order central differences with step h: truncation error about h⁴·max|k|⁶/30 on the
#: Fourier modes used here (|k|² ≤ 9) plus round-off ~1e-16/h²: 1e-6 covers both at h = 1e-2.
FD2_STEP, FD2_TOL = 1e-2, 1e-6
#: Gradients by fourth-order central differences: truncation ~h⁴|k|⁵/30, round-off ~1e-16/h.
FD1_STEP, FD1_TOL = 1e-3, 1e-9


def angular_gap(a, b):
    """|a − b| modulo 2π, elementwise, in [0, π]."""
    r = wrap_angles(a - b)
    return torch.minimum(r, TWO_PI - r)


def brute_force_log(x, y):
    """Shortest of y − x + 2πm over m ∈ {−1, 0, 1}^d (x, y already in [0, 2π))."""
    d = x.shape[1]
    shifts = torch.tensor(list(itertools.product([-1, 0, 1], repeat=d)), dtype=x.dtype) * TWO_PI
    cand = (y - x).unsqueeze(1) + shifts.unsqueeze(0)
    best = cand.norm(dim=2).argmin(dim=1)
    return cand[torch.arange(x.shape[0]), best]


def lattice_counts(d, radius):
    """{|k|²: number of k ∈ [−radius, radius]^d with that |k|²} by brute force."""
    counts = {}
    for k in itertools.product(range(-radius, radius + 1), repeat=d):
        v = sum(c * c for c in k)
        counts[v] = counts.get(v, 0) + 1
    return counts


def grid(d, n):
    """Uniform n^d grid on [0, 2π)^d and its equal weights (2π/n)^d."""
    g = TWO_PI * torch.arange(n, dtype=torch.float64) / n
    pts = torch.cartesian_prod(*([g] * d)).reshape(-1, d)
    return pts, torch.full((pts.shape[0],), (TWO_PI / n) ** d, dtype=torch.float64)


# --- wrapping ---------------------------------------------------------------------------------

def test_wrap_edge_values():
    below_two_pi = np.nextafter(TWO_PI, 0.0)
    x = torch.tensor([-1e-17, TWO_PI - 1e-17, TWO_PI, -TWO_PI, below_two_pi, -below_two_pi,
                      -5e-324, 0.0, -3.0, 7.0, 1e17, -1e17, 1e300, -1e300], dtype=torch.float64)
    r = wrap_angles(x)
    assert bool(((r >= 0) & (r < TWO_PI)).all())
    # 2π − 1e-17 is 2π in float64; −1e-17 + 2π rounds to 2π too: both land on 0, never on 2π.
    assert r[:4].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert float(r[4]) == below_two_pi
    assert float(r[5]) == TWO_PI - below_two_pi
    assert float(r[6]) == 0.0
    assert_close(r[8:10], [TWO_PI - 3.0, 7.0 - TWO_PI])
    # Exactly congruent modulo the float64 2π (fmod is exact): a multiple of 2π apart.
    k = (x[10:] - r[10:]) / TWO_PI
    assert bool((k == torch.round(k)).all())


def test_wrap_float32_stays_in_range():
    x = torch.tensor([-1e-9, -3.0, 1e7, -1e7, 6.2831855], dtype=torch.float32)
    r = wrap_angles(x)
    assert r.dtype == torch.float32
    assert bool(((r >= 0) & (r < torch.tensor(TWO_PI, dtype=torch.float32))).all())


def test_outputs_wrapped_for_any_real_input():
    m = Torus(3)
    x = torch.tensor([[-1e-17, 1e5, -40.0], [TWO_PI, 3.0, -1e12]], dtype=torch.float64)
    v = torch.tensor([[-2.0, 100.0, 0.5], [1e-17, -7.0, 20.0]], dtype=torch.float64)
    for out in (m.exp(x, v), m.validate(x), m.random_uniform(1000, rng=0)):
        assert bool(((out >= 0) & (out < TWO_PI)).all())
    assert_close(angular_gap(m.exp(x, v), wrap_angles(x + v)), torch.zeros(2, 3), atol=1e-12)
    assert bool(m.belongs(x).all())
    assert m.belongs([[0.0, math.nan, 1.0], [0.0, math.inf, 0.0]]).tolist() == [False, False]


# --- geometry ---------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 3])
def test_exp_log_dist_against_brute_force(d, gen):
    m = Torus(d)
    x, y = m.random_uniform(300, rng=gen), m.random_uniform(300, rng=gen)
    v = m.log(x, y)
    assert bool(((v > -math.pi) & (v <= math.pi)).all())
    assert_close(v, brute_force_log(x, y))
    assert_close(angular_gap(m.exp(x, v), y), torch.zeros_like(y), atol=1e-12)
    assert_close(m.dist(x, y), v.norm(dim=1))
    assert_close(m.dist(x, y), m.dist(y, x))
    # Unwrapped representatives of the same points give the same geometry.
    shift = TWO_PI * torch.randint(-3, 4, y.shape, generator=gen).to(torch.float64)
    assert_close(m.log(x, y + shift), v, atol=1e-9)
    assert_close(m.pairwise_dist(x[:5], y[:4])[2, 3], m.dist(x[2:3], y[3:4])[0])


def test_log_half_turn_is_plus_pi():
    m = Torus(2)
    v = m.log([[0.0, 1.0]], [[math.pi, 1.0 + math.pi]])
    assert v.tolist() == [[math.pi, math.pi]]


def test_proj_identity_and_idempotent(gen):
    m = Torus(2)
    x = m.random_uniform(10, rng=gen)
    v = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    assert torch.equal(m.proj(x, v), v)
    assert torch.equal(m.proj(x, m.proj(x, v)), v)
    assert torch.count_nonzero(m.drift(x)) == 0
    assert m.volume == pytest.approx(TWO_PI ** 2, rel=1e-15)


# --- sampling ---------------------------------------------------------------------------------

def test_random_uniform_moments(gen):
    # Per coordinate: mean π and variance π²/3 of U[0, 2π); E[cos θ] = E[sin θ] = 0.
    # Chance of a false failure: about 5.7e-7 per statistic (N_SIGMA = 5), 12 statistics.
    n, d = 20000, 3
    x = Torus(d).random_uniform(n, rng=gen)
    se_mean = math.pi / math.sqrt(3 * n)
    assert float((x.mean(0) - math.pi).abs().max()) < N_SIGMA * se_mean
    # Var of (θ − π)² for θ ~ U[0, 2π): E(θ−π)⁴ − (π²/3)² = π⁴/5 − π⁴/9.
    se_var = math.sqrt((math.pi ** 4 / 5 - math.pi ** 4 / 9) / n)
    assert float((((x - math.pi) ** 2).mean(0) - math.pi ** 2 / 3).abs().max()) < N_SIGMA * se_var
    se_trig = math.sqrt(0.5 / n)
    assert float(torch.cos(x).mean(0).abs().max()) < N_SIGMA * se_trig
    assert float(torch.sin(x).mean(0).abs().max()) < N_SIGMA * se_trig


def test_eigenfunction_moments_under_uniform(gen):
    # E[φ_n(X)] = 0 for n ≥ 1 and Var = 1/vol; 5 s.e. each (false-failure chance ~5.7e-7 × 12).
    m = Torus(2)
    n = 20000
    vals = m.eigenpairs(3)(m.random_uniform(n, rng=gen))[:, 1:]
    se = math.sqrt(1.0 / (m.volume * n))
    assert float(vals.mean(0).abs().max()) < N_SIGMA * se


def test_random_tangent_normal_isotropic(gen):
    # Mean 0 (s.e. 1/√n) and covariance I (s.e. √(2/n) diagonal, 1/√n off-diagonal).
    n = 20000
    m = Torus(3)
    x = m.random_uniform(n, rng=gen)
    xi = m.random_tangent_normal(x, rng=gen)
    assert xi.shape == (n, 3)
    assert float(xi.mean(0).abs().max()) < N_SIGMA / math.sqrt(n)
    cov = xi.T @ xi / n
    assert float((cov.diagonal() - 1).abs().max()) < N_SIGMA * math.sqrt(2.0 / n)
    off = cov - torch.diag(cov.diagonal())
    assert float(off.abs().max()) < N_SIGMA / math.sqrt(n)


def test_same_seed_same_draws():
    m = Torus(2)
    assert torch.equal(m.random_uniform(5, rng=3), m.random_uniform(5, rng=3))
    x = m.random_uniform(5, rng=3)
    assert torch.equal(m.random_tangent_normal(x, rng=4), m.random_tangent_normal(x, rng=4))
    assert m.random_uniform(5, rng=3, dtype=torch.float32).dtype == torch.float32


# --- eigenpairs -------------------------------------------------------------------------------

@pytest.mark.parametrize("d, n_levels", [(1, 7), (2, 9), (3, 8)])
def test_eigenvalues_and_multiplicities_match_lattice_counts(d, n_levels):
    ep = Torus(d).eigenpairs(n_levels)
    counts = lattice_counts(d, radius=7)  # |k|² ≤ 49 is complete inside the cube
    values = sorted(counts)[:n_levels]
    assert values[-1] <= 49
    assert ep.multiplicities.tolist() == [counts[v] for v in values]
    expected = torch.tensor([v for v in values for _ in range(counts[v])], dtype=torch.float64)
    assert torch.equal(ep.eigenvalues, expected)
    assert torch.equal(ep.levels, torch.repeat_interleave(torch.arange(n_levels), ep.multiplicities))


def test_multiplicities_match_jacobi_formulas():
    # r_2(n) = 4 Σ_{odd m | n} (−1)^{(m−1)/2}; r_4(n) = 8 Σ_{m | n, 4 ∤ m} m (Jacobi).
    ep2 = Torus(2).eigenpairs(12)
    values = ep2.eigenvalues[torch.cumsum(ep2.multiplicities, 0) - 1].long().tolist()
    r2 = [1] + [4 * sum((-1) ** ((m - 1) // 2) for m in range(1, n + 1, 2) if n % m == 0)
                for n in values[1:]]
    assert ep2.multiplicities.tolist() == r2
    ep4 = Torus(4).eigenpairs(7)
    r4 = [1] + [8 * sum(m for m in range(1, n + 1) if n % m == 0 and m % 4) for n in range(1, 7)]
    assert ep4.multiplicities.tolist() == r4


def test_basis_order_within_a_level():
    ep = Torus(2).eigenpairs(3)
    # Level 1: k = (0, 1), (1, 0); level 2: k = (1, −1), (1, 1); cos before sin for each k.
    expected = [(0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, -1), (1, -1), (1, 1), (1, 1)]
    assert [tuple(k) for k in ep.wave_vectors.tolist()] == expected
    assert ep.is_sine.tolist() == [False, False, True, False, True, False, True, False, True]
    x = torch.tensor([[0.3, 1.1]], dtype=torch.float64)
    c = math.sqrt(2) / TWO_PI
    assert_close(ep(x)[0, 5:7], [c * math.cos(0.3 - 1.1), c * math.sin(0.3 - 1.1)])


@pytest.mark.parametrize("d, n_levels", [(1, 6), (2, 8), (3, 5)])
def test_orthonormal_by_grid_quadrature(d, n_levels):
    ep = Torus(d).eigenpairs(n_levels)
    kmax = int(ep.wave_vectors.abs().max())
    pts, w = grid(d, 2 * kmax + 2)  # exact for trigonometric polynomials of degree ≤ 2 kmax + 1
    phi = ep(pts)
    assert_close(phi.T @ (w[:, None] * phi), torch.eye(len(ep)))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_laplacian_eigen_equation_by_finite_differences(d, gen):
    m = Torus(d)
    ep = m.eigenpairs(5)
    x = m.random_uniform(6, rng=gen)
    h = FD2_STEP
    lap = torch.zeros(6, len(ep), dtype=torch.float64)
    for i in range(d):
        e = torch.zeros(d, dtype=torch.float64)
        e[i] = h
        lap += (-ep(x + 2 * e) + 16 * ep(x + e) - 30 * ep(x) + 16 * ep(x - e) - ep(x - 2 * e)) / (12 * h * h)
    assert_close(lap, -ep.eigenvalues * ep(x), atol=FD2_TOL, rtol=0)


@pytest.mark.parametrize("d", [1, 3])
def test_grad_against_finite_differences(d, gen):
    m = Torus(d)
    ep = m.eigenpairs(4)
    x = m.random_uniform(5, rng=gen)
    grad = ep.grad(x)
    assert grad.shape == (5, len(ep), d)
    assert_close(grad, coordinate_gradient(ep, x, FD1_STEP), atol=FD1_TOL, rtol=0)
    values, grad2 = ep.values_and_grad(x)
    assert torch.equal(values, ep(x)) and torch.equal(grad2, grad)


def test_eigenpairs_follow_input_dtype():
    ep = Torus(2).eigenpairs(3)
    x = torch.tensor([[0.1, 0.2]], dtype=torch.float32)
    assert ep(x).dtype == torch.float32 and ep.grad(x).dtype == torch.float32
    assert_close(ep(x), ep(x.double()), dtype=torch.float32)


def test_many_levels_high_dimension_is_cheap():
    # d = 6, 4 levels (|k|² ≤ 3): 1 + 12 + 60 + 160 functions without scanning a 7^6 cube.
    ep = Torus(6).eigenpairs(4)
    assert ep.multiplicities.tolist() == [1, 12, 60, 160]
    assert len(ep) == 233


# --- geomstats --------------------------------------------------------------------------------

@pytest.mark.parametrize("d", [1, 2, 3])
def test_geomstats_exp_log_dist_agree(d, gen):
    m = Torus(d)
    space = m.to_geomstats()
    x = m.random_uniform(20, rng=gen)
    v = 2.5 * (torch.rand(20, d, generator=gen, dtype=torch.float64) - 0.5)  # |v_i| < π: no cut locus
    y = m.exp(x, v)
    px, py = m.to_geomstats_points(x), m.to_geomstats_points(y)
    assert isinstance(px, np.ndarray) and px.shape == (20, d, 2)
    assert bool(np.all(space.belongs(px)))
    gy = space.metric.exp(m.to_geomstats_tangent(x, v), px)
    assert_close(torch.as_tensor(gy), torch.as_tensor(py), atol=1e-12)
    glog = space.metric.log(py, px)
    assert_close(m.from_geomstats_tangent(px, glog), m.log(x, y), atol=1e-10)
    assert_close(torch.as_tensor(space.metric.dist(px, py)), m.dist(x, y), atol=1e-10)


def test_geomstats_point_and_tangent_round_trip(gen):
    m = Torus(2)
    x = m.random_uniform(30, rng=gen)
    v = torch.randn(30, 2, generator=gen, dtype=torch.float64)
    p = m.to_geomstats_points(x)
    assert_close(m.from_geomstats_points(p), x, atol=1e-12)
    assert_close(m.from_geomstats_tangent(p, m.to_geomstats_tangent(x, v)), v)
    with pytest.raises(ValueError, match=r"p has 1 of 30 points off the product of unit circles"):
        p_bad = p.copy()
        p_bad[4, 1] *= 1.1
        m.from_geomstats_points(p_bad)
    with pytest.raises(ValueError, match=r"p must be points of shape \(n, 2, 2\)"):
        m.from_geomstats_points(p[:, :1])


@pytest.mark.parametrize("d", [1, 2, 4])
def test_from_geomstats_round_trip(d):
    back = from_geomstats(Torus(d).to_geomstats())
    assert isinstance(back, Torus) and repr(back) == f"Torus({d})"


# --- validators -------------------------------------------------------------------------------

def test_validators_raise():
    m = Torus(2)
    with pytest.raises(ValueError, match="x must be finite: found 1 NaN/inf"):
        m.exp(torch.tensor([[0.0, math.nan]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="v must be finite"):
        m.exp(torch.zeros(1, 2), torch.tensor([[math.inf, 0.0]]))
    with pytest.raises(ValueError, match=r"x must be points of shape \(n, 2\), found shape \(3,\)"):
        m.dist(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match=r"v must be tangent vectors of shape \(n, 2\)"):
        m.exp(torch.zeros(1, 2), torch.zeros(1, 3))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_levels must be >= 1"):
            m.eigenpairs(bad)
    with pytest.raises(TypeError, match="n_levels must be an integer"):
        m.eigenpairs(2.5)
    with pytest.raises(ValueError, match="d must be >= 1"):
        Torus(0)
    with pytest.raises(TypeError, match="d must be an integer"):
        Torus(1.5)
    with pytest.raises(ValueError, match="n must be >= 0"):
        m.random_uniform(-1)
    with pytest.raises(ValueError, match="x must be finite"):
        m.eigenpairs(2)(torch.tensor([[0.0, math.nan]]))
