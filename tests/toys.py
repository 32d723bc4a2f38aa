"""Helpers shared by test modules (a module of its own: `conftest` is ambiguous between
tests/ and tests/app/ when the whole suite runs)."""

import numpy as np


def toy_features(n_atoms: int, seed: int = 0):
    """Random but valid per-atom features of `n_atoms` atoms in at most 3 residues (model tests
    that need no real peptide). Import it with `from toys import toy_features`."""
    from arbg_core.peptide import ATOM_NAMES, ELEMENTS, RESIDUE_TYPES, AtomFeatures

    rng = np.random.default_rng(seed)
    residue_index = np.sort(rng.integers(0, 3, n_atoms))
    return AtomFeatures(element=rng.integers(1, len(ELEMENTS), n_atoms),
                        atom_name=rng.integers(1, len(ATOM_NAMES), n_atoms),
                        residue_type=rng.integers(1, len(RESIDUE_TYPES), n_atoms),
                        residue_index=residue_index - residue_index.min())
