"""Operator-informed score matching (OISM): closed-form scores of every forward marginal.

Implicit score matching at diffusion time t scores a vector field s by

    J_t(s) = E_{p_t}[|s|² + 2 div s]  (= E_{p_t}|s − ∇log p_t|² − E_{p_t}|∇log p_t|²),

which needs only averages over p_t, and E_{p_t}[f] = E_data[P_t f] with P_t = e^{tL} the
diffusion's semigroup: no forward simulation. With the data coefficients ĉ_k = E_data[φ_k]
(Lφ_k = −λ_k φ_k), p_t has the density ρ_t = Σ_k e^{−λ_k t} ĉ_k φ_k w.r.t. the reference measure
(dvol on compact manifolds, γ on R^d), so E_{p_t}[f] = Σ_k e^{−λ_k t} ĉ_k ⟨f, φ_k⟩.

Compact manifolds: s = Σ_{n≥1} α_n ∇φ_n (constants dropped). div ∇φ_n = −λ_n φ_n gives

    J_t(α) = αᵀ A_t α − 2 b_tᵀ α,   b_n = λ_n e^{−λ_n t} ĉ_n,   α(t) = A_t⁻¹ b_t,
    A_mn = E_{p_t}⟨∇φ_m, ∇φ_n⟩ = Σ_k e^{−λ_k t} ĉ_k ∫ φ_k ⟨∇φ_m, ∇φ_n⟩ dvol
         = ½ Σ_k e^{−λ_k t} ĉ_k (λ_m + λ_n − λ_k) G_kmn,   G_kmn = ∫ φ_k φ_m φ_n dvol

(Leibniz: 2⟨∇φ_m, ∇φ_n⟩ = Δ(φ_m φ_n) − φ_m Δφ_n − φ_n Δφ_m). ⟨∇φ_m, ∇φ_n⟩ is band-limited
(spherical harmonics and Wigner-D entries of degree ≤ l_m + l_n, Fourier modes k_m ± k_n), so
only the finitely many φ_k below that band enter, and A_t is computed exactly (to round-off) by
a quadrature rule that is exact for φ_k ⟨∇φ_m, ∇φ_n⟩ — the Gaunt / Clebsch–Gordan / Fourier
product sums in one pass, without truncating the density (no quadrature of a truncated,
possibly negative p_t enters with an error: the terms it drops are orthogonal to the integrand).

R^d with the OU generator L = s²Δ − x·∇ (``Euclidean(d, scale=s)``): p_t = h_t γ with
h_t = Σ_k e^{−λ_k t} ĉ_k φ_k (Hermite functions, λ = total degree), and the model is
s_t(x) = −x/s² + Σ_n α_n ∇φ_n(x) (∇log γ plus the span of ∇φ_n, which holds the score of every
Gaussian with covariance σ²I once degree 2 is in). From s²Δφ − x·∇φ = −λφ,

    J_t(α) = αᵀ A_t α − 2 b_tᵀ α + E_{p_t}|x|²/s⁴ − 2d/s²,   b_n = λ_n e^{−λ_n t} ĉ_n / s²,

with A_t = E_{p_t}⟨∇φ_m, ∇φ_n⟩ by tensor Gauss–Hermite (exact), or, for the separable basis
{h_j(x_i/s)}, one (L−1)×(L−1) block per coordinate from the one-dimensional marginals.

Meshes: P1 eigenvectors have face-constant gradients and the Leibniz rule fails, so
A_mn = Σ_f (∫_f p_t)(∇φ_m·∇φ_n)|_f with p_t the (positive) discrete heat flow of the data
(``MeshHeatDensity``): exact for P1 and positive semi-definite; b as above with the discrete
eigenpairs (∫ ∇p_t·∇φ_n = p_tᵀSφ_n = λ_n e^{−λ_n t} ĉ_n).

Ridge. A_t is badly conditioned at small t (the data have no density): α(t) = (A_t + r_t I)⁻¹ b_t
with r_t = ρ · tr(A_t)/K' (relative, so unit-free). ``ridge=None`` chooses ρ per time t from
``RIDGE_GRID`` by the held-out ISM objective J_t on a seeded internal split (noise in the data
coefficients matters at small t and not at large t, so no single ρ suits every t); the model
itself uses all the data. ``ridge=ρ`` fixes it; ``ridge=0.0`` means none (a singular A_t then gets the minimum-norm least-squares solution).
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from typing import Optional, Union

import torch

from heatscore._typing import ArrayLike, Rng, Time
from heatscore._validation import check_positive_int, check_time, normalised_weights
from heatscore.estimators._base import BaseEstimator
from heatscore.estimators._mesh_density import MeshHeatDensity, holdout_split
from heatscore.manifolds import Manifold
from heatscore.manifolds._base import rows_per_chunk
from heatscore.manifolds.euclidean import normalised_hermite
from heatscore.samplers._grid import DEFAULT_MIXING, time_grid

#: Relative ridges searched when ``ridge=None`` (× tr(A_t)/K).
RIDGE_GRID = tuple(10.0 ** e for e in range(-12, 1))
#: Internal split that chooses the ridge: held-out fraction and seed.
HOLDOUT = 0.2
SPLIT_SEED = 0
#: Default end time t_min = T_MIN_FACTOR / λ_1 (scale-aware: the same model in other units).
T_MIN_FACTOR = 1e-3
#: Largest exact rule (float64 entries of its node values and gradients, 256 MB).
MAX_RULE_ENTRIES = 2**25
#: Geometric steps of the probability-flow likelihood and of the reverse sampler.
ODE_STEPS = 200
SAMPLE_STEPS = 200
#: Coefficient vectors α(t) kept per model (most recent times).
CACHE_TIMES = 512


class _Terms:
    """What OISM needs from a manifold: data statistics, A_t, the score basis and its divergence.

    Subclasses set ``lam`` (K',) (eigenvalues of the score basis), ``diffusion`` D (1, or s² on
    R^d) and implement ``statistics``, ``score_coefficients``, ``gram``, ``constant``,
    ``field`` and ``divergence``.
    """

    def linear(self, stats, t):
        """b_n = λ_n e^{−λ_n t} ĉ_n / D."""
        return self.lam * torch.exp(-self.lam * t) * self.score_coefficients(stats) / self.diffusion

    def constant(self, stats, t):
        return 0.0

    def to(self, device):
        """The terms with every tensor on ``device`` (they are built on the CPU)."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


