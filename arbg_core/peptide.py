"""Sequence -> all-atom peptide: topology, minimized positions, per-atom features, residue blocks.

Heavy atoms come from PeptideBuilder (extended backbone), terminal atoms and hydrogens (pH 7) from
pdbfixer / OpenMM's Modeller, then a short energy minimization under the default preset
(`energy.DEFAULT_PRESET`).
Atom order is the topology order: residue by residue from the N-terminus, so every residue owns
a contiguous block of atoms (and of tokens, 3 per atom).
"""

from __future__ import annotations

import io
import random
import re
from dataclasses import dataclass

import numpy as np

from .energy import DEFAULT_PRESET, forcefield, get_preset, minimize_positions, residue_blocks

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
THREE_LETTER = {
    "A": "ALA", "C": "CYS", "D": "ASP", "E": "GLU", "F": "PHE", "G": "GLY", "H": "HIS",
    "I": "ILE", "K": "LYS", "L": "LEU", "M": "MET", "N": "ASN", "P": "PRO", "Q": "GLN",
    "R": "ARG", "S": "SER", "T": "THR", "V": "VAL", "W": "TRP", "Y": "TYR",
}
TERMINI = ("zwitterionic", "capped")
MAX_LENGTH = 20

# Fixed vocabularies: ids are stored in checkpoints, so only ever append to these lists.
ELEMENTS = ("PAD", "H", "C", "N", "O", "S")
RESIDUE_TYPES = ("PAD",) + tuple(THREE_LETTER[a] for a in AMINO_ACIDS) + ("ACE", "NME")
# Residue-name aliases OpenMM may produce (protonation variants) -> canonical residue type.
_RESIDUE_ALIASES = {"HIE": "HIS", "HID": "HIS", "HIP": "HIS", "CYX": "CYS", "ASH": "ASP",
                    "GLH": "GLU", "LYN": "LYS", "NALA": "ALA"}
# Every atom name that occurs in the 20 amino acids (both termini kinds) and the ACE/NME caps.
ATOM_NAMES = ("PAD", "UNK",
    "C", "CA", "CB", "CD", "CD1", "CD2", "CE", "CE1", "CE2", "CE3", "CG", "CG1", "CG2", "CH2",
    "CH3", "CZ", "CZ2", "CZ3", "H", "H1", "H2", "H3", "HA", "HA2", "HA3", "HB", "HB1", "HB2",
    "HB3", "HD1", "HD11", "HD12", "HD13", "HD2", "HD21", "HD22", "HD23", "HD3", "HE", "HE1",
    "HE2", "HE21", "HE22", "HE3", "HG", "HG1", "HG11", "HG12", "HG13", "HG2", "HG21", "HG22",
    "HG23", "HG3", "HH", "HH11", "HH12", "HH2", "HH21", "HH22", "HZ", "HZ1", "HZ2", "HZ3",
    "N", "ND1", "ND2", "NE", "NE1", "NE2", "NH1", "NH2", "NZ", "O", "OD1", "OD2", "OE1", "OE2",
    "OG", "OG1", "OH", "OXT", "SD", "SG", "HH31", "HH32", "HH33", "C1", "O1",
)
MAX_RESIDUES = MAX_LENGTH + 2  # + ACE and NME caps

_ELEMENT_ID = {e: i for i, e in enumerate(ELEMENTS)}
_RESIDUE_ID = {r: i for i, r in enumerate(RESIDUE_TYPES)}
_ATOM_NAME_ID = {n: i for i, n in enumerate(ATOM_NAMES)}


@dataclass(frozen=True)
class AtomFeatures:
    """Per-atom integer features the model embeds; all arrays are (A,) int64."""

    element: np.ndarray
    atom_name: np.ndarray
    residue_type: np.ndarray
    residue_index: np.ndarray  # 0-based, counting caps as residues

    @property
    def n_atoms(self) -> int:
        return int(self.element.shape[0])

    @property
    def n_residues(self) -> int:
        return int(self.residue_index.max()) + 1 if self.n_atoms else 0


