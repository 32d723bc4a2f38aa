"""`python -m arbg_core.bench [NAME...] --out DIR`: run benchmarks (default: all) in turn."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import BenchmarkUnavailable, available_benchmarks, run_benchmark


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m arbg_core.bench", description=__doc__)
    p.add_argument("names", nargs="*", metavar="NAME",
                   help=f"which ones (default: all of {', '.join(available_benchmarks())})")
    p.add_argument("--out", default="results", metavar="DIR")
    a = p.parse_args(argv)
    unknown = sorted(set(a.names) - set(available_benchmarks()))
    if unknown:
        p.error(f"unknown benchmark {unknown[0]!r}; available: {', '.join(available_benchmarks())}")
    for name in a.names or available_benchmarks():
        t0 = time.perf_counter()
        try:
            run_benchmark(name, a.out)
        except BenchmarkUnavailable as e:
            print(f"{name}: skipped: {e}", file=sys.stderr)
            continue
        print(f"{name}: {time.perf_counter() - t0:.0f} s -> {Path(a.out) / name}*.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
