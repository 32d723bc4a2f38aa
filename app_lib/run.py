"""A finished run as the pages see it (`AppRun`); the job that produces it is in jobs.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from arbg_core.pipeline import SampleResult

    from .compare import Comparison

STATUS_NAMES = {0: "kept", 1: "mirrored", 2: "dropped"}


def trajectory(topology, xyz: np.ndarray):
    """(n, A, 3) nm frames -> mdtraj Trajectory, non-finite coordinates set to 0 (a dropped or
    exploded sample must not break a view, an export or the angles of the others)."""
    import mdtraj as md

    return md.Trajectory(np.nan_to_num(np.asarray(xyz, np.float32)), topology)


@dataclass
class AppRun:
    """One finished run in one browser session; derived arrays are computed once, on demand."""

    result: SampleResult
    model_name: str
    settings: dict  # what the widgets said: sequence, termini, model, n, tau, seed, method
    prep_timings: dict  # seconds spent before sampling (peptide build, model load)
    label: str = ""  # what was sampled with what, e.g. "A-cap with ala2"
    wall_s: float = 0.0  # click to finished run
    threads: int = 0  # most torch threads the run used (they follow the cores free during it)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    comparison: Comparison | None = None  # set by the Compare page
    _memo: dict = field(default_factory=dict, repr=False)

    @property
    def done_text(self) -> str:
        return f"Sampled {self.result.config.n:,} conformations of {self.label} in {self.wall_s:.1f} s"

    @property
    def ensemble(self):
        return self.result.ensemble

    @property
    def topology(self):
        return self.result.peptide.topology

    @property
    def xyz(self) -> np.ndarray:
        """(n, A, 3) nm after the chirality fix (what the weights refer to)."""
        return self.ensemble.xyz if self.ensemble is not None else self.result.xyz

    @property
    def weights(self) -> np.ndarray:
        return self.ensemble.weights

    def angles(self) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(phi (n, R), psi (n, R) radians, residue indices) of every sample."""
        if "angles" not in self._memo:
            from arbg_core.metrics import ramachandran_angles

            self._memo["angles"] = ramachandran_angles(trajectory(self.topology, self.xyz))
        return self._memo["angles"]

    def angle_ensembles(self) -> dict:
        """What the Ramachandran plots take: label -> ((phi, psi), weights or None), for the
        samples as the model drew them (proposal) and with their Boltzmann weights (reweighted)."""
        phi, psi, _ = self.angles()
        return {"proposal": ((phi, psi), None), "reweighted": ((phi, psi), self.weights)}

    def energy_ensembles(self) -> dict:
        """What the energy plots take: label -> (u (kT), weights or None) of the samples with a
        finite energy, proposal and reweighted."""
        u, w = self.ensemble.u, self.weights
        live = np.isfinite(u)
        return {"proposal": (u[live], None), "reweighted": (u[live], w[live])}

    def residue_labels(self) -> list[str]:
        from arbg_core.metrics import ramachandran_labels

        return ramachandran_labels(self.topology, self.angles()[2])

    def top_indices(self, k: int) -> np.ndarray:
        """Indices of the k samples with the largest log weight (finite only), heaviest first.
        Ranked by log w, so samples whose normalized weight underflows to 0 still rank."""
        log_w = self.ensemble.log_w
        finite = np.flatnonzero(np.isfinite(log_w))
        return finite[np.argsort(-log_w[finite], kind="stable")][:k]

    def resampled(self, k: int, seed: int = 0) -> np.ndarray:
        """k indices drawn in proportion to the weights (systematic), i.e. an unweighted ensemble."""
        if not np.any(self.weights > 0):
            return np.zeros(0, np.int64)
        return self.ensemble.resample(k, seed=seed)

    def top_share(self, k: int) -> float:
        """Fraction of the total weight carried by the k heaviest samples."""
        return float(np.sort(self.weights)[::-1][:k].sum())

    def _dropped_meaning(self) -> str:
        n_inverted = self.ensemble.extras.get("inverted_dropped")
        if n_inverted is None:
            return "mixed chirality: weight 0"
        return (f"mixed chirality, or every center inverted ({n_inverted} here: under 1 % of the "
                "samples, so weight 0 instead of mirroring them; exact either way, and no mirror "
                "image needs scoring)")

    def summary_rows(self) -> list[dict]:
        """The numbers the Home page shows, each with what it means."""
        ens, r = self.ensemble, self.result
        c = ens.counts
        rows = [
            ("device", r.device, "where the model ran"),
            ("samples drawn", c["n"], "proposals from the model"),
            ("kept", c["kept"], "chirality as built"),
            ("mirrored", c["mirrored"], "every chiral center inverted: mirrored x -> -x (same energy)"),
            ("dropped", c["dropped"], self._dropped_meaning()),
            ("infinite energy", c["infinite_energy"], "exploded or overlapping atoms: weight 0"),
            ("clipped", c["clipped"], f"the {r.config.clip_fraction:.1%} largest log weights: "
             "weight set to zero (log w = -inf), so no single sample can dominate"),
            ("ESS", f"{ens.ess:.1f} ({ens.ess_fraction:.2%})",
             "effective sample size: worth this many independent Boltzmann samples"),
            ("largest weight", f"{ens.max_weight:.3g}", "normalized; near 1 means one sample dominates"),
            ("method", ens.method.upper(), "SNIS: importance sampling; SMC: twisted sequential Monte Carlo"),
        ]
        if "n_resamples" in ens.extras:
            rows.append(("SMC resampling steps", ens.extras["n_resamples"],
                         "times the particles were resampled between residues"))
        stages = {"sample": "drawing samples (model)",
                  "energy_and_reweight": "energies + weights (+ mirror scoring)"}
        times = {**self.prep_timings, **{stages.get(k, k): v for k, v in r.timings.items()}}
        rows += [(f"time: {k}", f"{v:.2f} s", "wall clock") for k, v in times.items()]
        if self.threads:
            rows.append(("model threads", self.threads, "most torch threads used: they follow the cores free"))
        return [{"quantity": q, "value": str(v), "meaning": m} for q, v, m in rows]
