"""Checkpoints as folders of safetensors + JSON, and the registry of shipped models.

    model.safetensors   weights only: no pickle, so loading an untrusted folder cannot run code
    config.json         {"format": 1, "model": ModelConfig, "tokenizer": TokenizerConfig,
                         "system": {"sequence", "termini", "preset"} | null, "transferable": bool,
                         "extra": {...}}
    card.json           free-form: data provenance, steps, tuned tau, metrics and their commands

Loading never calls torch.load.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .model import ArBG, ModelConfig
from .tokenizer import Tokenizer, TokenizerConfig

FORMAT = 1
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "card.json"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
_SYSTEM_KEYS = ("sequence", "termini", "preset")


@dataclass
class LoadedModel:
    model: ArBG  # eval mode
    tokenizer: Tokenizer
    config: dict  # config.json as read
    card: dict  # card.json as read ({} if the folder has none)
    path: Path


def _unwrap(model: torch.nn.Module) -> ArBG:
    """The ArBG inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while not isinstance(model, ArBG):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected an ArBG model, got {type(model).__name__}")
        model = inner
    return model


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def save(path: str | os.PathLike, model: torch.nn.Module, tokenizer_cfg: TokenizerConfig,
         system: dict | None = None, card: dict | None = None, transferable: bool = False,
         extra: dict | None = None) -> Path:
    """Write a checkpoint folder (created if needed; files replaced atomically). Returns its path.

    system: {"sequence", "termini", "preset"} for a single-system model, None for a transferable
    one. extra: JSON-serializable entries stored under config["extra"] (e.g. training settings).
    """
    path = Path(path)
    model = _unwrap(model)
    if system is not None:
        missing = [k for k in _SYSTEM_KEYS if k not in system]
        if missing:
            raise ValueError(f"system is missing {', '.join(missing)}")
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS + ".tmp")
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path / WEIGHTS)
    config = {"format": FORMAT, "model": asdict(model.cfg), "tokenizer": asdict(tokenizer_cfg),
              "system": dict(system) if system is not None else None,
              "transferable": bool(transferable), "extra": dict(extra or {})}
    _write_json(path / CONFIG, config)
    _write_json(path / CARD, dict(card or {}))
    return path


def read_config(path: str | os.PathLike) -> dict:
    """config.json of a checkpoint folder, validated (ValueError names what is wrong)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    file = path / CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"incomplete checkpoint {path}: {CONFIG} is missing")
    try:
        config = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{file} must hold a JSON object")
    missing = [k for k in ("format", "model", "tokenizer") if k not in config]
    if missing:
        raise ValueError(f"{file} lacks {', '.join(missing)}")
    if config["format"] != FORMAT:
        raise ValueError(f"{file}: checkpoint format {config['format']} is not {FORMAT}")
    for key, cls in (("model", ModelConfig), ("tokenizer", TokenizerConfig)):
        known = {f.name for f in fields(cls)}
        given = config[key]
        if not isinstance(given, dict) or set(given) - known:
            bad = sorted(set(given) - known) if isinstance(given, dict) else [type(given).__name__]
            raise ValueError(f"{file}: invalid {key} config ({', '.join(bad)})")
    system = config.get("system")
    ok = system is None or (isinstance(system, dict) and all(k in system for k in _SYSTEM_KEYS))
    if not ok:
        raise ValueError(f"{file}: system must be null or have {', '.join(_SYSTEM_KEYS)}")
    return config


def preset_of(config: dict, default: str = "amber99sbildn-obc") -> str:
    """The force-field preset a model's training data came from."""
    return ((config.get("system") or {}).get("preset")
            or (config.get("extra") or {}).get("preset") or default)


