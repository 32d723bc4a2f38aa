"""Log weights, clipping, ESS, resampling and the chirality fix, on toys with known answers and on
real peptides (alanine dipeptide) with the real force field."""

import json

import numpy as np
import pytest
from scipy.stats import chisquare

from arbg_core import reweight as R

# ------------------------------------------------------------------------------ ESS, clipping


def test_ess_equal_weights_is_n_and_shift_invariant():
    assert R.ess(np.zeros(100)) == pytest.approx(100.0, rel=1e-12)
    assert R.ess(np.full(100, 1234.5)) == pytest.approx(100.0, rel=1e-12)
    log_w = np.random.default_rng(0).normal(0, 2, 500)
    assert R.ess(log_w + 700.0) == pytest.approx(R.ess(log_w), rel=1e-10)
    assert R.ess(log_w - 700.0) == pytest.approx(R.ess(log_w), rel=1e-10)


def test_ess_one_hot_is_one():
    log_w = np.full(50, -np.inf)
    log_w[17] = 3.0
    assert R.ess(log_w) == pytest.approx(1.0, rel=1e-12)
    assert R.ess(np.full(5, -np.inf)) == 0.0


def test_ess_matches_kish_formula():
    w = np.random.default_rng(1).exponential(size=300)
    assert R.ess(np.log(w)) == pytest.approx(w.sum() ** 2 / (w ** 2).sum(), rel=1e-10)


def test_log_weights_infinite_and_nan():
    log_w = R.log_weights(np.array([1.0, np.inf, np.nan, 2.0]), np.array([0.5, 0.0, 0.0, np.nan]))
    assert log_w.dtype == np.float64
    assert log_w[0] == -1.5
    assert np.all(log_w[1:] == -np.inf)


def test_clip_removes_exactly_the_top_fraction():
    rng = np.random.default_rng(2)
    log_w = rng.normal(size=1500)
    log_w[:250] = -np.inf  # 1250 finite -> floor(0.002 * 1250) = 2 clipped
    clipped, n = R.clip_log_weights(log_w, 0.002)
    assert n == 2
    top2 = np.argsort(log_w)[-2:]
    assert np.all(clipped[top2] == -np.inf)
    assert np.sum(np.isfinite(clipped)) == 1248
    keep = np.isfinite(clipped)
    np.testing.assert_array_equal(clipped[keep], log_w[keep])
    _, n = R.clip_log_weights(log_w, 0.01)
    assert n == 12


def test_clip_ties_are_deterministic():
    clipped, n = R.clip_log_weights(np.zeros(300), 0.01)
    assert n == 3
    assert np.all(clipped[:3] == -np.inf) and np.all(clipped[3:] == 0.0)


def test_normalized_weights_sum_to_one():
    w = R.normalized_weights(np.array([1000.0, 1001.0, -np.inf]))
    assert w.sum() == pytest.approx(1.0)
    assert w[2] == 0.0 and w[1] / w[0] == pytest.approx(np.e)


# -------------------------------------------------------------------------------- resampling

_W = np.array([0.05, 0.1, 0.0, 0.25, 0.6])
with np.errstate(divide="ignore"):
    _LOG_W = np.log(_W)


@pytest.mark.parametrize("method", ["multinomial", "systematic"])
def test_resampling_frequencies_match_weights(method):
    n = 100_000
    idx = R.resample(_LOG_W, n, method=method, seed=123)
    counts = np.bincount(idx, minlength=len(_W))
    assert counts[2] == 0  # zero weight never drawn
    live = _W > 0
    assert chisquare(counts[live], n * _W[live]).pvalue > 1e-3
    if method == "systematic":  # its defining property: every count is floor or ceil of n w
        assert np.all(np.abs(counts - n * _W) <= 1)


def test_resample_plain_weights_and_seed():
    a = R.resample(_W, 1000, "multinomial", seed=7, is_log=False)
    b = R.resample(_LOG_W, 1000, "multinomial", seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, R.resample(_W, 1000, "multinomial", seed=8, is_log=False))


