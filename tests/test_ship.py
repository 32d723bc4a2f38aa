"""`arbg ship` on `tiny` models and a few ps of MD: the same inputs give the same card, and the
card's figures are those `arbg evaluate` (independent code) gives at the tuned tau and seed."""

import json

import numpy as np
import pytest

from arbg_core import checkpoint, cli, energy, ship
from arbg_core.md import MDConfig, run_md
from arbg_core.model import ArBG, ModelConfig
from arbg_core.tokenizer import TokenizerConfig

SYSTEM = {"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"}
SIZES = ["--taus", "0.9,1.0", "--n-tune", "48", "--n-proposals", "96", "--n-eval", "20",
         "--lag", "2", "--batch-size", "48", "--seed", "3"]


@pytest.fixture(autouse=True)
def reference_platform(monkeypatch):
    """One OpenMM platform for every energy (auto picks by a timing, which load can flip)."""
    monkeypatch.setattr(energy, "fastest_platform", lambda *a, **k: "Reference")


def _tiny(path, **kwargs):
    import torch

    torch.manual_seed(0)
    return checkpoint.save(path, ArBG(ModelConfig.preset("tiny")), **kwargs)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("model") / "tiny",
                 tokenizer_cfg=TokenizerConfig(n_bins=64, std=0.2), system=SYSTEM,
                 card={"tau": 1.0, "steps": 0})


@pytest.fixture(scope="module")
def tiny_transferable(tmp_path_factory):
    return _tiny(tmp_path_factory.mktemp("model") / "general",
                 tokenizer_cfg=TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                 card={"tau": 1.0}, extra={"termini": "zwitterionic", "lengths": [2, 2]})


@pytest.fixture(scope="module")
def md_run(tmp_path_factory, ala2):
    """40 ps of alanine dipeptide: frames 18..20 validate, 20..40 test (--train-frames 20)."""
    out = tmp_path_factory.mktemp("md") / "ala2"
    run_md(ala2.topology, ala2.xyz, out, MDConfig(ns=0.04, warmup_ps=2, chunk_frames=20, seed=5,
                                                  platform="Reference"))
    return out


