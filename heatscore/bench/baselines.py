"""Baselines of the Earth benchmark on S² (``benchmarks/bench_adaptive.py``): a von Mises–Fisher
mixture fitted by EM (:class:`VMFMixture`, K chosen on validation by :func:`fit_vmf`) and
scikit-learn's haversine Gaussian KDE with its bandwidth chosen by cross-validation
(:func:`sklearn_kde_cv`), re-scored exactly by :class:`GeodesicGaussianKDE`.

Points are (n, 3) unit rows; every log-density is in nats w.r.t. the area of the unit sphere (4π).
"""

import math
import warnings

import numpy as np
import torch
from scipy.special import dawsn, erfc
from sklearn.base import BaseEstimator
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity

from heatscore._errors import NotFittedError
from heatscore._validation import check_positive_int, normalised_weights
from heatscore.bench.kernel_sum import to_latlon
from heatscore.manifolds import Sphere

#: vMF concentrations are clipped to this range (Banerjee's κ is infinite at r̄ = 1).
KAPPA_MIN, KAPPA_MAX = 1e-6, 1e7
#: Entries of one (rows, K) or (rows, n) block: 2^21 float64 = 16 MB, a few such temporaries.
BLOCK_ENTRIES = 2**21
#: Pairwise blocks of the exact KDE: rows × n ≤ this (pairwise_dist holds ~16 floats per pair:
#: about 32 MB).
KDE_BLOCK_PAIRS = 2**18
#: scikit-learn KDE's default bandwidth grid (radians).
BANDWIDTHS = tuple(np.geomspace(1e-4, 0.3, 25))

_S2 = Sphere(2)


def _vmf_log_norm(kappa):
    """log C(κ) with C(κ) e^{κ(μ·x − 1)} the vMF density on S²: C = κ/(2π(1 − e^{−2κ}))
    (→ 1/(4π) as κ → 0; −expm1 keeps 1 − e^{−2κ} exact for small κ)."""
    return torch.log(kappa) - math.log(2 * math.pi) - torch.log(-torch.expm1(-2 * kappa))


