"""Heat-diffused P1 histogram on a triangle mesh: the mesh route of the diffusion kernel smoother.

Each point deposits its barycentric weights on its face's corners, divided by the lumped masses,
so the histogram u_0 = M⁻¹ Σ_i w_i Σ_a b_a(x_i) e_{F[f_i, a]} has Σ_v M_v u_0v = Σ_i w_i = 1.
It is diffused by the discrete semigroup u_τ = exp(−τ M⁻¹S) u_0 (so u_τ(v) = Σ_i w_i k_τ(v, x_i)
with the mesh heat kernel), and normalised on the real surface (DESIGN, "Meshes"):

    p_τ(x) = Σ_a b_a(x) u_τ[F[f(x), a]] / Z_τ,    Z_τ = Σ_f area_f · mean(u_τ on f's corners),

the exact integral of the P1 interpolant over the original faces, so p_τ integrates to 1 by face
quadrature. ∇ log p_τ is constant direction per face: Σ_a u_a ∇b_a / Σ_a b_a u_a.

Positivity: the generator −M⁻¹S is Metzler, so u_τ > 0 on every vertex of a connected component
holding data, for every τ > 0. At tiny τ far from the data u_τ falls below float64's range; such
vertex values are recomputed in log space where a query needs them (``VertexHeatFlow.log_flow``),
so log p is finite there. On components without data p is exactly 0: log p = −inf, gradient 0.

Cost: about μτ sparse products per time (μ = max_i S_ii/M_i; see ``_mesh_kernel``). Vertex values
are cached per time and a later time continues from the nearest earlier one (the semigroup), so
ascending sequences of times cost about as much as the largest. Large times (more than
``SPECTRAL_FROM_PRODUCTS`` products) take the spectral sum over the mesh's first eigenpairs
instead, where its tail bound certifies it at every vertex.
"""

import math

import numpy as np
import torch

from heatscore._validation import (as_float_tensor, as_generator, check_positive_int,
                                   normalised_weights, rand)
from heatscore._validation import check_kernel_time
from heatscore.manifolds import _mesh_kernel
from heatscore.manifolds._mesh_kernel import vertex_heat_flow

#: Diffused vertex vectors kept per model (the most recent times).
CACHE_TIMES = 8
#: Large times (uniformization beyond ``SPECTRAL_FROM_PRODUCTS`` sparse products, as for the
#: paired kernels): the spectral sum over SPECTRAL_PAIRS eigenpairs where it is certified to
#: SPECTRAL_RTOL at every vertex.
SPECTRAL_PAIRS = 64
SPECTRAL_RTOL = 1e-10


def _check_time(tau, name="tau"):
    return float(check_kernel_time(tau, name))


def holdout_split(n, holdout=0.2, rng=None):
    """(train, test) index tensors of a random split of n points, round(holdout·n) held out
    (at least one point on each side)."""
    if not 0 < float(holdout) < 1:
        raise ValueError(f"holdout must be in (0, 1), found {holdout!r}")
    if n < 2:
        raise ValueError(f"a held-out split needs at least 2 points, found {n}")
    perm = torch.randperm(n, generator=as_generator(rng))
    n_test = min(n - 1, max(1, round(float(holdout) * n)))
    return perm[n_test:], perm[:n_test]


