"""Protein backbone geometry from real PDB entries: (φ, ψ) torsions on T², relative rotations of
consecutive residue frames on SO(3), and (translation, rotation) frame pairs on R³ × SO(3).

The bundled CSVs (``data/protein/``) were derived by ``scripts/make_protein_data.py`` from the PDB
entries shipped in the test data of the MDAnalysisTests package; each file's ``#`` lines state the
source, the PDB IDs, the licence (wwPDB data: CC0) and the derivation. After the comment lines comes
a header row, then one row per point; trailing columns (chain, residue) identify where a row
came from (handy for splits by protein) and are not returned by the loaders.

Conventions (also used by the script, which imports the pure-numpy helpers below):

- Torsions (IUPAC): φ_i = dihedral(C_{i−1}, N_i, Cα_i, C_i),
  ψ_i = dihedral(N_i, Cα_i, C_i, N_{i+1}), in radians wrapped into [0, 2π) (an α-helix has
  φ ≈ −57° ≈ 5.29 rad, ψ ≈ −47° ≈ 5.46 rad).
- Classes (MolProbity / Lovell et al. 2003, the four "Top500" classes of Huang et al. 2022 and
  Chen & Lipman 2023), in this order of precedence: glycine (GLY), proline (PRO), pre-proline (any
  other residue whose bonded successor is PRO; so a Gly or Pro before a Pro stays glycine or
  proline), general (everything else, Ile and Val included).
- Residue frame (AlphaFold 2 Algorithm 21 "rigidFrom3Points", also FrameDiff/OpenFold after their
  axis flip): e1 = (C − Cα)/|C − Cα|, e2 = the normalised component of N − Cα orthogonal to e1,
  e3 = e1 × e2; R = [e1 e2 e3] (columns), so x_global = R x_local + Cα.
- Relative rotation of bonded consecutive residues: R_iᵀ R_{i+1}; translation R_iᵀ (Cα_{i+1} − Cα_i)
  in Å (≈ 3.8 Å for a trans peptide). Frame rows: the 3 translation entries, then the 9 rotation
  entries row by row, i.e. the flat points of ``ProductManifold(Euclidean(3), SO3())``.
- Bonded: both residues are standard amino acids with N, Cα and C, and the peptide bond
  C_i–N_{i+1} is shorter than ``PEPTIDE_BOND_MAX`` (2.0 Å). Residues without both torsions (chain
  ends, either side of a break or of a hetero residue) are skipped.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Dict, Iterable, Optional

import numpy as np
import torch

from heatscore._typing import ArrayLike

PROTEIN_KINDS = ("general", "glycine", "proline", "preproline")

#: File names (without .csv) of the bundled protein data, the names ``protein_path`` accepts.
_PROTEIN_FILES = tuple(f"torsions_{k}" for k in PROTEIN_KINDS) + ("backbone_rotations",
                                                                   "backbone_frames")

#: Longest C–N distance (Å) still counted as a peptide bond (ideal 1.33 Å; breaks are > 3 Å).
PEPTIDE_BOND_MAX = 2.0

#: Largest deviation from a rotation (max |RᵀR − I|, |det R − 1|) the loaders accept before
#: projecting: the files hold 7 significant digits, so ~1e-6 is round-off and more is corruption.
_MAX_ROUNDOFF = 1e-4

STANDARD_AMINO_ACIDS = frozenset({
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
    "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL"})

_TWO_PI = 2.0 * math.pi


# ---------------------------------------------------------------------------------------------
# Derivation helpers (numpy, used by scripts/make_protein_data.py and the tests)
# ---------------------------------------------------------------------------------------------

def dihedral(p0: ArrayLike, p1: ArrayLike, p2: ArrayLike, p3: ArrayLike) -> np.ndarray:
    """(n,) IUPAC dihedral angles in (−π, π] of the rows of four (n, 3) point arrays.

    Positive is clockwise looking from p1 to p2 (the right-hand rule about p2 − p1)."""
    p0, p1, p2, p3 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2, p3))
    b1, b2, b3 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.sum(b1 * n2, axis=-1)    # |b2| b1 · (b2 × b3)
    return np.arctan2(y, np.sum(n1 * n2, axis=-1))


def wrap_angles(a: ArrayLike) -> np.ndarray:
    """Angles wrapped into [0, 2π) (a value that rounds to 2π becomes 0)."""
    a = np.mod(np.asarray(a, dtype=np.float64), _TWO_PI)
    return np.where(a >= _TWO_PI, 0.0, a)


def backbone_frames(n: ArrayLike, ca: ArrayLike, c: ArrayLike) -> np.ndarray:
    """(m, 3, 3) residue frames R = [e1 e2 e3] (columns) from (m, 3) N, Cα, C positions."""
    n, ca, c = (np.asarray(p, dtype=np.float64) for p in (n, ca, c))
    e1 = c - ca
    e1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
    u2 = n - ca
    u2 = u2 - np.sum(u2 * e1, axis=-1, keepdims=True) * e1
    e2 = u2 / np.linalg.norm(u2, axis=-1, keepdims=True)
    e3 = np.cross(e1, e2)
    return np.stack([e1, e2, e3], axis=-1)


def rama_class(resname: str, next_resname: Optional[str]) -> str:
    """The Ramachandran class of a residue given its successor's name (see the module notes)."""
    if resname == "GLY":
        return "glycine"
    if resname == "PRO":
        return "proline"
    if next_resname == "PRO":
        return "preproline"
    return "general"


