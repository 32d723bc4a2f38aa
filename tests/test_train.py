import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from arbg_core import checkpoint
from arbg_core.data import random_rotations, rotate, time_block_split
from arbg_core.tokenizer import Tokenizer
from arbg_core.train import TrainConfig, lr_factor, train


def small_cfg(**kw):
    base = dict(size="tiny", steps=6, batch_size=16, val_every=3, save_every=3, warmup_steps=2,
                val_frames=32, seed=1)
    return TrainConfig(**(base | kw))


def weights(path):
    return checkpoint.load(path).model.state_dict()


def test_time_block_split_has_no_overlap():
    tr, va, te = time_block_split(1000)
    assert (tr.stop, va.start, va.stop, te.start, te.stop) == (800, 800, 900, 900, 1000)


def test_rotations_are_proper_and_uniformish():
    r = random_rotations(2000, torch.Generator().manual_seed(0), dtype=torch.float64)
    eye = torch.eye(3, dtype=torch.float64).expand_as(r)
    assert torch.allclose(r @ r.transpose(1, 2), eye, atol=1e-10)
    assert torch.allclose(torch.linalg.det(r), torch.ones(2000, dtype=torch.float64))
    # A uniform rotation sends a fixed vector to a uniform direction: mean ~ 0.
    v = r @ torch.tensor([1.0, 0, 0], dtype=torch.float64)
    assert v.mean(0).abs().max() < 0.06
    x = torch.randn(4, 5, 3, dtype=torch.float64)
    y = rotate(x, r[:4])
    assert torch.allclose(torch.cdist(x, x), torch.cdist(y, y), atol=1e-10)


def test_lr_schedule():
    cfg = TrainConfig(steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(99, cfg) == pytest.approx(0.1, abs=1e-3)


def test_training_lowers_loss_and_writes_checkpoints(tmp_path, toy_data):
    summary = train(toy_data, tmp_path, small_cfg(steps=30, val_every=10, lr=3e-3))
    hist = summary["history"]
    assert hist[-1]["val_nll"] < hist[0]["val_nll"]
    for name in ("best", "last"):
        loaded = checkpoint.load(tmp_path / name)
        assert loaded.config.system.sequence == "A"
        assert loaded.tokenizer.cfg.frame == "body"  # the default since the recipe ablation
        assert loaded.tokenizer.cfg.std == pytest.approx(
            Tokenizer.fit_std(toy_data.xyz_train, toy_data.features, "body"))
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 30


def test_same_seed_same_model_and_resume_is_seamless(tmp_path, toy_data):
    train(toy_data, tmp_path / "a", small_cfg())
    train(toy_data, tmp_path / "b", small_cfg())
    train(toy_data, tmp_path / "c", small_cfg(steps=3))
    train(toy_data, tmp_path / "c", small_cfg(), resume=True)
    wa, wb, wc = (weights(tmp_path / x / "last") for x in "abc")
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
        assert torch.allclose(wa[k], wc[k], atol=1e-6), k


def test_resume_refuses_other_data(tmp_path, toy_data):
    from arbg_core.data import FrameData

    train(toy_data, tmp_path / "r", small_cfg(steps=2))
    half = FrameData(toy_data.xyz_train[::2], toy_data.xyz_val, toy_data.xyz_test,
                     toy_data.features, toy_data.topology_pdb, {**toy_data.meta, "frames": {"train": 1}})
    with pytest.raises(ValueError, match="other data or settings"):
        train(half, tmp_path / "r", small_cfg(), resume=True)


def test_init_starts_from_a_checkpoint(tmp_path, toy_data):
    """--init: the run starts from the checkpoint's weights (lr 0 keeps them), not fresh ones;
    a checkpoint of another size is refused."""
    train(toy_data, tmp_path / "a", small_cfg(steps=4))
    train(toy_data, tmp_path / "b", small_cfg(steps=1, lr=0.0, init=str(tmp_path / "a/last")))
    train(toy_data, tmp_path / "c", small_cfg(steps=1, lr=0.0))
    wa, wb, wc = (weights(tmp_path / x / "last") for x in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    with pytest.raises(ValueError, match="settings differ"):
        train(toy_data, tmp_path / "d", small_cfg(size="small", init=str(tmp_path / "a/last")))


def test_muon_optimizer_runs(tmp_path, toy_data):
    s = train(toy_data, tmp_path, small_cfg(optimizer="muon", steps=4, val_every=2))
    assert np.isfinite(s["best_val_nll"])


def test_ddp_two_cpu_processes(tmp_path, toy_data):
    data = toy_data.save(tmp_path / "toy.npz")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29517", "-m", "arbg_core.cli", "train", "--data", str(data),
           "--size", "tiny", "--steps", "4", "--batch-size", "16", "--val-every", "2",
           "--device", "cpu", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = checkpoint.load(out / "last")
    assert loaded.model.cfg.d_model == 32
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4


def test_dry_run_prints_parameter_counts():
    r = subprocess.run([sys.executable, "-m", "arbg_core.cli", "train", "--dry-run"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = {line.split()[0]: float(line.split()[1].rstrip("M")) for line in r.stdout.splitlines()}
    assert set(lines) == {"tiny", "small", "base", "large"}
    assert 1.0 < lines["small"] < 1.3 and 120 < lines["large"] < 140


def test_source_frame_limits_and_split(tmp_path, ala2):
    from arbg_core.data import parse_source, prepare
    from arbg_core.md import MDConfig, run_md

    assert parse_source("runs/x:370") == ("runs/x", 370)
    assert parse_source("runs/x") == ("runs/x", None)
    run_md(ala2.topology, ala2.xyz, tmp_path / "md", MDConfig(ns=0.02, warmup_ps=1, chunk_frames=10))
    fd = prepare([f"{tmp_path / 'md'}:10"], fractions=(0.9, 0.1, 0.0))
    assert (len(fd.xyz_train), len(fd.xyz_val), len(fd.xyz_test)) == (9, 1, 0)
    # N counts MD frames before the stride: frames 0, 3, 6, 9 of the first 10, none after
    strided = prepare([f"{tmp_path / 'md'}:10"], stride=3, fractions=(1.0, 0.0, 0.0))
    first10 = np.concatenate([fd.xyz_train, fd.xyz_val])
    np.testing.assert_array_equal(strided.xyz_train, first10[[0, 3, 6, 9]])
    r = subprocess.run([sys.executable, "-m", "arbg_core.cli", "train", "--data", str(tmp_path / "md"),
                        "--split", "0.5,0.6,0", "--save-data", str(tmp_path / "d.npz")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--split" in r.stderr
