"""Shipped models and the systems they serve.

A single-system model serves exactly its (sequence, termini); a transferable model serves the
termini and lengths its config states (`checkpoint.ModelEntry.check_serves` decides, as for the
CLI). Entries are `checkpoint.ModelEntry` records, as `checkpoint.list_shipped` returns them.
"""

from __future__ import annotations

import shlex

from arbg_core.checkpoint import ModelEntry, serving
from arbg_core.peptide import TERMINI, system_name

NAMED_SYSTEMS = {("A", "capped"): "alanine dipeptide (Ace-Ala-Nme)",
                 ("AAA", "capped"): "tri-alanine (Ace-Ala-Ala-Ala-Nme)"}
DEFAULT_SYSTEM = ("A", "capped")
TERMINI_LABELS = {"zwitterionic": "zwitterionic (free NH3+ / COO-)", "capped": "capped (ACE / NME)"}
assert set(TERMINI_LABELS) == set(TERMINI)


def shipped_systems(entries: list[ModelEntry]) -> list[tuple[str, str]]:
    """Systems of the single-system models, the default (alanine dipeptide) first when present."""
    systems = sorted({(e.system.sequence, e.system.termini) for e in entries if not e.transferable})
    if DEFAULT_SYSTEM in systems:
        systems.remove(DEFAULT_SYSTEM)
        systems.insert(0, DEFAULT_SYSTEM)
    return systems


def system_label(system: tuple[str, str]) -> str:
    seq, termini = system
    named = NAMED_SYSTEMS.get(system)
    return f"{named} — {seq}, {termini}" if named else f"{seq} ({termini})"


def model_label(entry: ModelEntry) -> str:
    """'ala2, 8000 training steps, tau 0.9, ...': the name once, even when it is the title."""
    text = entry.describe()
    return text if text.startswith(entry.name) else f"{entry.name}: {text}"


def models_for(entries: list[ModelEntry], sequence: str, termini: str) -> list[ModelEntry]:
    """Models that can sample this system, in `checkpoint.serving` order (as for the CLI)."""
    return serving(entries, sequence, termini)[0]


def transferable_limits(entries: list[ModelEntry], sequence: str, termini: str) -> list[str]:
    """What each transferable model covers, for a system none of them serves."""
    return serving(entries, sequence, termini)[1]


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