def test_unknown_resampling_method_raises():
    with pytest.raises(ValueError, match="unknown resampling method"):
        R.resample(np.zeros(4), 10, method="stratified-ish")


# ---------------------------------------------------------------------------- SNIS on a toy


def _gauss_log_density(x, mean, sd):
    x = np.asarray(x, dtype=np.float64)
    return np.sum(-0.5 * ((x - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi), axis=(1, 2))


@pytest.mark.parametrize("clip", [0.0, 0.002])
def test_reweighting_gaussian_toy_recovers_target_moments(clip):
    # proposal N(0, 2^2) in 3D, target N(0.5, 1): u = |x - 0.5|^2 / 2
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 2.0, size=(40_000, 1, 3))
    log_q = _gauss_log_density(x, 0.0, 2.0)
    ens = R.reweight(x, log_q, lambda y: 0.5 * np.sum((y - 0.5) ** 2, axis=(1, 2)),
                     clip_fraction=clip)
    w, y = ens.weights, ens.xyz[:, 0].astype(np.float64)  # (B,), (B, 3)
    mean = w @ y
    se_mean = np.sqrt(w ** 2 @ (y - mean) ** 2)
    var = w @ (y - mean) ** 2
    se_var = np.sqrt(w ** 2 @ ((y - mean) ** 2 - var) ** 2)
    assert np.all(np.abs(mean - 0.5) < 4 * se_mean)
    assert np.all(np.abs(var - 1.0) < 4 * se_var)
    assert ens.counts["clipped"] == int(np.floor(clip * 40_000))
    assert 0.2 < ens.ess_fraction < 1.0


def test_infinite_energies_are_counted_not_hidden():
    x = np.random.default_rng(4).normal(size=(10, 2, 3))
    u = np.arange(10.0)
    u[[2, 5]] = np.inf
    ens = R.reweight(x, np.zeros(10), lambda y: u[: len(y)], clip_fraction=0.0)
    assert ens.n_infinite_energy == 2 and ens.counts["infinite_energy"] == 2
    assert ens.weights[2] == 0.0 and ens.weights[5] == 0.0
    assert ens.weights.sum() == pytest.approx(1.0)
    summary = json.loads(json.dumps(ens.summary(), allow_nan=False))
    assert summary["counts"] == {"n": 10, "kept": 10, "mirrored": 0, "dropped": 0,
                                 "infinite_energy": 2, "clipped": 0}
    assert ens.resample(25, seed=0, return_xyz=True).shape == (25, 2, 3)
    assert set(ens.resample(1000, seed=0, method="multinomial")).isdisjoint({2, 5})


# ---------------------------------------------------- chirality exactness on a mirror-symmetric toy

_MU = np.array([[0.4, 0.1, -0.2], [0.9, 0.0, 0.3], [0.0, 0.8, -0.1], [0.2, -0.3, 0.7]])
_CENTER = np.array([[0, 1, 2, 3]])


def _triple(y):
    d = y[:, 1:] - y[:, :1]
    return np.einsum("bk,bk->b", d[:, 0], np.cross(d[:, 1], d[:, 2]))


