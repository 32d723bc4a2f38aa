"""The session's sampling job, from the Sample button to the finished run (`AppRun`).

Sampling runs in a thread owned by one browser session (`Job`), so a page switch or a widget
change (both rerun the script) never kills it; the script only polls `Job.snapshot()`. The job
never touches streamlit: the pipeline's progress callback writes into a plain dict under a lock.
The functions below keep the job in st.session_state and show its progress.
"""

from __future__ import annotations

import threading
import time

import streamlit as st

from arbg_core.pipeline import SampleConfig, SampleResult, run_sampling

from . import state
from .catalog import ModelEntry
from .run import AppRun
from .text import plain

STAGE_TEXT = {"sample": "Drawing samples from the model", "mirror": "Scoring mirror images (exact density)",
              "energy": "Force-field energies (OpenMM)", "reweight": "Reweighting",
              "smc": "Twisted SMC, residue by residue (model + partial energies)"}


class Job:
    """`run_sampling` in a daemon thread; `snapshot()` is safe to call from the script thread."""

    def __init__(self, loaded, pep, cfg: SampleConfig, label: str):
        self.label = label
        self.cfg = cfg
        self.meta: dict = {}  # model_name, settings, prep_timings: what AppRun needs besides the result
        self.result: SampleResult | None = None
        self.error: BaseException | None = None
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._progress = {"stage": "sample", "done": 0, "total": cfg.n, "since": self.started}
        self._thread = threading.Thread(target=self._work, args=(loaded, pep), daemon=True,
                                        name=f"arbg-sample-{label}")

    def start(self) -> "Job":
        self._thread.start()
        return self

    def _report(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            p = self._progress
            if self.cfg.method == "smc" and stage in ("sample", "energy"):
                stage = "smc"  # blocks alternate generation and partial energies: one stage
            elif stage == "sample" and done >= total:
                stage, done, total = "mirror", 0, 1  # next comes the teacher-forced mirror pass
            if stage != p["stage"]:
                p.update(stage=stage, since=time.monotonic())
            p.update(done=done, total=total)

    def _work(self, loaded, pep) -> None:
        try:
            self.result = run_sampling(loaded, pep, self.cfg, progress=self._report)
        except BaseException as e:  # noqa: BLE001  (shown to the user, never re-raised in a thread)
            self.error = e

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, seconds: float) -> None:
        self._thread.join(seconds)

    def snapshot(self) -> dict:
        """stage, done, total, fraction, eta_s (None until measurable), elapsed_s, text."""
        with self._lock:
            p = dict(self._progress)
        now = time.monotonic()
        frac = p["done"] / p["total"] if p["total"] else 0.0
        stage_s = now - p["since"]
        eta = stage_s * (1 - frac) / frac if 0 < frac < 1 else None
        text = f"{STAGE_TEXT.get(p['stage'], p['stage'])}"
        if p["stage"] in ("sample", "energy", "smc"):
            text += f": {p['done']:,} / {p['total']:,}"
        text += f" — ETA {eta:.0f} s" if eta is not None else ""
        return {**p, "fraction": min(max(frac, 0.0), 1.0), "eta_s": eta,
                "elapsed_s": now - self.started, "text": text}


def _job() -> Job | None:
    return st.session_state.get(state.K_JOB)


def busy() -> bool:
    """A run of this session is in progress. The Sample button is rendered disabled then, and
    Streamlit ignores clicks on disabled widgets server-side, so a run cannot be started twice."""
    job = _job()
    return job is not None and job.running


def start_sampling(entry: ModelEntry, sequence: str, termini: str, cfg: SampleConfig,
                   settings: dict) -> Job | None:
    """Build the peptide, load the model, start the job; refuses while one is running."""
    if busy():
        st.warning("A run is already in progress in this session: wait for it to finish.")
        return None
    try:
        with st.spinner("Building the peptide and loading the model..."):
            t0 = time.perf_counter()
            pep = state.peptide(sequence, termini)
            t1 = time.perf_counter()
            loaded = state.load_model(entry)
            t2 = time.perf_counter()
    except (ValueError, OSError) as e:  # unsupported residue, broken or missing checkpoint files
        st.error(plain(f"Cannot start: {e}"))
        return None
    job = Job(loaded, pep, cfg, label=f"{pep.name} with {entry.name}")
    job.meta = {"model_name": entry.name, "settings": settings,
                "prep_timings": {"build peptide": t1 - t0, "load model": t2 - t1}}
    st.session_state[state.K_JOB] = job.start()
    return job


def collect_job() -> None:
    """Move a finished job's result into the session's run (errors stay on the job)."""
    job = _job()
    if job is None or job.running or job.result is None:
        return
    st.session_state[state.K_RUN] = AppRun(job.result, **job.meta)
    del st.session_state[state.K_JOB]


def follow_job() -> None:
    """Progress of the session's job inside st.status until it finishes (safe to interrupt:
    the job keeps running and the next script run follows it again)."""
    job = _job()
    if job is None:
        return
    with st.status(f"Sampling {job.label}", expanded=True) as box:
        bar = st.progress(0.0, text="starting")
        while job.running:
            snap = job.snapshot()
            bar.progress(snap["fraction"], text=snap["text"])
            job.wait(0.25)
        elapsed = job.snapshot()["elapsed_s"]
        if job.error is not None:
            box.update(label="Sampling failed", state="error")
            st.error(plain(f"{type(job.error).__name__}: {job.error}"))
            del st.session_state[state.K_JOB]
            return
        bar.progress(1.0, text="done")
        box.update(label=f"Sampled {job.cfg.n:,} conformations of {job.label} in {elapsed:.1f} s",
                   state="complete", expanded=False)
    collect_job()


def current_run() -> AppRun | None:
    """The session's finished run (collecting a job that has just finished), or None."""
    collect_job()
    return st.session_state.get(state.K_RUN)


def require_run() -> AppRun:
    """The session's finished run, or a pointer to the Home page and st.stop()."""
    run = current_run()
    if run is None:
        job = _job()
        if job is not None and job.running:
            st.info(f"Still sampling ({job.snapshot()['text']}). Results appear here when it is done.")
        elif job is not None and job.error is not None:
            st.error(plain(f"The last run failed: {job.error}"))
        else:
            st.info("No samples yet in this browser session: choose a system on the Home page and "
                    "press **Sample**.")
        st.page_link("app.py", label="Home: choose a system and sample")
        st.stop()
    return run
