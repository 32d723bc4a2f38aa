"""A finished run as the pages see it (`AppRun`) and the background sampling job (`Job`).

Sampling runs in a thread owned by one browser session, so a page switch or a widget change
(both rerun the script) never kills it; the script only polls `Job.snapshot()`. The job never
touches streamlit: the pipeline's progress callback writes into a plain dict under a lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field

import numpy as np

from arbg_core.pipeline import SampleConfig, SampleResult, run_sampling

STATUS_NAMES = {0: "kept", 1: "mirrored", 2: "dropped"}
STAGE_TEXT = {"sample": "Drawing samples from the model", "mirror": "Scoring mirror images (exact density)",
              "energy": "Force-field energies (OpenMM)", "reweight": "Reweighting",
              "smc": "Twisted SMC, residue by residue (model + partial energies)"}


@dataclass
class AppRun:
    """One finished run in one browser session; derived arrays are computed once, on demand."""

    result: SampleResult
    model_name: str
    settings: dict  # what the widgets said: sequence, termini, model, n, tau, seed, method
    prep_timings: dict  # seconds spent before sampling (peptide build, model load)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    comparison: dict | None = None  # set by the Compare page
    _memo: dict = field(default_factory=dict, repr=False)

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
            import mdtraj as md

            from arbg_core.metrics import ramachandran_angles

            traj = md.Trajectory(np.nan_to_num(self.xyz).astype(np.float32), self.topology)
            self._memo["angles"] = ramachandran_angles(traj)
        return self._memo["angles"]

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

    def summary_rows(self) -> list[dict]:
        """The numbers the Home page shows, each with what it means."""
        ens, r = self.ensemble, self.result
        c = ens.counts
        rows = [
            ("device", r.device, "where the model ran"),
            ("samples drawn", c["n"], "proposals from the model"),
            ("kept", c["kept"], "chirality as built"),
            ("mirrored", c["mirrored"], "every chiral center inverted: mirrored x -> -x (same energy)"),
            ("dropped", c["dropped"], "mixed chirality: weight 0"),
            ("infinite energy", c["infinite_energy"], "exploded or overlapping atoms: weight 0"),
            ("clipped", c["clipped"], f"largest {r.config.clip_fraction:.1%} of log weights set to 0"),
            ("ESS", f"{ens.ess:.1f} ({ens.ess_fraction:.2%})",
             "effective sample size: worth this many independent Boltzmann samples"),
            ("largest weight", f"{ens.max_weight:.3g}", "normalized; near 1 means one sample dominates"),
            ("method", ens.method.upper(), "SNIS: importance sampling; SMC: twisted sequential Monte Carlo"),
        ]
        if "n_resamples" in ens.extras:
            rows.append(("SMC resampling steps", ens.extras["n_resamples"],
                         "times the particles were resampled between residues"))
        stages = {"sample": "drawing samples (model)",
                  "energy_and_reweight": "mirror scoring + energies + weights"}
        times = {**self.prep_timings, **{stages.get(k, k): v for k, v in r.timings.items()}}
        rows += [(f"time: {k}", f"{v:.2f} s", "wall clock") for k, v in times.items()]
        return [{"quantity": q, "value": str(v), "meaning": m} for q, v, m in rows]


class Job:
    """`run_sampling` in a daemon thread; `snapshot()` is safe to call from the script thread."""

    def __init__(self, loaded, pep, cfg: SampleConfig, label: str):
        self.label = label
        self.cfg = cfg
        self.meta: dict = {}  # model_name, settings, prep_timings: what AppRun needs besides the result
        self.result: SampleResult | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._progress = {"stage": "sample", "done": 0, "total": cfg.n, "since": self.started}
        self._thread = threading.Thread(target=self._work, args=(loaded, pep), daemon=True,
                                        name=f"arbg-sample-{label}")

    def start(self) -> "Job":
        self._thread.start()
        return self

    def _report(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            p = self._progress
            if self.cfg.method == "smc" and stage in ("sample", "energy"):
                stage = "smc"  # blocks alternate generation and partial energies: one stage
            elif stage == "sample" and done >= total:
                stage, done, total = "mirror", 0, 1  # next comes the teacher-forced mirror pass
            if stage != p["stage"]:
                p.update(stage=stage, since=time.monotonic())
            p.update(done=done, total=total)

    def _work(self, loaded, pep) -> None:
        try:
            self.result = run_sampling(loaded, pep, self.cfg, progress=self._report)
        except BaseException as e:  # noqa: BLE001  (shown to the user, never re-raised in a thread)
            self.error = e

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, seconds: float) -> None:
        self._thread.join(seconds)

    def snapshot(self) -> dict:
        """stage, done, total, fraction, eta_s (None until measurable), elapsed_s, text."""
        with self._lock:
            p = dict(self._progress)
        now = time.monotonic()
        frac = p["done"] / p["total"] if p["total"] else 0.0
        stage_s = now - p["since"]
        eta = stage_s * (1 - frac) / frac if 0 < frac < 1 else None
        text = f"{STAGE_TEXT.get(p['stage'], p['stage'])}"
        if p["stage"] in ("sample", "energy", "smc"):
            text += f": {p['done']:,} / {p['total']:,}"
        text += f" — ETA {eta:.0f} s" if eta is not None else ""
        return {**p, "fraction": min(max(frac, 0.0), 1.0), "eta_s": eta,
                "elapsed_s": now - self.started, "text": text}
