"""Bundled protein backbone data (heatscore/datasets/data/protein/, made by
scripts/make_protein_data.py from the PDB entries in MDAnalysisTests' test data) and the
pure-numpy derivation helpers it uses.

Set HEATSCORE_MDANALYSISTESTS to the mdanalysistests-<version>.tar.gz (or its extracted folder)
to also check that regenerating reproduces the shipped files (needs gemmi).
"""

import importlib.util
import math
import os
import re

import numpy as np
import pytest
import torch

from heatscore.datasets import (PROTEIN_KINDS, load_backbone_frames, load_backbone_rotations,
                                load_protein_torsions, protein_path)
from heatscore.datasets._protein import backbone_frames, chain_backbone, dihedral, wrap_angles

TWO_PI = 2 * math.pi
#: Rotation check of the loaders: they project onto SO(3), so float64 round-off (~1e-15) is
#: expected; the brief's bound.
ROT_TOL = 1e-9
#: The files hold 7 significant digits: a regenerated file agrees with the shipped one to
#: this (absolute, on numbers of size ≤ 2π or a few Å).
FILE_TOL = 1e-5
SCRIPT = os.path.join(os.path.dirname(__file__), os.pardir, "scripts", "make_protein_data.py")


def _comments(name):
    with open(protein_path(name), encoding="utf-8") as fh:
        return [ln.rstrip("\n") for ln in fh if ln.startswith("#")]


def _rows_in_header(name):
    hits = [int(m.group(1)) for ln in _comments(name) for m in [re.match(r"# rows: (\d+)$", ln)]
            if m]
    assert len(hits) == 1, name
    return hits[0]


def _degrees(x):
    """Angles in [0, 2π) -> degrees in [−180, 180)."""
    return torch.remainder(torch.rad2deg(x) + 180.0, 360.0) - 180.0


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", PROTEIN_KINDS)
def test_torsions_shape_dtype_range(kind):
    x = load_protein_torsions(kind)
    assert isinstance(x, torch.Tensor) and x.dtype == torch.float64
    assert x.ndim == 2 and x.shape[1] == 2 and x.shape[0] > 100
    assert bool(torch.isfinite(x).all())
    assert float(x.min()) >= 0.0 and float(x.max()) < TWO_PI
    assert x.shape[0] == _rows_in_header(f"torsions_{kind}")


def test_default_kind_is_general():
    assert torch.equal(load_protein_torsions(), load_protein_torsions("general"))


def test_bad_kind_and_name_raise():
    with pytest.raises(ValueError, match="kind must be one of"):
        load_protein_torsions("alanine")
    with pytest.raises(ValueError, match="kind"):
        load_protein_torsions("General")
    with pytest.raises(ValueError, match="name must be one of"):
        protein_path("torsions")


def test_loader_rejects_corrupt_files(tmp_path, monkeypatch):
    import heatscore.datasets._protein as prot
    bad = tmp_path / "bad.csv"
    monkeypatch.setattr(prot, "protein_path", lambda name: str(bad))
    cols = ",".join(f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3))
    bad.write_text(f"# a comment\n{cols},chain\n1,0,0,0,1,0,0,0,1.01,X:A\n", encoding="utf-8")
    with pytest.raises(ValueError, match="off SO\\(3\\)"):
        prot.load_backbone_rotations()
    bad.write_text("# a comment\nphi,chi,chain\n1,2,X:A\n", encoding="utf-8")
    with pytest.raises(ValueError, match="expected header columns"):
        prot.load_protein_torsions("glycine")
    bad.write_text("phi,psi\n1,nan\n", encoding="utf-8")
    with pytest.raises(ValueError, match="non-finite"):
        prot.load_protein_torsions("glycine")


def test_class_counts_match_headers_and_are_plausible():
    n = {k: load_protein_torsions(k).shape[0] for k in PROTEIN_KINDS}
    # every torsion file states the counts of all four classes
    for k in PROTEIN_KINDS:
        line = [ln for ln in _comments(f"torsions_{k}") if ln.startswith("# Counts:")]
        assert len(line) == 1
        stated = {kk: int(v) for kk, v in re.findall(r"(\w+) (\d+)", line[0][len("# Counts:"):])}
        assert stated == n
    # proteins are ~80 % "general", ~7 % Gly, ~4-5 % Pro and ~4 % pre-Pro (Top500: 83/8/5/4 %)
    total = sum(n.values())
    assert n["general"] > 5 * n["glycine"]
    assert 0.7 < n["general"] / total < 0.92
    for k in ("glycine", "proline", "preproline"):
        assert 0.02 < n[k] / total < 0.12, k


