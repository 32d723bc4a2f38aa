"""A training run's round trip through a lent GPU machine (DESIGN §15).

What comes back from the device is at most 8 files of at most 16 MiB (64 MiB in all), flat in
one folder. `pack` turns a run folder (`arbg train --out`) into that: the state shards
(train_state.py) as they are, `run.tar` with every small file (state.json, summary.json, the
JSON of best/ and last/, the run folder's other JSON and logs), and best/'s weights as shards
only when they are not the state's own (a best step before the last), rounded to bfloat16 if
float32 would pass the file count (a `base` model: 34 MB of weights, 22 MB of bf16 moments). `unpack` rebuilds the run folder here: state/ for
`arbg train --resume`, last/ and best/ as loadable checkpoints.

    python -m arbg_core.lease pack RUN_DIR OUT_DIR
    python -m arbg_core.lease unpack RETURNED_DIR RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import shutil
import tarfile
from pathlib import Path

from safetensors.torch import load_file, save_file

from . import train_state
from .checkpoint import CARD, CONFIG, WEIGHTS

MAX_FILES, MAX_FILE_BYTES = 8, 16 * 2 ** 20
SMALL = ("summary.json", "train.log", "best/" + CONFIG, "best/" + CARD, "last/" + CONFIG,
         "last/" + CARD)


def _steps(card_path: Path) -> int | None:
    return json.loads(card_path.read_text()).get("steps") if card_path.is_file() else None


def pack(run: str | Path, out: str | Path) -> list[Path]:
    """Write the run's return-trip files into `out`; returns them. ValueError if they would pass
    the device's limits (then train a smaller model or keep bf16 moments)."""
    run, out = Path(run), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    state = run / train_state.STATE_DIR
    files = []
    for shard in sorted(state.glob("state-*.safetensors")):
        files.append(Path(shutil.copy2(shard, out / shard.name)))
    meta = json.loads((state / "state.json").read_text())
    if _steps(run / "best" / CARD) not in (None, meta["step"]):  # best/ is not the state's
        files += _best_shards(run / "best" / WEIGHTS, out, MAX_FILES - 1 - len(files))
    with tarfile.open(out / "run.tar", "w") as tar:
        tar.add(state / "state.json", arcname="state/state.json")
        extras = [p.name for p in run.glob("*.json")] + [p.name for p in run.glob("*.log")]
        for name in dict.fromkeys(SMALL + tuple(extras)):
            if (run / name).is_file():
                tar.add(run / name, arcname=name)
    files.append(out / "run.tar")
    too_big = [f.name for f in files if f.stat().st_size > MAX_FILE_BYTES]
    if len(files) > MAX_FILES or too_big:
        raise ValueError(f"{len(files)} files ({', '.join(too_big) or 'none'} over 16 MiB): more "
                         f"than a lent machine sends back ({MAX_FILES} files of 16 MiB)")
    return files


def _best_shards(weights: Path, out: Path, room: int) -> list[Path]:
    """best/'s weights as shards in at most `room` files: float32, or rounded to bfloat16 when
    that does not fit (recorded in the shards' metadata)."""
    import torch

    best = {f"model.{k}": v for k, v in load_file(str(weights)).items()}
    for dtype in (torch.float32, torch.bfloat16):
        shards = train_state.shards_of({k: v.to(dtype) for k, v in best.items()})
        if len(shards) <= room:
            break
    paths = [out / f"best-{n:02d}.safetensors" for n in range(len(shards))]
    for shard, path in zip(shards, paths):
        save_file(shard, str(path), metadata={"dtype": str(dtype)})
    return paths


def _weights(files: list[Path]) -> dict:
    tensors = {}
    for f in files:
        tensors |= load_file(str(f))
    return train_state.model_weights(tensors)


def unpack(returned: str | Path, run: str | Path) -> Path:
    """Rebuild a run folder from what `pack` wrote (read-only files are copied, not moved)."""
    returned, run = Path(returned), Path(run)
    state = run / train_state.STATE_DIR
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)
    with tarfile.open(returned / "run.tar") as tar:
        for member in tar.getmembers():
            if not member.isfile() or member.name.startswith("/") or ".." in member.name:
                raise ValueError(f"unexpected entry {member.name!r} in run.tar")
            target = run / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    shards = sorted(returned.glob("state-*.safetensors"))
    for shard in shards:
        shutil.copyfile(shard, state / shard.name)
    weights = _weights(shards)
    save_file(weights, str(run / "last" / WEIGHTS), metadata={"format": "pt"})
    best = sorted(returned.glob("best-*.safetensors"))
    if (run / "best" / CONFIG).is_file():
        save_file(_weights(best) if best else weights, str(run / "best" / WEIGHTS),
                  metadata={"format": "pt"})
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("verb", choices=("pack", "unpack"))
    p.add_argument("source")
    p.add_argument("dest")
    a = p.parse_args(argv)
    if a.verb == "pack":
        files = pack(a.source, a.dest)
        print(f"{len(files)} files, {sum(f.stat().st_size for f in files) / 2 ** 20:.1f} MiB "
              f"-> {a.dest}")
    else:
        print(f"run folder rebuilt: {unpack(a.source, a.dest)}")


if __name__ == "__main__":
    main()
