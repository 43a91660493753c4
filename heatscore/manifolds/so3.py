"""The rotation group SO(3) with the bi-invariant metric g(U, V) = ½ tr(UᵀV).

Points are rotation matrices ``(n, 3, 3)``. Tangent vectors at R are ambient 3×3 matrices
R[ω]× (``[ω]×`` the cross-product matrix, ``[ω]× v = ω × v``) with |R[ω]×|_g = |ω|, so the
geodesic distance is the rotation angle θ(RᵀS) ∈ [0, π] and the volume is 8π². The frame
E_i = R[e_i]× is g-orthonormal; the Riemannian gradient is 2 × the Frobenius-projected Euclidean
gradient.

Numerics: exp is Rodrigues' formula with Taylor series near angle 0; log goes through the unit
quaternion of RᵀS by Shepperd's method (largest of the four squared components, so the axis stays
exact near angle π) and 2·atan2(|v|, w); the distance is atan2(|skew part|, (tr − 1)/2), accurate
near 0 and near π (no arccos).

Eigenfunctions are real Wigner-D matrix entries, computed batched and exactly real from the 3×3
matrix by the Ivanic–Ruedenberg recursion (J. Phys. Chem. 100, 6342 (1996); erratum 102, 9099
(1998)): no Euler angles, no singularities.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, List, Optional

import numpy as np
import torch

from heatscore._typing import ArrayLike, Device, Quadrature, Rng, ValuesAndGrad
from heatscore._validation import as_generator, check_positive_int, randn
from heatscore.manifolds._base import Eigenpairs, IndexEmbedding, Manifold, rows_per_chunk

if TYPE_CHECKING:
    from geomstats.geometry.manifold import Manifold as GeomstatsManifold

__all__ = ["SO3", "SO3Eigenpairs", "wigner_d_real", "hat", "vee_skew", "rotation_from_vector",
           "vector_from_rotation", "rotation_angle", "quaternion_from_rotation", "rotation_from_quaternion"]

#: Below this rotation angle exp uses the Taylor series of sin θ/θ, cos θ and (1 − cos θ)/θ².
_EXP_SERIES_ANGLE = 1e-3
#: Below this |v| (the quaternion's vector part, sin(θ/2)) log uses the series of atan2(|v|, w)/|v|.
_LOG_SERIES_SIN_HALF = 1e-4


# --- rotation-vector helpers ------------------------------------------------------------------
def hat(omega: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices [ω]×."""
    x, y, z = omega.unbind(-1)
    zero = torch.zeros_like(x)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(omega.shape + (3,))


def vee_skew(b: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3): the vector ω of the skew part, skew(B) = (B − Bᵀ)/2 = [ω]×."""
    return 0.5 * torch.stack([b[..., 2, 1] - b[..., 1, 2],
                              b[..., 0, 2] - b[..., 2, 0],
                              b[..., 1, 0] - b[..., 0, 1]], dim=-1)


def _skew(b):
    return 0.5 * (b - b.transpose(-1, -2))


def rotation_from_vector(omega: torch.Tensor) -> torch.Tensor:
    """Rodrigues, (..., 3) -> (..., 3, 3), θ = |ω|:

    Exp([ω]×) = cos θ I + (sin θ/θ)[ω]× + ((1 − cos θ)/θ²) ωωᵀ (Taylor series for small θ).
    """
    theta2 = (omega * omega).sum(-1)
    small = theta2 < _EXP_SERIES_ANGLE ** 2
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    cos = torch.where(small, 1 - theta2 / 2 + theta2 ** 2 / 24, torch.cos(theta))
    sinc = torch.where(small, 1 - theta2 / 6 + theta2 ** 2 / 120, torch.sin(theta) / theta)
    half = torch.sin(theta / 2) / theta
    versine = torch.where(small, 0.5 - theta2 / 24 + theta2 ** 2 / 720, 2 * half * half)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device)
    return (cos[..., None, None] * eye + sinc[..., None, None] * hat(omega)
            + versine[..., None, None] * omega[..., :, None] * omega[..., None, :])


def quaternion_from_rotation(s: torch.Tensor) -> torch.Tensor:
    """Unit quaternion (w, x, y, z), w ≥ 0, of rotation matrices (..., 3, 3) by Shepperd's method.

    The symmetric 4×4 matrix K = 4 q qᵀ is linear in S; q is read off the row of K with the
    largest diagonal entry (≥ 1), so no component is divided by a small number.
    """
    s00, s01, s02 = s[..., 0, 0], s[..., 0, 1], s[..., 0, 2]
    s10, s11, s12 = s[..., 1, 0], s[..., 1, 1], s[..., 1, 2]
    s20, s21, s22 = s[..., 2, 0], s[..., 2, 1], s[..., 2, 2]
    tr = s00 + s11 + s22
    k = torch.stack([
        1 + tr, s21 - s12, s02 - s20, s10 - s01,
        s21 - s12, 1 + 2 * s00 - tr, s01 + s10, s02 + s20,
        s02 - s20, s01 + s10, 1 + 2 * s11 - tr, s12 + s21,
        s10 - s01, s02 + s20, s12 + s21, 1 + 2 * s22 - tr], dim=-1).reshape(s.shape[:-2] + (4, 4))
    largest, best = torch.diagonal(k, dim1=-2, dim2=-1).max(dim=-1, keepdim=True)
    pick = best == torch.arange(4, device=s.device)                        # one-hot (..., 4)
    row = (k * pick[..., None].to(s.dtype)).sum(-2)
    q = row / (2 * torch.sqrt(largest))
    return torch.where(q[..., :1] < 0, -q, q)


def rotation_from_quaternion(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) unit quaternions (w, x, y, z) -> (..., 3, 3) rotation matrices."""
    w, x, y, z = q.unbind(-1)
    r = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], dim=-1)
    return r.reshape(q.shape[:-1] + (3, 3))


