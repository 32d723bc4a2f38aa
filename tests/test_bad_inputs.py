"""Issue #18: every bad input fails early and clearly (output folders: test_files.py).

Each bad input through the CLI: exit code 2, one line on stderr (no traceback, no progress bar:
the check ran before any sampling or MD), nothing written where --out points. The CLI runs in
this process (imports once), except under a memory limit, which needs a process of its own.
"""

import json
import os
import resource
import shutil
import stat
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from arbg_core import checkpoint
from arbg_core.data import FrameData, pdb_text_of
from cli_run import arbg_process, refuses, run_cli

N_REF = 50


@pytest.fixture(scope="module")
def files(tmp_path_factory, ala2):
    """A reference of ala2 (topology PDB + 50-frame DCD) and broken variants of it."""
    d = tmp_path_factory.mktemp("ref")
    rng = np.random.default_rng(0)
    xyz = (ala2.xyz[None] + 0.004 * rng.standard_normal((N_REF, ala2.n_atoms, 3))).astype(np.float32)
    traj = md.Trajectory(xyz, ala2.topology)
    traj[0].save_pdb(str(d / "top.pdb"))
    traj.save_dcd(str(d / "good.dcd"))
    data = (d / "good.dcd").read_bytes()
    frame = (len(data) - 276) // N_REF  # the DCD header of mdtraj is 276 bytes here
    (d / "truncated.dcd").write_bytes(data[: 276 + 24 * frame])  # 24 of 50 frames
    for name, value in (("inf", np.inf), ("nan", np.nan)):
        bad = xyz.copy()
        bad[[7, 30], 3, 0] = value
        md.Trajectory(bad, ala2.topology).save_dcd(str(d / f"{name}.dcd"))
    from arbg_core import peptide

    other = peptide.build("G", "capped")
    other.to_mdtraj().save_pdb(str(d / "other.pdb"))
    (d / "garbage.dcd").write_bytes(os.urandom(5000))
    empty = np.zeros((0, ala2.n_atoms, 3), np.float32)
    FrameData(xyz[:40], xyz[40:45], xyz[45:], ala2.features, pdb_text_of(traj),
              {"system": {"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"}}
              ).save(d / "data.npz")
    FrameData(empty, empty, empty, ala2.features, pdb_text_of(traj), {}).save(d / "empty.npz")
    return d


# ----------------------------------------------------------------------- sample: numeric flags

SAMPLE_FLAGS = [
    (["--batch-size", "-3"], "batch"), (["--batch-size", "0"], "batch"), (["--n", "0"], "n"),
    (["--n", "-5"], "n"), (["--temperature", "0"], "temperature"),
    (["--temperature", "nan"], "temperature"), (["--seed", "-1"], "seed"),
    (["--smc-threshold", "nan"], "smc"), (["--batch-size", "2.5"], "batch"),
]


@pytest.mark.parametrize("flags,match", SAMPLE_FLAGS, ids=[" ".join(f) for f, _ in SAMPLE_FLAGS])
def test_sample_numeric_flags(capsys, tmp_path, tiny_checkpoint, flags, match):
    out = tmp_path / "out"
    refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 10, *flags, "--out", out,
            match=match, out_dir=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_device_cuda_without_cuda(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "out"
    refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 4, "--device", "cuda",
            "--out", out, match="cuda", out_dir=out)


def test_configs_refuse_what_the_flags_refuse(ala2):
    """The API is as safe as the CLI: the config dataclasses check their own numbers."""
    from arbg_core.energy import EnergyModel
    from arbg_core.md import MDConfig
    from arbg_core.pipeline import SampleConfig
    from arbg_core.train import TrainConfig

    for make in (lambda: SampleConfig(batch_size=-3), lambda: SampleConfig(n=0),
                 lambda: SampleConfig(tau=float("nan")), lambda: SampleConfig(seed=-1),
                 lambda: MDConfig(temperature_k=0), lambda: MDConfig(save_ps=-1),
                 lambda: MDConfig(ns=0), lambda: MDConfig(ns=float("inf")),
                 lambda: TrainConfig(steps=0), lambda: TrainConfig(lr=float("nan")),
                 lambda: TrainConfig(batch_size="64"),
                 lambda: EnergyModel(ala2.topology, temperature_k=0)):
        with pytest.raises(ValueError):
            make()


