"""The kernel-sum engine: the compiled S^d route and the chunked neighbour route against the dense
sum (|Δ log p| ≤ 1e-9, gradients likewise), mixtures of times in one pass, leave-one-out with
repeated rows, duplicates collapsed, far queries, and degenerate data in the smoother."""

import math
import time
import warnings

import numpy as np
import pytest
import torch

from heatscore._errors import DegenerateDataWarning
from heatscore.estimators import DiffusionKernelSmoother
from heatscore.estimators import _chord_sums as chord
from heatscore.estimators import _kernel_sum
from heatscore.estimators._kernel_sum import KernelSum, collapse_duplicates
from heatscore.manifolds import SO3, Euclidean, ProductManifold, Sphere, Torus


def _clustered_sphere(d, n, seed, spread=0.05):
    """n points on S^d around 5 centres, with some exact repeats."""
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(5, d + 1, generator=g, dtype=torch.float64)
    x = c[torch.randint(0, 5, (n,), generator=g)] / c.norm(dim=1).max() \
        + spread * torch.randn(n, d + 1, generator=g, dtype=torch.float64)
    x = x / x.norm(dim=1, keepdim=True)
    x[n // 2:n // 2 + 20] = x[0]                 # an atom of 21 rows
    return x


def _near(Y, k, seed, scale=0.02):
    """k queries scattered about the first k data points."""
    g = torch.Generator().manual_seed(seed)
    x = Y[:k] + scale * torch.randn(Y[:k].shape, generator=g, dtype=torch.float64)
    return x / x.norm(dim=1, keepdim=True)


def _weights(n, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(n, generator=g, dtype=torch.float64) + 0.2
    return w / w.sum()


def _dense_reference(m, Y, w, X, taus, log_pis, want_grad, exclude_rows=None):
    """The mixture by the dense route, one time at a time (the engine's reference)."""
    ks = KernelSum(m, Y, w)
    logs, grads = [], []
    for tau, lp in zip(taus, log_pis):
        lg, g = ks.log_and_grad(X, tau, want_grad, exclude_rows=exclude_rows, route="dense")
        logs.append(lg + lp)
        grads.append(g)
    L = torch.stack(logs, 1)
    out = torch.logsumexp(L, 1)
    if not want_grad:
        return out, None
    r = torch.softmax(L, 1)
    return out, sum(r[:, s, None] * grads[s] for s in range(len(taus)))


def _check(got, ref, grad_rtol=1e-6):
    assert torch.isfinite(got[0]).all()
    assert float((got[0] - ref[0]).abs().max()) <= 1e-9
    if ref[1] is not None:
        scale = ref[1].norm(dim=-1).clamp_min(1.0)
        assert float(((got[1] - ref[1]).norm(dim=-1) / scale).max()) <= grad_rtol


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("tau", [1e-6, 2e-4, 3e-3])
def test_compiled_route_matches_dense_sum(d, tau):
    m = Sphere(d)
    Y = _clustered_sphere(d, 3000, 0)
    w = _weights(Y.shape[0], 1)
    X = torch.cat([_near(Y, 200, 2), Y[:50]])
    ks = KernelSum(m, Y, w)
    assert ks._chord_ok
    out, grad, flag = ks._compiled(X, [tau], [0.0], True, None)
    if tau >= 2e-4:  # most rows are served by the compiled route (at 1e-6 most lie beyond
        assert flag.sum() < X.shape[0] // 2      # the table's reach: the tree route's work)
    got = ks.log_and_grad(X, tau, True)
    _check(got, _dense_reference(m, Y, w, X, [tau], [0.0], True))


def test_mixture_of_times_in_one_pass():
    m = Sphere(2)
    Y = _clustered_sphere(2, 4000, 3)
    w = _weights(Y.shape[0], 4)
    X = _near(Y, 300, 5)
    taus, pis = [1e-7, 1e-5, 3e-4, 2e-3], [0.1, 0.2, 0.3, 0.4]
    log_pis = [math.log(p) for p in pis]
    got = KernelSum(m, Y, w).mixture_log_and_grad(X, taus, log_pis, True)
    _check(got, _dense_reference(m, Y, w, X, taus, log_pis, True))


def test_leave_one_out_with_repeated_rows():
    """Leaving row i out removes its weight only: a repeated row keeps its copies' weight."""
    m = Sphere(2)
    Y = _clustered_sphere(2, 2000, 6)
    w = _weights(Y.shape[0], 7)
    rows = torch.tensor([0, 1, 2, 1000, 1005, 1999])        # 0 and 1000.. are the atom's rows
    ks = KernelSum(m, Y, w)
    for tau in (1e-6, 5e-4):
        got = ks.log_and_grad(Y[rows], tau, exclude_rows=rows)[0]
        for k, i in enumerate(rows.tolist()):
            keep = torch.ones(Y.shape[0], dtype=torch.bool)
            keep[i] = False
            wk = w[keep] / w[keep].sum()
            ref = KernelSum(m, Y[keep], wk).log_and_grad(Y[i:i + 1], tau, route="dense")[0]
            assert abs(float(got[k] - ref[0])) <= 1e-9


def test_duplicates_collapse_into_weights():
    Y = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 0, 0], [0, 0, 1.0], [1.0, 0, 0]],
                     dtype=torch.float64)
    w = torch.full((5,), 0.2, dtype=torch.float64)
    U, wu, inv = collapse_duplicates(Y, w)
    assert U.shape[0] == 3 and torch.equal(U[torch.as_tensor(inv)], Y)
    assert float(wu.sum()) == pytest.approx(1.0) and sorted(wu.tolist()) == pytest.approx([0.2, 0.2, 0.6])
    ks = KernelSum(Sphere(2), Y, w)
    d = ks.nearest_other()
    assert d[0] == 0 and d[2] == 0 and d[1] > 0


