"""Products M_1 × … × M_k of heatscore manifolds, built from the factors' protocol alone.

Points are flat rows ``(n, P)``: the factors' flattened points side by side (e.g. Euclidean(3) ×
SO3(): 3 coordinates, then the 9 entries of the rotation row by row); tangent vectors are flat
rows ``(n, A)`` of the factors' flattened ambient vectors. ``split(x)`` returns the factors'
points. Everything is the product of the factors': the metric (so dist² = Σ dist_f²), the volume,
the generator L = Σ L_f (drift per factor: OU on a Euclidean factor), the heat kernel
k_t = Π k_{f,t}, the forward process (independent per factor), eigenfunctions φ = Π φ_f with
eigenvalue Σ λ_f (a level per distinct sum), and the geodesic random walk, which steps each
factor with its own step. The factors must share the diffusion coefficient D of dX = b dt +
√(2D) dB (every factor has D = 1 but ``Euclidean(d, scale=s)``, D = s²).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, List, Sequence, Union

import numpy as np
import torch

from heatscore._typing import ArrayLike, Device, Quadrature, Rng, ValuesAndGrad
from heatscore.manifolds._base import (Eigenpairs, IndexEmbedding, Manifold, Process,
                                       levels_from_eigenvalues)

if TYPE_CHECKING:
    from geomstats.geometry.product_manifold import ProductManifold as GeomstatsProduct


class ProductManifold(Manifold):
    """M_1 × … × M_k (module docstring); ``factors`` is the tuple of factor manifolds."""

    def __init__(self, *factors: Manifold) -> None:
        if len(factors) < 2:
            raise ValueError(f"factors: a product needs at least 2 manifolds, found {len(factors)}")
        for i, f in enumerate(factors):
            if not isinstance(f, Manifold):
                raise TypeError(f"factors[{i}] must be a heatscore manifold, found {type(f).__name__}")
        diffusions = {f._forward_process().diffusion for f in factors}
        if len(diffusions) > 1:
            raise ValueError(f"factors must share the diffusion coefficient D (Euclidean(d, scale=s) "
                             f"has D = s², the others 1), found {sorted(diffusions)}: rescale the "
                             "Euclidean coordinates to a common scale")
        self.factors = tuple(factors)
        sizes = [math.prod(f.point_shape) for f in factors]
        amb = [math.prod(f.ambient_shape) for f in factors]
        self._points = np.cumsum([0] + sizes).tolist()
        self._ambient = np.cumsum([0] + amb).tolist()
        self.dim = sum(f.dim for f in factors)
        self.point_shape = (self._points[-1],)
        self.ambient_shape = (self._ambient[-1],)
        self.volume = math.prod(f.volume for f in factors)
        self.smooth_scores = all(f.smooth_scores for f in factors)

    def __repr__(self) -> str:
        return "ProductManifold(" + ", ".join(repr(f) for f in self.factors) + ")"

    # --- identity and persistence ----------------------------------------------------------
    def _key(self):
        return tuple((type(f).__name__, f._key()) for f in self.factors)

    def _spec(self):
        specs, arrays = [], {}
        for i, f in enumerate(self.factors):
            spec, a = f._spec()
            specs.append(spec)
            arrays.update({f"factor{i}.{name}": value for name, value in a.items()})
        return {"kind": "ProductManifold", "factors": specs}, arrays

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        factors = []
        for i, s in enumerate(spec["factors"]):
            prefix = f"factor{i}."
            own = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
            factors.append(build(s, own))
        return cls(*factors)

    # --- layout ----------------------------------------------------------------------------
    def split(self, x: ArrayLike) -> List[torch.Tensor]:
        """The factors' points ``[(n, *point_shape_f)]`` of points x (n, P) (validated)."""
        return self._split(self.validate(x, "x"))

    def _split(self, x):
        return [x[:, a:b].reshape((x.shape[0],) + tuple(f.point_shape))
                for f, a, b in zip(self.factors, self._points[:-1], self._points[1:])]

    def _split_tangent(self, v):
        return [v[:, a:b].reshape((v.shape[0],) + tuple(f.ambient_shape))
                for f, a, b in zip(self.factors, self._ambient[:-1], self._ambient[1:])]

    @staticmethod
    def _join(parts):
        """Flat rows (n, Σ size) of per-factor arrays (n, *shape_f)."""
        return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)

    def _each(self, method, *arrays, tangent=()):
        """Join ``factor.method(*factor parts)`` over the factors; ``arrays`` are points,
        ``tangent`` tangent vectors (split accordingly)."""
        parts = [self._split(a) for a in arrays] + [self._split_tangent(v) for v in tangent]
        return self._join([getattr(f, method)(*args) for f, *args in zip(self.factors, *parts)])

    # --- geometry --------------------------------------------------------------------------
    _deviation_name = "largest deviation of a factor (each in its own measure)"

    def _off_manifold(self, x):
        devs = [f._off_manifold(p) for f, p in zip(self.factors, self._split(x))]
        return torch.stack(devs, dim=1).amax(dim=1)

    def _wrap(self, x):
        return self._each("_wrap", x)

    def _safe_point(self, x):
        return self._each("_safe_point", x)

    def _proj(self, x, v):
        return self._each("_proj", x, tangent=(v,))

    def _exp(self, x, v):
        return self._each("_exp", x, tangent=(v,))

    def _log(self, x, y):
        return self._each("_log", x, y)

    def _inner(self, x, u, v):
        return sum(f._inner(p, a, b) for f, p, a, b in zip(
            self.factors, self._split(x), self._split_tangent(u), self._split_tangent(v)))

    def _dist(self, x, y):
        d2 = sum(f._dist(p, q) ** 2 for f, p, q in zip(self.factors, self._split(x), self._split(y)))
        return torch.sqrt(d2)

    def _random_tangent_normal(self, x, gen):
        return self._join([f._random_tangent_normal(p, gen) for f, p in zip(self.factors, self._split(x))])

    def _tangent_noise(self, x, gen):
        return self._join([f._tangent_noise(p, gen) for f, p in zip(self.factors, self._split(x))])

    def _tangent_frame(self, x):
        """Block diagonal: factor f's frame in its own ambient columns."""
        n = x.shape[0]
        frame = x.new_zeros((n, self.dim) + self.ambient_shape)
        row = 0
        for f, p, a, b in zip(self.factors, self._split(x), self._ambient[:-1], self._ambient[1:]):
            frame[:, row:row + f.dim, a:b] = f._tangent_frame(p).reshape(n, f.dim, b - a)
            row += f.dim
        return frame

    def _smooth_curve(self, x, step):
        return self._each("_smooth_curve", x, tangent=(step,))

    def _metric_coordinates(self, x, v):
        return self._join([f._metric_coordinates(p, w) for f, p, w in zip(
            self.factors, self._split(x), self._split_tangent(v))])

    # --- sampling and the generator ----------------------------------------------------------
    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> torch.Tensor:
        """``n`` points uniform w.r.t. the product volume (every factor compact)."""
        from heatscore._validation import as_generator

        n = self._check_n(n)
        gen = as_generator(rng, device)
        return self._join([f.random_uniform(n, rng=gen, dtype=dtype, device=device)
                           for f in self.factors])

    def sample_stationary(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                          device: Device = None) -> torch.Tensor:
        """``n`` draws from the product of the factors' stationary laws."""
        from heatscore._validation import as_generator

        n = self._check_n(n)
        gen = as_generator(rng, device)
        return self._join([f.sample_stationary(n, rng=gen, dtype=dtype, device=device)
                           for f in self.factors])

    def _forward_process(self):
        """Each factor's process on its own coordinates: b = (b_1, …, b_k), div b = Σ div b_f."""
        processes = [f._forward_process() for f in self.factors]

        def drift(x):
            return self._join([p.drift(q) for p, q in zip(processes, self._split(x))])

        def log_stationary(x):
            return sum(p.log_stationary(q) for p, q in zip(processes, self._split(x)))
        return Process(drift=drift, drift_divergence=sum(p.drift_divergence for p in processes),
                       diffusion=processes[0].diffusion, log_stationary=log_stationary)

    def _first_eigenvalue(self):
        return min(f._first_eigenvalue() for f in self.factors)

    def _log_reference(self, x):
        refs = [f._log_reference(p) for f, p in zip(self.factors, self._split(x))]
        refs = [r for r in refs if r is not None]
        return sum(refs) if refs else None

    def _grad_log_reference(self, x):
        parts = []
        for f, p in zip(self.factors, self._split(x)):
            g = f._grad_log_reference(p) if f._log_reference(p[:1]) is not None else None
            parts.append(torch.zeros(p.shape[:1] + tuple(f.ambient_shape), dtype=x.dtype,
                                     device=x.device) if g is None else g)
        return self._join(parts)

    def _sample_heat_kernel(self, x0, t, gen):
        """Independent forward processes per factor, each for the time t."""
        return self._join([f._sample_heat_kernel(p, t, gen) for f, p in zip(self.factors, self._split(x0))])

    def _walk_step(self, y, process):
        """Each factor's own step on its columns (with the factor's process)."""
        steps = [f._walk_step(p, f._forward_process()) for f, p in zip(self.factors, self._split(y))]

        def step(y, score, h, gen, k):
            return self._join([s(p, g, h, gen, k) for s, p, g in zip(
                steps, self._split(y), self._split_tangent(score))])
        return step

    # --- heat kernel and kernel sums ---------------------------------------------------------
    def _make_heat_backend(self):
        return _ProductBackend(self)

    def _index_embedding(self):
        embeddings = [f._index_embedding() for f in self.factors]
        if any(e is None for e in embeddings):
            return None
        return _ProductEmbedding(self, [e.flat() for e in embeddings])

    # --- spectrum ------------------------------------------------------------------------------
    def eigenpairs(self, n_levels: int) -> ProductEigenpairs:
        """Products Π_f φ_f of the factors' eigenfunctions with summed eigenvalues: the first
        ``n_levels`` distinct sums (see :class:`ProductEigenpairs`)."""
        return ProductEigenpairs(self, self._check_levels(n_levels))

    def quadrature(self, n: Union[int, Sequence[int]]) -> Quadrature:
        """The tensor product of the factors' rules (``n`` an int for every factor, or one per
        factor): exact where each factor's rule is exact for its part of a product integrand."""
        ns = list(n) if isinstance(n, (tuple, list)) else [n] * len(self.factors)
        if len(ns) != len(self.factors):
            raise ValueError(f"n must be an int or one per factor ({len(self.factors)}), found {n!r}")
        rules = [f.quadrature(k) for f, k in zip(self.factors, ns)]
        sizes = [w.shape[0] for _, w in rules]
        grids = torch.meshgrid(*[torch.arange(s) for s in sizes], indexing="ij")
        idx = [g.reshape(-1) for g in grids]
        points = self._join([p[i] for (p, _), i in zip(rules, idx)])
        weights = torch.ones(idx[0].shape[0], dtype=torch.float64)
        for (_, w), i in zip(rules, idx):
            weights = weights * w[i]
        return points, weights

    def _product_rule(self, n_levels):
        """The levels spanning every product of factor functions up to each factor's own product
        levels (those the factors' rules need), and the factors' quadrature resolutions."""
        ep = self.eigenpairs(n_levels)
        rules = []
        for f, top in zip(self.factors, ep.factor_levels.max(dim=0).values.tolist()):
            rule = f._product_rule(top + 1)
            if rule is None:
                return None
            rules.append(rule)
        largest = sum(float(f.eigenpairs(r[0]).eigenvalues[-1]) for f, r in zip(self.factors, rules))
        n_product = _levels_up_to(self, largest)
        return n_product, tuple(r[1] for r in rules)

    # --- front ends --------------------------------------------------------------------------
    def _features(self, x):
        return self._join([f._features(p) for f, p in zip(self.factors, self._split(x))])

    @property
    def _n_features(self):
        return sum(f._n_features for f in self.factors)

    def _column_names(self):
        return tuple(f"{i + 1}.{name}" for i, f in enumerate(self.factors) for name in f._column_names())

    def to_geomstats(self) -> GeomstatsProduct:
        """geomstats' ``ProductManifold`` of the factors' spaces (points converted per factor)."""
        from geomstats.geometry.product_manifold import ProductManifold as GsProduct
        return GsProduct([f.to_geomstats() for f in self.factors])


