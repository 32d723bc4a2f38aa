"""The body frame (frames.py): exact geometry and an exactly normalized density."""

import math

import numpy as np
import pytest
import torch

from arbg_core import frames


def test_canonicalize_then_rebuild_round_trips(ala2):
    rng = np.random.default_rng(0)
    frame = frames.frame_atoms(ala2.features)
    xyz = ala2.xyz[None] + rng.normal(0, 0.02, (16, ala2.n_atoms, 3))
    xyz = xyz + rng.normal(0, 1.0, (16, 1, 3))  # anywhere in space
    c, R = frames.canonicalize(xyz, frame)
    a, b, cc = frame
    assert torch.allclose(c[:, a], torch.zeros(16, 3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(c[:, b, 1:], torch.zeros(16, 2, dtype=torch.float64), atol=1e-12)
    assert (c[:, b, 0] > 0).all() and (c[:, cc, 1] > 0).all()
    assert torch.allclose(c[:, cc, 2], torch.zeros(16, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.det(R), torch.ones(16, dtype=torch.float64))  # proper rotations
    back = frames.rebuild(c, R).numpy() + xyz[:, a:a + 1]
    assert np.abs(back - xyz).max() < 1e-6  # nm
    # the frame coordinates do not depend on where or how the molecule is placed
    c2, _ = frames.canonicalize(frames.rebuild(c, frames.random_rotations(16)).numpy() + 3.0, frame)
    assert torch.allclose(c2, c, atol=1e-9)


def test_frame_atoms_for_every_kind_of_first_residue():
    import mdtraj as md

    from arbg_core import peptide

    for seq, termini, names in (("A", "capped", ("CH3", "C", "O")), ("GA", "zwitterionic", None),
                                ("PG", "zwitterionic", None), ("G", "capped", ("CH3", "C", "O"))):
        pep = peptide.build(seq, termini, minimize=False)
        idx = frames.frame_atoms(pep.features)
        first = next(iter(pep.topology.residues))
        assert [pep.topology.atom(i).residue for i in idx] == [first] * 3
        assert tuple(pep.topology.atom(i).name for i in idx) == (names or ("N", "CA", "C"))
        bonded = {frozenset((x.index, y.index)) for x, y in pep.topology.bonds}
        assert frozenset(idx[:2]) in bonded and frozenset(idx[1:]) in bonded  # a-b-c chain
        atom, axis = frames.token_atoms_and_axes(pep.n_atoms, idx)
        assert len(atom) == 3 * pep.n_atoms - 6
        assert (atom[:3] == [idx[1], idx[2], idx[2]]).all() and (axis[:3] == [0, 0, 1]).all()
        assert isinstance(pep.topology, md.Topology)


def _log_q_frame(c):
    """A toy q_frame on (b_x, c_x, c_y) of a 3-atom molecule: r and rho log-normal, c_x normal."""
    r, cx, rho = c[:, 1, 0], c[:, 2, 0], c[:, 2, 1]

    def log_lognormal(v, mu, s):
        return -((torch.log(v) - mu) ** 2) / (2 * s * s) - torch.log(v * s * math.sqrt(2 * math.pi))

    log_normal = -((cx + 0.05) ** 2) / (2 * 0.05 ** 2) - math.log(0.05 * math.sqrt(2 * math.pi))
    return log_lognormal(r, math.log(0.15), 0.15) + log_normal + log_lognormal(rho, math.log(0.13), 0.15)


def test_body_frame_density_integrates_to_one():
    """q(x) = q_frame(c) r^-2 rho^-1 / (8 pi^2) is a density on R^6 (atom a at the origin):
    its integral, estimated by importance sampling from a broad Gaussian, is 1."""
    g = torch.Generator().manual_seed(0)
    n, s = 400_000, 0.12
    x = torch.zeros(n, 3, 3, dtype=torch.float64)
    x[:, 1:] = torch.randn(n, 2, 3, generator=g, dtype=torch.float64) * s
    log_p = (-(x[:, 1:] ** 2).sum((1, 2)) / (2 * s * s) - 6 * math.log(s * math.sqrt(2 * math.pi)))
    c, _ = frames.canonicalize(x, (0, 1, 2))
    log_q = _log_q_frame(c) + frames.log_jacobian(c, (0, 1, 2))
    ratio = torch.exp(log_q - log_p)
    mean, err = float(ratio.mean()), float(ratio.std() / math.sqrt(n))
    assert err < 0.02
    assert abs(mean - 1.0) < 4 * err, (mean, err)


def test_haar_rotations_are_uniform():
    R = frames.random_rotations(200_000, torch.Generator().manual_seed(1))
    assert torch.allclose(torch.det(R), torch.ones(len(R), dtype=torch.float64))
    assert torch.allclose(R.transpose(1, 2) @ R, torch.eye(3, dtype=torch.float64).expand_as(R),
                          atol=1e-12)
    assert R.mean(0).abs().max() < 0.01  # E[R] = 0 for Haar
    v = R[:, :, 0]  # a rotated unit vector is uniform on the sphere
    assert torch.allclose(v.T @ v / len(v), torch.eye(3, dtype=torch.float64) / 3, atol=0.01)


def test_degenerate_frames_have_zero_density():
    c = torch.zeros(2, 3, 3, dtype=torch.float64)
    c[0, 1, 0], c[0, 2] = 0.15, torch.tensor([0.1, 0.0, 0.0])  # c on the a-b axis: rho = 0
    c[1, 1, 0], c[1, 2] = 0.15, torch.tensor([0.1, 0.1, 0.0])
    lj = frames.log_jacobian(c, (0, 1, 2))
    assert lj[0] == -math.inf and torch.isfinite(lj[1])
    with pytest.raises(ValueError, match="three distinct"):
        frames.token_atoms_and_axes(3, (0, 0, 1))


@pytest.mark.parametrize("name", ["centered", "body"])
def test_frame_values_and_positions_invert_each_other(ala2, name):
    frame = frames.get_frame(name)
    atom, axis = frame.tokens(ala2.features)
    T = 3 * ala2.n_atoms - (6 if name == "body" else 0)
    assert len(atom) == len(axis) == T
    assert sorted(set(zip(atom.tolist(), axis.tolist()))) == sorted(zip(atom.tolist(), axis.tolist()))
    rng = np.random.default_rng(2)
    xyz = ala2.xyz[None] + rng.normal(0, 0.01, (8, ala2.n_atoms, 3))
    values, lj = frame.values(xyz, ala2.features)
    assert values.shape == (8, T) and lj.shape == (8,) and torch.isfinite(lj).all()
    again, lj2 = frame.positions(values, ala2.features, torch.Generator().manual_seed(0))
    v2, lj3 = frame.values(again, ala2.features)
    assert torch.allclose(v2, values, atol=1e-9) and torch.allclose(lj, lj2) and torch.allclose(lj, lj3)
    # the same conformation: all pairwise distances agree
    d = lambda x: torch.cdist(torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(x, dtype=torch.float64))  # noqa: E731
    assert torch.allclose(d(again), d(xyz), atol=1e-9)
    if name == "body":  # rotations are drawn, and the first frame atom sits at the origin
        a = frames.frame_atoms(ala2.features)[0]
        assert torch.allclose(again[:, a], torch.zeros(8, 3, dtype=torch.float64), atol=1e-12)
    with pytest.raises(ValueError, match="unknown frame"):
        frames.get_frame("polar")
