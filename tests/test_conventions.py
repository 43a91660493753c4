"""Conventions of the neighbouring communities: IGSO(3) (FrameDiff / RFdiffusion / DiffDock) and
GeometricKernels' heat kernel, against high-precision references and heatscore's own kernel."""

import functools
import math
import warnings

import mpmath as mp
import numpy as np
import pytest
import torch

from conftest import N_SIGMA, assert_close, cached_mesh
from heatscore.heat_kernels import (HeatKernel, from_geometric_kernels, geometric_kernels_lengthscale,
                                    geometric_kernels_time, igso3_angle_density, igso3_log_density,
                                    igso3_sample, igso3_score, igso3_time, to_geometric_kernels)
from heatscore.manifolds import SO3, Euclidean, Sphere, Torus
from heatscore.manifolds.so3 import hat, rotation_from_vector, vector_from_rotation, vee_skew

F64 = torch.float64
LOG_8PI2 = math.log(8 * math.pi ** 2)
EPS_VALUES = [0.01, 0.1, 0.5, 1.0, 2.0]
OMEGA_VALUES = [0.0, 1e-6, 1e-3, 0.05, 0.5, 1.5, 2.5, 3.1, math.pi - 1e-6, math.pi]
#: DESIGN's accuracy of the exact kernel: relative 1e-6 for t ≥ 1e-3, and for t < 1e-3
#: |Δ log k| ≤ 1e-8 + 1e-6 |log k| (applied to log k = log f − log 8π²).
KERNEL_RTOL = 1e-6
SMALL_T_ATOL = 1e-8
#: The series needs about (digits lost)·ln 10 / t terms; above this many lost digits it is left to
#: the Poisson-summed mpmath form (ε = 0.01 beyond ω ≈ 0.1 would need > 10⁴ terms at > 500 digits).
SERIES_MAX_LOST_DIGITS = 400
#: mpmath's two forms of f (series and Poisson sum) must agree to this relative error.
MP_AGREEMENT = 1e-35
#: Derivatives of the closed form (autograd through it) against mpmath: DESIGN's value accuracy.
SCORE_RTOL = 1e-6
#: Fourth-order central differences along R exp(h[e_i]×), step FD_STEP: truncation ~h⁴·|∂⁵ log f|
#: (log f is nearly quadratic in the angle at these ε), round-off ~1e-16·|log f|/h.
FD_STEP = 1e-3
FD_ATOL = 1e-8
#: Draws per sampler moment check (each check at N_SIGMA standard errors).
N_DRAWS = 20_000


# --- high-precision references --------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def mp_series(omega, eps):
    """f(ω; ε) = Σ_l (2l+1) e^{−l(l+1)ε²/2} sin((l+½)ω)/sin(ω/2) in mpmath, summed with enough
    digits for its cancellation (≈ ω²/4t/ln 10 lost digits) and terms below 10^{−digits}."""
    t_float = eps * eps / 2
    dps = int(40 + omega * omega / (4 * t_float) / math.log(10))
    with mp.workdps(dps):
        t, w = mp.mpf(eps) ** 2 / 2, mp.mpf(omega)
        lmax = 1
        while lmax * (lmax + 1) * t_float - 2 * math.log(2 * lmax + 1) < (dps + 5) * math.log(10):
            lmax += 1
        if omega == 0:
            total = mp.fsum((2 * l + 1) ** 2 * mp.exp(-l * (l + 1) * t) for l in range(lmax + 1))
        else:
            half = mp.sin(w / 2)
            total = mp.fsum((2 * l + 1) * mp.exp(-l * (l + 1) * t) * mp.sin((l + mp.mpf(1) / 2) * w) / half
                            for l in range(lmax + 1))
        return +total


