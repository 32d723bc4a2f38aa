"""Uploaded reference trajectories: size, format, truncation and atom order, with clear messages.

mdtraj reads paths, not file objects, so the bytes go to a private `tempfile.mkdtemp()` folder
under names we choose (only the suffix comes from the upload, from a fixed list) and the folder
is removed before returning. The returned trajectory carries OUR topology: no uploaded text
(REMARKs, residue names) survives past validation.
"""

from __future__ import annotations

import shutil
import struct
import tempfile
import warnings
from pathlib import Path

import numpy as np

MAX_UPLOAD_MB = 200  # total of all files; also server.maxUploadSize in .streamlit/config.toml
TOPOLOGY_SUFFIXES = (".pdb",)
TRAJECTORY_SUFFIXES = (".dcd", ".xtc", ".trr", ".pdb")
FORMATS_TEXT = "topology PDB + trajectory DCD, XTC, TRR or multi-model PDB, or one multi-model PDB"


class UploadError(ValueError):
    """A problem with an uploaded file, worded for the user."""


def _suffix(name: str, allowed: tuple[str, ...], what: str) -> str:
    suffix = Path(str(name)).suffix.lower()
    if suffix not in allowed:
        raise UploadError(f"unknown {what} format {suffix or '(no extension)'}: use "
                          f"{', '.join(s.lstrip('.').upper() for s in allowed)}")
    return suffix


def _dcd_header_frames(data: bytes) -> int | None:
    """Frame count the DCD header claims (NSET), or None if it does not look like a DCD."""
    for order in ("<", ">"):
        if len(data) >= 12 and struct.unpack(order + "i", data[:4])[0] == 84 and data[4:8] == b"CORD":
            return struct.unpack(order + "i", data[8:12])[0]
    return None


def read_trajectory(files: list[tuple[str, bytes]], max_mb: float = MAX_UPLOAD_MB):
    """[(name, bytes)] -> mdtraj Trajectory as uploaded: either [multi-model PDB] or
    [topology PDB, trajectory]. Raises UploadError with a message for the user."""
    if not files or len(files) > 2:
        raise UploadError(f"give {FORMATS_TEXT}")
    total = sum(len(b) for _, b in files)
    if total > max_mb * 1024 * 1024:
        raise UploadError(f"the upload is {total / 2**20:.0f} MB, over the {max_mb:.0f} MB limit: "
                          "thin the trajectory (e.g. every 10th frame) and upload again")
    if any(len(b) == 0 for _, b in files):
        raise UploadError("an uploaded file is empty")
    import mdtraj as md

    folder = Path(tempfile.mkdtemp(prefix="arbg-upload-"))  # private: mode 0700
    try:
        if len(files) == 1:
            _suffix(files[0][0], (".pdb",), "single-file")
            path = folder / "trajectory.pdb"
            path.write_bytes(files[0][1])
            return _load(md, path, None)
        (top_name, top_bytes), (traj_name, traj_bytes) = files
        _suffix(top_name, TOPOLOGY_SUFFIXES, "topology")
        suffix = _suffix(traj_name, TRAJECTORY_SUFFIXES, "trajectory")
        top, traj_path = folder / "topology.pdb", folder / f"trajectory{suffix}"
        top.write_bytes(top_bytes)
        traj_path.write_bytes(traj_bytes)
        traj = _load(md, traj_path, top)
        if suffix == ".dcd":
            claimed = _dcd_header_frames(traj_bytes)
            if claimed and traj.n_frames < claimed:
                raise UploadError(f"the DCD file is truncated: its header promises {claimed} "
                                  f"frames, the file holds {traj.n_frames}")
        return traj
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _load(md, path: Path, top: Path | None):
    kind = path.suffix.lstrip(".").upper()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traj = md.load(str(path), top=str(top)) if top else md.load(str(path))
    except ValueError as e:
        if "same number of ATOMs" in str(e):
            raise UploadError(f"the {kind} file is truncated or inconsistent: its models have "
                              "different numbers of atoms") from None
        if top is not None and "atoms" in str(e) and "topology" in str(e):
            raise UploadError(f"atom count mismatch between the topology PDB and the {kind} "
                              f"trajectory ({e})") from None
        raise UploadError(f"could not read the {kind} file: it is not valid {kind} ({e})") from None
    except (OSError, RuntimeError, IndexError, struct.error) as e:
        raise UploadError(f"could not read the {kind} file: it looks truncated or is not a "
                          f"{kind} file ({e})") from None
    if traj.n_frames == 0 or traj.n_atoms == 0:
        raise UploadError(f"the {kind} file holds no frames")
    if not np.all(np.isfinite(traj.xyz)):
        raise UploadError(f"the {kind} file holds non-finite coordinates")
    return traj


def as_reference(traj, topology):
    """Check atoms (count, names, order) against the sampled system; -> Trajectory with OUR
    topology and the uploaded coordinates. Raises UploadError naming the first difference."""
    import mdtraj as md

    from arbg_core.report import check_compatible

    try:
        check_compatible(traj, topology)
    except ValueError as e:
        raise UploadError(f"{e}. The trajectory must contain the sampled system's atoms, hydrogens "
                          "included, in the order arbg build writes them") from None
    return md.Trajectory(traj.xyz.astype(np.float32), topology)


def reference_from_upload(files: list[tuple[str, bytes]], topology, max_mb: float = MAX_UPLOAD_MB):
    """read_trajectory + as_reference: the one call the Compare page makes."""
    return as_reference(read_trajectory(files, max_mb), topology)