def test_distinct_rows_are_not_copied():
    Y = _clustered_sphere(2, 300, 3)[:150]                   # no repeats among these
    w = _weights(150, 4)
    U, wu, inv = collapse_duplicates(Y, w)
    assert U is Y and wu is w and inv is None


def test_hash_collisions_still_compare_rows_exactly():
    """Every hash equal (the worst collision): groups are still the exactly equal rows."""
    flat = np.array([[1.0, 2.0], [3.0, 4.0], [1.0, 2.0], [5.0, 6.0], [3.0, 4.0]])
    h = np.zeros(5, np.uint64)
    inverse, first = _kernel_sum._groups(flat, h, np.arange(5))
    assert inverse.tolist() == [0, 1, 0, 2, 1] and first.tolist() == [0, 1, 3]


def test_radix_order_is_a_stable_sort():
    g = np.random.default_rng(0)
    for dtype, digits, top in ((np.int32, 2, 2**31 - 1), (np.int64, 4, 2**62)):
        keys = g.integers(0, top, 5000, dtype=np.int64).astype(dtype)
        keys[::7] = keys[0]                                    # ties
        got = chord._radix_order(keys, digits)
        assert got.dtype == np.int32 and np.array_equal(got, np.argsort(keys, kind="stable"))


def test_grid_of_offsets_gives_the_same_sums(monkeypatch):
    """Above COPY_BYTES the grid holds uint32 offsets in the cells: the same sums to ~1e-9,
    with distinct weights and with equal ones (then kept as one number)."""
    m = Sphere(2)
    Y = _clustered_sphere(2, 3000, 5)
    X = _near(Y, 200, 7)
    for w in (_weights(Y.shape[0], 6), torch.full((Y.shape[0],), 2.0, dtype=torch.float64)):
        copied = KernelSum(m, Y, w).mixture_log_and_grad(X, [1e-4, 1e-3], [-0.5, -1.0], True)
        with monkeypatch.context() as patch:
            patch.setattr(chord, "COPY_BYTES", 0)
            ks = KernelSum(m, Y, w)
            got = ks.mixture_log_and_grad(X, [1e-4, 1e-3], [-0.5, -1.0], True)
        grid = next(iter(ks._grids.values()))
        assert not grid.copied and grid.O.dtype == np.uint32
        assert torch.allclose(got[0], copied[0], rtol=0, atol=1e-9)
        assert torch.allclose(got[1], copied[1], rtol=1e-8, atol=1e-9 * copied[1].abs().max())


