"""Euclidean(d, scale): the Ornstein–Uhlenbeck setting. Geometry, stationary sampling, Hermite
eigenpairs (total-degree and separable) against closed forms, quadrature and finite differences."""

import itertools
import math

import numpy as np
import pytest
import torch
from conftest import N_SIGMA, assert_close, coordinate_gradient

from heatscore.manifolds import Euclidean, from_geomstats
from heatscore.manifolds.euclidean import normalised_hermite

#: Fourth-order central differences with step h on polynomials of degree ≤ 4 in x/s: the
#: truncation error is h⁴·|f⁽⁶⁾| = 0 up to round-off ~1e-16·|φ|/h²; 1e-7 covers it at h = 1e-2.
FD2_STEP, FD2_TOL = 1e-2, 1e-7
FD1_STEP, FD1_TOL = 1e-3, 1e-9


def hermite_gauss(d, n, scale):
    """Tensor Gauss–Hermite rule for N(0, scale² I) on R^d: (points (n^d, d), weights)."""
    u, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / math.sqrt(2 * math.pi)
    pts = torch.cartesian_prod(*([torch.as_tensor(u)] * d)).reshape(-1, d)
    wts = torch.cartesian_prod(*([torch.as_tensor(w)] * d)).reshape(-1, d).prod(dim=1)
    return scale * pts, wts


def ou_generator_fd(ep, x, scale):
    """s²Δφ − x·∇φ by fourth-order central differences: (n, K)."""
    h = FD2_STEP * scale
    d = x.shape[1]
    lap = torch.zeros(x.shape[0], len(ep), dtype=torch.float64)
    drift = torch.zeros_like(lap)
    for i in range(d):
        e = torch.zeros(d, dtype=torch.float64)
        e[i] = h
        f2, f1, f0, fm1, fm2 = ep(x + 2 * e), ep(x + e), ep(x), ep(x - e), ep(x - 2 * e)
        lap += (-f2 + 16 * f1 - 30 * f0 + 16 * fm1 - fm2) / (12 * h * h)
        drift += x[:, i:i + 1] * (-f2 + 8 * f1 - 8 * fm1 + fm2) / (12 * h)
    return scale ** 2 * lap - drift


# --- geometry ---------------------------------------------------------------------------------

def test_geometry_is_flat(gen):
    m = Euclidean(3, scale=2.0)
    x, y = m.sample_stationary(50, rng=gen), m.sample_stationary(50, rng=gen)
    v = m.log(x, y)
    assert torch.equal(v, y - x)
    assert_close(m.exp(x, v), y)
    assert_close(m.dist(x, y), v.norm(dim=1))
    assert_close(m.dist(x, y), m.norm(x, v))
    assert torch.equal(m.proj(x, v), v) and torch.equal(m.proj(x, m.proj(x, v)), v)
    assert_close(m.pairwise_dist(x[:4], y[:3])[1, 2], (y[2] - x[1]).norm())
    huge = torch.tensor([[1e200, -1e200, 3.0]], dtype=torch.float64)
    assert bool(m.belongs(huge).all())
    assert m.belongs([[0.0, math.nan, 0.0], [0.0, 0.0, 0.0]]).tolist() == [False, True]


def test_volume_drift_and_random_uniform():
    m = Euclidean(2, scale=1.5)
    assert math.isinf(m.volume)
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    assert torch.equal(m.drift(x), -x)
    with pytest.raises(NotImplementedError, match=r"infinite volume.*sample_stationary"):
        m.random_uniform(3, rng=0)
    assert repr(m) == "Euclidean(2, scale=1.5)" and repr(Euclidean(4)) == "Euclidean(4)"


@pytest.mark.parametrize("scale", [1.0, 0.3])
def test_sample_stationary_moments(scale, gen):
    # N(0, s² I): mean s.e. s/√n; second moment s.e. s²√(2/n); fourth moment of x/s is 3 (s.e.
    # √(96/n)). 5 s.e. each: false-failure chance about 5.7e-7 per statistic, 9 statistics.
    n, d = 20000, 3
    x = Euclidean(d, scale=scale).sample_stationary(n, rng=gen)
    assert x.shape == (n, d) and x.dtype == torch.float64
    assert float(x.mean(0).abs().max()) < N_SIGMA * scale / math.sqrt(n)
    assert float(((x ** 2).mean(0) - scale ** 2).abs().max()) < N_SIGMA * scale ** 2 * math.sqrt(2 / n)
    assert float((((x / scale) ** 4).mean(0) - 3).abs().max()) < N_SIGMA * math.sqrt(96 / n)


def test_eigenfunction_moments_under_stationary_law(gen):
    # E_γ[φ_α] = 0 for α ≠ 0, Var = 1: 5 s.e. each (false-failure chance ~5.7e-7 × 9).
    n = 20000
    m = Euclidean(2, scale=2.0)
    vals = m.eigenpairs(4)(m.sample_stationary(n, rng=gen))[:, 1:]
    assert float(vals.mean(0).abs().max()) < N_SIGMA / math.sqrt(n)


