import math

import numpy as np
import pytest
import torch

from arbg_core.model import SIZES, ArBG, KVCache, ModelConfig, conditioning, shift_right, train_loss
from arbg_core.peptide import AtomFeatures
from arbg_core.tokenizer import Tokenizer, TokenizerConfig
from toys import toy_features


def tiny_model(seed: int = 0, **kw) -> ArBG:
    torch.manual_seed(seed)
    return ArBG(ModelConfig.preset("tiny", **kw)).eval()


def test_presets_and_parameter_counts():
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    assert ModelConfig.preset("small", n_bins=256).n_bins == 256
    counts = {}
    assert SIZES == ("tiny", "small", "base", "large")  # smallest first, the CLI's choices
    for name in SIZES:
        with torch.device("meta"):  # no memory for the 132M model
            counts[name] = ArBG(ModelConfig.preset(name)).num_params()
    assert counts["tiny"] < 100_000
    assert 0.8e6 < counts["small"] < 1.5e6
    assert 125e6 < counts["large"] < 140e6  # paper: about 132M
    assert ModelConfig.preset("large").n_bins == 8192


def test_conditioning_pads_and_masks():
    f1, f2 = toy_features(4, seed=1), toy_features(2, seed=2)
    cond = conditioning([f1, f2])
    assert cond.n_tokens == 12 and cond.batch_size == 2
    assert cond.lengths.tolist() == [12, 6]
    assert cond.valid[1, 6:].logical_not().all() and cond.valid[1, :6].all()
    assert cond.axis[0].tolist() == [0, 1, 2] * 4
    assert cond.slot[0].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert cond.atom_name[0, 3 * 2 + 1] == f1.atom_name[2]
    assert (cond.element[1, 6:] == 0).all() and (cond.seq_len[1, 6:] == 0).all()
    assert (cond.seq_len[0] == f1.n_residues).all()
    sel = cond.index_select(torch.tensor([1, 1, 0]))
    assert sel.batch_size == 3 and torch.equal(sel.valid[2], cond.valid[0])
    one = conditioning(f1).expand(5)
    assert one.batch_size == 5 and torch.equal(one.slot[4], cond.slot[0])


def test_conditioning_changes_the_prediction():
    model = tiny_model()
    bos = torch.full((1, 1), model.bos)
    with torch.no_grad():
        a = model(bos, conditioning(toy_features(3, seed=1)))
        b = model(bos, conditioning(toy_features(3, seed=2)))
    assert a.dtype == torch.float32 and a.shape == (1, 1, 64)
    assert not torch.allclose(a, b)


def _incremental(model, tokens, cond, chunks):
    """Logits of `tokens` fed through a KV cache in the given chunk sizes."""
    cache = model.new_cache(tokens.shape[0], tokens.shape[1])
    out, start = [], 0
    for size in chunks:
        out.append(model(tokens[:, start:start + size], cond, kv_cache=cache, start=start))
        start += size
    assert cache.length == tokens.shape[1]
    return torch.cat(out, dim=1)


@pytest.mark.parametrize("chunks", [[1] * 15, [4, 1, 6, 3, 1]])
def test_cached_logits_match_uncached(chunks):
    model = tiny_model()
    cond = conditioning(toy_features(5))
    g = torch.Generator().manual_seed(0)
    tokens = shift_right(torch.randint(0, 64, (3, 15), generator=g), model.bos)
    with torch.no_grad():
        full = model(tokens, cond)  # (3, 15, V)
        inc = _incremental(model, tokens, cond, chunks)
    assert torch.allclose(inc, full, atol=1e-5, rtol=0)


def test_cached_logits_match_uncached_padded_batch():
    model = tiny_model(1)
    cond = conditioning([toy_features(5, seed=3), toy_features(3, seed=4)])
    g = torch.Generator().manual_seed(1)
    tokens = shift_right(torch.randint(0, 64, (2, 15), generator=g), model.bos)
    with torch.no_grad():
        full = model(tokens, cond)
        inc = _incremental(model, tokens, cond, [1] * 15)
    valid = cond.valid
    assert torch.allclose(inc[valid], full[valid], atol=1e-5, rtol=0)
    # right padding never leaks into real positions: system 2 alone gives the same logits
    alone = conditioning(toy_features(3, seed=4))
    with torch.no_grad():
        solo = model(tokens[1:, :9], alone)
    assert torch.allclose(full[1, :9], solo[0], atol=1e-5, rtol=0)


