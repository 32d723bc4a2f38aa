"""Reading one trajectory file the user hands us, checked before and after mdtraj parses it.

`load_trajectory` is the one reader of user trajectories: `arbg evaluate --reference`, `arbg train
--data` files and the app's uploads all go through it. Before the full parse it reads what the
format declares (DCD: the frame count in its header and the fixed frame size; XTC/TRR: every
frame's header, which gives its size; PDB: the MODEL records and the atoms of the first one), so
a truncated file, a wrong atom count or too many frames is refused in milliseconds, whatever the
file's size. After the parse, frames with non-finite coordinates are refused with their count.
Messages are one line, name the file by `label` (the upload's own name in the app, never a
server path) and carry no raw exception text.

An XTC or TRR file cut exactly between two frames cannot be told from a shorter run: neither
format records how many frames it holds.
"""

from __future__ import annotations

import errno
import mmap
import struct
import tempfile
import warnings
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from .files import ascii_path, ascii_view, quiet_stdout

KINDS = {".dcd": "DCD", ".xtc": "XTC", ".trr": "TRR", ".pdb": "PDB"}
COORDINATES_ONLY = (".dcd", ".xtc", ".trr")  # need a topology beside them


def _dcd_layout(data, label: str) -> tuple[int, int, int, int]:
    """(header bytes, frame bytes, frames the header promises, atoms) of a CHARMM/NAMD DCD."""
    for e in "<>":
        if len(data) >= 92 and struct.unpack(e + "i", data[:4])[0] == 84 and data[4:8] == b"CORD":
            break
    else:
        raise ValueError(f"{label} is not a DCD file")
    ctl = struct.unpack(e + "20i", data[8:88])
    title = struct.unpack(e + "i", data[92:96])[0] if len(data) >= 96 else -1
    start = 92 + 8 + title
    if title < 4 or len(data) < start + 12 or struct.unpack(e + "i", data[start:start + 4])[0] != 4:
        raise ValueError(f"{label} is truncated: its DCD header is incomplete")
    n_atoms = struct.unpack(e + "i", data[start + 4:start + 8])[0]
    charmm = ctl[19] != 0
    if ctl[8] != 0 or (charmm and ctl[11] != 0) or n_atoms <= 0:
        raise ValueError(f"{label}: fixed-atom or 4D DCD files are not supported")
    cell = 56 if charmm and ctl[10] else 0
    return start + 12, cell + 3 * (8 + 4 * n_atoms), ctl[0], n_atoms


def _dcd_frames(data, label: str, limit: int | None) -> tuple[int, int, str | None]:
    """(frames, atoms, what is wrong or None) of a DCD file."""
    header, frame, promised, n_atoms = _dcd_layout(data, label)
    n, rest = divmod(len(data) - header, frame)
    problem = None
    if rest or (promised and n != promised):
        problem = (f"{label}: the DCD file is truncated: it holds {n} of the {promised or n + 1} "
                   "frames its header promises" + (" and part of another" if rest else ""))
    return n, n_atoms, problem


def _xdr_frames(data, kind: str, label: str, limit: int | None) -> tuple[int, int, str | None]:
    """(frames, atoms, what is wrong or None) of an XTC or TRR file, from its frame headers
    (each gives the frame's size). Stops counting past `limit` frames."""
    step = _xtc_frame if kind == "XTC" else _trr_frame
    offset, n, n_atoms = 0, 0, 0
    while offset < len(data) and (limit is None or n <= limit):
        try:
            size, atoms = step(data, offset)
        except (struct.error, ValueError, ZeroDivisionError):
            size, atoms = None, 0
        if size is None and n == 0:
            raise ValueError(f"{label} is not a {kind} file")
        if size is None or offset + size > len(data):
            return n, n_atoms, f"{label} is truncated: frame {n + 1} is cut short"
        if n and atoms != n_atoms:
            return n, n_atoms, (f"{label} is inconsistent: frame {n + 1} has {atoms} atoms, "
                                f"frame 1 {n_atoms}")
        offset, n, n_atoms = offset + size, n + 1, atoms
    return n, n_atoms, None


