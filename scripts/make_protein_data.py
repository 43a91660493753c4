#!/usr/bin/env python
"""Regenerate heatscore/datasets/data/protein/*.csv from the MDAnalysisTests source archive.

    pip download --no-deps mdanalysistests -d /tmp/mdat       # ~60 MB sdist, never a dependency
    python scripts/make_protein_data.py /tmp/mdat/mdanalysistests-2.11.0.tar.gz

PATH is the .tar.gz or the folder it extracts to (or any folder holding MDAnalysisTests/data).
Needs gemmi (the ``data`` extra). ``--out DIR`` writes elsewhere (the tests use it). Prints the
counts per class, the chains used and the chains left out with the reason.

What is read (all PDB entries; the PDB's data are public domain, wwPDB CC0 1.0):
- data/dssp/<pdbid><chain>.pdb.gz: the 50 single chains of MDAnalysis' DSSP tests (each with
  its .dssp reference file). Left out there: 1mr1D_failing.pdb.gz (a copy of 1mr1D with atoms
  deleted on purpose) and wrong_hydrogens.pdb.gz (a two-residue fragment of no named entry).
- the complete crystal structures elsewhere in data/: EXTRA_ENTRIES below (mmCIF where the folder
  has both formats). Left out: cryo-EM entries 6MSM (3.2 Å) and 5A7U (4.8 Å; low-resolution
  models are refined with Ramachandran restraints, which would bias the distribution), NMR
  entries 2JUY (nonstandard residues, an ensemble) and 1GRM (gramicidin: alternating D-amino
  acids), truncated extracts (1BD2_short, 4x8u.pdbx, the 1NMU chainID* files, testENT.ent),
  MMTF files (gemmi reads PDB and mmCIF) and simulation systems (adk*, cobrotoxin, …).

Per chain (first model; the first alternative location, gemmi's
remove_alternative_conformations; only standard amino acids in ATOM records — hetero residues
such as MSE or CSO break the chain like a gap), the pure-numpy helpers of
heatscore/datasets/_protein.py give the torsions, classes, relative rotations and frame pairs.

Deduplication (so copies do not inflate the data): chains are taken in decreasing order of
their number of torsion residues (ties: file order); a chain is dropped when its modelled
sequence is ≥ 95 % identical to an already kept chain's, identity = identical aligned pairs /
length of the shorter sequence in gemmi's global alignment (align_string_sequences with
BLOSUM62, gap opening −10, extension −1: gemmi's AlignmentScoring("b"); the affine gap cost stops
a short peptide from being scattered over a long chain to fake identity). This removes
homo-oligomer and NCS copies within an entry and the same protein in two entries (e.g.
β2-microglobulin and HLA-A2 in 1BD2/3PWP/3KPR, HIV protease in 1HVR/4E43).
"""

import argparse
import gzip
import os
import re
import sys
import tarfile

import numpy as np

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from heatscore.datasets._protein import (PEPTIDE_BOND_MAX, PROTEIN_KINDS,  # noqa: E402
                                         STANDARD_AMINO_ACIDS, chain_backbone)

DEFAULT_OUT = os.path.join(ROOT, "heatscore", "datasets", "data", "protein")
DSSP_PATTERN = re.compile(r"^(\d[a-z0-9]{3})([A-Za-z0-9])\.pdb\.gz$")
#: (path under MDAnalysisTests/data/, PDB ID): complete X-ray entries, every chain.
EXTRA_ENTRIES = (
    ("19hc.pdb.gz", "19HC"), ("1a28.pdb.gz", "1A28"), ("1osm.pdb.gz", "1OSM"),
    ("1hvr.pdb", "1HVR"), ("4E43.pdb", "4E43"),
    ("mmcif/1BD2.cif.gz", "1BD2"), ("mmcif/3KPR.cif.gz", "3KPR"), ("mmcif/3PWP.cif.gz", "3PWP"),
    ("mmcif/5PTI.cif.gz", "5PTI"), ("mmcif/7ETN.cif.gz", "7ETN"), ("mmcif/1YJP.cif.gz", "1YJP"),
)
IDENTITY_THRESHOLD = 95.0   # percent of the shorter sequence
DIGITS = 7                  # significant digits written


