"""Home's "Build a model for this sequence": `arbg fit` as a detached background job
(arbg_core/fit_jobs.py) in the user models folder, for a typed sequence no model serves.

Unlike sampling and refinement (threads of one browser session), the build is a process of its
own that outlives the session and the server: every session that opens the sequence reads its
folder and sees its stage, progress and ETA (a fragment that rereads it every 2 s), can cancel
it, or resume it after a stop. At most one job per sequence: starting again attaches to the
running one. When it is done, its model (SYSTEM-fit) is listed like a shipped one and the page
offers it in the model picker.
"""

from __future__ import annotations

import sys

import streamlit as st

from arbg_core import fit_jobs
from arbg_core.peptide import system_name

from .paths import user_models_dir
from .text import plain

K_BUDGET, K_START, K_CANCEL, K_RESUME, K_ERROR = (
    "build_budget", "build_start", "build_cancel", "build_resume", "build_error")
STAGE_TEXT = {"starting": "Starting", "plan": "Measuring this machine's speed for the plan",
              "md": "Reference MD (the preset's temperature and a hot replica)",
              "data": "Packing the training data", "train": "Training the model",
              "tune": "Tuning tau", "evaluate": "Evaluating against held-back MD",
              "model": "Writing the model folder"}


def _folder(sequence: str, termini: str):
    return fit_jobs.job_folder(sequence, termini, user_models_dir())


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown"
    s = int(round(max(seconds, 0)))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def control(sequence: str, termini: str) -> None:
    """Below Home's "no model" notice: the build form, or the build of this system."""
    view = fit_jobs.view(_folder(sequence, termini))
    st.subheader("Build a model for this sequence")
    error = st.session_state.pop(K_ERROR, None)
    if error:
        st.error(f"The build could not be started ({plain(error)}); the server log has the "
                 "details.")
    if view.state == "running":
        _follow(sequence, termini)
    elif view.state == "none":
        _form(sequence, termini)
    else:
        _ended(sequence, termini, view)


def _form(sequence: str, termini: str) -> None:
    st.markdown("One click runs the whole recipe in the background on this machine: reference "
                "MD, training sized to your budget, tau tuning and an evaluation against "
                "held-back MD. It keeps running if you close the page; anyone who opens this "
                "sequence sees its progress, and the model is offered here when it is done.")
    with st.form("build_form"):
        budget = st.number_input("Budget (hours)", 0.05, 48.0, value=2.0, step=0.5, key=K_BUDGET,
                                 help="wall-clock time for the whole build: 45 % MD, 40 % "
                                      "training, 15 % tuning and evaluation; the plan measured "
                                      "on this machine is shown once the build starts")
        go = st.form_submit_button(plain(f"Build a model for {sequence} ({termini})"),
                                   type="primary", key=K_START)
    if go:
        _start(sequence, termini, float(budget))
        st.rerun()


def _start(sequence: str, termini: str, budget_hours: float) -> None:
    try:
        fit_jobs.start(sequence, termini, budget_hours, user_models_dir())
    except (ValueError, OSError) as e:
        print(f"build of {system_name(sequence, termini)} not started: {e}", file=sys.stderr)
        st.session_state[K_ERROR] = type(e).__name__


def _plan_text(view) -> str:
    if view.plan_s is None:
        return f"Budget {duration((view.budget_hours or 0) * 3600)}; the plan is being measured."
    return (f"Plan measured here: about {duration(view.plan_s)} in all (budget "
            f"{duration(view.budget_s)}).")


def _cancel(sequence: str, termini: str) -> None:
    fit_jobs.cancel(_folder(sequence, termini), wait_s=5.0)


@st.fragment(run_every=2.0)
def _follow(sequence: str, termini: str) -> None:
    """The running build: stage, progress and ETA, reread every 2 s; the whole page again once
    it has ended (its model is then listed)."""
    view = fit_jobs.view(_folder(sequence, termini))
    if view.state != "running":
        st.rerun(scope="app")
    stage = STAGE_TEXT.get(view.stage, view.stage)
    where = f"stage {view.stage_index} of {view.n_stages}: " if view.stage_index else ""
    amount = (f" ({view.done:,.0f} / {view.total:,.0f} {view.unit})"
              if view.total and view.unit else "")
    st.progress(view.fraction, text=plain(f"Building {sequence} ({termini}), {where}{stage}"
                                          f"{amount}"))
    eta = (f"About {duration(view.eta_s)} left in all ({duration(view.stage_eta_s)} in this "
           "stage). " if view.eta_s is not None else "")
    st.caption(plain(eta + _plan_text(view)) + " It runs in the background: you can close the "
               "page and come back.")
    st.button("Cancel the build", key=K_CANCEL, on_click=_cancel, args=(sequence, termini))


def _ended(sequence: str, termini: str, view) -> None:
    """A build that is not running: done (its model should be listed), or stopped with a
    resume button (a rerun of the same command continues where it stopped)."""
    if view.state == "finished":
        st.success(plain(f"The build of {sequence} ({termini}) is done: its model "
                         f"{system_name(sequence, termini)}-fit is in your models folder."))
        return
    at = f" during {STAGE_TEXT[view.stage].lower()}" if view.stage in STAGE_TEXT else ""
    if view.state == "cancelled":
        st.info(plain(f"The build of {sequence} ({termini}) was cancelled{at}."))
    elif view.state == "failed":
        st.error(plain(f"The build of {sequence} ({termini}) failed; the log in its folder "
                       "has the details."))
    else:
        st.warning(plain(f"The build of {sequence} ({termini}) stopped{at} (its process "
                         "ended before the model was done)."))
    st.caption("Resume continues where it stopped, with the same settings (finished stages "
               "are kept).")
    if st.button("Resume the build", key=K_RESUME, type="primary"):
        _start(sequence, termini, view.budget_hours or 2.0)
        st.rerun()
