"""A model in the body frame (DESIGN §17): sampled log q is the teacher-forced one, whatever the
orientation; SNIS with it is unbiased; SMC blocks and training run on it."""

import math

import numpy as np
import pytest
import torch

from arbg_core import frames
from arbg_core.model import ArBG, ModelConfig
from arbg_core.peptide import ATOM_NAMES, ELEMENTS, RESIDUE_TYPES, AtomFeatures
from arbg_core.sampling import BlockProposal, log_prob, sample
from arbg_core.tokenizer import Tokenizer, TokenizerConfig


def body_model(n_bins=64, std=0.1, seed=0, frame="body"):
    torch.manual_seed(seed)
    model = ArBG(ModelConfig.preset("tiny", n_bins=n_bins)).eval()
    return model, Tokenizer(TokenizerConfig(n_bins=n_bins, a=3.0, std=std, frame=frame))


def three_atoms():
    """N, CA, C of one alanine: the smallest molecule with a body frame."""
    ids = lambda vocab, names: np.array([vocab.index(n) for n in names])  # noqa: E731
    return AtomFeatures(ids(ELEMENTS, "NCC"), ids(ATOM_NAMES, ("N", "CA", "C")),
                        ids(RESIDUE_TYPES, ("ALA",) * 3), np.zeros(3, np.int64))


@pytest.mark.parametrize("frame", ["body", "body-heavy"])
def test_sampled_log_q_is_teacher_forced_log_q_in_any_orientation(ala2, frame):
    model, tok = body_model(frame=frame)
    xyz, lq = sample(model, tok, ala2.features, 64, seed=3, batch_size=32, device="cpu")
    a = frames.frame_atoms(ala2.features)[0]
    assert np.abs(xyz[:, a]).max() < 1e-6  # the first frame atom at the origin
    # An untrained model draws b_x < 0 or c_y < 0 about 3 times in 4: such tokens lie outside the
    # parametrization, so their log q is -inf and their weight 0 (reweight.log_weights).
    valid = np.isfinite(lq)
    assert 0 < valid.sum() < len(lq)
    tf = log_prob(model, tok, ala2.features, xyz, device="cpu")[valid]
    # float32 xyz can move a value across a bin edge (rarely): nearly all agree to 1e-4
    assert np.mean(np.abs(tf - lq[valid]) < 1e-4) > 0.95, np.abs(tf - lq[valid]).max()
    # rigid motions do not change the density of a conformation
    R = frames.random_rotations(64, torch.Generator().manual_seed(1)).numpy()
    moved = np.einsum("nij,naj->nai", R, xyz.astype(np.float64)) + np.array([0.3, -1.0, 2.0])
    np.testing.assert_allclose(log_prob(model, tok, ala2.features, moved, device="cpu"),
                               log_prob(model, tok, ala2.features, xyz.astype(np.float64),
                                        device="cpu"), atol=1e-6)
    # the body frame models 3A - 6 tokens
    assert len(frames.get_frame(frame).tokens(ala2.features)[0]) == 3 * ala2.n_atoms - 6


def test_heavy_first_order_puts_hydrogens_last_and_refuses_smc(ala2):
    atom, axis = frames.get_frame("body-heavy").tokens(ala2.features)
    plain, plain_axis = frames.get_frame("body").tokens(ala2.features)
    hydrogen = np.asarray(ala2.features.element)[atom] == ELEMENTS.index("H")
    first_h = int(np.argmax(hydrogen))
    assert first_h > 3 and hydrogen[first_h:].all()  # frame, heavy atoms, then hydrogens
    assert sorted(zip(atom, axis)) == sorted(zip(plain, plain_axis))  # the same tokens
    assert np.array_equal(atom[:3], plain[:3])  # the frame's b_x, c_x, c_y first
    model, tok = body_model(frame="body-heavy")
    with pytest.raises(ValueError, match="use SNIS"):
        BlockProposal(model, tok, ala2.features, 4, ala2.residue_blocks, device="cpu")


