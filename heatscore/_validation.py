"""Input conversion and validation shared by every module.

Public functions accept numpy arrays, tensors, nested sequences of numbers and array-likes
(objects with ``__array__``, e.g. pandas frames) and return tensors; sparse input is refused.
Integers become float64; float32 stays float32 (tolerances follow the dtype).
"""

import numbers

import numpy as np
import torch

#: torch's sparse layouts (sparse tensors are refused with a clear message).
_SPARSE_LAYOUTS = (torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc)

#: Off-manifold tolerance by dtype (DESIGN: 1e-6 in float64, 1e-4 in float32).
MANIFOLD_ATOL = {torch.float64: 1e-6, torch.float32: 1e-4}


def as_float_tensor(x, name, dtype=None, device=None):
    """Convert ``x`` to a floating tensor; ``TypeError`` naming ``name`` if it is not numeric."""
    if getattr(x, "tocsr", None) is not None or getattr(x, "layout", None) in _SPARSE_LAYOUTS:
        raise TypeError(f"{name} must be a dense array: sparse input is not supported "
                        f"(found {type(x).__name__})")
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (np.ndarray, list, tuple, numbers.Number, np.generic)) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise TypeError(f"{name} must be a numeric array or tensor, found dtype {arr.dtype}")
        t = torch.as_tensor(arr)
    else:
        raise TypeError(f"{name} must be a numpy array or torch tensor, found {type(x).__name__}")
    if t.is_complex():
        raise TypeError(f"{name} must be real, found complex dtype {t.dtype}")
    if dtype is not None:
        t = t.to(dtype)
    elif not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float64)
    if device is not None:
        t = t.to(device)
    return t


def check_finite(t, name):
    """``ValueError`` if ``t`` holds NaN or inf, with the count."""
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise ValueError(f"{name} must be finite: found {int(bad.sum())} NaN/inf entries")
    return t


def check_shape(t, name, point_shape, what="points"):
    """``ValueError`` unless ``t`` has shape ``(n, *point_shape)``."""
    expected = (len(point_shape) + 1)
    if t.ndim != expected or tuple(t.shape[1:]) != tuple(point_shape):
        shape = "(n, " + ", ".join(str(s) for s in point_shape) + ")"
        raise ValueError(f"{name} must be {what} of shape {shape}, found shape {tuple(t.shape)}")
    return t


def check_positive_int(value, name, minimum=1):
    """Return ``int(value)``; ``TypeError`` for a non-integer, ``ValueError`` below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral,)):
        if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, found {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, found {value}")
    return int(value)


def check_time(t, name="t", allow_zero=False, dtype=torch.float64, device=None):
    """A diffusion time: a Python float or a 0-d/1-d tensor, finite and > 0 (>= 0 if allowed)."""
    tt = as_float_tensor(t, name, dtype=dtype, device=device)
    check_finite(tt, name)
    if allow_zero:
        if bool((tt < 0).any()):
            raise ValueError(f"{name} must be >= 0, found min {float(tt.min()):.3g}")
    elif bool((tt <= 0).any()):
        raise ValueError(f"{name} must be > 0, found min {float(tt.min()):.3g}")
    return tt


def as_generator(rng, device=None):
    """A ``torch.Generator`` from ``rng``: a generator (returned as is), an int seed, or None (fresh entropy).

    Never touches torch's global random state.
    """
    if isinstance(rng, torch.Generator):
        return rng
    gen = torch.Generator(device=device if device is not None else "cpu")
    if rng is None:
        gen.manual_seed(int(np.random.SeedSequence().generate_state(1, dtype=np.uint64)[0] >> 1))
    elif isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng seed must be non-negative, found {rng}")
        gen.manual_seed(int(rng))
    else:
        raise TypeError(f"rng must be a torch.Generator, an int seed or None, found {type(rng).__name__}")
    return gen


def randn(gen, shape, dtype=torch.float64, device=None):
    """Standard normal draws from ``gen`` (drawn on the generator's device, moved to ``device``)."""
    out = torch.randn(shape, generator=gen, dtype=dtype, device=gen.device)
    return out if device is None else out.to(device)


def rand(gen, shape, dtype=torch.float64, device=None):
    """Uniform [0, 1) draws from ``gen`` (drawn on the generator's device, moved to ``device``)."""
    out = torch.rand(shape, generator=gen, dtype=dtype, device=gen.device)
    return out if device is None else out.to(device)


def normalised_weights(sample_weight, n, like):
    """(n,) sample weights summing to one (uniform for None), on ``like``'s dtype and device.

    ``ValueError`` for a wrong shape, NaN/inf, a negative weight or a zero sum.
    """
    if sample_weight is None:
        return torch.full((n,), 1.0 / n, dtype=like.dtype, device=like.device)
    w = as_float_tensor(sample_weight, "sample_weight", dtype=like.dtype, device=like.device)
    if w.shape != (n,):
        raise ValueError(f"sample_weight must have shape ({n},), found {tuple(w.shape)}")
    check_finite(w, "sample_weight")
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("sample_weight must be non-negative with a positive sum")
    return w / w.sum()


def check_kernel_time(t, name="t", n=None, dtype=torch.float64, device=None):
    """Validate a diffusion time: a float, a 0-d tensor or (if ``n`` is given) an ``(n,)`` tensor.

    Returns a tensor of shape () or (n,). ``t <= 0`` raises (the kernel at t = 0 is a Dirac).
    """
    tt = as_float_tensor(t, name, dtype=dtype, device=device)
    if tt.ndim > 1 or (tt.ndim == 1 and (n is None or tt.shape[0] not in (1, n))):
        expected = "a scalar" if n is None else f"a scalar or shape ({n},)"
        raise ValueError(f"{name} must be {expected}, found shape {tuple(tt.shape)}")
    check_finite(tt, name)
    if bool((tt <= 0).any()):
        raise ValueError(f"{name} must be > 0 (the heat kernel at t = 0 is a Dirac), "
                         f"found min {float(tt.min()):.3g}")
    return tt


def standard_normal(gen, shape, device=None):
    """``shape`` i.i.d. N(0, 1) draws from ``gen`` in float32: the noise of the random walks.

    torch's float32 normal generator (on the CPU, for 16 draws or more, vectorised Box–Muller on
    24-bit uniforms) is 4–8× faster than its float64 one, and the draw is most of a walk's step
    on S^d and R^d. The walks add these draws to their float64 iterates (the sum is float64).
    Their rounding (relative 2^-24) and their tail cut at √(48 ln 2) ≈ 5.77 (probability 8e-9 per
    draw) are far below a walk's O(h) discretisation error. Drawn on the generator's device,
    moved to ``device``.
    """
    return NoiseBuffer(shape).draw(gen, device)


class NoiseBuffer:
    """:func:`standard_normal`'s draws of one ``shape``, into a float32 buffer kept from call to
    call: each :meth:`draw` overwrites the previous one. For the walks, whose steps draw the same
    shape every time: a fresh multi-megabyte buffer per step costs its page faults (on R^64 with
    10^4 particles, about as much as the draw itself)."""

    def __init__(self, shape):
        self.shape = tuple(shape)
        self.buffer = None

    def draw(self, gen, device=None):
        """(shape) float32 N(0, 1) draws from ``gen`` (on its device), moved to ``device``."""
        if self.buffer is None:
            self.buffer = torch.empty(self.shape, dtype=torch.float32, device=gen.device)
        out = self.buffer.normal_(generator=gen)
        return out if device is None else out.to(device)