class _QuadratureTerms(_Terms):
    """Manifolds with a product rule (``m._product_rule``: Sphere(2), Torus(d), SO3,
    Euclidean(d) in the total-degree basis, and their products): A_t by an exact rule.

    The product basis holds every φ_k that ⟨∇φ_m, ∇φ_n⟩ can see (module docstring) and the rule
    is exact for φ_k ⟨∇φ_m, ∇φ_n⟩. The nodes carry the score basis' gradients in coordinates
    where the metric is the dot product (SO(3): ω of R[ω]×), so A_t = Σ_q w_q ρ_t(q) G_qᵀ G_q
    is one weighted Gram product per time.

    With a Gaussian reference μ (OU on R^d or on Euclidean factors, drift b = D ∇log μ, linear)
    the model is s = u + Σ α_n ∇φ_n with u = b/D = ∇log μ, and integration by parts against μ
    gives div s = div u + Σ α_n (−(λ_n/D) φ_n − ⟨u, ∇φ_n⟩) (on R^d: (x·∇φ − λφ)/s² − d/s²) and
    J_t's constant E_{p_t}|u|² + 2 div u, with E_{p_t}|b|² = e^{−2t} E_data|b|² + (−div b) D
    (1 − e^{−2t}) (each OU coordinate relaxes as x_t = e^{−t}x_0 + √(D(1 − e^{−2t})) Z).
    """

    def __init__(self, m, n_levels):
        self.m = m
        self.ep = m.eigenpairs(n_levels)
        self.keep = self.ep.eigenvalues > 0
        self.lam = self.ep.eigenvalues[self.keep]
        self.process = m._forward_process()
        self.diffusion = self.process.diffusion
        rule = m._product_rule(n_levels)
        if rule is None:
            raise TypeError(f"OperatorScoreMatching does not support {m!r}")
        n_product, n_nodes = rule
        nodes, weights = m.quadrature(n_nodes)
        self.ep_product = m.eigenpairs(n_product)
        entries = nodes.shape[0] * (len(self.ep_product) + len(self.ep) * math.prod(m.ambient_shape))
        if entries > MAX_RULE_ENTRIES:
            raise ValueError(f"n_levels={n_levels} on {m!r} needs an exact rule of {nodes.shape[0]} "
                             f"nodes for {len(self.ep_product)} product functions ({8 * entries / 2**20:.0f} "
                             "MB): use fewer levels")
        log_ref = m._log_reference(nodes)
        self.euclidean = log_ref is not None                    # the basis is orthonormal in L²(γ)
        if self.euclidean:                                      # ∫ f dx -> ∫ f dγ
            weights = weights * torch.exp(log_ref)
        self.lam_product = self.ep_product.eigenvalues
        self.phi_nodes = self.ep_product._values(nodes)         # (Q, Kp)
        G = self.ep._grad(nodes)[:, self.keep]                  # (Q, K', *ambient)
        Q, K = G.shape[:2]
        at = nodes.unsqueeze(1).expand((Q, K) + tuple(nodes.shape[1:])).reshape((Q * K,) + tuple(nodes.shape[1:]))
        G = m._metric_coordinates(at, G.reshape((Q * K,) + tuple(G.shape[2:]))).reshape(Q, K, -1)
        self.c = G.shape[-1]
        self.G = G.permute(1, 0, 2).reshape(K, -1)              # (K', Q·c)
        self.weights = weights

    def statistics(self, X, w):
        """{"coef": (Kp,) Σ_i w_i φ_k(x_i) over the product basis, "mean_sq": Σ_i w_i |b(x_i)|²}."""
        Kp = len(self.ep_product)
        coef = torch.zeros(Kp, dtype=X.dtype, device=X.device)
        step = rows_per_chunk(Kp)
        for i in range(0, X.shape[0], step):
            coef += w[i:i + step] @ self.ep_product._values(X[i:i + step])
        b = self.process.drift(X)
        return {"coef": coef, "mean_sq": float(w @ b.reshape(X.shape[0], -1).pow(2).sum(dim=1))}

    def score_coefficients(self, stats):
        """ĉ_n of the score basis: the product basis starts with it (same order)."""
        return stats["coef"][:len(self.ep)][self.keep]

    def gram(self, stats, t):
        rho = self.phi_nodes @ (torch.exp(-self.lam_product * t) * stats["coef"])   # (Q,)
        return (self.G * (self.weights * rho).repeat_interleave(self.c)) @ self.G.T

    def constant(self, stats, t):
        """E_{p_t}|u|² + 2 div u = E_{p_t}|b|²/D² + 2 div b/D (class docstring; 0 without μ)."""
        if not self.euclidean:
            return 0.0
        D, div_b = self.diffusion, self.process.drift_divergence
        mean_sq = math.exp(-2 * t) * stats["mean_sq"] - div_b * D * (-math.expm1(-2 * t))
        return mean_sq / D ** 2 + 2 * div_b / D

    def field(self, X, alpha):
        """s(x) = u(x) + Σ_n α_n ∇φ_n(x): (n, *ambient); α (K',) or per row (n, K')."""
        s = _contract(alpha, self.ep._grad(X)[:, self.keep])
        return s + self.process.drift(X) / self.diffusion if self.euclidean else s

    def divergence(self, X, alpha):
        """div s = div u + Σ α_n (−(λ_n/D) φ_n − ⟨u, ∇φ_n⟩) (class docstring; u = 0 without μ)."""
        phi = self.ep._values(X)[:, self.keep]
        if not self.euclidean:
            return -(phi * self.lam * alpha).sum(dim=1)
        grad = self.ep._grad(X)[:, self.keep]
        u = (self.process.drift(X) / self.diffusion).reshape(X.shape[0], -1)
        # u lives on OU coordinates, where the metric is the dot product of the ambient entries
        u_dot = torch.einsum("nka,na->nk", grad.reshape(grad.shape[0], grad.shape[1], -1), u)
        lap = -self.lam * phi / self.diffusion - u_dot
        return (lap * alpha).sum(dim=1) + self.process.drift_divergence / self.diffusion