def test_cache_reorder_matches_recomputing_reordered_prefixes():
    model = tiny_model(2)
    cond = conditioning(toy_features(4))
    g = torch.Generator().manual_seed(2)
    tokens = shift_right(torch.randint(0, 64, (4, 12), generator=g), model.bos)
    prefix, nxt = tokens[:, :7], tokens[:, 7:9]
    idx = torch.tensor([2, 0, 0, 3, 1])  # resampling: repeats, drops nothing here, grows B
    with torch.no_grad():
        cache = KVCache(model.cfg, 4, 12)
        model(prefix, cond, kv_cache=cache, start=0)
        cache.reorder(idx)
        got = model(nxt[idx], cond, kv_cache=cache, start=7)  # (5, 2, V)
        want = model(torch.cat([prefix, nxt], dim=1)[idx], cond)[:, 7:9]
    assert cache.batch_size == 5 and cache.length == 9
    assert torch.allclose(got, want, atol=1e-5, rtol=0)


def test_cache_rejects_wrong_start():
    model = tiny_model()
    cond = conditioning(toy_features(2))
    cache = model.new_cache(1, 6)
    with pytest.raises(ValueError, match="start"):
        model(torch.full((1, 1), model.bos), cond, kv_cache=cache, start=3)


def test_train_loss_is_masked_mean_cross_entropy():
    model = tiny_model(3)
    cond = conditioning([toy_features(3, seed=5), toy_features(2, seed=6)])
    g = torch.Generator().manual_seed(3)
    bins = torch.randint(0, 64, (2, 9), generator=g)
    loss = train_loss(model, bins, cond)
    logits = model(shift_right(bins, model.bos), cond)
    ce = torch.nn.functional.cross_entropy(logits.transpose(1, 2), bins, reduction="none")
    assert loss.item() == pytest.approx((ce[0].sum() + ce[1, :6].sum()).item() / 15, rel=1e-6)
    loss.backward()
    assert model.head.weight.grad is not None


def test_bf16_autocast_on_cpu_matches_fp32():
    """Training's CPU bf16 path (attention kept in fp32) gives the fp32 loss and gradients to
    bf16 precision."""
    model = tiny_model(4).train()
    cond = conditioning([toy_features(5, seed=7), toy_features(3, seed=8)])
    bins = torch.randint(0, 64, (2, 15), generator=torch.Generator().manual_seed(4))
    grads = []
    for bf16 in (False, True):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = train_loss(model, bins, cond)
        loss.backward()
        grads.append((loss.item(), model.head.weight.grad.clone(), model.blocks[0].attn.qkv.weight.grad.clone()))
    (l32, h32, a32), (l16, h16, a16) = grads
    assert l16 == pytest.approx(l32, rel=2e-2)
    for g32, g16 in ((h32, h16), (a32, a16)):
        assert torch.nn.functional.cosine_similarity(g32.flatten(), g16.flatten(), dim=0) > 0.98


def test_tiny_model_overfits_two_atom_toy():
    """Two atoms 0.15 nm apart along x plus 0.02 nm noise per coordinate, centered.

    NLL = -log q(x) / 3A in nats per coordinate of the continuous density (x in nm), i.e.
    mean token cross-entropy + log h + log std. A uniform density over the box gives
    log(2 a std) ~ -1.3; the ideal is about -4 (atom 1: Gaussian entropy of its centered
    coordinates; atom 2 = -atom 1 is fixed to one bin by the first three).
    """
    rng = np.random.default_rng(0)
    base = np.array([[0.0, 0.0, 0.0], [0.15, 0.0, 0.0]])
    xyz = base + rng.normal(scale=0.02, size=(4096, 2, 3))
    tok = Tokenizer(TokenizerConfig(n_bins=64, a=3.0, std=Tokenizer.fit_std(xyz)))
    bins, clamped = tok.encode(xyz)
    assert clamped < 1e-3
    torch.manual_seed(0)
    model = ArBG(ModelConfig.preset("tiny", n_bins=64)).train()
    cond = conditioning(AtomFeatures(*(np.array(v) for v in ([2, 2], [3, 4], [1, 1], [0, 0]))))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        start = tok.nats_per_coordinate(train_loss(model, bins[:512], cond).item())
    for _ in range(300):
        batch = bins[torch.randint(0, len(bins), (256,), generator=g)]
        loss = train_loss(model, batch, cond)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = tok.nats_per_coordinate(train_loss(model.eval(), bins, cond).item())
    uniform = math.log(2 * tok.cfg.a * tok.cfg.std)
    assert abs(start - uniform) < 0.2
    assert nll < -3.5, f"NLL {nll:.2f} nats/coordinate (uniform {uniform:.2f})"
