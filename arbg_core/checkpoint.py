"""Checkpoints as folders of safetensors + JSON, read once into typed records.

    model.safetensors   weights only: no pickle, so loading an untrusted folder cannot run code
    config.json         {"format": 1, "model": ModelConfig, "tokenizer": TokenizerConfig,
                         "system": {"sequence", "termini", "preset"} | null, "transferable": bool,
                         "extra": {...; a transferable model's "termini", "lengths", "preset"}}
    card.json           data provenance, steps, tuned tau, metrics and their commands

`read_config` / `read_card` turn the JSON into `CheckpointConfig` / `Card` (frozen dataclasses);
the rest of the package reads attributes. Loading never calls torch.load, and checks the config's
numbers and the weights' shapes before building anything (checkpoint_files.py). Which shipped model
serves which system is decided here (`ModelEntry.check_serves`, `serving`), for CLI and app alike.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .checkpoint_files import check_section, check_shapes
from .energy import DEFAULT_PRESET
from .files import atomic_path, output_folder, read_json, write_json
from .model import ArBG, ModelConfig
from .tokenizer import Tokenizer, TokenizerConfig

FORMAT = 1
WEIGHTS, CONFIG, CARD = "model.safetensors", "config.json", "card.json"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "assets" / "models"
DEFAULT_TAU = 1.0  # a model whose card tunes no tau samples at tau 1


@dataclass(frozen=True)
class SystemSpec:
    """The one peptide a per-system model samples, and the force field of its data."""
    sequence: str
    termini: str
    preset: str = DEFAULT_PRESET

    @property
    def label(self) -> str:
        return f"{self.sequence} ({self.termini})"


@dataclass(frozen=True)
class Coverage:
    """What a transferable model samples: termini kind and sequence lengths (None: any)."""
    termini: str | None = None
    lengths: tuple[int, int] | None = None
    preset: str = DEFAULT_PRESET

    def describe(self) -> str:
        lo, hi = self.lengths or (None, None)
        span = ("of any length" if lo is None else f"of length {lo}" if lo == hi
                else f"of length {lo}-{hi}")
        return f"{self.termini or 'all'} peptides {span}"

    def covers(self, sequence: str, termini: str) -> bool:
        return ((self.termini is None or termini == self.termini) and
                (self.lengths is None or self.lengths[0] <= len(sequence) <= self.lengths[1]))


@dataclass(frozen=True)
class CheckpointConfig:
    """config.json as typed records. Exactly one of `system` / `coverage` is set."""
    model: ModelConfig
    tokenizer: TokenizerConfig
    system: SystemSpec | None = None
    coverage: Coverage | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # as stored; not to be mutated

    def __post_init__(self):
        if (self.system is None) == (self.coverage is None):
            raise ValueError("a checkpoint config has either a system or a coverage")

    @property
    def transferable(self) -> bool:
        return self.system is None

    @property
    def preset(self) -> str:
        """The force-field preset the training data came from."""
        return (self.system or self.coverage).preset

    @property
    def default_termini(self) -> str:
        own = self.system.termini if self.system else self.coverage.termini
        return own or "zwitterionic"

    def to_json(self) -> dict:
        extra = dict(self.extra)
        if self.coverage is not None:
            extra.update(termini=self.coverage.termini, preset=self.coverage.preset,
                         lengths=list(self.coverage.lengths) if self.coverage.lengths else None)
            extra = {k: v for k, v in extra.items() if v is not None}
        return {"format": FORMAT, "model": asdict(self.model), "tokenizer": asdict(self.tokenizer),
                "system": asdict(self.system) if self.system else None,
                "transferable": self.transferable, "extra": extra}

    @classmethod
    def from_json(cls, config: Mapping, source: str = CONFIG) -> "CheckpointConfig":
        """Validate config.json (ValueError names what is wrong) and type it."""
        if not isinstance(config, Mapping):
            raise ValueError(f"{source} must hold a JSON object")
        missing = [k for k in ("format", "model", "tokenizer") if k not in config]
        if missing:
            raise ValueError(f"{source} lacks {', '.join(missing)}")
        if config["format"] != FORMAT:
            raise ValueError(f"{source}: checkpoint format {config['format']} is not {FORMAT}")
        model = _typed(ModelConfig, config["model"], "model", source)
        tokenizer = _typed(TokenizerConfig, config["tokenizer"], "tokenizer", source)
        extra = config.get("extra") or {}
        if not isinstance(extra, Mapping):
            raise ValueError(f"{source}: extra must be a JSON object")
        system = config.get("system")
        if system is None:
            lengths = extra.get("lengths")
            coverage = Coverage(extra.get("termini"), tuple(lengths) if lengths else None,
                                extra.get("preset") or DEFAULT_PRESET)
            return cls(model, tokenizer, None, coverage, dict(extra))
        keys = [f.name for f in fields(SystemSpec)]
        if not isinstance(system, Mapping) or any(k not in system for k in keys):
            raise ValueError(f"{source}: system must be null or have {', '.join(keys)}")
        spec = SystemSpec(*(system[k] for k in keys))
        return cls(model, tokenizer, spec, None, dict(extra))


def _typed(cls, given, key: str, source: str):
    """`cls` from the JSON object `given` (section `key`), its types and ranges checked first."""
    known = {f.name for f in fields(cls)}
    if not isinstance(given, Mapping) or set(given) - known:
        bad = sorted(set(given) - known) if isinstance(given, Mapping) else [type(given).__name__]
        raise ValueError(f"{source}: invalid {key} config ({', '.join(bad)})")
    check_section(given, key, source)  # types and ranges before anything is built
    try:
        return cls(**given)
    except (TypeError, ValueError) as e:  # e.g. d_model not divisible by n_heads
        raise ValueError(f"{source}: invalid {key} config ({e})") from None


@dataclass(frozen=True)
class Card:
    """card.json: the fields the code reads, typed; everything else stays in `raw`."""
    name: str | None = None
    tau: float | None = None
    steps: int | None = None
    val_nll: float | None = None
    wall_time_s: float | None = None
    data: Any = None
    raw: Mapping[str, Any] = field(default_factory=dict)  # card.json as read; not to be mutated

    @property
    def default_tau(self) -> float:
        """The sampling temperature a run uses unless told otherwise."""
        return self.tau if self.tau is not None else DEFAULT_TAU

    @classmethod
    def from_json(cls, card: Any) -> "Card":
        raw = dict(card) if isinstance(card, Mapping) else {"card": card}
        try:
            tau = float(raw["tau"]) if raw.get("tau") is not None else None
        except (TypeError, ValueError):
            tau = None  # a hand-edited card with a bad tau samples at the default
        return cls(raw.get("name"), tau, raw.get("steps"), raw.get("val_nll"),
                   raw.get("wall_time_s"), raw.get("data"), raw)


@dataclass(frozen=True)
class ModelEntry:
    """A checkpoint folder found on disk, read without its weights."""
    name: str  # folder name under the models directory
    path: Path
    config: CheckpointConfig
    card: Card

    # what the app and CLI ask of an entry, answered by its records
    system = property(lambda self: self.config.system, doc="SystemSpec, None if transferable")
    transferable = property(lambda self: self.config.transferable)
    preset = property(lambda self: self.config.preset)
    tau = property(lambda self: self.card.default_tau, doc="the card's tau, else 1")

    @property
    def title(self) -> str:
        return str(self.card.name or self.name)

    @property
    def refined_from(self) -> str | None:
        """The parent model's name if `arbg refine` (or the app) made this one from it."""
        parent = self.config.extra.get("refined_from")
        return str(parent.get("name")) if isinstance(parent, Mapping) else None

    def check_serves(self, sequence: str, termini: str) -> None:
        """Raise ValueError, naming what the model covers, if it cannot sample `sequence`
        (normalized one-letter codes) with `termini`."""
        own = self.config.system
        if own is not None:
            if (sequence, termini) != (own.sequence, own.termini):
                raise ValueError(f"model {self.name} serves {own.label} only, "
                                 f"not {sequence} ({termini})")
        elif not self.config.coverage.covers(sequence, termini):
            raise ValueError(f"model {self.name} samples {self.config.coverage.describe()} only "
                             f"(its trained range), not {sequence} ({termini}, length "
                             f"{len(sequence)})")

    def serves(self, sequence: str, termini: str) -> bool:
        try:
            self.check_serves(sequence, termini)
        except ValueError:
            return False
        return True

    def describe(self) -> str:
        """One line for a model picker."""
        bits = [self.title] + (["transferable"] if self.transferable else []) + (
            [f"refined from {self.refined_from}"] if self.refined_from else [])
        if self.card.steps:
            bits.append(f"{self.card.steps} training steps")
        return ", ".join(bits + [f"tau {self.tau:g}", f"force field preset {self.preset}"])