def test_rotations_are_rotations():
    r = load_backbone_rotations()
    assert r.dtype == torch.float64 and r.ndim == 3 and r.shape[1:] == (3, 3)
    assert r.shape[0] == _rows_in_header("backbone_rotations")
    eye = torch.eye(3, dtype=torch.float64)
    assert float((r.transpose(1, 2) @ r - eye).abs().max()) < ROT_TOL
    assert float((torch.linalg.det(r) - 1).abs().max()) < ROT_TOL
    # re-orthonormalisation only removes the files' round-off (7 significant digits)
    raw = np.loadtxt([ln for ln in open(protein_path("backbone_rotations"), encoding="utf-8")
                      if not ln.startswith("#")][1:], delimiter=",", usecols=range(9))
    assert float((r.reshape(-1, 9) - torch.from_numpy(raw)).abs().max()) < 1e-5


def test_frames_shape_and_rotation_part():
    f = load_backbone_frames()
    r = load_backbone_rotations()
    assert f.dtype == torch.float64 and f.shape == (r.shape[0], 12)
    assert f.shape[0] == _rows_in_header("backbone_frames")
    assert torch.equal(f[:, 3:].reshape(-1, 3, 3), r)
    # Cα(i)–Cα(i+1) is ~3.80 Å across a trans peptide and ~2.9 Å across a cis one
    d = f[:, :3].norm(dim=1)
    assert 2.6 < float(d.min()) and float(d.max()) < 4.5
    assert abs(float(d.median()) - 3.80) < 0.03
    # the next Cα lies mostly along e1 (C − Cα) of the current residue's frame
    assert float(f[:, 0].mean()) > 3.0


def test_frames_are_product_manifold_points():
    import heatscore.manifolds as hm
    if not hasattr(hm, "ProductManifold"):
        pytest.skip("heatscore.manifolds.ProductManifold is not available in this checkout")
    f = load_backbone_frames()[:500]
    p = hm.ProductManifold(hm.Euclidean(3), hm.SO3())
    t, r = p.split(f)
    assert torch.equal(t, f[:, :3]) and torch.equal(r, f[:, 3:].reshape(-1, 3, 3))
    assert bool(p.belongs(f).all())


def test_ramachandran_distribution_looks_right():
    """Loose checks of well-known Ramachandran features (Lovell et al. 2003): the general class
    sits in the α (φ ≈ −63°, ψ ≈ −43°) and β (φ ≈ −120°, ψ ≈ 130°) basins (≈ 98 % "favoured"
    in high-resolution sets; 96 % in the boxes below here), with φ > 0 rare; glycine often has
    φ > 0; proline's ring pins φ near −65°; pre-proline residues avoid the α basin."""
    g = _degrees(load_protein_torsions("general"))
    phi, psi = g[:, 0], g[:, 1]
    alpha = (phi > -160) & (phi < -20) & (psi > -120) & (psi < 50)
    beta = (phi < -45) & ((psi > 90) | (psi < -150))
    assert float((alpha | beta).double().mean()) > 0.85
    assert float(alpha.double().mean()) > 0.25 and float(beta.double().mean()) > 0.25
    assert float((phi > 0).double().mean()) < 0.08
    gly = _degrees(load_protein_torsions("glycine"))
    assert float((gly[:, 0] > 0).double().mean()) > 0.25
    pro = _degrees(load_protein_torsions("proline"))
    assert float(((pro[:, 0] > -100) & (pro[:, 0] < -40)).double().mean()) > 0.9
    pre = _degrees(load_protein_torsions("preproline"))
    pre_alpha = (pre[:, 0] < -20) & (pre[:, 1] > -120) & (pre[:, 1] < 50)
    assert float(pre_alpha.double().mean()) < float(alpha.double().mean()) / 2


# ---------------------------------------------------------------------------------------------
# Derivation helpers on hand-checked geometry
# ---------------------------------------------------------------------------------------------

def test_dihedral_hand_example():
    """p1 = 0, p2 = e_z, p0 = e_x, p3 = e_z + (cos θ, sin θ, 0): looking from p1 to p2 the front
    bond (to p0) must turn clockwise by θ to eclipse the back bond, so the IUPAC dihedral is +θ."""
    theta = np.deg2rad([-179.0, -120.0, -57.0, 0.0, 30.0, 90.0, 150.0, 180.0])
    k = len(theta)
    p0 = np.tile([1.0, 0, 0], (k, 1))
    p1 = np.zeros((k, 3))
    p2 = np.tile([0, 0, 1.0], (k, 1))
    p3 = np.stack([np.cos(theta), np.sin(theta), np.ones(k)], axis=1)
    got = dihedral(p0, p1, p2, p3)
    np.testing.assert_allclose(np.cos(got - theta), 1.0, atol=1e-14)
    assert np.all(got > -np.pi - 1e-15) and np.all(got <= np.pi)
    np.testing.assert_allclose(wrap_angles(np.array([-1e-18, -np.pi / 2, 7.0])),
                               [0.0, 1.5 * np.pi, 7.0 - TWO_PI])


