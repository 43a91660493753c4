"""Private helpers of ``TriangleMesh``: mesh checks, adjacency, closest points and an icosphere.

Everything here works on numpy arrays (float64 vertices ``V`` (nv, 3), int64 faces ``F`` (nf, 3));
``mesh.py`` converts to torch.
"""

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import breadth_first_order, connected_components
from scipy.spatial import cKDTree

#: A face is degenerate when its area is at most this fraction of (mean edge length)².
DEGENERATE_AREA_RTOL = 1e-12

#: Points whose distances to two faces differ by at most this fraction of the bounding-box
#: diagonal are tied; the tie goes to the lower face index.
LOCATE_TIE_RTOL = 1e-12

#: Nearest face samples tried first for each point before the exact fallback search.
LOCATE_CANDIDATES = 12

#: Face samples are spaced so that every point of a face lies within this fraction of the
#: median face radius (centroid to farthest corner) of one of its samples.
LOCATE_SAMPLE_RADIUS = 0.5

#: Points located per block (bounds the (block, LOCATE_CANDIDATES, 3) intermediates).
LOCATE_BLOCK = 2**16


def icosphere(subdivisions=0, radius=1.0):
    """Icosahedron refined ``subdivisions`` times (each face split in 4), vertices on the sphere.

    Returns ``(V, F)``: float64 ``(10·4^s + 2, 3)`` and int64 ``(20·4^s, 3)``, faces oriented
    outwards (counter-clockwise seen from outside).
    """
    if isinstance(subdivisions, bool) or not isinstance(subdivisions, (int, np.integer)):
        raise TypeError(f"subdivisions must be an integer, found {type(subdivisions).__name__}")
    if subdivisions < 0:
        raise ValueError(f"subdivisions must be >= 0, found {subdivisions}")
    t = (1.0 + 5.0 ** 0.5) / 2.0
    V = np.array([[-1, t, 0], [1, t, 0], [-1, -t, 0], [1, -t, 0], [0, -1, t], [0, 1, t],
                  [0, -1, -t], [0, 1, -t], [t, 0, -1], [t, 0, 1], [-t, 0, -1], [-t, 0, 1]], float)
    F = np.array([[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9],
                  [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2],
                  [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7],
                  [9, 8, 1]], dtype=np.int64)
    V /= np.linalg.norm(V, axis=1, keepdims=True)
    for _ in range(int(subdivisions)):
        edges = np.sort(np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]]), axis=1)
        unique_edges, inverse = np.unique(edges, axis=0, return_inverse=True)
        mid = V[unique_edges[:, 0]] + V[unique_edges[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        ab, bc, ca = (inverse.reshape(3, -1) + len(V))
        a, b, c = F.T
        V = np.vstack([V, mid])
        F = np.concatenate([np.stack([a, ab, ca], 1), np.stack([ab, b, bc], 1),
                            np.stack([ca, bc, c], 1), np.stack([ab, bc, ca], 1)])
    return V * float(radius), F


# --- checks and topology ----------------------------------------------------------------------
def compact_vertices(V, F):
    """Drop vertices no face references: ``(V_kept, F_reindexed, kept_index)``."""
    used = np.zeros(len(V), dtype=bool)
    used[F.ravel()] = True
    kept = np.flatnonzero(used)
    remap = np.full(len(V), -1, dtype=np.int64)
    remap[kept] = np.arange(len(kept))
    return V[kept], remap[F], kept


def face_geometry(V, F):
    """Per-face area (nf,), unit normal (nf, 3) and barycentric gradients (nf, 3, 3).

    ``grad_bary[f, i]`` is ∇b_i on face f: (n × e_i) / (2A), e_i the edge opposite corner i
    traversed in the face's orientation; Σ_i grad_bary[f, i] = 0.
    """
    P = V[F]                                                   # (nf, 3 corners, 3)
    cross = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
    double_area = np.linalg.norm(cross, axis=1)
    normals = cross / double_area[:, None]
    opposite = np.roll(P, -1, axis=1)                          # corner i+1
    edge = np.roll(P, -2, axis=1) - opposite                   # e_i = p_{i+2} − p_{i+1}
    grad_bary = np.cross(normals[:, None, :], edge) / double_area[:, None, None]
    return 0.5 * double_area, normals, grad_bary


def corner_edges(F):
    """(3·nf, 2) directed edges opposite each corner, row c·nf + f for corner c of face f."""
    return np.concatenate([F[:, [(c + 1) % 3, (c + 2) % 3]] for c in range(3)])


def edge_adjacency(F):
    """Neighbour across each edge: ``(neighbour, neighbour_corner, same_direction)``, each (nf, 3).

    ``neighbour[f, c]`` is the face sharing the edge opposite corner c of f (−1 on the boundary),
    ``neighbour_corner[f, c]`` that face's corner opposite the shared edge, ``same_direction``
    whether both faces traverse the edge the same way (inconsistent orientation).
    ``ValueError`` naming ``F`` for edges shared by more than two faces.
    """
    nf = len(F)
    directed = corner_edges(F)
    key = np.sort(directed, axis=1)
    order = np.lexsort((key[:, 1], key[:, 0]))
    ks = key[order]
    start = np.ones(len(ks), dtype=bool)
    start[1:] = np.any(ks[1:] != ks[:-1], axis=1)
    group = np.cumsum(start) - 1
    counts = np.bincount(group)
    if counts.max(initial=0) > 2:
        bad = np.flatnonzero(counts > 2)
        a, b = ks[np.flatnonzero(start)[bad[0]]]
        raise ValueError(f"F has {len(bad)} non-manifold edges (shared by more than two faces), "
                         f"e.g. edge ({a}, {b}) is shared by {counts[bad[0]]} faces")
    neighbour = np.full(3 * nf, -1, dtype=np.int64)
    neighbour_corner = np.full(3 * nf, -1, dtype=np.int64)
    same_direction = np.zeros(3 * nf, dtype=bool)
    paired = np.flatnonzero(counts[group] == 2)
    first, second = paired[0::2], paired[1::2]
    r1, r2 = order[first], order[second]
    neighbour[r1], neighbour[r2] = r2 % nf, r1 % nf
    neighbour_corner[r1], neighbour_corner[r2] = r2 // nf, r1 // nf
    same = np.all(directed[r1] == directed[r2], axis=1)
    same_direction[r1], same_direction[r2] = same, same
    shape = (3, nf)
    return (neighbour.reshape(shape).T.copy(), neighbour_corner.reshape(shape).T.copy(),
            same_direction.reshape(shape).T.copy())


def face_components(neighbour):
    """(n_components, labels (nf,)): faces connected through shared edges."""
    nf = len(neighbour)
    rows = np.repeat(np.arange(nf), 3)
    cols = neighbour.ravel()
    ok = cols >= 0
    graph = coo_matrix((np.ones(ok.sum()), (rows[ok], cols[ok])), shape=(nf, nf))
    return connected_components(graph, directed=False)


def vertex_components(F, n_vertices):
    """(n_components, labels (nv,)): vertices connected through faces (all referenced)."""
    rows = np.concatenate([F[:, 0], F[:, 1]])
    cols = np.concatenate([F[:, 1], F[:, 2]])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_vertices, n_vertices))
    return connected_components(graph, directed=False)