class Archive:
    """Read-only access to MDAnalysisTests/data in an sdist .tar.gz or an extracted folder."""

    def __init__(self, path):
        self.path = os.path.abspath(path)
        if os.path.isfile(path):
            self._tar = tarfile.open(path, "r:*")
            names = self._tar.getnames()
            hits = [n for n in names if n.endswith("MDAnalysisTests/data/dssp/README.md")]
            if not hits:
                raise SystemExit(f"{path}: no MDAnalysisTests/data/dssp/ inside")
            self._data = hits[0][:-len("dssp/README.md")]
            self._names = set(names)
            top = self._data[:-len("MDAnalysisTests/data/")]
            pkg = top + "PKG-INFO"
            pkg_info = self._tar.extractfile(pkg).read().decode() if pkg in self._names else ""
        else:
            self._tar = None
            data = None
            for folder, dirs, _ in os.walk(path):
                if folder.endswith(os.path.join("MDAnalysisTests", "data")) and "dssp" in dirs:
                    data = folder
                    break
                dirs[:] = [d for d in dirs if d not in (".git", "__pycache__")]
            if data is None:
                raise SystemExit(f"{path}: no MDAnalysisTests/data/dssp/ inside")
            self._data = data + os.sep
            pkg = os.path.join(os.path.dirname(os.path.dirname(data)), "PKG-INFO")
            pkg_info = open(pkg, encoding="utf-8").read() if os.path.exists(pkg) else ""
        m = re.search(r"^Version:\s*(\S+)", pkg_info, re.M)
        m = m or re.search(r"mdanalysistests-([0-9][^/\\]*?)(\.tar\.gz)?$", self.path, re.I)
        self.version = m.group(1) if m else "unknown"

    def listdir(self, rel):
        if self._tar is None:
            return sorted(os.listdir(self._data + rel))
        prefix = self._data + rel.rstrip("/") + "/"
        return sorted(n[len(prefix):] for n in self._names
                      if n.startswith(prefix) and "/" not in n[len(prefix):])

    def read(self, rel):
        """Decompressed bytes of data/<rel>."""
        if self._tar is None:
            raw = open(self._data + rel.replace("/", os.sep), "rb").read()
        else:
            raw = self._tar.extractfile(self._data + rel).read()
        return gzip.decompress(raw) if rel.endswith(".gz") else raw


def read_chains(archive, rel, pdb_id, only_chain=None):
    """[(label, resnames, seqids, n, ca, c)] for the chains of one entry (first model)."""
    import gemmi
    fmt = gemmi.CoorFormat.Mmcif if ".cif" in rel else gemmi.CoorFormat.Pdb
    st = gemmi.read_structure_string(archive.read(rel), format=fmt)
    st.remove_alternative_conformations()           # keeps the first conformer
    out = []
    for chain in st[0]:
        if only_chain is not None and chain.name != only_chain:
            continue
        names, seqids, xyz = [], [], []
        for res in chain:
            standard = res.het_flag == "A" and res.name in STANDARD_AMINO_ACIDS
            names.append(res.name if standard else f"HET:{res.name}")
            seqids.append(str(res.seqid.num) + res.seqid.icode.strip())
            row = []
            for atom_name in ("N", "CA", "C"):
                a = res.find_atom(atom_name, "*")
                row.append([a.pos.x, a.pos.y, a.pos.z] if a is not None else [np.nan] * 3)
            xyz.append(row)
        if not any(nm in STANDARD_AMINO_ACIDS for nm in names):
            continue
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3, 3)
        out.append((f"{pdb_id}:{chain.name}", names, seqids, xyz[:, 0], xyz[:, 1], xyz[:, 2]))
    if only_chain is not None and not out:
        raise SystemExit(f"{rel}: chain {only_chain} not found")
    return out


def one_letter(names):
    import gemmi
    return "".join(gemmi.find_tabulated_residue(nm).one_letter_code.upper()
                   for nm in names if nm in STANDARD_AMINO_ACIDS)


