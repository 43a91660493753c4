"""Mesh heat kernel: the discrete semigroup exp(−t M⁻¹S) M⁻¹, its spectral route and the walk.

References: dense ``scipy.linalg.expm`` on a small icosphere, the identities the kernel must
satisfy on Spot (symmetry, 1ᵀM k = 1, semigroup, PDE residual), the leading-order path sum at a
tiny time (far below float64's range), and P1 eigenfunction moments of the random walk.
"""

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.sparse
import scipy.stats
import torch
from conftest import N_SIGMA, TOL, cached_mesh
from scipy.sparse.csgraph import shortest_path

from heatscore import TruncationWarning
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds._mesh_kernel import (LINEAR_FLOOR, VertexHeatFlow, poisson_terms,
                                                 vertex_heat_flow)
from heatscore.manifolds import TriangleMesh
from heatscore.manifolds._mesh_geometry import icosphere

#: Central finite differences in time (step 1e-5 t) and space (step 1e-6 ē): O(h²) truncation
#: (the vertex kernel keeps stiff modes, ~1e-8 relative at these steps) plus round-off.
FD_RTOL = 1e-6
#: The leading-order path sum at graph distance d neglects terms of relative size O(d μt)
#: (μt = 1.6e-7 here); log k ≈ −850, so the log agrees to ~1e-8 absolute.
TINY_T_LOG_ATOL = 1e-6
#: Random walk vs. P1 eigenfunctions on icosphere(1): the walk is Brownian motion on the
#: polyhedral surface, whose semigroup differs from the P1 / lumped-mass one at this coarse
#: resolution. Measured |E φ_j(X_t) − e^{−λ_j t} φ_j(x0)| ≤ 0.0041 for the l = 1 modes
#: (|φ| ≤ 0.5) with 200 000 walks at t = 0.05 and 0.15; this allowance adds to 5 s.e.
WALK_BIAS = 0.01

def _dense_generator(m):
    S = m.stiffness.toarray()
    mass = m.mass.diagonal()
    return S / mass[:, None], mass


def _tangent(m, x, gen):
    """Unit vectors in each point's face plane."""
    v = m.random_tangent_normal(x, rng=gen)
    return v / v.norm(dim=1, keepdim=True)


# --- the vertex kernel ------------------------------------------------------------------------
@pytest.mark.parametrize("t", [1e-3, 0.1, 1.0])
def test_vertex_kernel_matches_dense_expm(t):
    m = cached_mesh("ico2")
    A, mass = _dense_generator(m)
    expected = scipy.linalg.expm(-t * A) / mass[None, :]
    K = HeatKernel(m)(m.vertices, m.vertices, t).numpy()
    # dense expm is accurate relative to the largest entry; the semigroup entrywise
    big = expected > 1e-8 * expected.max()
    np.testing.assert_allclose(K[big], expected[big], rtol=1e-9)
    np.testing.assert_allclose(K, expected, rtol=0, atol=1e-13 * expected.max())


@pytest.mark.parametrize("name", ["ico2", "spot"])
def test_symmetric_and_positive(name, gen):
    m = cached_mesh(name)
    k = HeatKernel(m)
    x, y = m.random_uniform(7, rng=gen), m.random_uniform(5, rng=gen)
    for t in (1e-4, 3e-3):
        L = k.log(x, y, t)
        assert bool(torch.isfinite(L).all())
        torch.testing.assert_close(L, k.log(y, x, t).T, rtol=0, atol=1e-10)


@pytest.mark.parametrize("t", [1e-3, 0.01])
def test_mass_weighted_vertex_sum_is_one(t, gen):
    m = cached_mesh("spot")
    y = m.random_uniform(5, rng=gen)
    K = HeatKernel(m)(m.vertices, y, t)                                   # (nv, 5)
    mass = torch.as_tensor(m.mass.diagonal())
    torch.testing.assert_close((mass[:, None] * K).sum(0), torch.ones(5, dtype=torch.float64),
                               rtol=0, atol=1e-11)


def test_semigroup(gen):
    m = cached_mesh("spot")
    k = HeatKernel(m)
    x, y = m.random_uniform(4, rng=gen), m.random_uniform(3, rng=gen)
    s, t = 2e-3, 5e-3
    mass = torch.as_tensor(m.mass.diagonal())
    left = k(m.vertices, x, s)                                             # k_s(v, x) = k_s(x, v)
    right = k(m.vertices, y, t)
    composed = torch.einsum("vi,v,vj->ij", left, mass, right)
    torch.testing.assert_close(composed, k(x, y, s + t), rtol=1e-10, atol=0)


