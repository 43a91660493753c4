"""Private helpers of ``TriangleMesh``: geodesic tracing (exp) and heat-method log maps.

Tracing works in torch on the points' device: a geodesic of a piecewise-flat surface is a
straight line in the unfolded strip of faces it crosses. Log maps start from potpourri3d's heat
method (distances) and vector heat method (directions) and are refined by shooting with the
exact tracer.
"""

import warnings
from collections import OrderedDict

import numpy as np
import torch

from heatscore._errors import TruncationWarning
from heatscore.manifolds._base import rowdot, rowsum

#: Trace steps allowed per (longest length / smallest face altitude), plus a constant: a
#: geodesic crosses at most about one face per altitude travelled, and turning around a vertex
#: costs at most its valence.
TRACE_STEPS_PER_ALTITUDE = 8
TRACE_MIN_STEPS = 256

#: Log-map estimate: below NEAR (in mean edge lengths) the length of the vector estimate is
#: used, above FAR the barycentric interpolation of vertex-to-vertex heat distances (robust near
#: cut loci); linear blend in between.
LOG_NEAR_EDGES = 2.0
LOG_FAR_EDGES = 4.0

#: Shooting refinement of log: Newton steps, convergence tolerance (fraction of the mean edge
#: length), consecutive steps without progress before a row gives up, and the largest accepted
#: excess of the refined length over the heat estimate, in mean edge lengths or relative (the
#: heat estimate is within about one edge length on Spot; a longer converged geodesic is a
#: different, non-shortest one).
REFINE_ITERATIONS = 8
REFINE_TOL = 1e-9
REFINE_STALLS = 2
REFINE_SLACK_EDGES = 1.0
REFINE_SLACK_RATIO = 0.1

#: Pairs closer than CHORD_SHOOT_EDGES mean edge lengths (straight-line distance) first try
#: shooting from the chord, accepted when the geodesic found is at most CHORD_CERT_EDGES mean
#: edge lengths longer than the chord (a lower bound of the distance).
CHORD_SHOOT_EDGES = 5.0
CHORD_CERT_EDGES = 0.1

#: Cached per-vertex heat maps, in float64 entries (about 64 MB).
MAP_CACHE_ENTRIES = 2**23


def _corner_map(F, neighbour):
    """(nf·3, 3) long: row 3f + k maps the corners of g = neighbour[f, k] to corners of f,
    the corner of f holding the same vertex, or k for g's corner opposite the shared edge
    (where the crossing's barycentric coordinate b_k is 0), so b_g = b_f[row]."""
    F = np.asarray(F)
    out = np.empty((len(F), 3, 3), dtype=np.int64)
    for k in range(3):
        g = np.maximum(np.asarray(neighbour)[:, k], 0)        # boundary edges: never crossed
        for m in range(3):
            match = F == F[g, m][:, None]                     # (nf, 3): f's corners with that vertex
            out[:, k, m] = np.where(match.any(axis=1), match.argmax(axis=1), k)
    return out.reshape(-1, 3)


class TraceTables:
    """Torch copies of the per-face tables the tracer needs, on one device (float64)."""

    def __init__(self, V, F, normals, grad_bary, neighbour, neighbour_corner, device):
        as64 = dict(dtype=torch.float64, device=device)
        self.V = torch.as_tensor(V, **as64)
        self.F = torch.as_tensor(F, dtype=torch.long, device=device)
        self.normals = torch.as_tensor(normals, **as64)
        self.grad_bary = torch.as_tensor(grad_bary, **as64)
        gnorm = np.linalg.norm(grad_bary, axis=2, keepdims=True)
        # Unit in-plane normal of the edge opposite each corner, pointing out of the face.
        self.outward = torch.as_tensor(-grad_bary / gnorm, **as64)
        self.neighbour = torch.as_tensor(neighbour, dtype=torch.long, device=device)
        self.neighbour_corner = torch.as_tensor(neighbour_corner, dtype=torch.long, device=device)
        self.corner_map = torch.as_tensor(_corner_map(F, neighbour), dtype=torch.long, device=device)
        P = V[F]
        t1 = P[:, 1] - P[:, 0]
        t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
        self.frames = torch.as_tensor(np.stack([t1, np.cross(normals, t1)], axis=1), **as64)
        self.min_altitude = float(1.0 / gnorm.max())

    def points(self, faces, bary):
        """(n, 3) points Σ_i b_i V[F[f, i]]."""
        return torch.einsum("ni,nij->nj", bary, self.V[self.F[faces]])

    def project(self, faces, v):
        """Component of ``v`` (n, 3) in the plane of ``faces``."""
        n = self.normals.index_select(0, faces)
        return torch.addcmul(v, n, rowdot(v, n).unsqueeze(1), value=-1.0)


