"""Writing results so that a crash never leaves half a file or half a folder, and valid JSON.

Every file arbg writes for later reading (checkpoints, MD state, datasets, summaries, cards) goes
through `atomic_write`: the content is written beside the target and moved over it in one
`os.replace`, so a reader sees the old file or the new one, never a mix. JSON goes through
`jsonable`, which turns numpy scalars and arrays into plain values and non-finite floats into null
(`json.dumps` would write `NaN`/`Infinity`, which is not JSON). A result folder (`arbg sample
--out`, `arbg evaluate --out`, a shipped model) is built beside its place and moved there whole
by `output_folder`, under a lock that turns a second writer away.
"""

from __future__ import annotations

import errno
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
import zlib
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


# ------------------------------------------------------------ result folders, whole or not at all


def _hidden(path: Path, what: str) -> Path:
    """A hidden ASCII name beside `path` (mdtraj's DCD writer takes ASCII paths only)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", path.name)
    if safe != path.name:
        safe += f"-{zlib.crc32(os.fsencode(path.name)):08x}"
    return path.with_name(f".{safe}.{what}")


class FolderBusy(ValueError):
    """Another process is writing the same result folder."""


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on the result folder `path` (a lock file beside it, released when the
    process dies however it dies); FolderBusy at once if another process holds it."""
    import fcntl

    lock = _hidden(path, "lock")
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise FolderBusy(f"{path} is being written by another arbg process: wait for it to "
                             "finish or choose another folder") from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock)):
                break  # else the holder removed the file before we locked it: lock the new one
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


def _check_replaceable(path: Path, marker: str) -> None:
    if path.is_dir():
        if any(path.iterdir()) and not (path / marker).is_file():
            raise ValueError(f"{path} holds other files (no {marker}): arbg replaces only its own "
                             "results; choose a new folder")
    elif path.exists() or path.is_symlink():
        raise ValueError(f"{path} is a file, not a folder")


def _exchange(a: Path, b: Path) -> None:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); OSError if unsupported."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if not hasattr(libc, "renameat2"):
        raise OSError(errno.ENOSYS, "renameat2 is not available")
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), str(b))


def _put_in_place(new: Path, path: Path) -> None:
    """Make folder `new` the folder `path`; what was at `path` ends up at `new`."""
    if not path.exists():
        os.rename(new, path)
        return
    try:
        _exchange(new, path)
    except OSError:  # no atomic exchange here: two renames, undone by _recover if killed between
        old = _hidden(path, f"old-{os.getpid()}")
        os.rename(path, old)
        os.rename(new, path)
        os.rename(old, new)


def _recover(path: Path) -> None:
    """Under the lock: put back a folder that a killed writer had moved aside, and remove the
    temporary folders of killed writers."""
    base = _hidden(path, "").name
    for p in sorted(path.parent.glob(glob.escape(base) + "*-*")):
        kind = re.fullmatch(re.escape(base) + r"(tmp|old)-\d+", p.name)
        if kind and kind[1] == "old" and not path.exists():
            os.rename(p, path)
        elif kind:
            shutil.rmtree(p, ignore_errors=True)


@contextmanager
def output_folder(path: str | os.PathLike, marker: str, need_bytes: int = 0) -> Iterator[Path]:
    """Build a result folder out of sight and put it in place whole.

    Yields an empty temporary folder beside `path`. When the block ends without an exception it
    takes the place of `path` in one step (an earlier result there is swapped out and removed),
    so a reader, or a kill at any moment, finds the old folder or the new one, never a mix; an
    exception removes it and leaves `path` as it was. Checked on entry, before any work: `path`
    is missing, empty or an earlier result (it holds `marker`), its parent can be written, about
    `need_bytes` are free there, and no other process is writing it (FolderBusy).
    """
    path = Path(path)
    _check_replaceable(path, marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(path.parent).free
    if free < need_bytes:
        raise OSError(errno.ENOSPC, f"not enough free space for {path}: about "
                      f"{need_bytes / 2**20:.0f} MB needed, {free / 2**20:.0f} MB free")
    with _locked(path):
        _recover(path)
        _check_replaceable(path, marker)
        tmp = _hidden(path, f"tmp-{os.getpid()}")
        tmp.mkdir()
        try:
            yield tmp
            _check_replaceable(path, marker)  # nothing else took the name meanwhile
            _put_in_place(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _is_ascii(path: Path) -> bool:
    return str(path).isascii()


@contextmanager
def ascii_path(path: str | os.PathLike) -> Iterator[Path]:
    """A path to write `path` through for writers that take ASCII paths only (mdtraj's DCD):
    `path` itself, or a temporary file moved onto `path` after the block."""
    path = Path(path)
    if _is_ascii(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="arbg-") as folder:
        tmp = Path(folder) / ("file" + "".join(s for s in path.suffixes if s.isascii()))
        yield tmp
        shutil.move(tmp, path)


@contextmanager
def ascii_view(path: str | os.PathLike) -> Iterator[Path]:
    """A path to read `path` through for readers that take ASCII paths only: `path` itself, or
    a link to it in a temporary folder."""
    path = Path(path)
    if _is_ascii(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="arbg-") as folder:
        link = Path(folder) / ("file" + "".join(s for s in path.suffixes if s.isascii()))
        link.symlink_to(path.resolve())
        yield link


class quiet_stdout:
    """Silence C-level stdout (mdtraj's DCD plugin prints a banner on every file it opens).
    Process-wide: for the CLI, never inside a threaded server."""

    def __enter__(self):
        sys.stdout.flush()
        self._saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)

    def __exit__(self, *exc):
        os.dup2(self._saved, 1)
        os.close(self._saved)