def _levels_up_to(m, largest):
    """The number of distinct eigenvalue sums of the product m that are ≤ ``largest``."""
    n = 1
    while True:
        ev = m.eigenpairs(n + 1).eigenvalues
        if float(ev[-1]) > largest * (1 + 1e-12):
            return n
        n += 1


class ProductEigenpairs(Eigenpairs):
    """φ(x) = Π_f φ_{f, i_f}(x_f), eigenvalue Σ_f λ_{f, i_f}, over the first ``n_levels`` distinct
    sums (whole eigenspaces of the product).

    Order: by the sum, then by the factors' function indices (i_1, …, i_k) lexicographically.
    ``factor_indices`` (K, k): the factor eigenfunction of each product function;
    ``factor_levels`` (K, k): their factor levels. Gradients: ∇φ = (∇φ_1 Π_{g≠1} φ_g, …) in the
    factors' ambient columns.
    """

    def __init__(self, manifold: ProductManifold, n_levels: int) -> None:
        factors = manifold.factors
        # the n-th distinct sum is at most each factor's n-th eigenvalue (the others at λ = 0)
        self.factor_eigenpairs = [f.eigenpairs(n_levels) for f in factors]
        values = [ep.eigenvalues for ep in self.factor_eigenpairs]
        sums = torch.zeros(1, dtype=torch.float64)
        index = torch.zeros((1, 0), dtype=torch.long)
        bound = min(float(v[-1]) for v in values)
        for v in values:                     # combinations whose partial sums stay ≤ the bound
            new = (sums[:, None] + v[None, :]).reshape(-1)
            idx = torch.cat([index.repeat_interleave(v.shape[0], dim=0),
                             torch.arange(v.shape[0]).repeat(index.shape[0])[:, None]], dim=1)
            keep = new <= bound * (1 + 1e-12) + 1e-12
            sums, index = new[keep], idx[keep]
        order = torch.argsort(sums, stable=True)
        sums, index = sums[order], index[order]
        levels, multiplicities = levels_from_eigenvalues(sums)
        keep = levels < n_levels
        super().__init__(manifold, sums[keep], levels[keep], multiplicities[:n_levels])
        self.factor_indices = index[keep]
        self.factor_levels = torch.stack([ep.levels[self.factor_indices[:, j]]
                                          for j, ep in enumerate(self.factor_eigenpairs)], dim=1)

    def _factor_values(self, x, with_grad):
        parts = self.manifold._split(x)
        out = []
        for j, (ep, p) in enumerate(zip(self.factor_eigenpairs, parts)):
            idx = self.factor_indices[:, j].to(x.device)
            if with_grad:
                v, g = ep._values(p), ep._grad(p)
                out.append((v[:, idx], g[:, idx].reshape(x.shape[0], idx.shape[0], -1)))
            else:
                out.append((ep._values(p)[:, idx], None))
        return out

    def _values(self, x):
        values = [v for v, _ in self._factor_values(x, False)]
        out = values[0]
        for v in values[1:]:
            out = out * v
        return out

    def _grad(self, x):
        return self._both(x)[1]

    def _both(self, x):
        parts = self._factor_values(x, True)
        values = [v for v, _ in parts]
        total = values[0]
        for v in values[1:]:
            total = total * v
        grads = []
        for j, (_, g) in enumerate(parts):
            others = torch.ones_like(total)
            for i, v in enumerate(values):
                if i != j:
                    others = others * v
            grads.append(g * others.unsqueeze(-1))
        return total, torch.cat(grads, dim=2)

    def values_and_grad(self, x: ArrayLike) -> ValuesAndGrad:
        x = self.manifold.validate(x, "x")
        return self._both(x)


