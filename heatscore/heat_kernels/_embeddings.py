"""Heat-kernel embeddings and the heat-kernel MMD (conventions in DESIGN: Embeddings).

- kernel mean embedding at time t: (e^{−λ_n t} ĉ_n)_n with ĉ_n = Σ_i w_i φ_n(x_i) / Σ_i w_i;
  p_t = Σ_n e^{−λ_n t} ĉ_n φ_n is the data diffused for time t;
- heat kernel signature HKS(x, t) = k_t(x, x);
- diffusion-map coordinates Ψ_t(x) = (e^{−λ_n t} φ_n(x))_{n ≥ 1} and diffusion distance
  D_t(x, y) = |Ψ_t(x) − Ψ_t(y)| = (k̃_{2t}(x, x) + k̃_{2t}(y, y) − 2 k̃_{2t}(x, y))^{1/2};
- MMD with the positive-definite kernel k̃_t.

k̃_t = k_t on compact manifolds; on R^d, k̃_t(x, y) = k_t(x, y)/γ(x) = Σ_α e^{−|α|t} φ_α(x) φ_α(y),
the symmetric form (the OU kernel itself is only in detailed balance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple

import torch

from heatscore._typing import ArrayLike, Rng, Time
from heatscore._validation import (as_float_tensor, as_generator, check_positive_int,
                                   normalised_weights)
from heatscore._validation import check_kernel_time
from heatscore.heat_kernels._kernel import HeatKernel
from heatscore.manifolds._base import rows_per_chunk

if TYPE_CHECKING:
    from heatscore.manifolds._base import Eigenpairs, Manifold


def kernel_mean_embedding(manifold: Manifold, X: ArrayLike, t: Time, n_levels: int,
                          sample_weight: Optional[ArrayLike] = None,
                          eigenpairs: Optional[Eigenpairs] = None,
                          chunk_size: int = 2**16) -> torch.Tensor:
    """(K,) time-t kernel mean embedding (e^{−λ_n t} ĉ_n)_n of data X (t ≥ 0; t = 0: ĉ)."""
    X = manifold.validate(X, "X")
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one point, found 0")
    tt = as_float_tensor(t, "t", dtype=X.dtype)
    if tt.ndim != 0 or not bool(torch.isfinite(tt)) or float(tt) < 0:
        raise ValueError(f"t must be a finite scalar >= 0, found {t!r}")
    ep = manifold.eigenpairs(check_positive_int(n_levels, "n_levels")) if eigenpairs is None else eigenpairs
    w = normalised_weights(sample_weight, X.shape[0], X)
    c = torch.zeros(len(ep), dtype=X.dtype, device=X.device)
    for i in range(0, X.shape[0], chunk_size):
        c += w[i:i + chunk_size] @ ep._values(X[i:i + chunk_size])
    return torch.exp(-ep.eigenvalues.to(X) * tt) * c


def _log_sym_kernel(kernel, x, y, t):
    """(n,) log k̃_t(x_i, y_i), the symmetric positive-definite form (see module docstring)."""
    lg = kernel.log_pairs(x, y, t)
    m = kernel.manifold
    log_ref = m._log_reference(m.validate(x, "x"))
    return lg if log_ref is None else lg - log_ref


def heat_kernel_signature(manifold: Manifold, x: ArrayLike, t: Time) -> torch.Tensor:
    """(n,) HKS(x, t) = k_t(x, x)."""
    return torch.exp(HeatKernel(manifold).log_pairs(x, x, t))


def diffusion_map(manifold: Manifold, x: ArrayLike, t: Time, n_levels: int) -> torch.Tensor:
    """(n, K − 1) diffusion-map coordinates Ψ_t(x) = (e^{−λ_n t} φ_n(x))_{n ≥ 1}."""
    x = manifold.validate(x, "x")
    tt = check_kernel_time(t, dtype=x.dtype)
    ep = manifold.eigenpairs(n_levels)
    return (torch.exp(-ep.eigenvalues.to(x) * tt) * ep._values(x))[:, 1:]


def diffusion_distance(manifold: Manifold, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
    """(n,) D_t(x_i, y_i) from the exact kernel at time 2t (no truncation)."""
    k = HeatKernel(manifold)
    t2 = 2 * check_kernel_time(t)
    d2 = (torch.exp(_log_sym_kernel(k, x, x, t2)) + torch.exp(_log_sym_kernel(k, y, y, t2))
          - 2 * torch.exp(_log_sym_kernel(k, x, y, t2)))
    return torch.sqrt(torch.clamp(d2, min=0.0))


def _gram(kernel, X, Y, t):
    """(n, m) k̃_t(X_i, Y_j), in row blocks."""
    n, m = X.shape[0], Y.shape[0]
    out = X.new_empty((n, m))
    step = rows_per_chunk(m, 16)
    for i in range(0, n, step):
        xi = X[i:i + step]
        r = xi.shape[0]
        xr = xi.repeat_interleave(m, dim=0)
        yr = Y.repeat((r,) + (1,) * (Y.ndim - 1))
        out[i:i + r] = torch.exp(_log_sym_kernel(kernel, xr, yr, t)).reshape(r, m)
    return out


def _mmd2_from_gram(G, n):
    """Unbiased MMD² from the pooled Gram matrix G ((n+m)², first n rows the first sample)."""
    m = G.shape[0] - n
    kxx, kyy, kxy = G[:n, :n], G[n:, n:], G[:n, n:]
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


def mmd(manifold: Manifold, X: ArrayLike, Y: ArrayLike, t: Time) -> torch.Tensor:
    """Unbiased estimate of the squared heat-kernel MMD between samples X and Y at time t."""
    X = manifold.validate(X, "X")
    Y = manifold.validate(Y, "Y").to(X.dtype)
    if X.shape[0] < 2 or Y.shape[0] < 2:
        raise ValueError(f"X and Y need at least 2 points each, found {X.shape[0]} and {Y.shape[0]}")
    k = HeatKernel(manifold)
    tt = check_kernel_time(t)
    return _mmd2_from_gram(_gram(k, torch.cat([X, Y]), torch.cat([X, Y]), tt), X.shape[0])


def mmd_permutation_test(manifold: Manifold, X: ArrayLike, Y: ArrayLike, t: Time,
                         n_permutations: int = 500,
                         rng: Rng = None) -> Tuple[torch.Tensor, float]:
    """Permutation test of equal distributions with the heat-kernel MMD.

    Returns (mmd² (unbiased), p-value). The p-value (1 + #{perm ≥ observed})/(1 + n_permutations)
    is valid at every level: reject "same distribution" at level α when p ≤ α.
    """
    X = manifold.validate(X, "X")
    Y = manifold.validate(Y, "Y").to(X.dtype)
    n_permutations = check_positive_int(n_permutations, "n_permutations")
    if X.shape[0] < 2 or Y.shape[0] < 2:
        raise ValueError(f"X and Y need at least 2 points each, found {X.shape[0]} and {Y.shape[0]}")
    Z = torch.cat([X, Y])
    G = _gram(HeatKernel(manifold), Z, Z, check_kernel_time(t))
    n = X.shape[0]
    observed = _mmd2_from_gram(G, n)
    gen = as_generator(rng)
    exceed = 0
    for _ in range(n_permutations):
        p = torch.randperm(Z.shape[0], generator=gen).to(G.device)
        exceed += int(_mmd2_from_gram(G[p][:, p], n) >= observed)
    return observed, (1 + exceed) / (1 + n_permutations)
