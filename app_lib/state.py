"""All caching and the session's keys: the one module that uses st.cache_* (pages call these
functions; arbg_core never sees streamlit).

Process-wide (shared by every browser session, never mutated):
  models are loaded once per (folder, weights mtime) with st.cache_resource, on the device they
  will run on, so sampling never moves them; peptides, reference frames and reference energies
  are data (st.cache_data: each caller gets its own copy). OpenMM contexts / EnergyModel objects
  are never cached: every run and every comparison makes its own.
Per session (st.session_state, under the keys below): the finished run, the running job (jobs.py),
upload validation results, the Home widgets; a run record's settings are admitted only within
the widgets' ranges (`record_settings`).
Nothing here runs at import time. pandas is imported with this module, before any script or job
thread exists: plotly imports it lazily, and a second thread that meets the half-imported module
fails ("partially initialized module 'pandas'").
"""

from __future__ import annotations

from contextlib import contextmanager

import pandas  # noqa: F401  (see below)
import streamlit as st

from arbg_core import checkpoint
from arbg_core.checks import SEED, TAU, Range

from . import catalog as cat
from .paths import models_dir, reference_path, user_models_dir

MAX_SAMPLES = 20_000
# The Home widgets' ranges, which a loaded run record must respect too.
RECORD_RULES = {"n": Range(int, 1, MAX_SAMPLES), "tau": TAU, "seed": SEED}
MAX_REFERENCE_ENERGIES = 4000  # reference frames scored for the energy histograms (~0.3 s here)
K_RUN, K_JOB, K_UPLOAD_MEMO, K_RECORD_MSG = "arbg_run", "arbg_job", "arbg_upload_memo", "arbg_record_msg"
# Home widgets (keys shared with the run-record loader)
K_SOURCE, K_SYSTEM, K_SEQUENCE, K_TERMINI = "home_source", "home_system", "home_sequence", "home_termini"
K_MODEL, K_N, K_SEED, K_METHOD, K_SUBMIT = "home_model", "home_n", "home_seed", "home_method", "home_submit"
SOURCES = ("A shipped system", "Type a sequence")


def tau_key(model_name: str) -> str:
    return f"home_tau::{model_name}"


# ------------------------------------------------------------------------ process-wide caches


@st.cache_data(ttl=30, show_spinner=False, max_entries=16)
def _listing(root: str, user_root: str, user_stamp: int):
    from arbg_core.user_models import list_models

    return list_models(root, user_root)


def listing():
    """Shipped models and yours (`user_models.Listing`, with the user folders skipped): re-read
    at most every 30 s, so a newly trained model appears, and whenever the user models folder
    changes (a refined model was put in place, or a build's model/ in builds/SYSTEM/fit: not
    its progress files, which change every second)."""
    from arbg_core.user_models import BUILDS

    user = user_models_dir()
    stamp = 0
    for folder in (user, *sorted(user.glob(f"{BUILDS}/*/fit/model"))):  # built ones appear
        try:
            stamp = hash((stamp, folder.stat().st_mtime_ns))
        except OSError:
            pass
    return _listing(str(models_dir()), str(user), stamp)


def catalog() -> list[cat.ModelEntry]:
    """Every model the app offers: shipped ones, then yours (`listing`)."""
    return listing().entries


@st.cache_resource(show_spinner=False)
def device() -> str:
    from arbg_core.sampling import resolve_device

    return str(resolve_device("auto"))


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_model(path: str, stamp: float):
    """Shared by all sessions: eval mode, already on the run device, never mutated. Loaded with
    one torch thread: see `one_team`."""
    with one_team():
        return checkpoint.load(path, device=device())


@contextmanager
def one_team():
    """Run the torch work of a script thread with one thread. torch's CPU threads are OpenMP
    teams, one per thread that runs parallel work, and a team's threads live as long as the
    thread that made it. While more OpenMP threads exist than cores, libgomp stops spinning
    between parallel regions: a job's thread then sampled at half speed (2,000 ala2 samples in
    16.8 s instead of 8 s, its second thread idle half the time) beside the team a page's script
    thread had made loading the model. So only job threads (jobs.py) get a team."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
    stride = -(-traj.n_frames // MAX_REFERENCE_ENERGIES)  # a histogram needs no more
    return EnergyModel(traj.topology, preset).reduced_energy(traj.xyz[::stride])  # context made and dropped here


def reference_angles(model_name: str, system: str, topology):
    """((phi, psi), residue labels) of `shipped_reference(model_name, system)` when it fits
    `topology` (a transferable model's reference of another system does not), else None."""
    from arbg_core.metrics import ramachandran_labels
    from arbg_core.report import atom_labels, check_labels

    path = reference_path(model_name, system)
    if path is None:
        return None
    try:  # on the cached atom names: no copy of the cached trajectory on every rerun
        check_labels(_reference_labels(str(path), path.stat().st_mtime), atom_labels(topology))
    except ValueError:
        return None
    phi, psi, idx = _reference_angles(str(path), path.stat().st_mtime)
    return (phi, psi), ramachandran_labels(topology, idx)


@st.cache_data(show_spinner=False, max_entries=8)
def _reference_labels(path: str, stamp: float):
    from arbg_core.report import atom_labels

    return atom_labels(_shipped_reference(path, stamp).topology)


@st.cache_data(show_spinner=False, max_entries=8)
def _reference_angles(path: str, stamp: float):
    from arbg_core.metrics import ramachandran_angles

    return ramachandran_angles(_shipped_reference(path, stamp))


def shipped_reference_energies(model_name: str, system: str | None, preset: str):
    """Reduced energies (kT) of `shipped_reference(model_name, system)` under `preset`, of every
    k-th frame so that at most MAX_REFERENCE_ENERGIES are computed (for the plots' histograms;
    the Compare page scores every frame), or None when there is no shipped reference."""
    path = reference_path(model_name, system)
    return None if path is None else _reference_energies(str(path), path.stat().st_mtime, preset)


# ------------------------------------------------------------------------- per-session cache


def validated_upload(files, run):
    """Uploaded files -> reference Trajectory (our topology), validated once per upload.
    Raises upload.UploadError."""
    from .upload import reference_from_upload

    key = (run.run_id,) + tuple((f.file_id, f.size) for f in files)
    memo = st.session_state.get(K_UPLOAD_MEMO)
    if memo is None or memo[0] != key:
        try:
            value = reference_from_upload([(f.name, f.getvalue()) for f in files], run.topology)
        except ValueError as e:
            value = e
        memo = st.session_state[K_UPLOAD_MEMO] = (key, value)
    if isinstance(memo[1], Exception):
        raise memo[1]
    return memo[1]


# ------------------------------------------------------------------------------- run records


def record_settings(data: bytes) -> dict:
    """A run record's settings (exports.settings_from_record), each number as stored in the
    record within the range of its Home widget, the method one the app offers. Raises
    ValueError with a message for the user."""
    import json

    from arbg_core.pipeline import METHODS

    from .exports import settings_from_record

    settings = settings_from_record(data)
    stored = json.loads(data.decode("utf-8"))["settings"]  # before int()/float() rounded them
    for name, rule in RECORD_RULES.items():
        problem = rule.problem(stored[name])
        if problem:
            raise ValueError(f"the record's {name} {problem}: the app takes the Home page's range")
    if settings["method"] not in METHODS:
        raise ValueError(f"the record's method must be one of {', '.join(METHODS)}, "
                         f"got {settings['method']!r}")
    return settings