def test_random_tangent_normal_isotropic(gen):
    n = 20000
    m = Euclidean(3, scale=5.0)
    xi = m.random_tangent_normal(m.sample_stationary(n, rng=gen), rng=gen)
    assert float(xi.mean(0).abs().max()) < N_SIGMA / math.sqrt(n)
    cov = xi.T @ xi / n
    assert float((cov.diagonal() - 1).abs().max()) < N_SIGMA * math.sqrt(2.0 / n)
    assert float((cov - torch.diag(cov.diagonal())).abs().max()) < N_SIGMA / math.sqrt(n)


# --- Hermite values ---------------------------------------------------------------------------

def test_normalised_hermite_matches_numpy():
    u = torch.linspace(-6, 6, 41, dtype=torch.float64)
    h, dh = normalised_hermite(u, 25)
    for j in range(26):
        e = np.zeros(j + 1)
        e[j] = 1.0
        ref = np.polynomial.hermite_e.hermeval(u.numpy(), e) / math.sqrt(math.factorial(j))
        dref = np.polynomial.hermite_e.hermeval(u.numpy(), np.polynomial.hermite_e.hermeder(e))
        assert_close(h[:, j], torch.as_tensor(ref), rtol=1e-12, atol=1e-12)
        assert_close(dh[:, j], torch.as_tensor(dref) / math.sqrt(math.factorial(j)), rtol=1e-12, atol=1e-12)


def test_normalised_hermite_high_degree_at_zero():
    # h_{2m}(0) = (−1)^m √((2m)!) / (2^m m!), h_{2m+1}(0) = 0; degree 400 is past 170! overflow.
    h, _ = normalised_hermite(torch.zeros(1, dtype=torch.float64), 400)
    assert bool(torch.isfinite(h).all())
    m = torch.arange(0, 201, dtype=torch.float64)
    log_abs = 0.5 * torch.lgamma(2 * m + 1) - m * math.log(2) - torch.lgamma(m + 1)
    expected = (-1.0) ** m * torch.exp(log_abs)
    assert_close(h[0, 0::2], expected, rtol=1e-11, atol=0)
    assert torch.count_nonzero(h[0, 1::2]) == 0


# --- eigenpairs -------------------------------------------------------------------------------

@pytest.mark.parametrize("d, n_levels", [(1, 6), (2, 5), (3, 4), (5, 3)])
def test_total_degree_eigenvalues_and_multiplicities(d, n_levels):
    ep = Euclidean(d).eigenpairs(n_levels)
    assert ep.multiplicities.tolist() == [math.comb(k + d - 1, d - 1) for k in range(n_levels)]
    assert torch.equal(ep.eigenvalues, ep.multi_indices.sum(dim=1).to(torch.float64))
    assert torch.equal(ep.levels, ep.multi_indices.sum(dim=1))
    brute = {a for a in itertools.product(range(n_levels), repeat=d) if sum(a) < n_levels}
    listed = [tuple(a) for a in ep.multi_indices.tolist()]
    assert len(listed) == len(brute) and set(listed) == brute


def test_total_degree_order_within_a_level():
    ep = Euclidean(2).eigenpairs(3)
    assert ep.multi_indices.tolist() == [[0, 0], [1, 0], [0, 1], [2, 0], [1, 1], [0, 2]]
    x = torch.tensor([[0.7, -1.2]], dtype=torch.float64)
    # φ_(1,1) = x₁x₂, φ_(0,2) = (x₂² − 1)/√2.
    assert_close(ep(x)[0, 4:], [0.7 * -1.2, (1.2 ** 2 - 1) / math.sqrt(2)])


@pytest.mark.parametrize("d, n_levels", [(1, 6), (2, 5), (3, 4)])
@pytest.mark.parametrize("scale", [1.0, 2.5])
def test_orthonormal_by_gauss_hermite(d, n_levels, scale):
    ep = Euclidean(d, scale=scale).eigenpairs(n_levels)
    pts, w = hermite_gauss(d, n_levels, scale)  # exact for per-axis degree ≤ 2 n_levels − 1
    phi = ep(pts)
    assert_close(phi.T @ (w[:, None] * phi), torch.eye(len(ep)))


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.7])
def test_ou_generator_eigen_equation(d, scale, gen):
    m = Euclidean(d, scale=scale)
    ep = m.eigenpairs(5 if d < 3 else 4)
    x = m.sample_stationary(5, rng=gen)
    assert_close(ou_generator_fd(ep, x, scale), -ep.eigenvalues * ep(x), atol=FD2_TOL, rtol=0)


