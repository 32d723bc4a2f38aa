import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mdtraj as md
import numpy as np

from arbg_core.md import MDConfig, load_run, run_md

ARGS = ["md", "A", "--termini", "capped", "--ns", "0.3", "--save-ps", "1", "--warmup-ps", "1",
        "--chunk-frames", "20", "--seed", "7"]


def arbg(*args):
    return [sys.executable, "-m", "arbg_core.cli", *args]


def test_kill_and_resume_gives_the_uninterrupted_trajectory(tmp_path):
    """kill -9 mid-run, rerun the same command: exactly the requested frames, no duplicates,
    no gaps; with the integrator's RNG in the checkpoint, bit-for-bit the uninterrupted run."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    proc = subprocess.Popen(arbg(*ARGS, "--out", str(killed)), stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = killed / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        if state.exists() and json.loads(state.read_text())["chunks_done"] >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_at_kill = json.loads(state.read_text())["chunks_done"]
    assert 3 <= done_at_kill < 15, "the kill must land mid-run"
    subprocess.run(arbg(*ARGS, "--out", str(killed)), check=True, stderr=subprocess.DEVNULL)
    subprocess.run(arbg(*ARGS, "--out", str(clean)), check=True, stderr=subprocess.DEVNULL)

    resumed, reference = load_run(killed), load_run(clean)
    assert resumed.n_frames == reference.n_frames == 300
    np.testing.assert_array_equal(resumed.xyz, reference.xyz)
    assert not list(killed.glob("*.tmp*"))
    assert len(list(killed.glob("checkpoint_*"))) == 1


def test_chunks_reload_with_topology(tmp_path, ala2):
    cfg = MDConfig(ns=0.025, warmup_ps=1, chunk_frames=10, seed=3)
    run_md(ala2.topology, ala2.xyz, tmp_path, cfg)
    traj = load_run(tmp_path)
    assert traj.n_frames == 25 and traj.n_atoms == 22
    # The chunks are plain DCD files next to a PDB: any mdtraj user can read them.
    chunks = sorted(str(p) for p in Path(tmp_path).glob("chunk_*.dcd"))
    assert len(chunks) == 3
    again = md.load(chunks, top=str(tmp_path / "topology.pdb"))
    np.testing.assert_allclose(again.xyz, traj.xyz)
    assert np.isfinite(traj.xyz).all() and np.abs(traj.xyz).max() < 10


def test_resume_with_other_settings_is_refused(tmp_path, ala2):
    run_md(ala2.topology, ala2.xyz, tmp_path, MDConfig(ns=0.005, warmup_ps=1, chunk_frames=5))
    try:
        run_md(ala2.topology, ala2.xyz, tmp_path, MDConfig(ns=0.005, warmup_ps=1, chunk_frames=5,
                                                           seed=9))
    except ValueError as e:
        assert "seed" in str(e)
    else:
        raise AssertionError("a different seed must not silently continue another run")


def test_a_run_extended_to_more_ns_is_the_longer_run(tmp_path, ala2):
    """--ns may grow on a folder: the extension is frame for frame the run that asked for the
    larger --ns from the start; its md.json says the new length; any other change is refused."""
    short, long_ = tmp_path / "short", tmp_path / "long"
    cfg = dict(warmup_ps=1, chunk_frames=5, seed=4, platform="Reference")
    run_md(ala2.topology, ala2.xyz, short, MDConfig(ns=0.01, **cfg))
    run_md(ala2.topology, ala2.xyz, short, MDConfig(ns=0.02, **cfg))
    run_md(ala2.topology, ala2.xyz, long_, MDConfig(ns=0.02, **cfg))
    extended, reference = load_run(short), load_run(long_)
    assert extended.n_frames == reference.n_frames == 20
    np.testing.assert_array_equal(extended.xyz, reference.xyz)
    assert json.loads((short / "md.json").read_text())["config"]["ns"] == 0.02
    for other in (dict(ns=0.03, seed=5), dict(ns=0.03, chunk_frames=4)):
        try:
            run_md(ala2.topology, ala2.xyz, short, MDConfig(**(cfg | other)))
        except ValueError as e:
            assert "different settings" in str(e)
        else:
            raise AssertionError(f"{other} must not continue the run")


def test_replicas_are_independent(tmp_path):
    out = tmp_path / "reps"
    subprocess.run(arbg("md", "A", "--termini", "capped", "--ns", "0.01", "--warmup-ps", "1",
                        "--chunk-frames", "5", "--replicas", "2", "--out", str(out)),
                   check=True, stderr=subprocess.DEVNULL)
    a, b = (load_run(out / f"replica_{r:02d}") for r in range(2))
    assert a.n_frames == b.n_frames == 10
    assert not np.allclose(a.xyz, b.xyz)
    assert load_run(out).n_frames == 20


def test_usage_errors_exit_2():
    r = subprocess.run(arbg("md", "--ns", "1", "--out", "x"), capture_output=True, text=True)
    assert r.returncode == 2 and "SEQ" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = subprocess.run(arbg("build", "A1", "--out", "x.pdb"), capture_output=True, text=True)
    assert r.returncode == 2 and "position 2" in r.stderr
