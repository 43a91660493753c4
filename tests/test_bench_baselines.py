"""The Earth benchmark's baselines (heatscore/bench/baselines.py): the vMF mixture recovers a known
mixture and integrates to 1; the exact KDE's normaliser, its integral and its agreement with
scikit-learn near the data; and a smoke run of benchmarks/bench_adaptive.py."""

import functools
import importlib.util
import math
import os

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import vonmises_fisher
from sklearn.neighbors import KernelDensity

from heatscore import NotFittedError
from heatscore.bench.baselines import (GeodesicGaussianKDE, VMFMixture, _vmf_log_norm, fit_vmf,
                                       gaussian_normaliser, sklearn_kde_cv)
from heatscore.bench.kernel_sum import to_latlon
from heatscore.datasets import load_earth

SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks", "bench_adaptive.py")
#: The known mixture: (weight, mean, κ).
TRUE = ((0.3, (0.0, 0.0, 1.0), 50.0), (0.7, (1.0, 0.0, 0.0), 20.0))
#: EM recovery on 3000 draws: κ̂ has relative standard error about 1/√(n_k) ≤ 3.3%, so 15% is
#: over 4.5 of them; the means' angular error is about 1/√(κ n_k) ≤ 0.007 rad.
KAPPA_RTOL, MEAN_ATOL, WEIGHT_ATOL = 0.15, 0.05, 0.05
#: Product Gauss–Legendre (cos θ) × trapezoid (φ) grid, 120 × 240: both rules converge
#: spectrally on these smooth integrands (widths ≥ 0.05 rad integrate to 1 within 1e-12).
INTEGRAL_TOL = 1e-10


def _sphere_grid(n_z=120, n_phi=240):
    """(points (n, 3), weights (n,) summing to 4π): Gauss–Legendre in z = cos θ, uniform in φ."""
    z, wz = np.polynomial.legendre.leggauss(n_z)
    phi = np.arange(n_phi) * 2 * np.pi / n_phi
    Z, P = np.meshgrid(z, phi, indexing="ij")
    r = np.sqrt(1 - Z**2)
    pts = np.stack([r * np.cos(P), r * np.sin(P), Z], axis=-1).reshape(-1, 3)
    return torch.from_numpy(pts), torch.from_numpy(np.repeat(wz, n_phi) * 2 * np.pi / n_phi)


def _integral(log_density):
    pts, w = _sphere_grid()
    return float(w @ torch.exp(log_density(pts)))


@pytest.fixture(scope="module")
def draws():
    rng = np.random.default_rng(0)
    comp = rng.choice(len(TRUE), size=3000, p=[c[0] for c in TRUE])
    X = np.empty((3000, 3))
    for k, (_, mu, kappa) in enumerate(TRUE):
        X[comp == k] = vonmises_fisher(mu, kappa).rvs(int((comp == k).sum()), random_state=rng)
    return torch.from_numpy(X / np.linalg.norm(X, axis=1, keepdims=True))


@pytest.fixture(scope="module")
def vmf(draws):
    return VMFMixture(2).fit(draws)


def test_vmf_recovers_a_known_mixture(vmf):
    assert vmf.converged_
    for weight, mu, kappa in TRUE:
        k = int(torch.argmax(vmf.means_ @ torch.tensor(mu, dtype=torch.float64)))
        angle = math.acos(min(1.0, float(vmf.means_[k] @ torch.tensor(mu, dtype=torch.float64))))
        assert angle < MEAN_ATOL
        assert abs(float(vmf.kappas_[k]) / kappa - 1) < KAPPA_RTOL
        assert abs(float(vmf.weights_[k]) - weight) < WEIGHT_ATOL


def test_vmf_density_integrates_to_one(vmf):
    assert abs(_integral(vmf.log_density) - 1) < INTEGRAL_TOL


def test_vmf_normaliser_small_and_large_kappa():
    kappa = torch.tensor([1e-6, 1.0, 1e7], dtype=torch.float64)
    expected = [-math.log(4 * math.pi), math.log(1 / (2 * math.pi * (1 - math.exp(-2)))),
                math.log(1e7 / (2 * math.pi))]
    torch.testing.assert_close(_vmf_log_norm(kappa), torch.tensor(expected, dtype=torch.float64),
                               rtol=0, atol=1e-6)


def test_vmf_sample_weights_and_duplicates_agree(draws):
    # integer weights and duplicated rows are the same data: seeded differently, EM reaches the
    # same optimum of this well-separated mixture
    X, w = draws[:400], torch.tensor([1.0, 2.0]).repeat(200).double()
    a = VMFMixture(2, tol=1e-12, max_iter=500).fit(X, sample_weight=w)
    b = VMFMixture(2, tol=1e-12, max_iter=500).fit(torch.cat([X, X[1::2]]))
    order = [int(torch.argmax(b.means_ @ a.means_[k])) for k in range(2)]
    torch.testing.assert_close(a.kappas_, b.kappas_[order], rtol=1e-6, atol=0)