def chain_backbone(resnames: Iterable[str], n: ArrayLike, ca: ArrayLike, c: ArrayLike,
                   bond_max: float = PEPTIDE_BOND_MAX) -> Dict[str, np.ndarray]:
    """Backbone geometry of one chain, residues in chain order.

    resnames: m residue names; n, ca, c: (m, 3) positions, NaN where an atom is missing. Residues
    that are not standard amino acids (hetero, UNK) break the chain like a gap.

    Returns a dict of numpy arrays:
      ``torsions`` (k, 2) (φ, ψ) in [0, 2π); ``kinds`` (k,) class names; ``torsion_index`` (k,)
      residue indices; ``rotations`` (p, 3, 3) R_iᵀ R_{i+1}; ``translations`` (p, 3) in Å;
      ``pair_index`` (p,) the index i of each bonded pair (i, i + 1); ``bonded`` (m − 1,) bool.
    """
    names = [str(r).strip().upper() for r in resnames]
    n, ca, c = (np.asarray(p, dtype=np.float64).reshape(-1, 3) for p in (n, ca, c))
    m = len(names)
    if not (n.shape[0] == ca.shape[0] == c.shape[0] == m):
        raise ValueError(f"resnames, n, ca, c must have the same length, found "
                         f"{m}, {n.shape[0]}, {ca.shape[0]}, {c.shape[0]}")
    complete = (np.isfinite(n).all(1) & np.isfinite(ca).all(1) & np.isfinite(c).all(1)
                & np.array([r in STANDARD_AMINO_ACIDS for r in names], dtype=bool))
    if m >= 2:
        with np.errstate(invalid="ignore"):
            cn = np.linalg.norm(n[1:] - c[:-1], axis=1)
        bonded = complete[:-1] & complete[1:] & (cn < bond_max)
    else:
        bonded = np.zeros(0, dtype=bool)

    # torsions: residue i needs bonds (i-1, i) and (i, i+1)
    idx = np.nonzero(bonded[:-1] & bonded[1:])[0] + 1 if m >= 3 else np.zeros(0, dtype=int)
    phi = dihedral(c[idx - 1], n[idx], ca[idx], c[idx])
    psi = dihedral(n[idx], ca[idx], c[idx], n[idx + 1])
    torsions = wrap_angles(np.stack([phi, psi], axis=1)) if len(idx) else np.zeros((0, 2))
    kinds = np.array([rama_class(names[i], names[i + 1]) for i in idx], dtype=object)

    # frame pairs: bonded (i, i+1)
    pidx = np.nonzero(bonded)[0]
    frames = backbone_frames(n, ca, c) if m else np.zeros((0, 3, 3))
    ri, rj = frames[pidx], frames[pidx + 1]
    rotations = np.einsum("pki,pkj->pij", ri, rj)                 # R_iᵀ R_{i+1}
    translations = np.einsum("pki,pk->pi", ri, ca[pidx + 1] - ca[pidx])
    return {"torsions": torsions, "kinds": kinds, "torsion_index": idx, "rotations": rotations,
            "translations": translations, "pair_index": pidx, "bonded": bonded}


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