def test_two_sided_proposal_density_is_used_and_exact():
    # target: standard normal on 4 atoms (u(x) = u(-x)), restricted to positive handedness;
    # proposal: an asymmetric Gaussian, so q(y) != q(-y).
    rng = np.random.default_rng(5)
    x = _MU + 1.2 * rng.normal(size=(40_000, 4, 3))
    log_q_fn = lambda y: _gauss_log_density(y, _MU, 1.2)  # noqa: E731
    energy = lambda y: 0.5 * np.sum(np.asarray(y, np.float64) ** 2, axis=(1, 2))  # noqa: E731
    ens = R.reweight(x, log_q_fn(x), energy, log_q_fn=log_q_fn, centers=_CENTER,
                     reference_signs=np.array([1]), clip_fraction=0.0)
    assert ens.counts["mirrored"] > 10_000 and ens.counts["kept"] > 10_000
    np.testing.assert_array_equal(R.handedness(ens.xyz, _CENTER)[:, 0], 1)
    y = ens.xyz.astype(np.float64)
    expected = np.logaddexp(log_q_fn(y), log_q_fn(-y))
    scored = ~np.isnan(ens.extras["log_q_mirror"])  # the rest weigh < 2^-53 of the total
    assert scored.sum() + ens.extras["mirror_skipped"] == len(x)
    np.testing.assert_allclose(ens.log_q[scored], expected[scored], rtol=1e-5, atol=1e-4)  # float32 xyz
    # E|y|^2 = 12 exactly; E[T | T > 0] = E|T| from direct samples of the target
    z = np.random.default_rng(6).normal(size=(400_000, 4, 3))
    truth_t, se_truth = np.abs(_triple(z)).mean(), np.abs(_triple(z)).std() / np.sqrt(len(z))
    w = ens.weights
    for f, truth, extra in ((np.sum(y ** 2, axis=(1, 2)), 12.0, 0.0), (_triple(y), truth_t,
                                                                      se_truth)):
        m = w @ f
        assert abs(m - truth) < 4 * np.sqrt(w ** 2 @ (f - m) ** 2 + extra ** 2)
    # the one-sided density of the drawn sample is also consistent, but has a lower ESS
    one_sided = R.reweight(x, log_q_fn(x), energy, centers=_CENTER,
                           reference_signs=np.array([1]), clip_fraction=0.0)
    assert "log_q_mirror" not in one_sided.extras
    assert ens.ess > 1.3 * one_sided.ess


def test_dropping_inverted_samples_is_exact_and_scores_no_mirror_image():
    """inverted="drop": all-inverted samples get weight 0 and the rest keep q(x) (SNIS on the
    L-isomer with q restricted to it): consistent, and the model is never called again."""
    rng = np.random.default_rng(11)
    x = _MU + 1.2 * rng.normal(size=(40_000, 4, 3))
    log_q_fn = lambda y: _gauss_log_density(y, _MU, 1.2)  # noqa: E731
    energy = lambda y: 0.5 * np.sum(np.asarray(y, np.float64) ** 2, axis=(1, 2))  # noqa: E731
    calls = []

    def counted(y):
        calls.append(len(y))
        return log_q_fn(y)

    inverted = np.all(R.handedness(x, _CENTER) == -1, axis=1)
    drop = R.reweight(x, log_q_fn(x), energy, log_q_fn=counted, centers=_CENTER,
                      reference_signs=np.array([1]), clip_fraction=0.0, inverted="drop")
    assert calls == [] and drop.counts["mirrored"] == 0 and drop.extras["inverted"] == "drop"
    assert drop.extras["inverted_dropped"] == inverted.sum() > 10_000
    np.testing.assert_array_equal(drop.weights[inverted], 0.0)
    np.testing.assert_allclose(drop.log_q[~inverted], log_q_fn(x)[~inverted])
    y, w = drop.xyz.astype(np.float64), drop.weights
    np.testing.assert_array_equal(R.handedness(y[w > 0], _CENTER)[:, 0], 1)
    # E|y|^2 = 12 exactly under the target restricted to positive handedness (u(-x) = u(x))
    f = np.sum(y ** 2, axis=(1, 2))
    m = w @ f
    assert abs(m - 12.0) < 4 * np.sqrt(w ** 2 @ (f - m) ** 2)
    with pytest.raises(ValueError, match="inverted must be one of"):
        R.reweight(x[:4], log_q_fn(x[:4]), energy, centers=_CENTER,
                   reference_signs=np.array([1]), inverted="flip")


