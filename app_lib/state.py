"""All caching and per-session state of the app: the one module that uses st.cache_* and
st.session_state (pages call these functions; arbg_core never sees streamlit).

Process-wide (shared by every browser session, never mutated):
  models are loaded once per (folder, weights mtime) with st.cache_resource, on the device they
  will run on, so sampling never moves them; peptides, reference frames and reference energies
  are data (st.cache_data: each caller gets its own copy). OpenMM contexts / EnergyModel objects
  are never cached: every run and every comparison makes its own.
Per session (st.session_state): the finished run, the running job, upload validation results.
Nothing here runs at import time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import streamlit as st

from arbg_core import checkpoint
from arbg_core.pipeline import SampleConfig

from . import catalog as cat
from .run import AppRun, Job
from .text import plain

REPO = Path(__file__).resolve().parent.parent
MODELS_ENV, REFERENCE_ENV = "ARBG_MODELS_DIR", "ARBG_REFERENCE_DIR"
MAX_SAMPLES = 20_000
K_RUN, K_JOB, K_UPLOAD_MEMO, K_RECORD_MSG = "arbg_run", "arbg_job", "arbg_upload_memo", "arbg_record_msg"
# Home widgets (keys shared with the run-record loader)
K_SOURCE, K_SYSTEM, K_SEQUENCE, K_TERMINI = "home_source", "home_system", "home_sequence", "home_termini"
K_MODEL, K_N, K_SEED, K_METHOD, K_SUBMIT = "home_model", "home_n", "home_seed", "home_method", "home_submit"
SOURCES = ("A shipped system", "Type a sequence")


def tau_key(model_name: str) -> str:
    return f"home_tau::{model_name}"


# ------------------------------------------------------------------------------ locations


def models_dir() -> Path:
    return Path(os.environ.get(MODELS_ENV) or REPO / "assets" / "models")


def reference_dir() -> Path:
    """ARBG_REFERENCE_DIR, else `reference/` beside the models folder (assets/reference)."""
    return Path(os.environ.get(REFERENCE_ENV) or models_dir().parent / "reference")


def reference_path(model_name: str, system: str | None = None) -> Path | None:
    """reference/MODEL/SYSTEM.npz (a transferable model's MD of one system, e.g. AR-zw), else
    reference/MODEL.npz (a single-system model's), else None."""
    for path in ([reference_dir() / model_name / f"{system}.npz"] if system else []) + [
            reference_dir() / f"{model_name}.npz"]:
        if path.is_file():
            return path
    return None


# ------------------------------------------------------------------------ process-wide caches


@st.cache_data(ttl=30, show_spinner=False)
def _catalog(root: str) -> list[cat.ModelEntry]:
    return checkpoint.list_shipped(root)


def catalog() -> list[cat.ModelEntry]:
    """Shipped models (re-read at most every 30 s, so a newly trained model appears)."""
    return _catalog(str(models_dir()))


@st.cache_resource(show_spinner=False)
def smc_available() -> bool:
    try:
        import arbg_core.smc  # noqa: F401
    except ImportError:
        return False
    return True


@st.cache_resource(show_spinner=False)
def device() -> str:
    from arbg_core.sampling import resolve_device

    return str(resolve_device("auto"))


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model(path: str, stamp: float):
    """Shared by all sessions: eval mode, already on the run device, never mutated."""
    return checkpoint.load(path, device=device())


def load_model(entry: cat.ModelEntry):
    weights = entry.path / checkpoint.WEIGHTS
    return _load_model(str(entry.path), weights.stat().st_mtime if weights.exists() else 0.0)


@st.cache_data(show_spinner=False, max_entries=32)
def peptide(sequence: str, termini: str):
    from arbg_core.peptide import build

    return build(sequence, termini)


@st.cache_data(show_spinner=False, max_entries=8)
def _shipped_reference(path: str, stamp: float):
    from arbg_core.report import load_reference

    return load_reference(path)


def shipped_reference(model_name: str, system: str | None = None):
    """The shipped reference MD of a model (test split; of `system` for a transferable one), or None."""
    path = reference_path(model_name, system)
    return None if path is None else _shipped_reference(str(path), path.stat().st_mtime)


@st.cache_data(show_spinner=False, max_entries=8)
def _reference_energies(path: str, stamp: float, preset: str):
    from arbg_core.energy import EnergyModel

    traj = _shipped_reference(path, stamp)
    return EnergyModel(traj.topology, preset).reduced_energy(traj.xyz)  # context made and dropped here


# ---------------------------------------------------------------------------- the session's run


def current_run() -> AppRun | None:
    collect_job()
    return st.session_state.get(K_RUN)


def require_run() -> AppRun:
    """The session's finished run, or a pointer to the Home page and st.stop()."""
    run = current_run()
    if run is None:
        job = st.session_state.get(K_JOB)
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


def busy() -> bool:
    """A run of this session is in progress. The Sample button is rendered disabled then, and
    Streamlit ignores clicks on disabled widgets server-side, so a run cannot be started twice."""
    job = st.session_state.get(K_JOB)
    return job is not None and job.running


def start_sampling(entry: cat.ModelEntry, sequence: str, termini: str, cfg: SampleConfig,
                   settings: dict) -> Job | None:
    """Build the peptide, load the model, start the job; refuses while one is running."""
    job = st.session_state.get(K_JOB)
    if job is not None and job.running:
        st.warning("A run is already in progress in this session: wait for it to finish.")
        return None
    try:
        with st.spinner("Building the peptide and loading the model..."):
            t0 = time.perf_counter()
            pep = peptide(sequence, termini)
            t1 = time.perf_counter()
            loaded = load_model(entry)
            t2 = time.perf_counter()
    except (ValueError, OSError) as e:  # unsupported residue, broken or missing checkpoint files
        st.error(plain(f"Cannot start: {e}"))
        return None
    job = Job(loaded, pep, cfg, label=f"{pep.name} with {entry.name}")
    job.meta = {"model_name": entry.name, "settings": settings,
                "prep_timings": {"build peptide": t1 - t0, "load model": t2 - t1}}
    st.session_state[K_JOB] = job.start()
    return job


def collect_job() -> None:
    """Move a finished job's result into the session's run (errors stay on the job)."""
    job = st.session_state.get(K_JOB)
    if job is None or job.running or job.result is None:
        return
    st.session_state[K_RUN] = AppRun(job.result, **job.meta)
    del st.session_state[K_JOB]


def follow_job() -> None:
    """Progress of the session's job inside st.status until it finishes (safe to interrupt:
    the job keeps running and the next script run follows it again)."""
    job = st.session_state.get(K_JOB)
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
            del st.session_state[K_JOB]
            return
        bar.progress(1.0, text="done")
        box.update(label=f"Sampled {job.cfg.n:,} conformations of {job.label} in {elapsed:.1f} s",
                   state="complete", expanded=False)
    collect_job()


# -------------------------------------------------------------------------- run-record loading


def apply_record(uploader_key: str) -> None:
    """on_change of the run-record uploader: copy the record's settings into the Home widgets."""
    from .exports import settings_from_record

    file = st.session_state.get(uploader_key)
    if file is None:
        return
    try:
        s = settings_from_record(file.getvalue())
    except ValueError as e:
        st.session_state[K_RECORD_MSG] = ("error", str(e))
        return
    entries = {e.name: e for e in catalog()}
    entry = entries.get(s["model"])
    if entry is None or not entry.serves(s["sequence"], s["termini"]):
        st.session_state[K_RECORD_MSG] = ("error", f"the record's model {s['model']!r} is not "
                                          f"available here for {s['sequence']} ({s['termini']})")
        return
    system = (s["sequence"], s["termini"])
    shipped = system in cat.shipped_systems(list(entries.values()))
    st.session_state.update({
        K_SOURCE: SOURCES[0] if shipped else SOURCES[1], K_SEQUENCE: s["sequence"],
        K_TERMINI: s["termini"], K_MODEL: s["model"], K_N: s["n"], K_SEED: s["seed"],
        tau_key(s["model"]): s["tau"], K_METHOD: s["method"].upper()})
    if shipped:
        st.session_state[K_SYSTEM] = f"{s['sequence']}:{s['termini']}"
    st.session_state[K_RECORD_MSG] = ("success", f"Settings loaded: {s['n']} samples of "
                                      f"{s['sequence']} ({s['termini']}) with {s['model']}, tau "
                                      f"{s['tau']:g}, seed {s['seed']}. Press Sample to reproduce.")


# ----------------------------------------------------------------------------- references


def validated_upload(files, run: AppRun):
    """Uploaded files -> reference Trajectory (our topology), validated once per upload.
    Raises upload.UploadError."""
    from .upload import load_reference

    key = (run.run_id,) + tuple((f.file_id, f.size) for f in files)
    memo = st.session_state.get(K_UPLOAD_MEMO)
    if memo is None or memo[0] != key:
        try:
            value = load_reference([(f.name, f.getvalue()) for f in files], run.topology)
        except ValueError as e:
            value = e
        memo = st.session_state[K_UPLOAD_MEMO] = (key, value)
    if isinstance(memo[1], Exception):
        raise memo[1]
    return memo[1]


class _RecordingEnergy:
    """Passes `reduced_energy` through and keeps the last result (reference energies for plots)."""

    def __init__(self, model):
        self.model, self.last = model, None

    def reduced_energy(self, xyz):
        self.last = self.model.reduced_energy(xyz)
        return self.last


def compare(run: AppRun, reference, source: str, lag: int, n_eval: int) -> dict:
    """report.evaluate against a reference Trajectory (already checked); kept on the run."""
    from arbg_core.energy import EnergyModel
    from arbg_core.metrics import ramachandran_angles
    from arbg_core.report import evaluate

    energy = _RecordingEnergy(EnergyModel(run.topology, run.result.preset))  # this call only
    report = evaluate(run.result, reference, lag=lag, n_eval=n_eval, seed=run.result.config.seed,
                      energy_model=energy)
    phi, psi, _ = ramachandran_angles(reference)
    run.comparison = {"source": source, "report": report, "u_ref": energy.last,
                      "angles": (phi, psi), "n_frames": int(reference.n_frames)}
    return run.comparison


def reference_for_plots(run: AppRun, energies: bool = False) -> dict | None:
    """{"label", "angles": (phi, psi), "u": array or None} of the reference the plots overlay:
    the last comparison of this run, else the model's shipped reference, else None."""
    if run.comparison is not None:
        c = run.comparison
        return {"label": f"reference ({c['source']})", "angles": c["angles"], "u": c["u_ref"]}
    system = run.result.peptide.name
    path = reference_path(run.model_name, system)
    if path is None:
        return None
    from arbg_core.metrics import ramachandran_angles
    from arbg_core.report import check_compatible

    traj = shipped_reference(run.model_name, system)
    try:
        check_compatible(traj, run.topology)
    except ValueError:
        return None  # a transferable model's reference of another system
    phi, psi, _ = ramachandran_angles(traj)
    u = _reference_energies(str(path), path.stat().st_mtime, run.result.preset) if energies else None
    return {"label": "reference (shipped MD)", "angles": (phi, psi), "u": u}