@dataclass(frozen=True)
class Peptide:
    """An all-atom peptide ready for energies, MD and the model."""

    sequence: str
    termini: str
    topology: "md.Topology"  # noqa: F821  (mdtraj)
    xyz: np.ndarray  # (A, 3) float32 nm, minimized
    features: AtomFeatures
    residue_blocks: tuple[tuple[int, int], ...]  # [start, stop) atom indices per residue
    histidine_states: tuple[str, ...]  # e.g. ("HIE",): what OpenMM chose at pH 7

    @property
    def n_atoms(self) -> int:
        return self.features.n_atoms

    @property
    def openmm_topology(self):
        return self.topology.to_openmm()

    @property
    def name(self) -> str:
        return system_name(self.sequence, self.termini)

    def to_mdtraj(self):
        import mdtraj as md

        return md.Trajectory(self.xyz[None], self.topology)


def system_name(sequence: str, termini: str) -> str:
    return f"{sequence}-{'cap' if termini == 'capped' else 'zw'}"


def normalize_sequence(sequence: str, termini: str = "zwitterionic") -> str:
    """Validate a one-letter sequence; raise ValueError naming the problem and its position."""
    if termini not in TERMINI:
        raise ValueError(f"termini must be one of {', '.join(TERMINI)}, got {termini!r}")
    if not isinstance(sequence, str):
        raise ValueError(f"sequence must be a string of one-letter codes, got {type(sequence).__name__}")
    # Title-case three-letter codes ("AlaGly") would otherwise read as valid one-letter text.
    m = re.search(r"[A-Z][a-z]{2}", sequence)
    if m and m.group(0).upper() in THREE_LETTER.values():
        raise ValueError(
            f"three-letter code {m.group(0)!r} at position {m.start() + 1}: "
            "use one-letter codes, e.g. 'AG' instead of 'AlaGly'")
    seq = ""
    pos = 0
    for ch in sequence:
        if ch.isspace():
            continue
        pos += 1
        up = ch.upper()
        if up not in AMINO_ACIDS:
            what = "digit" if ch.isdigit() else "character"
            raise ValueError(
                f"invalid {what} {ch!r} at position {pos}: "
                f"only the 20 standard one-letter codes {AMINO_ACIDS} are allowed")
        seq += up
    if not seq:
        raise ValueError("empty sequence: give 1 to 20 one-letter amino-acid codes")
    if len(seq) > MAX_LENGTH:
        raise ValueError(f"sequence has {len(seq)} residues; at most {MAX_LENGTH} are supported "
                         f"(position {MAX_LENGTH + 1} is the first one over)")
    if termini == "zwitterionic" and len(seq) < 2:
        raise ValueError("a zwitterionic peptide needs at least 2 residues (the amber force "
                         "fields have no template for a free amino acid); use termini='capped'")
    return seq


def atom_features(topology) -> AtomFeatures:
    """Per-atom features from an mdtraj Topology (any peptide in our vocabulary)."""
    element, name, rtype, rindex = [], [], [], []
    for atom in topology.atoms:
        res = _RESIDUE_ALIASES.get(atom.residue.name, atom.residue.name)
        if res not in _RESIDUE_ID:
            raise ValueError(f"residue {atom.residue.name} {atom.residue.index + 1} is not supported")
        symbol = atom.element.symbol if atom.element is not None else "PAD"
        if symbol not in _ELEMENT_ID:
            raise ValueError(f"element {symbol} of atom {atom.name} is not supported")
        element.append(_ELEMENT_ID[symbol])
        name.append(_ATOM_NAME_ID.get(atom.name, _ATOM_NAME_ID["UNK"]))
        rtype.append(_RESIDUE_ID[res])
        rindex.append(atom.residue.index)
    as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return AtomFeatures(as_int(element), as_int(name), as_int(rtype), as_int(rindex))


