"""The session's sampling job, from the Sample button to the finished run (`AppRun`).

Sampling runs in a thread owned by one browser session (`Job`), so a page switch or a widget
change (both rerun the script) never kills it; the script only polls `Job.snapshot()`. The job
never touches streamlit: the pipeline's progress callback writes into a plain dict under a lock.
The functions below keep the job in st.session_state and show its progress.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import replace

import streamlit as st
import torch

from arbg_core.cores import shared_monitor, sized_threads
from arbg_core.pipeline import SampleConfig, SampleResult, run_sampling

from . import state
from .catalog import ModelEntry
from .run import AppRun
from .text import plain

STAGE_TEXT = {"queued": "Waiting for another run to finish (runs take turns on the CPU)",
              "sample": "Drawing samples from the model", "mirror": "Scoring mirror images (exact density)",
              "energy": "Force-field energies (OpenMM)", "reweight": "Reweighting",
              "smc": "Twisted SMC, residue by residue (model + partial energies)"}


# One pool for the whole process: runs of different browser sessions, and refinements
# (refining.py), take turns, each with torch threads sized to the cores free (BusyMonitor)
# (2 sessions x 2 threads on 2 cores, or 2 threads beside another CPU-bound job, made every run
# ~10x slower here).
COMPUTE = threading.Lock()
shared_monitor()  # samples how busy the machine is from now on, so a click is sized by history


class ThreadJob:
    """A job's `_work(loaded, pep)` in a daemon thread: start, running, wait (shared by sampling
    here and refinement in refining.py)."""

    def _thread_for(self, loaded, pep, name: str) -> None:
        self._thread = threading.Thread(target=self._work, args=(loaded, pep), daemon=True,
                                        name=name)

    def start(self):
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, seconds: float) -> None:
        self._thread.join(seconds)


class Job(ThreadJob):
    """`run_sampling` in a daemon thread; `snapshot()` is safe to call from the script thread."""

    def __init__(self, loaded, pep, cfg: SampleConfig, label: str):
        self.label = label
        self.cfg = cfg
        self.meta: dict = {}  # model_name, settings, prep_timings: what AppRun needs besides the result
        self.result: SampleResult | None = None
        self.error: BaseException | None = None
        self.started, self.started_unix = time.monotonic(), time.time()
        self._lock = threading.Lock()
        self._progress = {"stage": "queued", "done": 0, "total": cfg.n, "since": self.started}
        self._thread_for(loaded, pep, f"arbg-sample-{label}")

    def _report(self, stage: str, done: int, total: int) -> None:
        self._follow_free_cores()
        with self._lock:
            p = self._progress
            if self.cfg.method == "smc" and stage in ("sample", "energy"):
                stage = "smc"  # blocks alternate generation and partial energies: one stage
            if stage != p["stage"]:
                p.update(stage=stage, since=time.monotonic())
            p.update(done=done, total=total)

    def _follow_free_cores(self) -> None:
        """Called in the job's thread between operations: at most once a second, torch's
        threads follow the cores free over the last 1.5 s, so a run started during a burst
        (the browser redrawing after the click) or beside a job that has since ended gets the
        cores back, and one that a new job has joined gives one up."""
        now = time.monotonic()
        if now - self._resized < 1.0:
            return
        self._resized = now
        n = shared_monitor().free(window_s=1.5)
        if n != torch.get_num_threads():
            torch.set_num_threads(n)
            self.meta["threads"] = max(self.meta.get("threads", 0), n)

    def _work(self, loaded, pep) -> None:
        try:
            with COMPUTE, sized_threads(monitor=shared_monitor()) as threads:
                self.meta["threads"] = threads
                self._resized = time.monotonic()
                self._report("sample", 0, self.cfg.n)
                self.result = run_sampling(loaded, pep, self.cfg, progress=self._report)
            _log(f"{self.label}: {self.cfg.n} samples in {time.monotonic() - self.started:.2f} s "
                 f"({', '.join(f'{k} {v:.2f} s' for k, v in self.result.timings.items())}; "
                 f"threads up to {self.meta['threads']}; unix time {self.started_unix:.2f} to "
                 f"{time.time():.2f})")
        except BaseException as e:  # noqa: BLE001  (shown to the user, never re-raised in a thread)
            self.error = e

    def snapshot(self) -> dict:
        """stage, done, total, fraction, eta_s (None until measurable), elapsed_s, text."""
        with self._lock:
            p = dict(self._progress)
        now = time.monotonic()
        frac = p["done"] / p["total"] if p["total"] else 0.0
        stage_s = now - p["since"]
        eta = stage_s * (1 - frac) / frac if 0 < frac < 1 else None
        text = f"{STAGE_TEXT.get(p['stage'], p['stage'])}"
        if p["stage"] in ("sample", "mirror", "energy", "smc") and p["total"] > 1:
            text += f": {p['done']:,} / {p['total']:,}"
        text += f" — ETA {eta:.0f} s" if eta is not None else ""
        return {**p, "fraction": min(max(frac, 0.0), 1.0), "eta_s": eta,
                "elapsed_s": now - self.started, "text": text}


def _log(message: str) -> None:
    """One line on the server's stderr (an operator's record; never shown on a page)."""
    print(f"arbg job {message}", file=sys.stderr, flush=True)


def _job() -> Job | None:
    return st.session_state.get(state.K_JOB)


def busy() -> bool:
    """A run of this session is in progress. The Sample button is rendered disabled then, and
    Streamlit ignores clicks on disabled widgets server-side, so a run cannot be started twice."""
    job = _job()
    return job is not None and job.running


def preload(entry: ModelEntry, sequence: str, termini: str):
    """(loaded model, peptide) of the chosen system, built now (both are cached for every
    session), with the shipped reference's energies for the Energy page, so a click on Sample
    starts sampling at once and the pages open faster; (None, None) if either fails (the
    click then says why) or while a run is in progress (its CPU time is not taken)."""
    if busy():
        return None, None
    try:
        with st.spinner("Loading the model and building the peptide..."):
            loaded, pep = state.load_model(entry), state.peptide(sequence, termini)
            if state.reference_angles(entry.name, pep.name, pep.topology) is not None:
                state.shipped_reference_energies(entry.name, pep.name, loaded.config.preset)
            return loaded, pep
    except (ValueError, OSError):
        return None, None


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
    st.session_state[state.K_RUN] = AppRun(job.result, **job.meta, label=job.label,
                                           wall_s=job.snapshot()["elapsed_s"])
    del st.session_state[state.K_JOB]


# A browser on the same cores as the run (this 2-core machine, or a laptop serving itself) drew
# the spinners' and progress bar's animations with a whole core during a 2,000-sample run
# (22 CPU-s in 21 s); without them 5.5 CPU-s (5.0 with redraws once a second), and the run took
# 15-16 s instead of 20.5 s. The progress text still moves every second; only the motion
# between updates goes.
_STILL = ("<style>*, *::before, *::after {animation: none !important; "
          "transition: none !important;}</style>")


def still() -> None:
    """Stop animations on this page while it follows a run (constant CSS, no user text)."""
    st.markdown(_STILL, unsafe_allow_html=True)


def follow_job() -> None:
    """Progress of the session's job inside st.status until it finishes (safe to interrupt:
    the job keeps running and the next script run follows it again). A finished job becomes the
    session's run and the script reruns, so everything drawn while it ran (the disabled Sample
    button above all) is drawn again as it is now."""
    job = _job()
    if job is None:
        return
    still()
    with st.status(f"Sampling {job.label}", expanded=True) as box:
        bar = st.progress(0.0, text="starting")
        while job.running:
            snap = job.snapshot()
            bar.progress(snap["fraction"], text=snap["text"])
            job.wait(1.0)  # fewer redraws: the browser may share these cores
        if job.error is not None:
            box.update(label="Sampling failed", state="error")
            st.error(plain(f"{type(job.error).__name__}: {job.error}"))
            del st.session_state[state.K_JOB]
            return
        bar.progress(1.0, text="done")
    collect_job()
    st.rerun()


@st.fragment(run_every=1.0)
def progress_note() -> None:
    """On a results page while this session's job runs: its progress, then a rerun of the whole
    page once it has finished, so the page shows the new run."""
    job = _job()
    if job is None:
        return
    if not job.running:
        st.rerun(scope="app")
    still()
    snap = job.snapshot()
    previous = st.session_state.get(state.K_RUN)
    st.info(plain(f"A new run is in progress: {job.label}. ") + (
        f"This page still shows the previous run ({previous.ensemble.n:,} samples); it updates "
        "by itself when the new one is done." if previous is not None else
        "Results appear here by themselves when it is done."))
    st.progress(snap["fraction"], text=snap["text"])


def current_run() -> AppRun | None:
    """The session's finished run (collecting a job that has just finished), or None."""
    collect_job()
    return st.session_state.get(state.K_RUN)


def require_run() -> AppRun:
    """The session's finished run, or a pointer to the Home page and st.stop(). While a job of
    this session runs, its progress is shown above the page (which updates when it is done)."""
    run = current_run()
    job = _job()
    if job is not None and job.running:
        progress_note()
    if run is None:
        if job is not None and job.error is not None:
            st.error(plain(f"The last run failed: {job.error}"))
        elif job is None or not job.running:
            st.info("No samples yet in this browser session: choose a system on the Home page and "
                    "press **Sample**.")
        st.page_link("app.py", label="Home: choose a system and sample")
        st.stop()
    return run


def sample_more(run: AppRun, n: int) -> Job | None:
    """Start the run's settings again with `n` samples (a remedy for a low ESS); the Home
    widgets are set to match."""
    entry = next((e for e in state.catalog() if e.name == run.model_name), None)
    if entry is None:
        st.error(plain(f"The model {run.model_name} is no longer available."))
        return None
    s = run.settings
    st.session_state[state.K_N] = n
    return start_sampling(entry, s["sequence"], s["termini"], replace(run.result.config, n=n),
                          {**s, "n": n})
