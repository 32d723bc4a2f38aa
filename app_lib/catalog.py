"""Shipped models and the systems they serve.

A single-system model serves exactly its (sequence, termini); a transferable model serves the
termini and lengths its config states (`checkpoint.check_serves` decides, as for the CLI).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from arbg_core.checkpoint import check_serves, preset_of, serving
from arbg_core.peptide import TERMINI, system_name

NAMED_SYSTEMS = {("A", "capped"): "alanine dipeptide (Ace-Ala-Nme)",
                 ("AAA", "capped"): "tri-alanine (Ace-Ala-Ala-Ala-Nme)"}
DEFAULT_SYSTEM = ("A", "capped")
TERMINI_LABELS = {"zwitterionic": "zwitterionic (free NH3+ / COO-)", "capped": "capped (ACE / NME)"}
assert set(TERMINI_LABELS) == set(TERMINI)


@dataclass(frozen=True)
class ModelEntry:
    name: str  # folder name under the models directory
    path: Path
    config: dict
    card: dict

    @property
    def system(self) -> tuple[str, str] | None:
        s = self.config.get("system")
        return (s["sequence"], s["termini"]) if s else None

    @property
    def transferable(self) -> bool:
        return self.system is None

    @property
    def preset(self) -> str:
        return preset_of(self.config)

    @property
    def tau(self) -> float:
        try:
            return float(self.card.get("tau", 1.0))
        except (TypeError, ValueError):
            return 1.0

    @property
    def title(self) -> str:
        return str(self.card.get("name") or self.name)

    def serves(self, sequence: str, termini: str) -> bool:
        try:
            check_serves(self.config, sequence, termini, self.name)
        except ValueError:
            return False
        return True

    def describe(self) -> str:
        """One line for the model picker (card fields, all optional)."""
        bits = [self.title] + (["transferable"] if self.transferable else [])
        if self.card.get("steps"):
            bits.append(f"{self.card['steps']} training steps")
        bits.append(f"tau {self.tau:g}")
        bits.append(f"force field preset {self.preset}")
        return ", ".join(bits)


def entries_from(shipped: list[tuple[str, dict, dict]], root: Path) -> list[ModelEntry]:
    """`checkpoint.list_shipped(root)` -> entries."""
    return [ModelEntry(name, Path(root) / name, config, card) for name, config, card in shipped]


def shipped_systems(entries: list[ModelEntry]) -> list[tuple[str, str]]:
    """Systems of the single-system models, the default (alanine dipeptide) first when present."""
    systems = sorted({e.system for e in entries if not e.transferable})
    if DEFAULT_SYSTEM in systems:
        systems.remove(DEFAULT_SYSTEM)
        systems.insert(0, DEFAULT_SYSTEM)
    return systems


def system_label(system: tuple[str, str]) -> str:
    seq, termini = system
    named = NAMED_SYSTEMS.get(system)
    return f"{named} — {seq}, {termini}" if named else f"{seq} ({termini})"


def models_for(entries: list[ModelEntry], sequence: str, termini: str) -> list[ModelEntry]:
    """Models that can sample this system, in `checkpoint.serving` order (as for the CLI)."""
    by_name = {e.name: e for e in entries}
    return [by_name[n] for n in serving(_triples(entries), sequence, termini)[0]]


def transferable_limits(entries: list[ModelEntry], sequence: str, termini: str) -> list[str]:
    """What each transferable model covers, for a system none of them serves."""
    return serving(_triples(entries), sequence, termini)[1]


def _triples(entries: list[ModelEntry]) -> list[tuple[str, dict, dict]]:
    return [(e.name, e.config, e.card) for e in entries]


def build_commands(sequence: str, termini: str, ns: int = 100) -> str:
    """The CLI recipe that produces a model for a system no shipped model covers."""
    name = system_name(sequence, termini)
    seq, term = shlex.quote(sequence), shlex.quote(termini)
    return "\n".join([
        f"# 1. reference MD of {name} (resumable; several replicas run in parallel)",
        f"arbg md {seq} --termini {term} --ns {ns} --replicas 4 --out runs/md/{name}",
        "# 2. train a generator on it (long: run in the background, add --resume to continue)",
        f"arbg train --data runs/md/{name} --out assets/models/{name}",
        "# 3. restart the app: the new model is listed for this sequence",
    ])
