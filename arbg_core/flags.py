"""CLI flags from config dataclasses: one flag per field, type/default/help/choices from the
field (used by `cli.py` for md/train/sample and by `ship.py`, which `cli.py` imports).

A flag's value is checked by the dataclass itself as it is parsed (`_checked`): the config's
`__post_init__` (checks.py) says what is out of range, argparse says it as "argument --flag:
must be ...", exit code 2, before any work starts."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, field, fields

from .checks import SettingError

_TYPES = {"int": int, "float": float, "str": str}


def option(default, help: str, **meta):
    """A config dataclass field whose metadata carries its flag's help (and any other flag
    setting, e.g. choices): what `add_config_flags` reads."""
    return field(default=default, metadata={"help": help, **meta})


def _checked(cls, name: str, kind: type):
    """An argparse type: the text as `kind`, refused if `cls` refuses it for field `name` (a
    check of several fields together is left to building the whole config)."""

    def parse(text: str):
        value = kind(text)  # ValueError: argparse says "invalid int value"
        try:
            cls(**{name: value})
        except SettingError as e:
            if e.name == name and not e.joint:
                raise argparse.ArgumentTypeError(e.problem) from None
        except (TypeError, ValueError):
            pass  # another field's default, or a joint check: judged with all flags together
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def add_config_flags(p, cls, rename=None, skip=(), defaults=None, choices=None,
                     required=()) -> None:
    """One flag per field of dataclass `cls`: --field-name (or rename[field]), the field's type,
    default (or defaults[field]), help from its metadata, choices from its metadata (or
    choices[field]). A bool field that defaults to True becomes --no-NAME. Fields in `skip` get
    no flag; fields in `required` must be given."""
    rename, defaults, choices = rename or {}, defaults or {}, choices or {}
    for f in fields(cls):
        if f.name in skip:
            continue
        flag, default = _flag(f, rename), _default(f, defaults)
        help_ = f.metadata.get("help", "")
        if f.type == "bool":
            action = "store_false" if default else "store_true"
            p.add_argument(flag, dest=f.name, action=action, help=help_)
            continue
        base = f.type.split("|")[0].strip()
        kind = _TYPES.get(base, str)
        shown = "" if default is None else f" (default {default})"
        p.add_argument(flag, dest=f.name, type=_checked(cls, f.name, kind) if kind is not str
                       else kind, default=default, required=f.name in required,
                       choices=choices.get(f.name, f.metadata.get("choices")), help=help_ + shown)


def config_from(cls, args, **overrides):
    """The dataclass `cls` from the parsed flags add_config_flags made (skipped fields keep
    their defaults unless given in overrides)."""
    given = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
    return cls(**(given | overrides))


def config_argv(cfg, rename=None, defaults=None) -> list[str]:
    """The flags add_config_flags made that give the dataclass instance `cfg` back: one per
    field whose value differs from its flag's default (a None value cannot be given on a
    command line and must equal the default). For running a command in another process."""
    argv = []
    for f in fields(cfg):
        value, default = getattr(cfg, f.name), _default(f, defaults or {})
        if value == default:
            continue
        if value is None:
            raise ValueError(f"{f.name}=None differs from its flag's default {default!r}")
        flag = _flag(f, rename or {})
        argv += [flag] if f.type == "bool" else [flag, str(value)]
    return argv


def _flag(f, rename: dict) -> str:
    """A field's flag: --field-name, or rename[field]."""
    return rename.get(f.name, "--" + f.name.replace("_", "-"))


def _default(f, defaults: dict):
    """A field's flag default: defaults[field], else the field's (None if it has none)."""
    return defaults.get(f.name, f.default if f.default is not MISSING else None)
