"""Metrics against analytic answers: W2 of Gaussians, torus wrap-around, TICA on a synthetic
two-state process, our torsions vs an independent dihedral formula, Ramachandran histograms."""

import numpy as np
import pytest

from arbg_core import metrics as M

# ------------------------------------------------------------------------------------- E-W2


def test_e_w2_gaussians_match_analytic():
    rng = np.random.default_rng(0)
    m1, s1, m2, s2 = 1.0, 1.5, -0.5, 0.7
    a, b = rng.normal(m1, s1, 200_000), rng.normal(m2, s2, 200_000)
    assert M.e_w2(a, b) == pytest.approx(np.hypot(m1 - m2, s1 - s2), rel=0.01)


def test_e_w2_weights_and_non_finite():
    rng = np.random.default_rng(1)
    ref = rng.normal(1.0, 1.0, 100_000)
    x = rng.normal(0.0, 2.0, 100_000)  # proposal, weighted to N(1, 1)
    log_w = -0.5 * (x - 1.0) ** 2 + 0.5 * (x / 2.0) ** 2
    w = np.exp(log_w - log_w.max())
    assert M.e_w2(ref, x) > 0.9  # unweighted: sqrt(1 + 1)
    assert M.e_w2(ref, x, w_model=w) < 0.05
    # non-finite energies (and their weights) are left out
    assert M.e_w2(ref, np.append(x, np.inf), w_model=np.append(w, 1.0)) == pytest.approx(
        M.e_w2(ref, x, w_model=w), rel=1e-12)


def test_e_w2_equals_exact_ot_on_small_weighted_sets():
    import ot

    rng = np.random.default_rng(2)
    x, y = rng.normal(size=7), rng.normal(1.0, 2.0, size=11)
    wx, wy = rng.random(7), rng.random(11)
    wx, wy = wx / wx.sum(), wy / wy.sum()
    exact = np.sqrt(ot.emd2(wx, wy, (x[:, None] - y[None, :]) ** 2))
    assert M.e_w2(x, y, w_model=wy, w_ref=wx) == pytest.approx(exact, rel=1e-9)


# ------------------------------------------------------------------------------------- T-W2


def test_t_w2_wraps_around_the_torus():
    a, b = np.deg2rad([[-179.0]]), np.deg2rad([[179.0]])
    assert M.t_w2(a, b) == pytest.approx(np.deg2rad(2.0), rel=1e-9)
    a2, b2 = np.deg2rad([[-179.0, 10.0]]), np.deg2rad([[179.0, -20.0]])
    assert M.t_w2(a2, b2) == pytest.approx(np.deg2rad(np.hypot(2.0, 30.0)), rel=1e-9)


def test_t_w2_matches_brute_force_and_shift():
    rng = np.random.default_rng(3)
    x = rng.uniform(-np.pi, np.pi, (40, 2))
    # a rigid rotation of the torus moves every point by the same amount: W2 = |shift|
    shift = np.array([0.3, -0.2])
    y = (x + shift + np.pi) % (2 * np.pi) - np.pi
    assert M.t_w2(x, y) == pytest.approx(np.linalg.norm(shift), rel=1e-9)
    assert M.t_w2(x, x) == pytest.approx(0.0, abs=1e-12)
    # two points each: brute-force over both matchings
    p, q = x[:2], rng.uniform(-np.pi, np.pi, (2, 2))

    def c(u, v):
        d = np.abs(u - v) % (2 * np.pi)
        return np.sum(np.minimum(d, 2 * np.pi - d) ** 2)
    best = min(c(p[0], q[0]) + c(p[1], q[1]), c(p[0], q[1]) + c(p[1], q[0])) / 2
    assert M.t_w2(p, q) == pytest.approx(np.sqrt(best), rel=1e-9)


def test_t_w2_subsamples_with_a_seed():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(-np.pi, np.pi, (500, 2)), rng.uniform(-np.pi, np.pi, (400, 2))
    a = M.t_w2(x, y, max_points=100, seed=1)
    assert a == M.t_w2(x, y, max_points=100, seed=1)
    assert a != M.t_w2(x, y, max_points=100, seed=2)


# ------------------------------------------------------------------------------------- TICA