def trace_geodesics(tables, faces, bary, v, carry=None):
    """Walk the straight line from (face, bary) along tangent ``v`` for length |v|.

    Inside a face the barycentric coordinates move linearly (db = ∇b · u per unit length); at the
    first edge hit the walk crosses into the neighbour, rotating the direction about the shared
    edge (u ← u − (u·w_f)(w_f + w_g), w the outward in-plane edge normals), which unfolds the two
    faces into one plane. The walk stops early at a boundary edge. ``carry`` (n, k, 3): vectors in
    the start face's plane, transported the same way (parallel transport along the geodesic).

    Returns ``(faces (n,), bary (n, 3))`` of the end points, and the carried vectors if given.
    """
    faces, bary = faces.clone(), bary.clone()
    carry = None if carry is None else carry.clone()
    length = torch.linalg.norm(v, dim=1)
    todo = torch.nonzero(length > 0).flatten()
    if todo.numel() == 0:
        return (faces, bary) if carry is None else (faces, bary, carry)
    f, b = faces[todo], bary[todo]
    left = length[todo]
    u = v[todo] / left[:, None]
    c = None if carry is None else carry[todo]
    entry = torch.full_like(f, -1)
    corner_ids = torch.arange(3, device=f.device)
    max_steps = TRACE_MIN_STEPS + int(TRACE_STEPS_PER_ALTITUDE * float(left.max()) / tables.min_altitude)
    neighbour, neighbour_corner = tables.neighbour.view(-1), tables.neighbour_corner.view(-1)
    outward = tables.outward.view(-1, 3)                      # row 3f + k: face f's edge k
    for _ in range(max_steps):
        db = rowdot(tables.grad_bary.index_select(0, f), u[:, None, :])   # ∇b_i · u (n, 3)
        leaving = (db < 0) & (corner_ids[None, :] != entry[:, None])
        s = b.div(db.neg()).masked_fill_(~leaving, float("inf"))  # exit parameter per edge
        k = s.argmin(dim=1)                                   # (min(dim=...) is slow on CPU)
        s_exit = s.gather(1, k[:, None]).squeeze(1)
        ends = s_exit >= left
        fk = 3 * f + k                                        # flat (face, edge) index
        g = neighbour.index_select(0, fk)
        stops = ~ends & (g < 0)                               # boundary edge: stop on it
        step = torch.where(ends, left, s_exit)
        b = torch.addcmul(b, step[:, None], db)
        b.masked_fill_((~ends & ~stops)[:, None] & (corner_ids[None, :] == k[:, None]), 0.0)
        b.clamp_(min=0.0)
        b = b / rowsum(b).unsqueeze(1)
        finished = ends | stops
        done = torch.nonzero(finished).flatten()
        if done.numel():
            idx = todo.index_select(0, done)
            faces[idx], bary[idx] = f.index_select(0, done), b.index_select(0, done)
            if carry is not None:
                carry[idx] = c.index_select(0, done)
        if done.numel() == finished.numel():
            break
        keep = torch.nonzero(~finished).flatten()
        todo, f, b, g, fk = (a.index_select(0, keep) for a in (todo, f, b, g, fk))
        u, left = u.index_select(0, keep), (left - s_exit).index_select(0, keep)
        j = neighbour_corner.index_select(0, fk)
        w_f = outward.index_select(0, fk)
        w_sum = w_f + outward.index_select(0, 3 * g + j)
        u = torch.addcmul(u, w_sum, rowdot(u, w_f).unsqueeze(1), value=-1.0)
        u = tables.project(g, u)
        u = u / rowdot(u, u).sqrt_().unsqueeze(1)
        if carry is not None:
            c = c.index_select(0, keep)
            c = c - (c * w_f[:, None, :]).sum(dim=2, keepdim=True) * w_sum[:, None, :]
            n_g = tables.normals[g][:, None, :]
            c = c - (c * n_g).sum(dim=2, keepdim=True) * n_g
        # Barycentric coordinates in g: match the shared vertices.
        b = b.gather(1, tables.corner_map.index_select(0, fk))
        f, entry = g, j
    else:
        warnings.warn(f"{todo.numel()} geodesics did not finish in {max_steps} face crossings; "
                      "they stop where they are", TruncationWarning, stacklevel=3)
        faces[todo], bary[todo] = f, b
        if carry is not None:
            carry[todo] = c
    return (faces, bary) if carry is None else (faces, bary, carry)