def _xtc_frame(data, at: int) -> tuple[int | None, int]:
    magic, n_atoms = struct.unpack(">ii", data[at:at + 8])
    if magic != 1995 or n_atoms <= 0:
        return None, 0
    if n_atoms <= 9:  # stored uncompressed
        return 56 + 12 * n_atoms, n_atoms
    n_bytes = struct.unpack(">i", data[at + 88:at + 92])[0]  # after precision, min/max, smallidx
    return 92 + 4 * -(-n_bytes // 4), n_atoms


def _trr_frame(data, at: int) -> tuple[int | None, int]:
    magic, slen, strlen = struct.unpack(">iii", data[at:at + 12])
    if magic != 1993 or slen != 13 or strlen != 12:
        return None, 0
    # sizes of ir e box vir pres top sym x v f blocks, then natoms, step, nre
    sizes = struct.unpack(">13i", data[at + 24:at + 76])
    n_atoms = sizes[10]
    real = sizes[2] // 9 if sizes[2] else sizes[7] // (3 * n_atoms)  # float or double
    if n_atoms <= 0 or real not in (4, 8) or min(sizes[:10]) < 0:
        return None, 0
    return 76 + 2 * real + sum(sizes[:10]), n_atoms


def _pdb_models(data: bytes, label: str, limit: int | None = None) -> tuple[int, int, str | None]:
    """(models, atoms of the first model, what is wrong or None) from the records alone."""
    first = data.split(b"\nENDMDL", 1)[0]
    n_atoms = sum(1 for line in first.splitlines() if line[:6] in (b"ATOM  ", b"HETATM"))
    if n_atoms == 0:
        raise ValueError(f"{label} holds no atoms: is it a PDB file?")
    n_models = max(data.count(b"\nMODEL ") + data.startswith(b"MODEL "), 1)
    records = sum(data.count(b"\n" + tag) + data.startswith(tag) for tag in (b"ATOM  ", b"HETATM"))
    problem = None
    if records != n_models * n_atoms:
        problem = (f"{label} is truncated or inconsistent: its models have different numbers "
                   "of atoms")
    return n_models, n_atoms, problem


def declared(path: str | Path, label: str, limit: int | None = None
             ) -> tuple[int, int, str | None] | None:
    """(frames, atoms, what is wrong or None) that a DCD, XTC, TRR or PDB file declares, read
    without parsing coordinates; None for other formats."""
    path = Path(path)
    kind = KINDS.get(path.suffix.lower())
    if kind is None:
        return None
    if path.stat().st_size == 0:
        raise ValueError(f"{label} is empty")
    if kind == "PDB":
        return _pdb_models(path.read_bytes(), label)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if kind == "DCD":
            return _dcd_frames(data, label, limit)
        return _xdr_frames(data, kind, label, limit)


def load_topology(path: str | Path, label: str):
    """The mdtraj Topology of a PDB file's first model (the rest is never parsed)."""
    import mdtraj as md

    data = Path(path).read_bytes()
    if not data.strip():
        raise ValueError(f"the topology {label} is empty")
    _, n_atoms, _ = _pdb_models(data, f"the topology {label}")
    first = data.split(b"\nENDMDL", 1)[0] + b"\nEND\n"
    with tempfile.TemporaryDirectory(prefix="arbg-") as folder:
        top = Path(folder) / "top.pdb"
        top.write_bytes(first)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                topology = md.load_pdb(str(top)).topology
        except Exception:  # mdtraj raises many kinds on bad text
            raise ValueError(f"the topology {label} is not a readable PDB file") from None
    if topology.n_atoms != n_atoms:
        raise ValueError(f"the topology {label} is not a readable PDB file")
    return topology


def load_trajectory(path: str | Path, top: str | Path | None = None, *, stride: int = 1,
                    max_frames: int | None = None, n_atoms: int | None = None,
                    label: str | None = None, top_label: str | None = None, quiet: bool = False):
    """An mdtraj Trajectory of a complete, finite trajectory file.

    top: a PDB whose first model gives the topology (DCD, XTC and TRR need one). max_frames:
    refuse longer files before parsing them. n_atoms: the atom count the caller needs, checked
    against what the file declares before parsing. label / top_label: how messages name the
    files (default: their paths). quiet: silence the DCD reader's banner on stdout (a process-
    wide redirection: never in a threaded server).
    """
    path = Path(path)
    label = label or str(path)
    kind = KINDS.get(path.suffix.lower(), path.suffix.lstrip(".").upper() or "trajectory")
    if not path.is_file():
        raise FileNotFoundError(f"{label}: no such file")
    topology = load_topology(top, top_label or str(top)) if top is not None else None
    if path.suffix.lower() in COORDINATES_ONLY and topology is None:
        raise ValueError(f"{label} holds coordinates only: give its topology (a PDB file)")
    found = declared(path, label, max_frames)
    if found is not None:
        frames, atoms, problem = found
        wanted = (("the topology " + (top_label or str(top)), topology and topology.n_atoms),
                  ("the sampled system", n_atoms))
        for what, want in wanted:
            if want and atoms != want:
                raise ValueError(f"atom count mismatch: {label} has {atoms} atoms, {what} {want}")
        if max_frames is not None and frames > max_frames:
            raise ValueError(f"{label} holds more than {max_frames} frames: keep every n-th frame "
                             "and try again")
        if problem:
            raise ValueError(problem)
    traj = _parse(path, topology, stride, label, kind, quiet)
    if found is not None and traj.n_frames != -(-found[0] // stride):
        raise ValueError(f"{label} is truncated or inconsistent: {traj.n_frames} frames could be "
                         f"read of the {found[0]} it declares")
    check_finite(traj.xyz, label)
    return traj


def _parse(path: Path, topology, stride: int, label: str, kind: str, quiet: bool):
    import mdtraj as md

    try:
        with ascii_view(path) as readable, warnings.catch_warnings(), \
                (quiet_stdout() if quiet else nullcontext()):
            warnings.simplefilter("ignore")
            traj = md.load(str(readable), top=topology, stride=stride)
    except Exception:  # mdtraj and its C readers raise many kinds on a damaged file
        raise ValueError(f"{label} could not be read as a {kind} file: it is damaged or not "
                         f"{kind}") from None
    if traj.n_frames == 0 or traj.n_atoms == 0:
        raise ValueError(f"{label} holds no frames")
    return traj


def check_finite(xyz: np.ndarray, label: str) -> None:
    """ValueError counting the frames of (n, A, 3) `xyz` with NaN or infinite coordinates."""
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=(1, 2)))
    if len(bad):
        raise ValueError(f"{label}: {len(bad)} of {len(xyz)} frames hold non-finite coordinates "
                         f"(first: frame {bad[0] + 1})")


def save_dcd(xyz: np.ndarray, topology, path: str | Path) -> None:
    """Write (n, A, 3) nm frames as a DCD file (any path; mdtraj's writer takes ASCII only).
    OSError if the file cannot be written: on a failed write (a full disk, a size limit) the
    writer raises TypeError from its own error path, which says nothing."""
    import mdtraj as md

    try:
        with ascii_path(path) as writable:
            md.Trajectory(np.asarray(xyz, np.float32), topology).save_dcd(str(writable))
    except TypeError:
        raise OSError(errno.EIO, "could not write the DCD file (is the disk full?)",
                      str(path)) from None