class MeshHeatDensity:
    """Heat-diffused P1 histogram of weighted points on a ``TriangleMesh`` (see the module doc).

    Parameters
    ----------
    mesh : TriangleMesh.
    X : (n, 3) points on the mesh.
    sample_weight : (n,) non-negative weights with a positive sum, or None (equal weights);
        normalised to sum to 1. Integer weights are the same as repeated points.

    Attributes: ``mesh``, ``faces_`` (n,) and ``bary_`` (n, 3) of the points, ``weights_`` (n,).
    """

    def __init__(self, mesh, X, sample_weight=None):
        if not getattr(mesh, "discrete", False):
            raise TypeError(f"mesh must be a TriangleMesh, found {type(mesh).__name__}")
        X = mesh.validate(X, "X")
        n = X.shape[0]
        if n == 0:
            raise ValueError("X must hold at least one point, found 0")
        w = normalised_weights(sample_weight, n, torch.empty(0, dtype=torch.float64, device=X.device))
        self.mesh = mesh
        self.flow = vertex_heat_flow(mesh)
        f, b, _ = mesh._located(X)
        self.faces_, self.bary_, self.weights_ = f, b, w
        tables = mesh._table(X.device)
        self._corners, self._grad_bary = tables.F, tables.grad_bary
        self._areas = mesh.face_areas.to(X.device)
        self._mass = self.flow.mass.to(X.device)
        self._u0 = self._deposit(torch.arange(n, device=X.device))
        self._cache = {}

    def set_locations(self, faces, bary):
        """Use these (face, barycentric) locations of the data (e.g. saved with a model, so a
        reloaded model does not depend on re-locating the points: bit-for-bit outputs)."""
        self.faces_ = torch.as_tensor(faces, device=self._u0.device)
        self.bary_ = torch.as_tensor(bary, dtype=torch.float64, device=self._u0.device)
        self._u0 = self._deposit(torch.arange(self.faces_.shape[0], device=self._u0.device))
        self._cache = {}

    # --- vertex values ------------------------------------------------------------------------
    def _deposit(self, idx):
        """(nv,) M⁻¹ × the barycentric deposits of points ``idx`` (weights renormalised)."""
        w = self.weights_[idx]
        w = w / w.sum()
        corners = self._corners[self.faces_[idx]].reshape(-1)
        mass = (w[:, None] * self.bary_[idx]).reshape(-1)
        return torch.zeros_like(self._mass).index_add_(0, corners, mass) / self._mass

    def _advance(self, u, dt):
        """exp(−dt M⁻¹S) u for vertex values u (nv,)."""
        if dt <= 0:
            return u
        return self.flow.apply(u[:, None], u.new_full((1, 1), dt))[:, 0, 0]

    def _spectral(self, tau):
        """u_τ = Σ_k e^{−λ_k τ} φ_k (φ_kᵀ M u_0) over SPECTRAL_PAIRS eigenpairs where that is
        certified to relative error SPECTRAL_RTOL at every vertex, else None.

        With Φ the full M-orthonormal basis, ΦΦᵀ = M⁻¹, so the dropped terms at vertex v are at
        most e^{−λ_K τ} ‖u_0‖_M / √M_v (Cauchy–Schwarz; λ_K the last eigenvalue kept). Tried only
        where uniformization would take more than ``SPECTRAL_FROM_PRODUCTS`` sparse products
        (large τ, e.g. the start of a reverse run at 10/λ_1, where the series is slow).
        """
        if self.flow.rate * tau < _mesh_kernel.SPECTRAL_FROM_PRODUCTS:
            return None
        n_pairs = min(SPECTRAL_PAIRS, self.flow.nv)
        ep = self.mesh.eigenpairs(n_pairs)
        phi = ep.vectors.to(self._u0)
        lam = ep.eigenvalues.to(self._u0)
        u = phi @ (torch.exp(-lam * tau) * (phi.T @ (self._mass * self._u0)))
        norm = float(torch.sqrt((self._mass * self._u0 ** 2).sum()))
        bound = math.exp(-float(lam[-1]) * tau) * norm / torch.sqrt(self._mass)
        return u if bool((bound <= SPECTRAL_RTOL * u).all()) else None

    def _values(self, tau):
        """(nv,) u_τ of all the data: the certified spectral sum at large τ, otherwise the
        series continued from the nearest cached earlier time."""
        if tau not in self._cache:
            u = self._spectral(tau)
            if u is None:
                earlier = [s for s in self._cache if s < tau]
                start = max(earlier) if earlier else 0.0
                u = self._advance(self._cache[start] if earlier else self._u0, tau - start)
            if len(self._cache) >= CACHE_TIMES:
                self._cache.pop(next(iter(self._cache)))
            self._cache[tau] = u
        return self._cache[tau]

    def _normaliser(self, u):
        """Z = Σ_f area_f · mean(u on f's corners): the exact integral of the P1 interpolant."""
        return (self._areas * u[self._corners].mean(dim=1)).sum()

    def _log_at(self, u0, u, tau, rows):
        """(r,) log u_τ at vertex ``rows``: log of the linear values, recomputed from u0 in log
        space where they are below the flow's floor."""
        return self.flow.log_flow(u0[:, None], u0.new_full((1, 1), tau), rows,
                                  linear=u[rows][:, None, None])[:, 0, 0]

    def _log_density(self, u0, u, tau, faces, bary, want_grad):
        rows, pos = torch.unique(self._corners[faces], return_inverse=True)
        L = self._log_at(u0, u, tau, rows)[pos]                               # (n, 3)
        log_s = torch.logsumexp(L + torch.log(bary), dim=1)
        log_p = log_s - torch.log(self._normaliser(u))
        if not want_grad:
            return log_p, None
        finite = torch.isfinite(log_s)[:, None]
        ratio = torch.where(finite, torch.exp(L - torch.where(finite, log_s[:, None], 0.0)),
                            torch.zeros_like(L))
        return log_p, torch.einsum("na,nad->nd", ratio, self._grad_bary[faces])

    # --- public -------------------------------------------------------------------------------
    def log_and_grad(self, Q, tau, want_grad=True):
        """log p_τ (n,) at points Q (n, 3) (w.r.t. area) and ∇ log p_τ (n, 3) (tangent to each
        point's face; None unless ``want_grad``)."""
        tau = _check_time(tau)
        Q = self.mesh.validate(Q, "Q")
        f, b, _ = self.mesh._located(Q)
        log_p, grad = self._log_density(self._u0, self._values(tau), tau, f, b, want_grad)
        return log_p.to(Q.dtype), (grad.to(Q.dtype) if want_grad else None)

    def _check_index(self, idx, name):
        idx = torch.as_tensor(idx, device=self.faces_.device)
        if idx.dtype in (torch.bool,) or idx.is_floating_point() or idx.ndim != 1 or idx.numel() == 0:
            raise ValueError(f"{name} must be a non-empty 1-d integer index array, found "
                             f"dtype {idx.dtype} and shape {tuple(idx.shape)}")
        n = self.faces_.shape[0]
        if bool(((idx < 0) | (idx >= n)).any()):
            raise ValueError(f"{name} has indices out of range [0, {n})")
        if float(self.weights_[idx].sum()) <= 0:
            raise ValueError(f"{name} selects points of zero total weight")
        return idx.long()

    def heldout_log_densities(self, train_idx, test_idx, taus):
        """(n_test, len(taus)) log p_τ(x_i) at the test points, p_τ fitted on the train points
        (weights renormalised), for each time (one pass: ascending times continue from each
        other)."""
        taus = as_float_tensor(taus, "taus", dtype=torch.float64).reshape(-1)
        for t in taus.tolist():
            _check_time(t, "taus")
        order = torch.argsort(taus)
        L = torch.stack(list(self._heldout_path(train_idx, test_idx, taus[order].tolist())), dim=1)
        return L[:, torch.argsort(order)]

    def heldout_log_likelihood(self, train_idx, test_idx, taus):
        """(len(taus),) the test points' weighted mean of ``heldout_log_densities``."""
        L = self.heldout_log_densities(train_idx, test_idx, taus)
        return self._test_weights(test_idx) @ L

    def _test_weights(self, test_idx):
        w = self.weights_[self._check_index(test_idx, "test_idx")]
        return w / w.sum()

    def _heldout_path(self, train_idx, test_idx, taus):
        """Yield log p_τ (n_test,) at the test points for each of the ascending ``taus``."""
        train = self._check_index(train_idx, "train_idx")
        test = self._check_index(test_idx, "test_idx")
        u0 = self._deposit(train)
        f, b = self.faces_[test], self.bary_[test]
        u, now = u0, 0.0
        for tau in taus:
            u, now = self._advance(u, tau - now), tau
            yield self._log_density(u0, u, tau, f, b, False)[0]

    def select_time(self, t_lo, t_hi, rng=None, holdout=0.2, per_decade=4, patience=2,
                    split=None):
        """Diffusion time by held-out likelihood on a random split (``holdout`` of the points
        held out, drawn with ``rng``), or on ``split = (train_idx, test_idx)`` when given.

        A geometric grid from ``t_lo`` to ``t_hi`` (``per_decade`` points a decade) is scored in
        ascending order, stopping ``patience`` points past the best; the best is then refined at
        the two half-steps beside it. Returns ``(tau, times (k,), scores (k,))``, the times
        scored and their held-out mean log-likelihoods.
        """
        t_lo, t_hi = _check_time(t_lo, "t_lo"), _check_time(t_hi, "t_hi")
        if t_hi <= t_lo:
            raise ValueError(f"t_hi must exceed t_lo, found {t_hi:g} <= {t_lo:g}")
        per_decade = check_positive_int(per_decade, "per_decade")
        patience = check_positive_int(patience, "patience")
        train, test = holdout_split(self.faces_.shape[0], holdout, rng) if split is None else split
        n_grid = max(2, math.ceil(per_decade * math.log10(t_hi / t_lo)) + 1)
        grid = np.geomspace(t_lo, t_hi, n_grid).tolist()
        w = self._test_weights(test)
        times, scores = [], []
        for tau, log_p in zip(grid, self._heldout_path(train, test, grid)):
            times.append(tau)
            scores.append(float(w @ log_p))
            if len(scores) - 1 - int(np.argmax(scores)) >= patience:
                break
        best = int(np.argmax(scores))
        half = math.sqrt(grid[1] / grid[0])
        extra = [t for t in (times[best] / half, times[best] * half) if t_lo <= t <= t_hi]
        times += extra
        scores += [float(w @ log_p) for log_p in self._heldout_path(train, test, extra)]
        order = np.argsort(times)
        times = torch.tensor(times, dtype=torch.float64)[order]
        scores = torch.tensor(scores, dtype=torch.float64)[order]
        return float(times[int(torch.argmax(scores))]), times, scores

    def sample(self, n, tau, rng=None):
        """(n, 3) exact draws from p_τ: a face with probability ∝ its integral, a corner a of it
        ∝ u_a, then barycentric coordinates ~ Dirichlet(1 + e_a) (density ∝ b_a), which makes
        the mixture exactly the linear density Σ_a b_a u_a inside the face."""
        n = check_positive_int(n, "n")
        tau = _check_time(tau)
        gen = as_generator(rng)
        u = self._values(tau)
        corner_u = u[self._corners]                                          # (nf, 3)
        dev = u.device
        cum = torch.cumsum((self._areas * corner_u.mean(dim=1)).cpu(), 0)
        faces = torch.searchsorted(cum, rand(gen, (n,), device="cpu") * cum[-1], right=True)
        faces = torch.clamp(faces, max=cum.shape[0] - 1).to(dev)
        cu = torch.cumsum(corner_u[faces], dim=1)
        a = (rand(gen, (n, 1), device=dev) * cu[:, 2:] >= cu).sum(dim=1).clamp(max=2)
        e = -torch.log1p(-rand(gen, (n, 4), device=dev))                   # Exp(1) draws
        g = e[:, :3].clone()
        g[torch.arange(n, device=dev), a] += e[:, 3]                         # Gamma(2) at corner a
        return self.mesh.from_barycentric(faces, g / g.sum(dim=1, keepdim=True))

    def integral(self, tau):
        """∫ p_τ dA by face quadrature through ``log_and_grad`` (three edge midpoints per face,
        exact for the P1 interpolant): 1 up to round-off."""
        nf = self._corners.shape[0]
        mid = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], dtype=torch.float64,
                           device=self._areas.device)
        faces = torch.arange(nf, device=mid.device).repeat_interleave(3)
        Q = self.mesh.from_barycentric(faces, mid.repeat(nf, 1))
        p = torch.exp(self.log_and_grad(Q, tau, want_grad=False)[0]).reshape(nf, 3)
        return float((self._areas * p.mean(dim=1)).sum())