class _SeparableTerms(_Terms):
    """Euclidean(d) with ``basis="separable"``: score basis h_j(x_i/s), 1 ≤ j < L, all i.

    ∇h_j(x_i/s) = h_j'(x_i/s)/s e_i, so A_t is block diagonal by coordinate: block i is
    E_{p_t}[h_j'(u_i) h_k'(u_i)]/s², an expectation under the one-dimensional marginal of p_t,
    whose density w.r.t. N(0, 1) is Σ_r e^{−rt} ĉ_{ir} h_r (ĉ_{ir} = E_data h_r(u_i)); a
    Gauss–Hermite rule exact for its degree gives it. Index of (j, i): (j − 1)·d + i, as in
    ``Euclidean.eigenpairs(L, basis="separable")`` without its constant.
    """

    def __init__(self, m, n_levels):
        import numpy as np

        self.m, self.L, self.d = m, n_levels, m.dim
        self.s = float(m.scale)
        self.process = m._forward_process()
        self.diffusion = self.process.diffusion
        self.euclidean = True
        self.degree_product = max(2 * n_levels - 4, 0)             # h_j' h_k' degree ≤ 2L − 4
        z, wz = np.polynomial.hermite_e.hermegauss(max(2 * n_levels - 2, 1))
        z = torch.as_tensor(z)
        self.wz = torch.as_tensor(wz) / math.sqrt(2 * math.pi)     # Σ wz f(z) = E f(Z)
        h, dh = normalised_hermite(z, max(self.degree_product, n_levels - 1))
        self.h_nodes = h[:, :self.degree_product + 1]              # (Q, R)
        self.dh_nodes = dh[:, 1:n_levels]                          # (Q, L − 1)
        j = torch.arange(1, n_levels, dtype=torch.float64)
        self.lam = j.repeat_interleave(self.d)                     # index (j − 1)·d + i

    def _hermite(self, X):
        return normalised_hermite(X / self.s, max(self.degree_product, self.L - 1, 2))

    def statistics(self, X, w):
        """{"coef": (d, R') Σ_i w_i h_r(x_i/s), "mean_sq": Σ_i w_i |x_i|²}."""
        R = max(self.degree_product, self.L - 1, 2) + 1
        coef = torch.zeros((self.d, R), dtype=X.dtype, device=X.device)
        step = rows_per_chunk(self.d * R)
        for i in range(0, X.shape[0], step):
            h, _ = self._hermite(X[i:i + step])
            coef += torch.einsum("n,ndr->dr", w[i:i + step], h)
        return {"coef": coef, "mean_sq": float(w @ X.pow(2).sum(dim=1))}

    def score_coefficients(self, stats):
        return stats["coef"][:, 1:self.L].T.reshape(-1)            # (j − 1)·d + i

    def gram(self, stats, t):
        R = self.degree_product + 1
        decay = torch.exp(-t * torch.arange(R, dtype=torch.float64, device=self.wz.device))
        rho = (stats["coef"][:, :R] * decay) @ self.h_nodes.T      # (d, Q) marginal densities
        D = self.dh_nodes
        blocks = torch.einsum("qj,dq,qk->djk", D, rho * self.wz, D) / self.diffusion
        J = self.L - 1                                             # (i, j, k) -> ((j−1)d+i, (k−1)d+i)
        A = blocks.new_zeros((J, self.d, J, self.d))
        idx = torch.arange(self.d, device=blocks.device)
        A[:, idx, :, idx] = blocks
        return A.reshape(J * self.d, J * self.d)

    constant = _QuadratureTerms.constant

    def _per_coordinate(self, alpha):
        """α (K',) or (n, K') -> (…, d, L − 1): entry [i, j − 1] multiplies h_j(x_i/s)."""
        return alpha.reshape(alpha.shape[:-1] + (self.L - 1, self.d)).transpose(-1, -2)

    def field(self, X, alpha):
        _, dh = self._hermite(X)
        return (dh[:, :, 1:self.L] * self._per_coordinate(alpha)).sum(dim=2) / self.s \
            - X / self.diffusion

    def divergence(self, X, alpha):
        """Σ_{ij} α_ij h_j''(u_i)/s² − d/s², h_j'' = √(j(j−1)) h_{j−2}."""
        h, _ = self._hermite(X)
        j = torch.arange(1, self.L, dtype=X.dtype, device=X.device)
        second = torch.zeros_like(h[:, :, 1:self.L])
        second[:, :, 1:] = torch.sqrt(j[1:] * (j[1:] - 1)) * h[:, :, :self.L - 2]
        return (second * self._per_coordinate(alpha)).sum(dim=(1, 2)) / self.diffusion \
            - self.d / self.diffusion


