import numpy as np
import pytest
import torch

from arbg_core import peptide
from arbg_core.model import ArBG, ModelConfig, conditioning
from arbg_core.sampling import bins_log_prob, extend, inference, log_prob, sample
from arbg_core.tokenizer import Tokenizer, TokenizerConfig

from toys import toy_features


def setup(n_bins=64, seed=0, sharpen=5.0):
    torch.manual_seed(seed)
    model = ArBG(ModelConfig.preset("tiny", n_bins=n_bins)).eval()
    with torch.no_grad():  # peaked conditionals, so bins depend on the prefix
        model.head.weight.mul_(sharpen)
    return model, Tokenizer(TokenizerConfig(n_bins=n_bins, a=3.0, std=0.3))


@pytest.mark.parametrize("use_kv_cache", [True, False])
def test_sampled_log_q_equals_teacher_forced(use_kv_cache):
    model, tok = setup()
    feats = toy_features(6)
    xyz, lq = sample(model, tok, feats, 40, tau=0.8, seed=3, batch_size=16, device="cpu",
                     use_kv_cache=use_kv_cache)
    assert xyz.dtype == np.float32 and xyz.shape == (40, 6, 3)
    assert lq.dtype == np.float64 and lq.shape == (40,)
    tf = log_prob(model, tok, feats, xyz, tau=0.8, batch_size=7, device="cpu")
    np.testing.assert_allclose(lq, tf, atol=1e-4, rtol=0)
    assert lq.std() > 1.0  # the samples differ, so the test has teeth
    other_tau = log_prob(model, tok, feats, xyz, tau=1.0, device="cpu")
    assert np.abs(other_tau - lq).max() > 1e-2


def test_cached_and_uncached_sampling_agree():
    model, tok = setup(seed=1)
    feats = toy_features(4, seed=1)
    a = sample(model, tok, feats, 8, seed=5, device="cpu", use_kv_cache=True)
    b = sample(model, tok, feats, 8, seed=5, device="cpu", use_kv_cache=False)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-4, rtol=0)


def test_seed_reproducibility():
    model, tok = setup(seed=2)
    feats = toy_features(5, seed=2)
    x1, l1 = sample(model, tok, feats, 12, seed=7, batch_size=5, device="cpu")
    x2, l2 = sample(model, tok, feats, 12, seed=7, batch_size=5, device="cpu")
    x3, _ = sample(model, tok, feats, 12, seed=8, batch_size=5, device="cpu")
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(l1, l2)
    assert not np.array_equal(x1, x3)


def test_progress_and_model_state():
    model, tok = setup()
    seen = []
    sample(model, tok, toy_features(3), 5, batch_size=2, device="cpu",
           progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (45, 45) and all(t == 45 for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    # a shared model is never switched or moved by a sampling pass: it must come ready
    model.train()
    with pytest.raises(ValueError, match="training mode"):
        sample(model, tok, toy_features(3), 2, device="cpu")
    assert model.training


def test_blockwise_extend_equals_one_pass():
    """SMC generates block by block; the bins and log p must not depend on the split."""
    model, tok = setup(seed=3)
    cond = conditioning(toy_features(5, seed=3))
    T, B = cond.n_tokens, 6
    bos = torch.full((B,), model.bos)
    with inference(model, torch.device("cpu")) as dtype:
        assert dtype == torch.float32
        cache = model.new_cache(B, T)
        whole, lp = extend(model, cond, cache, bos, 0, T, 1.0, torch.Generator().manual_seed(0))
        cache = model.new_cache(B, T)
        g = torch.Generator().manual_seed(0)
        parts, lps, last = [], [], bos
        for start, stop in [(0, 6), (6, 7), (7, T)]:
            bins, p = extend(model, cond, cache, last, start, stop, 1.0, g)
            parts.append(bins)
            lps.append(p)
            last = bins[:, -1]
        tf = bins_log_prob(model, whole, cond)
    assert torch.equal(torch.cat(parts, dim=1), whole)
    assert torch.allclose(sum(lps), lp, atol=1e-6)
    assert torch.allclose(tf, lp, atol=1e-4)


def test_padded_batch_of_two_peptides_matches_each_alone():
    ace_ala = peptide.build("A", "capped", minimize=False)  # 22 atoms, 3 residues
    ala_ala = peptide.build("AA", "zwitterionic", minimize=False)  # 23 atoms, 2 residues
    model, tok = setup(n_bins=64, seed=4)
    xyz1, lq1 = sample(model, tok, ace_ala.features, 3, seed=1, device="cpu")
    xyz2, lq2 = sample(model, tok, ala_ala.features, 3, seed=2, device="cpu")
    cond = conditioning([ace_ala.features, ala_ala.features])
    b1, _ = tok.encode(xyz1, center=False)  # (3, 66)
    b2, _ = tok.encode(xyz2, center=False)  # (3, 69)
    bins = torch.zeros(6, 69, dtype=torch.long)
    bins[:3, :66], bins[3:] = b1, b2
    with torch.no_grad():
        lp = bins_log_prob(model, bins, cond.index_select(torch.tensor([0, 0, 0, 1, 1, 1])))
    joint = lp.numpy() + np.r_[[tok.log_jacobian(22)] * 3, [tok.log_jacobian(23)] * 3]
    np.testing.assert_allclose(joint, np.r_[lq1, lq2], atol=1e-4, rtol=0)
    alone = log_prob(model, tok, ace_ala.features, xyz1, device="cpu")
    np.testing.assert_allclose(alone, lq1, atol=1e-4, rtol=0)


def test_log_prob_center_option_and_shape_check():
    model, tok = setup()
    feats = toy_features(3)
    xyz, _ = sample(model, tok, feats, 4, device="cpu")
    shifted = xyz + np.float32(0.05)
    a = log_prob(model, tok, feats, shifted, center=True, device="cpu")
    b = log_prob(model, tok, feats, shifted - shifted.mean(axis=1, keepdims=True), device="cpu")
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(n, 3, 3\)"):
        log_prob(model, tok, feats, xyz[:, :2], device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_sampled_log_q_matches_teacher_forced():
    model, tok = setup(n_bins=256, seed=5)
    feats = toy_features(20, seed=5)
    # fp32 on CUDA: exact up to kernel rounding
    xyz, lq = sample(model, tok, feats, 256, seed=0, device="cuda", bf16=False)
    tf = log_prob(model, tok, feats, xyz, device="cuda", bf16=False)
    np.testing.assert_allclose(lq, tf, atol=1e-4, rtol=0)
    again, _ = sample(model, tok, feats, 256, seed=0, device="cuda", bf16=False)
    np.testing.assert_array_equal(xyz, again)
    # bf16 autocast (the CUDA default): same bins, logits rounded differently per pass
    xyz, lq = sample(model, tok, feats, 256, seed=1, device="cuda")
    tf = log_prob(model, tok, feats, xyz, device="cuda")
    assert np.abs(lq - tf).max() < 1e-2 * 60  # H100: identical (0.0); allow 0.01 nats per token
    assert next(model.parameters()).device.type == "cuda"
