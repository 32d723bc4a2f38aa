"""What `arbg ship` measures, shared by per-system and transferable models: tau tuning on
validation MD, the evaluation of a tuned model on test MD, and the cache that lets a rerun skip
finished work; and where the validation and test frames come from (the time blocks of a
per-system run, the roles of a corpus).

Tuning: for each tau, `n` proposals per validation system (seed + 1, so they are not the test
draws), reweighted; the score is the mean over systems of the reweighted E-W2 against that
system's validation frames. The best tau has the lowest score (the first one on a tie).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .files import read_json, write_json

METRICS = ("e_w2", "t_w2", "tica_w2")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def weights_hash(checkpoint_dir: str | Path) -> str:
    """sha256 of a checkpoint's weights: what every cached result depends on."""
    return hashlib.sha256((Path(checkpoint_dir) / "model.safetensors").read_bytes()).hexdigest()


def cached(path: Path, key: dict, compute: Callable[[], Any]) -> Any:
    """compute() once for this key: its result is kept in `path` next to the key, so a rerun
    (after a crash, or to add sequences whose MD has finished since) skips finished work."""
    if path.is_file():
        saved = read_json(path)
        if saved.get("key") == key:
            return saved["value"]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"key": key, "value": value})
    return read_json(path)["value"]  # what a rerun reads back: the same figures either way


@dataclass(frozen=True)
class Target:
    """One system to sample and compare with MD: its peptide, energy model and frames."""
    name: str  # the sequence
    peptide: Any  # peptide.Peptide
    energy: Any  # energy.EnergyModel of the model's preset
    reference: Any  # mdtraj.Trajectory of the MD frames
    u_ref: np.ndarray | None = None  # (n_frames,) kT; computed on first use if None

    def reduced_energy(self) -> np.ndarray:
        if self.u_ref is not None:
            return self.u_ref
        return self.energy.reduced_energy(self.reference.xyz)


def _sample(loaded, target: Target, n: int, tau: float, seed: int, batch_size: int,
            progress=None):
    from .pipeline import SampleConfig, run_sampling

    cfg = SampleConfig(n=n, tau=tau, seed=seed, batch_size=batch_size)
    return run_sampling(loaded, target.peptide, cfg, energy_model=target.energy,
                        progress=progress)


def tau_score(loaded, val: list[Target], tau: float, n: int, seed: int, batch_size: int,
              progress=None) -> dict:
    """One tuning row: the mean reweighted E-W2 and ESS fraction over the validation systems.
    progress(stage, done, total) as `pipeline.run_sampling` reports it."""
    from .metrics import e_w2

    scores, ess = [], []
    for target in val:
        ens = _sample(loaded, target, n, tau, seed + 1, batch_size, progress).ensemble
        live = np.isfinite(ens.u) & (ens.weights > 0)
        scores.append(e_w2(target.reduced_energy(), ens.u[live], w_model=ens.weights[live]))
        ess.append(ens.ess_fraction)
    return {"tau": tau, "mean_reweighted_e_w2_val": float(np.mean(scores)),
            "mean_ess_fraction_val": float(np.mean(ess)),
            "per_sequence_e_w2": dict(zip([t.name for t in val], map(float, scores)))}


def tune_tau(loaded, val: list[Target], taus: list[float], n: int, seed: int, batch_size: int,
             cache_dir: Path, weights: str, progress=None) -> list[dict]:
    """A `tau_score` row per tau, each cached in cache_dir/tau_TAU.json; progress(stage, done,
    total) while a row is computed."""
    rows = []
    for tau in taus:
        key = {"weights": weights, "tau": tau, "n": n, "seed": seed, "val": [t.name for t in val]}
        rows.append(cached(cache_dir / f"tau_{tau}.json", key,
                           lambda: tau_score(loaded, val, tau, n, seed, batch_size, progress)))
        log(f"tau {tau}: mean val E-W2 {rows[-1]['mean_reweighted_e_w2_val']:.3f}, "
            f"mean ESS {100 * rows[-1]['mean_ess_fraction_val']:.2f}%")
    return rows


def best_tau(rows: list[dict], score: str = "mean_reweighted_e_w2_val") -> float:
    return min(rows, key=lambda r: r[score])["tau"]


@dataclass(frozen=True)
class Evaluation:
    report: dict  # report.json of `report.evaluate`
    sample_s: float  # wall time of sampling and reweighting
    total_s: float  # sampling and evaluation


