"""Your models beside the shipped ones (user_models.py): a refined model lands in
ARBG_USER_MODELS_DIR, is listed and marked refined, and `arbg sample --sequence` picks it before
the transferable model it came from; broken or half-written folders there are skipped."""

import json

import pytest
import torch

from arbg_core import checkpoint, cli, user_models
from arbg_core.model import ArBG, ModelConfig
from arbg_core.tokenizer import TokenizerConfig


def transferable(path):
    """An untrained tiny transferable model of capped peptides of length 1-2."""
    torch.manual_seed(0)
    return checkpoint.save(path, ArBG(ModelConfig.preset("tiny")),
                           TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                           extra={"termini": "capped", "lengths": [1, 2]},
                           card={"tau": 1.0, "name": "tiny transferable"})


def broken_folders(root):
    """What a user folder may hold besides models: each must be skipped, none may break the
    listing."""
    (root / "no-config").mkdir(parents=True)
    (root / "no-config" / "model.safetensors").write_bytes(b"x")
    (root / "bad-json").mkdir()
    (root / "bad-json" / "config.json").write_text("{not json")
    (root / ".half.tmp-123").mkdir()  # a write in progress (files.output_folder): silent
    (root / "stray.txt").write_text("not a folder")


def test_listing_skips_broken_folders_and_marks_refined(tmp_path, tiny_checkpoint):
    user = tmp_path / "user"
    broken_folders(user)
    no_weights = user / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_checkpoint / "config.json").read_text())
    extra = {"refined_from": {"name": "general", "transferable": True, "tau": 1.0}}
    model = checkpoint.load(tiny_checkpoint).model
    checkpoint.save(user / "mine", model, TokenizerConfig(n_bins=64, std=0.2),
                    system={"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"},
                    card={"name": "tiny refined"}, extra=extra)
    shipped = tmp_path / "shipped"
    transferable(shipped / "general")
    listing = user_models.list_models(shipped, user)
    assert [e.name for e in listing.entries] == ["general", "mine"]
    assert listing.user_names == {"mine"}
    skipped = {s.name: s.reason for s in listing.skipped}
    assert skipped == {"bad-json": "its config.json is not a valid checkpoint config",
                       "no-config": "incomplete, no config.json",
                       "no-weights": "incomplete, no model.safetensors"}
    mine = listing.entries[1]
    assert mine.refined_from == "general" and "refined from general" in mine.describe()
    assert listing.entries[0].refined_from is None
    # per-system first: the refined model before the transferable one it came from
    assert [e.name for e in checkpoint.serving(listing.entries, "A", "capped")[0]] == ["mine", "general"]
    # a user folder with a shipped model's name is not offered
    transferable(user / "general")
    again = user_models.list_models(shipped, user)
    assert [e.name for e in again.entries] == ["general", "mine"]
    assert ("general", "a shipped model has this name") in {(s.name, s.reason) for s in again.skipped}


def test_an_unreadable_user_folder_is_a_notice(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    assert user_models.list_user(tmp_path / "missing") == ([], [])
    entries, skipped = user_models.list_user(tmp_path / "file")
    assert entries == [] and skipped[0].reason == "the user models folder cannot be read"


def test_refined_folder_names_are_fresh(tmp_path):
    assert user_models.refined_folder("dipeptides", "W", "capped", tmp_path, ()) == \
        tmp_path / "dipeptides-refined-W-cap"
    (tmp_path / "dipeptides-refined-W-cap").mkdir()
    assert user_models.refined_folder("dipeptides", "W", "capped", tmp_path, ()).name == \
        "dipeptides-refined-W-cap-2"


def test_cli_refines_into_the_user_folder_and_samples_from_it(tmp_path, monkeypatch, capsys):
    """`arbg refine` without --out writes into ARBG_USER_MODELS_DIR; `arbg sample --model NAME`
    and `arbg sample --sequence` then find the model there."""
    monkeypatch.setenv("ARBG_USER_MODELS_DIR", str(tmp_path / "user"))
    parent = transferable(tmp_path / "trans")
    assert cli.main(["refine", "--model", str(parent), "--sequence", "G", "--termini", "capped",
                     "--steps", "1", "--batch-size", "8", "--eval-n", "16", "--final-n", "16",
                     "--device", "cpu"]) == 0
    out = tmp_path / "user" / "trans-refined-G-cap"
    assert str(out) in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "user").iterdir()] == [out.name]  # no leftovers
    assert user_models.resolve(out.name) == out
    with pytest.raises(FileNotFoundError, match="trans-refined-G-cap"):
        user_models.resolve("nothing-here")
    # the shipped transferable dipeptide model serves G too, after the refined one (if shipped)
    assert cli.main(["sample", "--sequence", "G", "--termini", "capped", "--n", "8",
                     "--batch-size", "8", "--device", "cpu", "--out", str(tmp_path / "s")]) == 0
    assert "model: trans-refined-G-cap (yours, refined from trans)" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["counts"]["n"] == 8