def mp_poisson(omega, eps, dps=60):
    """The same f by Poisson summation (no cancellation, 25 images): 8π² e^{t/4}(4πt)^{−3/2}
    Σ_n (−1)^n (ω − 2πn) e^{−(ω−2πn)²/4t} / (2 sin(ω/2)); its limit at ω = 0. Never lowers the
    working precision (mpmath's ``diff`` raises it)."""
    with mp.workdps(max(dps, mp.mp.dps)):
        t, w = mp.mpf(eps) ** 2 / 2, mp.mpf(omega)
        pre = 8 * mp.pi ** 2 * mp.exp(t / 4) * (4 * mp.pi * t) ** mp.mpf(-1.5)
        if omega == 0:
            return pre * mp.fsum((-1) ** n * (1 - 2 * mp.pi ** 2 * n * n / t) * mp.exp(-mp.pi ** 2 * n * n / t)
                                 for n in range(-12, 13))
        s = mp.fsum((-1) ** n * (w - 2 * mp.pi * n) * mp.exp(-(w - 2 * mp.pi * n) ** 2 / (4 * t))
                    for n in range(-12, 13))
        return pre * s / (2 * mp.sin(w / 2))


def mp_dlog(omega, eps):
    """d log f/dω in mpmath (numerical differentiation of the Poisson form at 60 digits)."""
    with mp.workdps(60):
        return mp.diff(lambda w: mp.log(mp_poisson(w, eps, 60)), mp.mpf(omega))


def _series_feasible(omega, eps):
    return omega * omega / (2 * eps * eps) / math.log(10) < SERIES_MAX_LOST_DIGITS


def _log_tol(log_f, eps):
    """DESIGN's accuracy as an absolute tolerance on log f."""
    if eps * eps / 2 >= 1e-3:
        return 2 * KERNEL_RTOL
    return SMALL_T_ATOL + KERNEL_RTOL * abs(log_f - LOG_8PI2)


def _axes(n, gen):
    u = torch.randn(n, 3, generator=gen, dtype=F64)
    return u / u.norm(dim=1, keepdim=True)


def _right_step(r, i, s):
    """R exp(s[e_i]×): the body-frame (left-invariant frame) flow."""
    omega = torch.zeros(r.shape[0], 3, dtype=r.dtype)
    omega[:, i] = s
    return r @ rotation_from_vector(omega)


# --- the conversion of ε ----------------------------------------------------------------------
def test_igso3_time():
    assert_close(igso3_time(0.5), 0.125)
    t = igso3_time(np.array([0.1, 2.0]))
    assert t.dtype == F64 and t.shape == (2,)
    assert_close(t, [0.005, 2.0])
    assert_close(igso3_time(torch.tensor(0.3, dtype=torch.float32)), 0.045, rtol=1e-6, atol=0)


def test_references_agree():
    """Both mpmath forms of f, the series and the Poisson sum, are the same function."""
    for eps in EPS_VALUES:
        for omega in OMEGA_VALUES:
            if _series_feasible(omega, eps):
                s, p = mp_series(omega, eps), mp_poisson(omega, eps)
                assert abs(s - p) <= MP_AGREEMENT * abs(p), (eps, omega)


# --- densities --------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", EPS_VALUES)
def test_log_density_matches_the_series(eps, gen):
    """log f(R) at rotations of angle ω about random axes: the series (or, where it would need
    thousands of terms at hundreds of digits, its Poisson sum) in mpmath."""
    omegas = torch.tensor(OMEGA_VALUES, dtype=F64)
    r = rotation_from_vector(omegas[:, None] * _axes(len(OMEGA_VALUES), gen))
    got = igso3_log_density(r, eps)
    assert got.dtype == F64 and got.shape == (len(OMEGA_VALUES),)
    for value, omega in zip(got.tolist(), OMEGA_VALUES):
        ref = mp_series(omega, eps) if _series_feasible(omega, eps) else mp_poisson(omega, eps)
        ref = float(mp.log(ref))
        assert abs(value - ref) <= _log_tol(ref, eps), (omega, value, ref)


