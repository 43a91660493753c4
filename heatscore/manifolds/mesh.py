"""Triangle meshes: a piecewise-flat surface with robust-laplacian eigenpairs.

Points are ``(n, 3)`` positions on the surface. Each point is located once on its face by a
spatial index (``locate``) and carried internally as (face, barycentric coordinates); its
tangent plane is its face's plane. Tie rule: a point on a shared edge or vertex belongs to the
lowest-index face containing it (within 1e-12 of the bounding-box diagonal), unless it came out
of ``exp``, ``random_uniform`` or ``from_barycentric``, which keep the face they produced.

Geometry: ``exp`` traces the straight line across faces (exact for the polyhedral surface);
``log`` and ``dist`` start from the heat method (distances) and the vector heat method
(directions) of potpourri3d and are refined by shooting with the exact tracer, so they are
exact where the shooting converges and otherwise approximate to a fraction of the mean edge
length (see ``_mesh_geodesics``).

Spectrum: robust-laplacian gives the stiffness S (positive semi-definite) and the lumped mass M;
the generator is −M⁻¹S and the eigenpairs solve S φ = λ M φ with φᵀ M φ = I.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
import weakref
from typing import Optional, Tuple

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
import torch
from threadpoolctl import threadpool_limits

from heatscore._errors import TruncationWarning
from heatscore._typing import ArrayLike, Device, PathLike, Quadrature, Rng
from heatscore._validation import (MANIFOLD_ATOL, as_float_tensor, as_generator, check_finite,
                                   check_shape, rand, randn)
from heatscore.manifolds._base import Eigenpairs, Manifold, rows_per_chunk
from heatscore.manifolds._mesh_geodesics import (CHORD_SHOOT_EDGES, HeatLogMaps, TraceTables,
                                                 estimate_log, refine_log, reverse_geodesics,
                                                 shoot_from_chord, trace_geodesics)
from heatscore.manifolds._mesh_geometry import (DEGENERATE_AREA_RTOL, FaceLocator, compact_vertices,
                                                consistent_orientation, edge_adjacency,
                                                face_components, face_geometry,
                                                non_manifold_vertices, vertex_components)

#: Meshes with at most this many vertices are solved densely (scipy.linalg.eigh).
DENSE_EIGEN_MAX_VERTICES = 1000

#: Shift of the shift-invert eigen-solve: σ = −EIGSH_SHIFT_RTOL · tr(S)/tr(M), below 0 (so the
#: constant null space, one vector per connected component, is never singular) and scale-aware.
EIGSH_SHIFT_RTOL = 1e-8

#: Completeness of a shift-invert solve: the inertia count needs a relative gap above
#: EIGEN_GAP_RTOL between λ_k and λ_{k+1}; otherwise (or when it disagrees) up to
#: EIGEN_CHECK_PASSES runs of max(EIGEN_CHECK_MIN, k/4) eigenpairs on the complement of the
#: vectors found look for missed eigenvalues.
EIGEN_GAP_RTOL = 1e-6
EIGEN_CHECK_MIN = 8
EIGEN_CHECK_PASSES = 10

#: Eigenvalues within this fraction of tr(S)/tr(M) of zero are round-off of an exact zero and
#: are reported as 0.
EIGEN_ZERO_RTOL = 1e-12

#: Located point batches remembered per mesh (weak references, keyed by tensor identity).
LOCATION_CACHE_SIZE = 8

#: Forward sampling (a geodesic random walk): each step's standard deviation √(2h) per axis is at
#: most this fraction of the mean edge length. The walk's generator matches the surface Laplacian
#: to O(h) inside faces and to first order across edges, so moments carry a bias of a few percent
#: at this step; the tests allow for it.
MESH_WALK_STEP = 0.25

#: float64 entries ``pairwise_dist`` budgets per (x, y) pair when it sizes its row chunks.
PAIR_ENTRIES = 96


class TriangleMesh(Manifold):
    """A triangle mesh ``(V, F)`` as a Riemannian 2-manifold with the induced flat metric per face.

    Parameters
    ----------
    V : (nv, 3) float array of vertex positions.
    F : (nf, 3) integer array of vertex indices per face.

    Unreferenced vertices are dropped (``vertex_index`` maps kept vertices to rows of ``V``).
    Faces must be non-degenerate and every edge shared by at most two faces (``ValueError``
    otherwise). ``log``/``dist`` also need manifold vertices and an orientable surface; they raise
    ``ValueError`` when called on a mesh without them, everything else works.

    Attributes
    ----------
    vertices (nv, 3), faces (nf, 3) long, face_areas (nf,), face_normals (nf, 3): torch tensors
    (copies: editing them does not change the mesh). area (= volume), mean_edge_length,
    bounding_box_diagonal: floats. n_components: int, faces connected through shared edges.
    stiffness, mass: scipy sparse (nv, nv) matrices S and M (computed on first use).
    """

    dim = 2
    point_shape = (3,)
    ambient_shape = (3,)
    smooth_scores = False
    discrete = True
    _deviation_name = "distance to the surface / bounding-box diagonal"

    def __init__(self, V: ArrayLike, F: ArrayLike) -> None:
        V = _as_numpy_vertices(V)
        F = _as_numpy_faces(F, len(V))
        V, F, kept = compact_vertices(V, F)
        edge_lengths = np.linalg.norm(V[F] - V[np.roll(F, -1, axis=1)], axis=2)
        self.mean_edge_length = float(edge_lengths.mean())
        cross = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
        degenerate = np.flatnonzero(0.5 * np.linalg.norm(cross, axis=1)
                                    <= DEGENERATE_AREA_RTOL * self.mean_edge_length ** 2)
        if len(degenerate):
            raise ValueError(f"F has {len(degenerate)} degenerate (zero-area) faces, e.g. face "
                             f"{int(degenerate[0])} = {F[degenerate[0]].tolist()}")
        self._neighbour, self._neighbour_corner, self._same_direction = edge_adjacency(F)
        areas, normals, grad_bary = face_geometry(V, F)
        self._V, self._F, self._areas, self._normals, self._grad_bary = V, F, areas, normals, grad_bary
        self.vertex_index = torch.tensor(kept)
        self.vertices = torch.tensor(V)
        self.faces = torch.tensor(F)
        self.face_areas = torch.tensor(areas)
        self.face_normals = torch.tensor(normals)
        self.area = float(areas.sum())
        self.volume = self.area
        self.n_components, self._face_component = face_components(self._neighbour)
        self._locator = FaceLocator(V, F)
        self.bounding_box_diagonal = self._locator.diagonal
        self._tables = {}
        self._digest = None
        self._locations = []
        self._log_maps = None
        self._laplacian = None
        self._eigen = None

    @classmethod
    def from_file(cls, path: PathLike) -> TriangleMesh:
        """Read an OBJ, PLY, OFF or STL file through ``potpourri3d.read_mesh``."""
        import potpourri3d as pp3d

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"path: no mesh file at {path!r}")
        V, F = pp3d.read_mesh(path)
        return cls(V, F)

    def __repr__(self) -> str:
        return f"TriangleMesh(n_vertices={len(self._V)}, n_faces={len(self._F)})"

    def _key(self):
        """A digest of the vertex and face arrays (meshes with the same V and F are equal)."""
        if self._digest is None:
            h = hashlib.sha256()
            for a in (self._V, self._F):
                h.update(str(a.shape).encode())
                h.update(np.ascontiguousarray(a).tobytes())
            self._digest = h.hexdigest()
        return (self._digest,)

    def _spec(self):
        return {"kind": "TriangleMesh"}, {"mesh_vertices": self._V, "mesh_faces": self._F}

    @classmethod
    def _from_spec(cls, spec, arrays, build):
        return cls(arrays["mesh_vertices"], arrays["mesh_faces"])

    cli_name = "mesh"
    plot_view = "mesh"

    def _column_names(self):
        return ("x", "y", "z")

    def _features(self, x):
        """(x − centre)/diagonal of the bounding box."""
        v = self.vertices.to(device=x.device, dtype=x.dtype)
        centre = 0.5 * (v.min(dim=0).values + v.max(dim=0).values)
        return (x - centre) / self.bounding_box_diagonal

    # --- location ----------------------------------------------------------------------------
    def _table(self, device):
        key = str(device)
        if key not in self._tables:
            self._tables[key] = TraceTables(self._V, self._F, self._normals, self._grad_bary,
                                            self._neighbour, self._neighbour_corner, device)
        return self._tables[key]

    def _remember(self, x, location):
        try:
            version = x._version
        except RuntimeError:                                   # inference tensors: no versions
            return
        self._locations.append((weakref.ref(x), version, location))
        del self._locations[:-LOCATION_CACHE_SIZE]

    def _located(self, x):
        """``(faces (n,), bary (n, 3) float64, deviation (n,))`` on x's device, located once per tensor."""
        for ref, version, location in reversed(self._locations):
            if ref() is x:
                try:
                    if x._version == version:
                        return location
                except RuntimeError:
                    pass
                break
        n = x.shape[0]
        if n > 1 and x.stride(0) == 0:                        # a broadcast single row
            f, b, d = self._located(x[:1])
            location = (f.expand(n), b.expand(n, 3), d.expand(n))
        else:
            P = x.detach().to(device="cpu", dtype=torch.float64).numpy()
            f, b, d = self._locator.locate(P)
            location = (torch.as_tensor(f, device=x.device), torch.as_tensor(b, device=x.device),
                        torch.as_tensor(d / self.bounding_box_diagonal, device=x.device))
        self._remember(x, location)
        return location

    def _off_manifold(self, x):
        return self._located(x)[2].to(x.dtype)

    def belongs(self, x: ArrayLike, atol: Optional[float] = None) -> torch.Tensor:
        """(n,) bool: distance to the surface / bounding-box diagonal within tolerance."""
        x = as_float_tensor(x, "x")
        check_shape(x, "x", self.point_shape)
        if not bool(torch.isfinite(x).all()):
            return super().belongs(x, atol)
        tol = MANIFOLD_ATOL.get(x.dtype, 1e-6) if atol is None else atol
        return self._off_manifold(x) <= tol                  # locates x itself (remembered)

    def locate(self, x: ArrayLike) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(faces (n,) long, bary (n, 3) float64)``: each point's face and barycentric coordinates."""
        x = self.validate(x, "x")
        f, b, _ = self._located(x)
        return f, b

    def from_barycentric(self, faces: ArrayLike, bary: ArrayLike) -> torch.Tensor:
        """(n, 3) float64 points Σ_i bary_i V[F[face, i]]; ``bary`` ≥ 0 summing to 1 per row."""
        bary = as_float_tensor(bary, "bary", dtype=torch.float64)
        check_shape(bary, "bary", (3,), what="barycentric coordinates")
        check_finite(bary, "bary")
        faces = torch.as_tensor(faces, device=bary.device)
        if faces.is_floating_point() or faces.is_complex() or faces.dtype == torch.bool:
            raise TypeError(f"faces must be an integer array, found dtype {faces.dtype}")
        if faces.shape != bary.shape[:1]:
            raise ValueError(f"faces must have shape ({bary.shape[0]},) to match bary, "
                             f"found {tuple(faces.shape)}")
        faces = faces.long()
        bad = (faces < 0) | (faces >= len(self._F))
        if bool(bad.any()):
            raise ValueError(f"faces has {int(bad.sum())} indices out of range [0, {len(self._F)})")
        off = (bary < -1e-12).any(dim=1) | ((bary.sum(dim=1) - 1).abs() > 1e-10)
        if bool(off.any()):
            raise ValueError(f"bary has {int(off.sum())} rows that are not barycentric coordinates "
                             "(entries >= 0 summing to 1)")
        bary = torch.clamp(bary, min=0.0)
        bary = bary / bary.sum(dim=1, keepdim=True)
        return self._make_points(faces, bary, torch.float64)

    def _make_points(self, faces, bary, dtype):
        """Points from (face, bary), remembered as already located."""
        x = self._table(bary.device).points(faces, bary).to(dtype)
        self._remember(x, (faces, bary, torch.zeros(faces.shape[0], dtype=torch.float64,
                                                     device=bary.device)))
        return x

    # --- geometry ----------------------------------------------------------------------------
    def _proj(self, x, v):
        f, _, _ = self._located(x)
        n = self._table(x.device).normals[f].to(v.dtype)
        return v - (v * n).sum(dim=1, keepdim=True) * n

    def _exp(self, x, v):
        """Trace the geodesic from x along the face-plane part of v (stops at boundary edges)."""
        f, b, _ = self._located(x)
        tables = self._table(x.device)
        direction = tables.project(f, v.to(torch.float64))
        f_end, b_end = trace_geodesics(tables, f, b, direction)
        return self._make_points(f_end, b_end, x.dtype)

    def _geodesics(self, x, y):
        """Row-paired (log (n, 3) float64, dist (n,) float64, same component (n,) bool).

        Same face: the straight segment. Nearby pairs: shooting from the chord, kept when
        certified. Others: the heat-method estimate refined by shooting.
        """
        self._heat_maps()                                     # ValueError on unsupported meshes
        fx, bx, _ = self._located(x)
        fy, by, _ = self._located(y)
        tables = self._table(x.device)
        h = self.mean_edge_length
        px, py = tables.points(fx, bx), tables.points(fy, by)
        comp = torch.as_tensor(self._face_component, device=x.device)
        connected = comp[fx] == comp[fy]
        vec = torch.zeros_like(px)
        same_face = fx == fy
        vec[same_face] = tables.project(fx[same_face], py[same_face] - px[same_face])
        todo = ~same_face & connected
        near = torch.nonzero(todo & (torch.linalg.norm(py - px, dim=1) <= CHORD_SHOOT_EDGES * h))
        near = near.flatten()
        if near.numel():
            v_near, certified = shoot_from_chord(tables, fx[near], bx[near], px[near], py[near], h)
            vec[near[certified]] = v_near[certified]
            todo[near[certified]] = False
        rest = torch.nonzero(todo).flatten()
        if rest.numel():
            vec[rest] = self._heat_geodesics(tables, fx[rest], bx[rest], px[rest], fy[rest],
                                             by[rest], py[rest])
        dist = torch.linalg.norm(vec, dim=1)
        dist = torch.where(connected, dist, torch.full_like(dist, float("inf")))
        return vec, dist, connected

    def _heat_geodesics(self, tables, fx, bx, px, fy, by, py):
        """log_x(y) (n, 3) from heat estimates in both directions, each refined by shooting.

        The shorter converged geodesic wins (one found from y is reversed); when neither
        converges the length is the mean of the two heat estimates, so dist is symmetric.
        """
        maps, frames_oriented = self._heat_maps()
        h = self.mean_edge_length

        def one_way(fa, ba, pa, fb, bb, pb):
            cpu = [t.cpu().numpy() for t in (fa, ba, pa, fb, bb, pb)]
            v0 = estimate_log(maps, self._V, self._F, frames_oriented, *cpu, mean_edge=h)
            v0 = torch.as_tensor(v0, device=pa.device)
            v, converged = refine_log(tables, fa, ba, v0, pb, h)
            return v, converged, torch.linalg.norm(v0, dim=1)

        v_xy, conv_xy, est_xy = one_way(fx, bx, px, fy, by, py)
        v_yx, conv_yx, est_yx = one_way(fy, by, py, fx, bx, px)
        len_xy, len_yx = torch.linalg.norm(v_xy, dim=1), torch.linalg.norm(v_yx, dim=1)
        use_yx = conv_yx & ~(conv_xy & (len_xy <= len_yx))
        out = v_xy.clone()
        if bool(use_yx.any()):
            out[use_yx] = reverse_geodesics(tables, fy[use_yx], by[use_yx], v_yx[use_yx], fx[use_yx])
        neither = ~conv_xy & ~conv_yx
        scale = 0.5 * (est_xy + est_yx) / torch.clamp(len_xy, min=1e-300)
        out[neither] = v_xy[neither] * scale[neither, None]
        return out

    def _heat_maps(self):
        """(HeatLogMaps, frames (nf, 2, 3) oriented like potpourri3d's faces), built once;
        ``ValueError`` for meshes potpourri3d cannot take (non-manifold vertices, non-orientable)."""
        if self._log_maps is None:
            bad = non_manifold_vertices(self._F, self._neighbour, len(self._V))
            if len(bad):
                raise ValueError(f"log/dist need a manifold mesh: {len(bad)} vertices have "
                                 f"disconnected face fans, e.g. vertex {int(bad[0])}")
            F_oriented = consistent_orientation(self._F, self._neighbour, self._same_direction)
            if F_oriented is None:
                raise ValueError("log/dist need an orientable mesh (potpourri3d's vector heat "
                                 "method): the faces F cannot be oriented consistently")
            n_comp, labels = vertex_components(self._F, len(self._V))
            _, normals_oriented, _ = face_geometry(self._V, F_oriented)
            P = self._V[self._F]
            t1 = P[:, 1] - P[:, 0]
            t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
            frames = np.stack([t1, np.cross(normals_oriented, t1)], axis=1)
            self._log_maps = (HeatLogMaps(self._V, F_oriented, labels, n_comp), frames)
        return self._log_maps

    def _log(self, x, y):
        vec, _, connected = self._geodesics(x, y)
        if not bool(connected.all()):
            raise ValueError(f"y has {int((~connected).sum())} points on another connected "
                             "component than the paired x: log is undefined there")
        return vec.to(x.dtype)

    def _dist(self, x, y):
        return self._geodesics(x, y)[1].to(x.dtype)

    def pairwise_dist(self, x: ArrayLike, y: Optional[ArrayLike] = None,
                      chunk_size: Optional[int] = None) -> torch.Tensor:
        """(n, m) geodesic distances (inf across connected components), chunked over rows of x.

        Same algorithm as ``dist`` on the flattened pairs. Cost: a traced shooting per pair; pairs
        not settled by shooting from the chord add one heat and one vector-heat solve per distinct
        vertex of their faces (cached, about 64 MB).
        """
        x = self.validate(x, "x")
        y = x if y is None else self.validate(y, "y").to(x.dtype)
        n, m = x.shape[0], y.shape[0]
        out = torch.empty((n, m), dtype=x.dtype, device=x.device)
        if n == 0 or m == 0:
            return out
        fx, bx, dx = self._located(x)
        fy, by, dy = self._located(y)
        step = chunk_size or rows_per_chunk(m, PAIR_ENTRIES)
        for i in range(0, n, step):
            k = min(step, n - i)
            xi = self._pair_points(x[i:i + k], (fx[i:i + k], bx[i:i + k], dx[i:i + k]), m, True)
            yi = self._pair_points(y, (fy, by, dy), k, False)
            out[i:i + k] = self._geodesics(xi, yi)[1].reshape(k, m).to(x.dtype)
        return out

    def _pair_points(self, x, location, times, interleave):
        """Rows of x repeated for the flattened pairs, remembered as located."""
        f, b, d = location
        if interleave:
            rep = (x.repeat_interleave(times, 0), f.repeat_interleave(times, 0),
                   b.repeat_interleave(times, 0), d.repeat_interleave(times, 0))
        else:
            rep = (x.repeat(times, 1), f.repeat(times), b.repeat(times, 1), d.repeat(times))
        self._remember(rep[0], rep[1:])
        return rep[0]

    # --- sampling ----------------------------------------------------------------------------
    def random_uniform(self, n: int, rng: Rng = None, dtype: torch.dtype = torch.float64,
                       device: Device = None) -> torch.Tensor:
        """Uniform points w.r.t. area: a face with probability ∝ area, then b = (1 − √r₁,
        √r₁(1 − r₂), √r₁ r₂) with r₁, r₂ ~ U(0, 1)."""
        n = self._check_n(n)
        gen = as_generator(rng, device)
        dev = gen.device if device is None else torch.device(device)
        cum = torch.cumsum(torch.as_tensor(self._areas, device=gen.device), 0)
        u = rand(gen, (n,), device=gen.device) * cum[-1]
        faces = torch.clamp(torch.searchsorted(cum, u, right=True), max=len(self._F) - 1)
        r = rand(gen, (n, 2), device=gen.device)
        s = torch.sqrt(r[:, 0])
        bary = torch.stack([1.0 - s, s * (1.0 - r[:, 1]), s * r[:, 1]], dim=1)
        return self._make_points(faces.to(dev), bary.to(dev), dtype)

    def _random_tangent_normal(self, x, gen):
        """z₁ t₁ + z₂ t₂ with (t₁, t₂) an orthonormal frame of the face plane, z ~ N(0, I₂)."""
        f, _, _ = self._located(x)
        z = randn(gen, (x.shape[0], 2), dtype=torch.float64, device=x.device)
        frames = self._table(x.device).frames[f]
        return torch.einsum("nk,nkd->nd", z, frames).to(x.dtype)

    def _sample_heat_kernel(self, x0, t, gen):
        """Geodesic random walk y ← exp_y(√(2h_i) ξ_i), ξ_i ~ N(0, I) in the face plane.

        Every point takes the same number of steps, ⌈max t / h_max⌉ with h_max =
        (MESH_WALK_STEP·ē)²/2, each with its own step h_i = t_i / n_steps ≤ h_max. All points
        move at every step, and ``exp`` returns them already located on their faces, so no point
        is searched for again after the start.
        """
        h_max = 0.5 * (MESH_WALK_STEP * self.mean_edge_length) ** 2
        n_steps = max(1, math.ceil(float(t.max()) / h_max))
        scale = torch.sqrt(2 * t / n_steps).reshape(-1, 1)
        y = x0
        for _ in range(n_steps):
            y = self._exp(y, scale * self._random_tangent_normal(y, gen))
        return y

    # --- spectrum ----------------------------------------------------------------------------
    def _first_eigenvalue(self):
        """The first positive eigenvalue: one eigenvalue per connected component is zero."""
        lam = self.__dict__.get("_lambda1")
        if lam is None:
            lam = self.__dict__["_lambda1"] = float(
                self.eigenpairs(self.n_components + 1).eigenvalues[-1])
        return lam

    _default_levels = 100

    def quadrature(self, n: Optional[int] = None) -> Quadrature:
        """The vertices with the lumped mass (``n`` ignored): exact for P1 functions' integrals
        against the lumped mass M."""
        return self.vertices.clone(), torch.as_tensor(self.mass.diagonal()).to(torch.float64)

    def _make_heat_backend(self):
        from heatscore.manifolds._mesh_kernel import MeshBackend
        return MeshBackend(self)

    @property
    def stiffness(self) -> scipy.sparse.csr_matrix:
        """S (nv, nv) scipy CSR: robust-laplacian's positive semi-definite cotangent stiffness."""
        return self._laplacian_pair()[0]

    @property
    def mass(self) -> scipy.sparse.csr_matrix:
        """M (nv, nv) scipy CSR: robust-laplacian's lumped (diagonal) mass matrix."""
        return self._laplacian_pair()[1]

    def _laplacian_pair(self):
        if self._laplacian is None:
            import robust_laplacian

            S, M = robust_laplacian.mesh_laplacian(self._V, self._F)
            self._laplacian = (scipy.sparse.csr_matrix(S), scipy.sparse.csr_matrix(M))
        return self._laplacian

    def eigenpairs(self, n_levels: int) -> MeshEigenpairs:
        """The first ``n_levels`` eigenpairs of S φ = λ M φ (each eigenpair is its own level).

        Computed once for the largest request (smaller ones slice the cache). Eigenvectors are
        M-orthonormal, signed so that each one's largest-magnitude entry is positive.
        """
        n_levels = self._check_levels(n_levels)
        if n_levels > len(self._V):
            raise ValueError(f"n_levels must be at most the number of vertices ({len(self._V)}), "
                             f"found {n_levels}")
        if self._eigen is None or self._eigen[0].shape[0] < n_levels:
            self._eigen = solve_eigenpairs(self.stiffness, self.mass, n_levels)
        values, vectors = self._eigen
        return MeshEigenpairs(self, torch.tensor(values[:n_levels]),
                              torch.tensor(vectors[:, :n_levels]))