@pytest.fixture(scope="module")
def corpus_md(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    (root / "seqs.txt").write_text("GA val\nAG test\n")
    assert cli.main(["md", "--sequences", str(root / "seqs.txt"), "--ns", "0.02", "--warmup-ps",
                     "1", "--chunk-frames", "10", "--out", str(root / "md")]) == 0
    return root / "md"


def _card(dest, name):
    return json.loads((dest / "assets" / "models" / name / "card.json").read_text())


def _figures(card):
    """Everything a card measured (wall times are not figures)."""
    ev = {k: v for k, v in card["evaluation"].items() if k != "sampling_wall_time_s"}
    for row in ev.get("per_sequence", []):
        row.pop("sampling_s")
    ev.get("mean", {}).pop("sampling_s", None)
    return {"tau": card["tau"], "tau_tuning": card["tau_tuning"], "evaluation": ev}


def _evaluate(tmp_path, model, reference, tau, *extra):
    out = tmp_path / "evaluate"
    flags = dict(zip(SIZES[::2], SIZES[1::2]))
    assert cli.main(["evaluate", "--model", str(model), "--reference", str(reference),
                     "--temperature", str(tau), *extra, *[x for k in ("--n-eval", "--lag", "--seed",
                                                                      "--batch-size")
                                                          for x in (k, flags[k])],
                     "--n-proposals", flags["--n-proposals"], "--out", str(out)]) == 0
    return json.loads((out / "report.json").read_text())


def test_ship_per_system_reproduces(tmp_path, tiny, md_run):
    args = ["--checkpoint", str(tiny), "--md", str(md_run), "--train-frames", "20",
            "--name", "t", *SIZES]
    for dest in ("a", "b"):
        ship.main([*args, "--dest", str(tmp_path / dest)])
    card = _card(tmp_path / "a", "t")
    assert _figures(card) == _figures(_card(tmp_path / "b", "t"))
    assert card["system"] == SYSTEM and card["commands"]["reproduce"].startswith("arbg ship ")
    assert [r["tau"] for r in card["tau_tuning"]] == [0.9, 1.0]
    assert card["tau"] == min(card["tau_tuning"], key=lambda r: r["reweighted_e_w2_val"])["tau"]

    # the shipped test ensemble is the whole test split: `arbg evaluate` on it, at the tuned tau
    report = _evaluate(tmp_path, tiny, tmp_path / "a" / "assets" / "reference" / "t.npz",
                       card["tau"])
    ev, s = card["evaluation"], report["sampling"]
    assert ev["metrics"] == report["metrics"]
    assert (ev["ess"], ev["ess_fraction"], ev["counts"]) == (s["ess"], s["ess_fraction"],
                                                             s["counts"])
    assert ev["phi_positive_basin"] == report["phi_positive_basin"]
    assert np.isfinite(ev["metrics"]["reweighted"]["e_w2"])


def test_ship_on_another_runs_test_split(tmp_path, tiny, md_run, capsys):
    """--test: the card's figures are `arbg evaluate` on that reference file; --val-frames: the
    tuning validates on exactly those frames; a shipped test ensemble named as --test is kept."""
    args = ["--checkpoint", str(tiny), "--md", str(md_run), "--name", "t", *SIZES]
    ship.main([*args, "--train-frames", "20", "--dest", str(tmp_path / "a")])
    ref = tmp_path / "a" / "assets" / "reference" / "t.npz"
    before = ref.read_bytes()
    capsys.readouterr()
    ship.main([*args, "--train-frames", "40", "--val-frames", "5", "--test", str(ref),
               "--dest", str(tmp_path / "a")])
    assert ref.read_bytes() == before
    assert "validation frames 5, test frames 20" in capsys.readouterr().out
    card = _card(tmp_path / "a", "t")
    assert card["evaluation"]["split"].startswith(f"the test frames of {ref} (20 frames")
    assert "--val-frames 5" in card["commands"]["reproduce"]
    report = _evaluate(tmp_path, tiny, ref, card["tau"])
    assert card["evaluation"]["metrics"] == report["metrics"]
    assert card["evaluation"]["ess"] == report["sampling"]["ess"]
    for argv, match in ((["--train-frames", "40", "--val-frames", "50"], "more than"),
                        (["--train-frames", "20", "--test", str(tmp_path / "no.npz")], "no.npz")):
        with pytest.raises(cli.UsageError, match=match):
            ship.main([*args, *argv, "--dest", str(tmp_path / "b")])


def test_ship_transferable_reproduces_and_caches(tmp_path, tiny_transferable, corpus_md):
    args = ["--transferable", "--checkpoint", str(tiny_transferable), "--md", str(corpus_md),
            "--name", "g", "--ref-frames", "5", *SIZES]
    for dest in ("a", "b"):
        ship.main([*args, "--dest", str(tmp_path / dest)])
    card = _card(tmp_path / "a", "g")
    assert _figures(card) == _figures(_card(tmp_path / "b", "g"))
    assert card["description"] == "Transferable ArBG for zwitterionic peptides of length [2, 2]"
    assert card["corpus_md"]["roles"] == {"train": [], "val": ["GA"], "test": ["AG"]}
    row = card["evaluation"]["per_sequence"][0]
    report = _evaluate(tmp_path, tiny_transferable, corpus_md / "AG", card["tau"],
                       "--sequence", "AG")
    for ens in ("proposal", "reweighted", "noise_floor"):
        for k in ("e_w2", "t_w2", "tica_w2"):
            assert row[f"{ens}_{k}"] == report["metrics"][ens][k], (ens, k)
    assert row["ess_fraction"] == report["sampling"]["ess_fraction"]

    # a rerun reads finished work back instead of sampling again
    row_file = tmp_path / "a" / "results" / "ship_g" / "AG" / "row.json"
    saved = json.loads(row_file.read_text())
    saved["value"]["ess_fraction"] = -1.0
    row_file.write_text(json.dumps(saved))
    ship.main([*args, "--dest", str(tmp_path / "a")])
    assert _card(tmp_path / "a", "g")["evaluation"]["per_sequence"][0]["ess_fraction"] == -1.0


def test_ship_usage_errors(tmp_path, tiny, tiny_transferable, md_run):
    base = ["--md", str(md_run), "--name", "x", "--dest", str(tmp_path)]
    cases = [(["--checkpoint", str(tiny)], "--train-frames"),
             (["--checkpoint", str(tiny_transferable), "--train-frames", "20"], "add --transferable"),
             (["--checkpoint", str(tiny), "--transferable"], "drop --transferable"),
             (["--checkpoint", str(tiny), "--train-frames", "20", "--wait"], "transferable models"),
             (["--checkpoint", str(tmp_path / "nope"), "--train-frames", "20"], "nope"),
             (["--checkpoint", str(tiny), "--train-frames", "600"], "nothing to test on")]
    for argv, match in cases:
        with pytest.raises(cli.UsageError, match=match):
            ship.main([*base, *argv])