@pytest.mark.parametrize("t", [1e-3, 0.01])
def test_pde_residual(t, gen):
    m = cached_mesh("spot")
    k = HeatKernel(m)
    y = m.random_uniform(2, rng=gen)
    h = 1e-5 * t
    u = k(m.vertices, y, t).numpy()
    du = (k(m.vertices, y, t + h) - k(m.vertices, y, t - h)).numpy() / (2 * h)
    Au = (m.stiffness @ u) / m.mass.diagonal()[:, None]
    assert np.abs(du + Au).max() <= FD_RTOL * np.abs(Au).max()


def test_tiny_time_far_pair_matches_path_sum():
    """Far below float64's range: log k = d log t + log((−A)^d)_ij − log d! − log M_j + O(dμt)."""
    m = cached_mesh("spot")
    flow = vertex_heat_flow(m)
    j = 0
    dist = shortest_path(flow._P, unweighted=True, indices=[j])[0]
    i = int(np.argmax(dist))
    d = int(dist[i])
    t = 1e-12
    A = scipy.sparse.diags(1.0 / m.mass.diagonal()) @ m.stiffness
    off = -(A - scipy.sparse.diags(A.diagonal()))
    c = off.max()
    v = np.zeros(flow.nv)
    v[j] = 1.0
    for _ in range(d):
        v = (off / c) @ v
    expected = d * math.log(t * c) + math.log(v[i]) - math.lgamma(d + 1) - math.log(m.mass.diagonal()[j])
    assert expected < math.log(LINEAR_FLOOR)                               # the log-space route
    k = HeatKernel(m)
    x, y = m.vertices[i:i + 1], m.vertices[j:j + 1]
    assert abs(float(k.log(x, y, t)) - expected) <= TINY_T_LOG_ATOL
    assert abs(float(k.log_pairs(x, y, t)) - expected) <= TINY_T_LOG_ATOL
    assert bool(torch.isfinite(k.grad_log(x, y, t)).all())


def test_disconnected_components_give_minus_inf_and_zero_gradient():
    V, F = icosphere(1)
    m = TriangleMesh(np.vstack([V, V + 5.0]), np.vstack([F, F + len(V)]))
    k = HeatKernel(m)
    x = torch.as_tensor(V[:2])
    y = torch.as_tensor(np.vstack([V[5], V[7] + 5.0]))
    L = k.log(x, y, 0.1)
    assert bool(torch.isfinite(L[:, 0]).all()) and bool((L[:, 1] == -math.inf).all())
    G = k.grad_log(x, y, 0.1)
    assert bool((G[:, 1] == 0).all()) and bool(torch.isfinite(G).all())
    K = k(torch.as_tensor(V), y[:1], 0.1)[:, 0]
    mass = torch.as_tensor(m.mass.diagonal()[:len(V)])
    torch.testing.assert_close((mass * K).sum(), torch.tensor(1.0, dtype=torch.float64))


# --- gradients and forms ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ico2", "spot"])
def test_grad_log_matches_finite_differences(name, gen):
    m = cached_mesh(name)
    k = HeatKernel(m)
    x, y = m.random_uniform(6, rng=gen), m.random_uniform(6, rng=gen)
    u = _tangent(m, x, gen)
    eps = 1e-6 * m.mean_edge_length
    xp, xm = x + eps * u, x - eps * u
    faces = m.locate(x)[0]
    assert bool((m.locate(xp)[0] == faces).all()) and bool((m.locate(xm)[0] == faces).all())
    t = 2e-3
    fd = (k.log_pairs(xp, y, t) - k.log_pairs(xm, y, t)) / (2 * eps)
    g = k.grad_log_pairs(x, y, t)
    scale = g.norm(dim=1)
    assert bool(((g * u).sum(1) - fd).abs().le(FD_RTOL * scale).all())
    G = k.grad_log(x, y, t)
    torch.testing.assert_close(torch.diagonal(G, dim1=0, dim2=1).T, g, rtol=1e-10, atol=1e-10)
    normals = m.face_normals[faces]
    assert float((g * normals).sum(1).abs().max()) <= 1e-10 * float(scale.max())


def test_pairs_equal_matrix_diagonal_with_per_row_times(gen):
    m = cached_mesh("spot")
    k = HeatKernel(m)
    x, y = m.random_uniform(4, rng=gen), m.random_uniform(4, rng=gen)
    t = torch.tensor([1e-3, 2e-3, 1e-3, 5e-4], dtype=torch.float64)
    pairs = k.log_pairs(x, y, t)
    grads = k.grad_log_pairs(x, y, t)
    for i in (0, 1, 3):
        torch.testing.assert_close(pairs[i], k.log(x[i:i + 1], y[i:i + 1], t[i])[0, 0])
        torch.testing.assert_close(grads[i], k.grad_log(x[i:i + 1], y[i:i + 1], t[i])[0, 0])
    torch.testing.assert_close(k.log_pairs(x, y, 2e-3), torch.diagonal(k.log(x, y, 2e-3)))


