"""The transferable pipeline on a toy corpus of real (very short) MD: corpus, padded batches,
DDP training, and sampling a sequence the model never saw."""

import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from arbg_core import checkpoint, cli, frames
from arbg_core.data import RESERVED, Corpus, FrameData, prepare_corpus, read_sequence_list
from arbg_core.model import ArBG, ModelConfig
from arbg_core.peptide import AMINO_ACIDS
from arbg_core.sampling import bins_log_prob, log_prob, sample
from arbg_core.tokenizer import Tokenizer, TokenizerConfig
from arbg_core.batches import encode_batch
from arbg_core.train import TRANSFERABLE_STD_NM, TrainConfig, train_transferable

ROOT = Path(__file__).resolve().parent.parent
TOY = "GA train\nAS train\nSG val  # never trained on\n"


@pytest.fixture(scope="module")
def md_root(tmp_path_factory):
    """`arbg md --sequences` on three dipeptides, 10 frames each."""
    root = tmp_path_factory.mktemp("md")
    (root / "seqs.txt").write_text(TOY)
    rc = cli.main(["md", "--sequences", str(root / "seqs.txt"), "--ns", "0.01", "--warmup-ps", "1",
                   "--chunk-frames", "5", "--out", str(root / "corpus_md")])
    assert rc == 0
    return root / "corpus_md"


