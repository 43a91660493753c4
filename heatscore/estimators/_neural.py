"""Neural score models: a torch score network per manifold, trained by score matching.

Network (:class:`ScoreNetwork`). s_θ(x, t) = P_x f_θ(φ(x), e(t)) / σ(t), with

- φ(x) the manifold's input features: the unit vector on S^d, (cos x, sin x) on T^d, the 9
  matrix entries on SO(3), x/scale on ``Euclidean(d, scale)``, (x − centre)/diagonal (of the
  bounding box) on a ``TriangleMesh``;
- e(t) = (u, sin(ω_k u), cos(ω_k u))_{k=1..K}, ω_k = πk/2, u = log t mapped affinely onto [−1, 1]
  over the training range [t_min, t_max];
- f_θ an MLP (SiLU) whose output has the ambient shape, P_x the tangent projection ``m.proj``
  (SO(3): R·skew(RᵀA), so tangent vectors are R[ω]×, DESIGN);
- σ(t)² = s²(1 − e^{−2λ_1 t})/λ_1 (λ_1 the first positive eigenvalue, s the OU scale on R^d, 1
  elsewhere): the OU marginal variance on R^d, ≈ 2t for small t everywhere, so f_θ is O(1) at
  every time (the conditional score has norm ~ 1/σ(t)).

Objectives (per example; the fitted model minimises their mean, with λ(t) = σ(t)² weighting and
times from the training law below; x_0 from the data, x_t ~ k_t(·, x_0) exactly by
``sample_heat_kernel``; norms and inner products in the metric g):

- ``"dsm"`` (denoising): λ(t) |s_θ(x_t, t) − ∇_x log k_t(x_t, x_0)|², the target from
  ``HeatKernel.grad_log_pairs`` (k_t(x, y) = density of X_t at x given X_0 = y). Its expectation
  is E_t λ(t) E_{p_t}|s_θ − ∇log p_t|² plus a constant (Vincent, 2011).
- ``"ism"`` (implicit, Hyvärinen): λ(t) (|s_θ(x_t, t)|² + 2 div_M s_θ(x_t, t)), the exact
  Riemannian divergence by autograd along geodesics in a g-orthonormal frame (as
  ``heatscore.samplers`` computes it, here with a graph for training): dim network evaluations
  per example. Integration by parts gives E_{p_t}[|s|² + 2 div s] = E_{p_t}|s − ∇log p_t|² − const,
  so "ism" and "dsm" differ by a constant. Not on meshes (the projected field jumps across edges).
- ``"ssm"`` (sliced): λ(t) (|s_θ|² + 2 g(∇_v s_θ, v)) with v ~ N(0, I) in T_xM isotropic in g,
  so E_v g(∇_v s, v) = div_M s: an unbiased ISM estimate from one directional derivative.

Residual mode (operator-informed score matching, the paper's variance-reduced training): with a
fitted ``residual`` base whose ``grad_log_density(X, t)`` is a score of the forward marginals,
the model is s(x, t) = s_base(x, t) + s_θ(x, t) and the network is trained by DSM on the full
model, i.e. it learns s − s_base. Its output layer starts at zero, so training starts from the
base. The base is called once per distinct time with a float t (so any closed-form estimator
fits), or once per batch with per-point times where it accepts them (probed once), without
gradients during training; the likelihood differentiates it by autograd.
Training times: log-uniform on [t_min, t_max], or uniform over ``n_times`` log-spaced times
(the default in residual mode: ``RESIDUAL_TIMES``).

Time in every call is forward diffusion time from the data (t = 0); the model's likelihood and
samples are those of p_{t_min}.
"""

from __future__ import annotations

import json
import math
import numbers
import time
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np
import sklearn.base
import sklearn.exceptions
import sklearn.utils.validation
import torch

from heatscore._files import atomic_write
from heatscore._typing import ArrayLike, Device, Divergence, PathLike, Rng, Time
from heatscore._validation import (as_float_tensor, as_generator, check_positive_int,
                                   normalised_weights, rand)
from heatscore.estimators._base import BaseEstimator
from heatscore.heat_kernels import HeatKernel, sample_heat_kernel
from heatscore.manifolds import Manifold, manifold_from_spec
from heatscore._validation import check_kernel_time
from heatscore.samplers import DEFAULT_MIXING, log_likelihood, reverse_sde, time_grid
from heatscore.samplers._divergence import _directional, exact_divergence
from heatscore.samplers._progress import ProgressBar

__all__ = ["ScoreNetwork", "NeuralScoreModel", "dsm_per_example"]