@pytest.mark.parametrize("basis", ["total", "separable"])
@pytest.mark.parametrize("scale", [1.0, 1.7])
def test_grad_against_finite_differences(basis, scale, gen):
    d = 3
    m = Euclidean(d, scale=scale)
    ep = m.eigenpairs(4, basis=basis)
    x = m.sample_stationary(6, rng=gen)
    grad = ep.grad(x)
    assert grad.shape == (6, len(ep), d)
    assert_close(grad, coordinate_gradient(ep, x, FD1_STEP), atol=FD1_TOL, rtol=0)
    values, grad2 = ep.values_and_grad(x)
    assert torch.equal(values, ep(x)) and torch.equal(grad2, grad)


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_separable_basis_matches_total_degree_functions(scale, gen):
    d, n_levels = 3, 4
    m = Euclidean(d, scale=scale)
    sep, tot = m.eigenpairs(n_levels, basis="separable"), m.eigenpairs(n_levels)
    assert len(sep) == 1 + d * (n_levels - 1)
    assert sep.multiplicities.tolist() == [1] + [d] * (n_levels - 1)
    assert sep.basis == "separable" and tot.basis == "total"
    # Degree-major, then coordinate: α = j e_i.
    expected = [[0] * d] + [[j if c == i else 0 for c in range(d)]
                            for j in range(1, n_levels) for i in range(d)]
    assert sep.multi_indices.tolist() == expected
    column = {tuple(a): k for k, a in enumerate(tot.multi_indices.tolist())}
    cols = torch.tensor([column[tuple(a)] for a in expected])
    x = m.sample_stationary(8, rng=gen)
    assert_close(sep(x), tot(x)[:, cols])
    assert_close(sep.grad(x), tot.grad(x)[:, cols])
    assert torch.equal(sep.eigenvalues, tot.eigenvalues[cols])


def test_separable_basis_is_linear_in_dimension(gen):
    d = 200
    m = Euclidean(d)
    ep = m.eigenpairs(3, basis="separable")
    assert len(ep) == 1 + 2 * d
    x = m.sample_stationary(4, rng=gen)
    vals = ep(x)
    assert_close(vals[:, 1:d + 1], x)
    assert_close(vals[:, d + 1:], (x ** 2 - 1) / math.sqrt(2))


def test_eigenpairs_follow_input_dtype():
    ep = Euclidean(2).eigenpairs(3)
    x = torch.tensor([[0.1, -0.4]], dtype=torch.float32)
    assert ep(x).dtype == torch.float32 and ep.grad(x).dtype == torch.float32
    assert_close(ep(x), ep(x.double()), dtype=torch.float32)


# --- geomstats --------------------------------------------------------------------------------

def test_geomstats_agreement(gen):
    m = Euclidean(3, scale=2.0)
    space = m.to_geomstats()
    assert space.dim == 3
    x, y = m.sample_stationary(10, rng=gen), m.sample_stationary(10, rng=gen)
    px, py = m.to_geomstats_points(x), m.to_geomstats_points(y)
    assert isinstance(px, np.ndarray)
    v = m.log(x, y)
    assert_close(torch.as_tensor(space.metric.log(py, px)), v)
    assert_close(torch.as_tensor(space.metric.exp(v.numpy(), px)), y)
    assert_close(torch.as_tensor(space.metric.dist(px, py)), m.dist(x, y))
    assert torch.equal(m.from_geomstats_points(px), x)


@pytest.mark.parametrize("d", [1, 4])
def test_from_geomstats_round_trip(d):
    back = from_geomstats(Euclidean(d, scale=3.0).to_geomstats())
    assert isinstance(back, Euclidean) and repr(back) == f"Euclidean({d})"  # scale is not geometry


# --- validators -------------------------------------------------------------------------------

def test_validators_raise():
    m = Euclidean(2)
    with pytest.raises(ValueError, match="x must be finite: found 1 NaN/inf"):
        m.drift([[0.0, math.nan]])
    with pytest.raises(ValueError, match=r"x must be points of shape \(n, 2\), found shape \(2, 3\)"):
        m.dist(torch.zeros(2, 3), torch.zeros(2, 3))
    for bad in (0, -1):
        with pytest.raises(ValueError, match="n_levels must be >= 1"):
            m.eigenpairs(bad)
        with pytest.raises(ValueError, match="n_levels must be >= 1"):
            m.eigenpairs(bad, basis="separable")
    with pytest.raises(TypeError, match="n_levels must be an integer"):
        m.eigenpairs(2.5)
    with pytest.raises(ValueError, match=r"basis must be one of \('total', 'separable'\), found 'tensor'"):
        m.eigenpairs(2, basis="tensor")
    with pytest.raises(ValueError, match="d must be >= 1"):
        Euclidean(0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="scale must be finite and > 0"):
            Euclidean(2, scale=bad)
    with pytest.raises(TypeError, match="scale must be a real number"):
        Euclidean(2, scale="2")
    with pytest.raises(ValueError, match="n must be >= 0"):
        m.sample_stationary(-3)
    with pytest.raises(ValueError, match="x must be finite"):
        m.eigenpairs(2).grad([[math.inf, 0.0]])