class VMFMixture(BaseEstimator):
    """Mixture of K von Mises–Fisher laws on S², p(x) = Σ_k π_k C(κ_k) e^{κ_k μ_k·x}, fitted by EM.

    Init: k-means++ seeding (means drawn among the data with probability ∝ w·(1 − max μ·x)),
    every κ = 1/mean(1 − max μ·x) over the points not drawn as means (the large-κ spread
    E[1 − μ·x] ≈ 1/κ), equal weights.
    M-step: μ_k the weighted mean direction, κ_k = r̄(3 − r̄²)/(1 − r̄²) (Banerjee et al. 2005,
    r̄ the mean resultant length), clipped to [KAPPA_MIN, KAPPA_MAX]; a component left with no
    weight keeps its μ, κ (and weight 0). Stops when the mean log-likelihood gains < ``tol``
    nats per point (or falls: the clipping can break EM's monotonicity).

    Fitted attributes: ``means_`` (K, 3), ``kappas_`` (K,), ``weights_`` (K,), ``n_iter_``,
    ``converged_``, ``log_likelihood_`` (weighted mean log p of the training data, nats).
    """

    def __init__(self, n_components, max_iter=200, tol=1e-4, seed=0):
        self.n_components = n_components
        self.max_iter = max_iter
        self.tol = tol
        self.seed = seed

    def fit(self, X, sample_weight=None):
        """Fit to X (n, 3) with optional non-negative weights (n,); returns self."""
        K = check_positive_int(self.n_components, "n_components")
        max_iter = check_positive_int(self.max_iter, "max_iter")
        if not (float(self.tol) > 0 and math.isfinite(float(self.tol))):
            raise ValueError(f"tol must be a positive float, found {self.tol!r}")
        X = _S2.validate(X, "X")
        n = X.shape[0]
        if K > n:
            raise ValueError(f"n_components must be at most the number of points ({n}), found {K}")
        w = normalised_weights(sample_weight, n, X)
        mu, centre = self._seed_means(X, w, K)
        gap = 1.0 - (X @ mu.T).max(dim=1).values
        rest = w.clone()
        rest[centre] = 0.0
        spread = float(rest @ gap) / float(rest.sum()) if float(rest.sum()) > 0 else 0.0
        kappa = torch.full((K,), 1.0 / max(spread, 1.0 / KAPPA_MAX), dtype=X.dtype)
        log_pi = torch.full((K,), -math.log(K), dtype=X.dtype)
        prev, self.converged_ = -math.inf, False
        for it in range(1, max_iter + 1):
            ll, Nk, Rk = self._e_step(X, w, log_pi, mu, kappa)
            norm = torch.linalg.vector_norm(Rk, dim=1)
            live = (Nk > 0) & (norm > 0)
            rbar = torch.where(live, norm / torch.where(live, Nk, 1.0), 0.0)
            new_kappa = rbar * (3 - rbar**2) / torch.clamp(1 - rbar**2, min=1e-300)
            kappa = torch.where(live, new_kappa.clamp(KAPPA_MIN, KAPPA_MAX), kappa)
            mu = torch.where(live[:, None], Rk / torch.where(live, norm, 1.0)[:, None], mu)
            log_pi = torch.log(Nk / Nk.sum())
            if ll - prev < self.tol:
                self.converged_ = True
                break
            prev = ll
        self.means_, self.kappas_, self.weights_ = mu, kappa, log_pi.exp()
        self.n_iter_ = it
        self.log_likelihood_ = float(w @ self.log_density(X))
        return self

    def _seed_means(self, X, w, K):
        """(means (K, 3), their row indices): k-means++ seeding with distance 1 − μ·x (by the weights
        alone once every point is at distance 0)."""
        rng = np.random.default_rng(self.seed)
        p = w.numpy()
        idx = [int(rng.choice(X.shape[0], p=p))]
        gap = (1.0 - X @ X[idx[0]]).clamp(min=0.0)
        for _ in range(1, K):
            q = p * gap.numpy()
            idx.append(int(rng.choice(X.shape[0], p=q / q.sum() if q.sum() > 0 else p)))
            gap = torch.minimum(gap, (1.0 - X @ X[idx[-1]]).clamp(min=0.0))
        return X[idx].clone(), idx

    @staticmethod
    def _log_joint(x, log_pi, mu, kappa):
        """(rows, K) log π_k + log C(κ_k) + κ_k(μ_k·x − 1), as one addmm."""
        return torch.addmm(log_pi + _vmf_log_norm(kappa) - kappa, x, (kappa[:, None] * mu).T)

    def _e_step(self, X, w, log_pi, mu, kappa):
        """(weighted mean log p, N_k = Σ w r_ik (K,), R_k = Σ w r_ik x_i (K, 3)) in row blocks."""
        ll, Nk, Rk = 0.0, torch.zeros_like(kappa), torch.zeros_like(mu)
        step = max(1, BLOCK_ENTRIES // mu.shape[0])
        for i in range(0, X.shape[0], step):
            x, wi = X[i:i + step], w[i:i + step]
            z = self._log_joint(x, log_pi, mu, kappa)
            top = z.max(dim=1, keepdim=True).values
            r = torch.exp(z.sub_(top))                      # one exp: log p = top + log Σ_k r
            total = r.sum(dim=1)
            ll += float(wi @ (top[:, 0] + torch.log(total)))
            r *= (wi / total)[:, None]
            Nk += r.sum(dim=0)
            Rk += r.T @ x
        return ll, Nk, Rk

    def log_density(self, X):
        """(n,) log p(x) in nats w.r.t. area."""
        if not hasattr(self, "means_"):
            raise NotFittedError("this VMFMixture is not fitted yet: call fit(X) first")
        X = _S2.validate(X, "X")
        log_pi = torch.log(self.weights_)
        step = max(1, BLOCK_ENTRIES // self.means_.shape[0])
        return torch.cat([torch.logsumexp(self._log_joint(x, log_pi, self.means_, self.kappas_), dim=1)
                          for x in X.split(step)])


def fit_vmf(X_fit, X_val, Ks=(10, 25, 50, 100, 200, 400)):
    """(model, K): the VMFMixture fitted on X_fit whose K (capped below len(X_fit)) has the best
    mean log-likelihood on X_val."""
    n = _S2.validate(X_fit, "X_fit").shape[0]
    if n < 2:
        raise ValueError(f"X_fit must hold at least 2 points, found {n}")
    best = None
    for K in sorted({min(check_positive_int(K, "Ks"), n - 1) for K in Ks}):
        model = VMFMixture(K).fit(X_fit)
        score = float(model.log_density(X_val).mean())
        if best is None or score > best[0]:
            best = (score, model, K)
    return best[1], best[2]


def gaussian_normaliser(h):
    """Z(h) = 2π ∫_0^π e^{−θ²/(2h²)} sin θ dθ, the area integral of the geodesic Gaussian kernel.

    Closed form (complete the square in e^{−θ²/(2h²) + iθ}):
    Z = 2π h [√2 D(h/√2) − √(π/2) e^{−h²/2} Im erfc((π − ih²)/(h√2))], D Dawson's integral;
    Z = 2πh²(1 − h²/3 + O(h⁴)) for small h, → 4π as h → ∞.
    """
    h = float(h)
    if not (h > 0 and math.isfinite(h)):
        raise ValueError(f"h must be a positive finite bandwidth, found {h!r}")
    tail = math.sqrt(math.pi / 2) * math.exp(-h * h / 2) * erfc(complex(math.pi, -h * h) / (h * math.sqrt(2))).imag
    return 2 * math.pi * h * (math.sqrt(2) * dawsn(h / math.sqrt(2)) - tail)


class GeodesicGaussianKDE(BaseEstimator):
    """p(x) = (1/n) Σ_i e^{−θ_i(x)²/(2h²)} / Z(h), θ_i the geodesic angle to datum i and Z the exact
    normaliser on S² (:func:`gaussian_normaliser`): scikit-learn's haversine Gaussian KDE, exactly,
    by a dense log-sum-exp in row blocks (``KDE_BLOCK_PAIRS``). Fitted: ``X_`` (n, 3)."""

    def __init__(self, bandwidth):
        self.bandwidth = bandwidth

    def fit(self, X):
        """Keep the data X (n, 3); returns self."""
        h = float(self.bandwidth)
        if not (h > 0 and math.isfinite(h)):
            raise ValueError(f"bandwidth must be a positive finite float, found {self.bandwidth!r}")
        self.X_ = _S2.validate(X, "X")
        if self.X_.shape[0] == 0:
            raise ValueError("X must hold at least one point, found 0")
        self._log_norm = math.log(self.X_.shape[0]) + math.log(gaussian_normaliser(h))
        return self

    def log_density(self, X):
        """(n,) log p(x) in nats w.r.t. area."""
        if not hasattr(self, "X_"):
            raise NotFittedError("this GeodesicGaussianKDE is not fitted yet: call fit(X) first")
        X = _S2.validate(X, "X")
        step = max(1, KDE_BLOCK_PAIRS // self.X_.shape[0])
        c = -0.5 / float(self.bandwidth) ** 2
        return torch.cat([torch.logsumexp(c * _S2.pairwise_dist(x, self.X_) ** 2, dim=1)
                          for x in X.split(step)]) - self._log_norm


def sklearn_kde_cv(X_fit, bandwidths=None, folds=5):
    """GeodesicGaussianKDE fitted on X_fit with the bandwidth that scikit-learn's
    ``GridSearchCV(KernelDensity(metric="haversine", algorithm="ball_tree", kernel="gaussian"),
    cv=KFold(folds, shuffle=True, random_state=0))`` picks over ``bandwidths`` (radians; None:
    ``BANDWIDTHS``) on (lat, lon). The chosen h is re-scored exactly: the ball tree's far tail is not."""
    X = _S2.validate(X_fit, "X_fit")
    grid = np.asarray(BANDWIDTHS if bandwidths is None else bandwidths, dtype=float)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise ValueError(f"bandwidths must be a non-empty 1-d sequence of positive floats, found {bandwidths!r}")
    folds = check_positive_int(folds, "folds", minimum=2)
    search = GridSearchCV(KernelDensity(metric="haversine", algorithm="ball_tree", kernel="gaussian"),
                          {"bandwidth": grid}, cv=KFold(folds, shuffle=True, random_state=0), refit=False)
    with warnings.catch_warnings():
        # bandwidths whose held-out fold scores -inf (a point beyond the tree's reach) lose the search
        warnings.filterwarnings("ignore", message="One or more of the test scores are non-finite")
        search.fit(to_latlon(X.numpy()))
    return GeodesicGaussianKDE(search.best_params_["bandwidth"]).fit(X)
