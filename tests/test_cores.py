"""Free cores and torch threads sized to them."""

import os
import subprocess
import sys
import time

import pytest
import torch

from arbg_core import cores


def test_free_cores_is_within_the_machine():
    n = cores.free_cores(0.1)
    assert 1 <= n <= cores.usable_cores() <= (os.cpu_count() or 1)
    assert 0.0 <= cores.busy_cores(0.1) <= (os.cpu_count() or 1) + 0.5


def test_own_work_is_not_counted_but_another_process_is():
    t0 = time.process_time()
    busy_self = cores.busy_cores(0.3)  # sleeping: nothing of ours to subtract, just the machine
    if busy_self > cores.usable_cores() - 1:
        pytest.skip("every core is already busy: one more process cannot show")
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        busy_child = cores.busy_cores(0.5)
    finally:
        child.kill()
        child.wait()
    assert time.process_time() - t0 < 0.3
    assert busy_child > busy_self + 0.5  # one more CPU-bound process is seen


def test_sized_threads_sets_and_restores():
    before = torch.get_num_threads()
    with cores.sized_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with cores.sized_threads() as n:
        assert 1 <= n <= cores.usable_cores() and torch.get_num_threads() == n


def test_monitor_sees_a_lasting_job_and_ignores_a_burst():
    """A CPU-bound process busy through the window shows; a burst that ended does not."""
    m = cores.BusyMonitor(period_s=0.2)
    time.sleep(0.5)
    idle = m.busy(window_s=0.5)
    if idle is None or idle > cores.usable_cores() - 1:
        pytest.skip("every core is already busy: one more process cannot show")
    burst = subprocess.Popen([sys.executable, "-c", "import time; t=time.time()\nwhile time.time()-t<0.4: pass"])
    burst.wait()
    time.sleep(0.3)
    after_burst = m.busy(window_s=1.2)  # the burst's samples and the quiet ones after it
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.3)
        lasting = m.busy(window_s=0.9)  # only samples taken while the child ran
    finally:
        child.kill()
        child.wait()
    assert after_burst < idle + 0.5
    assert lasting > idle + 0.5
    assert m.free(window_s=0.9) <= cores.usable_cores()
