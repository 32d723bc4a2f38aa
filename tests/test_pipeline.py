"""End to end through the CLI: sample and evaluate with a tiny model and a short reference."""

import json
import subprocess
import sys

import mdtraj as md
import numpy as np
import pytest

from arbg_core import checkpoint
from arbg_core.md import MDConfig, load_run, run_md
from arbg_core.model import ArBG, ModelConfig
from arbg_core.pipeline import SampleConfig, run_sampling
from arbg_core.tokenizer import TokenizerConfig

SYSTEM = {"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"}


def arbg(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "arbg_core.cli", *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "tiny"
    checkpoint.save(path, ArBG(ModelConfig.preset("tiny")), TokenizerConfig(n_bins=64, std=0.2),
                    system=SYSTEM, card={"tau": 1.0})
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, ala2):
    out = tmp_path_factory.mktemp("ref")
    # a fixed platform: "auto" times both, and under load may pick the other one (another trajectory)
    run_md(ala2.topology, ala2.xyz, out, MDConfig(ns=0.12, warmup_ps=2, chunk_frames=40, seed=5,
                                                  platform="Reference"))
    return out


def test_sample_cli_writes_the_documented_outputs(tmp_path, tiny_model):
    out = tmp_path / "s"
    arbg("sample", "--model", tiny_model, "--n", 64, "--batch-size", 32, "--seed", 3, "--out", out)
    summary = json.loads((out / "summary.json").read_text())
    counts = summary["counts"]
    assert counts["n"] == 64 and counts["kept"] + counts["mirrored"] + counts["dropped"] == 64
    assert (summary["seed"] if "seed" in summary else summary["config"]["seed"]) == 3
    z = np.load(out / "samples.npz")
    for key in ("log_q", "u", "log_w", "weights"):
        assert z[key].shape == (64,), key
    w = z["weights"]
    assert np.isclose(w.sum(), 1.0) and (w >= 0).all()
    finite = np.isfinite(z["log_w"])
    np.testing.assert_allclose(z["log_w"][finite], (-z["u"] - z["log_q_used"])[finite], rtol=1e-12)
    traj = md.load(str(out / "samples.dcd"), top=str(out / "topology.pdb"))
    assert traj.n_frames == 64 and traj.n_atoms == 22
    # Same seed, same samples (the documented reproducibility promise).
    out2 = tmp_path / "s2"
    arbg("sample", "--model", tiny_model, "--n", 64, "--batch-size", 32, "--seed", 3, "--out", out2)
    np.testing.assert_array_equal(np.load(out2 / "samples.npz")["log_q"], z["log_q"])


def test_sample_cli_errors(tmp_path, tiny_model):
    r = arbg("sample", "--model", tmp_path / "nope", "--n", 4, "--out", tmp_path / "x", check=False)
    assert r.returncode == 2 and "nope" in r.stderr
    r = arbg("sample", "--model", tiny_model, "--sequence", "GG", "--n", 4, "--out", tmp_path / "x",
             check=False)
    assert r.returncode == 2 and "serves A" in r.stderr


def test_sample_cli_picks_the_shipped_model_of_a_sequence(tmp_path):
    r = arbg("sample", "--sequence", "A", "--termini", "capped", "--n", 8, "--out", tmp_path / "a")
    assert "model: ala2 (shipped)" in r.stdout
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["sequence"] == "A"
    r = arbg("sample", "--sequence", "GSGSGSGSGS", "--n", 8, "--out", tmp_path / "long", check=False)
    assert r.returncode == 2 and "no shipped model covers GSGSGSGSGS (zwitterionic)" in r.stderr
    r = arbg("sample", "--n", 8, "--out", tmp_path / "none", check=False)
    assert r.returncode == 2 and "give --model, or --sequence" in r.stderr