def identity(a, b):
    """Percent identity of two sequences relative to the shorter (gemmi global alignment,
    BLOSUM62 with affine gaps)."""
    import gemmi
    scoring = gemmi.AlignmentScoring("b")
    return gemmi.align_string_sequences(list(a), list(b), [], scoring).calculate_identity(0)


def collect(archive):
    """Chains (dicts) in file order, each with its derived geometry."""
    entries = []
    for fname in archive.listdir("dssp"):
        m = DSSP_PATTERN.match(fname)
        if m:
            entries.append(("dssp/" + fname, m.group(1).upper(), m.group(2)))
    entries += [(rel, pdb_id, None) for rel, pdb_id in EXTRA_ENTRIES]
    chains = []
    for rel, pdb_id, only in entries:
        for label, names, seqids, n, ca, c in read_chains(archive, rel, pdb_id, only):
            geo = chain_backbone(names, n, ca, c)
            chains.append({"label": label, "file": rel, "names": names, "seqids": seqids,
                           "seq": one_letter(names), "geo": geo, "order": len(chains)})
    return chains


def deduplicate(chains):
    """(kept chains in file order, [(label, reason)] dropped)."""
    kept, dropped = [], []
    for ch in sorted(chains, key=lambda c: (-len(c["geo"]["torsions"]), c["order"])):
        if len(ch["geo"]["torsions"]) == 0:
            dropped.append((ch["label"], "no residue with both torsions"))
            continue
        for k in kept:
            ident = identity(ch["seq"], k["seq"])
            if ident >= IDENTITY_THRESHOLD:
                dropped.append((ch["label"], f"copy of {k['label']} ({ident:.1f} % identical)"))
                break
        else:
            kept.append(ch)
    return sorted(kept, key=lambda c: c["order"]), dropped


def fmt(x):
    return f"{x:.{DIGITS}g}"


def tables(kept):
    """{file name: (header columns, rows as lists of strings)}."""
    tors = {k: [] for k in PROTEIN_KINDS}
    rot_rows, frame_rows = [], []
    for ch in kept:
        g = ch["geo"]
        for (phi, psi), kind, i in zip(g["torsions"], g["kinds"], g["torsion_index"]):
            tors[kind].append([fmt(phi), fmt(psi), ch["label"], ch["names"][i], ch["seqids"][i]])
        for r, t, i in zip(g["rotations"], g["translations"], g["pair_index"]):
            rs = [fmt(v) for v in r.reshape(-1)]
            ident = [ch["label"], ch["seqids"][i]]
            rot_rows.append(rs + ident)
            frame_rows.append([fmt(v) for v in t] + rs + ident)
    rot_cols = [f"r{i}{j}" for i in (1, 2, 3) for j in (1, 2, 3)]
    out = {f"torsions_{k}": (["phi", "psi", "chain", "resname", "resseq"], rows)
           for k, rows in tors.items()}
    out["backbone_rotations"] = (rot_cols + ["chain", "resseq"], rot_rows)
    out["backbone_frames"] = (["tx", "ty", "tz"] + rot_cols + ["chain", "resseq"], frame_rows)
    return out


