"""`arbg evaluate`: a reweighted ensemble against reference MD -> report.json + figures.

The reference is a trajectory file (with its topology), an `arbg md` folder, or a prepared
dataset `.npz` (its test split). Metrics follow DESIGN §10 and the paper: E-W2, T-W2, TICA-W2 for
the proposal and the reweighted ensemble, each with its MD-vs-MD noise floor.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .energy import EnergyModel
from .files import write_json
from .metrics import evaluate_ensemble, ramachandran_angles, ramachandran_labels


def load_reference(path: str | Path, top: str | None = None, split: str = "test"):
    """An mdtraj Trajectory of reference frames, in time order: complete, finite and in the
    file's own atoms (check them against a system with `check_compatible`)."""
    import mdtraj as md

    from .data import FrameData, load_source
    from .trajectories import check_finite

    path = Path(path)
    if path.suffix == ".npz":
        fd = FrameData.load(path)
        xyz = getattr(fd, f"xyz_{split}")
        if len(xyz) == 0:
            raise ValueError(f"{path} has no {split} frames")
        check_finite(xyz, str(path))
        return md.Trajectory(xyz, fd.topology)
    trajs = load_source(path, top)
    if not trajs:
        raise ValueError(f"{path} holds no finished MD frames")
    return md.join(trajs, check_topology=True, discard_overlapping_frames=False) if len(trajs) > 1 else trajs[0]


MIN_REFERENCE_FRAMES = 4  # two halves (the noise floor) of at least two frames


def check_settings(n_frames: int, lag: int, n_eval: int) -> None:
    """ValueError unless an evaluation against `n_frames` reference frames can run: TICA needs
    a lag shorter than the reference, the noise floor two halves, W2 two points a side."""
    if n_frames < MIN_REFERENCE_FRAMES:
        raise ValueError(f"the reference has {n_frames} frames; an evaluation needs at least "
                         f"{MIN_REFERENCE_FRAMES}")
    if not 1 <= lag < n_frames:
        raise ValueError(f"the TICA lag must be 1 to {n_frames - 1} frames (shorter than the "
                         f"reference), got {lag}")
    if n_eval < 2:
        raise ValueError(f"the number of points compared (n-eval) must be at least 2, got {n_eval}")


def check_compatible(reference, topology) -> None:
    """Same atoms in the same order, or a ValueError that says what differs."""
    check_labels(atom_labels(reference.topology), atom_labels(topology))


def atom_labels(topology) -> list[tuple[str, str]]:
    """(residue name, atom name) of every atom, in order."""
    return [(a.residue.name, a.name) for a in topology.atoms]


def check_labels(ref_atoms: list, our_atoms: list) -> None:
    """check_compatible on atom_labels of the reference and of the sampled system."""
    if len(ref_atoms) != len(our_atoms):
        raise ValueError(f"atom count mismatch: the reference has {len(ref_atoms)} atoms, "
                         f"the sampled system {len(our_atoms)}")
    for i, (a, b) in enumerate(zip(ref_atoms, our_atoms)):
        if a[1] != b[1] or a[0][:2] != b[0][:2]:
            raise ValueError(f"atom order mismatch at atom {i + 1}: reference {a[0]} {a[1]}, "
                             f"sampled system {b[0]} {b[1]}")


def alpha_l(phi: np.ndarray) -> np.ndarray:
    """phi (n,) rad -> bool: inside the alphaL / C7ax basin, 0 < phi < 120 deg (DESIGN §4)."""
    return (phi > 0) & (phi < np.radians(120))


def alpha_l_entries(phi: np.ndarray) -> int:
    """phi (n,) rad of a time series -> how often it entered the alphaL / C7ax basin."""
    return int(np.sum(np.diff(alpha_l(phi).astype(int)) == 1))


