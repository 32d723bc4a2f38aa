"""Refinement against the energy alone (refine.py, issue #19): on a toy with a known density
(two atoms, harmonic bond and centroid restraint; exact log Z) it moves q towards p, SNIS from the
refined model stays unbiased, the collapse guard rolls back, and `arbg refine` writes an ordinary
per-system checkpoint that loads and samples."""

import json
import math

import numpy as np
import pytest
import torch

from arbg_core import checkpoint, cli
from arbg_core.bench.refine_toy import Dimer, dimer_features, dimer_target, reverse_kl, toy_model
from arbg_core.refine import RefineConfig, Target, refine
from arbg_core.reweight import log_weights, normalized_weights
from arbg_core.sampling import sample

DIMER = Dimer()
TOY = dict(steps=30, batch_size=128, lr=3e-3, tau=1.0, eval_every=10, eval_n=256, final_n=500)


@pytest.fixture(scope="module")
def refined_toy():
    model, tok = toy_model(0)
    return model, tok, refine(model, tok, dimer_target(DIMER), RefineConfig(**TOY))


def test_config_checks_its_values():
    with pytest.raises(ValueError, match="objective must be one of"):
        RefineConfig(objective="kl")
    with pytest.raises(ValueError, match="optimizer must be one of"):
        RefineConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="budget"):
        RefineConfig(steps=None)
    with pytest.raises(ValueError, match="tau"):
        RefineConfig(tau=20.0)
    assert RefineConfig().loop_tau(0.8) == 1.0  # draws at 1: the weights keep batch_ess
    assert RefineConfig(tau=None).loop_tau(0.8) == 0.8  # ... or where the card samples
    assert RefineConfig(objective="rkl", tau=None).loop_tau(0.8) == 1.0
    with pytest.raises(ValueError, match="grad_samples"):
        RefineConfig(grad_samples=-1)


def test_adaptive_beta_keeps_the_asked_fraction_of_effective_samples():
    """Log weights spanning 10^11 nats, as a transferable model's clashes give: beta falls until
    a quarter of the batch is effective; never above the schedule's beta; dropped count as 0."""
    from arbg_core.refine_objectives import adaptive_beta

    rng = np.random.default_rng(0)
    log_w = -np.abs(rng.standard_normal(256)) * 10.0 ** rng.uniform(0, 11, 256)
    log_w[:40] = -np.inf
    beta = adaptive_beta(log_w, 0.5, 0.25)
    w = np.exp(beta * (log_w - log_w.max()))
    assert 0 < beta < 1e-3
    assert w.sum() ** 2 / (w ** 2).sum() / len(log_w) == pytest.approx(0.25, rel=1e-3)
    flat = rng.standard_normal(256) * 0.01  # nearly equal weights: the schedule's beta stands
    assert adaptive_beta(flat, 0.5, 0.25) == 0.5
    assert adaptive_beta(log_w, 0.5, 0.0) == 0.5


def test_adaptive_beta_counts_from_the_proposals_own_ratio_weights():
    """A batch drawn at tau != 1: at beta the weights are beta log_w + (1 - beta) log q_1/q_tau,
    and the asked fraction is of the effective samples of the ratio weights alone (beta 0)."""
    from arbg_core.refine_objectives import adaptive_beta

    rng = np.random.default_rng(1)
    log_w, ratio = rng.standard_normal(512) * 30.0, rng.standard_normal(512)

    def ess(t):
        w = np.exp(t - t.max())
        return w.sum() ** 2 / (w ** 2).sum()

    beta = adaptive_beta(log_w, 1.0, 0.25, ratio)
    assert 0 < beta < 1
    assert ess(beta * log_w + (1 - beta) * ratio) == pytest.approx(0.25 * ess(ratio), rel=1e-3)
    assert adaptive_beta(log_w, 1.0, 0.25, np.zeros(512)) == adaptive_beta(log_w, 1.0, 0.25)


