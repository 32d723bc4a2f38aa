"""What a checkpoint folder's files may say, checked before anything is built from them.

A hand-edited or hostile folder fails in one line, not in the allocator: the numbers of
config.json against `CONFIG_RULES` (d_model 65536 would ask for ~51 GB), then the tensor names
and shapes of model.safetensors against the model the config describes, read from the file's
header alone. The safetensors format: 8 bytes little-endian header length, the header as JSON
({name: {"dtype", "shape", "data_offsets"}, "__metadata__": {...}}), then the data.
"""

from __future__ import annotations

import json
from pathlib import Path

from .checks import POSITIVE, Range

MAX_HEADER_BYTES = 100 * 2**20  # names, dtypes and shapes only: never near this
_VOCAB, _BINS = Range(int, 1, 2**16), Range(int, 2, 2**20)
CONFIG_RULES = {  # per section of config.json
    "model": {"n_bins": _BINS, "d_model": Range(int, 1, 2**14), "n_layers": Range(int, 1, 512),
              "n_heads": Range(int, 1, 2**10), "mlp_ratio": Range(float, 0, 64, lo_open=True),
              "max_atoms": Range(int, 1, 2**16), "dropout": Range(float, 0, 1, hi_open=True),
              "n_elements": _VOCAB, "n_atom_names": _VOCAB, "n_residue_types": _VOCAB,
              "max_residues": _VOCAB},
    "tokenizer": {"n_bins": _BINS, "a": POSITIVE, "std": POSITIVE}}


def check_section(given: dict, key: str, source: str) -> None:
    """ValueError naming the first number of section `key` of `source` out of its range."""
    for name, rule in CONFIG_RULES[key].items():
        problem = rule.problem(given[name]) if name in given else None
        if problem:
            raise ValueError(f"{source}: invalid {key} config ({name} {problem})")


def read_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """{tensor name: shape} of a safetensors file; ValueError if it is not one (a pickle, a
    torch.save zip, a header that claims more than the file holds)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        try:
            if size < 8 or n > min(size - 8, MAX_HEADER_BYTES):
                raise ValueError
            header = json.loads(f.read(n))
            return {k: tuple(int(d) for d in v["shape"]) for k, v in header.items()
                    if k != "__metadata__"}
        except (ValueError, TypeError, KeyError, AttributeError):
            raise ValueError(f"{path} is not a valid safetensors file; checkpoints never "
                             "contain pickles") from None


def check_shapes(path: str | Path, expected: dict[str, tuple[int, ...]], source: str) -> None:
    """ValueError naming the first difference between the file's tensors and `expected`
    (the shapes that `source`, e.g. config.json, implies)."""
    found = read_shapes(path)
    if found == expected:
        return
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    name = next((k for k in sorted(expected) if k in found and found[k] != expected[k]), None)
    what = (f"{name} has shape {list(found[name])}, {source} implies {list(expected[name])}"
            if name else f"missing {missing[0]}" if missing else f"unexpected {extra[0]}")
    raise ValueError(f"{path} does not match its {source}: {what}")