def _heavy_atom_pdb(seq: str, termini: str) -> str:
    """Heavy atoms of an extended peptide as PDB text (caps made from flanking glycines)."""
    import PeptideBuilder

    core = "G" + seq + "G" if termini == "capped" else seq
    # Fully extended chain: every phi = psi = 180 degrees (omega trans).
    n = len(core) - 1
    structure = PeptideBuilder.make_structure(core, [180.0] * n, [180.0] * n)
    if termini == "zwitterionic":
        PeptideBuilder.add_terminal_OXT(structure)
    residues = list(structure.get_residues())
    # ACE = CH3-C(=O) and NME = N-CH3: the flanking glycines' CA atoms become the methyl carbons.
    rename = {}
    if termini == "capped":
        rename = {0: ("ACE", {"CA": "CH3", "C": "C", "O": "O"}),
                  len(residues) - 1: ("NME", {"N": "N", "CA": "C"})}
    lines, serial = [], 0
    for r, res in enumerate(residues):
        resname, keep = rename.get(r, (res.get_resname(), None))
        for atom in res:
            name = atom.get_id()
            if keep is not None:
                if name not in keep:
                    continue
                name = keep[name]
            serial += 1
            x, y, z = atom.coord
            padded = f" {name:<3}" if len(name) < 4 else name
            lines.append(f"ATOM  {serial:5d} {padded:4s} {resname:3s} A{r + 1:4d}    "
                         f"{x:8.3f}{y:8.3f}{z:8.3f}  1.00  0.00          {atom.element:>2s}")
    return "\n".join(lines + ["TER", "END"]) + "\n"


def build(sequence: str, termini: str = "zwitterionic", minimize: bool = True) -> Peptide:
    """Build an all-atom peptide (pH 7 hydrogens) and minimize it under the default preset."""
    import mdtraj as md
    import openmm
    import openmm.app as app
    from pdbfixer import PDBFixer

    seq = normalize_sequence(sequence, termini)
    fixer = PDBFixer(pdbfile=io.StringIO(_heavy_atom_pdb(seq, termini)))
    fixer.findMissingResidues()
    fixer.missingResidues = {}
    fixer.findMissingAtoms()
    fixer.addMissingAtoms()
    ff = forcefield(get_preset(DEFAULT_PRESET))
    modeller = app.Modeller(fixer.topology, fixer.positions)
    # Modeller places new hydrogens at random before relaxing them: seed it, so a sequence
    # always gives the same structure (and MD seeds mean the same thing everywhere).
    saved = random.getstate()
    random.seed(0)
    try:
        variants = modeller.addHydrogens(ff, pH=7.0, platform=openmm.Platform.getPlatformByName("Reference"))
    finally:
        random.setstate(saved)
    his_states = tuple(v for v in variants if v in ("HID", "HIE", "HIP"))
    xyz = np.array(modeller.positions.value_in_unit(modeller.positions.unit), dtype=np.float64)
    xyz = xyz * (0.1 if str(modeller.positions.unit) == "angstrom" else 1.0)
    top = md.Topology.from_openmm(modeller.topology)
    if minimize:
        xyz = minimize_positions(modeller.topology, xyz)  # under DEFAULT_PRESET
    xyz = xyz.astype(np.float32)
    return Peptide(seq, termini, top, xyz, atom_features(top), residue_blocks(top), his_states)


def identify(topology) -> tuple[str, str]:
    """(sequence, termini) of an mdtraj topology of a peptide in our vocabulary."""
    names = [_RESIDUE_ALIASES.get(r.name, r.name) for r in topology.residues]
    termini = "capped" if names and names[0] == "ACE" else "zwitterionic"
    one = {v: k for k, v in THREE_LETTER.items()}
    unknown = [n for n in names if n not in one and n not in ("ACE", "NME")]
    if unknown:
        raise ValueError(f"residue {unknown[0]} is not one of the 20 standard amino acids")
    return "".join(one[n] for n in names if n in one), termini
