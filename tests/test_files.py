"""files.py: result folders put in place whole, under a lock (issue #18).

Through `arbg sample --out`: a folder that is a file, unwritable, a user's own or on a full disk
is refused with one line and left as it was; a non-ASCII name works; a kill at any moment while
the result is written leaves the old folder or the new one, never a mix; a second writer is
turned away while the first one runs.
"""

import json
import os
import resource
import signal
import time
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from arbg_core import files
from arbg_core.files import output_folder
from arbg_core.trajectories import load_trajectory
from cli_run import arbg_process, refuses, run_cli


# ------------------------------------------------------------------------------- sample --out


def test_out_is_an_existing_file(capsys, tmp_path, tiny_checkpoint):
    f = tmp_path / "file"
    f.write_text("mine")
    refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--out", f, match="file")
    assert f.read_text() == "mine"
    refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--out", f / "sub")


def test_out_cannot_be_written(capsys, tmp_path, tiny_checkpoint):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    # root writes anywhere: then a place no one can create folders in
    where = ro / "out" if not os.access(ro, os.W_OK) else Path("/proc/arbg-readonly/out")
    refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--out", where)
    ro.chmod(0o755)


def test_out_with_a_non_ascii_name_works(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "résultats" / "échantillons"
    rc, _, err = run_cli(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--out", out)
    assert rc == 0, err[-2000:]
    # mdtraj's own DCD reader takes ASCII paths only; arbg's reader (CLI and app) takes any
    assert load_trajectory(out / "samples.dcd", out / "topology.pdb").n_frames == 8


def test_out_that_holds_other_files_is_left_alone(capsys, tmp_path, tiny_checkpoint):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--out", mine,
            match="other files")
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]


def _limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))


def test_full_disk_leaves_the_old_result(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "s"
    rc, _, err = run_cli(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--seed", 1,
                         "--out", out)
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    p = arbg_process("sample", "--model", tiny_checkpoint, "--n", 400, "--seed", 2, "--out", out,
                     preexec_fn=_limit_file_size)
    _, err = p.communicate(timeout=300)
    lines = [l for l in err.strip().splitlines() if "sample" not in l or "error" in l]
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]


# ----------------------------------------------------------------------- writing: kill, lock


def _snapshot(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _is_complete(folder: Path, n: int, seed: int) -> bool:
    summary = json.loads((folder / "summary.json").read_text())
    z = np.load(folder / "samples.npz")
    traj = md.load(str(folder / "samples.dcd"), top=str(folder / "topology.pdb"))
    return (summary["config"]["seed"] == seed and summary["counts"]["n"] == n
            and len(z["log_q"]) == n and traj.n_frames == n)


def _wait_for_writing(parent: Path, since_ns: int, proc, deadline=240.0) -> bool:
    """Until the run writes its first file (anywhere under `parent`, lock files aside)."""
    t0 = time.time()
    while time.time() - t0 < deadline and proc.poll() is None:
        for p in parent.rglob("*"):
            try:
                if p.is_file() and not p.name.endswith(".lock") and p.stat().st_mtime_ns > since_ns:
                    return True
            except FileNotFoundError:  # moved or removed while we looked
                continue
        time.sleep(0.001)
    return False


def _wait_for_start(parent: Path, proc, deadline=240.0) -> bool:
    """Until anything appears in `parent` (a lock, a temporary folder or the result)."""
    t0 = time.time()
    while time.time() - t0 < deadline and proc.poll() is None:
        if any(parent.iterdir()):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("delay", [0.0, 0.01, 0.03])
def test_kill_during_writing_leaves_the_old_or_the_new_folder(capsys, tmp_path, tiny_checkpoint,
                                                              delay):
    out = tmp_path / "s"
    assert run_cli(capsys, "sample", "--model", tiny_checkpoint, "--n", 16, "--seed", 1,
                   "--out", out)[0] == 0
    old = _snapshot(out)
    since = max(p.stat().st_mtime_ns for p in out.iterdir())
    proc = arbg_process("sample", "--model", tiny_checkpoint, "--n", 3000, "--batch-size", 1000,
                        "--seed", 2, "--out", out, start_new_session=True)
    assert _wait_for_writing(tmp_path, since, proc), "the run ended before writing"
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert out.is_dir()
    assert _snapshot(out) == old or _is_complete(out, 3000, 2), "a mix of the old and new run"


def test_a_second_writer_is_refused(capsys, tmp_path, tiny_checkpoint):
    out = tmp_path / "s"
    first = arbg_process("sample", "--model", tiny_checkpoint, "--n", 4000, "--batch-size", 1000,
                         "--seed", 1, "--out", out)
    _wait_for_start(tmp_path, first)
    line = refuses(capsys, "sample", "--model", tiny_checkpoint, "--n", 8, "--seed", 2,
                   "--out", out, match=["another", "in use", "locked"])
    assert str(out) in line
    assert first.wait(timeout=300) == 0, first.stderr.read()[-2000:]
    assert _is_complete(out, 4000, 1)




# ------------------------------------------------------------------ output_folder on its own


def _make(path: Path, text: str) -> None:
    with output_folder(path, "result.txt") as tmp:
        (tmp / "result.txt").write_text(text)


def test_output_folder_replaces_whole_or_not_at_all(tmp_path):
    out = tmp_path / "r"
    _make(out, "old")
    with pytest.raises(RuntimeError):
        with output_folder(out, "result.txt") as tmp:
            (tmp / "result.txt").write_text("half")
            raise RuntimeError("killed mid-write")
    assert (out / "result.txt").read_text() == "old"
    _make(out, "new")
    assert (out / "result.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_output_folder_recovers_after_a_killed_writer(tmp_path):
    """A folder moved aside by the two-rename fallback (a kill between the renames) is put back
    before anything else; a killed writer's temporary folder is removed."""
    out = tmp_path / "r"
    _make(out, "old")
    out.rename(files._hidden(out, "old-123"))
    files._hidden(out, "tmp-456").mkdir()
    assert not out.exists()
    with output_folder(out, "result.txt"):
        assert (out / "result.txt").read_text() == "old"  # put back under the lock
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_output_folder_never_replaces_what_appeared_meanwhile(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(ValueError, match="other files"):
        with output_folder(out, "result.txt") as tmp:
            (tmp / "result.txt").write_text("ours")
            out.mkdir()  # someone else's folder, made while we worked
            (out / "mine").write_text("theirs")
    assert [p.name for p in out.iterdir()] == ["mine"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