def _two_state_process(n=20_000, seed=5):
    rng = np.random.default_rng(seed)
    flips = rng.random(n) < 0.01  # hidden chain: leaves its state with probability 1% per step
    slow = np.where(np.cumsum(flips) % 2 == 0, -1.0, 1.0)  # (n,)
    raw = np.column_stack([slow + 0.3 * rng.normal(size=n), rng.normal(size=(n, 4))])
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))  # hide the slow axis by a random rotation
    return slow, raw @ q


def test_tica_recovers_slow_coordinate():
    slow, feats = _two_state_process()
    tic = M.fit_tica(feats, lag=10).transform(feats)
    assert tic.shape == (len(feats), 2)
    assert abs(np.corrcoef(tic[:, 0], slow)[0, 1]) > 0.9
    short = feats[:1500]  # below max_points: no subsampling, so the same set is at distance 0
    assert M.tica_w2(short, short, lag=10) == pytest.approx(0.0, abs=1e-9)
    # a model that populates one state only is far from the reference, further than the floor
    floor = M.noise_floor(M.tica_w2, feats, lag=10, max_points=1500)
    assert M.tica_w2(feats, feats[slow > 0], lag=10, max_points=1500) > 3 * floor


# ------------------------------------------------------------------------ torsions, features


@pytest.fixture(scope="module")
def aa_traj():
    import mdtraj as md

    from arbg_core import peptide

    pep = peptide.build("AA", "capped", minimize=False)
    xyz = pep.xyz + np.random.default_rng(6).normal(0, 0.02, (30, pep.n_atoms, 3))
    return md.Trajectory(xyz.astype(np.float32), pep.topology)


def _dihedral(p):  # (n, 4, 3) -> (n,) radians, the IUPAC convention
    b0, b1, b2 = p[:, 0] - p[:, 1], p[:, 2] - p[:, 1], p[:, 3] - p[:, 2]
    b1 = b1 / np.linalg.norm(b1, axis=1, keepdims=True)
    v = b0 - np.sum(b0 * b1, axis=1, keepdims=True) * b1
    w = b2 - np.sum(b2 * b1, axis=1, keepdims=True) * b1
    return np.arctan2(np.sum(np.cross(b1, v) * w, axis=1), np.sum(v * w, axis=1))


def test_torsions_match_an_independent_formula(aa_traj):
    top = aa_traj.topology
    res = list(top.residues)  # ACE, ALA, ALA, NME

    def idx(r, name):
        return next(a.index for a in res[r].atoms if a.name == name)
    phi_q = [[idx(r - 1, "C"), idx(r, "N"), idx(r, "CA"), idx(r, "C")] for r in (1, 2)]
    psi_q = [[idx(r, "N"), idx(r, "CA"), idx(r, "C"), idx(r + 1, "N")] for r in (1, 2)]
    xyz = aa_traj.xyz.astype(np.float64)
    phi, psi = M.backbone_torsions(aa_traj)
    assert phi.shape == psi.shape == (30, 2)
    for k in range(2):
        np.testing.assert_allclose(phi[:, k], _dihedral(xyz[:, phi_q[k]]), atol=1e-4)
        np.testing.assert_allclose(psi[:, k], _dihedral(xyz[:, psi_q[k]]), atol=1e-4)
    phi2, psi2, residues = M.ramachandran_angles(aa_traj)
    np.testing.assert_array_equal(phi2, phi)
    np.testing.assert_array_equal(psi2, psi)
    assert residues == [(1, 1), (2, 2)]
    assert M.ramachandran_labels(top, residues) == [str(r) for r in list(top.residues)[1:3]]


def test_zwitterionic_dipeptide_pairs_the_torsions_around_its_peptide_bond():
    import mdtraj as md

    from arbg_core import peptide

    pep = peptide.build("GS", "zwitterionic", minimize=False)
    xyz = pep.xyz + np.random.default_rng(7).normal(0, 0.02, (20, pep.n_atoms, 3))
    traj = md.Trajectory(xyz.astype(np.float32), pep.topology)
    res = list(pep.topology.residues)

    def idx(r, name):
        return next(a.index for a in res[r].atoms if a.name == name)

    phi, psi, pairs = M.ramachandran_angles(traj)  # no residue has both phi and psi
    assert pairs == [(1, 0)] and phi.shape == psi.shape == (20, 1)
    xyz = traj.xyz.astype(np.float64)
    np.testing.assert_allclose(phi[:, 0], _dihedral(xyz[:, [idx(0, "C"), idx(1, "N"), idx(1, "CA"), idx(1, "C")]]), atol=1e-4)
    np.testing.assert_allclose(psi[:, 0], _dihedral(xyz[:, [idx(0, "N"), idx(0, "CA"), idx(0, "C"), idx(1, "N")]]), atol=1e-4)
    assert M.ramachandran_labels(pep.topology, pairs) == ["φ SER2 / ψ GLY1"]


