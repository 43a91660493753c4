"""Exact samplers of the geodesic angle of Brownian motion on SO(3) and S² (DESIGN conventions).

SO(3) (volume 8π², metric ½tr(UᵀV)): the rotation angle θ of R_t given R_0 = I has density
p_t(θ) = 8π (1 − cos θ) k_t(θ) = 16π sin²(θ/2) k_t(θ) on [0, π]: the geodesic sphere of radius θ
has area 8π (1 − cos θ) (∫_0^π 8π (1 − cos θ) dθ = 8π²; the Haar angle density is (1 − cos θ)/π).
With the Poisson-summed kernel,
    p_t(θ) = 8π e^{t/4} (4πt)^{−3/2} sin(θ/2) f(θ),  f(θ) = Σ_n (−1)^n (θ − 2πn) e^{−(θ−2πn)²/4t} >= 0.

Sampler (exact rejection; t per point): for t <= ``HAAR_PROPOSAL_MIN_T`` propose from
    q(θ) ∝ (θ²/2) e^{−θ²/4t} + (2π − θ) e^{−(2π−θ)²/4t}  on [0, π],
a mixture of the flat Maxwell law (θ = √(2t)|N(0, I₃)|, mass √π t^{3/2}) and the tail of a
Rayleigh law reflected at 2π (θ = 2π − (π² + 4t·Exp(1))^{1/2}, mass 2t e^{−π²/4t}), draws
outside [0, π] rejected, and accept with probability sin(θ/2) f(θ) / q(θ) <= 1: sin(θ/2) <= θ/2
and sin(θ/2) <= 1 bound the images n = 0, 1, and the other images pair into non-positive sums
because r e^{−r²/4t} decreases for r >= 2π when t <= 2π². As t → 0 the acceptance rate tends to 1
and θ²/4t ~ Gamma(3/2) (the flat limit) exactly in the limit. For larger t the proposal is the
Haar angle (from a uniform unit quaternion), accepted with probability k_t(θ)/k_t(0) <= 1.
Expected proposals per draw: at most about 1/0.6 at the switch, 1 in both limits.

S²: Brownian motion on S² started at x_0 is R_t x_0 with R_t Brownian motion on SO(3) (the
Casimir of SO(3) acting on functions of R x_0 is Δ_{S²}; both spectra are l(l+1)). If R_t rotates
by S about a uniform axis a, the angle θ between x_0 and R_t x_0 obeys
sin²(θ/2) = (1 − (a·x_0)²) sin²(S/2) with a·x_0 uniform on [−1, 1]. This is the Mehler–Dirichlet
formula read as a mixture: p_t(θ) = 2π sin θ k_t(θ) = ∫ p^{SO(3)}_t(s) K(θ | s) ds with
K(θ | s) = sin θ (cos θ − cos s)^{−1/2} / (2√2 sin(s/2)) on [0, s]. So θ is exact as well.
"""

import math

import torch

from heatscore._validation import as_generator, check_positive_int, check_time, rand, randn
from heatscore.manifolds._closed_forms import so3_log_heat_kernel, sphere_log_heat_kernel

__all__ = ["sample_so3_angle", "sample_sphere_angle", "so3_angle_log_density", "sphere_angle_log_density"]

PI = math.pi
TWO_PI = 2.0 * math.pi

#: Above this t the SO(3) proposal is the Haar angle (acceptance 1/(8π² k_t(I)) ~ 0.62 here);
#: below it the flat Maxwell + reflected-tail mixture (acceptance ~ 0.62 here, → 1 as t → 0).
#: The mixture's bound needs t <= 2π².
HAAR_PROPOSAL_MIN_T = 1.35
#: Rounds of rejection before giving up (each round accepts >= ~60 % of what is left).
_MAX_ROUNDS = 200


def so3_angle_log_density(theta, t):
    """log p_t(θ) = log(16π sin²(θ/2)) + log k_t(θ): density of the SO(3) rotation angle on [0, π]."""
    log_k = so3_log_heat_kernel(theta, t)
    theta = torch.as_tensor(theta, dtype=log_k.dtype, device=log_k.device)
    return math.log(16.0 * PI) + 2.0 * torch.log(torch.sin(0.5 * theta)) + log_k


def sphere_angle_log_density(theta, t):
    """log p_t(θ) = log(2π sin θ) + log k_t(θ): density of the S² geodesic angle on [0, π]."""
    log_k = sphere_log_heat_kernel(theta, t)
    theta = torch.as_tensor(theta, dtype=log_k.dtype, device=log_k.device)
    return math.log(TWO_PI) + torch.log(torch.sin(theta)) + log_k


def _times(t, n):
    """Per-draw times (n,) float64 from a scalar or an (n,) array."""
    t = check_time(t, "t", device=t.device if isinstance(t, torch.Tensor) else None)
    if t.ndim == 0:
        return t.expand(n)
    if t.shape != (n,):
        raise ValueError(f"t must be a scalar or have shape (n,) = ({n},), found shape {tuple(t.shape)}")
    return t