def evaluate_target(loaded, target: Target, tau: float, n: int, n_eval: int, lag: int, seed: int,
                    batch_size: int, out_dir: Path, progress=None) -> Evaluation:
    """`n` proposals at `tau` (seed `seed`), reweighted and compared with the target's frames, as
    `arbg evaluate` does; report.json and figures in out_dir. progress: as `tau_score`'s."""
    from .report import evaluate

    t0 = time.perf_counter()
    result = _sample(loaded, target, n, tau, seed, batch_size, progress)
    sample_s = time.perf_counter() - t0
    report = evaluate(result, target.reference, out_dir, lag=lag, n_eval=n_eval, seed=seed,
                      energy_model=target.energy).report
    return Evaluation(report, sample_s, time.perf_counter() - t0)


def evaluation_row(target: Target, ev: Evaluation) -> dict:
    """A card's per-sequence row: every metric of proposal and reweighted ensemble, the MD noise
    floors, the ESS and the chirality fractions."""
    m, s = ev.report["metrics"], ev.report["sampling"]
    return {"sequence": target.name,
            **{f"{ens}_{k}": m[ens][k] for ens in ("proposal", "reweighted") for k in METRICS},
            **{f"noise_floor_{k}": m["noise_floor"][k] for k in METRICS},
            "ess_fraction": s["ess_fraction"],
            # samples with mixed chirality centers (weight 0) and all-inverted ones (mirrored)
            **{f"{k}_fraction": s["counts"][k] / s["counts"]["n"] for k in ("dropped", "mirrored")},
            "reference_frames": int(target.reference.n_frames),
            "sampling_s": ev.total_s}


def mean_table(rows: list[dict]) -> dict:
    """Mean (and standard deviation) over sequences of every metric of the per-sequence rows."""
    out = {}
    for key in rows[0]:
        if key == "sequence":
            continue
        vals = np.array([r[key] for r in rows], float)
        out[key] = {"mean": float(np.mean(vals)), "std": float(np.std(vals))}
    return out


# --- where the validation and test frames come from ---------------------------------------------

def validation_start(train_frames: int, val_frames: int | None = None) -> int:
    """First frame of each replica's validation block: the last `val_frames` of its first
    `train_frames`; by default where `arbg train --split 0.9,0.1,0` on those frames starts it."""
    from .data import time_block_split

    start = (time_block_split(train_frames, (0.9, 0.1, 0.0))[1].start if val_frames is None
             else train_frames - val_frames)
    if start < 0:
        raise ValueError(f"--val-frames {val_frames} is more than --train-frames {train_frames}")
    return start


def split_replicas(replicas, train_frames: int, val_frames: int | None = None,
                   need_test: bool = True):
    """Per replica: validation = frames validation_start.. of its first `train_frames`, test =
    the rest (the frames training never saw; None without `need_test`)."""
    import mdtraj as md

    n_val0 = validation_start(train_frames, val_frames)
    test = ([r[train_frames:] for r in replicas if r.n_frames > train_frames]
            if need_test else [])
    if need_test and not test:
        raise ValueError(f"no replica of the MD run has more than {train_frames} frames: "
                         "nothing to test on")
    val = md.join([r[n_val0:train_frames] for r in replicas], check_topology=True,
                  discard_overlapping_frames=False)
    return val, (md.join(test, check_topology=True, discard_overlapping_frames=False)
                 if test else None)


def reference_test(path: str, topology):
    """The test frames of a reference .npz (`arbg evaluate --reference`), checked to be the
    atoms of `topology` in its order."""
    from .report import check_compatible, load_reference

    traj = load_reference(path)
    check_compatible(traj, topology)
    return traj


@dataclass(frozen=True)
class MDCorpus:
    """An `arbg md --sequences` folder: its manifest and which sequences' MD has finished."""
    root: Path
    manifest: dict

    @classmethod
    def open(cls, root: str | Path) -> "MDCorpus":
        root = Path(root)
        return cls(root, read_json(root / "manifest.json"))

    @property
    def termini(self) -> str:
        return self.manifest["termini"]

    def listed(self, role: str) -> list[str]:
        roles = self.manifest.get("roles") or {}
        return [s for s in self.manifest["sequences"] if roles.get(s, "train") == role]

    def finished(self, seq: str) -> bool:
        """Whether a sequence's MD ran its whole length (a shard may still be running it)."""
        from .md import MDConfig

        state = self.root / seq / "state.json"
        return state.is_file() and (read_json(state)["frames_done"]
                                    >= MDConfig(**self.manifest["config"]).n_frames)

    def by_role(self) -> dict[str, list[str]]:
        """{role: [sequence]} of the finished runs; raises on a reserved sequence."""
        from .data import RESERVED

        roles = self.manifest.get("roles") or {}
        out = {"train": [], "val": [], "test": []}
        for seq in self.manifest["sequences"]:
            if seq.upper() in RESERVED:
                raise ValueError(f"{self.root} holds the reserved sequence {seq}: it is for "
                                 "external evaluation only")
            if self.finished(seq):
                out.setdefault(roles.get(seq, "train"), []).append(seq)
        return out