@pytest.mark.parametrize("eps", EPS_VALUES)
def test_angle_density_matches_the_series(eps):
    omegas = torch.tensor(OMEGA_VALUES, dtype=F64)
    got = igso3_angle_density(omegas, eps)
    assert got.dtype == F64 and got.shape == omegas.shape
    assert got[0] == 0.0                                      # (1 − cos 0) = 0: no NaN
    for value, omega in zip(got.tolist()[1:], OMEGA_VALUES[1:]):
        f = mp_series(omega, eps) if _series_feasible(omega, eps) else mp_poisson(omega, eps)
        with mp.workdps(60):
            ref = f * (1 - mp.cos(mp.mpf(omega))) / mp.pi
        if ref < 1e-300:
            assert value == 0.0 or value < 1e-290                # underflows like the density
            continue
        ref_log = float(mp.log(ref))
        assert abs(math.log(value) - ref_log) <= _log_tol(float(mp.log(f)), eps), (omega, value)


def _angle_quadrature(eps, nodes=16, panels=64):
    """Composite Gauss–Legendre nodes and weights on [0, π], refined on [0, 12ε] (the mass)."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    cut = min(math.pi, 12 * eps)
    edges = np.unique(np.concatenate([np.linspace(0, cut, panels + 1), np.linspace(cut, math.pi, panels + 1)]))
    a, b = edges[:-1, None], edges[1:, None]
    pts = (0.5 * (b - a) * x + 0.5 * (a + b)).ravel()
    wts = (0.5 * (b - a) * w).ravel()
    return torch.as_tensor(pts), torch.as_tensor(wts)


@pytest.mark.parametrize("eps", EPS_VALUES + [4.0])
def test_angle_density_integrates_to_one_with_the_character_moments(eps):
    """∫ p = 1 and, by Schur orthogonality of the characters against f = Σ (2l+1) e^{−l(l+1)t} χ_l,
    E[χ_1] = E[1 + 2cos ω] = 3e^{−2t} and E[χ_2] = E[1 + 2cos ω + 2cos 2ω] = 5e^{−6t}."""
    w, q = _angle_quadrature(eps)
    p = igso3_angle_density(w, eps)
    t = eps * eps / 2
    assert float((q * p).sum()) == pytest.approx(1.0, abs=1e-10)
    assert float((q * p * (1 + 2 * torch.cos(w))).sum()) == pytest.approx(3 * math.exp(-2 * t), abs=1e-10)
    chi2 = 1 + 2 * torch.cos(w) + 2 * torch.cos(2 * w)
    assert float((q * p * chi2).sum()) == pytest.approx(5 * math.exp(-6 * t), abs=1e-10)


def test_angle_density_tends_to_haar():
    """Large ε: f → 1, the angle density → the Haar angle density (1 − cos ω)/π (not 1/8π²: f is
    w.r.t. the normalised Haar measure)."""
    w = torch.linspace(0, math.pi, 9, dtype=F64)
    assert_close(igso3_angle_density(w, 10.0), (1 - torch.cos(w)) / math.pi, rtol=1e-12, atol=1e-14)


def test_angle_density_broadcasts_eps():
    w = torch.tensor([[0.3], [1.0]], dtype=F64)
    eps = torch.tensor([0.2, 0.7, 1.5], dtype=F64)
    got = igso3_angle_density(w, eps)
    assert got.shape == (2, 3)
    assert float(got[1, 2]) == pytest.approx(float(igso3_angle_density(torch.tensor([1.0], dtype=F64), 1.5)[0]),
                                              rel=1e-14)


@pytest.mark.parametrize("eps", [0.01, 0.3, 1.5])
def test_log_density_is_heatscore_kernel_plus_log_8pi2(eps, gen):
    m = SO3()
    r, mean = m.random_uniform(50, rng=gen), m.random_uniform(1, rng=gen)
    r = torch.cat([r, mean, igso3_sample(20, eps, rng=gen, mean=mean[0])])   # also near the mean
    ref = HeatKernel(m).log_pairs(r, mean, igso3_time(eps)) + LOG_8PI2
    assert_close(igso3_log_density(r, eps, mean=mean[0]), ref)
    assert_close(igso3_log_density(r, eps, mean=mean), ref)                  # (1, 3, 3) mean
    # centred at μ: f(R; μ) = f(μᵀR; I)
    assert_close(igso3_log_density(r, eps, mean=mean), igso3_log_density(mean.transpose(1, 2) @ r, eps))


def test_log_density_per_row_eps_means_and_inputs(gen):
    m = SO3()
    r, means = m.random_uniform(4, rng=gen), m.random_uniform(4, rng=gen)
    eps = np.array([0.1, 0.5, 1.0, 2.0])
    got = igso3_log_density(r.numpy(), eps, mean=means.numpy())             # numpy in, tensor out
    assert isinstance(got, torch.Tensor) and got.dtype == F64
    for i in range(4):
        assert_close(got[i], igso3_log_density(r[i:i + 1], float(eps[i]), mean=means[i])[0])
    got32 = igso3_log_density(r.float(), 0.5)                              # float32 accepted
    assert got32.dtype == F64
    assert_close(got32, igso3_log_density(r, 0.5), rtol=1e-5, atol=1e-5)


# --- scores -------------------------------------------------------------------------------------
@pytest.mark.parametrize("eps", [0.01, 0.1, 0.5, 2.0])
def test_score_is_framediff_rotation_vector(eps, gen):
    """FrameDiff's score: (d log f/dω) v/|v|, v = Log(μᵀR) the body-frame rotation vector."""
    omegas = [1e-3, 0.05, 0.5, 1.5, 2.5, 3.1]
    mean = SO3().random_uniform(1, rng=gen)
    axes = _axes(len(omegas), gen)
    r = mean @ rotation_from_vector(torch.tensor(omegas, dtype=F64)[:, None] * axes)
    got = igso3_score(r, eps, mean=mean[0])
    assert got.shape == (len(omegas), 3) and got.dtype == F64
    for i, omega in enumerate(omegas):
        ref = float(mp_dlog(omega, eps)) * axes[i]
        assert_close(got[i], ref, rtol=SCORE_RTOL, atol=1e-12)


