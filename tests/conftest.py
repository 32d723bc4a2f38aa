import os

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


@pytest.fixture(scope="module")
def toy_data(ala2):
    """300 jittered frames of alanine dipeptide as a FrameData (time-block split), for training."""
    import numpy as np

    from arbg_core.data import FrameData, pdb_text_of, time_block_split

    rng = np.random.default_rng(0)
    xyz = (ala2.xyz[None] + rng.normal(0, 0.02, (300, ala2.n_atoms, 3))).astype(np.float32)
    a, b, c = time_block_split(len(xyz))
    return FrameData(xyz[a], xyz[b], xyz[c], ala2.features, pdb_text_of(ala2.to_mdtraj()),
                     {"system": {"sequence": "A", "termini": "capped",
                                 "preset": "amber99sbildn-obc"}})