class MeshEigenpairs(Eigenpairs):
    """Mesh eigenpairs: P1 (piecewise-linear) interpolation of the vertex eigenvectors.

    ``vectors`` (nv, K): M-orthonormal eigenvectors. ``ep(x)`` = Σ_i b_i φ(v_i) (differentiable in
    x through the face's affine barycentric map); ``ep.grad(x)`` (n, K, 3) is the exact gradient
    of the P1 interpolant, constant on each face and tangent to it.
    """

    def __init__(self, manifold: TriangleMesh, eigenvalues: torch.Tensor,
                 vectors: torch.Tensor) -> None:
        K = eigenvalues.shape[0]
        super().__init__(manifold, eigenvalues, torch.arange(K), torch.ones(K, dtype=torch.long))
        self.vectors = vectors
        self._on_device = {}

    def _vectors(self, device):
        key = str(device)
        if key not in self._on_device:
            self._on_device[key] = self.vectors.to(device)
        return self._on_device[key]

    def _values(self, x):
        f, b, _ = self.manifold._located(x)
        tables = self.manifold._table(x.device)
        if x.requires_grad:                                    # same value, gradient ∇b_i
            dx = (x - x.detach()).to(torch.float64)
            b = b + torch.einsum("nij,nj->ni", tables.grad_bary[f], dx)
        U, corners = self._vectors(x.device), tables.F[f]
        out = sum(b[:, i:i + 1] * U[corners[:, i]] for i in range(3))
        return out.to(x.dtype)

    def _grad(self, x):
        f, _, _ = self.manifold._located(x)
        tables = self.manifold._table(x.device)
        U, corners, G = self._vectors(x.device), tables.F[f], tables.grad_bary[f]
        out = sum(U[corners[:, i]][:, :, None] * G[:, i][:, None, :] for i in range(3))
        return out.to(x.dtype)