@pytest.mark.parametrize("eps", [0.3, 1.0])
def test_score_is_body_frame_derivative(eps, gen):
    """ω_i = d/dh log f(R exp(h[e_i]×)) at h = 0 (fourth-order central differences)."""
    mean = SO3().random_uniform(1, rng=gen)[0]
    r = igso3_sample(6, eps, rng=gen, mean=mean)
    got = igso3_score(r, eps, mean=mean)
    h = FD_STEP
    for i in range(3):
        def f(s):
            return igso3_log_density(_right_step(r, i, s), eps, mean=mean)
        fd = (-f(2 * h) + 8 * f(h) - 8 * f(-h) + f(-2 * h)) / (12 * h)
        assert_close(got[:, i], fd, rtol=0, atol=FD_ATOL)


@pytest.mark.parametrize("eps", [0.01, 0.2, 1.0])
def test_score_is_vee_of_heatscore_gradient(eps, gen):
    """grad log f = R[ω]× in the metric ½tr(UᵀV): ω = vee(Rᵀ G), factor 1, with G heatscore's
    Riemannian gradient; the space-frame vector is Rω."""
    m = SO3()
    mean = m.random_uniform(1, rng=gen)
    r = torch.cat([igso3_sample(30, eps, rng=gen, mean=mean[0]), m.random_uniform(10, rng=gen)])
    g = HeatKernel(m).grad_log_pairs(r, mean, igso3_time(eps))
    omega = igso3_score(r, eps, mean=mean)
    assert_close(omega, vee_skew(r.transpose(1, 2) @ g), rtol=1e-9, atol=1e-9)
    assert_close(g, r @ hat(omega), rtol=1e-9, atol=1e-9)
    # Space frame: d/dh log f(exp(h[e_i]×) R) = (R ω)_i, checked through the gradient.
    space = vee_skew(g @ r.transpose(1, 2))
    assert_close(space, (r @ omega[:, :, None])[:, :, 0], rtol=1e-9, atol=1e-9)


