"""The GPU training path on the CPU (loop.py, resident.py, train_state.py): resident batches
tokenize like the host path, the wall-clock budget stops cleanly, and state/ resumes exactly
(fp32 moments) or closely (bf16 moments), in shards under the device's per-file limit."""

import json

import numpy as np
import pytest
import torch

from arbg_core import train_state
from arbg_core.resident import ResidentFrames, quaternion_rotations
from arbg_core.tokenizer import Tokenizer, TokenizerConfig
from arbg_core.train import TrainConfig, train


def cfg(**kw):
    base = dict(size="tiny", steps=8, batch_size=16, val_every=4, save_every=4, warmup_steps=2,
                val_frames=32, seed=1, resident="on", frame="body")
    return TrainConfig(**(base | kw))


def last_weights(out):
    from arbg_core import checkpoint

    return checkpoint.load(out / "last").model.state_dict()


def test_quaternion_rotations_are_uniform_proper_rotations():
    r = quaternion_rotations(4000, torch.Generator().manual_seed(0), torch.float64)
    assert torch.allclose(r @ r.transpose(1, 2), torch.eye(3, dtype=torch.float64).expand_as(r),
                          atol=1e-12)
    assert torch.allclose(torch.linalg.det(r), torch.ones(4000, dtype=torch.float64))
    # Haar: every entry has mean 0 and variance 1/3
    assert r.mean(0).abs().max() < 0.03
    assert (r.pow(2).mean(0) - 1 / 3).abs().max() < 0.03


@pytest.mark.parametrize("frame", ["body", "centered"])
def test_resident_batches_are_the_frames_tokenized(toy_data, frame):
    std = Tokenizer.fit_std(toy_data.xyz_train, toy_data.features, frame)
    tok = Tokenizer(TokenizerConfig(n_bins=256, std=std, frame=frame))
    res = ResidentFrames(tok, toy_data, torch.device("cpu"))
    bins, cond = res.batch(64, torch.Generator().manual_seed(3))
    assert bins.shape == (64, cond.n_tokens) and bins.dtype == torch.long
    # the same frames, drawn again, through the host tokenizer
    idx = torch.randint(res.n_frames, (64,), generator=torch.Generator().manual_seed(3))
    host, _, _ = tok.encode_system(torch.from_numpy(toy_data.xyz_train[idx.numpy()]),
                                   toy_data.features)
    if frame == "body":  # no augmentation: exactly the host's bins
        assert torch.equal(bins, host)
    else:  # a random rotation: the centered values' norms per atom are kept (to a bin)
        assert not torch.equal(bins, host)
        h = tok.cfg.h * std
        def radii(b):
            return tok.decode(b).norm(dim=-1)
        assert (radii(bins) - radii(host)).abs().max() < 2 * h * 3 ** 0.5


def test_budget_stops_cleanly_and_resume_finishes_exactly(tmp_path, toy_data):
    unbroken = train(toy_data, tmp_path / "a", cfg())
    assert unbroken["finished"] and unbroken["steps_done"] == 8 and unbroken["resident"]
    first = train(toy_data, tmp_path / "b", cfg(budget_s=0.0))  # stops after its first step
    assert not first["finished"] and first["steps_done"] < 8
    assert train_state.exists(tmp_path / "b" / train_state.STATE_DIR)
    assert json.loads((tmp_path / "b" / "last" / "card.json").read_text())["steps"] == \
        first["steps_done"]
    second = train(toy_data, tmp_path / "b", cfg(), resume=True)
    assert second["finished"] and second["resumed"] == "exact"
    a, b = last_weights(tmp_path / "a"), last_weights(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bf16_moments_halve_the_state_and_resume_closely(tmp_path, toy_data):
    train(toy_data, tmp_path / "a", cfg(optimizer="adamw"))
    train(toy_data, tmp_path / "b", cfg(optimizer="adamw", steps=8, budget_s=0.0, moments="bf16"))
    train(toy_data, tmp_path / "b", cfg(optimizer="adamw", moments="bf16"), resume=True)
    a, b = last_weights(tmp_path / "a"), last_weights(tmp_path / "b")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert 0 < diff < 1e-3  # not bit for bit, but the same run
    meta = json.loads((tmp_path / "b" / "state" / "state.json").read_text())
    assert meta["moments_dtype"] == "bfloat16" and meta["step"] == 8


def test_state_shards_stay_under_the_per_file_limit(tmp_path, monkeypatch):
    from arbg_core.model import ArBG, ModelConfig

    monkeypatch.setattr(train_state, "SHARD_BYTES", 64 * 1024)  # a tiny model, tiny shards
    model = ArBG(ModelConfig.preset("tiny"))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 3, dtype=torch.long), _cond()).sum().backward()
    opt.step()
    folder = train_state.save(tmp_path / "state", model, [opt], torch.Generator(), {"step": 1})
    shards = sorted(folder.glob("state-*.safetensors"))
    assert len(shards) > 1
    # a shard passes the limit only by its header and when one tensor alone is larger
    assert all(p.stat().st_size < 64 * 1024 + 8192 for p in shards)
    fresh = ArBG(ModelConfig.preset("tiny"))
    opt2 = torch.optim.AdamW(fresh.parameters())
    meta, _ = train_state.load(folder, fresh, [opt2])
    assert meta["step"] == 1
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), fresh.parameters()))
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert all(torch.equal(s1[i]["exp_avg_sq"], s2[i]["exp_avg_sq"]) for i in s1)


def _cond():
    from arbg_core.model import conditioning
    from arbg_core.peptide import build

    return conditioning(build("A", "capped").features).window(0, 3)


@pytest.mark.gpu
def test_cuda_path_compiles_and_its_state_resumes_on_the_cpu(tmp_path, toy_data):
    """On a GPU the defaults are the fast path: resident frames, bf16, a compiled step. Its
    state continues on the CPU (another device's RNG: a reseeded batch stream, said so)."""
    first = train(toy_data, tmp_path / "run", cfg(resident="auto", budget_s=0.0), device="cuda")
    assert first["resident"] and first["bf16"] and not first["finished"]
    again = train(toy_data, tmp_path / "run", cfg(resident="auto"), resume=True, device="cpu")
    assert again["finished"] and again["resumed"] == "reseeded"
    both = train(toy_data, tmp_path / "whole", cfg(resident="auto", frame="centered"),
                 device="cuda")
    assert both["finished"] and np.isfinite(both["best_val_nll"])
