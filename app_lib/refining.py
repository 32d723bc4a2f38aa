"""Home's "Refine for this sequence": a transferable model refined for the system on the page
against the force field alone (DESIGN §16, arbg_core/refine.py), the result saved as a model of
that system in the user models folder (ARBG_USER_MODELS_DIR) and offered as its model.

Like sampling (jobs.py), the work runs in a thread owned by the browser session (`RefineJob`),
so a page switch or a widget change never kills it, and it takes its turn on the CPU with the
sampling runs (`jobs.COMPUTE`). The page follows it in a fragment that reruns every second, so
the rest of the page stays usable; the job never touches streamlit. The folder is built out of
sight and put in place whole (files.output_folder): stopping or failing leaves nothing behind.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st

from arbg_core.cores import shared_monitor, sized_threads
from arbg_core.files import FolderBusy
from arbg_core.refine import RefineConfig, refine_checkpoint

from . import state
from .jobs import COMPUTE, ThreadJob
from .paths import user_models_dir
from .text import plain

K_JOB, K_DONE = "arbg_refine_job", "arbg_refine_done"
K_MINUTES, K_BATCH, K_FRESH, K_START, K_STOP = (
    "refine_minutes", "refine_batch", "refine_fresh", "refine_start", "refine_stop")
DEFAULTS = RefineConfig()
STAGE_TEXT = {"queued": "Waiting for another run to finish (runs take turns on the CPU)",
              "before": "Measuring the ESS of the model as it is, on fresh samples",
              "refine": "Refining against the force field",
              "after": "Measuring the ESS of the refined model, on fresh samples"}


class Stopped(Exception):
    """The user stopped the refinement (raised from the progress callback)."""


@dataclass(frozen=True)
class Outcome:
    """A finished refinement as the page reports it."""
    name: str  # the new model's folder name in the user models folder
    system: tuple[str, str]
    parent: str
    ess_before: float
    ess_after: float
    n_fresh: int
    steps: int
    wall_s: float
    select: bool = True  # not yet offered in the model picker


class RefineJob(ThreadJob):
    """`refine_checkpoint` in a daemon thread; `snapshot()` is safe from the script thread."""

    def __init__(self, loaded, pep, cfg: RefineConfig, dest: Path):
        self.cfg, self.dest, self.parent = cfg, dest, loaded.name
        self.system = (pep.sequence, pep.termini)
        self.label = f"{pep.name} from {loaded.name}"
        self.card: dict | None = None
        self.error: BaseException | None = None
        self.stopped = False
        self.started = self.finished = time.monotonic()
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._progress = {"stage": "queued", "done": 0, "total": 1, "steps": 0, "info": {}}
        self._thread_for(loaded, pep, f"arbg-refine-{self.label}")

    def stop(self) -> None:
        """Ask the job to stop at its next progress report (nothing is saved)."""
        self._stop.set()

    def _report(self, stage: str, done: int, total: int, info: dict) -> None:
        if self._stop.is_set():
            raise Stopped()
        with self._lock:
            p = self._progress
            p.update(stage=stage, done=done, total=total, info={**p["info"], **info})
            if stage == "before" and "ess" in info:
                p["ess_before"] = info["ess"]
            if stage == "refine":
                p["steps"] += 1

    def _work(self, loaded, pep) -> None:
        try:
            while not COMPUTE.acquire(timeout=0.5):  # the sampling runs' turn first
                if self._stop.is_set():
                    raise Stopped()
            try:
                with sized_threads(monitor=shared_monitor()):
                    self.card = refine_checkpoint(loaded, pep, self.cfg, self.dest,
                                                  progress=self._report)
            finally:
                COMPUTE.release()
        except Stopped:
            self.stopped = True
        except BaseException as e:  # noqa: BLE001  (reported on the page by kind, in the log in full)
            self.error = e
            traceback.print_exception(e, file=sys.stderr)
        finally:
            self.finished = time.monotonic()

    def snapshot(self) -> dict:
        """stage, fraction (of the stage), text, elapsed_s."""
        with self._lock:
            p = dict(self._progress)
        frac = min(max(p["done"] / p["total"], 0.0), 1.0) if p["total"] else 0.0
        text = STAGE_TEXT.get(p["stage"], p["stage"])
        if p["stage"] == "refine":
            unit = "s" if self.cfg.steps is None else "steps"
            text += f": {p['done']} / {p['total']} {unit}, {p['steps']} updates"
            if "batch_ess" in p["info"]:
                text += f", ESS of the last batch {p['info']['batch_ess']:.2%}"
        if "ess_before" in p:
            text += f" (ESS before: {p['ess_before']:.2%})"
        return {**p, "fraction": frac, "text": text, "elapsed_s": time.monotonic() - self.started}

    def outcome(self) -> Outcome:
        r = self.card["refined"]
        return Outcome(self.dest.name, self.system, self.parent, r["ess_before"], r["ess_after"],
                       r["n_fresh"], r["steps"], self.finished - self.started)


def _job() -> RefineJob | None:
    return st.session_state.get(K_JOB)


def busy() -> bool:
    job = _job()
    return job is not None and job.running


def start(entry, sequence: str, termini: str, cfg: RefineConfig) -> RefineJob | None:
    """Build the peptide, load the model, choose a fresh folder, start; refuses while a
    refinement of this session runs."""
    from arbg_core.user_models import refined_folder

    if busy():
        st.warning("A refinement is already in progress in this session: wait for it or stop it.")
        return None
    try:
        with st.spinner("Building the peptide and loading the model..."):
            pep = state.peptide(sequence, termini)
            loaded = state.load_model(entry)
            dest = refined_folder(entry.name, sequence, termini, user_models_dir(),
                                  taken=[e.name for e in state.catalog()])
    except (ValueError, OSError) as e:
        st.error(plain(f"Cannot start the refinement ({type(e).__name__})."))
        print(f"refinement not started: {e}", file=sys.stderr)
        return None
    st.session_state.pop(K_DONE, None)
    job = st.session_state[K_JOB] = RefineJob(loaded, pep, cfg, dest).start()
    return job


def collect() -> None:
    """A finished job of this session -> its outcome (the page reports it); before the model
    picker is drawn, so the new model can be selected in it."""
    job = _job()
    if job is None or job.running:
        return
    del st.session_state[K_JOB]
    if job.card is not None:
        st.session_state[K_DONE] = job.outcome()
        return
    st.session_state[K_DONE] = job  # stopped or failed: said once, by `report`


def offer(sequence: str, termini: str, model_names) -> None:
    """Select a just-refined model of this system in the model picker (once)."""
    done = st.session_state.get(K_DONE)
    if isinstance(done, Outcome) and done.select and done.system == (sequence, termini):
        if done.name in model_names:
            st.session_state[state.K_MODEL] = done.name
            st.session_state[K_DONE] = replace(done, select=False)


# ------------------------------------------------------------------------------- the page


def _config(minutes: float, batch: int, fresh: int) -> RefineConfig:
    """The widgets' budget and sizes over RefineConfig's defaults (fkl, drawn at tau 1)."""
    return RefineConfig(steps=None, minutes=float(minutes), batch_size=int(batch),
                        final_n=int(fresh), eval_n=min(DEFAULTS.eval_n, int(fresh)))


def control(entry, sequence: str, termini: str) -> None:
    """Below Home's model picker: for a transferable model, the refinement form; while this
    session's refinement runs, its progress; afterwards, what it gave."""
    job, done = _job(), st.session_state.get(K_DONE)
    here = done is not None and done.system == (sequence, termini)
    if not entry.transferable and job is None and not here:
        return
    with st.expander("Refine for this sequence (no MD)", expanded=job is not None or here):
        if job is not None:
            _follow()
            return
        if here:
            _report(done)
        if entry.transferable:
            _form(entry, sequence, termini)


