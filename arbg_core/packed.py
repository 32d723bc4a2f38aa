"""Frames that travel: fixed-point int16 coordinates with a stated resolution (DESIGN §15).

A lent GPU receives at most 64 MiB with the code, so training data goes there packed. Each frame
is first moved into the body frame of its system (frames.py: frame atom a at the origin, b on +x,
c in the xy plane), a rigid motion that neither frame of the tokenizer can see: the centered
frame removes the centroid and rotates at random anyway, and the body frame of a frame already in
the body frame is itself, so tokenizing a packed frame never amplifies the rounding (rounding
the raw lab frame would, through the frame's rotation: about 7x at 1 nm from a 0.15 nm bond).
The coordinates are then stored as integer multiples of STEP_NM = 2^-16 nm (1.5e-5 nm) about
each atom's mean position (float64, kept in the file): int16 when every deviation fits
(+-0.5 nm), else int32, then split into byte planes and compressed with lzma (1 ps MD frames
are nearly independent, so about 1.8 bytes per coordinate remain: 200 ns of alanine dipeptide
is 24 MB, which fits beside the tracked tree under the device transfer limit). Every stored
coordinate is within STEP/2 of the canonicalized original, plus float32's rounding of the
result (`max_error_nm`); the frame atoms' fixed zeros stay exactly zero; centering adds at most
another STEP/2 and a rotation keeps the per-atom error's norm. So a token value moves by at most
1.5e-5 nm: at least 13x below the finest bin in use (alanine dipeptide's body frame at 4,096 bins
over 6 std: 2.0e-4 nm; the transferable model's 8,192 bins over 9 x 0.25 nm: 2.7e-4 nm).

A packed `.npz` holds what `FrameData.save` writes, with `q_train`, `q_val`, `q_test` (the
compressed planes), `q_shapes`, `step_nm` and `mean_nm` in place of the float32 `xyz_*`;
`FrameData.load` reads both kinds.
"""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import numpy as np

from .files import atomic_path
from .frames import canonicalize, frame_atoms
from .peptide import AtomFeatures

STEP_NM = 2.0 ** -16
SPLITS = ("train", "val", "test")


def to_body_frame(xyz: np.ndarray, features: AtomFeatures) -> np.ndarray:
    """(n, A, 3) nm -> the same frames in their body frame (float64), or centered for a system
    whose first residue has no frame atoms."""
    if len(xyz) == 0:
        return np.asarray(xyz, np.float64)
    try:
        frame = frame_atoms(features)
    except ValueError:
        return np.asarray(xyz, np.float64) - np.asarray(xyz, np.float64).mean(1, keepdims=True)
    c, _ = canonicalize(xyz, frame)
    c = c.numpy()
    c[:, frame[0]] = 0.0  # exactly, so the stored frame is its own body frame
    c[:, frame[1], 1:] = 0.0
    c[:, frame[2], 2] = 0.0
    return c


def quantize(xyz: np.ndarray, step_nm: float = STEP_NM) -> np.ndarray:
    """nm -> multiples of step_nm (round to nearest): int16 where every value fits, else int32."""
    q = np.rint(np.asarray(xyz, np.float64) / step_nm)
    for dtype in (np.int16, np.int32):
        if not q.size or np.abs(q).max() <= np.iinfo(dtype).max:
            return q.astype(dtype)
    raise ValueError(f"coordinates up to {np.abs(xyz).max():.3g} nm do not fit int32 at "
                     f"{step_nm:g} nm steps")


def compress(q: np.ndarray) -> np.ndarray:
    """Integer array -> uint8 lzma stream of its byte planes (all lowest bytes first, ...)."""
    planes = np.ascontiguousarray(q.reshape(-1).view(np.uint8).reshape(-1, q.itemsize).T)
    return np.frombuffer(lzma.compress(planes.tobytes(), preset=6), np.uint8)


