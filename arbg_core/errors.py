"""Errors that are the user's to fix, and how the CLI says them: one line, exit code 2.

`UsageError` is bad input caught by the CLI itself. Beyond it, the core raises ValueError for
bad settings and files (`checks.SettingError`, damaged trajectories, invalid checkpoints),
OSError for paths, permissions and full disks, and OpenMM raises OpenMMException for a system
it cannot simulate: `user_errors()` lists them for the one top-level handler in `cli.main`.
Anything else is a bug in arbg and keeps its traceback.
"""

from __future__ import annotations

import sys


class UsageError(ValueError):
    """Bad input from the user: one line, exit code 2."""


def user_errors() -> tuple[type[BaseException], ...]:
    """The exception types that describe the user's input or machine, not a bug in arbg."""
    kinds: list[type[BaseException]] = [ValueError, OSError]
    openmm = sys.modules.get("openmm")  # only if loaded: its errors can only come from it then
    if openmm is not None:
        kinds.append(openmm.OpenMMException)
    return tuple(kinds)


def one_line(error: BaseException) -> str:
    """The message of `error` on one line (an OSError as "what: path")."""
    if isinstance(error, OSError) and error.strerror:
        text = error.strerror + (f": {error.filename}" if error.filename else "")
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())
