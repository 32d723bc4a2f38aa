import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing: gpu tests cannot run either
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device (none on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ala2():
    from arbg_core import peptide

    return peptide.build("A", "capped")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A saved, untrained `tiny` model of capped alanine dipeptide (ala2): a real checkpoint
    folder for CLI and pipeline tests, seconds to sample from."""
    import torch

    from arbg_core import checkpoint
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    checkpoint.save(path, ArBG(ModelConfig.preset("tiny")), TokenizerConfig(n_bins=64, std=0.2),
                    system={"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"},
                    card={"tau": 1.0})
    return path


def toy_features(n_atoms: int, seed: int = 0):
    """Random but valid per-atom features of `n_atoms` atoms in at most 3 residues (model tests
    that need no real peptide). Import it with `from conftest import toy_features`."""
    from arbg_core.peptide import ATOM_NAMES, ELEMENTS, RESIDUE_TYPES, AtomFeatures

    rng = np.random.default_rng(seed)
    residue_index = np.sort(rng.integers(0, 3, n_atoms))
    return AtomFeatures(element=rng.integers(1, len(ELEMENTS), n_atoms),
                        atom_name=rng.integers(1, len(ATOM_NAMES), n_atoms),
                        residue_type=rng.integers(1, len(RESIDUE_TYPES), n_atoms),
                        residue_index=residue_index - residue_index.min())
