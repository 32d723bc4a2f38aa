"""Trajectories in and out (mdtraj), time-block splits, frame datasets, random rotations.

A prepared dataset is one `.npz` (no mdtraj or OpenMM needed to train from it, so it travels to
a GPU machine as is): `xyz_train`, `xyz_val`, `xyz_test` (n, A, 3) float32 nm, the per-atom
features, the topology as PDB text, and a JSON `meta` (sources, split, system).

A corpus (the transferable model's data) is a folder of such files, one per sequence, stored
uncompressed so that frames are memory-mapped rather than read (DDP ranks on one node share the
pages), plus `corpus.json`: termini, MD protocol and seeds, split, role (train / val / test) and
frame counts of every sequence. `prepare_corpus` makes one from an `arbg md --sequences` folder.
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from . import packed
from .files import atomic_path, write_json
from .peptide import AtomFeatures, atom_features

SPLIT = (0.8, 0.1, 0.1)  # train / val / test fractions of each source, in time order
# Zwitterionic dipeptides kept for external evaluation: never trained, validated or tuned on.
# A corpus leaves them out whatever its termini (a capped KW would teach KW's side chains).
RESERVED = ("KW", "ET", "FS", "MQ", "YD", "HV", "RN", "CL", "PG", "IA")
ROLES = ("train", "val", "test")  # of a corpus sequence: trained on, tuned on, evaluated on
CORPUS_FORMAT = 1

log = logging.getLogger("arbg")


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

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None):
        """`batch_size` random training frames as [(features, xyz (B, A, 3) tensor)]."""
        idx = torch.randint(len(self.xyz_train), (batch_size,), generator=generator)
        return [(self.features, torch.from_numpy(self.xyz_train[idx.numpy()]))]

    def validation_frames(self, max_frames: int):
        """[(features, xyz)] of the first `max_frames` val frames (the train tail if none)."""
        xyz = self.xyz_val[:max_frames] if len(self.xyz_val) else self.xyz_train[-max_frames:]
        return [(self.features, xyz)]

    def save(self, path: str | Path, compress: bool = True) -> Path:
        """Write one .npz; `compress=False` lets `Corpus` memory-map the frames."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".npz") as tmp:  # np.savez would add ".npz" otherwise
            (np.savez_compressed if compress else np.savez)(
                tmp, xyz_train=self.xyz_train, xyz_val=self.xyz_val, xyz_test=self.xyz_test,
                element=self.features.element, atom_name=self.features.atom_name,
                residue_type=self.features.residue_type, residue_index=self.features.residue_index,
                topology_pdb=np.array(self.topology_pdb), meta=np.array(json.dumps(self.meta)))
        return path

    @classmethod
    def load(cls, path: str | Path, mmap: bool = False) -> "FrameData":
        """A .npz from `save` or packed.save (else ValueError); mmap: map plain, uncompressed ones."""
        try:
            with np.load(path, allow_pickle=False) as z:
                feats = AtomFeatures(*(z[k] for k in AtomFeatures.__dataclass_fields__))
                keys = ("xyz_train", "xyz_val", "xyz_test")
                arrays = packed.load_arrays(z) if packed.is_packed(z) else z  # int (packed.py)
                mapped = [_memmap_member(path, k) if mmap and arrays is z else None for k in keys]
                xyz = [arrays[k] if m is None else m for k, m in zip(keys, mapped)]
                return cls(*xyz, feats, str(z["topology_pdb"]), json.loads(str(z["meta"])))
        except (KeyError, ValueError, EOFError, zipfile.BadZipFile):  # JSONDecodeError is one too
            raise ValueError(f"{path} is not a prepared dataset (arbg train --save-data)") from None