def _local_proposal(t, normals, u_tail, exp1, u_accept):
    """Mixture proposal (Maxwell + reflected Rayleigh tail) and its acceptance test (t <= 2π²)."""
    log_w_tail_over_flat = math.log(2.0) - PI * PI / (4.0 * t) - 0.5 * math.log(PI) - 0.5 * torch.log(t)
    tail = u_tail < torch.sigmoid(log_w_tail_over_flat)
    theta = torch.where(tail, TWO_PI - torch.sqrt(PI * PI + 4.0 * t * exp1),
                        torch.sqrt(2.0 * t) * normals[:, :3].norm(dim=1))
    valid = (theta >= 0.0) & (theta <= PI)
    th = theta.clamp(0.0, PI)
    # f(θ) e^{θ²/4t} = θ + images, images = Σ_{n≠0} (−1)^n (θ − 2πn) e^{−πn(πn−θ)/t};
    # q(θ) e^{θ²/4t} = θ²/2 + (2π − θ) e^{−π(π−θ)/t}; ratio = sin(θ/2) f / q.
    images = torch.zeros_like(th)
    for n in (-3, -2, -1, 1, 2, 3):
        sign = -1.0 if n % 2 else 1.0
        images = images + sign * (th - TWO_PI * n) * torch.exp(-PI * n * (PI * n - th) / t)
    half = 0.5 * th
    half_safe = torch.where(half > 0, half, torch.ones_like(half))
    sinc_half = torch.where(half > 0, torch.sin(half_safe) / half_safe, torch.ones_like(half))
    numerator = sinc_half * (0.5 * th * th + half * images)
    denominator = 0.5 * th * th + (TWO_PI - th) * torch.exp(-PI * (PI - th) / t)
    ratio = torch.where(denominator > 0, numerator / denominator.clamp_min(1e-300), torch.ones_like(th))
    return theta, valid & (u_accept < ratio)


def _haar_proposal(t, normals, u_accept):
    """Haar rotation angle (uniform unit quaternion), accepted with probability k_t(θ)/k_t(0)."""
    theta = 2.0 * torch.atan2(normals[:, 1:].norm(dim=1), normals[:, 0].abs())
    log_k, log_k_identity = so3_log_heat_kernel(torch.stack([theta, torch.zeros_like(theta)]), t)
    return theta, u_accept < torch.exp(log_k - log_k_identity)


def sample_so3_angle(t, n, rng=None):
    """Draw the rotation angle θ (n,) of SO(3) Brownian motion at time t (scalar or (n,)) from I.

    Density 8π (1 − cos θ) k_t(θ) on [0, π]; exact rejection sampler (module doc). float64, on
    t's device. ``rng``: torch.Generator, int seed or None.
    """
    n = check_positive_int(n, "n", minimum=0)
    times = _times(t, n)
    device = times.device
    gen = as_generator(rng, device=device)
    out = torch.empty(n, dtype=torch.float64, device=device)
    pending = torch.arange(n, device=device)
    for _ in range(_MAX_ROUNDS):
        if pending.numel() == 0:
            return out
        m = pending.numel()
        tt = times[pending]
        normals = randn(gen, (m, 4), device=device)
        u_tail, u_accept = rand(gen, (2, m), device=device)
        exp1 = -torch.log1p(-rand(gen, (m,), device=device))
        haar = tt > HAAR_PROPOSAL_MIN_T
        theta = torch.empty(m, dtype=torch.float64, device=device)
        accept = torch.zeros(m, dtype=torch.bool, device=device)
        if bool((~haar).any()):
            loc = ~haar
            theta[loc], accept[loc] = _local_proposal(tt[loc], normals[loc], u_tail[loc], exp1[loc], u_accept[loc])
        if bool(haar.any()):
            theta[haar], accept[haar] = _haar_proposal(tt[haar], normals[haar], u_accept[haar])
        out[pending[accept]] = theta[accept]
        pending = pending[~accept]
    raise RuntimeError(f"sample_so3_angle: {pending.numel()} draws still rejected after {_MAX_ROUNDS} rounds")


def sample_sphere_angle(t, n, rng=None):
    """Draw the geodesic angle θ (n,) of S² Brownian motion at time t (scalar or (n,)) from x_0.

    Density 2π sin θ k_t(θ) on [0, π]: θ = 2 arcsin((1 − V²)^{1/2} sin(S/2)) with S the SO(3)
    angle at the same t and V ~ U(0, 1) (module doc). float64, on t's device.
    """
    gen = as_generator(rng, device=t.device if isinstance(t, torch.Tensor) else None)
    so3_angle = sample_so3_angle(t, n, rng=gen)
    v = rand(gen, (so3_angle.shape[0],), device=so3_angle.device)
    return 2.0 * torch.asin(torch.sqrt(1.0 - v * v) * torch.sin(0.5 * so3_angle))