def test_block_proposal_matches_sample_log_q(ala2):
    """SMC's block-by-block generation is the same density: increments sum to the teacher-forced
    log q of the grown conformation."""
    model, tok = body_model()
    prop = BlockProposal(model, tok, ala2.features, 16, ala2.residue_blocks, seed=5, device="cpu")
    parts, total = [], np.zeros(16)
    for r in range(1, len(ala2.residue_blocks) + 1):
        x, inc = prop(r)
        parts.append(x)
        total += inc
    xyz = np.concatenate(parts, axis=1)
    np.testing.assert_allclose(total, prop.log_q)
    valid = np.isfinite(total)
    assert valid.any()
    tf = log_prob(model, tok, ala2.features, xyz, device="cpu")[valid]
    assert np.mean(np.abs(tf - total[valid]) < 1e-4) > 0.9


def _harmonic_u(xyz, k=1 / 0.03 ** 2, r0=0.15):
    """Reduced energy of two harmonic bonds N-CA and CA-C (no angle term), kT."""
    d1 = np.linalg.norm(xyz[:, 1] - xyz[:, 0], axis=-1)
    d2 = np.linalg.norm(xyz[:, 2] - xyz[:, 1], axis=-1)
    return 0.5 * k * ((d1 - r0) ** 2 + (d2 - r0) ** 2), d1


def test_snis_with_a_body_frame_proposal_is_unbiased():
    """E[|N - CA|] under exp(-u) on the conformations with N at the origin: the bond length has
    density r^2 exp(-k (r - r0)^2 / 2) (the volume element of R^3). SNIS from an untrained
    body-frame model, averaged over seeds, recovers it."""
    from arbg_core.reweight import ess, log_weights, normalized_weights

    model, tok = body_model(std=0.1)
    f = three_atoms()
    r = np.linspace(1e-4, 0.6, 200_001)
    p = r ** 2 * np.exp(-0.5 * (r - 0.15) ** 2 / 0.03 ** 2)
    exact = float((r * p).sum() / p.sum())
    estimates = []
    for seed in range(8):
        xyz, lq = sample(model, tok, f, 4000, seed=seed, batch_size=2000, device="cpu")
        u, d1 = _harmonic_u(xyz.astype(np.float64))
        log_w = log_weights(u, lq)  # samples outside the parametrization (log q = -inf): weight 0
        assert ess(log_w) > 50
        estimates.append(float(normalized_weights(log_w) @ d1))
    mean, err = np.mean(estimates), np.std(estimates, ddof=1) / math.sqrt(len(estimates))
    assert abs(mean - exact) < max(4 * err, 1e-3), (mean, err, exact)


def test_training_in_the_body_frame_uses_no_rotations(ala2):
    from arbg_core.batches import encode_batch

    tok = Tokenizer(TokenizerConfig(n_bins=64, a=3.0, std=0.3, frame="body"))
    xyz = torch.as_tensor(ala2.xyz[None].repeat(4, 0))
    g = torch.Generator().manual_seed(0)
    bins, cond, clamped = encode_batch(tok, [(ala2.features, xyz)], g)
    assert bins.shape == (4, 3 * ala2.n_atoms - 6) and cond.n_tokens == bins.shape[1]
    assert (bins == bins[0]).all()  # the same conformation gives the same tokens
    with pytest.raises(ValueError, match="unknown frame"):
        TokenizerConfig(frame="spherical")


@pytest.mark.parametrize("method", ["snis", "smc"])
def test_body_frame_checkpoint_samples_end_to_end(tmp_path, ala2, method):
    """Saved with frame "body", loaded, sampled and reweighted by the pipeline: draws from
    outside the parametrization carry no weight, the rest are weighted as usual."""
    from arbg_core import checkpoint
    from arbg_core.pipeline import SampleConfig, run_sampling

    model, tok = body_model(std=0.3)
    path = checkpoint.save(tmp_path / "body", model, tok.cfg,
                           system={"sequence": "A", "termini": "capped",
                                   "preset": "amber99sbildn-obc"})
    loaded = checkpoint.load(path)
    assert loaded.tokenizer.cfg.frame == "body"
    res = run_sampling(loaded, ala2, SampleConfig(n=64, batch_size=32, seed=2, method=method))
    ens = res.ensemble
    outside = ~np.isfinite(res.log_q)
    # SNIS keeps them (weight 0); SMC kills them at the first block and resamples them away
    assert (outside.any() if method == "snis" else True) and not outside.all()
    assert (ens.weights[outside] == 0).all() and abs(ens.weights.sum() - 1) < 1e-9
    assert np.isfinite(ens.ess) and ens.ess >= 1
