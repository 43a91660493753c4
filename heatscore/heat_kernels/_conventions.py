"""Conventions of the neighbouring communities: IGSO(3) (protein and pose diffusion) and
GeometricKernels, converted to heatscore's in one call.

heatscore's SO(3) (DESIGN): metric g(U, V) = ½ tr(UᵀV) (distance = rotation angle), volume 8π²,
k_t = (1/8π²) Σ_l (2l+1) e^{−l(l+1)t} χ_l(θ), χ_l(θ) = sin((2l+1)θ/2)/sin(θ/2): the density w.r.t.
volume of Brownian motion with generator Δ (dX = √2 dB). Scores are ambient matrices R[ω]×.

IGSO(3)
-------
The code of FrameDiff (github.com/jasonkyuyim/se3_diffusion, ``data/so3_diffuser.py``:
``igso3_expansion(omega, eps)``), RFdiffusion (github.com/RosettaCommons/RFdiffusion,
``rfdiffusion/igso3.py``: ``f_igso3(omega, t)`` called with t = σ²) and DiffDock
(github.com/gcorso/DiffDock, ``utils/so3.py``: ``_expansion(omega, eps)``) parametrises IGSO(3)(ε)
by the series

    f(ω; ε) = Σ_l (2l+1) e^{−l(l+1)ε²/2} sin((l+½)ω)/sin(ω/2),   ω the rotation angle of μᵀR.

* Time. f = 8π² k_t with t = ε²/2 (:func:`igso3_time`). FrameDiff's and RFdiffusion's docstrings
  say that IGSO(3)(ε) "agrees with the Brownian motion on SO(3) with t = ε²" (RFdiffusion: "t = σ²
  ... for the canonical inner product ⟨u, v⟩ = tr(u vᵀ)/2", i.e. heatscore's metric): their
  Brownian motion is dR = R [dW]×, W a standard Brownian motion in R³, whose generator is ½Δ. So
  t_heatscore = t_FrameDiff/2 = σ²/2 = ε²/2. Leach et al. 2022 ("Denoising diffusion probabilistic
  models on SO(3) for rotational alignment", eq. 5) write e^{−l(l+1)ε_L²}; FrameDiff notes
  ε = √2 ε_L, so t_heatscore = ε_L². FrameDiff's schedule time s ∈ [0, 1] is a third clock: it
  maps to σ(s) (``SO3Diffuser.sigma``), then t = σ(s)²/2. Their reverse step
  g² s·ds + g √ds z with g² = dσ²/ds is heatscore's 2 s·dt + √(2 dt) ξ with dt = dσ²/2.
* Measure. f integrates to 1 against the normalised Haar measure (∫ χ_l dHaar = δ_{l0}); it is
  heatscore's k_t times the volume 8π² (log f = log k_t + log 8π², log 8π² ≈ 4.369). FrameDiff's
  ``density(..., marginal=False)`` = f/8π² is w.r.t. the volume 8π², i.e. heatscore's k_t.
  (RFdiffusion's comment "density with respect to the volume form" refers to f, which is w.r.t.
  the volume form normalised to total mass 1.) The rotation angle has density f(ω)(1 − cos ω)/π on
  [0, π] (FrameDiff's ``density(..., marginal=True)``) = 8π(1 − cos ω) k_t(ω)
  (:func:`igso3_angle_density`).
* Score. FrameDiff's ``SO3Diffuser.score`` returns the 3-vector (d log f/dω) v/|v| with
  v = Log(R_0ᵀ R_t) the *body-frame* rotation vector (``compose_rotvec`` right-multiplies:
  R_t = R_0 Exp(v); ``SE3Diffuser.calc_rot_score`` takes the rotation vector of R_0⁻¹ R_t). That
  vector ω is the coordinate vector of grad log f in the g-orthonormal left-invariant frame
  E_i = R[e_i]× of heatscore's metric: ω_i = d/dh log f(R exp(h[e_i]×)) at h = 0, and
  grad log f = R[ω]× exactly, so ω = vee(Rᵀ G) with G heatscore's ``HeatKernel.grad_log_pairs``
  (factor 1, :func:`igso3_score`). The ambient matrix that RFdiffusion's ``igso3_score`` returns,
  R log(R)/ω · d log f/dω, is that same R[ω]×. Factors to watch: with the Frobenius metric
  tr(UᵀV) (e.g. autograd on the nine matrix entries, projected), the gradient is ½R[ω]× and its
  vector ω/2 (DESIGN: Riemannian = 2 × Frobenius-projected gradient); the space-frame (left
  perturbation exp(h[e_i]×) R) vector is R ω.

All IGSO(3) functions here use heatscore's exact kernel (the Poisson-summed closed form at small
t), positive and accurate at every ε, including ε → 0 and ω near π where the series above
cancels catastrophically in float64.

GeometricKernels
----------------
geometric-kernels (1.0.1: ``kernels/karhunen_loeve.py``) builds its heat kernel, the Matérn
kernel with ν = ∞ and lengthscale κ, as Σ_l e^{−κ²λ_l/2} Σ_s f_ls(x) f_ls(y), with λ_l the same
Laplace–Beltrami eigenvalues as heatscore's (l(l+1) on S² and SO(3), whose Casimir it normalises
as |ρ + l|² − |ρ|², ρ = ½) and, on its ``Hypersphere``, ``SpecialOrthogonal`` and ``Circle``
(addition-theorem) spaces, eigenfunctions orthonormal w.r.t. the *uniform probability*. So, with
t = κ²/2 (:func:`geometric_kernels_time`):

* ``normalize=False``: K = vol(M) · k_t (4π on S², 8π² on SO(3), (2π)^d on T^d);
* ``normalize=True`` (the default of ``MaternGeometricKernel``): K is divided by
  Σ_l e^{−κ²λ_l/2} d_l (unit average variance, so K(x, x) = 1 on these homogeneous spaces):
  K = k_t(x, y)/k_t(x, x).

GeometricKernels truncates at ``num`` levels (by default 25 on spheres, 20 on Lie groups), so its
values agree with heatscore's only while e^{−κ² λ_num/2} is negligible. On S^d, d >= 3, where
heatscore has no heat kernel, only ``normalize=False`` converts (the volume factor; its harmonics
are probability-normalised there too). Not convertible: its
``Mesh`` (eigenvectors re-orthonormalised by a QR in the vertex-counting inner product and scaled
by √n_vertices, not heatscore's M-orthonormal basis) and its Euclidean RBF kernel (heatscore's
R^d is Ornstein–Uhlenbeck); :func:`from_geometric_kernels` refuses manifolds whose k_t(x, x)
depends on x or whose volume is infinite.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Optional

import torch

from heatscore._typing import ArrayLike, Rng
from heatscore._validation import (MANIFOLD_ATOL, as_float_tensor, check_finite,
                                   check_positive_int)
from heatscore.heat_kernels._kernel import HeatKernel
from heatscore.heat_kernels._sampling import sample_heat_kernel
from heatscore.manifolds import SO3
from heatscore.manifolds._base import broadcast_rows
from heatscore.manifolds._closed_forms import so3_dlog_heat_kernel_dtheta, so3_log_heat_kernel
from heatscore.manifolds._radial_sampling import so3_angle_log_density
from heatscore.manifolds.so3 import rotation_angle, vector_from_rotation

if TYPE_CHECKING:
    from heatscore.manifolds._base import Manifold

__all__ = ["igso3_time", "igso3_angle_density", "igso3_log_density", "igso3_score", "igso3_sample",
           "geometric_kernels_time", "geometric_kernels_lengthscale", "from_geometric_kernels",
           "to_geometric_kernels"]

F64 = torch.float64
#: log of SO(3)'s volume 8π²: log f (w.r.t. normalised Haar) − log k_t (w.r.t. volume).
LOG_SO3_VOLUME = math.log(8.0 * math.pi ** 2)
#: k_t(x, x) at two points may differ by this much (relative) on a homogeneous space (round-off).
_HOMOGENEITY_RTOL = 1e-8

_SO3 = SO3()


# ---------------------------------------------------------------------------------------------
# validation


def _positive(value, name, device=None):
    """float64 tensor of ``value`` (any shape), every entry finite and > 0."""
    out = as_float_tensor(value, name, dtype=F64, device=device)
    check_finite(out, name)
    if bool((out <= 0).any()):
        raise ValueError(f"{name} must be > 0, found min {float(out.min()):.3g}")
    return out


def _eps_per_row(eps, n, device):
    """ε as a float64 tensor of shape () or (n,)."""
    out = _positive(eps, "eps", device=device)
    if out.ndim > 1 or (out.ndim == 1 and out.shape[0] not in (1, n)):
        raise ValueError(f"eps must be a scalar or have shape ({n},), found shape {tuple(out.shape)}")
    return out.reshape(()) if out.numel() == 1 and out.ndim == 1 else out


def _rotations(R, name):
    """Validated rotations (n, 3, 3) in float64 (checked at their own dtype's tolerance)."""
    return _SO3.validate(R, name).to(F64)


def _mean(mean, n, device):
    """The centre μ as (1, 3, 3) or (n, 3, 3) float64 (identity by default)."""
    if mean is None:
        return torch.eye(3, dtype=F64, device=device)[None]
    m = as_float_tensor(mean, "mean")
    if m.shape == (3, 3):
        m = m[None]
    m = _rotations(m, "mean")
    if device is not None:
        m = m.to(device)
    if m.shape[0] not in (1, n):
        raise ValueError(f"mean must be one rotation (3, 3) or ({n}, 3, 3), found shape {tuple(m.shape)}")
    return m


def _relative(R, eps, mean):
    """(Q = μᵀR (n, 3, 3), t () or (n,)) for validated inputs."""
    R = _rotations(R, "R")
    n = R.shape[0]
    t = igso3_time(_eps_per_row(eps, n, R.device))
    mu = _mean(mean, n, R.device)
    R, mu = broadcast_rows(R, mu, "R", "mean")
    return torch.matmul(mu.transpose(-1, -2), R), t


# ---------------------------------------------------------------------------------------------
# IGSO(3)


def igso3_time(eps: ArrayLike) -> torch.Tensor:
    """heatscore's diffusion time t = ε²/2 of IGSO(3)(ε) (FrameDiff / RFdiffusion / DiffDock ε or σ).

    eps : float or array (any shape), finite and > 0. Returns a float64 tensor of its shape.
    """
    eps = _positive(eps, "eps")
    return 0.5 * eps * eps


def igso3_angle_density(omega: ArrayLike, eps: ArrayLike) -> torch.Tensor:
    """Density of the rotation angle ω of IGSO(3)(ε) on [0, π]: f(ω; ε)(1 − cos ω)/π.

    omega : array (...) of angles in [0, π] (within the off-manifold tolerance of its dtype).
    eps : scalar or array broadcast against ``omega``, finite and > 0.
    Returns a float64 tensor of the broadcast shape; it integrates to 1 over [0, π] (and is
    8π(1 − cos ω) k_t(ω), t = ε²/2, exact at every ε and ω). Values below the float64 range
    (e.g. ε = 0.01 beyond ω ≈ 0.4) are 0; :func:`igso3_log_density` stays finite there.
    """
    w = as_float_tensor(omega, "omega")
    check_finite(w, "omega")
    slack = MANIFOLD_ATOL.get(w.dtype, MANIFOLD_ATOL[torch.float32])
    bad = (w < 0) | (w > math.pi + slack)
    if bool(bad.any()):
        raise ValueError(f"omega must be rotation angles in [0, π], found {int(bad.sum())} entries "
                         f"outside (min {float(w.min()):.6g}, max {float(w.max()):.6g})")
    w = w.to(F64).clamp(max=math.pi)
    t = igso3_time(_positive(eps, "eps", device=w.device))
    try:
        torch.broadcast_shapes(w.shape, t.shape)
    except RuntimeError:
        raise ValueError(f"eps must broadcast against omega: found shapes {tuple(t.shape)} and "
                         f"{tuple(w.shape)}") from None
    return torch.exp(so3_angle_log_density(w, t))


def igso3_log_density(R: ArrayLike, eps: ArrayLike,
                      mean: Optional[ArrayLike] = None) -> torch.Tensor:
    """(n,) log f(R; ε, μ): IGSO(3)(ε) centred at μ, density w.r.t. the normalised Haar measure.

    Equals heatscore's ``HeatKernel(SO3()).log_pairs(R, mean, ε²/2) + log 8π²``.

    R : (n, 3, 3) rotations. eps : scalar or (n,), finite and > 0. mean : one rotation (3, 3) or
    (1 | n, 3, 3); None is the identity. Returns float64.
    """
    q, t = _relative(R, eps, mean)
    return so3_log_heat_kernel(rotation_angle(q), t) + LOG_SO3_VOLUME


def igso3_score(R: ArrayLike, eps: ArrayLike, mean: Optional[ArrayLike] = None) -> torch.Tensor:
    """(n, 3) score of IGSO(3)(ε) centred at μ as the body-frame rotation vector FrameDiff expects.

    ω = (d log f/dθ) v/|v|, v = Log(μᵀR) (body frame, |v| = θ the angle): the components of
    grad log f in the frame E_i = R[e_i]× of the metric ½tr(UᵀV), so grad log f = R[ω]× and
    ω = vee(Rᵀ · HeatKernel(SO3()).grad_log_pairs(R, mean, ε²/2)). ω = 0 at R = μ. Space-frame
    vector: R ω; Frobenius-metric vector: ω/2 (module doc). Inputs as :func:`igso3_log_density`.
    """
    q, t = _relative(R, eps, mean)
    v = vector_from_rotation(q)
    theta = torch.linalg.vector_norm(v, dim=-1)
    dlog = so3_dlog_heat_kernel_dtheta(theta.clamp(max=math.pi), t)
    positive = theta > 0
    ratio = torch.where(positive, dlog / torch.where(positive, theta, torch.ones_like(theta)),
                        torch.zeros_like(theta))
    return ratio[:, None] * v


def igso3_sample(n: int, eps: ArrayLike, rng: Rng = None,
                 mean: Optional[ArrayLike] = None) -> torch.Tensor:
    """(n, 3, 3) exact draws from IGSO(3)(ε) centred at μ (heatscore's exact heat-kernel sampler).

    n : int >= 1. eps : scalar or (n,), finite and > 0. rng : torch.Generator, int seed or None.
    mean : one rotation (3, 3) or (1 | n, 3, 3); None is the identity. Draws are μ Q with Q the
    Brownian motion at t = ε²/2 from I (its law is conjugation-invariant, so μQ and Qμ agree).
    float64, on ``mean``'s (or ``eps``'s) device.
    """
    n = check_positive_int(n, "n", minimum=1)
    device = None
    for candidate in (mean, eps):
        if isinstance(candidate, torch.Tensor):
            device = candidate.device
            break
    mu = _mean(mean, n, device)
    t = igso3_time(_eps_per_row(eps, n, mu.device))
    identity = torch.eye(3, dtype=F64, device=mu.device).expand(n, 3, 3)
    q = sample_heat_kernel(_SO3, identity, t, rng=rng)
    return torch.matmul(mu, q)


# ---------------------------------------------------------------------------------------------
# GeometricKernels


def geometric_kernels_time(lengthscale: ArrayLike) -> torch.Tensor:
    """heatscore's time t = κ²/2 of GeometricKernels' heat (Matérn ν = ∞) kernel of lengthscale κ.

    lengthscale : float or array, finite and > 0. Returns a float64 tensor of its shape.
    """
    kappa = _positive(lengthscale, "lengthscale")
    return 0.5 * kappa * kappa


def geometric_kernels_lengthscale(t: ArrayLike) -> torch.Tensor:
    """GeometricKernels' lengthscale κ = √(2t) of heatscore's time t (float or array, > 0)."""
    return torch.sqrt(2.0 * _positive(t, "t"))


def _gk_ratio(manifold, lengthscale, normalize):
    """GeometricKernels' kernel / heatscore's k_t at t = κ²/2 on ``manifold`` (a float)."""
    kappa = _positive(lengthscale, "lengthscale")
    if kappa.ndim:
        raise ValueError(f"lengthscale must be a scalar, found shape {tuple(kappa.shape)}")
    volume = getattr(manifold, "volume", None)
    if volume is None or not hasattr(manifold, "random_uniform"):
        raise TypeError(f"manifold must be a heatscore manifold, found {type(manifold).__name__}")
    if not math.isfinite(float(volume)):
        raise ValueError(f"manifold must be compact (finite volume) for the GeometricKernels "
                         f"conversion, found {manifold!r} with volume {volume}: GeometricKernels' "
                         "Euclidean heat kernel is an unnormalised RBF, heatscore's R^d is "
                         "Ornstein–Uhlenbeck")
    t = float(geometric_kernels_time(kappa))
    x = manifold.random_uniform(2, rng=0)
    diag = HeatKernel(manifold).log_pairs(x, x, t)
    spread = float((diag[0] - diag[1]).abs())
    if spread > _HOMOGENEITY_RTOL:
        raise ValueError(f"manifold must be homogeneous (k_t(x, x) the same at every x) for the "
                         f"GeometricKernels conversion, found {manifold!r} with log k_t(x, x) "
                         f"differing by {spread:.2e} between two points: GeometricKernels' mesh "
                         "eigenvectors are not heatscore's M-orthonormal ones")
    return float(torch.exp(-diag[0])) if normalize else float(volume)


def from_geometric_kernels(values: ArrayLike, manifold: Manifold, lengthscale: float,
                           normalize: bool = True) -> torch.Tensor:
    """heatscore's k_t (density w.r.t. volume, t = κ²/2) from GeometricKernels' heat-kernel values.

    values : array of ``MaternGeometricKernel(space, normalize=normalize)`` values with ν = ∞ and
        lengthscale κ (``Hypersphere(d)`` ↔ ``Sphere(d)``, ``SpecialOrthogonal(3)`` ↔ ``SO3()``,
        ``Circle`` / products of circles ↔ ``Torus(d)``).
    manifold : the heatscore manifold (compact and homogeneous; ValueError otherwise).
    lengthscale : κ > 0. normalize : GeometricKernels' flag (its default True).
    normalize=False: values / vol(M); normalize=True: values · k_t(x, x) (the exact diagonal).
    Returns a float64 tensor shaped like ``values``.
    """
    vals = as_float_tensor(values, "values", dtype=F64)
    check_finite(vals, "values")
    return vals / _gk_ratio(manifold, lengthscale, bool(normalize))


def to_geometric_kernels(values: ArrayLike, manifold: Manifold, lengthscale: float,
                         normalize: bool = True) -> torch.Tensor:
    """GeometricKernels' heat-kernel values from heatscore's k_t at t = κ²/2 (inverse of
    :func:`from_geometric_kernels`, same arguments): vol(M)·k, or k/k_t(x, x) if ``normalize``."""
    vals = as_float_tensor(values, "values", dtype=F64)
    check_finite(vals, "values")
    return vals * _gk_ratio(manifold, lengthscale, bool(normalize))
