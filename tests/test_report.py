"""Basin populations with errors, and temperature reweighting of MD frames."""

import numpy as np
import pytest

from arbg_core.report import alpha_l, phi_basin_population, temperature_weights


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