def test_far_queries_fall_back_to_exact_routes():
    """A query far from a tight cluster (its cut beyond the table) still gets the exact sum."""
    m = Sphere(2)
    Y = _clustered_sphere(2, 1000, 8, spread=0.002)
    w = _weights(Y.shape[0], 9)
    X = torch.cat([-Y[:3], Y[:3]])                             # antipodes of data points
    got = KernelSum(m, Y, w).log_and_grad(X, 1e-4, True)
    _check(got, _dense_reference(m, Y, w, X, [1e-4], [0.0], True))


@pytest.mark.parametrize("m", [Torus(2), SO3(), Euclidean(2), ProductManifold(Torus(1), Sphere(2))],
                         ids=repr)
def test_neighbour_route_in_bounded_chunks(m, monkeypatch):
    """The tree route on the other manifolds: query chunks of at most PAIR_BUDGET pairs (here
    small, so that many chunks run) give the dense sums."""
    monkeypatch.setattr(_kernel_sum, "PAIR_BUDGET", 500)
    g = torch.Generator().manual_seed(10)
    Y = m.sample_stationary(1500, rng=g)
    w = _weights(Y.shape[0], 11)
    X = Y[:40]
    rows = torch.arange(40)
    ks = KernelSum(m, Y, w)
    for tau in (1e-3, 1e-2):
        got = ks.log_and_grad(X, tau, True, exclude_rows=rows, route="neighbors")
        ref = ks.log_and_grad(X, tau, True, exclude_rows=rows, route="dense")
        _check(got, ref)


def test_identical_rows_warn_and_fit_fast():
    x = torch.tensor([[0.6, 0.0, 0.8]], dtype=torch.float64).repeat(200_000, 1)
    start = time.perf_counter()
    with pytest.warns(DegenerateDataWarning, match="identical"):
        est = DiffusionKernelSmoother(Sphere(2)).fit(x)
    assert time.perf_counter() - start < 10
    assert est.time_ == pytest.approx(est.t_min_)
    assert torch.isfinite(est.log_density(x[:3])).all()


def test_mostly_repeated_rows_warn_at_the_time_floor():
    g = torch.Generator().manual_seed(12)
    atoms = Sphere(2).random_uniform(3, rng=g)
    x = atoms.repeat(100, 1)
    with pytest.warns(DegenerateDataWarning, match="3 distinct points among 300"):
        DiffusionKernelSmoother(Sphere(2)).fit(x)
    with warnings.catch_warnings():                    # spread data: no warning
        warnings.simplefilter("error", DegenerateDataWarning)
        DiffusionKernelSmoother(Sphere(2)).fit(Sphere(2).random_uniform(300, rng=g))


def test_multiscale_scores_in_one_pass_match_per_time_sums():
    m = Sphere(2)
    X = _clustered_sphere(2, 3000, 13)
    est = DiffusionKernelSmoother(m, time="multiscale").fit(X)
    Q = _near(X, 200, 14)
    got = est.log_density(Q), est.grad_log_density(Q)
    ref = _dense_reference(m, est.X_, est.sample_weight_, Q, est.times_.tolist(),
                           torch.log(est.weights_).tolist(), True)
    assert len(est.times_) > 1
    assert float((got[0] - ref[0]).abs().max()) <= 1e-6
    assert float(((got[1] - ref[1]).norm(dim=1) / ref[1].norm(dim=1).clamp_min(1)).max()) <= 1e-6