@dataclass(frozen=True)
class LoadedModel(ModelEntry):
    """A checkpoint with its weights: the model is in eval mode on its device, gradients off,
    and is never moved or switched to training afterwards (the app shares it between users)."""
    model: ArBG
    tokenizer: Tokenizer


def _unwrap(model: torch.nn.Module) -> ArBG:
    """The ArBG inside DDP (.module) and torch.compile (._orig_mod) wrappers."""
    while not isinstance(model, ArBG):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            raise TypeError(f"expected an ArBG model, got {type(model).__name__}")
        model = inner
    return model


def save(path: str | os.PathLike, model: torch.nn.Module, tokenizer_cfg: TokenizerConfig,
         system: SystemSpec | Mapping | None = None, card: Mapping | None = None,
         transferable: bool = False, extra: Mapping | None = None) -> Path:
    """Write a checkpoint folder (created if needed; files replaced atomically). Returns its path.

    system: the SystemSpec (or its dict) of a single-system model, None for a transferable one,
    whose termini/lengths/preset are read from `extra`. extra: JSON-serializable entries stored
    under config["extra"] (e.g. training settings).
    """
    path = Path(path)
    model = _unwrap(model)
    if isinstance(system, Mapping):
        missing = [f.name for f in fields(SystemSpec) if f.name not in system]
        if missing:
            raise ValueError(f"system is missing {', '.join(missing)}")
    if system is None and not transferable:
        raise ValueError("a checkpoint needs a system, or transferable=True")
    raw = {"format": FORMAT, "model": asdict(model.cfg), "tokenizer": asdict(tokenizer_cfg),
           "system": asdict(system) if isinstance(system, SystemSpec) else system,
           "transferable": system is None, "extra": dict(extra or {})}
    CheckpointConfig.from_json(raw)  # what we write must read back
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
        tmp.chmod(0o644)  # safetensors writes 0600; a shipped model is read by other users
    write_json(path / CONFIG, raw)
    write_json(path / CARD, dict(card or {}))
    return path


