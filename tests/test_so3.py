"""SO(3): geometry contract, numerics near angles 0 and π, Haar sampling, real Wigner-D eigenpairs."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from conftest import N_SIGMA, assert_close
from heatscore.manifolds import SO3
from heatscore.manifolds.so3 import (hat, rotation_from_quaternion, rotation_from_vector, vee_skew,
                                     wigner_d_real)

F64 = torch.float64
#: The rotation angle is recovered to absolute round-off (a few ulps of π), also near 0 and π.
ANGLE_ATOL = 1e-13
#: geomstats' SO(3) log goes through a general matrix logarithm (scipy): agreement to ~1e-8.
GEOMSTATS_ATOL = 1e-8
#: Fourth-order central differences with step FD_STEP: truncation ~h⁴ l⁶/90, round-off ~ε/h².
FD_STEP = 1e-3
FD_LAPLACIAN_ATOL = 1e-7
FD_GRADIENT_ATOL = 1e-9


@pytest.fixture
def so3():
    return SO3()


def _axes(n, gen):
    u = torch.randn(n, 3, generator=gen, dtype=F64)
    return u / u.norm(dim=1, keepdim=True)


def _right_step(r, i, s):
    """R exp(s [e_i]×): the flow of the left-invariant frame field E_i."""
    omega = torch.zeros(r.shape[0], 3, dtype=r.dtype)
    omega[:, i] = s
    return r @ rotation_from_vector(omega)


def _blocks(values, n_levels):
    """Split (n, K) eigenfunction values into Wigner-D blocks D^l (n, 2l+1, 2l+1)."""
    out, start = [], 0
    for l in range(n_levels):
        size = 2 * l + 1
        scale = math.sqrt(size / (8 * math.pi ** 2))
        out.append(values[:, start:start + size * size].reshape(-1, size, size) / scale)
        start += size * size
    return out


# --- points, tangent spaces, validation -----------------------------------------------------------
def test_attributes(so3):
    assert so3.dim == 3 and so3.point_shape == (3, 3) and so3.ambient_shape == (3, 3)
    assert so3.volume == pytest.approx(8 * math.pi ** 2, rel=1e-15)
    assert repr(so3) == "SO3()"


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_random_uniform_belongs_and_is_reproducible(so3, dtype):
    r = so3.random_uniform(500, rng=7, dtype=dtype)
    assert r.shape == (500, 3, 3) and r.dtype == dtype
    assert bool(so3.belongs(r).all())
    assert torch.equal(r, so3.random_uniform(500, rng=7, dtype=dtype))
    assert not torch.equal(r, so3.random_uniform(500, rng=8, dtype=dtype))
    assert so3.random_uniform(0, rng=0).shape == (0, 3, 3)


def test_belongs_tolerances(so3, gen):
    r = so3.random_uniform(4, rng=gen)
    # (1 + ε)R: ‖RᵀR − I‖_F = 2√3 ε (1 + ε/2), |det − 1| ≈ 3ε.
    assert bool(so3.belongs(r * (1 + 1e-7)).all())
    assert not bool(so3.belongs(r * (1 + 1e-6)).any())
    assert bool(so3.belongs((r * (1 + 1e-6)).float()).all())      # float32 tolerance 1e-4
    assert not bool(so3.belongs((r * (1 + 1e-4)).float()).any())
    assert not bool(so3.belongs(-r).any())                          # det −1, orthogonal
    bad = r.clone()
    bad[1, 0, 0] = float("nan")
    assert so3.belongs(bad).tolist() == [True, False, True, True]


def test_validators_raise(so3, gen):
    r = so3.random_uniform(3, rng=gen)
    v = so3.random_tangent_normal(r, rng=gen)
    stretched = r.clone()
    stretched[0] *= 1.01
    reflected = r.clone()
    reflected[2] = -reflected[2]
    nan = r.clone()
    nan[1, 2, 2] = float("nan")
    off = r"x has 1 of 3 points off SO3\(\): max of ‖RᵀR − I‖_F and \|det R − 1\|"
    for x in (stretched, reflected):
        for call in (lambda: so3.exp(x, v), lambda: so3.log(x, r), lambda: so3.dist(x, r),
                     lambda: so3.proj(x, v), lambda: so3.eigenpairs(2)(x)):
            with pytest.raises(ValueError, match=off):
                call()
    with pytest.raises(ValueError, match=r"y has 1 of 3 points off SO3\(\)"):
        so3.log(r, reflected)
    with pytest.raises(ValueError, match=r"= 2\.00e\+00"):           # |det(−R) − 1| = 2
        so3.dist(reflected, r)
    with pytest.raises(ValueError, match="x must be finite: found 1 NaN/inf"):
        so3.exp(nan, v)
    with pytest.raises(ValueError, match=r"x must be points of shape \(n, 3, 3\), found shape \(3, 9\)"):
        so3.dist(r.reshape(3, 9), r)
    tangent_shape = r"v must be tangent vectors of shape \(n, 3, 3\), found shape \(3, 3\)"
    with pytest.raises(ValueError, match=tangent_shape):
        so3.exp(r, v[:, 0])
    with pytest.raises(ValueError, match="same number of rows"):
        so3.log(r, r[:2])
    with pytest.raises(ValueError, match="n_levels must be >= 1, found 0"):
        so3.eigenpairs(0)
    with pytest.raises(TypeError, match="n_levels must be an integer"):
        so3.eigenpairs(2.5)
    with pytest.raises(ValueError, match="n must be >= 0, found -1"):
        so3.random_uniform(-1)
    with pytest.raises(ValueError, match="rng seed must be non-negative"):
        so3.random_uniform(2, rng=-3)


def test_proj_idempotent_and_tangent(so3, gen):
    r = so3.random_uniform(50, rng=gen)
    a = torch.randn(50, 3, 3, generator=gen, dtype=F64)
    p = so3.proj(r, a)
    body = r.transpose(1, 2) @ p
    assert_close(body, -body.transpose(1, 2))                          # Rᵀ P is skew
    assert_close(so3.proj(r, p), p)                                     # idempotent
    assert_close(p, r @ (0.5 * (r.transpose(1, 2) @ a - a.transpose(1, 2) @ r)))
    # the residual is g-orthogonal to every tangent vector
    t = so3.random_tangent_normal(r, rng=gen)
    assert_close(so3.inner(r, a - p, t), torch.zeros(50, dtype=F64))
    # |R[ω]×|_g = |ω|
    omega = torch.randn(50, 3, generator=gen, dtype=F64)
    assert_close(so3.norm(r, r @ hat(omega)), omega.norm(dim=1))


# --- exp, log, dist -------------------------------------------------------------------------------
def test_exp_log_roundtrip_random(so3, gen):
    r, s = so3.random_uniform(300, rng=gen), so3.random_uniform(300, rng=gen)
    v = so3.log(r, s)
    assert_close(so3.proj(r, v), v)
    assert_close(so3.exp(r, v), s)
    assert bool((so3.norm(r, v) <= math.pi + 1e-15).all())
    w = so3.random_tangent_normal(r, rng=gen) * 0.7
    inside = so3.norm(r, w) < math.pi - 1e-3                          # log is the principal branch
    assert int(inside.sum()) > 250
    assert_close(so3.log(r, so3.exp(r, w))[inside], w[inside])


def test_rodrigues_matches_quaternion_route(gen):
    theta = torch.tensor([0.0, 1e-12, 1e-6, 5e-4, 2e-3, 1.0, 3.0, math.pi, 5.0], dtype=F64)
    u = _axes(theta.shape[0], gen)
    q = torch.cat([torch.cos(theta / 2)[:, None], torch.sin(theta / 2)[:, None] * u], dim=1)
    assert_close(rotation_from_vector(theta[:, None] * u), rotation_from_quaternion(q))


ANGLES = [0.0, 1e-12, 1e-9, 1e-6, 1e-4, 1e-3, 0.5, math.pi / 2, 3.0,
          math.pi - 1e-4, math.pi - 1e-7, math.pi - 1e-10]


def test_log_dist_accurate_near_zero_and_pi(so3, gen):
    theta = torch.tensor(ANGLES, dtype=F64)
    u = _axes(theta.shape[0], gen)
    r = so3.random_uniform(theta.shape[0], rng=gen)
    q = torch.cat([torch.cos(theta / 2)[:, None], torch.sin(theta / 2)[:, None] * u], dim=1)
    s = r @ rotation_from_quaternion(q)
    d = so3.dist(r, s)
    v = so3.log(r, s)
    assert_close(d, theta, rtol=0, atol=ANGLE_ATOL)
    assert_close(so3.norm(r, v), theta, rtol=0, atol=ANGLE_ATOL)
    assert_close(vee_skew(r.transpose(1, 2) @ v), theta[:, None] * u, rtol=0, atol=ANGLE_ATOL)
    assert_close(so3.exp(r, v), s)
    assert not bool(torch.isnan(v).any())


def test_log_exactly_pi(so3, gen):
    u = torch.tensor([1.0, 2.0, 2.0], dtype=F64) / 3
    half_turns = torch.stack([torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=F64)),
                              torch.diag(torch.tensor([-1.0, -1.0, 1.0], dtype=F64)),
                              2 * torch.outer(u, u) - torch.eye(3, dtype=F64)])
    axes = torch.stack([torch.eye(3, dtype=F64)[0], torch.eye(3, dtype=F64)[2], u])
    r = so3.random_uniform(3, rng=gen)
    for base, target in ((torch.eye(3, dtype=F64).expand(3, 3, 3), half_turns), (r, r @ half_turns)):
        v = so3.log(base, target)
        omega = vee_skew(base.transpose(1, 2) @ v)
        assert_close(so3.norm(base, v), torch.full((3,), math.pi, dtype=F64), rtol=0, atol=ANGLE_ATOL)
        assert_close(so3.dist(base, target), torch.full((3,), math.pi, dtype=F64), rtol=0, atol=ANGLE_ATOL)
        assert_close((omega * axes).sum(1).abs(), torch.full((3,), math.pi, dtype=F64))  # ±π·axis
        assert_close(so3.exp(base, v), target)


def test_exp_log_float32(so3, gen):
    r, s = so3.random_uniform(100, rng=gen), so3.random_uniform(100, rng=gen)
    v32 = so3.log(r.float(), s.float())
    assert v32.dtype == torch.float32
    assert_close(so3.exp(r.float(), v32), s.float(), dtype=torch.float32)
    assert_close(so3.dist(r.float(), s.float()), so3.dist(r, s), dtype=torch.float32)


def test_dist_is_log_norm_and_rotation_angle(so3, gen):
    r, s = so3.random_uniform(300, rng=gen), so3.random_uniform(300, rng=gen)
    d = so3.dist(r, s)
    assert_close(d, so3.norm(r, so3.log(r, s)))
    assert_close(d, so3.dist(s, r))
    trace = torch.diagonal(r.transpose(1, 2) @ s, dim1=1, dim2=2).sum(1)
    moderate = (d > 0.1) & (d < math.pi - 0.1)                        # where arccos is well-conditioned
    assert_close(d[moderate], torch.arccos((trace[moderate] - 1) / 2))
    assert torch.equal(so3.dist(r, r), torch.zeros(300, dtype=F64))


def test_leading_one_broadcasts(so3, gen):
    r, s = so3.random_uniform(1, rng=gen), so3.random_uniform(20, rng=gen)
    rr = r.expand(20, 3, 3)
    assert_close(so3.log(r, s), so3.log(rr, s))
    assert_close(so3.dist(s, r), so3.dist(s, rr))
    v = so3.random_tangent_normal(r, rng=gen)
    assert_close(so3.exp(s, v), so3.exp(s, v.expand(20, 3, 3)))
    assert so3.exp(r, so3.log(r, s)).shape == (20, 3, 3)


def test_pairwise_dist_matches_row_paired(so3, gen):
    r, s = so3.random_uniform(13, rng=gen), so3.random_uniform(7, rng=gen)
    expected = so3.dist(r.repeat_interleave(7, 0), s.repeat(13, 1, 1)).reshape(13, 7)
    assert_close(so3.pairwise_dist(r, s), expected)
    assert_close(so3.pairwise_dist(r, s, chunk_size=4), expected)
    own = so3.pairwise_dist(r)
    assert_close(own, own.T)
    assert_close(torch.diagonal(own), torch.zeros(13, dtype=F64), rtol=0, atol=ANGLE_ATOL)


def test_agrees_with_geomstats(so3, gen):
    space = so3.to_geomstats()
    assert space.n == 3 and space.dim == 3
    r, s = so3.random_uniform(20, rng=gen), so3.random_uniform(20, rng=gen)
    rn, sn = r.numpy(), s.numpy()
    assert bool(np.all(space.belongs(rn)))
    v = so3.random_tangent_normal(r, rng=gen)
    assert_close(so3.exp(r, v), torch.tensor(space.metric.exp(v.numpy(), rn)), rtol=0, atol=GEOMSTATS_ATOL)
    assert_close(so3.inner(r, v, v), torch.tensor(space.metric.squared_norm(v.numpy(), rn)),
                 rtol=0, atol=GEOMSTATS_ATOL)
    # geomstats' log is slow (a general matrix logarithm per pair) and fails at angle π: 6 pairs
    keep = torch.nonzero(so3.dist(r, s) < math.pi - 0.2)[:6, 0]
    log_gs = space.metric.log(sn[keep.numpy()], rn[keep.numpy()])
    assert_close(so3.log(r[keep], s[keep]), torch.tensor(log_gs), rtol=0, atol=GEOMSTATS_ATOL)
    assert_close(so3.dist(r[keep], s[keep]), torch.tensor(space.metric.norm(log_gs, rn[keep.numpy()])),
                 rtol=0, atol=GEOMSTATS_ATOL)


# --- sampling -------------------------------------------------------------------------------------
def test_random_uniform_is_haar(so3):
    n = 20000
    r = so3.random_uniform(n, rng=11)
    theta = so3.dist(torch.eye(3, dtype=F64)[None], r)
    # Haar angle law: density (1 − cos θ)/π on [0, π]; E[cos θ] = −1/2, Var[cos θ] = 1/4.
    assert abs(float(torch.cos(theta).mean()) + 0.5) < N_SIGMA * 0.5 / math.sqrt(n)
    # KS against F(θ) = (θ − sin θ)/π: a false failure has probability 1e-6.
    cdf = lambda t: (t - np.sin(t)) / np.pi  # noqa: E731
    assert scipy.stats.kstest(theta.numpy(), cdf).pvalue > 1e-6
    # Haar ⇔ E[D^l(R)] = 0 for every l ≥ 1 (this also sees the axes, not only the angle);
    # each entry has variance 1/(2l+1): 83 checks at N_SIGMA, false failure ≈ 83 × 5.7e-7.
    for l, block in enumerate(wigner_d_real(r, 4)[1:], start=1):
        assert float(block.mean(0).abs().max()) < N_SIGMA / math.sqrt((2 * l + 1) * n)


def test_random_tangent_normal_isotropic(so3, gen):
    n = 20000
    r = so3.random_uniform(n, rng=gen)
    xi = so3.random_tangent_normal(r, rng=3)
    assert torch.equal(xi, so3.random_tangent_normal(r, rng=3))
    body = r.transpose(1, 2) @ xi
    assert_close(body, -body.transpose(1, 2))
    omega = vee_skew(body)
    second = omega.T @ omega / n                                       # E[ωωᵀ] = I₃
    se = torch.tensor([[2.0, 1, 1], [1, 2, 1], [1, 1, 2]], dtype=F64).sqrt() / math.sqrt(n)
    assert bool(((second - torch.eye(3, dtype=F64)).abs() < N_SIGMA * se).all())
    # isotropic in the metric: E[g(ξ, u)²] = g(u, u) for a fixed body direction u = R[a]×
    a = torch.tensor([0.3, -1.2, 0.5], dtype=F64)
    g2 = so3.inner(r, xi, r @ hat(a).expand(n, 3, 3)) ** 2
    assert abs(float(g2.mean()) - float(a @ a)) < N_SIGMA * math.sqrt(2.0) * float(a @ a) / math.sqrt(n)
    assert so3.random_tangent_normal(r[:1], rng=0).shape == (1, 3, 3)


def test_drift_and_stationary(so3, gen):
    r = so3.random_uniform(5, rng=gen)
    assert torch.equal(so3.drift(r), torch.zeros(5, 3, 3, dtype=F64))
    assert torch.equal(so3.sample_stationary(5, rng=4), so3.random_uniform(5, rng=4))


# --- eigenpairs -----------------------------------------------------------------------------------
def test_eigenvalues_and_multiplicities(so3):
    ep = so3.eigenpairs(5)
    levels = torch.arange(5)
    assert torch.equal(ep.multiplicities, (2 * levels + 1) ** 2)
    assert len(ep) == 165 and ep.n_levels == 5
    assert torch.equal(ep.levels, torch.repeat_interleave(levels, (2 * levels + 1) ** 2))
    assert torch.equal(ep.eigenvalues, (ep.levels * (ep.levels + 1)).to(F64))
    assert bool((ep.eigenvalues[1:] >= ep.eigenvalues[:-1]).all())
    assert ep(so3.random_uniform(3, rng=0)).shape == (3, 165)


def test_wigner_matches_real_spherical_harmonics(so3, gen):
    """Y_l(R x) = D^l(R) Y_l(x) with sphericart's real spherical harmonics (pins the basis)."""
    import sphericart.torch as sphericart  # an install requirement; imported here for its cost
    n_levels = 8
    r = so3.random_uniform(40, rng=gen)
    x = _axes(40, gen)
    harmonics = sphericart.SphericalHarmonics(n_levels - 1)
    y, y_rot = harmonics(x), harmonics((r @ x[:, :, None])[:, :, 0])
    blocks = _blocks(so3.eigenpairs(n_levels)(r), n_levels)
    for l, block in enumerate(blocks):
        part = slice(l * l, (l + 1) ** 2)
        assert_close(y_rot[:, part], (block @ y[:, part, None])[:, :, 0])
    assert_close(blocks[1], r[:, [1, 2, 0]][:, :, [1, 2, 0]])          # D^1 = P R Pᵀ, (x,y,z) -> (y,z,x)