def test_evaluate_end_to_end(tmp_path, tiny_model, reference):
    out = tmp_path / "ev"
    arbg("evaluate", "--model", tiny_model, "--reference", reference, "--n-proposals", 200,
         "--n-eval", 60, "--lag", 2, "--batch-size", 100, "--out", out)
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    for ens in ("proposal", "reweighted", "noise_floor"):
        for metric in ("e_w2", "t_w2", "tica_w2"):
            assert m[ens][metric] is not None and np.isfinite(m[ens][metric]), (ens, metric)
            assert m[ens][metric] >= 0
    # A random model's proposals clash (huge energies); the two halves of 120 ps of MD do not.
    # (Not T-W2: in 120 ps the halves can sit in different basins, as far apart as random angles.)
    assert m["proposal"]["e_w2"] > 100 * m["noise_floor"]["e_w2"]
    assert report["reference"]["n_frames"] == 120
    for f in ("ramachandran.png", "energy.png", "ramachandran.html", "energy.html"):
        assert (out / f).stat().st_size > 1000, f
    assert (out / "samples" / "samples.npz").exists()


def test_evaluate_rejects_a_mismatched_reference(tmp_path, tiny_model):
    from arbg_core import peptide

    other = tmp_path / "other"
    pep = peptide.build("G", "capped")
    run_md(pep.topology, pep.xyz, other, MDConfig(ns=0.005, warmup_ps=1, chunk_frames=5))
    r = arbg("evaluate", "--model", tiny_model, "--reference", other, "--n-proposals", 20,
             "--n-eval", 10, "--out", tmp_path / "ev", check=False)
    assert r.returncode == 2 and "mismatch" in r.stderr


def test_run_sampling_is_reproducible_in_process(tiny_model, ala2):
    loaded = checkpoint.load(tiny_model)
    a = run_sampling(loaded, ala2, SampleConfig(n=32, seed=7, batch_size=16))
    b = run_sampling(loaded, ala2, SampleConfig(n=32, seed=7, batch_size=16))
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.ensemble.log_w, b.ensemble.log_w)
    with pytest.raises(ValueError, match="tau"):
        run_sampling(loaded, ala2, SampleConfig(n=4, tau=100.0))


def test_corpus_mode_shards(tmp_path):
    seqs = tmp_path / "seqs.txt"
    seqs.write_text("# dipeptides\nAG\nGA\nGG\n")
    for shard in ("0/2", "1/2"):
        arbg("md", "--sequences", seqs, "--shard", shard, "--ns", 0.003, "--warmup-ps", 1,
             "--chunk-frames", 3, "--out", tmp_path / "corpus")
    for s in ("AG", "GA", "GG"):
        assert load_run(tmp_path / "corpus" / s).n_frames == 3
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert manifest["sequences"] == ["AG", "GA", "GG"]
    r = arbg("md", "--sequences", seqs, "--shard", "2/2", "--ns", 1, "--out", tmp_path / "c",
             check=False)
    assert r.returncode == 2 and "shard" in r.stderr


def test_corpus_mode_goes_on_after_a_failing_sequence(tmp_path, monkeypatch, capsys):
    from arbg_core import cli, md

    real = md.run_md

    def flaky(topology, xyz, out, config, progress=None):
        if out.name == "GA":
            raise RuntimeError("non-finite coordinates in chunk 0 (injected)")
        return real(topology, xyz, out, config, progress)

    monkeypatch.setattr(md, "run_md", flaky)
    seqs = tmp_path / "seqs.txt"
    seqs.write_text("AG\nGA\nGG\n")
    rc = cli.main(["md", "--sequences", str(seqs), "--ns", "0.002", "--warmup-ps", "1",
                   "--chunk-frames", "2", "--out", str(tmp_path / "corpus")])
    err = capsys.readouterr().err
    assert rc == 2 and "GA failed, going on" in err and "1 of 3 sequences failed (GA)" in err
    for s in ("AG", "GG"):
        assert load_run(tmp_path / "corpus" / s).n_frames == 2


def test_md_refuses_to_write_non_finite_frames(tmp_path, ala2):
    from arbg_core.md import MDConfig, run_md

    xyz = ala2.xyz.copy()
    xyz[1] = xyz[0]  # two atoms on top of each other: the integrator blows up at once
    with pytest.raises(RuntimeError, match="non-finite coordinates in chunk 0"):
        run_md(ala2.topology, xyz, tmp_path / "bad",  # Reference: the CPU platform raises on NaN
               MDConfig(ns=0.002, warmup_ps=0.01, chunk_frames=2, platform="Reference"))
    assert not list((tmp_path / "bad").glob("chunk_*.dcd"))