# ------------------------------------------------------------------------------------ evaluate


def _evaluate(files, model, reference, *extra, top=True):
    return ["evaluate", "--model", model, "--reference", files / reference,
            *(["--top", files / "top.pdb"] if top else []), "--n-proposals", 24, "--n-eval", 10,
            "--lag", 2, "--batch-size", 24, *extra]


EVALUATE_CASES = [
    ("truncated.dcd", [], "truncated"), ("inf.dcd", [], "non-finite"),
    ("nan.dcd", [], "non-finite"), ("other.pdb", [], "mismatch"),
    ("good.dcd", ["--lag", 0], "lag"), ("good.dcd", ["--lag", N_REF], "lag"),
    ("good.dcd", ["--lag", -1], "lag"), ("good.dcd", ["--n-eval", 0], "n-eval"),
    ("good.dcd", ["--n-proposals", 0], "n-proposals"), ("missing.dcd", [], "missing.dcd"),
    ("garbage.dcd", [], "dcd"), ("empty.npz", [], "no test frames"),
]


@pytest.mark.parametrize("reference,extra,match", EVALUATE_CASES,
                         ids=[f"{r} {' '.join(map(str, e))}" for r, e, _ in EVALUATE_CASES])
def test_evaluate_refuses_before_sampling(capsys, tmp_path, files, tiny_checkpoint, reference,
                                          extra, match):
    out = tmp_path / "ev"
    refuses(capsys, *_evaluate(files, tiny_checkpoint, reference, *extra), "--out", out,
            match=match, out_dir=out)


def test_evaluate_dcd_without_top(capsys, tmp_path, files, tiny_checkpoint):
    out = tmp_path / "ev"
    refuses(capsys, *_evaluate(files, tiny_checkpoint, "good.dcd", top=False), "--out", out,
            match="--top", out_dir=out)


# --------------------------------------------------------------------------------- checkpoints


def _edited(tmp_path, tiny_checkpoint, **model) -> Path:
    path = tmp_path / "edited"
    shutil.copytree(tiny_checkpoint, path)
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"].update(model)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


@pytest.mark.parametrize("model", [{"n_heads": 0}, {"d_model": "64"}, {"n_layers": -1},
                                   {"n_layers": 3}, {"n_bins": 2.5}, {"mlp_ratio": "nan"}],
                         ids=["n_heads 0", "string width", "n_layers -1", "layers vs weights",
                              "float bins", "nan ratio"])
def test_checkpoint_config_is_checked(capsys, tmp_path, tiny_checkpoint, model):
    path = _edited(tmp_path, tiny_checkpoint, **model)
    out = tmp_path / "out"
    refuses(capsys, "sample", "--model", path, "--n", 4, "--out", out, match="config",
            out_dir=out)


def _limit_memory():
    resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))


def test_huge_config_is_refused_before_allocating(tmp_path, tiny_checkpoint):
    """d_model 65536 would need ~51 GB: refused from the weights' header under a 6 GB cap."""
    path = _edited(tmp_path, tiny_checkpoint, d_model=65536)
    p = arbg_process("sample", "--model", path, "--n", 4, "--out", tmp_path / "out",
                     preexec_fn=_limit_memory)
    _, err = p.communicate(timeout=300)
    assert p.returncode == 2 and len(err.strip().splitlines()) == 1, err[-2000:]
    assert "d_model" in err or "shape" in err