def protein_path(name: str) -> str:
    """Path of the bundled CSV ``name``: ``"torsions_<kind>"`` (kind in ``PROTEIN_KINDS``),
    ``"backbone_rotations"`` or ``"backbone_frames"``."""
    if name not in _PROTEIN_FILES:
        raise ValueError(f"name must be one of {_PROTEIN_FILES}, found {name!r}")
    return str(resources.files("heatscore.datasets").joinpath("data", "protein", f"{name}.csv"))


def _read_numeric(name, columns):
    """(n, len(columns)) float64 numpy array of the named leading columns of a bundled CSV."""
    path = protein_path(name)
    with open(path, encoding="utf-8") as fh:
        lines = [ln for ln in fh if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise ValueError(f"{name}.csv has no header row")
    header = [h.strip() for h in lines[0].split(",")]
    if header[:len(columns)] != list(columns):
        raise ValueError(f"{name}.csv: expected header columns {list(columns)}, found "
                         f"{header[:len(columns)]}")
    if len(lines) == 1:
        return np.zeros((0, len(columns)))
    data = np.loadtxt(lines[1:], delimiter=",", usecols=range(len(columns)), dtype=np.float64,
                      ndmin=2)
    if not np.isfinite(data).all():
        raise ValueError(f"{name}.csv holds non-finite values")
    return data


def _nearest_rotations(m, name):
    """Project (n, 3, 3) near-rotations onto SO(3) (SVD: U Vᵀ with det +1), after checking that
    they are rotations up to the files' round-off."""
    eye = torch.eye(3, dtype=m.dtype)
    if m.shape[0]:
        err = max(float((m.transpose(1, 2) @ m - eye).abs().max()),
                  float((torch.linalg.det(m) - 1).abs().max()))
        if err > _MAX_ROUNDOFF:
            raise ValueError(f"{name}.csv: rotations off SO(3) by {err:.1e} (more than the "
                             f"round-off {_MAX_ROUNDOFF:.0e} of the file)")
    u, _, vh = torch.linalg.svd(m)
    d = torch.sign(torch.linalg.det(u @ vh))
    u = torch.cat([u[..., :2], u[..., 2:] * d[:, None, None]], dim=-1)
    return u @ vh


_ROT_COLUMNS = tuple(f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3))


def load_protein_torsions(kind: str = "general") -> torch.Tensor:
    """(n, 2) float64 tensor of backbone torsions (φ, ψ) in radians in [0, 2π), a point set on
    ``Torus(2)``, for the residues of class ``kind`` (one of ``PROTEIN_KINDS``: "general",
    "glycine", "proline", "preproline"; see the module notes for the rule)."""
    if kind not in PROTEIN_KINDS:
        raise ValueError(f"kind must be one of {PROTEIN_KINDS}, found {kind!r}")
    x = torch.remainder(torch.from_numpy(_read_numeric(f"torsions_{kind}", ("phi", "psi"))),
                        _TWO_PI)
    return torch.where(x < _TWO_PI, x, torch.zeros((), dtype=x.dtype))


def load_backbone_rotations() -> torch.Tensor:
    """(n, 3, 3) float64 tensor of relative rotations R_iᵀ R_{i+1} between the frames of bonded
    consecutive residues, points on ``SO3()``.

    The file holds 7 significant digits; after reading, each matrix is re-orthonormalised
    explicitly (projected onto SO(3) by SVD), so RᵀR = I and det R = 1 to float64 round-off."""
    m = torch.from_numpy(_read_numeric("backbone_rotations", _ROT_COLUMNS)).reshape(-1, 3, 3)
    return _nearest_rotations(m, "backbone_rotations")


def load_backbone_frames() -> torch.Tensor:
    """(n, 12) float64 tensor of frame pairs, rows (t_x, t_y, t_z, r11, r12, …, r33): the
    translation of residue i+1's Cα in residue i's frame (Å), then R_iᵀ R_{i+1} row by row —
    flat points of ``ProductManifold(Euclidean(3), SO3())`` (choose ``Euclidean(3, scale=...)``
    for Å; |t| ≈ 3.8 Å). Rows are in the order of ``load_backbone_rotations()``.

    The rotation part is re-orthonormalised explicitly after reading (the same SVD projection as
    ``load_backbone_rotations``, so the two agree exactly)."""
    x = torch.from_numpy(_read_numeric("backbone_frames", ("tx", "ty", "tz") + _ROT_COLUMNS))
    rot = _nearest_rotations(x[:, 3:].reshape(-1, 3, 3), "backbone_frames")
    return torch.cat([x[:, :3], rot.reshape(-1, 9)], dim=1)
