"""Models (shipped, and yours: arbg_core/user_models.py) and the systems they serve.

A single-system model serves exactly its (sequence, termini); a transferable model serves the
termini and lengths its config states (`checkpoint.ModelEntry.check_serves` decides, as for the
CLI). Entries are `checkpoint.ModelEntry` records, as `user_models.list_models` returns them.
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
    """Systems of the single-system models, the default (alanine dipeptide) first when present;
    a model refined for a typed sequence does not make it a shipped system."""
    systems = sorted({(e.system.sequence, e.system.termini) for e in entries
                      if not e.transferable and not e.refined_from})
    if DEFAULT_SYSTEM in systems:
        systems.remove(DEFAULT_SYSTEM)
        systems.insert(0, DEFAULT_SYSTEM)
    return systems


def system_label(system: tuple[str, str]) -> str:
    seq, termini = system
    named = NAMED_SYSTEMS.get(system)
    return f"{named} — {seq}, {termini}" if named else f"{seq} ({termini})"


def model_label(entry: ModelEntry) -> str:
    """'ala2, 8000 training steps, tau 0.9, ...': the name once, even when it is the title; a
    refined model says so first, with the ESS before and after its card records."""
    text = entry.describe()
    text = text if text.startswith(entry.name) else f"{entry.name}: {text}"
    if not entry.refined_from:
        return text
    ess = refined_ess(entry)
    gain = f" (ESS {ess[0]:.2%} -> {ess[1]:.2%})" if ess else ""
    return f"[refined{gain}] {text}"


def refined_ess(entry: ModelEntry) -> tuple[float, float] | None:
    """ESS fractions before and after refinement from the card (None if it does not say)."""
    record = entry.card.raw.get("refined")
    try:
        return float(record["ess_before"]), float(record["ess_after"])
    except (TypeError, KeyError, ValueError):
        return None


def models_for(entries: list[ModelEntry], sequence: str, termini: str) -> list[ModelEntry]:
    """Models that can sample this system, in `checkpoint.serving` order (as for the CLI)."""
    return serving(entries, sequence, termini)[0]


def transferable_limits(entries: list[ModelEntry], sequence: str, termini: str) -> list[str]:
    """What each transferable model covers, for a system none of them serves."""
    return serving(entries, sequence, termini)[1]


def build_commands(sequence: str, termini: str, ns: int = 100, budget_hours: float = 2.0) -> str:
    """The CLI recipes that produce a model for a system no shipped model covers: the one
    `arbg fit` command that "Build a model for this sequence" runs, then the steps by hand."""
    name = system_name(sequence, termini)
    seq, term = shlex.quote(sequence), shlex.quote(termini)
    out = f'"${{ARBG_USER_MODELS_DIR:-runs/user_models}}/builds/{name}/fit"'
    return "\n".join([
        "# what the Build button runs: one resumable command (MD, training, tau, evaluation,",
        f"# card; rerun it to continue after a stop); the app then lists {name}-fit",
        f"arbg fit {seq} --termini {term} --budget-hours {budget_hours:g} --out {out}",
        "# or by hand:",
        f"# 1. reference MD of {name} (resumable; several replicas run in parallel)",
        f"arbg md {seq} --termini {term} --ns {ns} --replicas 4 --out runs/md/{name}",
        "# 2. train a generator on it (long: run in the background, add --resume to continue)",
        f"arbg train --data runs/md/{name} --out assets/models/{name}",
        "# 3. restart the app: the new model is listed for this sequence",
    ])