def test_a_batch_drawn_colder_does_not_pull_the_model_colder():
    """With p left out (beta ~ 0) the tempered target is q_1 itself, so the fkl gradient of a
    batch drawn at tau 0.5 is Monte Carlo noise around 0: measured along the gradient the same
    batch gives without the q_1/q_tau ratio in the weights (the method before this test, which
    pulled q_1 toward q_0.5 at every step: the cooling that left refined ensembles kT below MD),
    it is a few % of that gradient (0.03 with these seeds), where the old weights give 100 %."""
    from arbg_core.bench.refine_toy import pretrain
    from arbg_core.model import conditioning
    from arbg_core.refine_batch import draw_batch
    from arbg_core.refine_objectives import _fkl_loss

    model, tok = toy_model(0)
    pretrain(model, tok, DIMER, steps=100)
    batch = draw_batch(model, tok, dimer_target(DIMER), 4096, 0.5,
                       torch.Generator().manual_seed(0))
    cond = conditioning(dimer_target(DIMER).features)
    model.requires_grad_(True)

    def grad(tau):  # tau 1.0 leaves the ratio out: uniform weights at beta ~ 0
        model.zero_grad(set_to_none=True)
        loss, beta = _fkl_loss(model, batch, cond, 1e-12, tau, 0.0)
        loss.backward()
        assert beta == 1e-12
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    fixed, cooling = grad(0.5), grad(1.0)
    model.requires_grad_(False)
    along = float(fixed @ cooling) / float(cooling.norm())  # ~0 (noise); 1 x |cooling| before
    assert abs(along) < 0.3 * float(cooling.norm()), (along, float(cooling.norm()))


def test_refinement_moves_q_towards_the_target(refined_toy):
    """KL(q || p) (exact up to Monte Carlo error, ~0.1 nat here) falls by tens of nats in 30
    steps from an untrained model (KL ~120); a wrong sign would raise it, and the guard would
    then keep the untrained state (no fall at all). The fresh-sample ESS rises with it, and
    the parent is left untouched."""
    model, tok, res = refined_toy
    kl0, kl1 = reverse_kl(model, tok, DIMER, n=2000), reverse_kl(res.model, tok, DIMER, n=2000)
    assert kl1 < kl0 - 30, (kl0, kl1)
    assert res.after["ess_fraction"] > 2 * res.before["ess_fraction"], (res.before, res.after)
    assert res.steps == 30 and res.history[-1]["step"] == 30
    assert not any(p.requires_grad for p in model.parameters())
    assert not res.model.training and not any(p.requires_grad for p in res.model.parameters())


def test_reverse_kl_objective_also_descends():
    model, tok = toy_model(0)
    res = refine(model, tok, dimer_target(DIMER),
                 RefineConfig(objective="rkl", **TOY | {"steps": 20}))
    kl0, kl1 = reverse_kl(model, tok, DIMER, n=2000), reverse_kl(res.model, tok, DIMER, n=2000)
    assert kl1 < kl0 - 10, (kl0, kl1)


def test_muon_optimizer_also_descends():
    """The training recipe's optimizer (Muon on the block matrices) refines too; its steps use
    the same guard and rollbacks (a fresh Muon + AdamW pair at half the rate)."""
    model, tok = toy_model(0)
    res = refine(model, tok, dimer_target(DIMER),
                 RefineConfig(optimizer="muon", **TOY | {"steps": 20, "lr": 1e-3}))
    kl0, kl1 = reverse_kl(model, tok, DIMER, n=2000), reverse_kl(res.model, tok, DIMER, n=2000)
    assert kl1 < kl0 - 10, (kl0, kl1)
    assert res.record(RefineConfig(optimizer="muon"))["config"]["optimizer"] == "muon"


