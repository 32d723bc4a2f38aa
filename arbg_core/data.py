"""Trajectories in and out (mdtraj), time-block splits, frame datasets, random rotations.

A prepared dataset is one `.npz` (no mdtraj or OpenMM needed to train from it, so it travels to
a GPU machine as is): `xyz_train`, `xyz_val`, `xyz_test` (n, A, 3) float32 nm, the per-atom
features, the topology as PDB text, and a JSON `meta` (sources, split, system).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .peptide import AtomFeatures, atom_features

SPLIT = (0.8, 0.1, 0.1)  # train / val / test fractions of each source, in time order


@dataclass
class FrameData:
    """Frames of one system split by time blocks, plus what the model conditions on."""

    xyz_train: np.ndarray  # (n, A, 3) float32 nm
    xyz_val: np.ndarray
    xyz_test: np.ndarray
    features: AtomFeatures
    topology_pdb: str  # the system as PDB text (first frame)
    meta: dict = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return self.features.n_atoms

    @property
    def topology(self):
        import mdtraj as md

        with _temp_pdb(self.topology_pdb) as path:
            return md.load_pdb(path).topology

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(
            tmp, xyz_train=self.xyz_train, xyz_val=self.xyz_val, xyz_test=self.xyz_test,
            element=self.features.element, atom_name=self.features.atom_name,
            residue_type=self.features.residue_type, residue_index=self.features.residue_index,
            topology_pdb=np.array(self.topology_pdb), meta=np.array(json.dumps(self.meta)))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "FrameData":
        with np.load(path, allow_pickle=False) as z:
            feats = AtomFeatures(z["element"], z["atom_name"], z["residue_type"], z["residue_index"])
            return cls(z["xyz_train"], z["xyz_val"], z["xyz_test"], feats, str(z["topology_pdb"]),
                       json.loads(str(z["meta"])))


class _temp_pdb:
    def __init__(self, text: str):
        self.text = text

    def __enter__(self):
        import tempfile

        self._dir = tempfile.TemporaryDirectory(prefix="arbg-")
        path = Path(self._dir.name) / "top.pdb"
        path.write_text(self.text)
        return str(path)

    def __exit__(self, *exc):
        self._dir.cleanup()


def pdb_text_of(traj) -> str:
    """PDB text of the first frame of an mdtraj Trajectory."""
    with _temp_pdb("") as path:
        traj[0].save_pdb(path)
        return Path(path).read_text()


def load_source(path: str | Path, top: str | None = None, stride: int = 1):
    """One source -> list of trajectories (one per replica): an `arbg md` folder (replica_*
    subfolders are separate sources) or any trajectory file mdtraj reads (with `top`)."""
    import mdtraj as md

    from .md import load_run

    path = Path(path)
    if path.is_dir():
        replicas = sorted(p for p in path.glob("replica_*") if p.is_dir()) or [path]
        return [load_run(r, stride=stride) for r in replicas if (r / "state.json").exists()]
    if not path.exists():
        raise FileNotFoundError(f"no trajectory at {path}")
    return [md.load(str(path), top=top, stride=stride) if top else md.load(str(path), stride=stride)]


def time_block_split(n_frames: int, fractions=SPLIT) -> tuple[slice, slice, slice]:
    """First block train, then val, then test: no val/test frame sits between train frames."""
    a = int(round(n_frames * fractions[0]))
    b = int(round(n_frames * (fractions[0] + fractions[1])))
    return slice(0, a), slice(a, b), slice(b, n_frames)


def prepare(sources: list[str], top: str | None = None, stride: int = 1, fractions=SPLIT,
            system: dict | None = None) -> FrameData:
    """Load trajectories, split each replica by time blocks, and pool the blocks."""
    per_source = [(str(s), load_source(s, top, stride)) for s in sources]
    trajs = [t for _, ts in per_source for t in ts]
    if not trajs:
        raise ValueError("no frames found in " + ", ".join(map(str, sources)))
    ref = trajs[0].topology
    for t in trajs[1:]:
        if t.n_atoms != ref.n_atoms or [a.name for a in t.topology.atoms] != [a.name for a in ref.atoms]:
            raise ValueError("all sources must share one topology (same atoms in the same order)")
    parts = {"train": [], "val": [], "test": []}
    for t in trajs:
        for name, sl in zip(parts, time_block_split(t.n_frames, fractions)):
            parts[name].append(t.xyz[sl])
    xyz = {k: np.concatenate(v).astype(np.float32) if v else np.zeros((0, ref.n_atoms, 3), np.float32)
           for k, v in parts.items()}
    pdb_text = pdb_text_of(trajs[0][0])
    meta = {"sources": [str(s) for s in sources], "stride": stride, "fractions": list(fractions),
            "frames": {k: int(len(v)) for k, v in xyz.items()},
            "replicas": len(trajs), "system": system,
            # frames per replica at preparation time: later frames of a growing run are unseen
            "replica_frames": {name: [int(t.n_frames) for t in ts] for name, ts in per_source}}
    return FrameData(xyz["train"], xyz["val"], xyz["test"], atom_features(ref), pdb_text, meta)


def random_rotations(n: int, generator: torch.Generator | None = None,
                     dtype=torch.float32) -> torch.Tensor:
    """(n, 3, 3) rotations uniform on SO(3) (QR of a Gaussian with the sign fix)."""
    g = torch.randn(n, 3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(g)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(q)
    q[det < 0, :, 0] *= -1  # proper rotations only: a reflection would flip chirality
    return q.to(dtype)


def rotate(xyz: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """(B, A, 3) @ (B, 3, 3): rotate each frame about its centroid."""
    center = xyz.mean(dim=1, keepdim=True)
    return (xyz - center) @ rotations.transpose(1, 2) + center
