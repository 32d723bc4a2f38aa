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
