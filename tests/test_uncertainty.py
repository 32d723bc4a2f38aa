"""Errors of populations (Kish ESS for weights, block averages for MD), 'not resolved', free
energies, and verdicts against a noise floor."""

import numpy as np
import pytest

from arbg_core import uncertainty as U


def test_population_error_uses_the_kish_ess():
    inside = np.arange(1000) < 300
    p = U.population(inside)
    assert p.value == pytest.approx(0.3) and p.n_effective == pytest.approx(1000)
    assert p.error == pytest.approx(np.sqrt(0.3 * 0.7 / 1000))
    w = np.zeros(1000)
    w[[0, 1, 500, 501]] = 1.0  # 4 equal weights: 2 inside
    q = U.population(inside, w)
    assert q.value == pytest.approx(0.5) and q.n_effective == pytest.approx(4)
    assert q.error == pytest.approx(0.25)


def test_tiny_value_with_a_big_error_is_not_resolved():
    """The issue's case: 0.0005 +- 0.11 from ~9 effective samples."""
    w = np.full(2000, 1e-9)
    w[:9] = 1.0
    inside = np.zeros(2000, bool)
    inside[500:1500] = True
    p = U.population(inside, w)
    assert p.value < 1e-3 and p.error > 0.1 and not p.resolved
    assert p.text().startswith("not resolved")
    assert U.free_energy(p).text() == "not resolved"


def test_block_errors_see_time_correlation():
    rng = np.random.default_rng(0)
    # a two-state chain that stays ~500 frames in a state: 10,000 frames, few transitions
    flips = rng.random(10_000) < 1 / 500
    inside = np.cumsum(flips) % 2 == 1
    iid, blocked = U.population(inside), U.time_series_population(inside)
    assert blocked.value == iid.value
    assert blocked.error > 3 * iid.error and blocked.n_effective < iid.n_effective / 9
    white = rng.random(10_000) < 0.3  # independent frames: blocks agree with the iid error
    assert U.time_series_population(white).error == pytest.approx(U.population(white).error, rel=0.6)


def test_free_energy_and_text():
    p = U.Estimate(0.25, 0.01, 100)
    f = U.free_energy(p)
    assert f.value == pytest.approx(np.log(4)) and f.error == pytest.approx(0.04)
    assert p.text() == "0.250 ± 0.010"
    certain = U.free_energy(U.Estimate(0.99, 0.05, 40))  # F near 0 is a value, not noise
    assert certain.resolved and certain.text() == "0.010 ± 0.051"


def test_basins_partition_the_map():
    phi = np.radians([-60, -60, -150, 60, 150])
    psi = np.radians([-45, 140, 160, 40, 0])
    m = U.basin_masks(phi, psi)
    assert m["αR"].tolist() == [True, False, False, False, False]
    assert m["β / PPII"].tolist() == [False, True, True, False, False]
    assert m["αL / C7ax"].tolist() == [False, False, False, True, False]


def test_basin_table_columns():
    rng = np.random.default_rng(1)
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 400, 2))
    rows = U.basin_table({"proposal": ((phi, psi), None), "reference": ((phi, psi), None)},
                         ["ALA2", "ALA3"], time_series={"reference"})
    assert len(rows) == 6 and rows[0]["residue"] == "ALA2"
    assert isinstance(rows[0]["reference F"], U.Estimate)


@pytest.mark.parametrize("value,floor,word", [(0.1, 0.1, "at the noise floor"), (0.25, 0.1, "near"),
                                              (1.0, 0.1, "clearly different"), (1.0, 0.0, "no noise floor")])
def test_noise_verdict(value, floor, word):
    ratio, verdict = U.noise_verdict(value, floor)
    assert word in verdict
    if floor:
        assert ratio == pytest.approx(value / floor)
