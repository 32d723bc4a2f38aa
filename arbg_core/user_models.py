"""Your models beside the shipped ones: one listing for the CLI and the app.

The user models folder (`ARBG_USER_MODELS_DIR`, default `runs/user_models` beside `assets/`)
holds the models made on this machine, e.g. by `arbg refine` or the app's "Refine for this
sequence". Each is an ordinary checkpoint folder, put in place whole by `files.output_folder`, so
a folder that is still being written is hidden (`.NAME.tmp-PID`) and is not listed. A folder
there that is not a complete checkpoint (no config.json, an invalid one, no weights) is skipped
with a notice naming it: one broken folder never hides the others.

Order (`serving`): per-system models of exactly the system first, shipped before yours, then
transferable ones; so a model refined for a sequence comes before the transferable model it was
refined from. A name taken by a shipped model is skipped in the user folder.

Models built by the app's background `arbg fit` jobs (fit_jobs.py) live in
builds/SYSTEM/fit/model and are listed as SYSTEM-fit once complete; a build still running (no
model yet) is passed over silently.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable

from . import checkpoint
from .checkpoint import CONFIG, WEIGHTS, ModelEntry
from .peptide import system_name

USER_MODELS_ENV = "ARBG_USER_MODELS_DIR"
DEFAULT_USER_DIR = checkpoint.SHIPPED_DIR.parent.parent / "runs" / "user_models"
BUILDS, BUILT = "builds", "-fit"  # builds/SYSTEM/fit/model is listed as SYSTEM-fit


def user_models_dir() -> Path:
    """ARBG_USER_MODELS_DIR, else runs/user_models of this checkout (git ignores runs/)."""
    return Path(os.environ.get(USER_MODELS_ENV) or DEFAULT_USER_DIR)


@dataclass(frozen=True)
class Skipped:
    """A folder of the user models folder that is not offered, and why (no paths, no raw
    exception text: this is shown on a page)."""
    name: str
    reason: str

    def text(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass(frozen=True)
class Listing:
    entries: list[ModelEntry]  # shipped ones first, then yours; each by name
    user_names: frozenset[str] = frozenset()  # which of them are in the user models folder
    skipped: list[Skipped] = field(default_factory=list)

    def is_user(self, entry: ModelEntry) -> bool:
        return entry.name in self.user_names


def _read_user_entry(folder: Path) -> ModelEntry:
    """The entry of one user folder; ValueError with a short reason if it is not complete."""
    if not (folder / CONFIG).is_file():
        raise ValueError(f"incomplete, no {CONFIG}")
    try:
        entry = checkpoint.read_entry(folder)
    except (OSError, ValueError):
        raise ValueError(f"its {CONFIG} is not a valid checkpoint config") from None
    if not (folder / WEIGHTS).is_file():
        raise ValueError(f"incomplete, no {WEIGHTS}")
    return entry


def list_user(root: str | os.PathLike | None = None, taken: set[str] = frozenset()
              ) -> tuple[list[ModelEntry], list[Skipped]]:
    """Complete checkpoint folders under `root` (default `user_models_dir()`) by name, and the
    folders skipped. Hidden folders (writes in progress) are passed over silently."""
    root = Path(root) if root is not None else user_models_dir()
    entries, skipped = [], []
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and p.name != BUILDS)
    except OSError:  # missing (nothing made yet), not a folder, or not readable
        folders = []
        if root.exists():
            skipped.append(Skipped(root.name, "the user models folder cannot be read"))
    for folder in folders:
        if folder.name in taken:
            skipped.append(Skipped(folder.name, "a shipped model has this name"))
            continue
        try:
            entries.append(_read_user_entry(folder))
        except ValueError as e:
            skipped.append(Skipped(folder.name, str(e)))
    built, broken = _list_built(root, taken | {e.name for e in entries})
    return entries + built, skipped + broken


def built_folder(root: Path, name: str) -> Path | None:
    """builds/SYSTEM/fit/model for a name SYSTEM-fit, else None."""
    if not name.endswith(BUILT) or "/" in name or os.sep in name or name.startswith("."):
        return None
    return root / BUILDS / name[:-len(BUILT)] / "fit" / "model"


def _list_built(root: Path, taken: set[str]) -> tuple[list[ModelEntry], list[Skipped]]:
    """The finished models of the app's builds (builds/SYSTEM/fit/model), as SYSTEM-fit."""
    entries, skipped = [], []
    try:
        builds = sorted(p for p in (root / BUILDS).iterdir() if not p.name.startswith("."))
    except OSError:
        return [], []
    for build in builds:
        folder, name = build / "fit" / "model", build.name + BUILT
        if not folder.is_dir() or name in taken:
            continue
        try:
            entries.append(replace(_read_user_entry(folder), name=name))
        except ValueError as e:
            skipped.append(Skipped(name, str(e)))
    return entries, skipped


def list_models(shipped_root: str | os.PathLike | None = None,
                user_root: str | os.PathLike | None = None) -> Listing:
    """The shipped models (`checkpoint.list_shipped`) and yours, in one listing."""
    shipped = checkpoint.list_shipped(shipped_root)
    user, skipped = list_user(user_root, {e.name for e in shipped})
    return Listing(shipped + user, frozenset(e.name for e in user), skipped)


def serving_names(sequence: str, termini: str) -> tuple[list[str], Listing]:
    """Names of the models (shipped and yours) that can sample `sequence` (normalized) with
    `termini`, in `checkpoint.serving` order, and the listing. Raises ValueError saying what is
    there, and each transferable model's range, if none can."""
    listing = list_models()
    found, limits = checkpoint.serving(listing.entries, sequence, termini)
    if found:
        return [e.name for e in found], listing
    systems = [e.system.label for e in listing.entries if not e.transferable]
    raise ValueError(f"no shipped model covers {sequence} ({termini}), nor one of yours "
                     f"({USER_MODELS_ENV}). Per-system models: {', '.join(systems) or 'none'}"
                     + "".join(f"; {m}" for m in limits)
                     + ". Train one with `arbg md` and `arbg train` (README).")


def resolve(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint folder path, a shipped model's name, or the name of one of yours -> its
    folder (shipped first)."""
    try:
        return checkpoint.resolve(name_or_path)
    except FileNotFoundError as e:
        name, root = str(name_or_path), user_models_dir()
        if "/" not in name and os.sep not in name and (root / name / CONFIG).is_file():
            return root / name
        built = built_folder(root, name)
        if built is not None and (built / CONFIG).is_file():
            return built
        yours = [p.name for p in list_user(root)[0]]
        raise FileNotFoundError(f"{e}; yours ({USER_MODELS_ENV}): "
                                f"{', '.join(yours) or '(none)'}") from None


def refined_folder(parent: str, sequence: str, termini: str,
                   root: str | os.PathLike | None = None, taken: Iterable[str] | None = None
                   ) -> Path:
    """A free folder for a model refined from `parent`: ROOT/PARENT-refined-SYSTEM, then -2,
    -3... (an earlier refinement is kept, never replaced). `taken`: names not to use (default:
    the shipped models')."""
    root = Path(root) if root is not None else user_models_dir()
    base = f"{parent}-refined-{system_name(sequence, termini)}"
    taken = set(taken) if taken is not None else {e.name for e in checkpoint.list_shipped()}
    for k in range(1, 10_000):
        path = root / (base if k == 1 else f"{base}-{k}")
        if path.name not in taken and not path.exists():
            return path
    raise ValueError(f"no free folder name for {base} in the user models folder")