def vector_from_rotation(s: torch.Tensor) -> torch.Tensor:
    """Principal rotation vector ω, |ω| = θ ∈ [0, π], with Exp([ω]×) = S. (..., 3, 3) -> (..., 3).

    ω = 2 atan2(|v|, w) v/|v| from the quaternion (w ≥ 0, v); at θ = π either of ±π·axis is returned.
    """
    q = quaternion_from_rotation(s)
    w, v = q[..., 0], q[..., 1:]
    v2 = (v * v).sum(-1)
    small = v2 < _LOG_SERIES_SIN_HALF ** 2
    vn = torch.sqrt(torch.where(small, torch.ones_like(v2), v2))
    w_safe = torch.where(small, w, torch.ones_like(w))  # w > 0.99 where small
    r2 = v2 / (w_safe * w_safe)
    factor = torch.where(small, 2 / w_safe * (1 - r2 / 3 + r2 * r2 / 5), 2 * torch.atan2(vn, w) / vn)
    return factor[..., None] * v


def rotation_angle(s: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (...,) rotation angle θ ∈ [0, π] = atan2(|vee(skew S)|, (tr S − 1)/2)."""
    sin = torch.linalg.vector_norm(vee_skew(s), dim=-1)
    cos = 0.5 * (torch.diagonal(s, dim1=-2, dim2=-1).sum(-1) - 1)
    return torch.atan2(sin, cos)


def _det3(r):
    return (r[..., 0, 0] * (r[..., 1, 1] * r[..., 2, 2] - r[..., 1, 2] * r[..., 2, 1])
            - r[..., 0, 1] * (r[..., 1, 0] * r[..., 2, 2] - r[..., 1, 2] * r[..., 2, 0])
            + r[..., 0, 2] * (r[..., 1, 0] * r[..., 2, 1] - r[..., 1, 1] * r[..., 2, 0]))


def _frame(r):
    """(n, 3, 3) -> (n, 3, 3, 3): the g-orthonormal frame E_i = R[e_i]×, index i second."""
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    return torch.matmul(r[:, None], hat(eye))


def _pair_forms():
    """(4, 9, 9): bilinear forms on flattened (R, S) giving tr(RᵀS) and vee(skew(RᵀS)).

    (RᵀS)_jk = Σ_i R_ij S_ik, with R_ij at flat index 3i + j; vee_c = ½((RᵀS)_jk − (RᵀS)_kj)
    for (c, j, k) = (0, 2, 1), (1, 0, 2), (2, 1, 0).
    """
    forms = np.zeros((4, 9, 9))
    forms[0] = np.eye(9)
    for i in range(3):
        for c, (j, k) in enumerate([(2, 1), (0, 2), (1, 0)], start=1):
            forms[c, 3 * i + j, 3 * i + k] += 0.5
            forms[c, 3 * i + k, 3 * i + j] -= 0.5
    return forms


_PAIR_FORMS = _pair_forms()


# --- Wigner-D by the Ivanic–Ruedenberg recursion ------------------------------------------------
#: Real spherical harmonics of degree 1 in the order m = −1, 0, 1 are proportional to (y, z, x).
_L1_ORDER = [1, 2, 0]


@functools.lru_cache(maxsize=None)
def _recursion_coefficients(l):
    """Constant parts of the recursion step l − 1 -> l (l ≥ 2), as numpy arrays.

    Returns ``(T, s)``: ``T`` of shape (2l+1, 3, 2l−1) holds u·U + v·V + w·W of Ivanic–Ruedenberg
    as weights on the rows P_i[a, :] (i = −1, 0, 1 -> 0, 1, 2; a = −(l−1)..l−1), and ``s`` (2l+1,)
    the column normalisation 1/√((l+n)(l−n)) for |n| < l, 1/√(2l(2l−1)) for |n| = l.
    """
    t = np.zeros((2 * l + 1, 3, 2 * l - 1))

    def add(m, i, a, value):
        t[m + l, i + 1, a + l - 1] += value

    for m in range(-l, l + 1):
        am, d0 = abs(m), float(m == 0)
        if am < l:  # U term
            add(m, 0, m, math.sqrt((l + m) * (l - m)))
        v = 0.5 * math.sqrt((1 + d0) * (l + am - 1) * (l + am)) * (1 - 2 * d0)
        if m == 0:
            add(m, 1, 1, v)
            add(m, -1, -1, v)
        elif m > 0:
            d1 = float(m == 1)
            add(m, 1, m - 1, v * math.sqrt(1 + d1))
            add(m, -1, 1 - m, -v * (1 - d1))
        else:
            d1 = float(m == -1)
            add(m, 1, m + 1, v * (1 - d1))
            add(m, -1, -m - 1, v * math.sqrt(1 + d1))
        if m != 0 and am <= l - 2:  # W term (its weight vanishes at m = 0 and |m| ≥ l − 1)
            w = -0.5 * math.sqrt((l - am - 1) * (l - am))
            if m > 0:
                add(m, 1, m + 1, w)
                add(m, -1, -m - 1, w)
            else:
                add(m, 1, m - 1, w)
                add(m, -1, 1 - m, -w)
    n = np.arange(-l, l + 1)
    den = np.where(np.abs(n) < l, (l + n) * (l - n), 2 * l * (2 * l - 1)).astype(float)
    return t, 1.0 / np.sqrt(den)


def _recursion_step(d1, prev, l):
    """One Ivanic–Ruedenberg step: D^l from D^1 (n, 3, 3) and D^{l−1} (n, 2l−1, 2l−1), l ≥ 2.

    D^l[m, n] = s[n] Σ_{i,a} T[m, i, a] P_i[a, n] with P_i[a, n] = D^1[i, 0] D^{l−1}[a, n] for
    |n| < l and, at the end columns, P_i[a, ±l] = D^1[i, 1] D^{l−1}[a, ±(l−1)] ∓ D^1[i, −1]
    D^{l−1}[a, ∓(l−1)] (indices centred). The step is bilinear in (d1, prev).
    """
    n = d1.shape[0]
    t_np, s_np = _recursion_coefficients(l)
    t = torch.as_tensor(t_np, dtype=d1.dtype, device=d1.device)
    s = torch.as_tensor(s_np, dtype=d1.dtype, device=d1.device)
    size, inner = 2 * l + 1, 2 * l - 1
    weights = (d1[:, :, 1] @ t.permute(1, 0, 2).reshape(3, -1)).reshape(n, size, inner)
    middle = torch.bmm(weights, prev.expand(n, inner, inner)).mul_(s[1:-1])
    r_plus, r_minus = d1[:, :, 2, None], d1[:, :, 0, None]
    first, last = prev[:, None, :, 0], prev[:, None, :, -1]
    t_flat = t.reshape(size, -1).T
    col_minus = ((r_plus * first + r_minus * last).reshape(n, -1) @ t_flat)[:, :, None] * s[0]
    col_plus = ((r_plus * last - r_minus * first).reshape(n, -1) @ t_flat)[:, :, None] * s[-1]
    return torch.cat([col_minus, middle, col_plus], dim=2)


def _degree_one(r):
    """D^1(R) = P R Pᵀ, P: (x, y, z) -> (y, z, x); works on any (..., 3, 3) (linear in R)."""
    return r[..., _L1_ORDER, :][..., :, _L1_ORDER]


def wigner_d_real(r: torch.Tensor, n_levels: int) -> List[torch.Tensor]:
    """Real Wigner-D matrices [D^0(R), ..., D^{n_levels−1}(R)], each (n, 2l+1, 2l+1).

    D^l(R) is orthogonal and Y_l(R x) = D^l(R) Y_l(x) for the real spherical harmonics Y_l of
    degree l ordered m = −l..l (sphericart's convention; Y_1 ∝ (y, z, x)). So D^1 = P R Pᵀ with
    the permutation P: (x, y, z) -> (y, z, x), and D^l(R1 R2) = D^l(R1) D^l(R2).
    """
    d1 = _degree_one(r)
    blocks = [torch.ones((r.shape[0], 1, 1), dtype=r.dtype, device=r.device), d1][:n_levels]
    for l in range(2, n_levels):
        blocks.append(_recursion_step(d1, blocks[-1], l))
    return blocks


@functools.lru_cache(maxsize=None)
def _generators(n_levels):
    """Lie-algebra generators J_i^l = d/ds D^l(exp(s[e_i]×)) at s = 0, float64 on the CPU.

    The recursion step is bilinear, so at R = I (where D^l = I) the product rule gives
    J^l = step(J^1, I) + step(I, J^{l−1}), with J^1_i = P [e_i]× Pᵀ.
    Returns a tuple over l of (2l+1, 3(2l+1)) matrices [J_0^l | J_1^l | J_2^l] (antisymmetric blocks).
    """
    eye3 = torch.eye(3, dtype=torch.float64)
    j1 = _degree_one(hat(eye3))                                   # (3, 3, 3): axis i first
    per_level = [torch.zeros((3, 1, 1), dtype=torch.float64), j1][:n_levels]
    for l in range(2, n_levels):
        identity = torch.eye(2 * l - 1, dtype=torch.float64)[None]
        per_level.append(_recursion_step(j1, identity, l)
                         + _recursion_step(eye3.expand(3, 3, 3), per_level[-1], l))
    return tuple(torch.cat(list(j), dim=1) for j in per_level)


class SO3Eigenpairs(Eigenpairs):
    """Laplace–Beltrami eigenpairs of SO(3): real Wigner-D entries, λ = l(l+1), multiplicity (2l+1)².

    φ^l_{mn}(R) = √((2l+1)/(8π²)) D^l_{mn}(R), l = 0..n_levels−1, m, n = −l..l, with D^l the real
    representation of :func:`wigner_d_real` (Y_l(Rx) = D^l(R) Y_l(x), sphericart's real spherical
    harmonics). Orthonormal in L²(dvol), vol = 8π² (Schur orthogonality: ∫ D^l_{mn} D^l'_{m'n'} dR
    = δ δ δ/(2l+1) for the normalised Haar measure). Eigenfunction index:
    k = l(4l² − 1)/3 + (m + l)(2l + 1) + (n + l), i.e. ordered by l, then row m, then column n.

    Gradient: X_i φ(R) = d/ds φ(R exp(s[e_i]×)) = (D^l(R) J_i^l)_{mn} √((2l+1)/8π²), and
    grad φ = Σ_i (X_i φ) R[e_i]× (ambient, tangent at R).
    """

    def __init__(self, manifold: SO3, n_levels: int) -> None:
        degree = torch.arange(n_levels)
        multiplicities = (2 * degree + 1) ** 2
        levels = torch.repeat_interleave(degree, multiplicities)
        eigenvalues = (levels * (levels + 1)).to(torch.float64)
        super().__init__(manifold, eigenvalues, levels, multiplicities)
        self._scale = torch.sqrt((2 * levels + 1).to(torch.float64) / manifold.volume)

    def _blocks(self, r):
        return wigner_d_real(r, self.n_levels)

    def _values_from(self, r, blocks):
        flat = torch.cat([b.reshape(r.shape[0], -1) for b in blocks], dim=1)
        return flat.mul_(self._scale.to(dtype=r.dtype, device=r.device))

    def _grad_from(self, r, blocks):
        n = r.shape[0]
        parts = []
        for l, (block, gens) in enumerate(zip(blocks, _generators(self.n_levels))):
            size = 2 * l + 1
            xi = block @ gens.to(dtype=r.dtype, device=r.device)                  # (n, m, 3·n')
            parts.append(xi.reshape(n, size, 3, size).transpose(2, 3).reshape(n, size * size, 3))
        components = torch.cat(parts, dim=1) * self._scale.to(dtype=r.dtype, device=r.device)[:, None]
        return torch.matmul(components, _frame(r).reshape(n, 3, 9)).reshape(n, -1, 3, 3)

    def _values(self, x):
        return self._values_from(x, self._blocks(x))

    def _grad(self, x):
        return self._grad_from(x, self._blocks(x))

    def values_and_grad(self, x: ArrayLike) -> ValuesAndGrad:
        x = self.manifold.validate(x, "x")
        blocks = self._blocks(x)
        return self._values_from(x, blocks), self._grad_from(x, blocks)


class _QuaternionEmbedding(IndexEmbedding):
    """Unit quaternions, both signs for the data: chord c = 2 sin(θ/4) to the nearer sign."""

    copies = 2
    extent = 1.0

    def data(self, Y):
        q = quaternion_from_rotation(Y.detach().cpu()).numpy()
        return np.concatenate([q, -q])

    def query(self, X, tau):
        return quaternion_from_rotation(X.detach().cpu()).numpy()

    def to_chord(self, r, tau):
        return 2 * np.sin(np.minimum(r, math.pi) / 4)

    def from_chord(self, c, tau):
        return 4 * np.arcsin(np.minimum(c / 2, 1.0))

    def chord_bounds(self, tau):
        """2 sin(θ/4) between (√2/π)θ and θ/2 on [0, π]."""
        return math.sqrt(2) / math.pi, 0.5


def _rz(a):
    """(n, 3, 3) rotations about z by the angles a (numpy)."""
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _ry(b):
    """(n, 3, 3) rotations about y by the angles b (numpy)."""
    c, s = np.cos(b), np.sin(b)
    o, z = np.ones_like(b), np.zeros_like(b)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


class SO3(Manifold):
    """SO(3) with g(U, V) = ½ tr(UᵀV): dist = rotation angle, volume 8π², dim 3.

    Points ``(n, 3, 3)``; tangent vectors at R are ambient R[ω]× ``(n, 3, 3)``.
    ``proj(R, A) = R skew(RᵀA)``; ``exp(R, V) = R Exp(RᵀV)`` (the skew part of RᵀV is used);
    ``log(R, S) = R Log(RᵀS)`` with the principal logarithm (angle ≤ π).
    A point is accepted when max(‖RᵀR − I‖_F, |det R − 1|) ≤ 1e-6 (float32: 1e-4).
    """

    dim = 3
    point_shape = (3, 3)
    ambient_shape = (3, 3)
    volume = 8 * math.pi ** 2
    _deviation_name = "of ‖RᵀR − I‖_F and |det R − 1|"

    def __repr__(self) -> str:
        return "SO3()"

    def _key(self):
        return ()

    def _spec(self):
        return {"kind": "SO3"}, {}

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        return cls()

    cli_name = "so3"
    plot_view = "so3"

    def _column_names(self):
        return tuple(f"r{i}{j}" for i in range(1, 4) for j in range(1, 4))

    def _off_manifold(self, x):
        gram = torch.matmul(x.transpose(-1, -2), x) - torch.eye(3, dtype=x.dtype, device=x.device)
        orthogonality = torch.linalg.matrix_norm(gram)
        return torch.maximum(orthogonality, (_det3(x) - 1).abs())

    def _proj(self, x, v):
        return torch.matmul(x, _skew(torch.matmul(x.transpose(-1, -2), v)))

    def _inner(self, x, u, v):
        return 0.5 * (u * v).reshape(u.shape[0], -1).sum(dim=1)

    def _exp(self, x, v):
        omega = vee_skew(torch.matmul(x.transpose(-1, -2), v))
        return torch.matmul(x, rotation_from_vector(omega))

    def _log(self, x, y):
        omega = vector_from_rotation(torch.matmul(x.transpose(-1, -2), y))
        return torch.matmul(x, hat(omega))

    def _dist(self, x, y):
        return rotation_angle(torch.matmul(x.transpose(-1, -2), y))

    def pairwise_dist(self, x: ArrayLike, y: Optional[ArrayLike] = None,
                      chunk_size: Optional[int] = None) -> torch.Tensor:
        """(n, m) rotation angles between every row of ``x`` and every row of ``y``.

        tr(RᵀS) and vee(skew(RᵀS)) are bilinear in (R, S): four (n, 9) @ (9, m) products per chunk.
        """
        x = self.validate(x, "x")
        y = x if y is None else self.validate(y, "y").to(x.dtype)
        xf, yf = x.reshape(-1, 9), y.reshape(-1, 9)
        forms = torch.as_tensor(_PAIR_FORMS, dtype=x.dtype, device=x.device)
        left = torch.einsum("na,cab->cnb", xf, forms)                      # (4, n, 9)
        out = torch.empty((x.shape[0], y.shape[0]), dtype=x.dtype, device=x.device)
        step = chunk_size or rows_per_chunk(y.shape[0], entries_per_pair=8)
        for start in range(0, x.shape[0], step):
            prods = left[:, start:start + step] @ yf.T                       # (4, k, m)
            sin = torch.linalg.vector_norm(prods[1:], dim=0)
            out[start:start + step] = torch.atan2(sin, 0.5 * (prods[0] - 1))
        return out

    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> torch.Tensor:
        """``n`` Haar-distributed rotations: normalised 4-D Gaussians are uniform unit quaternions."""
        n = self._check_n(n)
        gen = as_generator(rng, device)
        q = randn(gen, (n, 4), dtype=dtype, device=device)
        q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True)
        return rotation_from_quaternion(q)

    def _random_tangent_normal(self, x, gen):
        omega = randn(gen, (x.shape[0], 3), dtype=x.dtype, device=x.device)
        return torch.matmul(x, hat(omega))

    def eigenpairs(self, n_levels: int) -> SO3Eigenpairs:
        """Real Wigner-D eigenfunctions of levels l = 0..n_levels−1 (see :class:`SO3Eigenpairs`)."""
        return SO3Eigenpairs(self, self._check_levels(n_levels))

    def _tangent_frame(self, x):
        """E_i = R[e_i]× (g-orthonormal: |R[ω]×|_g = |ω|)."""
        return _frame(x)

    def _metric_coordinates(self, x, v):
        """ω = vee(RᵀV) of V = R[ω]×: g(V, W) = ω·ω'."""
        return vee_skew(torch.matmul(x.transpose(-1, -2), v))

    def _index_embedding(self):
        return _QuaternionEmbedding()

    def _sample_heat_kernel(self, x0, t, gen):
        from heatscore.manifolds._radial_sampling import sample_so3_angle

        return self._exp_random_direction(x0, sample_so3_angle(t, x0.shape[0], gen), gen)

    _default_levels = 5

    def _product_rule(self, n_levels):
        """Wigner-D products of degrees ≤ L − 1 have degree ≤ 2(L − 1): 2L − 1 levels; the Euler
        rule with 2L nodes is exact to degree 4L − 1."""
        return 2 * n_levels - 1, 2 * n_levels

    def quadrature(self, n: int) -> Quadrature:
        """ZYZ Euler angles: trapezoid in α, γ (2n nodes each) × Gauss–Legendre in cos β (n nodes),
        dvol = sin β dα dβ dγ (total 8π²): exact for Wigner-D entries of degree ≤ 2n − 1."""
        n = check_positive_int(n, "n")
        z, wz = np.polynomial.legendre.leggauss(n)
        ang = 2 * np.pi * np.arange(2 * n) / (2 * n)
        A, Zb, G = np.meshgrid(ang, z, ang, indexing="ij")
        w = np.broadcast_to(wz[None, :, None], A.shape) * (2 * np.pi / (2 * n)) ** 2
        R = _rz(A.ravel()) @ _ry(np.arccos(Zb).ravel()) @ _rz(G.ravel())
        return torch.as_tensor(R), torch.as_tensor(np.ascontiguousarray(w).ravel())

    def _make_heat_backend(self):
        from heatscore.manifolds._heat_backends import SO3Backend
        return SO3Backend(self)

    def to_geomstats(self) -> GeomstatsManifold:
        """geomstats' ``SpecialOrthogonal(3)`` in matrix form (its bi-invariant metric is ours)."""
        from geomstats.geometry.special_orthogonal import SpecialOrthogonal
        return SpecialOrthogonal(n=3, point_type="matrix")