def solve_eigenpairs(S: scipy.sparse.spmatrix, M: scipy.sparse.spmatrix,
                     k: int) -> Tuple[np.ndarray, np.ndarray]:
    """The ``k`` smallest eigenpairs of S φ = λ M φ, M diagonal: (values (k,), vectors (nv, k)) numpy.

    Dense ``eigh`` on small meshes. Otherwise shift-invert Lanczos on the symmetric standard form:
    with D = M^½ and one sparse LU of the positive definite S − σM (σ < 0, symmetric ordering,
    diagonal pivots), ``eigsh`` finds the largest θ of D (S − σM)⁻¹ D, λ = σ + 1/θ, φ = D⁻¹ψ.
    A single Krylov sequence can miss copies of a repeated eigenvalue (symmetric meshes): the
    number of eigenvalues below the midpoint of λ_k and λ_{k+1} is counted by Sylvester's
    inertia (the signs of an LDLᵀ of S − μM); when it is not k, or cannot be told, a run on the
    complement of the vectors found looks for the missed ones and merges them. Start vectors
    are fixed, so results are reproducible. The vectors are M-orthonormal; each is signed so that
    its largest-magnitude entry is positive. BLAS runs on one thread: Lanczos' level-2 operations
    gain little from threads, and on a busy machine oversubscribed BLAS threads made this solve
    several times slower.
    """
    n = S.shape[0]
    mass = M.diagonal()
    if M.count_nonzero() != np.count_nonzero(mass):
        raise ValueError("M must be a diagonal (lumped) mass matrix")
    scale = S.diagonal().sum() / mass.sum()
    with threadpool_limits(limits=1, user_api="blas"):
        if n <= DENSE_EIGEN_MAX_VERTICES or k >= n - 2:
            values, vectors = scipy.linalg.eigh(S.toarray(), M.toarray(), subset_by_index=[0, k - 1])
        else:
            values, vectors = _shift_invert_eigenpairs(S, M, k, -EIGSH_SHIFT_RTOL * scale)
    order = np.argsort(values)
    values, vectors = values[order], vectors[:, order]
    values[np.abs(values) <= EIGEN_ZERO_RTOL * scale] = 0.0
    peak = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(k)]
    return values, vectors * np.sign(peak)


