"""How many CPU cores are free right now, and torch's threads sized to them.

torch starts one thread per core. Beside another CPU-bound job on this 2-core machine that
oversubscribes the cores, and torch's threads wait on each other at every operation: a run took
~10x longer (354-386 s instead of 38 s). OpenMM's energies run on one thread (energy.py), so the
model's threads are the ones to size. Linux measures the machine's busy time in /proc/stat;
elsewhere the 1-minute load average stands in.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _cpu_times() -> tuple[float, float] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [float(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal (guest is in user)
    return total - idle, total


def busy_cores(interval_s: float = 0.25) -> float:
    """Cores kept busy by other processes over the next `interval_s` (this process excluded)."""
    n = os.cpu_count() or 1
    before, own0 = _cpu_times(), time.process_time()
    if before is None:
        return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    time.sleep(interval_s)
    after, own1 = _cpu_times(), time.process_time()
    d_busy, d_total = after[0] - before[0], after[1] - before[1]
    if d_total <= 0:
        return 0.0
    wall_cores = d_busy / d_total * n  # all processes, this one included
    return max(0.0, wall_cores - (own1 - own0) / interval_s)


def free_cores(interval_s: float = 0.25) -> int:
    """Usable cores minus those others keep busy, rounded, at least 1."""
    return max(1, min(usable_cores(), round(usable_cores() - busy_cores(interval_s))))


@contextmanager
def sized_threads(n: int | None = None):
    """torch's intra-op threads set to `n` (default: the cores free now) inside the block, the
    previous count restored after; yields the count used. The setting is process-wide: callers
    that may run concurrently must take turns (the app holds one lock around it)."""
    import torch

    previous = torch.get_num_threads()
    n = free_cores() if n is None else max(1, int(n))
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)