def non_manifold_vertices(F, neighbour, n_vertices):
    """Vertex indices whose incident faces form more than one fan (e.g. two cones tip to tip)."""
    nf = len(F)
    corner_id = np.arange(3 * nf).reshape(nf, 3)               # corner (f, c) -> f·3 + c
    rows, cols = [], []
    for c in range(3):
        g = neighbour[:, c]
        ok = g >= 0
        for shared in ((c + 1) % 3, (c + 2) % 3):            # both ends of the shared edge
            f_ok = np.flatnonzero(ok)
            v = F[f_ok, shared]
            gc = np.argmax(F[g[ok]] == v[:, None], axis=1)
            rows.append(corner_id[f_ok, shared])
            cols.append(corner_id[g[ok], gc])
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(3 * nf, 3 * nf))
    _, fan = connected_components(graph, directed=False)
    fans_per_vertex = np.zeros(n_vertices, dtype=np.int64)
    pairs = np.unique(np.stack([F.ravel(), fan], axis=1), axis=0)
    np.add.at(fans_per_vertex, pairs[:, 0], 1)
    return np.flatnonzero(fans_per_vertex > 1)


def consistent_orientation(F, neighbour, same_direction):
    """Faces re-ordered so that neighbours traverse shared edges oppositely, or None if impossible.

    A breadth-first tree over the face graph; a face is flipped when the number of orientation
    changes on its tree path to the root is odd (pointer jumping, vectorised).
    """
    nf = len(F)
    n_comp, labels = face_components(neighbour)
    firsts = np.unique(labels, return_index=True)[1]
    rows = np.repeat(np.arange(nf), 3)
    cols = neighbour.ravel()
    ok = cols >= 0
    # A virtual node nf linked to the first face of each component makes a single tree.
    rows = np.concatenate([rows[ok], np.full(n_comp, nf)])
    cols = np.concatenate([cols[ok], firsts])
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(nf + 1, nf + 1)).tocsr()
    _, pred = breadth_first_order(graph, nf, directed=False, return_predecessors=True)
    parent = pred[:nf].astype(np.int64)
    parent[firsts] = firsts
    # rel[f]: f's orientation disagrees with its parent's (they traverse the shared edge alike).
    rel = np.any((neighbour == parent[:, None]) & same_direction, axis=1)
    rel[firsts] = False
    parity, anc = rel.copy(), parent.copy()
    while not np.array_equal(anc[anc], anc):
        parity = parity ^ parity[anc]
        anc = anc[anc]
    out = F.copy()
    out[parity] = out[parity][:, ::-1]
    _, _, same = edge_adjacency(out)
    return None if same.any() else out