class HeatLogMaps:
    """Heat-method distances and vector-heat directions from vertices, per connected component.

    potpourri3d needs a manifold, consistently oriented mesh with no unreferenced vertex: each
    component is handed over separately with its faces re-oriented (``F_oriented``).
    """

    def __init__(self, V, F_oriented, vertex_labels, n_components):
        import potpourri3d as pp3d

        self._pp3d = pp3d
        self.V = V
        self.labels = vertex_labels
        self.local = np.zeros(len(V), dtype=np.int64)
        self._members, self._faces, self._solvers = [], [], {}
        face_labels = vertex_labels[F_oriented[:, 0]]
        for comp in range(n_components):
            members = np.flatnonzero(vertex_labels == comp)
            self.local[members] = np.arange(len(members))
            self._members.append(members)
            self._faces.append(self.local[F_oriented[face_labels == comp]])
        self._cache = OrderedDict()
        self._cached_entries = 0

    def _solver(self, comp):
        if comp not in self._solvers:
            V, F = self.V[self._members[comp]], self._faces[comp]
            self._solvers[comp] = (self._pp3d.MeshHeatMethodDistanceSolver(V, F),
                                   self._pp3d.MeshVectorHeatSolver(V, F))
        return self._solvers[comp]

    def vertex_map(self, v):
        """``(distance (nc,), direction (nc, 2))`` from vertex ``v`` to its component's vertices.

        Directions are unit vectors in v's vector-heat tangent frame (0 at v itself).
        """
        if v in self._cache:
            self._cache.move_to_end(v)
            return self._cache[v]
        heat, vector = self._solver(int(self.labels[v]))
        lv = int(self.local[v])
        dist = np.asarray(heat.compute_distance(lv), dtype=np.float64).ravel()
        dist[lv] = 0.0
        log = np.asarray(vector.compute_log_map(lv, "VectorHeat"), dtype=np.float64)
        norm = np.linalg.norm(log, axis=1, keepdims=True)
        direction = np.divide(log, norm, out=np.zeros_like(log), where=norm > 0)
        entry = (dist, direction)
        self._cache[v] = entry
        self._cached_entries += 3 * len(dist)
        while self._cached_entries > MAP_CACHE_ENTRIES and len(self._cache) > 1:
            _, (d, _) = self._cache.popitem(last=False)
            self._cached_entries -= 3 * len(d)
        return entry


def estimate_log(maps, V, F, frames_oriented, fx, bx, px, fy, by, py, mean_edge):
    """Heat-method estimate of log_x(y) (n, 3) for pairs on one connected component (numpy).

    For x = Σ b_i v_i in face f: log_x(y) ≈ Σ_i b_i [A_{v_i,f} ℓ_{v_i}(y) + v_i − x], with ℓ_v(y)
    the barycentric interpolation over y's face of d_heat(v, w)·θ_v(w) (vector-heat direction) and
    A_{v,f} the rotation of v's tangent frame onto f's plane fitted to f's two other corners
    (exact in flat regions). Its length is used near x; far away, Σ_i b_i Σ_j c_j d_heat(v_i, w_j).
    """
    n = len(fx)
    vec, far = np.zeros((n, 3)), np.zeros(n)
    corners_x, corners_y = F[fx], F[fy]
    keys = corners_x.ravel()
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    bounds = np.append(starts, len(order))
    for u, lo, hi in zip(uniq, bounds[:-1], bounds[1:]):
        entries = order[lo:hi]
        rows, corner = entries // 3, entries % 3
        dist, direction = maps.vertex_map(int(u))
        loc_y = maps.local[corners_y[rows]]                       # (k, 3)
        cy = by[rows]
        dy = dist[loc_y]
        lam = np.einsum("kj,kj,kjd->kd", cy, dy, direction[loc_y])
        far[rows] += bx[rows, corner] * (cy * dy).sum(axis=1)
        # rotation of u's frame onto the face plane, fitted to the face's other two corners
        t = frames_oriented[fx[rows]]                              # (k, 2, 3)
        H = np.zeros((len(rows), 2, 2))
        for shift in (1, 2):
            other = corners_x[rows, (corner + shift) % 3]
            e = V[other] - V[u]
            q = np.einsum("kd,kjd->kj", e, t)
            q /= np.linalg.norm(q, axis=1, keepdims=True)
            H += q[:, :, None] * direction[maps.local[other]][:, None, :]
        angle = np.arctan2(H[:, 1, 0] - H[:, 0, 1], H[:, 0, 0] + H[:, 1, 1])
        cos, sin = np.cos(angle), np.sin(angle)
        planar = np.stack([cos * lam[:, 0] - sin * lam[:, 1], sin * lam[:, 0] + cos * lam[:, 1]], 1)
        mapped = np.einsum("kj,kjd->kd", planar, t)
        vec[rows] += bx[rows, corner][:, None] * (mapped + V[u] - px[rows])
    near = np.linalg.norm(vec, axis=1)
    weight = np.clip((far / mean_edge - LOG_NEAR_EDGES) / (LOG_FAR_EDGES - LOG_NEAR_EDGES), 0.0, 1.0)
    length = (1.0 - weight) * near + weight * far
    unit = np.divide(vec, near[:, None], out=np.zeros_like(vec), where=near[:, None] > 0)
    return unit * length[:, None]