def test_score_frobenius_metric_factor_half(gen):
    """Autograd on the nine entries, projected with the Frobenius metric tr(UᵀV), gives ω/2."""
    eps = 0.4
    r = igso3_sample(8, eps, rng=gen).requires_grad_(True)
    (euclid,) = torch.autograd.grad(igso3_log_density(r, eps).sum(), r)
    r = r.detach()
    assert_close(vee_skew(r.transpose(1, 2) @ euclid), 0.5 * igso3_score(r, eps), rtol=1e-9, atol=1e-9)


def test_score_at_the_mean_and_antipode(gen):
    mean = SO3().random_uniform(1, rng=gen)[0]
    assert torch.equal(igso3_score(mean[None], 0.3, mean=mean), torch.zeros(1, 3, dtype=F64))
    flip = mean @ rotation_from_vector(torch.tensor([[math.pi, 0.0, 0.0]], dtype=F64))
    s = igso3_score(flip, 0.3, mean=mean)
    assert bool(torch.isfinite(s).all()) and float(s.abs().max()) < 1e-6   # d log f/dω = 0 at π


def test_score_matches_framediff_vector_construction(gen):
    """The construction FrameDiff's SO3Diffuser.score uses, from Log(μᵀR) and d log f/dω."""
    eps, mean = 0.7, SO3().random_uniform(1, rng=gen)[0]
    r = igso3_sample(5, eps, rng=gen, mean=mean)
    v = vector_from_rotation(mean.T @ r)
    ref = torch.stack([float(mp_dlog(float(x.norm()), eps)) * x / x.norm() for x in v])
    assert_close(igso3_score(r, eps, mean=mean), ref, rtol=SCORE_RTOL, atol=1e-12)


# --- sampler ------------------------------------------------------------------------------------
def _assert_mean(samples, expected, what):
    """|mean − expected| ≤ N_SIGMA standard errors, entrywise. Gaussian statistic: the two-sided
    chance of a false failure is about 5.7e-7 per entry (about 3e-5 over this file's checks)."""
    mean = samples.mean(0)
    se = samples.std(0) / math.sqrt(samples.shape[0])
    z = (mean - expected).abs() / se.clamp_min(1e-300)
    assert float(z.max()) < N_SIGMA, (what, mean, expected, se)


@pytest.mark.parametrize("eps", [0.01, 0.3, 1.0, 2.0])
def test_sampler_character_moments(eps, gen):
    """E[R] = e^{−2t} μ (the degree-1 representation; tr: E[χ_1(μᵀR)] = 3e^{−2t}, so
    E[cos ω] = (3e^{−2t} − 1)/2) and E[χ_2(μᵀR)] = 5e^{−6t}, t = ε²/2."""
    m = SO3()
    mean = m.random_uniform(1, rng=gen)[0]
    r = igso3_sample(N_DRAWS, eps, rng=gen, mean=mean)
    assert r.shape == (N_DRAWS, 3, 3) and r.dtype == F64 and bool(m.belongs(r).all())
    t = eps * eps / 2
    _assert_mean(r.reshape(N_DRAWS, 9), math.exp(-2 * t) * mean.reshape(9), "E[R]")
    q = mean.T @ r
    cos = 0.5 * (torch.diagonal(q, dim1=1, dim2=2).sum(1) - 1)
    _assert_mean(cos[:, None], torch.tensor([(3 * math.exp(-2 * t) - 1) / 2], dtype=F64), "E[cos ω]")
    chi2 = 1 + 2 * cos + 2 * (2 * cos * cos - 1)
    _assert_mean(chi2[:, None], torch.tensor([5 * math.exp(-6 * t)], dtype=F64), "E[χ_2]")