def _shift_invert_eigenpairs(S, M, k, sigma):
    """Shift-invert Lanczos with checked completeness (see ``solve_eigenpairs``): values, vectors."""
    n = S.shape[0]
    root = np.sqrt(M.diagonal())
    lu = _symmetric_lu(S - sigma * M)
    rng = np.random.default_rng(0)

    def inverse(v):
        return root * lu.solve(root * v)

    m = k + 1                                                 # one more: λ_k's gap to λ_{k+1}
    theta, psi = scipy.sparse.linalg.eigsh(
        scipy.sparse.linalg.LinearOperator((n, n), matvec=inverse, dtype=np.float64),
        m, which="LA", v0=rng.standard_normal(n))
    for _ in range(EIGEN_CHECK_PASSES):
        order = np.argsort(-theta)
        theta, psi = theta[order], psi[:, order]
        if _exactly_k_below(S, M, sigma + 1.0 / theta, k):
            break

        def deflated(v, basis=psi):
            v = v - basis @ (basis.T @ v)
            w = inverse(v)
            return w - basis @ (basis.T @ w)

        n_check = min(m, max(EIGEN_CHECK_MIN, k // 4), n - m - 1)
        theta2, psi2 = scipy.sparse.linalg.eigsh(
            scipy.sparse.linalg.LinearOperator((n, n), matvec=deflated, dtype=np.float64),
            n_check, which="LA", v0=rng.standard_normal(n))
        missed = theta2 > theta[k - 1] * (1 + 1e-10)
        if not missed.any():
            break
        theta = np.concatenate([theta, theta2[missed]])
        psi = np.concatenate([psi, psi2[:, missed]], axis=1)
        keep = np.argsort(-theta)[:m]
        theta, psi = theta[keep], psi[:, keep]
    else:
        warnings.warn(f"eigenpairs: eigenvalues below λ_{k} still turned up after "
                      f"{EIGEN_CHECK_PASSES} deflated checks", TruncationWarning, stacklevel=3)
    return sigma + 1.0 / theta[:k], psi[:, :k] / root[:, None]


def _symmetric_lu(A):
    """Sparse LU of a symmetric matrix with a symmetric ordering and diagonal pivots (A = LDLᵀ)."""
    return scipy.sparse.linalg.splu(A.tocsc(), permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                                    options={"SymmetricMode": True})


def _exactly_k_below(S, M, values, k):
    """Sylvester's inertia: does S − μM, μ midway between values[k−1] and values[k], have exactly
    k negative pivots (no eigenvalue below λ_k missed)? False when it cannot tell: a gap below
    EIGEN_GAP_RTOL, or pivots off the diagonal."""
    low, high = values[k - 1], values[k]
    if high - low <= EIGEN_GAP_RTOL * max(abs(high), 1e-300):
        return False
    lu = _symmetric_lu(S - 0.5 * (low + high) * M)
    if not np.array_equal(lu.perm_r, lu.perm_c):
        return False
    return int(np.count_nonzero(lu.U.diagonal() < 0)) == k


def _as_numpy_vertices(V):
    V = as_float_tensor(V, "V", dtype=torch.float64)
    if V.ndim != 2 or V.shape[1] != 3 or V.shape[0] < 3:
        raise ValueError(f"V must be vertex positions of shape (nv, 3) with nv >= 3, found shape "
                         f"{tuple(V.shape)}")
    bad = ~torch.isfinite(V).all(dim=1)
    if bool(bad.any()):
        raise ValueError(f"V must be finite: found {int(bad.sum())} vertices with NaN/inf, "
                         f"e.g. vertex {int(torch.nonzero(bad)[0])}")
    return V.cpu().numpy().copy()


def _as_numpy_faces(F, n_vertices):
    if isinstance(F, torch.Tensor):
        F = F.detach().cpu().numpy()
    F = np.asarray(F)
    if F.dtype == object or not np.issubdtype(F.dtype, np.integer):
        raise TypeError(f"F must be an integer array of vertex indices, found dtype {F.dtype}")
    if F.ndim != 2 or F.shape[1] != 3 or F.shape[0] < 1:
        raise ValueError(f"F must be triangles of shape (nf, 3) with nf >= 1, found shape {F.shape}")
    F = F.astype(np.int64)
    bad = (F < 0) | (F >= n_vertices)
    if bad.any():
        face = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"F has {int(bad.sum())} vertex indices out of range [0, {n_vertices}), "
                         f"e.g. face {face} = {F[face].tolist()}")
    return F
