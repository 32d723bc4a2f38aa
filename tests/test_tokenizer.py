import math

import numpy as np
import pytest
import torch

from arbg_core.model import ArBG, ModelConfig
from arbg_core.peptide import AtomFeatures
from arbg_core.sampling import log_prob
from arbg_core.tokenizer import Tokenizer, TokenizerConfig


def test_config_width_and_validation():
    assert TokenizerConfig(n_bins=1024, a=3.0).h == pytest.approx(6 / 1024)
    with pytest.raises(ValueError):
        TokenizerConfig(n_bins=1)
    with pytest.raises(ValueError):
        TokenizerConfig(std=0.0)


def test_flattening_is_atom_major_and_centered():
    tok = Tokenizer(TokenizerConfig(n_bins=8, a=4.0, std=1.0))  # h = 1, bin k = [k-4, k-3)
    xyz = np.array([[[0.5, 1.5, -0.5], [-0.5, -1.5, 0.5]]])  # centroid 0
    bins, clamped = tok.encode(xyz)
    assert clamped == 0.0
    assert bins.dtype == torch.long and bins.shape == (1, 6)
    assert bins.tolist() == [[4, 5, 3, 3, 2, 4]]  # token j = atom j // 3, axis j % 3
    shifted, _ = tok.encode(xyz + 7.0)  # centroid removed per frame
    assert torch.equal(shifted, bins)
    assert torch.equal(tok.encode(torch.as_tensor(xyz))[0], bins)  # torch input too


def test_round_trip_within_half_a_bin():
    cfg = TokenizerConfig(n_bins=1024, a=3.0, std=0.4)
    tok = Tokenizer(cfg)
    rng = np.random.default_rng(0)
    xyz = rng.normal(scale=0.2, size=(64, 22, 3)).astype(np.float32)  # all within 3 std
    xyz -= xyz.mean(axis=1, keepdims=True)
    bins, clamped = tok.encode(xyz)
    assert clamped == 0.0
    z = xyz / cfg.std
    centers = tok.decode(bins).numpy() / cfg.std  # no generator: bin centers
    assert np.abs(centers - z).max() <= cfg.h / 2 + 1e-6
    g = torch.Generator().manual_seed(0)
    drawn = tok.decode(bins, g)
    assert drawn.dtype == torch.float32 and drawn.shape == xyz.shape
    assert np.abs(drawn.numpy() / cfg.std - z).max() <= cfg.h + 1e-6  # same bin, anywhere in it
    again, _ = tok.encode(drawn, center=False)
    assert torch.equal(again, bins)


def test_decoded_values_stay_inside_their_bins():
    tok = Tokenizer(TokenizerConfig(n_bins=1024, a=3.0, std=0.37))
    g = torch.Generator().manual_seed(1)
    bins = torch.randint(0, 1024, (512, 300), generator=g)
    x = tok.decode(bins, g)
    assert torch.equal(tok.encode(x, center=False)[0], bins)


def test_clamped_fraction_counts_known_outliers():
    cfg = TokenizerConfig(n_bins=64, a=3.0, std=1.0)
    tok = Tokenizer(cfg)
    xyz = np.zeros((10, 2, 3))  # 60 coordinates, centered by construction (atoms mirror)
    xyz[0, 0, 0], xyz[0, 1, 0] = 5.0, -5.0  # 2 outliers
    xyz[3, 0, 2], xyz[3, 1, 2] = 3.5, -3.5  # 2 more
    xyz[5, 0, 1], xyz[5, 1, 1] = 2.9, -2.9  # inside
    bins, clamped = tok.encode(xyz)
    assert clamped == pytest.approx(4 / 60)
    assert bins[0, 0] == 63 and bins[0, 3] == 0  # clamped to the edge bins
    assert 0 < bins[5, 1] < 63


def test_fit_std_of_centered_data():
    rng = np.random.default_rng(0)
    xyz = rng.normal(scale=0.3, size=(2000, 10, 3)) + 5.0
    std = Tokenizer.fit_std(xyz)
    centered = xyz - xyz.mean(axis=1, keepdims=True)
    assert std == pytest.approx(np.sqrt((centered**2).mean()))
    assert std == pytest.approx(0.3 * np.sqrt(9 / 10), rel=0.02)  # centering removes 1/A


def test_log_jacobian_and_nats_per_coordinate():
    tok = Tokenizer(TokenizerConfig(n_bins=100, a=2.0, std=0.5))
    assert tok.log_jacobian(7) == pytest.approx(-21 * (math.log(0.04) + math.log(0.5)))
    assert tok.nats_per_coordinate(1.0) == pytest.approx(1.0 + math.log(0.04) + math.log(0.5))


def test_density_integrates_to_one_over_the_box():
    """q is piecewise constant on bins: sum over all 16^3 bin triples of q(center) * volume = 1."""
    cfg = TokenizerConfig(n_bins=16, a=1.0, std=0.5)
    tok = Tokenizer(cfg)
    torch.manual_seed(0)
    model = ArBG(ModelConfig.preset("tiny", n_bins=16)).eval()
    with torch.no_grad():  # make the conditionals far from uniform
        model.head.weight.mul_(50.0)
    one_atom = AtomFeatures(*(np.array([v]) for v in (2, 3, 1, 0)))
    k = torch.cartesian_prod(*[torch.arange(16)] * 3)  # (4096, 3): every bin triple
    xyz = tok.decode(k).numpy().reshape(-1, 1, 3)  # bin centers, nm
    lq = log_prob(model, tok, one_atom, xyz, batch_size=4096, device="cpu", center=False)
    volume = (cfg.h * cfg.std) ** 3  # nm^3 of one bin triple
    assert lq.std() > 0.5  # far from uniform, so the test has teeth
    assert np.exp(lq).sum() * volume == pytest.approx(1.0, abs=1e-5)