def test_weights_header_that_lies_is_refused(tmp_path, tiny_checkpoint):
    path = _edited(tmp_path, tiny_checkpoint)
    w = path / checkpoint.WEIGHTS
    data = w.read_bytes()
    w.write_bytes((2**40).to_bytes(8, "little") + data[8:])  # a header "a terabyte long"
    with pytest.raises(ValueError, match="safetensors"):
        checkpoint.load(path)


def test_weights_are_readable_by_others(tiny_checkpoint, tmp_path):
    for p in (tiny_checkpoint, checkpoint.copy_weights(tiny_checkpoint, tmp_path / "copy")):
        mode = stat.S_IMODE((p / checkpoint.WEIGHTS).stat().st_mode)
        assert mode & 0o044 == 0o044, oct(mode)


# -------------------------------------------------------------------------------------- md


MD_FLAGS = [(["--temperature", "0"], "temperature"), (["--save-ps", "-1"], "save-ps"),
            (["--ns", "0"], "ns"), (["--ns", "nan"], "ns"), (["--replicas", "0"], "replicas"),
            (["--chunk-frames", "0"], "chunk"), (["--dt-fs", "0"], "dt"),
            (["--seed", "-1"], "seed"), (["--save-ps", "0.0001"], "save_ps"),
            (["--warmup-ps", "-1"], "warmup")]


@pytest.mark.parametrize("flags,match", MD_FLAGS, ids=[" ".join(f) for f, _ in MD_FLAGS])
def test_md_numeric_flags(capsys, tmp_path, flags, match):
    out = tmp_path / "md"
    args = {"--ns": "0.002", "--warmup-ps": "0.01", "--chunk-frames": "2"}
    args.update(dict(zip(flags[::2], flags[1::2])))
    refuses(capsys, "md", "A", "--termini", "capped", *[x for kv in args.items() for x in kv],
            "--out", out, match=match, out_dir=out)


def test_md_out_is_an_existing_file(capsys, tmp_path):
    f = tmp_path / "file"
    f.write_text("mine")
    refuses(capsys, "md", "A", "--termini", "capped", "--ns", "0.002", "--out", f)
    assert f.read_text() == "mine"


# ----------------------------------------------------------------------------------- train


TRAIN_FLAGS = [(["--steps", "0"], "steps"), (["--batch-size", "0"], "batch"),
               (["--lr", "nan"], "lr"), (["--val-every", "0"], "val"), (["--stride", "0"], "stride"),
               (["--bins", "1"], "bins"), (["--min-lr-ratio", "2"], "min-lr")]


@pytest.mark.parametrize("flags,match", TRAIN_FLAGS, ids=[" ".join(f) for f, _ in TRAIN_FLAGS])
def test_train_numeric_flags(capsys, tmp_path, files, flags, match):
    out = tmp_path / "run"
    args = {"--steps": "2", "--batch-size": "4", "--val-every": "1", "--val-frames": "4"}
    args.update(dict(zip(flags[::2], flags[1::2])))
    refuses(capsys, "train", "--data", files / "data.npz", "--size", "tiny", "--bf16", "off",
            *[x for kv in args.items() for x in kv], "--out", out, match=match, out_dir=out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_train_device_cuda_without_cuda(capsys, tmp_path, files):
    out = tmp_path / "run"
    refuses(capsys, "train", "--data", files / "data.npz", "--size", "tiny", "--device", "cuda",
            "--out", out, match="cuda", out_dir=out)


def test_resume_says_whether_it_continued(capsys, tmp_path, files):
    args = ["train", "--data", files / "data.npz", "--size", "tiny", "--steps", 2, "--val-every", 1,
            "--val-frames", 4, "--batch-size", 4, "--bf16", "off", "--device", "cpu",
            "--out", tmp_path / "run", "--resume"]
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0, err[-2000:]
    assert "starting fresh" in out
    rc, out, err = run_cli(capsys, *args)
    assert rc == 0, err[-2000:]
    assert "resuming" in out and "step 2" in out
    summary = (tmp_path / "run" / "summary.json").read_text()
    json.loads(summary)
    assert "Infinity" not in summary and "NaN" not in summary