class _MeshTerms(_Terms):
    """TriangleMesh: A_mn = Σ_f (∫_f p_t)(∇φ_m·∇φ_n)|_f, p_t the data's discrete heat flow."""

    def __init__(self, m, n_levels):
        self.m = m
        self.diffusion, self.euclidean = 1.0, False
        if n_levels > m.vertices.shape[0]:
            raise ValueError(f"n_levels must be at most the number of vertices "
                             f"({m.vertices.shape[0]}), found {n_levels}")
        self.ep = m.eigenpairs(n_levels)
        ev = self.ep.eigenvalues
        self.keep = ev > 1e-9 * float(ev[-1])                   # drop one constant per component
        self.lam = ev[self.keep]
        tables = m._table(torch.device("cpu"))
        U = self.ep.vectors[:, self.keep]
        corners, grad_bary = tables.F, tables.grad_bary         # (F, 3), (F, 3, 3)
        self.G = sum(U[corners[:, a]][:, :, None] * grad_bary[:, a][:, None, :] for a in range(3))
        self.corners, self.areas = corners, m.face_areas

    def statistics(self, X, w):
        density = MeshHeatDensity(self.m, X, w)
        return {"density": density, "coef": w @ self.ep._values(X)[:, self.keep]}

    def score_coefficients(self, stats):
        return stats["coef"]

    def gram(self, stats, t):
        density = stats["density"]
        u = density._values(float(t))
        face_mass = self.areas * u[self.corners].mean(dim=1)
        face_mass = face_mass / face_mass.sum()
        return torch.einsum("f,fmc,fnc->mn", face_mass, self.G, self.G)

    def field(self, X, alpha):
        return _contract(alpha, self.ep._grad(X)[:, self.keep])

    def divergence(self, X, alpha):
        raise ValueError("the divergence of a P1 score is not a function on a TriangleMesh "
                         "(it jumps across edges): no probability-flow likelihood on meshes")


