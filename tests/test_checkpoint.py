import json
import os
import pickle

import pytest
import torch

from arbg_core import checkpoint
from arbg_core.model import ArBG, ModelConfig, conditioning, shift_right
from arbg_core.tokenizer import TokenizerConfig

from toys import toy_features

SYSTEM = {"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"}


def saved(tmp_path, name="ckpt", **kw):
    torch.manual_seed(0)
    model = ArBG(ModelConfig.preset("tiny", n_bins=32)).eval()
    tok_cfg = TokenizerConfig(n_bins=32, a=3.0, std=0.21)
    path = checkpoint.save(tmp_path / name, model, tok_cfg, system=SYSTEM,
                           card={"steps": 12, "tau": 0.9}, **kw)
    return model, tok_cfg, path


def logits(model):
    cond = conditioning(toy_features(4))
    g = torch.Generator().manual_seed(0)
    tokens = shift_right(torch.randint(0, 32, (3, 12), generator=g), model.bos)
    with torch.no_grad():
        return model(tokens, cond)


def test_round_trip_gives_identical_logits(tmp_path, monkeypatch):
    model, tok_cfg, path = saved(tmp_path, extra={"lr": 1e-3})
    assert sorted(os.listdir(path)) == ["card.json", "config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == 1 and config["system"] == SYSTEM and config["transferable"] is False
    assert config["model"]["n_bins"] == 32 and config["extra"] == {"lr": 1e-3}

    def no_pickle(*a, **k):
        raise AssertionError("torch.load must never be called")

    monkeypatch.setattr(torch, "load", no_pickle)
    loaded = checkpoint.load(path)
    assert not loaded.model.training
    assert loaded.model.cfg == model.cfg
    assert loaded.tokenizer.cfg == tok_cfg
    assert loaded.card.steps == 12 and loaded.card.tau == 0.9
    assert loaded.config.system == checkpoint.SystemSpec("A", "capped", "amber99sbildn-obc")
    assert not loaded.config.transferable and loaded.config.extra == {"lr": 1e-3}
    assert loaded.name == "ckpt" and loaded.config.to_json() == config
    assert torch.equal(logits(loaded.model), logits(model))


def test_pickle_in_place_of_weights_is_refused_without_running(tmp_path, monkeypatch):
    _, _, path = saved(tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (path / "model.safetensors").write_bytes(pickle.dumps({"weight": Payload()}))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        checkpoint.load(path)
    assert not marker.exists()
    # a torch.save file (zip + pickle) is refused the same way
    torch.save({"weight": torch.zeros(2)}, path / "model.safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        checkpoint.load(path)


def test_incomplete_or_invalid_folders_fail_clearly(tmp_path):
    _, _, path = saved(tmp_path)
    (path / "model.safetensors").rename(tmp_path / "w")
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        checkpoint.load(path)
    (tmp_path / "w").rename(path / "model.safetensors")
    (path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        checkpoint.load(path)

    _, _, path = saved(tmp_path, name="bad")
    config = json.loads((path / "config.json").read_text())
    config["model"]["n_experts"] = 8
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="n_experts"):
        checkpoint.load(path)
    del config["model"]["n_experts"]
    config["model"]["d_model"] = 64  # weights no longer fit
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not match"):
        checkpoint.load(path)
    del config["tokenizer"]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="tokenizer"):
        checkpoint.load(path)


def test_shipped_registry_and_resolve(tmp_path, monkeypatch):
    root = tmp_path / "models"
    saved(root, name="ala2-small")
    (root / "not-a-model").mkdir()
    monkeypatch.setattr(checkpoint, "SHIPPED_DIR", root)
    shipped = checkpoint.list_shipped()
    assert [e.name for e in shipped] == ["ala2-small"]
    assert shipped[0].system == checkpoint.SystemSpec(**SYSTEM) and shipped[0].card.steps == 12
    assert checkpoint.resolve("ala2-small") == root / "ala2-small"
    assert checkpoint.resolve(root / "ala2-small") == root / "ala2-small"
    assert checkpoint.load("ala2-small").config.tokenizer.std == 0.21
    with pytest.raises(FileNotFoundError, match="ala2-small"):
        checkpoint.resolve("chignolin-large")


def test_shipped_for_prefers_the_per_system_model_then_a_transferable_one_in_range(tmp_path):
    root = tmp_path / "models"
    saved(root, name="ala2-small")
    torch.manual_seed(0)
    checkpoint.save(root / "general", ArBG(ModelConfig.preset("tiny")), TokenizerConfig(n_bins=64),
                    transferable=True, extra={"termini": "zwitterionic", "lengths": [2, 3]})
    checkpoint.save(root / "capped-any", ArBG(ModelConfig.preset("tiny")), TokenizerConfig(n_bins=64),
                    transferable=True, extra={"termini": "capped"})
    assert checkpoint.shipped_for("A", "capped", root) == ["ala2-small", "capped-any"]
    assert checkpoint.shipped_for("GS", "zwitterionic", root) == ["general"]
    with pytest.raises(ValueError) as e:
        checkpoint.shipped_for("GSAA", "zwitterionic", root)
    msg = str(e.value)
    assert "no shipped model covers GSAA (zwitterionic)" in msg and "A (capped)" in msg
    assert "general samples zwitterionic peptides of length 2-3 only" in msg


def test_real_shipped_dir_is_listable():
    assert checkpoint.SHIPPED_DIR.name == "models"
    shipped = checkpoint.list_shipped()
    assert {"ala2", "aaa", "dipeptides"} <= {e.name for e in shipped}
    for entry in shipped:
        raw = json.loads((entry.path / "config.json").read_text())
        assert entry.config.tokenizer.frame == raw["tokenizer"].get("frame", "centered")
        raw["tokenizer"].setdefault("frame", "centered")  # written before the body frame
        assert entry.config.to_json() == raw  # typed and back, nothing lost
        assert entry.transferable == (raw["system"] is None) == raw["transferable"]
        assert entry.card.raw == json.loads((entry.path / "card.json").read_text())


def test_save_unwraps_compiled_or_ddp_style_wrappers(tmp_path):
    model = ArBG(ModelConfig.preset("tiny", n_bins=32))

    class Wrapper(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.module = m

    path = checkpoint.save(tmp_path / "w", Wrapper(model), TokenizerConfig(n_bins=32),
                           transferable=True)
    loaded = checkpoint.load(path)
    assert loaded.config.transferable and loaded.config.system is None
    assert loaded.config.coverage == checkpoint.Coverage(None, None, "amber99sbildn-obc")
    assert torch.equal(logits(loaded.model), logits(model.eval()))


def test_old_style_and_typed_fields_agree(tmp_path):
    """A transferable model's range and preset come from config["extra"]; a per-system model's
    preset from its system; a card with no tau samples at 1."""
    torch.manual_seed(0)
    path = checkpoint.save(tmp_path / "t", ArBG(ModelConfig.preset("tiny")), TokenizerConfig(),
                           transferable=True, extra={"termini": "capped", "lengths": [1, 3],
                                                     "preset": "amber14-obc1"}, card={"name": "T"})
    entry = checkpoint.read_entry(path)
    assert entry.config.coverage == checkpoint.Coverage("capped", (1, 3), "amber14-obc1")
    assert entry.preset == "amber14-obc1" and entry.config.default_termini == "capped"
    assert entry.tau == 1.0 and entry.title == "T"
    assert entry.serves("AA", "capped") and not entry.serves("AAAA", "capped")
    assert not entry.serves("AA", "zwitterionic")
    with pytest.raises(ValueError, match="samples capped peptides of length 1-3 only"):
        entry.check_serves("AAAA", "capped")
    with pytest.raises(ValueError, match="needs a system"):
        checkpoint.save(tmp_path / "u", ArBG(ModelConfig.preset("tiny")), TokenizerConfig())
