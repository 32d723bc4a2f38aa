"""Fixtures of the app tests: a random-weight `tiny` checkpoint for alanine dipeptide in a
temporary models folder (ARBG_MODELS_DIR), a small reference ensemble beside it, and an empty
user models folder (ARBG_USER_MODELS_DIR: no model of the developer's own is listed)."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # app_lib lives beside app.py, outside the installed package


def make_models_dir(root: Path, with_reference: bool = True) -> Path:
    """root/models/tiny (random weights) and, optionally, root/reference/tiny.npz."""
    import torch

    from arbg_core import checkpoint, peptide
    from arbg_core.data import FrameData, pdb_text_of
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    checkpoint.save(root / "models" / "tiny", ArBG(ModelConfig.preset("tiny")),
                    TokenizerConfig(n_bins=64, a=3.0, std=0.2),
                    system={"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"},
                    card={"tau": 1.0, "name": "tiny test model"})
    if with_reference:
        pep = peptide.build("A", "capped")
        rng = np.random.default_rng(0)
        xyz = (pep.xyz[None] + 0.004 * rng.standard_normal((240, pep.n_atoms, 3))).astype(np.float32)
        empty = np.zeros((0, pep.n_atoms, 3), np.float32)
        FrameData(empty, empty, xyz, pep.features, pdb_text_of(pep.to_mdtraj()),
                  {"note": "test reference: jittered built structure"}).save(root / "reference" / "tiny.npz")
    return root / "models"


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    path = make_models_dir(tmp_path_factory.mktemp("arbg-app"))
    saved = {k: os.environ.get(k) for k in ("ARBG_MODELS_DIR", "ARBG_REFERENCE_DIR",
                                            "ARBG_USER_MODELS_DIR")}
    os.environ["ARBG_MODELS_DIR"] = str(path)  # AppTest runs the scripts in this process
    os.environ["ARBG_USER_MODELS_DIR"] = str(path.parent / "user_models")
    os.environ.pop("ARBG_REFERENCE_DIR", None)  # -> reference/ beside the models folder
    yield path
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def ala2_pdb(ala2, tmp_path_factory) -> str:
    """PDB text of alanine dipeptide (20 jittered models) in the builder's atom order."""
    import mdtraj as md

    rng = np.random.default_rng(1)
    xyz = (ala2.xyz[None] + 0.003 * rng.standard_normal((20, ala2.n_atoms, 3))).astype(np.float32)
    path = tmp_path_factory.mktemp("pdb") / "ala2.pdb"
    md.Trajectory(xyz, ala2.topology).save_pdb(str(path))
    return path.read_text()


@pytest.fixture(scope="module")
def files(ala2, tmp_path_factory):
    """ala2 as topology PDB + DCD/XTC/TRR/multi-model PDB (20 frames), and truncated copies."""
    import mdtraj as md

    d = tmp_path_factory.mktemp("traj")
    rng = np.random.default_rng(0)
    traj = md.Trajectory((ala2.xyz[None] + 0.003 * rng.standard_normal((20, 22, 3))).astype(np.float32),
                         ala2.topology)
    out = {}
    for ext in ("pdb", "dcd", "xtc", "trr"):
        traj.save(str(d / f"t.{ext}"))
        out[ext] = (d / f"t.{ext}").read_bytes()
    traj[0].save(str(d / "top.pdb"))
    out["top"] = (d / "top.pdb").read_bytes()
    return out