def decompress(blob: np.ndarray, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    planes = np.frombuffer(lzma.decompress(blob.tobytes()), np.uint8).reshape(dtype.itemsize, -1)
    return np.ascontiguousarray(planes.T).view(dtype).reshape(shape)


def save(data, path: str | Path) -> dict:
    """Write a FrameData packed; returns its packing record (also stored in meta['packing'])."""
    xyz = {s: getattr(data, f"xyz_{s}") for s in SPLITS}
    return save_arrays(path, xyz, data.features, data.topology_pdb, data.meta)


def save_arrays(path: str | Path, xyz: dict[str, np.ndarray], features: AtomFeatures,
                topology_pdb: str, meta: dict) -> dict:
    """`save` from its parts: xyz maps train/val/test to (n, A, 3) nm."""
    body = {s: to_body_frame(xyz[s], features) for s in SPLITS}
    frames = [b for b in body.values() if len(b)]
    mean = np.concatenate(frames).mean(0) if frames else np.zeros((features.n_atoms, 3))  # (A, 3)
    mean[np.all([np.all(b == 0, axis=0) for b in frames], axis=0)] = 0.0  # the frame's zeros
    q = {s: quantize(body[s] - mean) for s in SPLITS}
    dtype = max((a.dtype for a in q.values()), key=lambda d: d.itemsize)
    extent = max((float(np.abs(b).max()) for b in frames), default=0.0)
    packing = {"format": f"{dtype.name} fixed point about each atom's mean, body frame, lzma",
               "dtype": dtype.name, "step_nm": STEP_NM,
               "max_error_nm": STEP_NM / 2 + extent * 2.0 ** -23}
    f = features
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, **{f"q_{s}": compress(q[s].astype(dtype)) for s in SPLITS},
                 q_shapes=np.array([q[s].shape for s in SPLITS]), step_nm=np.float64(STEP_NM),
                 mean_nm=mean, element=f.element, atom_name=f.atom_name,
                 residue_type=f.residue_type, residue_index=f.residue_index,
                 topology_pdb=np.array(topology_pdb),
                 meta=np.array(json.dumps(dict(meta) | {"packing": packing})))
    return packing


def load_arrays(z) -> dict[str, np.ndarray]:
    """The float32 xyz_train/val/test (nm) of an open packed .npz."""
    step, mean = float(z["step_nm"]), z["mean_nm"]
    dtype = json.loads(str(z["meta"]))["packing"]["dtype"]
    return {f"xyz_{s}": (mean + decompress(z[f"q_{s}"], shape, dtype) * step).astype(np.float32)
            for s, shape in zip(SPLITS, z["q_shapes"].tolist())}


def is_packed(z) -> bool:
    return "step_nm" in z.files


def pack_corpus(src: str | Path, dest: str | Path, roles: tuple[str, ...] = ("train", "val"),
                stride: int = 1) -> dict:
    """A prepared corpus folder (data.Corpus) -> the same corpus packed, with only the sequences
    of `roles` (test sequences are evaluated here, never on the device) and every `stride`-th
    frame; returns the new corpus.json, which records what was packed."""
    from .files import write_json

    src, dest = Path(src), Path(dest)
    manifest = json.loads((src / "corpus.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    kept = {}
    for seq, entry in manifest["sequences"].items():
        if entry["role"] not in roles:
            continue
        with np.load(src / entry["file"], allow_pickle=False) as z:  # a plain corpus file
            xyz = {"train": z["xyz_train"][::stride], "val": z["xyz_val"][::stride],
                   "test": z["xyz_test"][:0]}
            features = AtomFeatures(z["element"], z["atom_name"], z["residue_type"],
                                    z["residue_index"])
            save_arrays(dest / entry["file"], xyz, features, str(z["topology_pdb"]),
                        json.loads(str(z["meta"])))
        kept[seq] = entry | {"frames": {s: len(v) for s, v in xyz.items()}}
    manifest = manifest | {"sequences": kept, "packed": {"from": str(src), "roles": list(roles),
                                                        "stride": stride, "step_nm": STEP_NM}}
    write_json(dest / "corpus.json", manifest)
    return manifest
