"""A run against reference MD: the Compare page's comparison (`Comparison`, kept on the run) and
the reference every plot page overlays (`Overlay`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import state
from .run import AppRun

if TYPE_CHECKING:
    from arbg_core.report import Evaluation


@dataclass(frozen=True)
class Overlay:
    """A reference drawn next to the samples."""

    label: str  # legend entry and panel title, e.g. "reference (shipped MD)"
    angles: tuple[np.ndarray, np.ndarray]  # (phi, psi), each (n_frames, R) radians
    u: np.ndarray | None  # (n_frames,) reduced energies U/kT; None when not asked for


@dataclass(frozen=True)
class Comparison:
    """One `report.evaluate` of a run against reference MD (shipped or uploaded)."""

    source: str  # what the reference is, for labels: "shipped MD" or "your MD"
    evaluation: Evaluation

    @property
    def metrics(self) -> dict:
        """E-W2 / T-W2 / TICA-W2 of proposal, reweighted and noise floor, with their settings."""
        return self.evaluation.report["metrics"]

    @property
    def n_frames(self) -> int:
        return self.evaluation.report["reference"]["n_frames"]

    def overlay(self) -> Overlay:
        ev = self.evaluation
        return Overlay(f"reference ({self.source})", (ev.phi_ref, ev.psi_ref), ev.u_ref)


def compare(run: AppRun, reference, source: str, lag: int, n_eval: int) -> Comparison:
    """report.evaluate against a reference Trajectory (already checked); kept on the run. The
    energy model (an OpenMM context) is made for this call only."""
    from arbg_core.report import evaluate

    evaluation = evaluate(run.result, reference, lag=lag, n_eval=n_eval, seed=run.result.config.seed)
    run.comparison = Comparison(source, evaluation)
    return run.comparison


def reference_for_plots(run: AppRun, energies: bool = False) -> Overlay | None:
    """The reference the plots overlay: the last comparison of this run, else the model's shipped
    reference (its energies only when `energies`), else None."""
    if run.comparison is not None:
        return run.comparison.overlay()
    system = run.result.peptide.name
    found = state.reference_angles(run.model_name, system, run.topology)  # cached
    if found is None:
        return None  # none shipped, or a transferable model's reference of another system
    (phi, psi), _ = found
    u = state.shipped_reference_energies(run.model_name, system, run.result.preset) if energies else None
    return Overlay("reference (shipped MD)", (phi, psi), u)
