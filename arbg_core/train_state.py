"""The training state that travels (DESIGN §15): everything `arbg train --resume` needs, as
safetensors shards of at most SHARD_BYTES plus one JSON, never pickle.

A lent GPU sends back at most 8 files of 16 MiB (64 MiB in all), so the state is split:
`state.json` (schedule position, best validation NLL, history, optimizer hyper-parameters, RNG
device) and `state-00.safetensors`, ... holding the weights (float32, always), the optimizer
moments (float32, or bfloat16 with `moments_dtype` to halve them: the run then continues from
moments rounded to 8 bits of mantissa, not bit for bit) and the batch generator's state. A
folder is written beside its target and swapped in whole, so a kill leaves the old state or the
new one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .files import jsonable

STATE_DIR = "state"
SHARD_BYTES = 15 * 2 ** 20  # under the device's 16 MiB per returned file


def model_weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's state dict (float32) out of a state's flat tensors ("model.NAME")."""
    return {k[len("model."):]: v.float() for k, v in tensors.items() if k.startswith("model.")}


def _flatten(model, opts, moments_dtype) -> dict[str, torch.Tensor]:
    tensors = {f"model.{k}": v.detach().float().cpu() for k, v in model.state_dict().items()}
    for i, opt in enumerate(opts):
        for pid, state in opt.state_dict()["state"].items():
            for key, t in state.items():
                if not isinstance(t, torch.Tensor):
                    continue
                moment = t.is_floating_point() and t.numel() > 1
                tensors[f"opt{i}.{pid}.{key}"] = (t.to(moments_dtype) if moment else t).cpu()
    return {k: v.contiguous() for k, v in tensors.items()}


def shards_of(tensors: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Greedy: in order, a new shard when the next tensor would pass SHARD_BYTES."""
    shards, size = [{}], 0
    for k, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > SHARD_BYTES:
            shards.append({})
            size = 0
        shards[-1][k] = t
        size += n
    return shards


def save(folder: str | Path, model, opts, generator: torch.Generator, meta: dict,
         moments_dtype: torch.dtype = torch.float32) -> Path:
    """Write the state into `folder` (replaced whole). `meta`: JSON-able run facts."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = _flatten(model, opts, moments_dtype)
    tensors["rng"] = generator.get_state().cpu()
    shards = shards_of(tensors)
    for n, shard in enumerate(shards):
        save_file(shard, str(tmp / f"state-{n:02d}.safetensors"))
    groups = [opt.state_dict()["param_groups"] for opt in opts]
    record = meta | {"n_shards": len(shards), "param_groups": groups,
                     "moments_dtype": str(moments_dtype).removeprefix("torch."),
                     "rng_device": generator.device.type}
    (tmp / "state.json").write_text(json.dumps(jsonable(record), indent=1))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def exists(folder: str | Path) -> bool:
    return (Path(folder) / "state.json").is_file()


def load(folder: str | Path, model, opts) -> tuple[dict, torch.Tensor]:
    """Restore weights and optimizers from `folder`; returns (meta, generator state)."""
    folder = Path(folder)
    meta = json.loads((folder / "state.json").read_text())
    tensors = {}
    for n in range(meta["n_shards"]):
        tensors |= load_file(str(folder / f"state-{n:02d}.safetensors"))
    model.load_state_dict(model_weights(tensors))
    for i, (opt, groups) in enumerate(zip(opts, meta["param_groups"])):
        state: dict[int, dict] = {}
        for key, t in tensors.items():
            prefix, _, rest = key.partition(".")
            if prefix != f"opt{i}":
                continue
            pid, name = rest.split(".", 1)
            state.setdefault(int(pid), {})[name] = t.float() if t.is_floating_point() else t
        for group in groups:  # JSON turned tuples into lists
            for k, v in group.items():
                if isinstance(v, list) and k != "params":
                    group[k] = tuple(v)
        opt.load_state_dict({"state": state, "param_groups": groups})
    return meta, tensors["rng"]