# --- spectral route -----------------------------------------------------------------------------
@pytest.mark.parametrize("t", [0.1, 1.0])
def test_all_eigenpairs_give_the_semigroup_exactly(t, gen):
    m = cached_mesh("ico2")
    nv = len(m.vertices)
    x, y = m.random_uniform(6, rng=gen), m.random_uniform(6, rng=gen)
    spectral = HeatKernel(m, n_levels=nv)
    assert spectral.spectral_ok(t)
    exact = HeatKernel(m)
    K = exact(x, y, t)
    # a dense eigen-solve is accurate relative to the largest kernel value
    torch.testing.assert_close(spectral(x, y, t), K, rtol=1e-9, atol=1e-13 * float(K.max()))
    torch.testing.assert_close(spectral.grad_log_pairs(x, y, t), exact.grad_log_pairs(x, y, t),
                               rtol=1e-8, atol=1e-8)


def test_partial_spectrum_certified_at_large_time(gen):
    m = cached_mesh("ico3")
    x, y = m.random_uniform(6, rng=gen), m.random_uniform(6, rng=gen)
    spectral = HeatKernel(m, n_levels=40)
    t = 1.0
    assert spectral.spectral_ok(t) and not spectral.spectral_ok(0.05)
    torch.testing.assert_close(spectral.log(x, y, t), HeatKernel(m).log(x, y, t), rtol=0, atol=1e-6)


def test_too_few_eigenpairs_warn_and_fall_back(gen):
    m = cached_mesh("spot")
    x, y = m.random_uniform(3, rng=gen), m.random_uniform(3, rng=gen)
    spectral = HeatKernel(m, n_levels=5)
    with pytest.warns(TruncationWarning, match="exact route"):
        L = spectral.log(x, y, 1e-3)
    torch.testing.assert_close(L, HeatKernel(m).log(x, y, 1e-3), rtol=0, atol=0)


def test_levels_needed_decreases_with_time():
    m = cached_mesh("ico3")
    b = HeatKernel(m)
    nv = len(m.vertices)
    assert b.levels_needed(1e-6) == nv
    needed = [b.levels_needed(t) for t in (1e-2, 1e-1, 1.0, 10.0)]
    assert needed == sorted(needed, reverse=True) and needed[-1] < needed[0]


# --- the uniformization series ------------------------------------------------------------------
@pytest.mark.parametrize("lam", [1e-3, 1.0, 100.0, 1e4])
def test_poisson_terms_bound_the_tail(lam):
    target = -700.0
    q = int(poisson_terms(torch.tensor([lam], dtype=torch.float64), target)[0])
    assert q >= math.ceil(lam)
    assert scipy.stats.poisson.logsf(q, lam) <= target                   # P(Q > q)
    assert scipy.stats.poisson.logsf(q - 20, lam) > target                # and not wastefully long


def test_log_space_equals_linear_space(gen):
    flow = vertex_heat_flow(cached_mesh("spot"))
    V = torch.rand((flow.nv, 2), generator=gen, dtype=torch.float64)
    V[V < 0.99] = 0.0                                                      # sparse non-negative data
    T = torch.tensor([[1e-4, 1e-3], [3e-4, 2e-5]], dtype=torch.float64)
    rows = torch.arange(0, flow.nv, 11)
    lin = flow.apply(V, T, rows)
    assert bool((lin > LINEAR_FLOOR).all())
    torch.testing.assert_close(flow.log_apply(V, T, rows), torch.log(lin), rtol=0, atol=1e-11)


def test_flow_validates_its_matrices():
    m = cached_mesh("ico1")
    S, M = m.stiffness.tolil(), m.mass
    j = int(S.rows[0][1] if S.rows[0][0] == 0 else S.rows[0][0])          # a neighbour of vertex 0
    S[0, j] = -S[0, j]
    with pytest.raises(ValueError, match="S has 1 positive off-diagonal"):
        VertexHeatFlow(S.tocsr(), M)
    with pytest.raises(ValueError, match="M must have a positive diagonal"):
        VertexHeatFlow(m.stiffness, M * 0.0)
    flow = vertex_heat_flow(m)
    one = torch.ones((1, 1), dtype=torch.float64)
    with pytest.raises(ValueError, match="non-negative"):
        flow.apply(-torch.ones((flow.nv, 1), dtype=torch.float64), one)
    with pytest.raises(ValueError, match="do not match"):
        flow.apply(torch.ones((flow.nv, 2), dtype=torch.float64), one)
    with pytest.raises(TypeError, match="T must be float64"):
        flow.apply(torch.ones((flow.nv, 1), dtype=torch.float64), torch.ones((1, 1)))