def test_tica_features_shape(aa_traj):
    feats = M.tica_features(aa_traj)
    # 12 backbone atoms (incl. ACE C, O and NME N, C) -> 66 distances; phi 2, psi 2, omega 1
    assert feats.shape == (30, 66 + 2 * 5)
    assert np.isfinite(feats).all()


# ------------------------------------------------------------------------------ Ramachandran


def test_ramachandran_histograms_and_free_energies():
    rng = np.random.default_rng(7)
    phi = rng.uniform(-np.pi, 0, (1000, 2))  # only negative phi is populated
    psi = rng.uniform(-np.pi, np.pi, (1000, 2))
    w = rng.random(1000)
    out = M.ramachandran(phi, psi, weights=w, bins=36)
    p, f = out["p"], out["free_energy"]
    assert p.shape == f.shape == (2, 36, 36) and out["edges"].shape == (37,)
    np.testing.assert_allclose(p.sum(axis=(1, 2)), 1.0)
    assert np.all(np.isinf(f[:, 18:, :]))  # phi > 0 never visited
    np.testing.assert_allclose(np.min(f, axis=(1, 2)), 0.0)
    top = np.unravel_index(np.argmax(p[0]), p[0].shape)
    assert f[0][top] == 0.0
    h, _, _ = np.histogram2d(phi[:, 1], psi[:, 1], bins=[out["edges"]] * 2, weights=w)
    np.testing.assert_allclose(p[1], h / h.sum())


# ----------------------------------------------------------------------- noise floor, report


def test_noise_floor_is_the_metric_between_halves():
    u = np.random.default_rng(8).normal(size=1001)
    assert M.noise_floor(M.e_w2, u) == M.e_w2(u[:500], u[500:1000])
    drift = u + np.linspace(0, 5, 1001)  # a non-stationary reference has a large floor
    assert M.noise_floor(M.e_w2, drift) > 10 * M.noise_floor(M.e_w2, u)


def test_evaluate_ensemble_of_the_reference_itself_is_zero(aa_traj):
    import mdtraj as md

    rng = np.random.default_rng(9)
    n = 120
    noise = np.zeros((n,) + aa_traj.xyz.shape[1:])
    for t in range(1, n):  # AR(1) noise so the reference has time correlation for TICA
        noise[t] = 0.9 * noise[t - 1] + 0.01 * rng.normal(size=noise.shape[1:])
    ref = md.Trajectory((aa_traj.xyz[0] + noise).astype(np.float32), aa_traj.topology)
    u_ref = rng.normal(size=n)
    out = M.evaluate_ensemble(ref, ref.xyz, ref.topology, u_ref, u_ref, np.full(n, 1.0 / n),
                              lag=2, n_points=n)
    assert out["tica_lag_frames"] == 2 and out["n_reference_frames"] == n
    for kind in ("proposal", "reweighted"):
        for metric in ("e_w2", "t_w2", "tica_w2"):
            assert out[kind][metric] == pytest.approx(0.0, abs=1e-6), (kind, metric)
    assert all(v > 0 for v in out["noise_floor"].values())
    # a reweighted ensemble that puts all weight on one frame is far from the reference
    w = np.zeros(n)
    w[0] = 1.0
    far = M.evaluate_ensemble(ref, ref.xyz, ref.topology, u_ref, u_ref, w, lag=2, n_points=n)
    assert far["reweighted"]["t_w2"] > far["noise_floor"]["t_w2"]
    assert far["proposal"]["t_w2"] == pytest.approx(0.0, abs=1e-6)


def test_integrated_autocorrelation_time_of_an_ar1_process():
    rng = np.random.default_rng(2)
    for a in (0.0, 0.5, 0.9):
        x = np.zeros(200_000)
        noise = rng.standard_normal(len(x))
        for t in range(1, len(x)):
            x[t] = a * x[t - 1] + noise[t]
        exact = (1 + a) / (2 * (1 - a))  # tau_int = 1/2 + sum_t a^t
        assert M.integrated_autocorrelation_time(x) == pytest.approx(exact, rel=0.1)