# --- closest points ---------------------------------------------------------------------------
def closest_barycentric(P, A, B, C):
    """Barycentric coordinates (n, 3) of the closest point to ``P`` on triangles ``ABC`` (n, 3 each).

    Voronoi-region test (vertex, edge or interior region), vectorised; the result is clamped to
    the triangle, so coordinates are in [0, 1] and sum to 1.
    """
    ab, ac = B - A, C - A
    ap, bp, cp = P - A, P - B, P - C
    d1, d2 = np.einsum("ij,ij->i", ab, ap), np.einsum("ij,ij->i", ac, ap)
    d3, d4 = np.einsum("ij,ij->i", ab, bp), np.einsum("ij,ij->i", ac, bp)
    d5, d6 = np.einsum("ij,ij->i", ab, cp), np.einsum("ij,ij->i", ac, cp)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        denom = va + vb + vc
        s_in, t_in = vb / denom, vc / denom
    n = len(P)
    zero, one = np.zeros(n), np.ones(n)
    choices = [
        (d1 <= 0) & (d2 <= 0), (d3 >= 0) & (d4 <= d3), (vc <= 0) & (d1 >= 0) & (d3 <= 0),
        (d6 >= 0) & (d5 <= d6), (vb <= 0) & (d2 >= 0) & (d6 <= 0),
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),
    ]
    bary_b = np.select(choices, [zero, one, t_ab, zero, zero, 1.0 - t_bc], default=s_in)
    bary_c = np.select(choices, [zero, zero, zero, one, t_ac, t_bc], default=t_in)
    bary = np.stack([1.0 - bary_b - bary_c, bary_b, bary_c], axis=1)
    bary = np.clip(bary, 0.0, 1.0)
    return bary / bary.sum(axis=1, keepdims=True)


def _subtriangle_centroids(s):
    """Barycentric centroids (s², 3) of the s² triangles of an s-fold regular split."""
    up = [((i + 1 / 3) / s, (j + 1 / 3) / s) for i in range(s) for j in range(s - i)]
    down = [((i + 2 / 3) / s, (j + 2 / 3) / s) for i in range(s - 1) for j in range(s - 1 - i)]
    bc = np.array(up + down)
    return np.column_stack([1.0 - bc.sum(axis=1), bc])


