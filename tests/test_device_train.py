"""scripts/device_train.sh, the one command a session with a lent GPU runs, on the CPU with a
`tiny` model: it trains from a packed dataset without openmm or mdtraj, stops on its budget,
sends back files within the device's limits, and the next "machine" resumes from them to the
same weights as an unbroken run."""

import json
import os
import sys
import re
import subprocess
from pathlib import Path

import numpy as np
import torch

from arbg_core import checkpoint, lease, packed
from arbg_core.data import FrameData, pdb_text_of

ROOT = Path(__file__).resolve().parents[1]
NO_MD_STACK = "import sys\nfor m in ('openmm', 'mdtraj', 'pdbfixer', 'PeptideBuilder'):\n" \
              "    sys.modules[m] = None  # as on the device image\n"


def run_script(tmp_path, data, run, out, **env):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_MD_STACK)
    settings = dict(DATA=str(data), RUN=str(run), OUT=str(out), DEVICE="cpu", SIZE="tiny",
                    BINS="64", STEPS="12", BATCH="16", WARMUP="2", VAL_EVERY="4", LOG_EVERY="1",
                    MOMENTS="fp32", BUDGET_S="600") | env
    full = os.environ | settings | {"PYTHONPATH": f"{site}:{ROOT}", "OMP_NUM_THREADS": "1",
                                    "PY": sys.executable}
    return subprocess.run(["bash", str(ROOT / "scripts" / "device_train.sh")], env=full,
                          capture_output=True, text=True, timeout=600)


def test_device_command_trains_stops_and_resumes_elsewhere(tmp_path, ala2):
    rng = np.random.default_rng(0)
    xyz = (ala2.xyz[None] + rng.normal(0, 0.02, (240, ala2.n_atoms, 3))).astype(np.float32)
    frames = FrameData(xyz[:200], xyz[200:], xyz[:0], ala2.features,
                       pdb_text_of(ala2.to_mdtraj()),
                       {"system": {"sequence": "A", "termini": "capped",
                                   "preset": "amber99sbildn-obc"}})
    data = tmp_path / "ala2.npz"
    packed.save(frames, data)

    whole = run_script(tmp_path, data, tmp_path / "whole", tmp_path / "out0")
    assert whole.returncode == 0, whole.stdout + whole.stderr

    first = run_script(tmp_path, data, tmp_path / "run", tmp_path / "out1", BUDGET_S="0")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "starting" in first.stdout
    returned = sorted((tmp_path / "out1").iterdir())
    assert 0 < len(returned) <= lease.MAX_FILES
    assert all(p.is_file() and p.stat().st_size <= lease.MAX_FILE_BYTES for p in returned)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in returned)
    summary = json.loads(_member(tmp_path / "out1" / "run.tar", "summary.json"))
    assert not summary["finished"] and summary["steps_done"] < 12

    lease.unpack(tmp_path / "out1", tmp_path / "next")  # another machine, nothing else carried
    second = run_script(tmp_path, data, tmp_path / "next", tmp_path / "out2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming" in second.stdout
    done = json.loads((tmp_path / "next" / "summary.json").read_text())
    assert done["finished"] and done["resumed"] == "exact"
    a = checkpoint.load(tmp_path / "whole" / "last").model.state_dict()
    b = checkpoint.load(tmp_path / "next" / "last").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    lease.unpack(tmp_path / "out2", tmp_path / "back")  # what the session keeps
    best = checkpoint.load(tmp_path / "back" / "best")
    assert best.card.steps in (4, 8, 12)


def _member(tar_path, name):
    import tarfile

    with tarfile.open(tar_path) as tar:
        return tar.extractfile(name).read().decode()