def test_resampled_gradient_also_descends():
    """grad_samples: the fkl gradient on systematic resamples of the weighted batch (the
    backward pass sees only the distinct samples picked) still moves q toward p."""
    model, tok = toy_model(0)
    res = refine(model, tok, dimer_target(DIMER),
                 RefineConfig(**TOY | {"steps": 20, "grad_samples": 32}))
    kl0, kl1 = reverse_kl(model, tok, DIMER, n=2000), reverse_kl(res.model, tok, DIMER, n=2000)
    assert kl1 < kl0 - 10, (kl0, kl1)


def test_systematic_resampling_is_unbiased_for_any_uniform():
    """Averaged over its uniform, sum_k c_k f(i_k) equals sum_i w_i f(i) (systematic
    resampling is unbiased), and each draw keeps m picks in all."""
    from arbg_core.refine_objectives import resample

    rng = np.random.default_rng(0)
    w, f = rng.exponential(size=50) ** 4, rng.normal(size=50)
    w /= w.sum()
    us = (np.arange(4000) + 0.5) / 4000  # the uniform's quantiles: the mean over u exactly
    est = []
    for u in us:
        idx, c = resample(w, 8, u)
        assert len(set(idx)) == len(idx) and c.sum() == pytest.approx(1.0)
        est.append(c @ f[idx])
    assert np.mean(est) == pytest.approx(w @ f, abs=1e-3)
    assert np.std(est) > 0.01  # an estimate, not the sum itself


def test_a_batch_knows_its_drawn_log_ratio_without_another_pass():
    """Batch.log_ratio (log q_1 - log q_tau of each fixed sample, from the sampler's own logits)
    equals a teacher-forced pass over the same bins at both temperatures."""
    from arbg_core.model import conditioning, token_log_probs_at
    from arbg_core.refine_batch import draw_batch

    model, tok = toy_model(0)
    batch = draw_batch(model, tok, dimer_target(DIMER), 64, 0.6, torch.Generator().manual_seed(1))
    cond = conditioning(dimer_target(DIMER).features)
    with torch.no_grad():
        at1, at_tau = token_log_probs_at(model, batch.fixed_bins, cond, (1.0, 0.6))
    want = (at1.double().sum(1) - at_tau.double().sum(1)).numpy()
    assert np.abs(want).max() > 0.1  # the two temperatures differ
    np.testing.assert_allclose(batch.log_ratio, want, atol=1e-4)


@pytest.mark.parametrize("objective", ["fkl", "rkl"])
def test_body_frame_model_learns_to_stay_inside_its_parametrization(objective):
    """A body-frame model (DESIGN §17) of N-CA-C with two harmonic bonds: untrained, ~80% of its
    draws fall outside the parametrization (log q = -inf, weight 0); both objectives teach it
    to stay inside (the fkl through the weights, the rkl through the worst reward)."""
    from test_body_frame import body_model, three_atoms

    def energy(xyz, k=1 / 0.03 ** 2, r0=0.15):
        x = np.asarray(xyz, np.float64)
        d = np.linalg.norm(x[:, 1:] - x[:, :-1], axis=-1)  # (B, 2) N-CA, CA-C
        return 0.5 * k * ((d - r0) ** 2).sum(axis=1)

    model, tok = body_model(std=0.1)
    res = refine(model, tok, Target(three_atoms(), energy),
                 RefineConfig(objective=objective, **TOY | {"steps": 20}))
    outside = [np.isinf(sample(m, tok, three_atoms(), 1000, seed=5, device="cpu")[1]).mean()
               for m in (model, res.model)]
    assert outside[0] > 0.7 and outside[1] < 0.4, outside
    assert res.after["ess_fraction"] > 3 * res.before["ess_fraction"], (res.before, res.after)