def read_config(path: str | os.PathLike) -> CheckpointConfig:
    """config.json of a checkpoint folder, validated (ValueError names what is wrong)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint folder {path} does not exist")
    file = path / CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"incomplete checkpoint {path}: {CONFIG} is missing")
    return CheckpointConfig.from_json(read_json(file), str(file))


def read_card(path: str | os.PathLike) -> Card:
    file = Path(path) / CARD
    return Card.from_json(read_json(file) if file.is_file() else {})


def read_entry(path: str | os.PathLike) -> ModelEntry:
    path = Path(path)
    return ModelEntry(path.name, path, read_config(path), read_card(path))


def prepare_for_inference(model: ArBG, device: str | torch.device) -> ArBG:
    """The one place a model is readied for sampling: on `device`, eval mode, no gradients."""
    return model.to(device).eval().requires_grad_(False)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a checkpoint folder (or a shipped model's name) for inference on `device`."""
    entry = read_entry(resolve(path))
    weights = entry.path / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"incomplete checkpoint {entry.path}: {WEIGHTS} is missing")
    with torch.device("meta"):  # shapes without memory, checked before any tensor is loaded
        expected = {k: tuple(v.shape) for k, v in ArBG(entry.config.model).state_dict().items()}
    check_shapes(weights, expected, CONFIG)
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{weights} is not a valid safetensors file ({e}); "
                         "checkpoints never contain pickles") from None
    model = ArBG(entry.config.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{weights} does not match its config.json: {e}") from None
    return LoadedModel(entry.name, entry.path, entry.config, entry.card,
                       prepare_for_inference(model, device), Tokenizer(entry.config.tokenizer))


def copy_weights(src: str | os.PathLike, dest: str | os.PathLike,
                 card: Mapping | None = None) -> Path:
    """A fresh checkpoint folder `dest` holding the weights and config of `src` and `card` (if
    given), put in place whole (files.output_folder): a kill leaves the old folder or the new."""
    dest = Path(dest)
    with output_folder(dest, CONFIG) as tmp:
        for f in (WEIGHTS, CONFIG):
            shutil.copyfile(Path(src) / f, tmp / f)
        (tmp / WEIGHTS).chmod(0o644)
        if card is not None:
            write_json(tmp / CARD, dict(card))
    return dest


def list_shipped(root: str | os.PathLike | None = None) -> list[ModelEntry]:
    """Every valid checkpoint folder under `root` (default assets/models), by name."""
    root = Path(root) if root is not None else SHIPPED_DIR
    out = []
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                out.append(read_entry(folder))
            except (FileNotFoundError, ValueError):
                continue  # not a checkpoint (or a broken one): not offered
    return out


def serving(entries: list[ModelEntry], sequence: str, termini: str
            ) -> tuple[list[ModelEntry], list[str]]:
    """Of `entries`: those that can sample `sequence` (normalized) with `termini`, single-system
    models of exactly that system first, then transferable ones in range; and, for each
    transferable model that cannot, its range."""
    single, transferable, limits = [], [], []
    for entry in entries:
        try:
            entry.check_serves(sequence, termini)
        except ValueError as e:
            if entry.transferable:
                limits.append(str(e))
            continue
        (transferable if entry.transferable else single).append(entry)
    return single + transferable, limits


def shipped_for(sequence: str, termini: str, root: str | os.PathLike | None = None) -> list[str]:
    """Names of the shipped models that can sample `sequence` (normalized) with `termini`, in
    `serving` order. Raises ValueError saying what is shipped, and each transferable model's
    range, if none can."""
    shipped = list_shipped(root)
    found, limits = serving(shipped, sequence, termini)
    if found:
        return [e.name for e in found]
    systems = [e.system.label for e in shipped if not e.transferable]
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
    names = [e.name for e in list_shipped(root)]
    available = ", ".join(names) if names else "(none)"
    raise FileNotFoundError(f"no checkpoint folder or shipped model named {name!r}; "
                            f"shipped models: {available}")
