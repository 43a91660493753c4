"""The heat kernel of every manifold: k_t(x, y), its log and its x-gradients.

Conventions (DESIGN): k_t(x, y) is the density of X_t at x given X_0 = y w.r.t. dvol (Lebesgue on
R^d; the lumped mass M on meshes). Compact manifolds: k_t = Σ_n e^{−λ_n t} φ_n(x) φ_n(y),
symmetric, ∂_t k = Δ_x k. R^d: the Ornstein–Uhlenbeck transition density.

All forms reduce to one paired computation (row i of x with row i of y, a time per row):
``(n, m)`` matrices are built from it in row chunks that keep every intermediate under DESIGN's
memory budget.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Optional

import torch

from heatscore._errors import TruncationWarning
from heatscore._typing import ArrayLike, Time
from heatscore._validation import check_kernel_time, check_positive_int
from heatscore.manifolds._heat_backends import DEFAULT_RTOL
from heatscore.manifolds._base import broadcast_rows, rows_per_chunk

if TYPE_CHECKING:
    from heatscore.manifolds._base import Manifold

class HeatKernel:
    """Heat kernel k_t(x, y) of a heatscore manifold.

    Parameters
    ----------
    manifold : a heatscore manifold.
    n_levels : int or None. None: exact closed forms on S², SO(3), T^d and R^d, and the discrete
        semigroup exp(−t M⁻¹S) on meshes, accurate at every t. An int: the spectral sum over that
        many levels, used where its tail bound certifies ``rtol`` at the requested t; elsewhere a
        ``TruncationWarning`` and the exact route.
    rtol : relative accuracy certified for the spectral route.

    Methods take points ``x (n, *point_shape)``, ``y (m, *point_shape)`` and a time ``t > 0``:
    ``k(x, y, t)``, ``k.log``: (n, m); ``k.grad``, ``k.grad_log``: (n, m, *ambient), Riemannian
    gradients in x; paired forms ``k.log_pairs``, ``k.grad_log_pairs`` take row i of x with row i
    of y and ``t`` scalar or (n,).
    """

    def __init__(self, manifold: Manifold, n_levels: Optional[int] = None,
                 rtol: float = DEFAULT_RTOL, chunk_size: Optional[int] = None) -> None:
        if n_levels is not None:
            n_levels = check_positive_int(n_levels, "n_levels", minimum=1)
        self.manifold = manifold
        self.n_levels = n_levels
        self.rtol = float(rtol)
        self.chunk_size = chunk_size
        self._backend = manifold._heat_backend()

    def __repr__(self) -> str:
        return f"HeatKernel({self.manifold!r}, n_levels={self.n_levels})"

    # --- routes -------------------------------------------------------------------------------
    def spectral_ok(self, t: Time) -> bool:
        """Whether ``n_levels`` levels certify ``rtol`` relative accuracy at time ``t`` (every x, y)."""
        if self.n_levels is None:
            return False
        return self._backend.spectral_ok(self.n_levels, float(torch.as_tensor(t).min()), self.rtol)

    def levels_needed(self, t: Time) -> Optional[int]:
        """Levels whose spectral tail is ≤ rtol × min k_t (None where no uniform bound exists: R^d,
        or over 100 000 levels)."""
        t = float(check_kernel_time(t))
        return self._backend.levels_needed(t, self.rtol)

    def _use_spectral(self, t):
        if self.n_levels is None:
            return False
        if self.spectral_ok(t):
            return True
        tmin = float(torch.as_tensor(t).min())
        warnings.warn(f"{self.n_levels} levels cannot give relative accuracy {self.rtol:g} at "
                      f"t = {tmin:.3g} (needs {self._backend.levels_needed(tmin, self.rtol)}); "
                      "using the exact route", TruncationWarning, stacklevel=3)
        return False

    def _pair_fn(self, spectral, want_grad):
        b = self._backend
        if spectral:
            return (lambda x, y, tt: b.spectral_log_and_grad(x, y, tt, self.n_levels, want_grad))
        return (lambda x, y, tt: b.log_and_grad(x, y, tt, want_grad))

    # --- paired forms -------------------------------------------------------------------------
    def _pairs(self, x, y, t, want_grad):
        m = self.manifold
        x = m.validate(x, "x")
        y = m.validate(y, "y").to(x.dtype)
        x, y = broadcast_rows(x, y)
        tt = check_kernel_time(t, n=x.shape[0], dtype=x.dtype, device=x.device)
        tt = tt.expand(x.shape[0])
        fn = self._pair_fn(self._use_spectral(tt), want_grad)
        out_log, out_grad = [], []
        step = self.chunk_size or rows_per_chunk(1, budget=2**22)
        for i in range(0, x.shape[0], step):
            lg, gr = fn(x[i:i + step], y[i:i + step], tt[i:i + step])
            out_log.append(lg)
            out_grad.append(gr)
        log = torch.cat(out_log) if out_log else x.new_zeros(0)
        if not want_grad:
            return log, None
        grad = torch.cat(out_grad) if out_grad else x.new_zeros((0,) + tuple(m.ambient_shape))
        return log, grad

    def log_pairs(self, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
        """(n,) log k_t(x_i, y_i); ``t`` scalar or (n,)."""
        return self._pairs(x, y, t, want_grad=False)[0]

    def grad_log_pairs(self, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
        """(n, *ambient) ∇_x log k_t(x_i, y_i) (Riemannian; the denoising score-matching target)."""
        return self._pairs(x, y, t, want_grad=True)[1]

    # --- matrix forms -------------------------------------------------------------------------
    def _matrix(self, x, y, t, want_grad):
        m = self.manifold
        x = m.validate(x, "x")
        y = m.validate(y, "y").to(x.dtype)
        tt = check_kernel_time(t, dtype=x.dtype, device=x.device)
        spectral = self._use_spectral(tt)
        if not spectral and hasattr(self._backend, "matrix_log_and_grad"):
            return self._backend.matrix_log_and_grad(x, y, tt, want_grad)
        fn = self._pair_fn(spectral, want_grad)
        n, k = x.shape[0], y.shape[0]
        amb = tuple(m.ambient_shape)
        per_pair = 8 * (1 + int(torch.tensor(amb).prod())) if want_grad else 16
        step = self.chunk_size or rows_per_chunk(k, per_pair)
        log = x.new_empty((n, k))
        grad = x.new_empty((n, k) + amb) if want_grad else None
        pshape = tuple(m.point_shape)
        for i in range(0, n, step):
            xi = x[i:i + step]
            r = xi.shape[0]
            xr = xi.unsqueeze(1).expand((r, k) + pshape).reshape((r * k,) + pshape)
            yr = y.unsqueeze(0).expand((r, k) + pshape).reshape((r * k,) + pshape)
            lg, gr = fn(xr, yr, tt.expand(r * k))
            log[i:i + r] = lg.reshape(r, k)
            if want_grad:
                grad[i:i + r] = gr.reshape((r, k) + amb)
        return log, grad

    def __call__(self, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
        """(n, m) k_t(x_i, y_j)."""
        return torch.exp(self._matrix(x, y, t, want_grad=False)[0])

    def log(self, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
        """(n, m) log k_t(x_i, y_j), without underflow."""
        return self._matrix(x, y, t, want_grad=False)[0]

    def grad_log(self, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
        """(n, m, *ambient) ∇_x log k_t(x_i, y_j)."""
        return self._matrix(x, y, t, want_grad=True)[1]

    def grad(self, x: ArrayLike, y: ArrayLike, t: Time) -> torch.Tensor:
        """(n, m, *ambient) ∇_x k_t(x_i, y_j) = k ∇_x log k."""
        log, grad = self._matrix(x, y, t, want_grad=True)
        k = torch.exp(log)
        return grad * k.reshape(k.shape + (1,) * (grad.ndim - 2))
