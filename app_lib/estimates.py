"""How long building a model for a new sequence takes, from rates measured in this project.

MD: `arbg bench energy` (results/energy.json), ns/day of the default preset on one core for
peptides of 22, 63 and 138 atoms, interpolated in log-log by atom count. Training: tokens/s that
the shipped model cards record (`training.tokens_per_s`, by device). The token count of a
training run is steps x batch x 3 atoms (TrainConfig defaults, as `arbg train` runs without flags).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from arbg_core.energy import DEFAULT_PRESET
from arbg_core.train import TrainConfig

from .paths import REPO

# Atoms (hydrogens included) of each residue inside a chain, as the builder makes them at pH 7.
RESIDUE_ATOMS = {"A": 10, "R": 24, "N": 14, "D": 12, "C": 11, "Q": 17, "E": 15, "G": 7, "H": 17,
                 "I": 19, "L": 19, "K": 22, "M": 17, "F": 20, "P": 14, "S": 11, "T": 14, "W": 24,
                 "Y": 21, "V": 16}
TERMINI_ATOMS = {"zwitterionic": 3, "capped": 12}  # NH3+ / COO- adds 2 H and OXT; ACE + NME


def n_atoms(sequence: str, termini: str) -> int:
    return sum(RESIDUE_ATOMS[c] for c in sequence) + TERMINI_ATOMS[termini]


@dataclass(frozen=True)
class BuildTime:
    """Hours of each step of the recipe; None where no rate was measured."""

    atoms: int
    md_h: float | None  # this machine, replicas spread over its cores
    train_cpu_h: float | None
    train_gpu_h: float | None

    def text(self) -> str:
        def h(x):
            return "not measured" if x is None else f"{x / 24:.1f} days" if x > 48 else (
                f"{x:.1f} h" if x >= 1 else f"{x * 60:.0f} min")

        return (f"Estimated for {self.atoms} atoms from rates measured here: reference MD "
                f"{h(self.md_h)} on this machine's {os.cpu_count()} cores (OpenMM on a GPU is "
                f"faster; not measured here); training {h(self.train_cpu_h)} on this CPU, "
                f"{h(self.train_gpu_h)} on a GPU.")


def md_ns_per_day(atoms: int, results: Path = REPO / "results") -> float | None:
    """One core, default preset, fastest platform, interpolated from results/energy.json."""
    try:
        rows = json.loads((results / "energy.json").read_text())["rows"]
    except (OSError, ValueError, KeyError):
        return None
    best: dict[int, float] = {}
    for r in rows:
        if r.get("preset") == DEFAULT_PRESET and r.get("md_ns_per_day"):
            best[r["atoms"]] = max(best.get(r["atoms"], 0.0), float(r["md_ns_per_day"]))
    if len(best) < 2:
        return None
    a = np.log(sorted(best))
    y = np.log([best[k] for k in sorted(best)])
    slope = np.polyfit(a, y, 1)[0]  # beyond the measured sizes: the fitted power law
    x = np.log(atoms)
    if a[0] <= x <= a[-1]:
        return float(np.exp(np.interp(x, a, y)))
    edge = 0 if x < a[0] else -1
    return float(np.exp(y[edge] + slope * (x - a[edge])))


def training_rates(entries) -> dict[str, float]:
    """'cpu' / 'gpu' -> median tokens/s over the shipped cards that measured one."""
    rates: dict[str, list[float]] = {"cpu": [], "gpu": []}
    for e in entries:
        t = e.card.raw.get("training") or {}
        if t.get("tokens_per_s") and t.get("device"):
            rates["gpu" if str(t["device"]).startswith("cuda") else "cpu"].append(float(t["tokens_per_s"]))
    return {k: float(np.median(v)) for k, v in rates.items() if v}


def build_time(sequence: str, termini: str, entries, ns: float = 100, replicas: int = 4) -> BuildTime:
    atoms = n_atoms(sequence, termini)
    rate = md_ns_per_day(atoms)
    cores = min(replicas, os.cpu_count() or 1)
    md_h = None if rate is None else ns * replicas / (rate * cores) * 24
    cfg = TrainConfig()
    tokens = cfg.steps * cfg.batch_size * 3 * atoms
    rates = training_rates(entries)
    return BuildTime(atoms, md_h, *(tokens / rates[k] / 3600 if k in rates else None for k in ("cpu", "gpu")))
