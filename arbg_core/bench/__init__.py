"""Benchmarks behind `make bench`: each module's `run(out_dir=...)` measures one thing and writes
OUT/NAME*.json (DESIGN §13). They are modules of the installed package, run by name:

    arbg bench energy --out results            # run_benchmark("energy", "results")
    python -m arbg_core.bench.energy --md-steps 500 --out /tmp/b   # one benchmark, its own knobs

`app` drives the Streamlit app (app.py, pages/) in a browser, which live in a source checkout
beside the package, not in it: outside one it raises BenchmarkUnavailable.
"""

from __future__ import annotations

import importlib
import os

BENCHMARKS = ("app", "e2e", "energy", "refine_toy", "sampling", "smc", "train")


class BenchmarkUnavailable(RuntimeError):
    """A benchmark cannot run here (no source checkout, no browser): the message says why."""


def available_benchmarks() -> list[str]:
    return list(BENCHMARKS)


def run_benchmark(name: str, out_dir: str | os.PathLike = "results") -> dict:
    """Run one benchmark with its default sizes; its JSON lands in out_dir. ValueError for an
    unknown name, BenchmarkUnavailable where it cannot run."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}")
    return importlib.import_module(f"{__name__}.{name}").run(out_dir=out_dir)
