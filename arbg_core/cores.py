"""How many CPU cores are free, and torch's threads sized to them.

torch starts one thread per core. Beside another CPU-bound job on this 2-core machine that
oversubscribes the cores, and torch's threads wait on each other at every operation: a run took
~10x longer (354-386 s instead of 38 s). OpenMM's energies run on one thread (energy.py), so the
model's threads are the ones to size. Linux measures the machine's busy time in /proc/stat;
elsewhere the 1-minute load average stands in.
"""

from __future__ import annotations

import os
import threading
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
    return _free(busy_cores(interval_s))


TAKEN = 0.75  # busy fraction from which a core counts as taken


def _free(busy: float) -> int:
    """Usable cores minus the cores others keep busy, a core counting as taken from TAKEN of
    it: a browser drawing the app's progress keeps ~0.6 of a core busy during a run, and there 1
    torch thread took 15-21 s where 2 threads took ~12 s; a CPU-bound job (1.0) takes its core."""
    return max(1, min(usable_cores(), usable_cores() - int(busy + 1 - TAKEN)))


class BusyMonitor:
    """Cores kept busy by other processes, sampled every `period_s` in a daemon thread, so a
    caller can look back instead of measuring at the worst moment. A click in the app's browser
    makes the browser and server busy for a moment: measured over the 0.25 s after the click, an
    idle 2-core machine looked half busy and the run got 1 thread (15.5 s instead of ~12 s). A
    CPU-bound job is busy in every sample; a burst is not, so `busy()` takes the least busy
    sample of the last `window_s` seconds."""

    def __init__(self, period_s: float = 0.5, keep: int = 20):
        import collections

        self.period_s = period_s
        self._samples = collections.deque(maxlen=keep)  # (monotonic time, busy cores)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="arbg-busy-monitor")
        self._thread.start()

    def _run(self) -> None:
        while True:
            b = busy_cores(self.period_s)
            with self._lock:
                self._samples.append((time.monotonic(), b))

    def busy(self, window_s: float = 5.0) -> float | None:
        """The least busy sample of the last `window_s` s; None before the first sample."""
        now = time.monotonic()
        with self._lock:
            recent = [b for t, b in self._samples if now - t <= window_s]
        return min(recent) if recent else None

    def free(self, window_s: float = 5.0) -> int:
        """Usable cores minus those busy (`busy`), at least 1; measured now if no sample yet."""
        b = self.busy(window_s)
        if b is None:
            return free_cores()
        return _free(b)


@contextmanager
def sized_threads(n: int | None = None, monitor: BusyMonitor | None = None):
    """torch's intra-op threads set to `n` (default: the cores free now) inside the block, the
    previous count restored after; yields the count used. The setting is process-wide: callers
    that may run concurrently must take turns (the app holds one lock around it). With a
    `monitor`, the count comes from its recent samples rather than a fresh measurement."""
    import torch

    previous = torch.get_num_threads()
    if n is None:
        n = monitor.free() if monitor is not None else free_cores()
    n = max(1, int(n))
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(previous)


_SHARED: list[BusyMonitor] = []
_MONITOR_LOCK = threading.Lock()


def shared_monitor() -> BusyMonitor:
    """The process's one BusyMonitor, started on first use (the app starts it at import, so
    its history covers the seconds before a click)."""
    with _MONITOR_LOCK:
        if not _SHARED:
            _SHARED.append(BusyMonitor())
        return _SHARED[0]

