import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from arbg_core.checkpoint import (Card, CheckpointConfig, LoadedModel, SystemSpec,
                                  prepare_for_inference)
from arbg_core.energy import EnergyModel
from arbg_core.model import ArBG, ModelConfig, conditioning, shift_right
from arbg_core.reweight import DROPPED, MIRRORED, chiral_centers, handedness, reweight
from arbg_core.sampling import BlockProposal, extend, inference, log_prob
from arbg_core.smc import smc_population, to_ensemble, twist_schedule
from arbg_core.tokenizer import Tokenizer, TokenizerConfig

CPU = torch.device("cpu")


def tiny(seed=0, sharpen=1.0):
    torch.manual_seed(seed)
    model = ArBG(ModelConfig.preset("tiny")).eval()
    with torch.no_grad():  # sharpen > 1: peaked conditionals, so bins depend on the prefix
        model.head.weight.mul_(sharpen)
    return model, Tokenizer(TokenizerConfig(n_bins=64, a=3, std=0.2))


@pytest.fixture(scope="module")
def energy(ala2):
    return EnergyModel(ala2.topology, platform="Reference")


def chirality(pep):
    centers = chiral_centers(pep.topology)
    return centers, handedness(pep.xyz[None], centers)[0]


# ------------------------------------------------------------------ (a) no resampling == SNIS


@pytest.mark.parametrize("schedule", ["constant", "linear"])
def test_without_resampling_weights_are_the_snis_weights(ala2, energy, schedule):
    model, tok = tiny(seed=1)
    centers, signs = chirality(ala2)
    prop = BlockProposal(model, tok, ala2.features, 24, ala2.residue_blocks, tau=0.9, seed=4,
                         device="cpu")
    R = len(ala2.residue_blocks)
    pop = smc_population(prop, energy.partial_energy, energy.reduced_energy, R, threshold=0.0,
                         schedule=schedule, centers=centers, reference_signs=signs)
    assert not any(h["resampled"] for h in pop.history) and len(pop.history) == R
    assert (pop.status == MIRRORED).any() and (pop.status != MIRRORED).any()  # a random model

    # the log q SMC used is the model's exact log density of the drawn samples
    tf = log_prob(model, tok, ala2.features, pop.xyz_drawn, tau=0.9, device="cpu")
    np.testing.assert_allclose(pop.log_q, tf, atol=1e-4, rtol=0)
    np.testing.assert_allclose(pop.log_q, prop.log_q, atol=1e-9, rtol=0)

    # SNIS on the same samples with the same (drawn) log q: identical weights
    snis = reweight(pop.xyz_drawn, pop.log_q, energy.reduced_energy, centers=centers,
                    reference_signs=signs, clip_fraction=0.0)
    ens = to_ensemble([pop], clip_fraction=0.0)
    assert ens.method == "smc" and ens.n == 24
    np.testing.assert_array_equal(ens.status, snis.status)
    np.testing.assert_array_equal(ens.xyz, snis.xyz)
    np.testing.assert_array_equal(ens.u, snis.u)
    # (a random model's energies reach ~1e9 kT; the telescoped sum still agrees to ~1e-10)
    np.testing.assert_allclose(ens.log_w, snis.log_w, atol=1e-6, rtol=0)
    np.testing.assert_allclose(ens.log_w, -energy.reduced_energy(pop.xyz) - pop.log_q,
                               atol=1e-6, rtol=0)
    assert ens.extras["log_z_hat"] == pytest.approx(
        np.logaddexp.reduce(snis.log_w) - math.log(24), abs=1e-6, rel=0)
    assert ens.ess == pytest.approx(snis.ess, rel=1e-9)


# ------------------------------------------------------------------ (b) analytic Gaussian toy

M1, S1, C, M2, S2, A = 1.2, 0.7, 0.8, -0.5, 0.7, 0.3
Z = 2 * math.pi * S1 * S2  # integral of exp(-u) over R^2