@pytest.mark.parametrize("sd, rule", [(1.2, "mirror"), (0.12, "drop")])
def test_auto_drops_inverted_samples_only_when_they_are_rare(sd, rule):
    x = _MU + sd * np.random.default_rng(12).normal(size=(20_000, 4, 3))
    inverted = np.all(R.handedness(x, _CENTER) == -1, axis=1)
    assert inverted.any() and (inverted.mean() >= R.AUTO_MIRROR_FROM) == (rule == "mirror")
    calls = []

    def log_q_fn(y):
        calls.append(len(y))
        return _gauss_log_density(y, _MU, sd)

    ens = R.reweight(x, log_q_fn(x), lambda y: np.zeros(len(y)), log_q_fn=log_q_fn,
                     centers=_CENTER, reference_signs=np.array([1]), inverted="auto")
    assert ens.extras["inverted"] == rule and (len(calls) > 1) == (rule == "mirror")
    assert (ens.counts["mirrored"] == inverted.sum()) == (rule == "mirror")


@pytest.mark.parametrize("clip", [0.0, 0.002])
def test_mirror_scoring_skips_only_what_cannot_matter(clip):
    """Mirror images are scored only where the weight can matter; the weights equal those of
    scoring every mirror image to float64 round-off (the proven bound: 2^-53 of the total)."""
    rng = np.random.default_rng(7)
    x = _MU + 1.2 * rng.normal(size=(20_000, 4, 3))
    log_q_fn = lambda y: _gauss_log_density(y, _MU, 1.2)  # noqa: E731
    calls = []

    def counted(y):
        calls.append(len(y))
        return log_q_fn(y)

    energy = lambda y: 2.0 * np.sum(np.asarray(y, np.float64) ** 2, axis=(1, 2))  # noqa: E731
    ref = np.array([1])
    fast = R.reweight(x, log_q_fn(x), energy, log_q_fn=counted, centers=_CENTER,
                      reference_signs=ref, clip_fraction=clip)
    skipped = fast.extras["mirror_skipped"]
    assert skipped > 1000 and sum(calls) == len(x) - skipped  # real savings on a wide spread
    # exact: every mirror image scored
    fixed, status = R.fix_chirality(x, _CENTER, ref)
    u = energy(fixed)
    log_q = np.logaddexp(log_q_fn(x), log_q_fn(-x))
    exact = R.ensemble_from_log_weights(fixed, log_q, u, R.log_weights(u, log_q), status, clip)
    assert fast.counts == exact.counts
    np.testing.assert_array_equal(np.isinf(fast.log_w), np.isinf(exact.log_w))  # same clipped set
    assert np.abs(fast.weights - exact.weights).sum() <= 2 * R.MIRROR_SKIP_BOUND + 1e-15
    assert fast.ess == pytest.approx(exact.ess, rel=1e-12)
    skipped_w = exact.weights[np.isnan(fast.extras["log_q_mirror"])]
    assert skipped_w.sum() <= R.MIRROR_SKIP_BOUND


# ------------------------------------------------------------------- chirality on real peptides


@pytest.fixture(scope="module")
def dipeptide():
    from arbg_core import peptide

    return peptide.build("A", "capped")


def test_chiral_centers_of_peptides(dipeptide):
    from arbg_core import peptide

    top = dipeptide.topology
    centers = R.chiral_centers(top)
    assert centers.shape == (1, 4)
    assert [top.atom(int(i)).name for i in centers[0]] == ["CA", "N", "C", "CB"]
    it = peptide.build("IT", "capped", minimize=False).topology
    names = [(it.atom(int(c[0])).residue.name, it.atom(int(c[0])).name)
             for c in R.chiral_centers(it)]
    assert names == [("ILE", "CA"), ("ILE", "CB"), ("THR", "CA"), ("THR", "CB")]
    gly = peptide.build("GG", "zwitterionic", minimize=False)
    centers = R.chiral_centers(gly.topology)
    assert centers.shape == (0, 4)
    xyz = np.stack([gly.xyz, -gly.xyz])
    fixed, status = R.fix_chirality(xyz, centers, R.handedness(gly.xyz, centers)[0])
    np.testing.assert_array_equal(status, [0, 0])
    np.testing.assert_array_equal(fixed, xyz)