def shoot(tables, fx, bx, v0, py, mean_edge, limit):
    """Newton shooting on exp_x(v) = y from ``v0`` (n, 3): v ← v + T⁻¹ r.

    r is the residual y − exp_x(v) in the end face's plane and T the parallel transport along the
    traced geodesic (the step is exact once the end point and y share a face). Only iterates no
    longer than ``limit`` (n,) count; a row stops after REFINE_STALLS steps without progress.
    Returns (best v (n, 3), converged (n,) bool): best is the iterate whose end point came
    closest to y (``v0`` if none did better); converged: |r| ≤ REFINE_TOL·h, best is a geodesic
    to y.
    """
    n = fx.shape[0]
    best = v0.clone()
    best_res = torch.full((n,), float("inf"), dtype=v0.dtype, device=v0.device)
    converged = torch.zeros(n, dtype=torch.bool, device=v0.device)
    active = torch.arange(n, device=v0.device)
    v = v0.clone()
    stalls = torch.zeros(n, dtype=torch.long, device=v0.device)
    frames = tables.frames[fx]
    for _ in range(REFINE_ITERATIONS + 1):
        fe, be, carried = trace_geodesics(tables, fx[active], bx[active], v, carry=frames[active])
        r = py[active] - tables.points(fe, be)
        res = torch.linalg.norm(r, dim=1)
        ok = (res < best_res[active]) & (torch.linalg.norm(v, dim=1) <= limit[active])
        best[active[ok]] = v[ok]
        best_res[active[ok]] = res[ok]
        done = ok & (res <= REFINE_TOL * mean_edge)
        converged[active[done]] = True
        stalls = torch.where(ok, 0, stalls + 1)
        keep = ~done & (stalls < REFINE_STALLS)
        if not bool(keep.any()):
            break
        step = torch.einsum("nkd,nd->nk", carried, tables.project(fe, r))
        v = v + torch.einsum("nk,nkd->nd", step, frames[active])
        active, v, stalls = active[keep], v[keep], stalls[keep]
    return best, converged


def shoot_from_chord(tables, fx, bx, px, py, mean_edge):
    """Certified log for nearby pairs without heat solves: (vectors (n, 3), certified (n,) bool).

    Shooting starts from the chord y − x projected on x's face. A converged geodesic of length L
    is certified when L ≤ |y − x| + CHORD_CERT_EDGES·h: every path is at least the chord long, so
    L is then within that margin of the geodesic distance.
    """
    chord = torch.linalg.norm(py - px, dim=1)
    v0 = tables.project(fx, py - px)
    norm = torch.linalg.norm(v0, dim=1, keepdim=True)
    v0 = torch.where(norm > 0, v0 * (chord[:, None] / torch.clamp(norm, min=1e-300)), v0)
    return shoot(tables, fx, bx, v0, py, mean_edge, chord + CHORD_CERT_EDGES * mean_edge)


def refine_log(tables, fx, bx, v0, py, mean_edge):
    """Shooting refinement of a heat estimate ``v0`` (n, 3): (vectors (n, 3), converged (n,)).

    A converged geodesic is returned when its length exceeds |v0| by at most
    max(REFINE_SLACK_EDGES·h, REFINE_SLACK_RATIO·|v0|) (a longer one is another, non-shortest
    geodesic). Otherwise (typically a shortest path bending around a saddle vertex, which no
    straight line follows) the result keeps the heat estimate's length |v0| in the direction of
    the iterate whose end point came closest to y.
    """
    length0 = torch.linalg.norm(v0, dim=1)
    limit = length0 + torch.clamp(REFINE_SLACK_RATIO * length0, min=REFINE_SLACK_EDGES * mean_edge)
    best, converged = shoot(tables, fx, bx, v0, py, mean_edge, limit)
    out = best.clone()
    fallback = ~converged
    norm = torch.linalg.norm(best[fallback], dim=1, keepdim=True)
    out[fallback] = torch.where(norm > 0, best[fallback] * (length0[fallback, None] / norm),
                                v0[fallback])
    return out, converged


def reverse_geodesics(tables, fy, by, w, fx):
    """log_x(y) from a geodesic y → x with initial velocity ``w``: minus its final velocity.

    The final velocity is ``w`` transported along the traced path, put in x's face plane and
    rescaled to |w| (the path may end on a neighbour face of x's when x lies on an edge).
    """
    _, _, carried = trace_geodesics(tables, fy, by, w, carry=w[:, None, :])
    end = tables.project(fx, carried[:, 0])
    norm = torch.linalg.norm(end, dim=1, keepdim=True)
    scale = torch.linalg.norm(w, dim=1, keepdim=True) / torch.clamp(norm, min=1e-300)
    return -end * scale
