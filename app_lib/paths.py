"""Where the app finds its models and reference MD (environment variables, else assets/), and
the user models folder (ARBG_USER_MODELS_DIR, shared with the CLI: arbg_core/user_models.py)."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MODELS_ENV, REFERENCE_ENV = "ARBG_MODELS_DIR", "ARBG_REFERENCE_DIR"


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or REPO / "assets" / "models")


def user_models_dir() -> Path:
    """Models made here (refined ones): ARBG_USER_MODELS_DIR, else runs/user_models."""
    from arbg_core.user_models import user_models_dir as folder

    return folder()


def reference_dir() -> Path:
    """ARBG_REFERENCE_DIR, else `reference/` beside the models folder (assets/reference)."""
    return Path(os.environ.get(REFERENCE_ENV) or models_dir().parent / "reference")


def reference_path(model_name: str, system: str | None = None) -> Path | None:
    """reference/MODEL/SYSTEM.npz (a transferable model's MD of one system, e.g. AR-zw), else
    reference/MODEL.npz (a single-system model's), else the held-back MD a build (`arbg fit`)
    keeps in its model folder, else None."""
    from arbg_core.user_models import built_folder

    built = built_folder(user_models_dir(), model_name)
    for path in ([reference_dir() / model_name / f"{system}.npz"] if system else []) + [
            reference_dir() / f"{model_name}.npz"] + ([built / "reference.npz"] if built else []):
        if path.is_file():
            return path
    return None