def _place(a, b, c, bond, angle, torsion):
    """NeRF: the point d with |cd| = bond, angle(b, c, d) = angle, dihedral(a, b, c, d) = torsion
    (checked against the hand example above in test_nerf_matches_hand_example)."""
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.stack([bc, np.cross(n, bc), n], axis=1)
    d2 = bond * np.array([-np.cos(angle), np.sin(angle) * np.cos(torsion),
                          np.sin(angle) * np.sin(torsion)])
    return c + m @ d2


def test_nerf_matches_hand_example():
    for th in np.deg2rad([-120.0, 45.0]):
        d = _place(np.array([1.0, 0, 0]), np.zeros(3), np.array([0, 0, 1.0]), 1.0, np.pi / 2, th)
        np.testing.assert_allclose(d, [np.cos(th), np.sin(th), 1.0], atol=1e-14)


#: Ideal backbone geometry (Engh & Huber): bond lengths (Å) and angles.
B_NCA, B_CAC, B_CN = 1.458, 1.525, 1.329
A_NCAC, A_CACN, A_CNCA = np.deg2rad(111.2), np.deg2rad(116.2), np.deg2rad(121.7)


def _backbone(phi, psi, omega):
    """(n, ca, c) of len(phi) residues with the given torsions (radians; phi[0], psi[-1] and
    omega[-1] unused)."""
    ca = [np.zeros(3)]
    c = [np.array([B_CAC, 0.0, 0.0])]
    n = [B_NCA * np.array([np.cos(A_NCAC), np.sin(A_NCAC), 0.0])]     # angle N-CA-C = A_NCAC
    for i in range(1, len(phi)):
        n.append(_place(n[i - 1], ca[i - 1], c[i - 1], B_CN, A_CACN, psi[i - 1]))
        ca.append(_place(ca[i - 1], c[i - 1], n[i], B_NCA, A_CNCA, omega[i - 1]))
        c.append(_place(c[i - 1], n[i], ca[i], B_CAC, A_NCAC, phi[i]))
    return np.array(n), np.array(ca), np.array(c)


NAMES = ["ALA", "GLY", "SER", "PRO", "GLY", "PRO", "LYS"]
PHI = np.deg2rad([0.0, 80.0, -57.0, -65.0, -140.0, -70.0, -100.0])
PSI = np.deg2rad([150.0, -170.0, -47.0, 140.0, 135.0, 150.0, 0.0])
OMEGA = np.deg2rad([180.0, 180.0, 175.0, 180.0, 5.0, 180.0, 0.0])   # 4 -> 5 is a cis peptide


def test_chain_backbone_torsions_and_classes():
    n, ca, c = _backbone(PHI, PSI, OMEGA)
    g = chain_backbone(NAMES, n, ca, c)
    assert g["bonded"].all()
    np.testing.assert_array_equal(g["torsion_index"], [1, 2, 3, 4, 5])    # ends have no φ or ψ
    expected = wrap_angles(np.stack([PHI[1:6], PSI[1:6]], axis=1))
    np.testing.assert_allclose(g["torsions"], expected, atol=1e-10)
    assert np.all((g["torsions"] >= 0) & (g["torsions"] < TWO_PI))
    # GLY1 glycine; SER2 before PRO3: preproline; PRO3 proline; GLY4 before PRO5 stays glycine
    assert list(g["kinds"]) == ["glycine", "preproline", "proline", "glycine", "proline"]