def test_representation_property(so3, gen):
    n_levels = 8
    ep = so3.eigenpairs(n_levels)
    r1, r2 = so3.random_uniform(30, rng=gen), so3.random_uniform(30, rng=gen)
    d1, d2 = _blocks(ep(r1), n_levels), _blocks(ep(r2), n_levels)
    d12, d1t = _blocks(ep(r1 @ r2), n_levels), _blocks(ep(r1.transpose(1, 2)), n_levels)
    identity = _blocks(ep(torch.eye(3, dtype=F64)[None]), n_levels)
    for l in range(n_levels):
        eye = torch.eye(2 * l + 1, dtype=F64)
        assert_close(d12[l], d1[l] @ d2[l])
        assert_close(d1t[l], d1[l].transpose(1, 2))
        assert_close(d1[l] @ d1[l].transpose(1, 2), eye.expand_as(d1[l]))
        assert_close(identity[l][0], eye)


def _euler_quadrature(n_levels):
    """Exact quadrature for products of eigenfunctions of levels < n_levels.

    R = Rz(α) Ry(β) Rz(γ), dvol = sin β dα dβ dγ (total 8π²). A product of two such functions is a
    sum of D^J_{mn} ∝ e^{−imα} d^J_{mn}(β) e^{−inγ} with J ≤ 2(n_levels − 1); trapezoid rules in
    α and γ with N > 2(n_levels − 1) points kill the frequencies 0 < |m| ≤ J, and what remains
    (m = n = 0) is P_J(cos β): Gauss–Legendre with n_levels nodes is exact up to degree 2 n_levels − 1.
    """
    n_angle = 2 * n_levels - 1
    angles = torch.arange(n_angle, dtype=F64) * 2 * math.pi / n_angle
    nodes, weights = np.polynomial.legendre.leggauss(n_levels)
    beta = torch.arccos(torch.as_tensor(nodes))
    a, b, c = torch.meshgrid(angles, beta, angles, indexing="ij")
    w = (torch.as_tensor(weights)[None, :, None] * (2 * math.pi / n_angle) ** 2).expand_as(a)

    def rz(t):
        co, si, z, o = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
        return torch.stack([co, -si, z, si, co, z, z, z, o], -1).reshape(t.shape + (3, 3))

    def ry(t):
        co, si, z, o = torch.cos(t), torch.sin(t), torch.zeros_like(t), torch.ones_like(t)
        return torch.stack([co, z, si, z, o, z, -si, z, co], -1).reshape(t.shape + (3, 3))

    r = rz(a.reshape(-1)) @ ry(b.reshape(-1)) @ rz(c.reshape(-1))
    return r, w.reshape(-1)