def test_snis_from_the_refined_model_is_unbiased(refined_toy):
    """E_p[bond length] and E_p[|centroid|^2] = 3 / kc from fresh samples of the refined model,
    weighted with its own exact log q, averaged over seeds, match the exact values."""
    _, tok, res = refined_toy
    exact = np.array([DIMER.mean_bond(), 3 / DIMER.kc])
    estimates = []
    for seed in range(8):
        xyz, log_q = sample(res.model, tok, dimer_features(), 2000, seed=1000 + seed, device="cpu")
        x = xyz.astype(np.float64)
        w = normalized_weights(log_weights(DIMER.energy(x), log_q))
        obs = np.stack([np.linalg.norm(x[:, 1] - x[:, 0], axis=1),
                        (x.mean(axis=1) ** 2).sum(axis=1)], axis=1)  # (n, 2)
        estimates.append(w @ obs)
    estimates = np.array(estimates)
    mean, err = estimates.mean(0), estimates.std(0, ddof=1) / math.sqrt(len(estimates))
    assert np.all(np.abs(mean - exact) < np.maximum(4 * err, 0.02 * exact)), (mean, err, exact)


def test_guard_rolls_back_to_the_best_state(refined_toy):
    """A learning rate far too large wrecks a good model at once: every check scores worse than
    the start, so the guard rolls back until it gives up, and the result is the start's state
    (the fresh after-samples are then the before-samples, seed for seed: no tau scan, the
    parent's tau is kept)."""
    _, tok, first = refined_toy
    start = first.model
    cfg = RefineConfig(**TOY | {"lr": 1.0, "eval_every": 1, "max_rollbacks": 1})
    res = refine(start, tok, dimer_target(DIMER), cfg, card_tau=0.9)
    assert res.tau == 0.9 and list(res.tau_scan) == ["0.9"]
    assert res.rollbacks == 2 and res.steps == 2
    assert [h["action"] for h in res.history] == ["best", "rollback", "rollback"]
    assert res.history[1]["score"] < res.history[0]["score"] - cfg.rollback_nats
    assert res.after["ess"] == res.before["ess"]
    for k, v in start.state_dict().items():
        assert torch.equal(v, res.model.state_dict()[k])


def _refine_cli(model, out, *extra):
    return cli.main(["refine", "--model", str(model), "--steps", "2", "--batch-size", "16",
                     "--eval-every", "2", "--eval-n", "32", "--final-n", "32", "--device", "cpu",
                     "--out", str(out), *extra])


def test_cli_refined_checkpoint_loads_and_samples(tiny_checkpoint, tmp_path, capsys):
    """Real OpenMM energies of capped alanine dipeptide, a real (untrained) tiny checkpoint."""
    assert _refine_cli(tiny_checkpoint, tmp_path / "ref") == 0
    assert "for A (capped): fkl, 2 steps" in capsys.readouterr().out
    loaded = checkpoint.load(tmp_path / "ref")
    card = json.loads((tmp_path / "ref" / "card.json").read_text())
    r = card["refined"]
    assert r["objective"] == "fkl" and r["steps"] == 2 and r["wall_time_s"] > 0
    assert 0 < r["ess_before"] <= 1 and 0 < r["ess_after"] <= 1 and r["n_fresh"] == 32
    assert card["parent"]["name"] == "tiny" and loaded.config.system.sequence == "A"
    assert cli.main(["sample", "--model", str(tmp_path / "ref"), "--n", "8", "--batch-size", "8",
                     "--out", str(tmp_path / "s")]) == 0
    assert json.loads((tmp_path / "s" / "summary.json").read_text())["counts"]["n"] == 8


def test_cli_refining_a_transferable_model_gives_a_model_of_that_sequence(tmp_path):
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    parent = checkpoint.save(tmp_path / "trans", ArBG(ModelConfig.preset("tiny")),
                             TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                             extra={"termini": "zwitterionic", "lengths": [2, 2]},
                             card={"tau": 0.9})
    assert _refine_cli(parent, tmp_path / "ref", "--sequence", "AG") == 0
    entry = checkpoint.read_entry(tmp_path / "ref")
    assert not entry.transferable and entry.system.label == "AG (zwitterionic)"
    assert entry.serves("AG", "zwitterionic") and not entry.serves("GA", "zwitterionic")
    assert entry.tau == 0.9  # fkl refines where the parent samples
    assert checkpoint.load(tmp_path / "ref").tokenizer.cfg.a == 4.5