def test_kernel_time_validation():
    m = cached_mesh("ico1")
    x = m.random_uniform(2, rng=0)
    with pytest.raises(ValueError, match="t must be > 0"):
        HeatKernel(m).log(x, x, 0.0)


# --- forward sampling -----------------------------------------------------------------------------
def test_random_walk_eigenfunction_moments_with_per_point_times():
    """Half the walks run for t = 0.05, half for 0.12 (per-point times in one call)."""
    m = cached_mesh("ico1")
    ep = m.eigenpairs(4)
    x0 = m.random_uniform(1, rng=3)
    half = 6000
    t = torch.cat([torch.full((half,), 0.05), torch.full((half,), 0.12)]).to(torch.float64)
    X = sample_heat_kernel(m, x0.expand(2 * half, 3), t, rng=5)
    assert bool(m.belongs(X).all())
    phi = ep(X)[:, 1:]                                                     # the l = 1 modes
    for rows, tt in ((slice(0, half), 0.05), (slice(half, None), 0.12)):
        expected = torch.exp(-ep.eigenvalues[1:] * tt) * ep(x0)[0, 1:]
        mean, se = phi[rows].mean(0), phi[rows].std(0) / math.sqrt(half)
        assert bool(((mean - expected).abs() <= N_SIGMA * se + WALK_BIAS).all())
        # the walk moved: the undiffused value is many standard errors away for some mode
        assert bool(((mean - ep(x0)[0, 1:]).abs() > 10 * se).any())


def test_random_walk_is_reproducible():
    m = cached_mesh("ico1")
    x0 = m.random_uniform(50, rng=3)
    t = torch.linspace(0.01, 0.1, 50, dtype=torch.float64)
    X = sample_heat_kernel(m, x0, t, rng=7)
    # equal up to round-off: the mesh remembers a few located batches, so x0's barycentric
    # coordinates may be recomputed from its position on the second call
    torch.testing.assert_close(X, sample_heat_kernel(m, x0, t, rng=7), rtol=0, atol=TOL[torch.float64][1])
    assert float((X - sample_heat_kernel(m, x0, t, rng=8)).norm(dim=1).max()) > 0.01


def test_torch_sparse_route_equals_numpy_route(monkeypatch, gen):
    """The route other devices take (torch sparse tensors), run on the CPU."""
    from heatscore.manifolds import _mesh_kernel

    flow = vertex_heat_flow(cached_mesh("ico2"))
    V = torch.rand((flow.nv, 3), generator=gen, dtype=torch.float64)
    V[V < 0.9] = 0.0
    T = torch.tensor([[1e-3, 0.05], [2e-2, 1e-4], [0.03, 3e-3]], dtype=torch.float64)
    rows = torch.arange(0, flow.nv, 3)
    lin, log = flow.apply(V, T, rows), flow.log_apply(V, T, rows)
    monkeypatch.setattr(_mesh_kernel, "NUMPY_ON_CPU", False)
    torch.testing.assert_close(flow.apply(V, T, rows), lin, rtol=1e-12, atol=0)
    torch.testing.assert_close(flow.log_apply(V, T, rows), log, rtol=0, atol=1e-11)


def test_paired_kernel_at_large_times_takes_the_spectral_sum(gen, monkeypatch):
    """Rows beyond SPECTRAL_FROM_PRODUCTS products use the certified spectral sum: equal to the
    semigroup (which is what they use when the threshold is removed)."""
    import heatscore.manifolds._mesh_kernel as mk

    m = cached_mesh("ico3")
    k = HeatKernel(m)
    x, y = m.random_uniform(40, rng=gen), m.random_uniform(40, rng=gen)
    rate = mk.vertex_heat_flow(m).rate
    t = torch.full((40,), 1.5 * mk.SPECTRAL_FROM_PRODUCTS / rate, dtype=torch.float64)
    t[:10] = 1e-3                                              # small times: the semigroup
    fast = k.log_pairs(x, y, t), k.grad_log_pairs(x, y, t)
    monkeypatch.setattr(mk, "SPECTRAL_FROM_PRODUCTS", math.inf)
    slow = k.log_pairs(x, y, t), k.grad_log_pairs(x, y, t)
    torch.testing.assert_close(fast[0], slow[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(fast[1], slow[1], rtol=1e-7, atol=1e-9)
