"""`arbg fit` as a background job (the app's "Build a model for this sequence", DESIGN §18).

One job per system, in the user models folder:
    builds/SYSTEM/job.json   the fit's arguments (a resume reruns them), the pid it started with
    builds/SYSTEM/fit.log    its stdout and stderr
    builds/SYSTEM/start.lock held while a job is being started (two clicks: one job)
    builds/SYSTEM/fit/       the fit folder (fit.py: plan.json, state.json, status.json, model/)
The process is detached (its own session and process group), so it outlives the server that
started it; anyone can read where it is from the folder (`view`), and stop it (`cancel`: SIGTERM
to its process group, MD replicas included) after checking that the pid is this fit's. The fit's
own lock turns away a second writer; `start` attaches to a running job instead of starting one.
The finished model, builds/SYSTEM/fit/model, is listed as SYSTEM-fit (user_models.py).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .files import read_json, write_json
from .peptide import system_name

BUILDS = "builds"
FLAGS_ENV = "ARBG_FIT_FLAGS"  # extra `arbg fit` flags for every job (tests: tiny sizes)
STATES = ("none", "running", "finished", "cancelled", "stopped", "failed")


def job_folder(sequence: str, termini: str, root: str | os.PathLike | None = None) -> Path:
    """builds/SYSTEM in the user models folder (default `user_models_dir()`)."""
    from .user_models import user_models_dir

    root = Path(root) if root is not None else user_models_dir()
    return root / BUILDS / system_name(sequence, termini)


def fit_args(sequence: str, termini: str, budget_hours: float) -> list[str]:
    """The `arbg fit` arguments of a job (without --out), with FLAGS_ENV's extra flags."""
    from .fit_plan import FitConfig

    FitConfig(budget_hours=float(budget_hours))  # SettingError for a bad budget, before any work
    return [sequence, "--termini", termini, "--budget-hours", f"{float(budget_hours):g}",
            *shlex.split(os.environ.get(FLAGS_ENV, ""))]


@dataclass(frozen=True)
class JobView:
    """Where a job stands, as a page shows it (no paths, no raw exception text)."""
    state: str  # one of STATES; failed: the fit reported an error (its log has it), stopped:
    # its process ended otherwise (killed, the machine restarted), cancelled: by `cancel`
    stage: str = ""
    stage_index: int = 0
    n_stages: int = 0
    done: float = 0.0
    total: float = 0.0
    unit: str = ""
    stage_eta_s: float | None = None
    eta_s: float | None = None
    plan_s: float | None = None  # the plan's estimate of the whole fit
    budget_s: float | None = None
    budget_hours: float | None = None

    @property
    def fraction(self) -> float:
        return min(max(self.done / self.total, 0.0), 1.0) if self.total else 0.0


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def fit_pid(folder: Path) -> int | None:
    """The pid of the live `arbg fit` working in `folder`, else None: the pid of status.json
    (or, before the fit wrote one, the one it started with), checked to be that fit."""
    _reap()
    pids = []
    for name in ("fit/status.json", "job.json"):
        try:
            pids.append(int(read_json(folder / name)["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    out = str((folder / "fit").resolve())
    for pid in pids:
        words = _cmdline(pid)
        if "fit" in words and out in words:
            return pid
    return None


def _reap() -> None:
    """Collect jobs this process started that have ended (no zombies left behind)."""
    for proc in list(_STARTED):
        if proc.poll() is not None:
            _STARTED.remove(proc)


_STARTED: list[subprocess.Popen] = []


def _read(path: Path) -> dict:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return {}


def view(folder: Path) -> JobView:
    """The job in `folder` (job_folder) as it stands now, read from its files."""
    job = _read(folder / "job.json")
    if not job:
        return JobView("none")
    fit = folder / "fit"
    status, plan = _read(fit / "status.json"), _read(fit / "plan.json")
    common = {"plan_s": plan.get("estimate_s"), "budget_s": plan.get("budget_s"),
              "budget_hours": job.get("budget_hours")}
    if _read(fit / "state.json").get("finished") and (fit / "model").is_dir():
        return JobView("finished", **common)
    stage = str(status.get("stage", ""))
    if fit_pid(folder) is not None:
        stages = status.get("stages") or []
        return JobView("running", stage=stage or "starting", n_stages=len(stages),
                       stage_index=int(status.get("stage_index") or 0),
                       done=float(status.get("done") or 0), total=float(status.get("total") or 0),
                       unit=str(status.get("unit") or ""), stage_eta_s=status.get("stage_eta_s"),
                       eta_s=status.get("eta_s"), **common)
    if job.get("cancelled"):
        return JobView("cancelled", stage=stage, **common)
    return JobView("failed" if stage == "failed" else "stopped", stage=stage, **common)


def start(sequence: str, termini: str, budget_hours: float,
          root: str | os.PathLike | None = None) -> tuple[Path, bool]:
    """Start the job of (sequence, termini) as a detached `arbg fit`, or attach to it: (its
    folder, whether this call started it). A folder that holds an earlier fit is resumed with
    that fit's own arguments (the fit refuses others); a finished one is not rerun. Two
    sessions that click at once: one starts it, the other attaches (a lock on the folder)."""
    import fcntl

    folder = job_folder(sequence, termini, root).resolve()  # its --out, as fit_pid finds it
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / "start.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held for the moment a start takes
        if fit_pid(folder) is not None or view(folder).state == "finished":
            return folder, False
        job = _read(folder / "job.json")
        if not (job.get("args") and (folder / "fit" / "fit.json").is_file()):
            job = {"args": fit_args(sequence, termini, budget_hours),
                   "budget_hours": float(budget_hours)}
        pid = _launch(folder, job["args"])
        write_json(folder / "job.json", {"args": job["args"], "pid": pid, "started": time.time(),
                                         "budget_hours": job["budget_hours"]})
        return folder, True
    finally:
        os.close(fd)


def _launch(folder: Path, args: list[str]) -> int:
    """`arbg fit ARGS --out folder/fit` in its own session, output to folder/fit.log: its pid,
    once /proc shows it as that fit (its cmdline is empty for a moment after the fork)."""
    argv = [sys.executable, "-m", "arbg_core.cli", "fit", *args, "--out", str(folder / "fit")]
    with open(folder / "fit.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1",
                                     "TQDM_MININTERVAL": "10"})  # a log line per 10 s, not 0.1 s
    _STARTED.append(proc)
    t0 = time.monotonic()
    while "fit" not in _cmdline(proc.pid) and proc.poll() is None and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    return proc.pid


def cancel(folder: Path, wait_s: float = 10.0) -> bool:
    """Stop the job in `folder`: SIGTERM to its process group (the fit and its MD replicas),
    then wait up to `wait_s` for it to end. False if no fit of this folder was running."""
    pid = fit_pid(folder)
    if pid is None:
        return False
    job = _read(folder / "job.json")
    write_json(folder / "job.json", {**job, "cancelled": time.time()})
    try:
        if os.getpgid(pid) == pid:  # its own group (start_new_session): the replicas too
            os.killpg(pid, signal.SIGTERM)
        else:
            os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    t0 = time.monotonic()
    while fit_pid(folder) is not None and time.monotonic() - t0 < wait_s:
        time.sleep(0.1)
    return True