def _form(entry, sequence: str, termini: str) -> None:
    st.markdown(
        "A transferable model's ensembles of a sequence it was never trained on often rest on "
        "few effective samples (low ESS). Refining draws samples, weights them by the force "
        "field and moves the model towards the weighted samples: no MD needed. The result is a "
        "model of this sequence alone, saved in your models folder and offered here afterwards; "
        "the ESS is measured before and after on fresh samples, and estimates from the refined "
        "model stay exact (its own likelihood weighs its samples).")
    with st.form("refine_form"):
        c = st.columns(3)
        minutes = c[0].number_input(
            "Time budget (minutes)", 0.05, 120.0, value=10.0, step=1.0, key=K_MINUTES,
            help="for the refinement loop; measuring the ESS before, and after at each of three "
                 "temperatures, takes about four times as long as sampling that many fresh "
                 "conformations")
        batch = c[1].number_input("Samples per update", 8, 2048, value=DEFAULTS.batch_size,
                                  step=64, key=K_BATCH, help="drawn and weighted for each step")
        fresh = c[2].number_input("Fresh samples for the ESS", 16, 20_000, value=DEFAULTS.final_n,
                                  step=500, key=K_FRESH, help="measured before and after")
        go = st.form_submit_button(f"Refine {entry.name} for {sequence} ({termini})",
                                   key=K_START, disabled=busy())
    if go and start(entry, sequence, termini, _config(minutes, batch, fresh)) is not None:
        st.rerun()


def _report(done) -> None:
    if isinstance(done, Outcome):
        st.success(plain(f"Refined model {done.name} saved in your models folder and offered "
                         f"as the model above: ESS {done.ess_before:.2%} -> {done.ess_after:.2%} "
                         f"on {done.n_fresh:,} fresh samples ({done.steps} updates; "
                         f"{done.wall_s:.0f} s in all)."))
        if done.ess_after <= done.ess_before:
            st.info(plain(f"The ESS did not rise within this budget: {done.parent} is still "
                          "listed above; refine for longer or keep it."))
        return
    del st.session_state[K_DONE]  # stopped or failed: said once
    if done.stopped:
        st.info("Refinement stopped: nothing was saved.")
    elif isinstance(done.error, FolderBusy):
        st.error("Another refinement is writing the same model folder: try again when it is done.")
    else:
        st.error(plain(f"The refinement failed ({type(done.error).__name__}); nothing was "
                       "saved. The server log has the details."))


def _stop() -> None:
    job = _job()
    if job is not None:
        job.stop()


@st.fragment(run_every=1.0)
def _follow() -> None:
    """The session's refinement: its progress every second, then the whole page again."""
    job = _job()
    if job is None:
        return
    if not job.running:
        st.rerun(scope="app")
    snap = job.snapshot()
    st.progress(snap["fraction"], text=plain(f"{job.label}: {snap['text']}"))
    st.caption(f"Running for {snap['elapsed_s']:.0f} s. You can switch pages or sample "
               "meanwhile (a sampling run waits for its turn on the CPU).")
    st.button("Stop the refinement", key=K_STOP, on_click=_stop)