class GaussianProposal:
    """Block 1: x1 ~ N(0, 1); block 2: x2 | x1 ~ N(A x1, 1). One 'atom' per block (x axis)."""

    def __init__(self, k, rng):
        self.k, self.rng, self.x1 = k, rng, None

    def __call__(self, r):
        mean = 0.0 if r == 1 else A * self.x1
        x = (mean + self.rng.standard_normal(self.k)).astype(np.float32).astype(np.float64)
        if r == 1:
            self.x1 = x
        xyz = np.zeros((self.k, 1, 3))
        xyz[:, 0, 0] = x  # float32-exact, as SMC stores coordinates
        return xyz, -0.5 * (x - mean) ** 2 - 0.5 * math.log(2 * math.pi)

    def reorder(self, idx):
        self.x1 = self.x1[idx]


def u1(xyz, r=1):
    assert r == 1 and xyz.shape[1] == 1
    return (xyz[:, 0, 0] - M1) ** 2 / (2 * S1**2)


def u_full(xyz):
    x1, x2 = xyz[:, 0, 0], xyz[:, 1, 0]
    return u1(xyz[:, :1]) + (x2 - C * x1 - M2) ** 2 / (2 * S2**2)


def test_twist_schedules():
    np.testing.assert_allclose(twist_schedule("constant", 3), [0, 1, 1, 1])
    np.testing.assert_allclose(twist_schedule("linear", 4), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(twist_schedule([0.2, 0.0], 3), [0, 0.2, 0.0, 1])
    np.testing.assert_allclose(twist_schedule("linear", 1), [0, 1])
    with pytest.raises(ValueError, match="unknown twist schedule"):
        twist_schedule("cosine", 3)
    with pytest.raises(ValueError, match="2 values"):
        twist_schedule([0.5], 3)


def test_toy_weights_are_exact_without_resampling():
    prop = GaussianProposal(50, np.random.default_rng(0))
    pop = smc_population(prop, u1, u_full, 2, threshold=0.0, schedule=[0.3])
    x1, x2 = pop.xyz[:, 0, 0].astype(np.float64), pop.xyz[:, 1, 0].astype(np.float64)
    log_q = -0.5 * x1**2 - 0.5 * (x2 - A * x1) ** 2 - math.log(2 * math.pi)
    np.testing.assert_allclose(pop.log_q, log_q, atol=1e-12)
    np.testing.assert_allclose(pop.log_w, -pop.u - pop.log_q, atol=1e-12)


@pytest.mark.parametrize("threshold, schedule", [(0.5, "constant"), (1.0, "linear"),
                                                 (0.0, "constant")])
def test_toy_matches_analytic_target_and_z_is_unbiased(threshold, schedule):
    S, K = 50, 2000
    rng = np.random.default_rng(11)
    z_hat, mean1, var1, mean2, var2, resampled = [], [], [], [], [], 0
    for _ in range(S):
        pop = smc_population(GaussianProposal(K, rng), u1, u_full, 2, threshold=threshold,
                             schedule=schedule, rng=rng)
        ens = to_ensemble([pop], clip_fraction=0.0)
        w = ens.weights
        x1, x2 = ens.xyz[:, 0, 0].astype(np.float64), ens.xyz[:, 1, 0].astype(np.float64)
        m1, m2 = w @ x1, w @ x2
        z_hat.append(math.exp(ens.extras["log_z_hat"]))
        mean1.append(m1), mean2.append(m2)
        var1.append(w @ (x1 - m1) ** 2), var2.append(w @ (x2 - m2) ** 2)
        resampled += pop.history[0]["resampled"]
        assert not pop.history[1]["resampled"]  # never after the last block
    if threshold in (0.0, 1.0):
        assert resampled == threshold * S
    else:  # the adaptive rule: ESS after block 1 is near 0.5 here
        assert 0 < resampled < S
    truth = {"Z": (z_hat, Z), "mean x1": (mean1, M1), "var x1": (var1, S1**2),
             "mean x2": (mean2, C * M1 + M2), "var x2": (var2, C**2 * S1**2 + S2**2)}
    for name, (est, value) in truth.items():
        est = np.asarray(est)
        se = est.std(ddof=1) / math.sqrt(S)
        # Z_hat is unbiased in Z itself; the self-normalized moments carry an O(1/K) bias
        slack = 0.0 if name == "Z" else 2.0 / K
        assert abs(est.mean() - value) < 4 * se + slack, (name, est.mean(), value, se)


def test_infinite_and_nan_partial_energies_get_weight_zero():
    def partial(xyz, r):
        u = u1(xyz, r)
        x = xyz[:, 0, 0]
        return np.where(x > 1.0, np.nan, np.where(x < -1.0, np.inf, u))

    for threshold in (0.0, 0.5):
        prop = GaussianProposal(200, np.random.default_rng(3))
        ens = to_ensemble([smc_population(prop, partial, u_full, 2, threshold=threshold)],
                          clip_fraction=0.0)
        x1 = ens.xyz[:, 0, 0]
        alive = np.isfinite(ens.log_w)
        assert alive.any() and np.all(np.abs(x1[alive]) <= 1.0)
        assert not np.isnan(ens.log_w).any() and np.isfinite(ens.ess)
        if threshold == 0.0:
            np.testing.assert_array_equal(alive, np.abs(x1) <= 1.0)

    collapsed = smc_population(GaussianProposal(20, np.random.default_rng(0)),
                               lambda xyz, r: np.full(len(xyz), np.inf), u_full, 2)
    assert collapsed.log_z_hat == -np.inf and not collapsed.history[0]["resampled"]
    assert to_ensemble([collapsed]).ess == 0.0


def test_populations_combine_by_their_z_hat():
    rng = np.random.default_rng(5)
    pops = [smc_population(GaussianProposal(k, rng), u1, u_full, 2, rng=rng) for k in (30, 50)]
    ens = to_ensemble(pops, clip_fraction=0.0)
    z = [math.exp(p.log_z_hat) for p in pops]
    assert math.exp(ens.extras["log_z_hat"]) == pytest.approx((30 * z[0] + 50 * z[1]) / 80)
    first = ens.weights[:30].sum()
    assert first == pytest.approx(30 * z[0] / (30 * z[0] + 50 * z[1]))
    assert ens.extras["n_populations"] == 2 and len(ens.extras["history"]) == 2


# ------------------------------------------------------------------ (c) KV cache reordering


def test_adapter_reorder_matches_recomputing_reordered_prefixes(ala2):
    model, tok = tiny(seed=2, sharpen=5.0)
    feats, blocks = ala2.features, ala2.residue_blocks
    prop = BlockProposal(model, tok, feats, 4, blocks, tau=0.8, seed=7, device="cpu")
    xyz1, _ = prop(1)
    xyz2, _ = prop(2)
    P = 3 * blocks[1][1]  # tokens generated so far
    prefix, log_q = prop.bins[:, :P].clone(), prop.log_q.copy()
    idx = np.array([2, 0, 0, 3, 1])  # repeats, and the population grows
    prop.reorder(idx)
    assert torch.equal(prop.bins[:, :P], prefix[idx]) and prop.cache.batch_size == 5
    np.testing.assert_array_equal(prop.log_q, log_q[idx])
    cond = conditioning(feats)
    T = cond.n_tokens
    with inference(model, CPU):
        # next logits from the reordered cache == a fresh pass over the reordered prefixes
        cache = copy.copy(prop.cache)
        cache.k, cache.v = prop.cache.k.clone(), prop.cache.v.clone()
        cached = model(prefix[idx][:, -1:], cond, kv_cache=cache, start=P)[:, -1]
        fresh = model(torch.cat([shift_right(prefix[idx], model.bos),
                                 prefix[idx][:, -1:]], dim=1), cond)[:, P]
    assert torch.allclose(cached, fresh, atol=1e-5, rtol=0)

    # and the same continuation, given the same random stream
    state = prop.generator.get_state()
    xyz3, inc3 = prop(3)
    g = torch.Generator().set_state(state)
    with inference(model, CPU):
        cache = model.new_cache(5, T)
        model(shift_right(prefix[idx], model.bos), cond, kv_cache=cache, start=0)
        bins, lp = extend(model, cond, cache, prefix[idx][:, -1], P, T, 0.8, g)
        xyz_ref = tok.decode(bins, g).numpy()
    assert torch.equal(prop.bins[:, P:], bins)
    np.testing.assert_array_equal(xyz3, xyz_ref)
    np.testing.assert_allclose(inc3, lp.numpy() + tok.log_jacobian(T // 3 - P // 3), atol=1e-5)
    with pytest.raises(ValueError, match="block 1 requested"):
        prop(1)


# ------------------------------------------------------------------ pipeline and CLI


def test_run_sampling_smc_end_to_end(ala2, energy):
    from arbg_core.pipeline import SampleConfig, run_sampling

    model, tok = tiny(seed=3)
    config = CheckpointConfig(model.cfg, tok.cfg, SystemSpec("A", "capped"))
    loaded = LoadedModel("tiny-random", Path("tiny-random"), config, Card(),
                         prepare_for_inference(model, "cpu"), tok)
    seen = []
    cfg = SampleConfig(n=64, batch_size=32, seed=1, device="cpu", method="smc",
                       smc_schedule="linear")
    res = run_sampling(loaded, ala2, cfg, progress=lambda *a: seen.append(a),
                       energy_model=energy)
    ens = res.ensemble
    R = len(ala2.residue_blocks)
    assert ens.method == "smc" and ens.n == 64 and res.xyz.shape == (64, ala2.n_atoms, 3)
    assert np.isfinite(ens.ess) and 1.0 <= ens.ess <= 64
    assert ens.extras["n_populations"] == 2 and [len(h) for h in ens.extras["history"]] == [R, R]
    assert ens.extras["n_model_evaluations"] == 64 * 3 * ala2.n_atoms
    assert ens.extras["n_energy_evaluations"] >= 64 * (R - 1)
    assert {"sample", "energy", "reweight"} == {s for s, _, _ in seen}
    assert ("sample", 64, 64) in seen and all(t in (64, 1) for _, _, t in seen)
    live = ens.status != DROPPED
    np.testing.assert_array_equal(np.where(ens.status[:, None, None] == MIRRORED, -res.xyz,
                                           res.xyz)[live], ens.xyz[live])
    assert set(res.timings) == {"sample", "energy_and_reweight"}
    summary = res.summary()
    json.dumps(summary)
    assert summary["method"] == "smc" and len(summary["history"][0]) == R
    with pytest.raises(ValueError, match="unknown sampling method"):
        run_sampling(loaded, ala2, SampleConfig(n=4, method="mcmc"))
    with pytest.raises(ValueError, match="without energies"):
        run_sampling(loaded, ala2, SampleConfig(n=4, method="smc", reweight=False))


def test_cli_flags_reach_the_config(tmp_path, tiny_checkpoint):
    from arbg_core import cli

    args = cli.build_parser().parse_args(
        ["sample", "--model", "m", "--method", "smc", "--smc-threshold", "0.3",
         "--smc-schedule", "linear", "--out", str(tmp_path)])
    assert (args.smc_threshold, args.smc_schedule) == (0.3, "linear")
    args = cli.build_parser().parse_args(["evaluate", "--model", "m", "--reference", "r",
                                          "--out", str(tmp_path)])
    assert (args.method, args.smc_threshold, args.smc_schedule) == ("snis", 0.5, "constant")

    out = tmp_path / "s"
    assert cli.main(["sample", "--model", str(tiny_checkpoint), "--method", "smc",
                     "--smc-threshold", "0.25", "--n", "8", "--batch-size", "8", "--device", "cpu",
                     "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "smc" and summary["config"]["method"] == "smc"
    assert summary["config"]["smc_threshold"] == 0.25
    assert cli.main(["sample", "--model", "m", "--method", "smc", "--smc-threshold", "2",
                     "--out", str(tmp_path)]) == 2