def test_cli_needs_a_budget(tiny_checkpoint, tmp_path, capsys):
    assert cli.main(["refine", "--model", str(tiny_checkpoint), "--out", str(tmp_path)]) == 2
    assert "give a budget: steps or minutes" in capsys.readouterr().err


def test_dipeptide_benchmark_means_and_ratios(tmp_path):
    """The #19 table's summary: means per budget over the sequences measured so far, the ESS
    ratio against the parent, and whether the reweighted E-W2 got worse."""
    from arbg_core.bench.refine_dipeptides import METRICS, _means

    def ev(ess, e_w2):
        return {k: 0.0 for k in METRICS} | {"ess_fraction": ess, "reweighted_e_w2": e_w2}

    rows = [{"sequence": "AR", "before": ev(0.001, 4.0), "10": ev(0.004, 3.0)},
            {"sequence": "DY", "before": ev(0.003, 2.0), "10": ev(0.006, 5.0)},
            {"sequence": "FR", "before": ev(0.002, 1.0)}]  # its refinement not done yet
    m = _means(rows, ["10", "30"])
    assert m["before"]["n_sequences"] == 3 and m["10"]["n_sequences"] == 2 and "30" not in m
    assert m["before"]["ess_fraction"] == pytest.approx(0.002)
    assert m["10"]["ess_fraction"] == pytest.approx(0.005)
    assert m["10"]["ess_ratio_per_sequence"] == pytest.approx([4.0, 2.0])
    assert m["10"]["ess_ratio_of_means"] == pytest.approx(2.5)
    assert m["10"]["e_w2_not_worse"] is False  # 4.0 > 3.0, the parent's on AR and DY
    # the README table of such a result
    from arbg_core.bench.refine_dipeptides import table
    from arbg_core.files import write_json

    for r in rows[:2]:
        r["10"]["refine"] = {"steps": 60, "rollbacks": 1}
    write_json(tmp_path / "r.json", {"minutes": [10.0], "rows": rows, "mean": m})
    text = table(str(tmp_path / "r.json"))
    assert "| AR | 10 min | 0.400 % |" in text and "| FR | no (parent) | 0.200 % |" in text
    assert "**mean of 2** | 10 min | 0.500 % |" in text and "ESS x2.5" in text


def test_dipeptide_benchmark_keeps_rows_of_the_same_setup_only(tmp_path):
    """--keep: a measurement split over sessions keeps the other sequences' rows of an earlier
    run with the same settings, and refuses to mix in rows of other settings."""
    from arbg_core.bench.refine_dipeptides import _kept_rows
    from arbg_core.files import write_json

    setup = {"lr": 2e-4, "grad_samples": 64, "command": "python -m ... --sequences AR"}
    write_json(tmp_path / "r.json", setup | {"command": "other", "rows": [
        {"sequence": "AR"}, {"sequence": "HC"}]})
    assert _kept_rows(tmp_path / "r.json", setup, ["AR", "DY"]) == [{"sequence": "HC"}]
    assert _kept_rows(tmp_path / "none.json", setup, ["AR"]) == []
    with pytest.raises(SystemExit, match="grad_samples"):
        _kept_rows(tmp_path / "r.json", setup | {"grad_samples": 0}, ["DY"])


def test_the_refined_model_keeps_the_tau_of_highest_ess(refined_toy):
    """The loop's tau and final_taus are each measured on the same fresh draws; the card's tau
    is the one of the highest ESS, and `after` is its measurement."""
    _, _, res = refined_toy
    assert set(res.tau_scan) == {"1.0", "0.85"}
    assert res.tau == float(max(res.tau_scan, key=res.tau_scan.get))
    assert res.after["ess_fraction"] == res.tau_scan[str(res.tau)]
    with pytest.raises(ValueError, match="final_taus"):
        RefineConfig(final_taus="0.9,warm")
    with pytest.raises(ValueError, match="tau"):
        RefineConfig(final_taus="9.0")