class FaceLocator:
    """Closest face and barycentric coordinates for points near a triangle mesh.

    A k-d tree holds sample points of every face: its centroid, or for larger faces the
    centroids of an s-fold split, so that every point of face f lies within ρ (ρ =
    ``LOCATE_SAMPLE_RADIUS`` × the median centroid-to-corner radius) of one of f's samples. The
    ``LOCATE_CANDIDATES`` nearest samples propose faces (exact closest points on each); the
    answer is certified when the farthest of them is beyond best distance + tie + ρ, since no
    other face can then be closer; otherwise the point is re-searched exactly within that
    radius. Ties (points on shared edges or vertices, within ``LOCATE_TIE_RTOL`` of the
    bounding-box diagonal) go to the lowest face index.
    """

    def __init__(self, V, F):
        self.V, self.F = V, F
        self.corners = V[F]                                    # (nf, 3, 3)
        centroids = self.corners.mean(axis=1)
        radii = np.linalg.norm(self.corners - centroids[:, None], axis=2).max(axis=1)
        self.rho = LOCATE_SAMPLE_RADIUS * float(np.median(radii))
        splits = np.maximum(1, np.ceil(radii / self.rho - 1e-9)).astype(np.int64)
        points, owners = [], []
        for s in np.unique(splits):
            faces = np.flatnonzero(splits == s)
            bary = _subtriangle_centroids(int(s))
            points.append(np.einsum("kc,fcj->fkj", bary, self.corners[faces]).reshape(-1, 3))
            owners.append(np.repeat(faces, len(bary)))
        self.sample_face = np.concatenate(owners)
        self.tree = cKDTree(np.concatenate(points))
        self.diagonal = float(np.linalg.norm(V.max(axis=0) - V.min(axis=0)))
        self.tie = LOCATE_TIE_RTOL * self.diagonal

    def _best(self, P, faces, sizes):
        """Best face per point among its candidates: ``faces`` holds ``sizes[i] >= 1`` rows per point.

        Returns ``(face (n,), bary (n, 3), distance (n,))`` with the tie rule applied.
        """
        n = len(P)
        owner = np.repeat(np.arange(n), sizes)
        starts = np.cumsum(sizes) - sizes
        corners = self.corners[faces]
        bary = closest_barycentric(P[owner], corners[:, 0], corners[:, 1], corners[:, 2])
        closest = np.einsum("ni,nij->nj", bary, corners)
        dist = np.linalg.norm(P[owner] - closest, axis=1)
        best = np.minimum.reduceat(dist, starts)
        eligible = dist <= best[owner] + self.tie
        chosen = np.minimum.reduceat(np.where(eligible, faces, np.iinfo(np.int64).max), starts)
        pick = np.flatnonzero(eligible & (faces == chosen[owner]))
        first = pick[np.r_[True, owner[pick][1:] != owner[pick][:-1]]]  # one row per point
        return chosen, bary[first], dist[first]

    def locate(self, P):
        """``(faces (n,), bary (n, 3), distance (n,))`` for points ``P`` (n, 3) float64."""
        n = len(P)
        faces, bary, dist = np.zeros(n, dtype=np.int64), np.zeros((n, 3)), np.zeros(n)
        k = min(LOCATE_CANDIDATES, self.tree.n)
        for s in range(0, n, LOCATE_BLOCK):
            block = P[s:s + LOCATE_BLOCK]
            m = len(block)
            sample_dist, sample = self.tree.query(block, k=k, workers=-1)
            sample_dist, sample = sample_dist.reshape(m, k), sample.reshape(m, k)
            f, b, d = self._best(block, self.sample_face[sample.ravel()], np.full(m, k))
            # Certified when every sample outside the k nearest is farther than d + tie + ρ.
            radius = d + self.tie + self.rho
            redo = np.flatnonzero(sample_dist[:, -1] <= radius) if k < self.tree.n else []
            if len(redo):
                lists = self.tree.query_ball_point(block[redo], radius[redo], workers=-1)
                sizes = np.fromiter((len(c) for c in lists), dtype=np.int64, count=len(lists))
                cand = self.sample_face[np.concatenate(lists).astype(np.int64)]
                f[redo], b[redo], d[redo] = self._best(block[redo], cand, sizes)
            faces[s:s + m], bary[s:s + m], dist[s:s + m] = f, b, d
        return faces, bary, dist