class _ProductBackend:
    """log k_t = Σ_f log k_{f,t}, ∇ log k the factors' gradients side by side; no spectral route
    (no tail bound is derived for products: kernel sums use the closed forms)."""

    def __init__(self, manifold):
        self.manifold = manifold
        self.backends = [f._heat_backend() for f in manifold.factors]

    def log_and_grad(self, x, y, t, want_grad):
        m = self.manifold
        logs, grads = [], []
        for b, p, q in zip(self.backends, m._split(x), m._split(y)):
            lg, g = b.log_and_grad(p, q, t, want_grad)
            logs.append(lg)
            grads.append(g)
        return sum(logs), (m._join(grads) if want_grad else None)

    def levels_needed(self, t, rtol):
        return None

    def spectral_ok(self, n_levels, t, rtol):
        return False


class _ProductEmbedding(IndexEmbedding):
    """The factors' embeddings side by side (copies: every combination of the factors' copies).

    With each factor's chord c_f between b_f r_f and a_f r_f of its kernel distance r_f
    (``_CHORD_BOUNDS``), r² = Σ r_f² lies between (Σ c_f²)/max a² and (Σ c_f²)/min b², so the
    radius maps are conservative: ``to_chord`` keeps every datum within r, ``from_chord``
    overestimates the nearest datum's distance. The margins add (the kernel is a product).
    """

    def __init__(self, manifold, embeddings):
        self.m, self.parts = manifold, embeddings
        self.copies = math.prod(e.copies for e in embeddings)
        self.log_margin = sum(e.log_margin for e in embeddings)
        self.max_radius = min(e.max_radius for e in embeddings)
        self.extent = None

    def data(self, Y):
        blocks = [e.data(p) for e, p in zip(self.parts, self.m._split(Y))]
        n = Y.shape[0]
        out = blocks[0].reshape(self.parts[0].copies, n, -1)
        for e, b in zip(self.parts[1:], blocks[1:]):
            b = b.reshape(e.copies, n, -1)
            out = np.concatenate([np.repeat(out, e.copies, axis=0),
                                  np.tile(b, (out.shape[0], 1, 1))], axis=2)
        return out.reshape(-1, out.shape[2])

    def query(self, X, tau):
        return np.concatenate([e.query(p, tau) for e, p in zip(self.parts, self.m._split(X))], axis=1)

    def _bounds(self, tau):
        lo, hi = zip(*[e.chord_bounds(tau) for e in self.parts])
        return min(lo), max(hi)

    def to_chord(self, r, tau):
        return np.asarray(r) * self._bounds(tau)[1]

    def from_chord(self, c, tau):
        return np.asarray(c) / self._bounds(tau)[0]
