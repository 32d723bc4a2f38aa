import mdtraj as md
import numpy as np
import pytest

from arbg_core import peptide
from arbg_core.energy import EnergyModel
from arbg_core.peptide import AMINO_ACIDS

# Hydrogens at pH 7 for each residue inside a chain (free amino-acid formula minus H2O).
RESIDUE_ATOMS = {"A": 10, "C": 11, "D": 12, "E": 15, "F": 20, "G": 7, "H": 17, "I": 19, "K": 22,
                 "L": 19, "M": 17, "N": 14, "P": 14, "Q": 17, "R": 24, "S": 11, "T": 14, "V": 16,
                 "W": 24, "Y": 21}


def expected_atoms(seq, termini):
    n = sum(RESIDUE_ATOMS[a] for a in seq)
    # capped: ACE (6) + NME (6); zwitterionic: NH3+ adds 2 H, COO- adds O.
    return n + (12 if termini == "capped" else 3)


@pytest.mark.parametrize("aa", list(AMINO_ACIDS))
def test_every_amino_acid_both_termini(aa):
    for termini, seq in (("capped", aa), ("zwitterionic", "G" + aa)):
        pep = peptide.build(seq, termini)
        assert pep.n_atoms == expected_atoms(seq, termini), (seq, termini)
        u = EnergyModel(pep.topology).reduced_energy(pep.xyz[None])
        assert np.isfinite(u).all()
        assert len(pep.residue_blocks) == pep.topology.n_residues
        assert pep.features.n_atoms == pep.n_atoms
        assert (pep.features.atom_name > 1).all(), "every atom name is in the vocabulary"


def test_known_atom_counts():
    assert peptide.build("A", "capped").n_atoms == 22
    assert peptide.build("AAA", "zwitterionic").n_atoms == 33


def test_residue_blocks_are_contiguous(ala2):
    assert ala2.residue_blocks == ((0, 6), (6, 16), (16, 22))
    names = [r.name for r in ala2.topology.residues]
    assert names == ["ACE", "ALA", "NME"]


def test_extended_backbone_dihedrals():
    # The builder's extended chain, before the short minimization relaxes it.
    pep = peptide.build("AAAA", "capped", minimize=False)
    traj = pep.to_mdtraj()
    _, phi = md.compute_phi(traj)
    _, psi = md.compute_psi(traj)
    assert np.all(np.abs(np.degrees(phi)) > 170), np.degrees(phi)
    assert np.all(np.abs(np.degrees(psi)) > 170), np.degrees(psi)


@pytest.mark.parametrize("bad, words", [
    ("AXB", ["'X'", "position 2"]),
    ("", ["empty"]),
    ("AA3G", ["digit", "'3'", "position 3"]),
    ("A" * 21, ["21 residues", "at most 20"]),
    ("AlaGly", ["three-letter", "position 1"]),
    ("A", ["zwitterionic", "capped"]),
])
def test_bad_sequences_name_the_problem(bad, words):
    with pytest.raises(ValueError) as err:
        peptide.normalize_sequence(bad, "zwitterionic")
    for w in words:
        assert w in str(err.value), str(err.value)


def test_sequence_normalization():
    assert peptide.normalize_sequence(" a a\ta ", "capped") == "AAA"
    with pytest.raises(ValueError, match="termini"):
        peptide.normalize_sequence("AA", "free")


def test_pdb_round_trip(tmp_path, ala2):
    path = tmp_path / "ala2.pdb"
    ala2.to_mdtraj().save_pdb(str(path))
    again = md.load(str(path))
    assert peptide.identify(again.topology) == ("A", "capped")
    np.testing.assert_array_equal(peptide.atom_features(again.topology).atom_name,
                                  ala2.features.atom_name)
    assert peptide.residue_blocks(again.topology) == ala2.residue_blocks
    np.testing.assert_allclose(again.xyz[0], ala2.xyz, atol=6e-4)  # PDB keeps 1e-3 Å... 3 decimals