OBJECTIVES = ("dsm", "ism", "ssm")
DTYPES = {"float64": torch.float64, "float32": torch.float32}
#: Default hidden widths of the MLP.
DEFAULT_HIDDEN = (128, 128, 128)
#: Default smallest time: DEFAULT_T_MIN / λ_1 (on the unit sphere a kernel width √(2t) ≈ 0.03 rad).
DEFAULT_T_MIN = 1e-3
#: Reverse-sampler and likelihood-ODE steps (geometric grids from t_max to t_min; OISM's too).
SAMPLE_STEPS = 200
LIKELIHOOD_STEPS = 200
#: Residual mode's default training times: this many log-spaced times on [t_min, t_max]. A
#: closed-form base costs one solve per distinct time (OISM caches them), so a fixed grid is
#: solved once; continuous times would cost a solve per example.
RESIDUAL_TIMES = 64
#: ``loss`` and the "ism"/"ssm" evaluations work in chunks of this many examples (memory).
EVAL_CHUNK = 4096
#: Version of the .npz layout written by ``save``.
FORMAT = 1
#: Network buffers of earlier files that the manifold now provides (its ``_features``): ignored.
LEGACY_STATE = ("state.feature_shift", "state.feature_scale")


# --- the network ------------------------------------------------------------------------------
def _check_manifold(m):
    if not isinstance(m, Manifold):
        raise TypeError(f"manifold must be a heatscore manifold, found {type(m).__name__}")


def _check_dtype(dtype):
    for name, value in DTYPES.items():
        if dtype == value or dtype == name:
            return name, value
    raise ValueError(f"dtype must be torch.float64 or torch.float32 (or their names), found {dtype!r}")