def _contract(alpha, G):
    """Σ_k α_k G[:, k] for α (K,) or per row (n, K), G (n, K, *ambient)."""
    alpha = alpha.reshape(alpha.shape + (1,) * (G.ndim - 2))
    return (alpha * G).sum(dim=1)


def _terms_for(m, n_levels, basis):
    if m.discrete:
        return _MeshTerms(m, n_levels)
    if basis == "separable":
        return _SeparableTerms(m, n_levels)
    return _QuadratureTerms(m, n_levels)


class OperatorScoreMatching(BaseEstimator):
    """Closed-form operator-informed score matching (module docstring for the derivation).

    Parameters
    ----------
    manifold : Sphere(2), Torus(d), SO3(), Euclidean(d, scale) or TriangleMesh.
    n_levels : levels of the score basis (whole eigenspaces; on a mesh, eigenpairs; on R^d with
        ``basis="separable"`` the maximum per-coordinate degree + 1). None: the manifold's
        ``_default_levels``.
    ridge : relative ridge (× tr(A_t)/K'), ``None`` (chosen per time on an internal split,
        module docstring) or 0.0 (none).
    t_min : the model's end time (its likelihood and samples are those of p_{t_min}); None:
        ``T_MIN_FACTOR``/λ_1.
    basis : ``"total"`` or ``"separable"`` (Euclidean only; linear in d).

    Fitted attributes: ``coef_`` (K',) data coefficients of the score basis, ``eigenvalues_``
    (K',), ``t_min_``, ``n_levels_``, ``ridges_`` (time -> relative ridge used, for the cached
    times).

    Cost: each new time t costs one A_t (K'² × quadrature nodes) and one K'×K' solve; the
    coefficient vectors α(t) are cached per time.
    """

    _private_state = ("_alphas", "_fit_share", "_split", "_stats", "_terms")

    def __init__(self, manifold: Manifold, n_levels: Optional[int] = None,
                 ridge: Optional[float] = None, t_min: Optional[float] = None,
                 basis: str = "total") -> None:
        self.manifold = manifold
        self.n_levels = n_levels
        self.ridge = ridge
        self.t_min = t_min
        self.basis = basis

    # --- fitting ------------------------------------------------------------------------------
    def _validate_params(self):
        if not isinstance(self.manifold, Manifold):
            raise TypeError(f"manifold must be a heatscore manifold, found {type(self.manifold).__name__}")
        if self.ridge is not None:
            if isinstance(self.ridge, bool) or not isinstance(self.ridge, numbers.Real) \
                    or not math.isfinite(float(self.ridge)) or float(self.ridge) < 0:
                raise ValueError(f"ridge must be None or a finite float >= 0, found {self.ridge!r}")
        if self.t_min is not None and not (isinstance(self.t_min, numbers.Real)
                                           and math.isfinite(float(self.t_min)) and self.t_min > 0):
            raise ValueError(f"t_min must be a positive float or None, found {self.t_min!r}")
        if self.basis not in ("total", "separable"):
            raise ValueError(f"basis must be 'total' or 'separable', found {self.basis!r}")
        if self.basis == "separable" and "separable" not in self.manifold._bases:
            raise ValueError(f"basis='separable' needs a Euclidean manifold, found {self.manifold!r}")
        if self.n_levels is None:
            return self.manifold._default_levels
        return check_positive_int(self.n_levels, "n_levels", minimum=2)

    def fit(self, X: ArrayLike, y: None = None,
            sample_weight: Optional[ArrayLike] = None) -> "OperatorScoreMatching":
        """Fit to data X (n, *point_shape) with optional non-negative weights (n,); ``y`` ignored.
        Returns self (a refit starts from a clean state)."""
        self._reset()
        n_levels = self._validate_params()
        m = self.manifold
        X = m.validate(X, "X").to(torch.float64)
        if X.shape[0] == 0:
            raise ValueError("X must hold at least one point, found 0")
        w = normalised_weights(sample_weight, X.shape[0], X)
        self._set_n_features(X)
        self.n_levels_ = n_levels
        self._terms = _terms_for(m, n_levels, self.basis).to(X.device)
        self.t_min_ = T_MIN_FACTOR / m._first_eigenvalue() if self.t_min is None \
            else float(self.t_min)
        self._split = None
        if self.ridge is None:
            if X.shape[0] < 5:
                raise ValueError(f"ridge=None chooses the ridge on a held-out split and needs at "
                                 f"least 5 points, found {X.shape[0]}")
            train, test = holdout_split(X.shape[0], HOLDOUT, SPLIT_SEED)
            self._split = tuple(self._terms.statistics(X[rows], w[rows] / w[rows].sum())
                                for rows in (train, test))
            self._fit_share = float(w[train].sum())
        if self._split is not None and not isinstance(self._terms, _MeshTerms):
            # statistics are weighted sums: all the data's are the split's two parts, mixed
            share = self._fit_share
            self._stats = {k: share * a + (1 - share) * self._split[1][k]
                           for k, a in self._split[0].items()}
        else:
            self._stats = self._terms.statistics(X, w)
        self.coef_ = self._terms.score_coefficients(self._stats)
        self.eigenvalues_ = self._terms.lam
        self._alphas = OrderedDict()
        self.ridges_ = OrderedDict()
        return self

    def _system(self, t):
        """(A_t, b_t) of all the data and the relative ridge at t: ``ridge``, or the RIDGE_GRID
        entry with the least held-out J_t (fit on the split's training part, scored on its
        held-out part). Where A_t and b_t are linear in the data's statistics (every manifold but
        the mesh, whose face masses are renormalised), the full system is the weighted sum of the
        two parts', so no third Gram product is needed."""
        terms = self._terms
        if self._split is None:
            return terms.gram(self._stats, t), terms.linear(self._stats, t), float(self.ridge)
        (fit_stats, test_stats), share = self._split, self._fit_share
        A, b = terms.gram(fit_stats, t), terms.linear(fit_stats, t)
        A_test, b_test = terms.gram(test_stats, t), terms.linear(test_stats, t)
        objective = [float(a @ A_test @ a - 2 * b_test @ a)
                     for a in (_solve(A, b, r) for r in RIDGE_GRID)]
        ridge = RIDGE_GRID[min(range(len(RIDGE_GRID)), key=objective.__getitem__)]
        if isinstance(terms, _MeshTerms):
            return terms.gram(self._stats, t), terms.linear(self._stats, t), ridge
        return share * A + (1 - share) * A_test, share * b + (1 - share) * b_test, ridge

    # --- the score -----------------------------------------------------------------------------
    def _alpha(self, t):
        """α(t) = (A_t + r_t tr(A_t)/K' I)⁻¹ b_t on all the data, cached per time."""
        if t in self._alphas:
            self._alphas.move_to_end(t)
            return self._alphas[t]
        A, b, ridge = self._system(t)
        alpha = _solve(A, b, ridge)
        self._alphas[t], self.ridges_[t] = alpha, ridge
        if len(self._alphas) > CACHE_TIMES:
            self._alphas.popitem(last=False)
            self.ridges_.popitem(last=False)
        return alpha

    def coefficients(self, t: float) -> torch.Tensor:
        """(K',) α(t): the score is Σ_n α_n(t) ∇φ_n (− x/s² on R^d)."""
        self._check_fitted("coef_")
        return self._alpha(_scalar_time(t)).clone()

    def _per_time(self, X, t, name):
        """terms.<name>(X, α(t)) in float64, returned in X's dtype; ``t`` a float, or an (n,)
        tensor (one α per distinct time, the basis evaluated once with per-row α)."""
        self._check_fitted("coef_")
        fn = getattr(self._terms, name)
        X = self.manifold.validate(X, "X")
        dtype, X = X.dtype, X.to(torch.float64)
        tt = check_time(t, "t", device=X.device)
        if tt.ndim == 0:
            return fn(X, self._alpha(float(tt))).to(dtype)
        if tt.shape != (X.shape[0],):
            raise ValueError(f"t must be a float or have shape ({X.shape[0]},), found {tuple(tt.shape)}")
        values, inverse = torch.unique(tt, return_inverse=True)
        alphas = torch.stack([self._alpha(v) for v in values.tolist()])
        return fn(X, alphas[inverse]).to(dtype)

    def grad_log_density(self, X: ArrayLike, t: Time) -> torch.Tensor:
        """The score model at time t > 0 (a float, or (n,) per-point times): (n, *ambient)."""
        return self._per_time(X, t, "field")

    def divergence(self, X: ArrayLike, t: Time) -> torch.Tensor:
        """div_M of the score model at time t: (n,) (not on meshes)."""
        return self._per_time(X, t, "divergence")

    def ism_objective(self, X: ArrayLike, t: float,
                      sample_weight: Optional[ArrayLike] = None) -> float:
        """J_t = E_{p_t}[|s_t|² + 2 div s_t] with p_t the time-t marginal of the data X (e.g.
        held out), in closed form from X's coefficients: αᵀA_tα − 2b_tᵀα (+ the constant on R^d)."""
        self._check_fitted("coef_")
        t = _scalar_time(t)
        X = self.manifold.validate(X, "X").to(torch.float64)
        w = normalised_weights(sample_weight, X.shape[0], X)
        stats = self._terms.statistics(X, w)
        alpha = self._alpha(t)
        A, b = self._terms.gram(stats, t), self._terms.linear(stats, t)
        return float(alpha @ A @ alpha - 2 * b @ alpha) + self._terms.constant(stats, t)

    # --- likelihood and samples -----------------------------------------------------------------
    def _end_time(self):
        return DEFAULT_MIXING / self.manifold._first_eigenvalue()

    def score_samples(self, X: ArrayLike, steps: int = ODE_STEPS) -> torch.Tensor:
        """log p_{t_min}(x) (n,) through the probability-flow ODE from t_min to T = 10/λ_1 with
        the exact divergence (``heatscore.samplers.log_likelihood``): costly, ``steps`` Heun steps."""
        from heatscore.samplers import log_likelihood

        self._check_fitted("coef_")
        steps = check_positive_int(steps, "steps")
        times = time_grid(self._end_time(), self.t_min_, steps, "geometric").flip(0)
        return log_likelihood(self.manifold, lambda x, t: self.grad_log_density(x, t), X, times,
                              divergence=lambda x, t: self.divergence(x, t))

    def score(self, X: ArrayLike, y: None = None, steps: int = ODE_STEPS) -> float:
        """Mean log-likelihood of p_{t_min} (``score_samples``; costly)."""
        return float(self.score_samples(X, steps).mean())

    def sample(self, n: int, rng: Rng = None, steps: int = SAMPLE_STEPS,
               progress: bool = False) -> torch.Tensor:
        """n draws from p_{t_min} by the reverse geodesic random walk from the stationary law at
        T = 10/λ_1 to t_min on a geometric grid: (n, *point_shape)."""
        from heatscore.samplers import reverse_sde

        self._check_fitted("coef_")
        n = check_positive_int(n, "n")
        steps = check_positive_int(steps, "steps")
        times = time_grid(self._end_time(), self.t_min_, steps, "geometric")
        return reverse_sde(self.manifold, lambda x, t: self.grad_log_density(x, t), n, times,
                           rng=rng, progress=progress)


def _scalar_time(t):
    tt = check_time(t, "t")
    if tt.ndim != 0:
        raise ValueError(f"t must be a single time here, found shape {tuple(tt.shape)}")
    return float(tt)


def _solve(A, b, ridge):
    """(A + ridge·tr(A)/K·I)⁻¹ b; minimum-norm least squares where the system is singular."""
    K = A.shape[0]
    if ridge > 0:
        A = A + (ridge * float(A.diagonal().sum()) / K) * torch.eye(K, dtype=A.dtype, device=A.device)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        return torch.cholesky_solve(b[:, None], L)[:, 0]
    return torch.linalg.lstsq(A, b[:, None], driver="gelsd").solution[:, 0]