def comments(name, archive, kept, counts, n_rows):
    import gemmi
    ids = sorted({c["label"].split(":")[0] for c in kept})
    chains = " ".join(c["label"] for c in kept)
    what = {
        "backbone_rotations": "relative rotations R_i^T R_{i+1} of bonded consecutive residues' "
                              "backbone frames (points on SO(3))",
        "backbone_frames": "frame pairs of bonded consecutive residues (points on R^3 x SO(3))",
    }.get(name, f"backbone torsions (phi, psi) of the '{name[9:]}' class (points on T^2)")
    lines = [
        f"heatscore protein backbone data: {what}",
        f"Source: PDB entries in the test data of MDAnalysisTests {archive.version} (PyPI sdist "
        f"mdanalysistests-{archive.version}.tar.gz): MDAnalysisTests/data/dssp/ "
        "(<pdbid><chain>.pdb.gz single chains) and the complete crystal structures (X-ray; "
        "5PTI joint X-ray/neutron) " + ", ".join(r for r, _ in EXTRA_ENTRIES)
        + " of MDAnalysisTests/data/",
        "Licence: PDB data are public domain (wwPDB, CC0 1.0); the numbers here are derived "
        "from the coordinates only",
        f"PDB IDs used ({len(ids)}): " + " ".join(ids),
        f"Chains used ({len(kept)}): {chains}",
        f"Derivation: scripts/make_protein_data.py (gemmi {gemmi.__version__}): first model; "
        "first alternative location; standard amino acids in ATOM records only (hetero "
        f"residues break the chain); bonded = N, CA, C present and C_i-N_(i+1) < "
        f"{PEPTIDE_BOND_MAX} A; chains >= {IDENTITY_THRESHOLD:g}% identical (over the shorter "
        "sequence, gemmi global alignment, BLOSUM62, gaps -10/-1) to a chain with more "
        "torsion residues are dropped as copies",
    ]
    if name.startswith("torsions_"):
        lines += [
            "Units: radians wrapped into [0, 2*pi); phi_i = dihedral(C_(i-1), N_i, CA_i, C_i), "
            "psi_i = dihedral(N_i, CA_i, C_i, N_(i+1)) (IUPAC sign); residues need both bonds",
            "Classes (MolProbity precedence, Lovell et al. 2003): glycine = GLY; proline = PRO; "
            "preproline = any other residue followed by PRO; general = the rest",
            "Counts: " + ", ".join(f"{k} {counts[k]}" for k in PROTEIN_KINDS),
        ]
    else:
        lines += [
            "Frames (AlphaFold 2 Alg. 21): e1 = (C - CA)/|C - CA|, e2 = unit component of "
            "N - CA orthogonal to e1, e3 = e1 x e2, R = [e1 e2 e3] as columns",
            "Rotation r_jk = (R_i^T R_(i+1))_jk, row by row, dimensionless"
            + ("; translation (tx, ty, tz) = R_i^T (CA_(i+1) - CA_i) in angstrom"
               if name == "backbone_frames" else ""),
            "resseq is residue i of the pair (i, i+1); rows in the same order in "
            "backbone_rotations.csv and backbone_frames.csv",
        ]
    lines.append(f"rows: {n_rows}")
    return ["# " + ln for ln in lines]


def write_all(out_dir, files):
    """Write {name: lines} as out_dir/<name>.csv: every file to a temporary name first, then
    os.replace each, so a failure leaves the previous files intact."""
    os.makedirs(out_dir, exist_ok=True)
    tmps = []
    try:
        for name, lines in files.items():
            final = os.path.join(out_dir, f"{name}.csv")
            tmp = f"{final}.tmp{os.getpid()}"
            with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
                fh.write("\n".join(lines) + "\n")
            tmps.append((tmp, final))
        for tmp, final in tmps:
            os.replace(tmp, final)
    finally:
        for tmp, _ in tmps:
            if os.path.exists(tmp):
                os.remove(tmp)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="mdanalysistests-<version>.tar.gz or its extracted folder")
    ap.add_argument("--out", default=DEFAULT_OUT, help="output folder (default: the package's)")
    args = ap.parse_args(argv)

    archive = Archive(args.path)
    chains = collect(archive)
    kept, dropped = deduplicate(chains)
    tabs = tables(kept)
    counts = {k: len(tabs[f"torsions_{k}"][1]) for k in PROTEIN_KINDS}
    files = {}
    for name, (cols, rows) in tabs.items():
        files[name] = (comments(name, archive, kept, counts, len(rows)) + [",".join(cols)]
                       + [",".join(r) for r in rows])
    write_all(args.out, files)

    print(f"MDAnalysisTests {archive.version}: {len(chains)} chains read, {len(kept)} kept")
    for k in PROTEIN_KINDS:
        print(f"  {k:<11} {counts[k]:>6}")
    print(f"  {'pairs':<11} {len(tabs['backbone_rotations'][1]):>6}  (rotations and frames)")
    ids = sorted({c["label"].split(":")[0] for c in kept})
    print(f"PDB IDs used ({len(ids)}): " + " ".join(ids))
    print("chains used: " + " ".join(c["label"] for c in kept))
    for label, reason in dropped:
        print(f"dropped {label}: {reason}")
    print(f"wrote {len(files)} files to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