def _memmap_member(path: str | Path, key: str) -> np.ndarray | None:
    """Memory-map array `key` of an uncompressed .npz (np.load cannot); None if compressed."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        # the local file header (30 bytes): its name and extra field precede the data
        name_len, extra_len = struct.unpack("<HH", f.read(30)[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if fmt.read_magic(f)[0] == 1 else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if 0 in shape:
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran else "C")


@contextmanager
def _temp_pdb(text: str) -> Iterator[str]:
    """The path of a temporary PDB file holding `text` (mdtraj reads PDB from files only)."""
    with tempfile.TemporaryDirectory(prefix="arbg-") as folder:
        path = Path(folder) / "top.pdb"
        path.write_text(text)
        yield str(path)


def pdb_text_of(traj) -> str:
    """PDB text of the first frame of an mdtraj Trajectory."""
    with _temp_pdb("") as path:
        traj[0].save_pdb(path)
        return Path(path).read_text()


def save_reference(path: str | Path, traj, features: AtomFeatures, max_frames: int,
                   meta: dict) -> Path:
    """A shipped reference ensemble: at most `max_frames` frames of `traj`, evenly strided in
    time, as the test split of a FrameData file (what the app compares with by default)."""
    idx = evenly_spaced(traj.n_frames, max_frames)
    empty = np.zeros((0, traj.n_atoms, 3), np.float32)
    meta = {**meta, "frames_kept": int(len(idx)), "frames_of_source": int(traj.n_frames)}
    return FrameData(empty, empty, traj.xyz[idx].astype(np.float32), features, pdb_text_of(traj),
                     meta).save(path)


def load_source(path: str | Path, top: str | None = None, stride: int = 1):
    """One source -> list of trajectories (one per replica): an `arbg md` folder (replica_*
    subfolders are separate sources) or a file `trajectories.load_trajectory` reads (with `top`)."""
    from .md import load_run
    from .trajectories import load_trajectory

    path = Path(path)
    if path.is_dir():
        replicas = sorted(p for p in path.glob("replica_*") if p.is_dir()) or [path]
        return [load_run(r, stride=stride) for r in replicas if (r / "state.json").exists()]
    return [load_trajectory(path, top, stride=stride, quiet=True)]


def evenly_spaced(n_total: int, n_pick: int) -> np.ndarray:
    """At most `n_pick` distinct indices into `n_total` items, evenly spaced from the first to the
    last (frames evenly strided in time); (k,) int64, sorted."""
    return np.unique(np.linspace(0, n_total - 1, min(n_pick, n_total)).round().astype(np.int64))


def time_block_split(n_frames: int, fractions=SPLIT) -> tuple[slice, slice, slice]:
    """First block train, then val, then test: no val/test frame sits between train frames."""
    a = int(round(n_frames * fractions[0]))
    b = int(round(n_frames * (fractions[0] + fractions[1])))
    return slice(0, a), slice(a, b), slice(b, n_frames)


def parse_source(spec: str) -> tuple[str, int | None]:
    """'PATH' or 'PATH:N' (only the first N frames of each replica of PATH) -> (path, N)."""
    path, sep, n = str(spec).rpartition(":")
    if sep and n.isdigit() and path:
        return path, int(n)
    return str(spec), None


def prepare(sources: list[str], top: str | None = None, stride: int = 1, fractions=SPLIT,
            system: dict | None = None) -> FrameData:
    """Load trajectories, split each replica by time blocks, and pool the blocks.

    A source 'PATH:N' keeps the first N frames of each replica (a run that went on after the
    model was trained: the later frames stay unseen, for testing). N counts the run's own frames,
    before `stride`: with stride 2, 'PATH:1000' gives frames 0, 2, .., 998."""
    per_source = []
    for spec in sources:
        path, limit = parse_source(spec)
        keep = -(-limit // stride) if limit else None  # strided frames among the first N
        per_source.append((str(spec), [t[:keep] for t in load_source(path, top, stride)]))
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


# ---------------------------------------------------------------- corpora of many sequences


def read_sequence_list(path: str | Path) -> list[tuple[str, str]]:
    """An `arbg md --sequences` file -> [(sequence, role)].

    One sequence a line, optionally followed by its role (train | val | test; default train);
    '#' starts a comment. A sequence listed twice is an error (it would share an MD folder).
    """
    out, seen = [], set()
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        role = words[1].lower() if len(words) > 1 else "train"
        if len(words) > 2 or role not in ROLES:
            raise ValueError(f"{path} line {n}: expected 'SEQUENCE [train|val|test]', "
                             f"got {line.strip()!r}")
        seq = words[0].upper()
        if seq in seen:
            raise ValueError(f"{path} line {n}: {seq} is listed twice")
        seen.add(seq)
        out.append((seq, role))
    return out


def prepare_corpus(md_root: str | Path, out_dir: str | Path, stride: int = 1, fractions=SPLIT,
                   exclude=RESERVED, progress=None) -> "Corpus":
    """An `arbg md --sequences` folder -> a corpus folder (module docstring); returns the Corpus.

    Every sequence's frames are split by time blocks like `prepare`. Sequences in `exclude` and
    those without finished frames (a shard not run yet) are left out with a logged warning and
    listed in corpus.json. progress(done, total) counts sequences.
    """
    from .peptide import identify

    md_root, out = Path(md_root), Path(out_dir)
    file = md_root / "manifest.json"
    if not file.is_file():
        raise FileNotFoundError(f"{md_root} is not an `arbg md --sequences` folder "
                                "(no manifest.json)")
    manifest = json.loads(file.read_text())
    termini, protocol, roles = manifest["termini"], manifest["config"], manifest.get("roles") or {}
    blocked = {s.upper() for s in exclude}
    entries, excluded, missing = {}, [], []
    out.mkdir(parents=True, exist_ok=True)
    for k, seq in enumerate(manifest["sequences"]):
        state = md_root / seq / "state.json"
        if seq.upper() in blocked:
            log.warning("%s is reserved for external evaluation: left out of the corpus", seq)
            excluded.append(seq)
        elif not state.is_file() or json.loads(state.read_text())["frames_done"] == 0:
            log.warning("%s has no finished MD frames in %s yet: left out of the corpus", seq,
                        md_root)
            missing.append(seq)
        else:
            fd = prepare([md_root / seq], stride=stride, fractions=fractions,
                         system={"sequence": seq, "termini": termini, "preset": protocol["preset"]})
            found = identify(fd.topology)
            if found != (seq.upper(), termini):
                raise ValueError(f"{md_root / seq} holds {found[0]} ({found[1]}), "
                                 f"not {seq} ({termini})")
            fd.save(out / f"{seq}.npz", compress=False)
            run = json.loads((md_root / seq / "md.json").read_text())
            entries[seq] = {"role": roles.get(seq, "train"), "file": f"{seq}.npz",
                            "length": len(seq), "n_atoms": fd.n_atoms, "frames": fd.meta["frames"],
                            "seed": run["config"]["seed"], "temperature_k": run["temperature_k"]}
        if progress:
            progress(k + 1, len(manifest["sequences"]))
    # paths as given, never resolved: model cards carry them into the repo
    write_json(out / "corpus.json", {
        "format": CORPUS_FORMAT, "termini": termini, "preset": protocol["preset"],
        "protocol": protocol, "seeds": manifest.get("seeds"), "source": str(md_root),
        "stride": stride, "fractions": list(fractions),
        "split": "time blocks of each sequence's run: first train, then val, then test",
        "sequences": entries, "excluded": excluded, "missing": missing})
    return Corpus(out)


class Corpus:
    """A prepared corpus folder; a sequence's file is opened (memory-mapped) when first used.

    `sample_batch` and `validation_frames` return [(features, xyz)] groups, one per sequence,
    like FrameData's, so one training loop serves both.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        file = self.root / "corpus.json"
        if not file.is_file():
            raise FileNotFoundError(f"{self.root} is not a corpus (no corpus.json): prepare one "
                                    "from an `arbg md --sequences` folder")
        self.manifest = json.loads(file.read_text())
        if self.manifest.get("format") != CORPUS_FORMAT:
            raise ValueError(f"{file}: corpus format {self.manifest.get('format')} "
                             f"is not {CORPUS_FORMAT}")
        leaked = sorted(set(self.manifest["sequences"]) & set(RESERVED))
        if leaked:
            raise ValueError(f"{file} lists reserved sequences ({', '.join(leaked)}): they are for "
                             "external evaluation only and never enter a corpus")
        self._data: dict[str, FrameData] = {}

    @property
    def termini(self) -> str:
        return self.manifest["termini"]

    @property
    def preset(self) -> str:
        return self.manifest["preset"]

    def sequences(self, role: str = "train", split: str | None = None) -> list[str]:
        """Sequences of one role in manifest order (with frames in `split`, if given)."""
        return [s for s, e in self.manifest["sequences"].items()
                if e["role"] == role and (split is None or e["frames"][split] > 0)]

    def lengths(self, role: str = "train") -> tuple[int, int]:
        """(shortest, longest) sequence of a role, in residues."""
        n = [len(s) for s in self.sequences(role)]
        if not n:
            raise ValueError(f"{self.root} has no {role} sequences")
        return min(n), max(n)

    def data(self, sequence: str) -> FrameData:
        if sequence not in self._data:
            entry = self.manifest["sequences"][sequence]
            self._data[sequence] = FrameData.load(self.root / entry["file"], mmap=True)
        return self._data[sequence]

    def sample_batch(self, batch_size: int, generator: torch.Generator | None = None,
                     role: str = "train", split: str = "train"):
        """`batch_size` random frames as [(features, xyz (n, A, 3) tensor)], one group per sequence
        drawn; each frame's sequence is uniform over the role's sequences, then its frame."""
        seqs = self.sequences(role, split)
        if not seqs:
            raise ValueError(f"{self.root} has no {split} frames of {role} sequences")
        counts = torch.bincount(torch.randint(len(seqs), (batch_size,), generator=generator),
                                minlength=len(seqs))
        groups = []
        for i in counts.nonzero().flatten().tolist():
            d = self.data(seqs[i])
            xyz = getattr(d, f"xyz_{split}")
            idx = torch.randint(len(xyz), (int(counts[i]),), generator=generator)
            groups.append((d.features, torch.from_numpy(np.ascontiguousarray(xyz[idx.numpy()]))))
        return groups

    def validation_frames(self, max_frames: int, role: str = "train"):
        """[(features, xyz)]: about `max_frames` val frames spread evenly over the role's
        sequences, each sequence's spaced evenly in time."""
        seqs = self.sequences(role, "val")
        per_seq = -(-max_frames // max(len(seqs), 1))
        groups = []
        for s in seqs:
            xyz = self.data(s).xyz_val
            idx = evenly_spaced(len(xyz), per_seq)
            groups.append((self.data(s).features, np.ascontiguousarray(xyz[idx])))
        return groups

    def describe(self) -> dict:
        """What a model card records about its training data."""
        m = self.manifest
        frames = {split: sum(e["frames"][split] for s, e in m["sequences"].items()
                             if e["role"] == "train") for split in ("train", "val")}
        return {"corpus": str(self.root), "source": m.get("source"), "termini": m["termini"],
                "preset": m["preset"], "protocol": m["protocol"], "seeds": m.get("seeds"),
                "stride": m["stride"], "fractions": m["fractions"], "frames": frames,
                "sequences": {r: self.sequences(r) for r in ROLES}, "excluded": m["excluded"],
                "missing": m["missing"]}