def test_sampler_per_row_eps_reproducible_and_inputs(gen):
    eps = torch.tensor([0.2, 1.0], dtype=F64).repeat(N_DRAWS // 2)
    r = igso3_sample(N_DRAWS, eps, rng=5)
    assert torch.equal(r, igso3_sample(N_DRAWS, eps, rng=5))
    assert not torch.equal(r, igso3_sample(N_DRAWS, eps, rng=6))
    tr = torch.diagonal(r, dim1=1, dim2=2).sum(1)
    for k, e in enumerate([0.2, 1.0]):
        _assert_mean(tr[k::2, None], torch.tensor([3 * math.exp(-e * e)], dtype=F64), f"E[tr R], eps={e}")
    g = torch.Generator().manual_seed(3)
    assert igso3_sample(3, 0.5, rng=g).shape == (3, 3, 3)
    assert igso3_sample(1, np.float64(0.5)).shape == (1, 3, 3)             # rng=None: fresh entropy
    means = SO3().random_uniform(4, rng=gen)
    near = igso3_sample(4, 1e-4, rng=0, mean=means.numpy())                 # one mean per row
    assert_close(near, means, rtol=0, atol=1e-3)


# --- validators ---------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_eps_validation(bad):
    r = torch.eye(3, dtype=F64)[None]
    for call in (lambda: igso3_time(bad), lambda: igso3_angle_density([0.5], bad),
                 lambda: igso3_log_density(r, bad), lambda: igso3_score(r, bad),
                 lambda: igso3_sample(2, bad, rng=0)):
        with pytest.raises(ValueError, match="eps must be"):
            call()


def test_input_validation(gen):
    m = SO3()
    r = m.random_uniform(3, rng=gen)
    with pytest.raises(TypeError, match="eps"):
        igso3_time("0.5")
    for call in (igso3_log_density, igso3_score):
        with pytest.raises(ValueError, match="eps must be a scalar or have shape"):
            call(r, torch.ones(2, dtype=F64))
        with pytest.raises(ValueError, match="R has 1 of 3 points off SO3"):
            call(torch.cat([r[:2], 2 * r[2:]]), 0.5)
        with pytest.raises(ValueError, match=r"R must be points of shape \(n, 3, 3\)"):
            call(r[0], 0.5)
        with pytest.raises(ValueError, match="R must be finite"):
            call(torch.full((1, 3, 3), float("nan"), dtype=F64), 0.5)
        with pytest.raises(ValueError, match="mean has 1 of 1 points off SO3"):
            call(r, 0.5, mean=-torch.eye(3, dtype=F64))
        with pytest.raises(ValueError, match="mean must be one rotation"):
            call(r, 0.5, mean=r[:2])
    with pytest.raises(ValueError, match="omega must be rotation angles"):
        igso3_angle_density([-0.1, 0.5], 0.5)
    with pytest.raises(ValueError, match="omega must be rotation angles"):
        igso3_angle_density([math.pi + 1e-3], 0.5)
    with pytest.raises(ValueError, match="omega must be finite"):
        igso3_angle_density([float("nan")], 0.5)
    with pytest.raises(ValueError, match="eps must broadcast against omega"):
        igso3_angle_density(torch.ones(3, dtype=F64), torch.ones(2, dtype=F64))
    with pytest.raises(ValueError, match="n must be >= 1"):
        igso3_sample(0, 0.5)
    with pytest.raises(TypeError, match="n must be an integer"):
        igso3_sample(2.5, 0.5)
    with pytest.raises(TypeError, match="rng must be"):
        igso3_sample(2, 0.5, rng="seed")
    with pytest.raises(ValueError, match="eps must be a scalar or have shape"):
        igso3_sample(3, [0.1, 0.2])
    with pytest.raises(ValueError, match="mean has 1 of 1 points off SO3"):
        igso3_sample(3, 0.5, mean=2 * torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="mean must be one rotation"):
        igso3_sample(3, 0.5, mean=r[:2])


# --- GeometricKernels: the helper's formula against heatscore's kernel (no GeometricKernels) -----
def test_geometric_kernels_time_and_lengthscale():
    assert_close(geometric_kernels_time(0.8), 0.32)
    assert_close(geometric_kernels_lengthscale(0.32), 0.8)
    t = torch.tensor([1e-4, 0.5, 3.0], dtype=F64)
    assert_close(geometric_kernels_time(geometric_kernels_lengthscale(t)), t)
    # GeometricKernels' unnormalised SO(3) kernel with lengthscale ε is IGSO(3)(ε)'s f:
    assert_close(geometric_kernels_time(0.7), igso3_time(0.7))


def _gk_definition(m, x, y, kappa, n_levels, normalize):
    """GeometricKernels' heat kernel written out from heatscore's eigenpairs: Σ_n e^{−κ²λ_n/2}
    f_n(x) f_n(y) with f_n = √vol φ_n orthonormal w.r.t. the uniform probability; normalize divides
    by Σ_n e^{−κ²λ_n/2} (unit average variance)."""
    ep = m.eigenpairs(n_levels)
    s = torch.exp(-0.5 * kappa ** 2 * ep.eigenvalues)
    k = m.volume * (ep(x) * s) @ ep(y).T
    return k / s.sum() if normalize else k


@pytest.mark.parametrize("m, n_levels", [(Sphere(2), 30), (SO3(), 12), (Torus(2), 40)])
@pytest.mark.parametrize("normalize", [False, True])
def test_from_geometric_kernels_formula(m, n_levels, normalize, gen):
    kappa = 1.0                                   # t = 0.5: the truncated levels are below e^{-60}
    x, y = m.random_uniform(5, rng=gen), m.random_uniform(4, rng=gen)
    gk = _gk_definition(m, x, y, kappa, n_levels, normalize)
    k = HeatKernel(m)(x, y, geometric_kernels_time(kappa))
    assert_close(from_geometric_kernels(gk, m, kappa, normalize=normalize), k)
    assert_close(to_geometric_kernels(k, m, kappa, normalize=normalize), gk)
    if normalize:                                 # K(x, x) = 1
        assert_close(to_geometric_kernels(HeatKernel(m)(x, x, 0.5), m, kappa).diagonal(), torch.ones(5, dtype=F64))


def test_from_geometric_kernels_default_is_normalized():
    m, kappa = Sphere(2), 0.6
    k = HeatKernel(m)(m.random_uniform(3, rng=0), m.random_uniform(3, rng=1), geometric_kernels_time(kappa))
    assert_close(from_geometric_kernels(to_geometric_kernels(k, m, kappa), m, kappa, normalize=True), k)
    assert_close(to_geometric_kernels(k, m, kappa), to_geometric_kernels(k, m, kappa, normalize=True))
    assert_close(to_geometric_kernels(k, m, kappa, normalize=False), 4 * math.pi * k)


def test_from_geometric_kernels_validation():
    k = np.ones((2, 2))
    with pytest.raises(ValueError, match="values must be finite"):
        from_geometric_kernels(np.array([float("nan")]), Sphere(2), 1.0)
    with pytest.raises(ValueError, match="lengthscale must be > 0"):
        from_geometric_kernels(k, Sphere(2), -1.0)
    with pytest.raises(ValueError, match="lengthscale must be a scalar"):
        to_geometric_kernels(k, Sphere(2), [1.0, 2.0])
    with pytest.raises(ValueError, match="lengthscale must be > 0"):
        geometric_kernels_time(0.0)
    with pytest.raises(ValueError, match="t must be > 0"):
        geometric_kernels_lengthscale(-1.0)
    with pytest.raises(ValueError, match="manifold must be compact"):
        from_geometric_kernels(k, Euclidean(2), 1.0)
    with pytest.raises(ValueError, match="manifold must be homogeneous"):
        from_geometric_kernels(k, cached_mesh("ico1"), 1.0, normalize=False)
    with pytest.raises(TypeError, match="manifold must be a heatscore manifold"):
        from_geometric_kernels(k, "sphere", 1.0)
    m3 = Sphere(3)                                     # S³: normalised values convert both ways
    x3 = m3.random_uniform(4, rng=3)
    k3 = HeatKernel(m3)(x3, x3, 0.5)
    back = from_geometric_kernels(to_geometric_kernels(k3, m3, 1.0), m3, 1.0)
    torch.testing.assert_close(back, k3, rtol=1e-12, atol=0)


# --- GeometricKernels itself (optional: pip install geometric-kernels, the `bench` extra) -------
@pytest.fixture(scope="module")
def gk():
    pytest.importorskip("geometric_kernels")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from geometric_kernels.kernels import MaternGeometricKernel
        from geometric_kernels.spaces import Circle, Hypersphere, SpecialOrthogonal
    spaces = {"sphere": Hypersphere(2), "so3": SpecialOrthogonal(3), "circle": Circle(),
              "sphere3": Hypersphere(3)}

    @functools.lru_cache(maxsize=None)
    def kernel(space, normalize=None):
        """GeometricKernels' default kernel on ``space`` (built once: ~1.5 s on SO(3))."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if normalize is None:
                return MaternGeometricKernel(spaces[space])
            return MaternGeometricKernel(spaces[space], normalize=normalize)
    return kernel


def _gk_values(gk, space, x, y, kappa, normalize=None):
    kernel = gk(space, normalize)
    params = kernel.init_params()
    assert params["nu"][0] == np.inf                       # the heat kernel by default
    params["lengthscale"] = np.array([kappa])
    return kernel.K(params, x.numpy(), y.numpy())


@pytest.mark.parametrize("space, m", [("sphere", Sphere(2)), ("so3", SO3()), ("circle", Torus(1))])
@pytest.mark.parametrize("kappa", [0.6, 1.5])
def test_against_geometric_kernels(gk, space, m, kappa, gen):
    x, y = m.random_uniform(6, rng=gen), m.random_uniform(5, rng=gen)
    k = HeatKernel(m)(x, y, geometric_kernels_time(kappa))
    for normalize in (False, True):
        values = _gk_values(gk, space, x, y, kappa, normalize=normalize)
        assert_close(from_geometric_kernels(values, m, kappa, normalize=normalize), k, rtol=1e-9, atol=0)
    default = _gk_values(gk, space, x, x, kappa)            # GeometricKernels' default: normalize=True
    assert_close(torch.as_tensor(default).diagonal(), torch.ones(6, dtype=F64))
    assert_close(from_geometric_kernels(default, m, kappa), HeatKernel(m)(x, x, kappa ** 2 / 2), rtol=1e-9, atol=0)


def test_geometric_kernels_so3_is_igso3(gk, gen):
    """GeometricKernels' unnormalised SO(3) heat kernel at (I, R) with lengthscale ε is f(R; ε)."""
    eps = 0.8
    r = igso3_sample(6, eps, rng=gen)
    values = _gk_values(gk, "so3", torch.eye(3, dtype=F64)[None], r, eps, normalize=False)[0]
    assert_close(torch.log(torch.as_tensor(values)), igso3_log_density(r, eps), rtol=0, atol=1e-9)


def test_geometric_kernels_higher_spheres_volume(gk):
    """S³ (no heatscore kernel there): GeometricKernels' diagonal is Σ_l e^{−κ²λ_l/2} m_l (its
    harmonics are orthonormal w.r.t. the uniform probability), so dividing by vol(S³) = 2π² gives
    the heat kernel's diagonal Σ_l e^{−λ_l t} m_l / vol, λ_l = l(l+2), m_l = (l+1)²."""
    kappa, m = 0.9, Sphere(3)
    x = m.random_uniform(3, rng=0)
    values = _gk_values(gk, "sphere3", x, x, kappa, normalize=False)
    t = float(geometric_kernels_time(kappa))
    diag = sum(math.exp(-l * (l + 2) * t) * (l + 1) ** 2 for l in range(60)) / (2 * math.pi ** 2)
    assert_close(from_geometric_kernels(values, m, kappa, normalize=False).diagonal(),
                 torch.full((3,), diag, dtype=F64), rtol=1e-9, atol=0)