def check_serves(config: dict, sequence: str, termini: str, name: str = "this model") -> None:
    """Raise ValueError, naming what the model covers, if it cannot sample `sequence`
    (normalized one-letter codes) with `termini`: a per-system model serves its own system, a
    transferable one the termini and range of lengths in config["extra"] (any, if not stated)."""
    own = config.get("system")
    if own is not None:
        if (sequence, termini) != (own["sequence"], own["termini"]):
            raise ValueError(f"model {name} serves {own['sequence']} ({own['termini']}) only, "
                             f"not {sequence} ({termini})")
        return
    extra = config.get("extra") or {}
    covered, lengths = extra.get("termini"), extra.get("lengths")
    if (covered is None or termini == covered) and (
            not lengths or lengths[0] <= len(sequence) <= lengths[1]):
        return
    span = ("of any length" if not lengths else f"of length {lengths[0]}" if lengths[0] == lengths[1]
            else f"of length {lengths[0]}-{lengths[1]}")
    raise ValueError(f"model {name} samples {covered or 'all'} peptides {span} only (its trained "
                     f"range), not {sequence} ({termini}, length {len(sequence)})")


def read_card(path: str | os.PathLike) -> dict:
    file = Path(path) / CARD
    if not file.is_file():
        return {}
    try:
        card = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not valid JSON: {e}") from None
    return card if isinstance(card, dict) else {"card": card}


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint folder (or a shipped model's name) into an eval-mode model on `device`."""
    path = resolve(path)
    config = read_config(path)
    weights = path / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"incomplete checkpoint {path}: {WEIGHTS} is missing")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is not a valid safetensors file ({e}); "
                         "checkpoints never contain pickles") from None
    model_cfg = ModelConfig(**config["model"])
    model = ArBG(model_cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights} does not match its config.json: {e}") from None
    model.to(device).eval()
    tokenizer = Tokenizer(TokenizerConfig(**config["tokenizer"]))
    return LoadedModel(model, tokenizer, config, read_card(path), path)


def copy_weights(src: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """A fresh checkpoint folder `dest` holding the weights and config of `src` (for shipping:
    the card is written separately)."""
    import shutil

    dest = Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for f in (WEIGHTS, CONFIG):
        shutil.copy2(Path(src) / f, dest / f)
    return dest


def list_shipped(root: str | os.PathLike | None = None) -> list[tuple[str, dict, dict]]:
    """(name, config, card) of every valid checkpoint folder under assets/models, by name."""
    root = Path(root) if root is not None else SHIPPED_DIR
    out = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                out.append((folder.name, read_config(folder), read_card(folder)))
            except (FileNotFoundError, ValueError):
                continue  # not a checkpoint (or a broken one): not offered
    return out


def serving(models: list[tuple[str, dict, dict]], sequence: str, termini: str
            ) -> tuple[list[str], list[str]]:
    """Of `models` ((name, config, card), as `list_shipped` returns): the names that can sample
    `sequence` (normalized) with `termini`, single-system models of exactly that system first,
    then transferable ones in range; and, for each transferable model that cannot, its range."""
    single, transferable, limits = [], [], []
    for name, config, _ in models:
        try:
            check_serves(config, sequence, termini, name)
        except ValueError as e:
            if config.get("system") is None:
                limits.append(str(e))
            continue
        (single if config.get("system") is not None else transferable).append(name)
    return single + transferable, limits


def shipped_for(sequence: str, termini: str, root: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped models that can sample `sequence` (normalized) with `termini`, in
    `serving` order. Raises ValueError saying what is shipped, and each transferable model's
    range, if none can."""
    shipped = list_shipped(root)
    names, limits = serving(shipped, sequence, termini)
    if names:
        return names
    systems = [f"{c['system']['sequence']} ({c['system']['termini']})" for _, c, _ in shipped
               if c.get("system") is not None]
    raise ValueError(f"no shipped model covers {sequence} ({termini}). Per-system models: "
                     f"{', '.join(systems) or 'none'}" + "".join(f"; {m}" for m in limits) +
                     ". Train one with `arbg md` and `arbg train` (README).")


def resolve(name_or_path: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A checkpoint folder path, or the name of a shipped model -> its folder."""
    path = Path(name_or_path)
    if path.is_dir():
        return path
    root = Path(root) if root is not None else SHIPPED_DIR
    name = str(name_or_path)
    if "/" not in name and os.sep not in name and (root / name / CONFIG).is_file():
        return root / name
    names = [n for n, _, _ in list_shipped(root)]
    available = ", ".join(names) if names else "(none)"
    raise FileNotFoundError(f"no checkpoint folder or shipped model named {name!r}; "
                            f"shipped models: {available}")
