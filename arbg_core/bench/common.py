"""Shared bits of the benchmarks: machine description, JSON output, and the command line that
`python -m arbg_core.bench.NAME` gives every benchmark (a flag per keyword of its `run`)."""

from __future__ import annotations

import argparse
import inspect
import os
import platform
import time
import typing
from pathlib import Path
from typing import Callable

from ..files import write_json


def machine() -> dict:
    import torch

    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        info["load_avg_1min"] = os.getloadavg()[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write(out_dir: str | os.PathLike, name: str, result: dict) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return write_json(out / f"{name}.json", {"benchmark": name, "machine": machine(), **result})


def _scalars(result: dict) -> None:
    print({k: v for k, v in result.items() if not isinstance(v, (dict, list))})


def cli(run: Callable[..., dict], doc: str, argv: list[str] | None = None,
        show: Callable[[dict], None] = _scalars) -> dict:
    """Parse `--out DIR` and a `--knob-name` flag per other keyword of `run` (type from its
    annotation, default from its signature; a bool is a switch), run the benchmark, `show` its
    result."""
    hints = typing.get_type_hints(run)
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, param in inspect.signature(run).parameters.items():
        kind = hints.get(name, str)
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)  # X | None
        flag = "--out" if name == "out_dir" else "--" + name.replace("_", "-")
        if kind is bool:  # a switch: present means True
            p.add_argument(flag, dest=name, action="store_true")
        else:
            p.add_argument(flag, dest=name, type=kind, default=param.default)
    result = run(**vars(p.parse_args(argv)))
    show(result)
    return result