def test_fit_vmf_chooses_among_capped_ks(draws):
    model, K = fit_vmf(draws[:20], draws[20:200], Ks=(2, 50))
    assert K in (2, 19) and model.n_components == K


def test_gaussian_normaliser_matches_quadrature():
    for h in (1e-4, 1e-2, 0.3, 1.0, 5.0):
        q = 2 * math.pi * quad(lambda t: math.exp(-t * t / (2 * h * h)) * math.sin(t), 0,
                               min(math.pi, 40 * h), epsabs=0, epsrel=1e-13, limit=200)[0]
        assert gaussian_normaliser(h) == pytest.approx(q, rel=1e-10)
    assert gaussian_normaliser(1e-3) == pytest.approx(2 * math.pi * 1e-6 * (1 - 1e-6 / 3), rel=1e-12)


def test_exact_kde_integrates_to_one(draws):
    assert abs(_integral(GeodesicGaussianKDE(0.05).fit(draws[:30]).log_density) - 1) < INTEGRAL_TOL
    kde = sklearn_kde_cv(draws[:200], bandwidths=np.geomspace(0.05, 0.5, 6), folds=3)
    assert 0.05 <= kde.bandwidth <= 0.5
    assert abs(_integral(kde.log_density) - 1) < INTEGRAL_TOL


def test_exact_kde_agrees_with_scikit_learn_near_the_data():
    X = load_earth("volcano")[:300]
    grid = np.geomspace(3e-3, 0.1, 6)
    kde = sklearn_kde_cv(X, bandwidths=grid, folds=3)
    h = kde.bandwidth
    assert h in grid
    # near the data: the data themselves and points 0.1 h away from them
    offset = torch.linalg.cross(X, torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64).expand_as(X))
    near = X + 0.1 * h * offset / torch.linalg.vector_norm(offset, dim=1, keepdim=True)
    Q = torch.cat([X, near / torch.linalg.vector_norm(near, dim=1, keepdim=True)])
    sk = KernelDensity(metric="haversine", algorithm="ball_tree", kernel="gaussian", bandwidth=h)
    sk_log = sk.fit(to_latlon(X.numpy())).score_samples(to_latlon(Q.numpy()))
    corrected = sk_log + math.log(2 * math.pi * h * h) - math.log(gaussian_normaliser(h))
    np.testing.assert_allclose(kde.log_density(Q).numpy(), corrected, rtol=0, atol=1e-8)


def test_validation_names_the_argument(draws):
    off = draws[:10] * 1.1
    with pytest.raises(ValueError, match="X"):
        VMFMixture(2).fit(off)
    with pytest.raises(ValueError, match="n_components"):
        VMFMixture(11).fit(draws[:10])
    with pytest.raises(ValueError, match="tol"):
        VMFMixture(2, tol=0.0).fit(draws[:10])
    with pytest.raises(NotFittedError):
        VMFMixture(2).log_density(draws[:10])
    with pytest.raises(ValueError, match="bandwidth"):
        GeodesicGaussianKDE(-1.0).fit(draws[:10])
    with pytest.raises(NotFittedError):
        GeodesicGaussianKDE(0.1).log_density(draws[:10])
    with pytest.raises(ValueError, match="bandwidths"):
        sklearn_kde_cv(draws[:10], bandwidths=[])
    with pytest.raises(ValueError, match="h must"):
        gaussian_normaliser(0.0)
    with pytest.raises(ValueError, match="X_fit"):
        fit_vmf(draws[:1], draws[1:5])


def test_benchmark_script_smoke(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_adaptive", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    # a tiny version: 300 volcano points, two K and four bandwidths
    monkeypatch.setattr(bench, "load_earth", lambda name: load_earth(name)[:300])
    monkeypatch.setattr(bench, "fit_vmf", functools.partial(fit_vmf, Ks=(5, 10)))
    monkeypatch.setattr(bench, "sklearn_kde_cv", functools.partial(
        sklearn_kde_cv, bandwidths=np.geomspace(1e-2, 0.3, 4), folds=3))
    monkeypatch.setattr(bench, "WARM_UP_POINTS", 50)
    lines = []
    status = bench.main(["--quick", "--adaptive-mode", "auto", "--datasets", "volcano", "--check"],
                        out=lines.append)
    rows = [line for line in lines if line.startswith("| volcano |")]
    assert len(rows) == 2 and rows[0].count("±") == 9 and "(K " in rows[0] and "(h " in rows[0]
    assert any(line.startswith("| data | multiscale NLL / far | adaptive (time='auto')") for line in lines)
    verdicts = [line for line in lines if line.startswith("(")]
    assert [v[:3] for v in verdicts] == ["(a)", "(b)", "(c)"]
    assert "not measured" in verdicts[2]
    met = ["NOT MET" not in v for v in verdicts[:2]]
    assert status == (0 if all(met) else 1)