def test_orthonormality_by_quadrature(so3):
    n_levels = 8
    r, w = _euler_quadrature(n_levels)
    assert float(w.sum()) == pytest.approx(8 * math.pi ** 2, rel=1e-13)
    phi = so3.eigenpairs(n_levels)(r)
    gram = phi.T @ (w[:, None] * phi)
    assert_close(gram, torch.eye(phi.shape[1], dtype=F64))


def test_laplacian_eigen_equation_by_finite_differences(so3, gen):
    """Δφ = Σ_i d²/ds² φ(R exp(s[e_i]×)) at s = 0 equals −l(l+1) φ."""
    ep = so3.eigenpairs(6)
    r = so3.random_uniform(4, rng=gen)
    h = FD_STEP
    lap = torch.zeros(4, len(ep), dtype=F64)
    for i in range(3):
        f = {k: ep(_right_step(r, i, k * h)) for k in (-2, -1, 0, 1, 2)}
        lap += (-f[2] + 16 * f[1] - 30 * f[0] + 16 * f[-1] - f[-2]) / (12 * h * h)
    assert_close(lap, -ep.eigenvalues * ep(r), rtol=0, atol=FD_LAPLACIAN_ATOL)


def test_gradient_by_finite_differences_and_factor_two(so3, gen):
    """g(grad φ, R[e_i]×) = d/ds φ(R exp(s[e_i]×)); grad φ = 2 proj(∂φ/∂R) (Frobenius gradient)."""
    ep = so3.eigenpairs(6)
    r = so3.random_uniform(4, rng=gen)
    grad = ep.grad(r)
    assert grad.shape == (4, len(ep), 3, 3)
    h = FD_STEP
    eye = torch.eye(3, dtype=F64)
    for i in range(3):
        f = {k: ep(_right_step(r, i, k * h)) for k in (-2, -1, 1, 2)}
        derivative = (-f[2] + 8 * f[1] - 8 * f[-1] + f[-2]) / (12 * h)
        frame = (r @ hat(eye[i]))[:, None]
        assert_close(0.5 * (grad * frame).sum((-1, -2)), derivative, rtol=0, atol=FD_GRADIENT_ATOL)
    flat_r = r[:, None].expand(4, len(ep), 3, 3).reshape(-1, 3, 3)
    assert_close(so3.proj(flat_r, grad.reshape(-1, 3, 3)), grad.reshape(-1, 3, 3))   # tangent
    small = so3.eigenpairs(3)
    jac = torch.autograd.functional.jacobian(small, r)                  # (n, K, n, 3, 3)
    euclidean = torch.stack([jac[j, :, j] for j in range(4)])
    expected = 2 * so3.proj(r[:, None].expand_as(euclidean).reshape(-1, 3, 3), euclidean.reshape(-1, 3, 3))
    assert_close(small.grad(r), expected.reshape(euclidean.shape))
    values, grads = ep.values_and_grad(r)
    assert torch.equal(values, ep(r)) and torch.equal(grads, grad)


def test_eigenpairs_float32(so3, gen):
    r = so3.random_uniform(20, rng=gen)
    ep = so3.eigenpairs(5)
    v32, g32 = ep.values_and_grad(r.float())
    assert v32.dtype == torch.float32 and g32.dtype == torch.float32
    assert_close(v32, ep(r), dtype=torch.float32)
    assert_close(g32, ep.grad(r), dtype=torch.float32)