class ScoreNetwork(torch.nn.Module):
    """s_θ(x, t) = P_x f_θ(φ(x), e(t)) / σ(t) on ``manifold`` (module docstring).

    Parameters
    ----------
    manifold : Sphere, Torus, SO3, Euclidean or TriangleMesh.
    t_min, t_max : the training time range (fixes the time embedding's affine map of log t).
    hidden : tuple of positive ints, the MLP's hidden widths.
    n_frequencies : K ≥ 0 Fourier frequencies of the time embedding.
    zero_output : start with a zero output layer (s_θ ≡ 0; the residual mode's start).
    dtype : torch.float64 (default) or torch.float32: the network's parameters and arithmetic.
    device : where the parameters live.
    rng : torch.Generator, int seed or None: the initial weights, uniform on ±1/√fan_in.

    ``net(x, t)``: x (n, *point_shape) on the manifold, t a float or (n,); returns (n, *ambient)
    in x's dtype, tangent at x. The MLP is ``net.mlp`` (all the trainable parameters).
    """

    def __init__(self, manifold: Manifold, t_min: float, t_max: float,
                 hidden: Sequence[int] = DEFAULT_HIDDEN, n_frequencies: int = 8,
                 zero_output: bool = False, dtype: torch.dtype = torch.float64,
                 device: Device = None, rng: Rng = None) -> None:
        super().__init__()
        _check_manifold(manifold)
        self.manifold = manifold
        self.ambient_shape = tuple(manifold.ambient_shape)
        n_features = manifold._n_features
        process = manifold._forward_process()
        lam1, ou_scale = manifold._first_eigenvalue(), math.sqrt(process.diffusion)
        self.register_buffer("log_time_range", torch.tensor([math.log(t_min), math.log(t_max)],
                                                            dtype=torch.float64, device=device))
        self.register_buffer("noise_constants", torch.tensor([lam1, ou_scale], dtype=torch.float64,
                                                             device=device))
        self.register_buffer("frequencies", 0.5 * math.pi * torch.arange(
            1, n_frequencies + 1, dtype=torch.float64, device=device))
        widths = [n_features + 1 + 2 * n_frequencies] + list(hidden) + [math.prod(self.ambient_shape)]
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
            if i:
                layers.append(torch.nn.SiLU())
            layers.append(torch.nn.Linear(a, b, dtype=dtype, device=device))
        self.mlp = torch.nn.Sequential(*layers)
        gen = as_generator(rng, device)
        linears = [layer for layer in self.mlp if isinstance(layer, torch.nn.Linear)]
        with torch.no_grad():
            for i, layer in enumerate(linears):
                if zero_output and i == len(linears) - 1:
                    layer.weight.zero_()
                    layer.bias.zero_()
                    continue
                bound = 1.0 / math.sqrt(layer.in_features)
                for p in (layer.weight, layer.bias):
                    p.copy_((2 * rand(gen, p.shape, dtype=p.dtype, device=device) - 1) * bound)

    @property
    def dtype(self) -> torch.dtype:
        return self.mlp[0].weight.dtype

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """σ(t) = s √((1 − e^{−2λ_1 t})/λ_1), the preconditioning scale (same shape as t)."""
        lam1, s = self.noise_constants.to(t.dtype)
        return s * torch.sqrt(-torch.expm1(-2 * lam1 * t) / lam1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(n, F) input features φ(x) (float64): the manifold's ``_features``."""
        return self.manifold._features(x)

    def time_features(self, t: torch.Tensor) -> torch.Tensor:
        """(n, 1 + 2K) time embedding e(t) of per-point times t (n,)."""
        lo, hi = self.log_time_range.to(t.dtype)
        u = (2 * torch.log(t) - lo - hi) / (hi - lo)
        phase = u[:, None] * self.frequencies.to(t.dtype)
        return torch.cat([u[:, None], torch.sin(phase), torch.cos(phase)], dim=1)

    def inputs(self, x: torch.Tensor, t: Time) -> Tuple[torch.Tensor, torch.Tensor]:
        """(MLP input (n, F + 1 + 2K) in the network's dtype, σ(t) (n,) in x's dtype)."""
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        h = torch.cat([self.features(x), self.time_features(tt)], dim=1)
        return h.to(self.dtype), self.sigma(tt)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h, sigma = self.inputs(x, t)
        raw = self.mlp(h).to(x.dtype).reshape(x.shape[:1] + self.ambient_shape)
        out = self.manifold._proj(x, raw)
        return out / sigma.reshape((-1,) + (1,) * len(self.ambient_shape))


def _projectors(m, x):
    """(n, A, A) matrices of the tangent projection P_x on flattened ambient vectors (A entries)."""
    amb = tuple(m.ambient_shape)
    a = math.prod(amb)
    n = x.shape[0]
    pshape = tuple(x.shape[1:])
    basis = torch.eye(a, dtype=x.dtype, device=x.device).reshape((a,) + amb)
    xr = x.unsqueeze(1).expand((n, a) + pshape).reshape((n * a,) + pshape)
    cols = m._proj(xr, basis.repeat((n,) + (1,) * len(amb)))             # P e_j, (n·a, *amb)
    return cols.reshape(n, a, a).transpose(1, 2)


# --- the estimator ----------------------------------------------------------------------------
def _check_real(value, name, allow_none=False):
    """A finite float > 0 (or None if allowed); ``TypeError`` (not a real number) or
    ``ValueError`` naming ``name`` otherwise."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive real number{' or None' if allow_none else ''}, "
                         f"found {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, found {value!r}")
    return value


def _takes_per_point_times(base, m, times, device):
    """Whether ``base.grad_log_density(X, t)`` accepts per-point times t (n,): one probe call on
    two points at the two ``times`` (``TypeError``/``ValueError`` or a wrong shape: floats only)."""
    x = m.sample_stationary(1, rng=0, device=device)
    x = x.expand((2,) + tuple(x.shape[1:])).clone()
    try:
        out = base.grad_log_density(x, torch.tensor(times, dtype=torch.float64, device=device))
    except (TypeError, ValueError):
        return False
    return tuple(out.shape) == (2,) + tuple(m.ambient_shape)


def _check_device(device):
    try:
        return torch.device(device)
    except TypeError:
        raise TypeError(f"device must be None or a torch device, found {device!r}") from None
    except RuntimeError:
        raise ValueError(f"device must be None or a torch device, found {device!r}") from None


def _fitted_base(residual, X, sample_weight):
    """The residual base itself when it is fitted, else a fitted clone of it (None: None)."""
    if residual is None or not hasattr(residual, "fit"):
        return residual
    try:
        sklearn.utils.validation.check_is_fitted(residual)
        return residual
    except sklearn.exceptions.NotFittedError:
        return sklearn.base.clone(residual).fit(X, sample_weight=sample_weight)


def _check_residual(residual):
    if residual is not None and not callable(getattr(residual, "grad_log_density", None)):
        raise TypeError(f"residual must be None or a fitted estimator with grad_log_density(X, t), "
                         f"found {type(residual).__name__}")
    return residual


class NeuralScoreModel(BaseEstimator):
    """A score network trained by denoising, implicit or sliced score matching (module docstring).

    Parameters
    ----------
    manifold : Sphere(2), Torus(d), SO3(), Euclidean(d) or TriangleMesh (mesh: "dsm" only, and no
        likelihood: the probability-flow ODE is not defined on a mesh; slow: the noising walk and
        the semigroup targets cost ~1.5 s and ~27 s per 64 examples at t = 0.01/λ_1 on Spot).
    objective : "dsm", "ism" or "ssm".
    residual : None or a fitted estimator with ``grad_log_density(X, t)`` (t a float, or (n,)
        per-point times where it accepts them): residual mode, objective "dsm" only.
    t_min : smallest training time, the model's end time (likelihood and samples are those of
        p_{t_min}); None: DEFAULT_T_MIN/λ_1.
    t_max : largest training time, where sampling starts from the stationary law;
        None: DEFAULT_MIXING/λ_1.
    hidden : tuple of hidden widths. n_frequencies : time-embedding frequencies K.
    n_steps : Adam steps (0: the initial network). batch_size : examples per step.
    lr : Adam's initial learning rate, decayed to 0 on a cosine schedule over ``n_steps``.
    rng : torch.Generator, int seed or None (weights, mini-batches, times, noise).
    device : None (the data's device) or a torch device for the network.
    dtype : torch.float64 (default) or torch.float32 (the network only: the noising, targets and
        returned scores stay in the data's float64).
    progress : a progress bar on stderr during training (only when it is a terminal).
    n_times : None or an int ≥ 2: training times uniform over that many log-spaced times on
        [t_min, t_max] instead of log-uniform; None: continuous without a residual base,
        ``RESIDUAL_TIMES`` with one.

    Fitted attributes: ``network_`` (:class:`ScoreNetwork`), ``t_min_``, ``t_max_``,
    ``time_grid_`` (the training times, or None for continuous times),
    ``loss_curve_`` (n_steps,) mini-batch losses, ``time_curve_`` (n_steps,) seconds since the
    start of training at each step, ``device_``.
    """

    _private_state = ("_base_per_point", "_kernel")

    def __init__(self, manifold: Manifold, objective: str = "dsm", residual: Any = None,
                 t_min: Optional[float] = None, t_max: Optional[float] = None,
                 hidden: Sequence[int] = DEFAULT_HIDDEN, n_frequencies: int = 8,
                 n_steps: int = 2000, batch_size: int = 256, lr: float = 1e-3, rng: Rng = None,
                 device: Device = None, dtype: Union[torch.dtype, str] = torch.float64,
                 progress: bool = False, n_times: Optional[int] = None) -> None:
        self.manifold = manifold
        self.objective = objective
        self.residual = residual
        self.t_min = t_min
        self.t_max = t_max
        self.hidden = hidden
        self.n_frequencies = n_frequencies
        self.n_steps = n_steps
        self.batch_size = batch_size
        self.lr = lr
        self.rng = rng
        self.device = device
        self.dtype = dtype
        self.progress = progress
        self.n_times = n_times

    # --- fitting ------------------------------------------------------------------------------
    def _validate_params(self):
        _check_manifold(self.manifold)
        if not isinstance(self.objective, str):
            raise TypeError(f"objective must be one of {OBJECTIVES}, found {self.objective!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, found {self.objective!r}")
        if not self.manifold.smooth_scores and self.objective != "dsm":
            raise ValueError(f"objective={self.objective!r} is not available on {self.manifold!r} "
                             "(the projected field jumps across edges, so integration by parts "
                             "fails); use objective='dsm'")
        _check_residual(self.residual)
        if self.residual is not None and self.objective != "dsm":
            raise ValueError(f"residual needs objective='dsm' (the network learns s − s_base from "
                             f"the DSM target), found objective={self.objective!r}")
        _check_real(self.t_min, "t_min", allow_none=True)
        _check_real(self.t_max, "t_max", allow_none=True)
        if isinstance(self.hidden, (str, bytes)) or not hasattr(self.hidden, "__iter__"):
            raise TypeError(f"hidden must be a sequence of positive ints, found {self.hidden!r}")
        hidden = tuple(check_positive_int(h, "hidden", minimum=1) for h in self.hidden)
        if not hidden:
            raise ValueError("hidden must hold at least one width, found ()")
        check_positive_int(self.n_frequencies, "n_frequencies", minimum=0)
        check_positive_int(self.n_steps, "n_steps", minimum=0)
        check_positive_int(self.batch_size, "batch_size", minimum=1)
        _check_real(self.lr, "lr")
        _check_dtype(self.dtype)
        if self.device is not None:
            _check_device(self.device)
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be True or False, found {self.progress!r}")
        if self.n_times is not None:
            check_positive_int(self.n_times, "n_times", minimum=2)
        return hidden

    def fit(self, X: ArrayLike, y: None = None, sample_weight: Optional[ArrayLike] = None,
            callback: Optional[Callable[..., object]] = None) -> "NeuralScoreModel":
        """Train on data X (n, *point_shape) with optional non-negative weights (n,) (mini-batches
        drawn in proportion to them); ``y`` ignored. Returns self.

        A ``residual`` base that is not fitted yet (e.g. after scikit-learn's ``clone``) is fitted
        on the same data first (``residual_``). ``callback(model, step, batch_loss)``, if given,
        runs after every step (the model is usable inside it: e.g. ``model.loss(X_test)`` for a
        training curve).
        """
        self._reset()
        hidden = self._validate_params()
        if callback is not None and not callable(callback):
            raise TypeError(f"callback must be callable or None, found {type(callback).__name__}")
        m = self.manifold
        X = m.validate(X, "X")
        if X.shape[0] == 0:
            raise ValueError("X must hold at least one point, found 0")
        w = None if sample_weight is None else normalised_weights(sample_weight, X.shape[0], X)
        self.residual_ = _fitted_base(self.residual, X, sample_weight)
        self._set_n_features(X)
        lam1 = m._first_eigenvalue()
        t_min = DEFAULT_T_MIN / lam1 if self.t_min is None else float(self.t_min)
        t_max = DEFAULT_MIXING / lam1 if self.t_max is None else float(self.t_max)
        if t_max <= t_min:
            raise ValueError(f"t_max must be > t_min, found t_min = {t_min:g} and t_max = {t_max:g}")
        device = X.device if self.device is None else _check_device(self.device)
        X = X.to(device)
        gen = as_generator(self.rng, device)
        self.t_min_, self.t_max_, self.device_ = t_min, t_max, device
        n_times = RESIDUAL_TIMES if self.n_times is None and self.residual is not None else self.n_times
        self.time_grid_ = None if n_times is None else torch.exp(torch.linspace(
            math.log(t_min), math.log(t_max), int(n_times), dtype=torch.float64, device=device))
        self.network_ = ScoreNetwork(m, t_min, t_max, hidden, int(self.n_frequencies),
                                     zero_output=self.residual is not None,
                                     dtype=_check_dtype(self.dtype)[1], device=device, rng=gen)
        self._prepare()
        n_steps, batch = int(self.n_steps), int(self.batch_size)
        optimiser = torch.optim.Adam(self.network_.parameters(), lr=float(self.lr))
        losses = torch.zeros(n_steps, dtype=torch.float64)
        clock = torch.zeros(n_steps, dtype=torch.float64)
        self.loss_curve_, self.time_curve_ = losses, clock
        bar = ProgressBar(n_steps, self.progress, label=f"{type(self).__name__}.fit")
        start = time.perf_counter()
        for step in range(n_steps):
            for group in optimiser.param_groups:
                group["lr"] = float(self.lr) * 0.5 * (1 + math.cos(math.pi * step / n_steps))
            if w is None:
                idx = torch.randint(X.shape[0], (batch,), generator=gen, device=gen.device).to(device)
            else:
                idx = torch.multinomial(w.to(gen.device), batch, replacement=True, generator=gen).to(device)
            loss = self._per_example(X[idx], self._draw_times(batch, gen), gen, create_graph=True).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            losses[step] = float(loss.detach())
            clock[step] = time.perf_counter() - start
            bar.update()
            if callback is not None:
                callback(self, step, float(losses[step]))
        bar.close()
        return self

    def _prepare(self):
        """State shared by fit and load: the heat kernel of the DSM targets, and whether the
        residual base takes per-point times (one call per batch) or only floats."""
        self._kernel = HeatKernel(self.manifold)
        self._base_per_point = self.residual_ is not None and _takes_per_point_times(
            self.residual_, self.manifold, (self.t_min_, self.t_max_), self.device_)

    def _draw_times(self, n, gen):
        """(n,) training times: uniform over ``time_grid_``, or log-uniform on [t_min_, t_max_]."""
        if self.time_grid_ is not None:
            k = self.time_grid_.shape[0]
            return self.time_grid_[torch.randint(k, (n,), generator=gen, device=gen.device).to(self.device_)]
        lo, hi = math.log(self.t_min_), math.log(self.t_max_)
        return torch.exp(lo + (hi - lo) * rand(gen, (n,), device=self.device_))

    def _base_score(self, base, x, t):
        """s_base(x, t) (n, *ambient) for per-point times t (n,): one call with t (n,) where the
        base takes per-point times, else one call per distinct time with a float."""
        if base is None:
            return torch.zeros(x.shape[:1] + tuple(self.manifold.ambient_shape), dtype=x.dtype,
                               device=x.device)

        def call(rows, tau):
            return as_float_tensor(base.grad_log_density(rows, tau), "residual output",
                                   dtype=x.dtype, device=x.device)

        per_point = self._base_per_point if base is self.residual_ else _takes_per_point_times(
            base, self.manifold, (self.t_min_, self.t_max_), self.device_)
        if per_point:
            return call(x, t)
        values, inverse = torch.unique(t, return_inverse=True)
        if values.numel() == 1:
            return call(x, float(values[0]))
        out = torch.zeros(x.shape[:1] + tuple(self.manifold.ambient_shape), dtype=x.dtype, device=x.device)
        for j, tau in enumerate(values.tolist()):
            rows = torch.nonzero(inverse == j).flatten()
            out = out.index_copy(0, rows, call(x[rows], tau))
        return out

    def _score(self, x, t, base_grad=False):
        """Model score s_base + s_θ at points x and a float or per-point t (differentiable in x)."""
        out = self.network_(x, t)
        if self.residual_ is None:
            return out
        tt = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        with torch.set_grad_enabled(base_grad and torch.is_grad_enabled()):
            base = self._base_score(self.residual_, x, tt)
        return out + base

    def _noised(self, x0, t, gen):
        """(x_t ~ k_t(·, x_0), DSM target ∇_x log k_t(x_t, x_0)) for per-point times t (n,)."""
        xt = sample_heat_kernel(self.manifold, x0, t, rng=gen)
        return xt, self._kernel.grad_log_pairs(xt, x0, t)

    def _per_example(self, x0, t, gen, create_graph, objective=None):
        """(n,) per-example losses of ``objective`` (default: the model's) at per-point times t."""
        m, objective = self.manifold, objective or self.objective
        weight = self.network_.sigma(t) ** 2
        if objective == "dsm":
            xt, target = self._noised(x0, t, gen)
            diff = self._score(xt, t) - target
            return weight * m._inner(xt, diff, diff)
        xt = sample_heat_kernel(m, x0, t, rng=gen)
        with torch.enable_grad():
            if objective == "ism":
                s, div = exact_divergence(self.network_, m, xt, t, create_graph)
            else:
                s, div = _directional(self.network_, m, xt, m._random_tangent_normal(xt, gen), t,
                                      create_graph)
            out = weight * (m._inner(xt, s, s) + 2 * div)
        return out if create_graph else out.detach()

    # --- evaluation ---------------------------------------------------------------------------
    def _points_and_times(self, X, t, gen=None, name="X"):
        self._check_fitted("network_")
        x = self.manifold.validate(X, name).to(self.device_)
        if t is None:
            return x, self._draw_times(x.shape[0], gen)
        tt = check_kernel_time(t, n=x.shape[0], dtype=x.dtype, device=x.device)
        return x, tt.expand(x.shape[0])

    def grad_log_density(self, X: ArrayLike, t: Time) -> torch.Tensor:
        """(n, *ambient) model score at X; t a float or per-point (n,) (> 0).

        Differentiable in X when X requires grad (then the residual base is differentiated too).
        """
        x, tt = self._points_and_times(X, t)
        with torch.set_grad_enabled(x.requires_grad):
            return self._score(x, tt, base_grad=True)

    def loss(self, X: ArrayLike, t: Optional[Time] = None, rng: Rng = 0,
             objective: Optional[str] = None) -> float:
        """Mean held-out objective (float) on X as clean data x_0.

        ``t``: None (per-point times from the training law), a float or (n,). ``rng`` seeds the
        times and the noise (fixed by default, so models compare on the same draws). ``objective``
        defaults to the model's ("dsm", "ism" and "ssm" differ by constants in expectation).
        """
        objective = self.objective if objective is None else objective
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, found {objective!r}")
        gen = as_generator(rng, self.device_ if hasattr(self, "device_") else None)
        x, tt = self._points_and_times(X, t, gen)
        total = 0.0
        with torch.no_grad():
            for i in range(0, x.shape[0], EVAL_CHUNK):
                part = self._per_example(x[i:i + EVAL_CHUNK], tt[i:i + EVAL_CHUNK], gen,
                                         create_graph=False, objective=objective)
                total += float(part.sum())
        return total / x.shape[0]

    def score_samples(self, X: ArrayLike, steps: int = LIKELIHOOD_STEPS,
                      divergence: Divergence = "exact", rng: Rng = None) -> torch.Tensor:
        """(n,) log p_{t_min}(x) by the probability-flow ODE (``heatscore.samplers.log_likelihood``)
        from t_min to t_max on a geometric grid of ``steps`` steps; costly: every step evaluates
        the network on n·dim points and differentiates it (``divergence="exact"``) or uses one
        Hutchinson direction (``"hutchinson"``). A residual base with a ``divergence(X, t)``
        method contributes it in closed form; otherwise it is differentiated by autograd.
        Not available on meshes."""
        self._check_fitted("network_")
        steps = check_positive_int(steps, "steps", minimum=1)
        if not isinstance(divergence, str) or divergence not in ("exact", "hutchinson"):
            raise ValueError(f"divergence must be 'exact' or 'hutchinson', found {divergence!r}")
        x = self.manifold.validate(X, "X").to(self.device_)
        times = time_grid(self.t_max_, self.t_min_, steps, kind="geometric").flip(0)
        base_divergence = getattr(self.residual_, "divergence", None)
        if not callable(base_divergence):
            out = log_likelihood(self.manifold, lambda y, t: self._score(y, t, base_grad=True), x,
                                 times, divergence=divergence, rng=rng)
            return out.detach()
        m, gen = self.manifold, as_generator(rng, self.device_)

        def total_divergence(y, t):
            tt = torch.full((y.shape[0],), t, dtype=y.dtype, device=y.device)
            with torch.enable_grad():
                if divergence == "exact":
                    net = exact_divergence(self.network_, m, y, tt)[1]
                else:
                    net = _directional(self.network_, m, y, m._random_tangent_normal(y, gen), tt)[1]
            base = as_float_tensor(base_divergence(y, t), "residual divergence", dtype=y.dtype,
                                   device=y.device)
            return net.detach() + base

        with torch.no_grad():
            return log_likelihood(m, lambda y, t: self._score(y, t), x, times,
                                  divergence=total_divergence)

    def score(self, X: ArrayLike, y: None = None, steps: int = LIKELIHOOD_STEPS,
              divergence: Divergence = "exact", rng: Rng = None) -> float:
        """Mean log-likelihood of X under p_{t_min} (float; costly, see ``score_samples``)."""
        return float(self.score_samples(X, steps=steps, divergence=divergence, rng=rng).mean())

    def sample(self, n: int, rng: Rng = None, steps: int = SAMPLE_STEPS,
               corrector_steps: int = 0) -> torch.Tensor:
        """(n, *point_shape) draws of p_{t_min}: ``heatscore.samplers.reverse_sde`` from the
        stationary law at t_max down to t_min on a geometric grid of ``steps`` steps."""
        self._check_fitted("network_")
        n = check_positive_int(n, "n", minimum=1)
        steps = check_positive_int(steps, "steps", minimum=1)
        gen = as_generator(rng, self.device_)
        x_T = self.manifold.sample_stationary(n, rng=gen, device=self.device_)
        times = time_grid(self.t_max_, self.t_min_, steps, kind="geometric")
        with torch.no_grad():
            return reverse_sde(self.manifold, lambda y, t: self._score(y, t), x_T, times, rng=gen,
                               corrector_steps=corrector_steps, progress=self.progress)

    # --- persistence ----------------------------------------------------------------------------
    def save(self, path: PathLike) -> None:
        """Write the fitted model to ``path`` (.npz: weights as arrays, settings as JSON; no pickle;
        atomic rename). A residual base is not stored: pass it again to ``load``."""
        self._check_fitted("network_")
        dtype_name = _check_dtype(self.dtype)[0]
        spec, manifold_arrays = self.manifold._spec()
        meta = {"class": type(self).__name__, "format": FORMAT,
                "manifold": spec, "objective": self.objective,
                "residual": None if self.residual is None else type(self.residual).__name__,
                "t_min": self.t_min, "t_max": self.t_max, "hidden": [int(h) for h in self.hidden],
                "n_frequencies": int(self.n_frequencies), "n_steps": int(self.n_steps),
                "batch_size": int(self.batch_size), "lr": float(self.lr),
                "rng": self.rng if isinstance(self.rng, int) else None, "dtype": dtype_name,
                "progress": self.progress, "n_times": self.n_times, "t_min_": self.t_min_,
                "t_max_": self.t_max_}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
                  "loss_curve": self.loss_curve_.numpy(), "time_curve": self.time_curve_.numpy()}
        if self.time_grid_ is not None:
            arrays["time_grid"] = self.time_grid_.cpu().numpy()
        for name, value in self.network_.state_dict().items():
            arrays["state." + name] = value.detach().cpu().numpy()
        arrays.update(manifold_arrays)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: PathLike, residual: Any = None, device: Device = None) -> "NeuralScoreModel":
        """Read a model written by ``save`` (``allow_pickle=False``: loading runs no code).

        ``residual``: the fitted base again, required for (and only for) a residual model.
        ``device``: where to put the network (None: the CPU).
        """
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays["meta"].tobytes().decode())
        if meta.get("class") != cls.__name__:
            raise ValueError(f"{path} holds a {meta.get('class')!r}, not a {cls.__name__}")
        if (meta["residual"] is None) != (residual is None):
            raise ValueError(f"residual: {path} holds a model "
                             + (f"with a {meta['residual']} residual base: pass it as residual="
                                if meta["residual"] else "without a residual base: pass residual=None"))
        m = manifold_from_spec(meta["manifold"], arrays)
        est = cls(m, objective=meta["objective"], residual=_check_residual(residual),
                  t_min=meta["t_min"], t_max=meta["t_max"], hidden=tuple(meta["hidden"]),
                  n_frequencies=meta["n_frequencies"], n_steps=meta["n_steps"],
                  batch_size=meta["batch_size"], lr=meta["lr"], rng=meta["rng"], device=device,
                  dtype=DTYPES[meta["dtype"]], progress=meta["progress"], n_times=meta["n_times"])
        est.t_min_, est.t_max_ = meta["t_min_"], meta["t_max_"]
        est.residual_ = est.residual
        est.device_ = torch.device("cpu") if device is None else torch.device(device)
        est.network_ = ScoreNetwork(m, est.t_min_, est.t_max_, tuple(meta["hidden"]),
                                    meta["n_frequencies"], dtype=DTYPES[meta["dtype"]],
                                    device=est.device_, rng=0)
        state = {k[len("state."):]: torch.from_numpy(v) for k, v in arrays.items()
                 if k.startswith("state.") and k not in LEGACY_STATE}
        est.network_.load_state_dict(state)
        est.loss_curve_ = torch.from_numpy(arrays["loss_curve"])
        est.time_curve_ = torch.from_numpy(arrays["time_curve"])
        est.time_grid_ = torch.from_numpy(arrays["time_grid"]).to(est.device_) if "time_grid" in arrays else None
        est._prepare()
        return est


# --- per-example gradients (variance benchmarks) ----------------------------------------------
def dsm_per_example(model: "NeuralScoreModel", X: ArrayLike, t: Optional[Time] = None,
                    rng: Rng = None, residual: Any = "fitted") -> torch.Tensor:
    """Per-example DSM losses and their gradients in the network's parameters, for one batch.

    For x_0 = X[i], x_t ~ k_t(·, x_0) and the model s = s_base + s_θ:

        ℓ_i(θ) = σ(t_i)² |s(x_t, t_i) − ∇_x log k_{t_i}(x_t, x_0)|²_g,

    the summands of the training loss of ``model`` (the mini-batch gradient is their mean).

    Parameters
    ----------
    model : a fitted :class:`NeuralScoreModel` (its ``network_`` parameters θ; ``n_steps=0``
        gives the initial network).
    X : (n, *point_shape) clean data.
    t : None (times from the training law), a float, or (n,) per-point times.
    rng : torch.Generator, int seed or None: times and noise (the same seed gives the same x_t,
        so DSM and residual gradients compare on the same draws).
    residual : "fitted" (the model's own base), None (plain DSM, s = s_θ) or a fitted base with
        ``grad_log_density`` (s = s_base + s_θ).

    Returns
    -------
    (losses (n,), gradients (n, P)) with P the number of parameters, in the order of
    ``model.network_.mlp.parameters()`` (each flattened), in the network's dtype.
    """
    from torch.func import functional_call, grad_and_value, vmap

    gen = as_generator(rng, model.device_ if hasattr(model, "device_") else None)
    x0, tt = model._points_and_times(X, t, gen)
    base = model.residual_ if isinstance(residual, str) and residual == "fitted" else _check_residual(residual)
    m, net = model.manifold, model.network_
    xt, target = model._noised(x0, tt, gen)
    with torch.no_grad():
        offset = model._base_score(base, xt, tt)
        h, sigma = net.inputs(xt, tt)
    dtype = net.dtype
    n, amb = xt.shape[0], tuple(m.ambient_shape)
    proj = _projectors(m, xt).to(dtype)
    wanted = (target - offset).reshape(n, -1).to(dtype)
    params = {k: v.detach() for k, v in net.mlp.named_parameters()}

    def one(p, h_i, x_i, proj_i, wanted_i, sigma_i):
        raw = functional_call(net.mlp, p, (h_i[None],))[0]
        diff = (proj_i @ raw / sigma_i - wanted_i).reshape((1,) + amb)
        return (sigma_i ** 2 * m._inner(x_i[None], diff, diff)).reshape(())

    grads, losses = vmap(grad_and_value(one), in_dims=(None, 0, 0, 0, 0, 0))(
        params, h, xt.to(dtype), proj, wanted, sigma.to(dtype))
    flat = torch.cat([grads[k].reshape(n, -1) for k in params], dim=1)
    return losses.detach(), flat.detach()