def phi_basin_population(phi: np.ndarray, weights: np.ndarray | None = None,
                         n_blocks: int | None = None) -> dict:
    """Weight of the alphaL / C7ax basin (0 < phi < 120 deg) of the first residue, with an error.

    Weighted samples: the error uses the Kish effective sample size. A time series (MD frames,
    `n_blocks` given, weighted or not): the error is at least the spread of the block estimates,
    so correlated frames are not counted as independent. p(1-p) is floored at 1/n so an empty
    basin still shows a resolution.
    """
    phi = np.asarray(phi)[:, 0]
    w = np.ones(len(phi)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    inside = alpha_l(phi)
    p = float(np.sum(w[inside]))
    n_eff = 1.0 / np.sum(w ** 2)
    err = float(np.sqrt(max(p * (1 - p), 1.0 / n_eff) / n_eff))
    blocked = bool(n_blocks) and len(phi) >= 2 * n_blocks
    if blocked:
        means = [np.sum(wb[ib]) / np.sum(wb) for wb, ib in
                 zip(np.array_split(w, n_blocks), np.array_split(inside, n_blocks)) if np.sum(wb) > 0]
        err = max(err, float(np.std(means, ddof=1) / np.sqrt(len(means))))
    return {"p_alpha_l": p, "stderr": err, "n_effective": float(n_eff),
            "n_blocks": n_blocks if blocked else None}


def temperature_weights(u: np.ndarray, t_run_k: float, t_target_k: float) -> np.ndarray:
    """Normalized weights that take MD frames at `t_run_k` to the Boltzmann distribution at
    `t_target_k`; u (n,) is the reduced energy U/kT at the target temperature."""
    log_w = -(1.0 - t_target_k / t_run_k) * np.asarray(u, np.float64)
    w = np.exp(log_w - np.max(log_w))
    return w / w.sum()


@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` measured: the report (report.json) and the reference arrays behind it, so
    a caller that plots the reference next to the samples need not recompute them."""

    report: dict  # metrics, phi_positive_basin, sampling, reference, tica_lag_frames, timings_s
    u_ref: np.ndarray  # (n_frames,) reduced energy U/kT of every reference frame
    phi_ref: np.ndarray  # (n_frames, R) radians, the `ramachandran_angles` pairs
    psi_ref: np.ndarray  # (n_frames, R) radians


def evaluate(result, reference, out_dir: str | Path | None = None, lag: int = 10,
             n_eval: int = 10_000, seed: int = 0, energy_model: EnergyModel | None = None) -> Evaluation:
    """Metrics of a `pipeline.SampleResult` (reweighted) against a reference Trajectory; with
    `out_dir`, also report.json and the figures there."""
    pep, ens = result.peptide, result.ensemble
    if ens is None:
        raise ValueError("evaluation needs a reweighted ensemble (run without --no-reweight)")
    check_compatible(reference, pep.topology)
    check_settings(reference.n_frames, lag, n_eval)
    t0 = time.perf_counter()
    em = energy_model or EnergyModel(pep.topology, result.preset)
    u_ref = em.reduced_energy(reference.xyz)
    metrics = evaluate_ensemble(reference, ens.xyz, pep.topology, u_ref, ens.u, ens.weights, lag,
                                n_points=n_eval, seed=seed)
    phi_ref, psi_ref, _ = ramachandran_angles(reference)
    phi_ens, psi_ens, pairs = ramachandran_angles(_traj(ens.xyz, pep.topology))
    basins = {"reference": phi_basin_population(phi_ref, n_blocks=10),
              "proposal": phi_basin_population(phi_ens),
              "reweighted": phi_basin_population(phi_ens, ens.weights)}
    report = {"metrics": metrics, "phi_positive_basin": basins, "sampling": result.summary(),
              "reference": {"n_frames": int(reference.n_frames),
                            # entries into the alphaL basin: how often the reference crossed
                            "alpha_l_entries": alpha_l_entries(phi_ref[:, 0])},
              "tica_lag_frames": lag, "timings_s": {"evaluate": time.perf_counter() - t0}}
    evaluation = Evaluation(report, u_ref, phi_ref, psi_ref)
    if out_dir is not None:
        write_report(evaluation, out_dir, pep, ens, (phi_ens, psi_ens), pairs)
    return evaluation


def _traj(xyz, topology):
    import mdtraj as md

    return md.Trajectory(np.asarray(xyz, np.float32), topology)


REPORT_BYTES = 16 * 2**20  # about what write_report needs on disk (two self-contained HTML plots)


def write_report(evaluation: Evaluation, out_dir, pep, ens, ens_angles, pairs) -> None:
    """report.json, the Ramachandran and energy figures (HTML and PNG) of one evaluation, into
    `out_dir` (the CLI writes into a `files.output_folder`, which puts the folder in place whole)."""
    from . import plots

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", evaluation.report)
    labels = ramachandran_labels(pep.topology, pairs)
    live = np.isfinite(ens.u)
    rama = {"proposal": (ens_angles, None), "reweighted": (ens_angles, ens.weights),
            "reference": ((evaluation.phi_ref, evaluation.psi_ref), None)}
    energy = {"proposal": (ens.u[live], None), "reweighted": (ens.u[live], ens.weights[live]),
              "reference": (evaluation.u_ref, None)}
    plots.ramachandran_figure(rama, labels).write_html(out / "ramachandran.html", include_plotlyjs=True)
    plots.energy_figure(energy).write_html(out / "energy.html", include_plotlyjs=True)
    plots.save_png_ramachandran(out / "ramachandran.png", rama, labels)
    plots.save_png_energy(out / "energy.png", energy)
