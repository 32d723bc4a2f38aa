"""Uploaded reference trajectories: size, format, truncation, atom count and order, with plain
messages that name the uploaded file and the problem (no server path, no raw exception text).

mdtraj reads paths, not file objects, so the bytes go to a private `tempfile.mkdtemp()` folder
under names we choose (only the suffix comes from the upload, from a fixed list) and the folder
is removed before returning. Reading is `arbg_core.trajectories.load_trajectory`, the CLI's own
reader: the atom count of the first MODEL and the frame count are checked before a full parse,
truncated and non-finite files are refused. The returned trajectory carries OUR topology: no
uploaded text (REMARKs, residue names) survives past validation.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

MAX_UPLOAD_MB = 200  # total of all files; also server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_FRAMES = 20_000  # more than the comparison uses (it strides to 5,000 points a side)
TOPOLOGY_SUFFIXES = (".pdb",)
TRAJECTORY_SUFFIXES = (".dcd", ".xtc", ".trr", ".pdb")
FORMATS_TEXT = "topology PDB + trajectory DCD, XTC, TRR or multi-model PDB, or one multi-model PDB"


class UploadError(ValueError):
    """A problem with an uploaded file, worded for the user."""


def _shown(name: str) -> str:
    """An uploaded file's name as messages show it: its last part, at most 60 characters."""
    name = Path(str(name)).name or "(no name)"
    return name if len(name) <= 60 else name[:57] + "..."


def _suffix(name: str, allowed: tuple[str, ...], what: str) -> str:
    suffix = Path(str(name)).suffix.lower()
    if suffix not in allowed:
        raise UploadError(f"unknown {what} format {suffix or '(no extension)'}: use "
                          f"{', '.join(s.lstrip('.').upper() for s in allowed)}")
    return suffix


def read_trajectory(files: list[tuple[str, bytes]], max_mb: float = MAX_UPLOAD_MB,
                    n_atoms: int | None = None, max_frames: int = MAX_UPLOAD_FRAMES):
    """[(name, bytes)] -> mdtraj Trajectory as uploaded: either [multi-model PDB] or
    [topology PDB, trajectory]; `n_atoms`: the count the sampled system has, checked before the
    full parse. Raises UploadError with a message for the user."""
    from arbg_core.trajectories import load_trajectory

    if not files or len(files) > 2:
        raise UploadError(f"give {FORMATS_TEXT}")
    total = sum(len(b) for _, b in files)
    if total > max_mb * 1024 * 1024:
        raise UploadError(f"the upload is {total / 2**20:.0f} MB, over the {max_mb:.0f} MB limit: "
                          "thin the trajectory (e.g. every 10th frame) and upload again")
    for name, data in files:
        if len(data) == 0:
            raise UploadError(f"the uploaded file {_shown(name)} is empty")
    folder = Path(tempfile.mkdtemp(prefix="arbg-upload-"))  # private: mode 0700
    try:
        if len(files) == 1:
            _suffix(files[0][0], (".pdb",), "single-file")
            path = folder / "trajectory.pdb"
            path.write_bytes(files[0][1])
            return load_trajectory(path, n_atoms=n_atoms, max_frames=max_frames,
                                   label=_shown(files[0][0]))
        (top_name, top_bytes), (traj_name, traj_bytes) = files
        _suffix(top_name, TOPOLOGY_SUFFIXES, "topology")
        suffix = _suffix(traj_name, TRAJECTORY_SUFFIXES, "trajectory")
        top, path = folder / "topology.pdb", folder / f"trajectory{suffix}"
        top.write_bytes(top_bytes)
        path.write_bytes(traj_bytes)
        return load_trajectory(path, top, n_atoms=n_atoms, max_frames=max_frames,
                               label=_shown(traj_name), top_label=_shown(top_name))
    except UploadError:
        raise
    except (ValueError, OSError) as e:  # the reader's messages name the upload, never `folder`
        raise UploadError(str(e) if isinstance(e, ValueError) else "the upload could not be "
                          "stored on the server: try again") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def as_reference(traj, topology):
    """Check atoms (count, names, order) against the sampled system; -> Trajectory with OUR
    topology and the uploaded coordinates. Raises UploadError naming the first difference."""
    import mdtraj as md
    import numpy as np

    from arbg_core.report import check_compatible

    try:
        check_compatible(traj, topology)
    except ValueError as e:
        raise UploadError(f"{e}. The trajectory must contain the sampled system's atoms, hydrogens "
                          "included, in the order arbg build writes them") from None
    return md.Trajectory(traj.xyz.astype(np.float32), topology)


def reference_from_upload(files: list[tuple[str, bytes]], topology, max_mb: float = MAX_UPLOAD_MB,
                          max_frames: int = MAX_UPLOAD_FRAMES):
    """read_trajectory + as_reference: the one call the Compare page makes."""
    traj = read_trajectory(files, max_mb, n_atoms=topology.n_atoms, max_frames=max_frames)
    return as_reference(traj, topology)