def test_mirrored_dipeptide_is_fixed_with_identical_energy(dipeptide):
    from arbg_core.energy import EnergyModel

    centers = R.chiral_centers(dipeptide.topology)
    ref = R.handedness(dipeptide.xyz, centers)[0]
    xyz = np.stack([dipeptide.xyz, -dipeptide.xyz])  # (2, A, 3)
    assert np.all(R.handedness(xyz[1:], centers) == -ref)
    fixed, status = R.fix_chirality(xyz, centers, ref)
    np.testing.assert_array_equal(status, [R.KEPT, R.MIRRORED])
    np.testing.assert_array_equal(fixed[1], dipeptide.xyz)
    np.testing.assert_array_equal(R.handedness(fixed, centers), [ref, ref])
    u = EnergyModel(dipeptide.topology, platform="Reference").reduced_energy(xyz)
    assert np.isfinite(u).all()
    assert u[1] == pytest.approx(u[0], rel=1e-6, abs=1e-6)


def test_half_mirrored_dipeptide_is_dropped():
    from arbg_core import peptide
    from arbg_core.energy import EnergyModel

    aa = peptide.build("AA", "capped")
    top = aa.topology
    centers = R.chiral_centers(top)
    ref = R.handedness(aa.xyz, centers)[0]
    assert len(ref) == 2
    half = aa.xyz.copy()
    res = [r for r in top.residues if r.name == "ALA"][0]
    ha, cb = (next(a.index for a in res.atoms if a.name == n) for n in ("HA", "CB"))
    half[[ha, cb]] = half[[cb, ha]]  # swap HA and CB of the first Ala only
    signs = R.handedness(half, centers)[0]
    assert signs[0] == -ref[0] and signs[1] == ref[1]
    xyz = np.stack([aa.xyz, -aa.xyz, half, -half])
    fixed, status = R.fix_chirality(xyz, centers, ref)
    np.testing.assert_array_equal(status, [R.KEPT, R.MIRRORED, R.DROPPED, R.DROPPED])
    np.testing.assert_array_equal(fixed[2], half)  # dropped samples are left as they were
    em = EnergyModel(top, platform="Reference")
    ens = R.reweight(xyz, np.zeros(4), em.reduced_energy, centers=centers, reference_signs=ref,
                     clip_fraction=0.0)
    assert ens.counts == {"n": 4, "kept": 1, "mirrored": 1, "dropped": 2, "infinite_energy": 0,
                          "clipped": 0}
    assert np.all(ens.weights[2:] == 0.0) and np.isnan(ens.u[2:]).all()
    assert ens.weights[0] == pytest.approx(0.5, rel=1e-5)  # identical energies after the fix


def test_shared_constructor_for_smc_and_strict_json_summary():
    log_w = np.array([0.0, np.log(3.0), -np.inf])
    extras = {"resampled_at": [1, 3], "log_z": np.float64(-2.5), "per_sample": np.zeros(3),
              "ess_trace": [0.5, np.nan]}
    ens = R.ensemble_from_log_weights(np.zeros((3, 2, 3)), np.zeros(3),
                                      np.array([1.0, 2.0, np.inf]), log_w, clip_fraction=0.0,
                                      method="smc", extras=extras)
    np.testing.assert_allclose(ens.weights, [0.25, 0.75, 0.0])
    assert ens.ess == pytest.approx(1.0 / (0.25 ** 2 + 0.75 ** 2))
    assert ens.max_weight == pytest.approx(0.75)
    summary = json.loads(json.dumps(ens.summary(), allow_nan=False))
    assert summary["method"] == "smc" and summary["log_z"] == -2.5
    assert summary["resampled_at"] == [1, 3] and summary["ess_trace"] == [0.5, None]
    assert "per_sample" not in summary and summary["counts"]["infinite_energy"] == 1


def test_centers_and_reference_signs_go_together():
    with pytest.raises(ValueError, match="both centers and reference_signs"):
        R.reweight(np.zeros((2, 4, 3)), np.zeros(2), lambda y: np.zeros(len(y)), centers=_CENTER)
