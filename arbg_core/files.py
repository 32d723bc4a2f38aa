"""Writing results so that a crash never leaves half a file, and JSON that is always valid.

Every file arbg writes for later reading (checkpoints, MD state, datasets, summaries, cards) goes
through `atomic_write`: the content is written beside the target and moved over it in one
`os.replace`, so a reader sees the old file or the new one, never a mix. JSON goes through
`jsonable`, which turns numpy scalars and arrays into plain values and non-finite floats into null
(`json.dumps` would write `NaN`/`Infinity`, which is not JSON).
"""

from __future__ import annotations

import json
import math
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yields a temporary path beside `path`; on a clean exit it replaces `path`.

    suffix: the temporary file's own suffix, for writers that insist on one (np.savez adds
    ".npz", mdtraj picks the format from ".dcd"). On an exception the temporary file is removed
    and `path` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write(path: str | os.PathLike, data: str | bytes) -> Path:
    """Write text or bytes to `path` atomically. Returns the path."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data)
    return Path(path)


def jsonable(value: Any) -> Any:
    """A plain JSON value: numpy scalars/arrays -> Python numbers/lists, NaN and inf -> None,
    tuples -> lists, dict keys -> str. Raises TypeError for anything else."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def json_text(obj: Any) -> str:
    """Indented, strictly valid JSON text of `obj` (through `jsonable`), ending in a newline."""
    return json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as strictly valid JSON, atomically. Returns the path."""
    return atomic_write(path, json_text(obj))


def read_json(path: str | os.PathLike) -> Any:
    """JSON of a file; ValueError naming the file if it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