def test_chain_backbone_frames_and_pairs():
    n, ca, c = _backbone(PHI, PSI, OMEGA)
    g = chain_backbone(NAMES, n, ca, c)
    r = backbone_frames(n, ca, c)
    eye = np.eye(3)
    np.testing.assert_allclose(np.einsum("nki,nkj->nij", r, r), np.broadcast_to(eye, r.shape),
                               atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    # e1 along C − Cα; N − Cα in the (e1, e2) half-plane with positive e2 component
    e1 = (c - ca) / np.linalg.norm(c - ca, axis=1, keepdims=True)
    np.testing.assert_allclose(r[:, :, 0], e1, atol=1e-12)
    local_n = np.einsum("nki,nk->ni", r, n - ca)
    np.testing.assert_allclose(local_n[:, 2], 0.0, atol=1e-12)
    assert np.all(local_n[:, 1] > 0)
    # pairs: R_i rel = R_{i+1}, R_i t + Cα_i = Cα_{i+1}
    np.testing.assert_array_equal(g["pair_index"], np.arange(len(NAMES) - 1))
    np.testing.assert_allclose(np.einsum("pij,pjk->pik", r[:-1], g["rotations"]), r[1:],
                               atol=1e-12)
    np.testing.assert_allclose(np.einsum("pij,pj->pi", r[:-1], g["translations"]) + ca[:-1],
                               ca[1:], atol=1e-12)
    # Cα–Cα distance: ≈ 3.80 Å for trans peptides, 2.6–3.0 Å for the cis one (4 -> 5;
    # 2.77 Å at ω = 5° with this geometry)
    d = np.linalg.norm(g["translations"], axis=1)
    assert np.all(np.abs(np.delete(d, 4) - 3.80) < 0.03) and 2.6 < d[4] < 3.0


def test_chain_backbone_is_invariant_under_rigid_motions():
    n, ca, c = _backbone(PHI, PSI, OMEGA)
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))                           # a proper rotation
    shift = np.array([10.0, -3.0, 7.5])
    a = chain_backbone(NAMES, n, ca, c)
    b = chain_backbone(NAMES, n @ q.T + shift, ca @ q.T + shift, c @ q.T + shift)
    for key in ("torsions", "rotations", "translations"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-10)


def test_chain_backbone_breaks():
    n, ca, c = _backbone(PHI, PSI, OMEGA)
    # a gap between residues 3 and 4: move 4.. away (C3–N4 becomes > 2 Å)
    n2, ca2, c2 = n.copy(), ca.copy(), c.copy()
    for arr in (n2, ca2, c2):
        arr[4:] += np.array([0.0, 0.0, 3.0])
    g = chain_backbone(NAMES, n2, ca2, c2)
    np.testing.assert_array_equal(g["bonded"], [True, True, True, False, True, True])
    np.testing.assert_array_equal(g["torsion_index"], [1, 2, 5])
    np.testing.assert_array_equal(g["pair_index"], [0, 1, 2, 4, 5])
    # a hetero residue (or a missing atom) breaks the chain on both sides
    g = chain_backbone(["ALA", "GLY", "SER", "HET:MSE", "GLY", "PRO", "LYS"], n, ca, c)
    np.testing.assert_array_equal(g["torsion_index"], [1, 5])
    assert list(g["kinds"]) == ["glycine", "proline"]
    n3 = n.copy()
    n3[2] = np.nan
    g = chain_backbone(NAMES, n3, ca, c)
    np.testing.assert_array_equal(g["torsion_index"], [4, 5])
    assert len(chain_backbone(["ALA"], n[:1], ca[:1], c[:1])["torsions"]) == 0
    with pytest.raises(ValueError, match="same length"):
        chain_backbone(NAMES[:3], n, ca, c)


# ---------------------------------------------------------------------------------------------
# Regeneration (optional: needs the archive and gemmi)
# ---------------------------------------------------------------------------------------------

def _split(path):
    with open(path, encoding="utf-8") as fh:
        lines = fh.read().splitlines()
    comments = [re.sub(r"gemmi [0-9][^ )]*", "gemmi", ln) for ln in lines if ln.startswith("#")]
    body = [ln.split(",") for ln in lines if not ln.startswith("#")]
    return comments, body


def test_regenerating_reproduces_shipped_files(tmp_path):
    src = os.environ.get("HEATSCORE_MDANALYSISTESTS")
    if not src or not os.path.exists(src):
        pytest.skip("set HEATSCORE_MDANALYSISTESTS to the mdanalysistests sdist "
                    "(.tar.gz or folder)")
    pytest.importorskip("gemmi")
    spec = importlib.util.spec_from_file_location("make_protein_data", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([src, "--out", str(tmp_path)]) == 0
    names = sorted(f for f in os.listdir(tmp_path) if f.endswith(".csv"))
    assert names == sorted(os.path.basename(protein_path(n)) for n in mod_names())
    for f in names:
        new_c, new_b = _split(os.path.join(tmp_path, f))
        old_c, old_b = _split(protein_path(f[:-4]))
        assert new_c == old_c, f
        assert new_b[0] == old_b[0] and len(new_b) == len(old_b), f
        k = sum(1 for col in old_b[0] if col not in ("chain", "resname", "resseq"))
        assert [r[k:] for r in new_b[1:]] == [r[k:] for r in old_b[1:]], f
        a = np.array([r[:k] for r in new_b[1:]], dtype=np.float64)
        b = np.array([r[:k] for r in old_b[1:]], dtype=np.float64)
        np.testing.assert_allclose(a, b, rtol=0, atol=FILE_TOL, err_msg=f)


def mod_names():
    return [f"torsions_{k}" for k in PROTEIN_KINDS] + ["backbone_rotations", "backbone_frames"]
