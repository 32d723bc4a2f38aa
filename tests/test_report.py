"""Basin populations with errors, temperature reweighting of MD frames, and `evaluate`'s result."""

import json

import numpy as np
import pytest

from arbg_core.report import alpha_l, evaluate, phi_basin_population, temperature_weights


def test_alpha_l_basin_bounds():
    phi = np.radians([-170, -60, -1, 1, 60, 119, 121, 179])
    assert alpha_l(phi).tolist() == [False, False, False, True, True, True, False, False]


def test_basin_population_weighted_and_blocked():
    rng = np.random.default_rng(0)
    inside = np.repeat(rng.random(200) < 0.1, 50)  # a correlated time series, 10 % inside
    phi = np.where(inside, 1.0, -1.0)[:, None]
    iid = phi_basin_population(phi)
    blocked = phi_basin_population(phi, n_blocks=10)
    assert iid["p_alpha_l"] == blocked["p_alpha_l"] == pytest.approx(inside.mean())
    assert blocked["n_blocks"] == 10 and blocked["stderr"] > 3 * iid["stderr"]  # correlation shows
    w = np.where(inside, 3.0, 1.0)
    weighted = phi_basin_population(phi, w, n_blocks=10)
    p = 3 * inside.mean() / (3 * inside.mean() + 1 - inside.mean())
    assert weighted["p_alpha_l"] == pytest.approx(p) and weighted["stderr"] >= blocked["stderr"] * 0.5
    empty = phi_basin_population(-np.ones((100, 1)))
    assert empty["p_alpha_l"] == 0.0 and empty["stderr"] == pytest.approx(0.01)


def test_temperature_weights_move_a_harmonic_oscillator_between_temperatures():
    # U = x^2 / 2 in units of kT at 300 K: at T the variance of x is T / 300
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, np.sqrt(500 / 300), 200_000)  # MD at 500 K
    w = temperature_weights(0.5 * x ** 2, t_run_k=500, t_target_k=300)
    assert np.sum(w) == pytest.approx(1.0)
    assert np.sum(w * x ** 2) == pytest.approx(1.0, rel=0.02)  # the 300 K variance
    assert np.allclose(temperature_weights(0.5 * x[:10] ** 2, 300, 300), 0.1)


def test_evaluate_returns_the_reference_energies_and_angles_it_used(ala2, tmp_path):
    """u_ref and phi/psi of the reference come back with the report: OpenMM's energies and
    mdtraj's angles of the very frames, and report.json holds the report as strict JSON."""
    import mdtraj as md
    import torch

    from arbg_core import checkpoint
    from arbg_core.energy import EnergyModel
    from arbg_core.metrics import ramachandran_angles
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.pipeline import SampleConfig, run_sampling
    from arbg_core.tokenizer import TokenizerConfig

    torch.manual_seed(0)
    checkpoint.save(tmp_path / "tiny", ArBG(ModelConfig.preset("tiny")), TokenizerConfig(n_bins=64, std=0.2),
                    system={"sequence": "A", "termini": "capped", "preset": "amber99sbildn-obc"},
                    card={"tau": 1.0})
    result = run_sampling(checkpoint.load(tmp_path / "tiny"), ala2, SampleConfig(n=32, batch_size=32))
    rng = np.random.default_rng(0)
    xyz = (ala2.xyz[None] + 0.004 * rng.standard_normal((60, ala2.n_atoms, 3))).astype(np.float32)
    reference = md.Trajectory(xyz, ala2.topology)

    ev = evaluate(result, reference, tmp_path / "eval", lag=2, n_eval=30)
    np.testing.assert_allclose(ev.u_ref, EnergyModel(ala2.topology, result.preset).reduced_energy(xyz),
                               rtol=1e-6)
    phi, psi, _ = ramachandran_angles(reference)
    np.testing.assert_array_equal(ev.phi_ref, phi)
    np.testing.assert_array_equal(ev.psi_ref, psi)
    assert ev.report["reference"]["n_frames"] == 60 and ev.report["metrics"]["tica_lag_frames"] == 2
    written = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert written["metrics"]["reweighted"] == pytest.approx(ev.report["metrics"]["reweighted"])