@pytest.fixture(scope="module")
def corpus(md_root, tmp_path_factory):
    return prepare_corpus(md_root, tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def ddp_run(md_root, tmp_path_factory):
    """Two CPU processes (gloo) train on the MD folder itself: rank 0 prepares the corpus."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", "29533", "-m", "arbg_core.cli", "train", "--transferable",
           "--data", str(md_root), "--size", "tiny", "--steps", "4", "--batch-size", "16",
           "--val-every", "2", "--device", "cpu", "--frame", "centered", "--out", str(out)]
    # centered: an untrained body-frame model draws many samples outside its parametrization
    # (log q = -inf, test_body_frame.py), which the sampling tests here do not expect
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_sequence_list_asset():
    path = ROOT / "assets" / "corpus" / "dipeptides.txt"
    listed = read_sequence_list(path)
    roles = {r: [s for s, role in listed if role == r] for r in ("train", "val", "test")}
    assert len(roles["train"]) >= 100 and len(roles["val"]) == 10 and len(roles["test"]) == 20
    assert {s[0] for s in roles["train"]} == {s[1] for s in roles["train"]} == set(AMINO_ACIDS)
    assert all(len(s) == 2 for s, _ in listed) and not {s for s, _ in listed} & set(RESERVED)
    spec = importlib.util.spec_from_file_location("mkl", ROOT / "scripts" / "make_dipeptide_list.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.make() == path.read_text()  # the fixed seed reproduces the file


def test_read_sequence_list_errors(tmp_path):
    f = tmp_path / "s.txt"
    f.write_text("# c\nag\nGG val # held out\n")
    assert read_sequence_list(f) == [("AG", "train"), ("GG", "val")]
    for bad, match in (("AG tune\n", "line 1"), ("AG\nAG val\n", "twice")):
        f.write_text(bad)
        with pytest.raises(ValueError, match=match):
            read_sequence_list(f)


def test_prepare_corpus_records_the_protocol(corpus, md_root):
    m = corpus.manifest
    assert m["termini"] == "zwitterionic" and m["protocol"]["ns"] == 0.01
    assert corpus.sequences("train") == ["GA", "AS"] and corpus.sequences("val") == ["SG"]
    assert [m["sequences"][s]["seed"] for s in ("GA", "AS", "SG")] == [0, 1, 2]
    assert m["sequences"]["GA"]["frames"] == {"train": 8, "val": 1, "test": 1}
    assert corpus.lengths() == (2, 2)
    d = corpus.data("AS")
    assert isinstance(d.xyz_train, np.memmap)  # lazily mapped, not read
    np.testing.assert_array_equal(d.xyz_train, FrameData.load(corpus.root / "AS.npz").xyz_train)


def test_reserved_sequences_are_refused(corpus, md_root, tmp_path, caplog):
    fake = tmp_path / "md"
    fake.mkdir()
    (fake / "GA").symlink_to(md_root / "GA")
    manifest = json.loads((md_root / "manifest.json").read_text())
    manifest |= {"sequences": ["GA", "IA"], "roles": {"GA": "train", "IA": "train"}}
    (fake / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level(logging.WARNING, logger="arbg"):
        got = prepare_corpus(fake, tmp_path / "c")
    assert "IA is reserved" in caplog.text
    assert got.sequences("train") == ["GA"] and got.manifest["excluded"] == ["IA"]
    # A corpus that lists one anyway (edited by hand) is refused, by the API and the CLI.
    bad = tmp_path / "bad"
    bad.mkdir()
    m = dict(corpus.manifest, sequences=dict(corpus.manifest["sequences"], KW={"role": "test"}))
    (bad / "corpus.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="reserved"):
        Corpus(bad)
    rc = cli.main(["train", "--transferable", "--data", str(bad), "--out", str(tmp_path / "o")])
    assert rc == 2


def test_batches_mix_sequences_reproducibly(corpus):
    groups = corpus.sample_batch(32, torch.Generator().manual_seed(0))
    again = corpus.sample_batch(32, torch.Generator().manual_seed(0))
    assert sum(len(x) for _, x in groups) == 32 and len(groups) == 2  # both train sequences
    assert {f.n_atoms for f, _ in groups} == {corpus.data(s).n_atoms for s in ("GA", "AS")}
    for (_, a), (_, b) in zip(groups, again):
        assert torch.equal(a, b)
    val = corpus.validation_frames(10, "val")
    assert len(val) == 1 and val[0][1].shape == (1, corpus.data("SG").n_atoms, 3)


def test_padded_batch_log_q_matches_one_by_one(corpus):
    torch.manual_seed(0)
    model = ArBG(ModelConfig.preset("tiny")).eval()
    tok = Tokenizer(TokenizerConfig(n_bins=64, a=4.5, std=TRANSFERABLE_STD_NM))
    groups = corpus.sample_batch(12, torch.Generator().manual_seed(1))
    bins, cond, clamped = encode_batch(tok, groups)  # right-padded (12, T)
    assert clamped == 0.0 and bins.shape == (12, 3 * max(f.n_atoms for f, _ in groups))
    with torch.no_grad():
        padded = bins_log_prob(model, bins, cond).numpy()
    first = 0
    for features, xyz in groups:
        alone = log_prob(model, tok, features, xyz.numpy(), device="cpu", center=True)
        got = padded[first:first + len(xyz)] + tok.log_jacobian(features.n_atoms)
        np.testing.assert_allclose(got, alone, rtol=0, atol=1e-6)
        first += len(xyz)


def test_ddp_checkpoint_is_transferable(ddp_run):
    loaded = checkpoint.load(ddp_run / "last")
    config = loaded.config
    assert config.transferable and config.system is None
    assert config.coverage.lengths == (2, 2) and config.coverage.termini == "zwitterionic"
    assert loaded.tokenizer.cfg.std == TRANSFERABLE_STD_NM and loaded.tokenizer.cfg.a == 4.5
    assert loaded.card.data["sequences"]["train"] == ["GA", "AS"]
    summary = json.loads((ddp_run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    assert np.isfinite(summary["history"][-1]["val_unseen_nll"])  # SG, never trained on
    assert Corpus(ddp_run / "corpus").sequences("val") == ["SG"]  # prepared on the fly


def test_conditioning_changes_the_samples(ddp_run, corpus):
    """GA and AS: different atoms; the model samples valid conformations of both."""
    loaded = checkpoint.load(ddp_run / "last")
    model, tok = loaded.model, loaded.tokenizer
    out = {}
    for seq in ("GA", "AS"):
        f = corpus.data(seq).features
        xyz, log_q = sample(model, tok, f, 8, seed=3, device="cpu")
        assert xyz.shape == (8, f.n_atoms, 3) and np.isfinite(xyz).all() and np.isfinite(log_q).all()
        rescored = log_prob(model, tok, f, xyz, device="cpu")
        np.testing.assert_allclose(rescored, log_q, rtol=1e-5)
        out[seq] = xyz
    # Same seed, same model: only the conditioning differs, and so does the first atom drawn.
    assert not np.allclose(out["GA"][:, 0], out["AS"][:, 0])


def test_resume_continues_a_transferable_run(corpus, tmp_path):
    cfg = dict(size="tiny", steps=4, batch_size=8, val_every=2, save_every=2, warmup_steps=1,
               val_frames=8)
    a = train_transferable(corpus, tmp_path / "a", TrainConfig(**cfg), device="cpu")
    train_transferable(corpus.root, tmp_path / "b", TrainConfig(**(cfg | {"steps": 2})), device="cpu")
    train_transferable(corpus.root, tmp_path / "b", TrainConfig(**cfg), resume=True, device="cpu")
    wa, wb = (checkpoint.load(tmp_path / x / "last").model.state_dict() for x in "ab")
    for k in wa:
        assert torch.allclose(wa[k], wb[k], atol=1e-6), k
    assert set(a["history"][-1]) == {"step", "train_loss", "val_nll", "val_unseen_nll"}


def test_cli_sample_in_range_and_out_of_range(ddp_run, tmp_path, capsys):
    model = str(ddp_run / "last")
    rc = cli.main(["sample", "--model", model, "--sequence", "GS", "--n", "16", "--seed", "1",
                   "--out", str(tmp_path / "gs")])
    assert rc == 0  # GS is in no corpus: zero-shot, but a length the model covers
    summary = json.loads((tmp_path / "gs" / "summary.json").read_text())
    assert summary["sequence"] == "GS" and summary["counts"]["n"] == 16
    capsys.readouterr()
    rc = cli.main(["sample", "--model", model, "--sequence", "GSA", "--n", "4",
                   "--out", str(tmp_path / "gsa")])
    err = capsys.readouterr().err
    assert rc == 2 and "length 2" in err and "GSA" in err


def test_cli_evaluate_zero_shot_on_a_dipeptide(ddp_run, md_root, tmp_path, capsys):
    """`arbg evaluate` of the transferable model against the MD of a sequence it never trained
    on: every metric is finite for a zwitterionic dipeptide (its phi/psi pair spans the bond)."""
    out = tmp_path / "ev"
    rc = cli.main(["evaluate", "--model", str(ddp_run / "last"), "--sequence", "SG",
                   "--reference", str(md_root / "SG"), "--n-proposals", "64", "--n-eval", "10",
                   "--lag", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    for ens in ("proposal", "reweighted", "noise_floor"):
        assert all(np.isfinite(report["metrics"][ens][k]) for k in ("e_w2", "t_w2", "tica_w2")), ens
    assert report["reference"]["n_frames"] == 10
    assert (out / "ramachandran.png").stat().st_size > 1000


def test_ship_transferable_script(ddp_run, md_root, tmp_path):
    """scripts/ship_transferable.py end to end on the toy corpus: tau tuned on the val sequence,
    metrics on the test one, card, and the app's per-system reference file."""
    toy = tmp_path / "md"
    shutil.copytree(md_root, toy)
    manifest = json.loads((toy / "manifest.json").read_text())
    manifest["roles"]["AS"] = "test"  # no test role in the toy corpus: relabel one (plumbing only)
    (toy / "manifest.json").write_text(json.dumps(manifest))
    spec = importlib.util.spec_from_file_location("ship_transferable", ROOT / "scripts" / "ship_transferable.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--checkpoint", str(ddp_run / "last"), "--md", str(toy), "--name", "toy",
            "--taus", "0.9,1.0", "--n-tune", "32", "--n-proposals", "48", "--n-eval", "10",
            "--lag", "1", "--ref-frames", "6", "--dest", str(tmp_path / "repo")]
    mod.main(args + ["--shard", "0/2"])  # one process's share: rows only, nothing shipped yet
    assert (tmp_path / "repo/results/ship_toy/AS/row.json").is_file()
    assert not (tmp_path / "repo/assets/models/toy").exists()
    mod.main(args)
    card = json.loads((tmp_path / "repo/assets/models/toy/card.json").read_text())
    assert card["tau"] in (0.9, 1.0) and [r["tau"] for r in card["tau_tuning"]] == [0.9, 1.0]
    assert card["corpus_md"]["roles"] == {"train": ["GA"], "val": ["SG"], "test": ["AS"]}
    (row,) = card["evaluation"]["per_sequence"]
    assert row["sequence"] == "AS" and row["reference_frames"] == 10
    assert all(np.isfinite(row[k]) for k in row if k != "sequence")
    assert card["evaluation"]["mean"]["reweighted_e_w2"]["mean"] == row["reweighted_e_w2"]
    ref = FrameData.load(tmp_path / "repo/assets/reference/toy/AS-zw.npz")
    assert ref.xyz_test.shape == (6, ref.n_atoms, 3)
    assert checkpoint.load(tmp_path / "repo/assets/models/toy").config.transferable
    # A rerun keeps finished work: the row cached for this checkpoint and settings is reused.
    cache = tmp_path / "repo/results/ship_toy/AS/row.json"
    saved = json.loads(cache.read_text())
    saved["value"]["ess_fraction"] = 0.5
    cache.write_text(json.dumps(saved))
    mod.main(args)
    card = json.loads((tmp_path / "repo/assets/models/toy/card.json").read_text())
    assert card["evaluation"]["per_sequence"][0]["ess_fraction"] == 0.5
    # A test sequence whose MD is unfinished stops the script with a clear message.
    state = toy / "AS" / "state.json"
    state.write_text(json.dumps(json.loads(state.read_text()) | {"frames_done": 3}))
    with pytest.raises(SystemExit, match="MD of 1 test sequences is not finished"):
        mod.main(args)


def test_a_packed_corpus_trains_like_the_original(corpus, tmp_path):
    """packed.pack_corpus: the train and val sequences, fixed point; a transferable run on it
    reads the same frames to within the packing bound (the device's corpus)."""
    from arbg_core import packed

    manifest = packed.pack_corpus(corpus.root, tmp_path / "packed")
    assert set(manifest["sequences"]) == {"GA", "AS", "SG"}  # no test sequences in the toy
    small = Corpus(tmp_path / "packed")
    for seq in ("GA", "SG"):
        a, b = corpus.data(seq), small.data(seq)
        canon, _ = frames.canonicalize(a.xyz_train, frames.frame_atoms(a.features))
        assert np.abs(canon.numpy() - b.xyz_train).max() <= b.meta["packing"]["max_error_nm"]
    cfg = TrainConfig(size="tiny", steps=2, batch_size=8, val_every=2, warmup_steps=1,
                      val_frames=8)
    summary = train_transferable(small, tmp_path / "run", cfg, device="cpu")
    assert np.isfinite(summary["best_val_nll"])
