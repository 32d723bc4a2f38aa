"""The Home page's run-record loader: a record's settings go into the Home widgets."""

from __future__ import annotations

import streamlit as st

from . import catalog as cat
from . import state


def apply_record(uploader_key: str) -> None:
    """on_change of the run-record uploader: copy the record's settings into the Home widgets."""
    file = st.session_state.get(uploader_key)
    if file is None:
        return
    try:
        s = state.record_settings(file.getvalue())  # within the widgets' ranges
    except ValueError as e:
        st.session_state[state.K_RECORD_MSG] = ("error", str(e))
        return
    entries = {e.name: e for e in state.catalog()}
    entry = entries.get(s["model"])
    if entry is None or not entry.serves(s["sequence"], s["termini"]):
        st.session_state[state.K_RECORD_MSG] = ("error", f"the record's model {s['model']!r} is not "
                                                f"available here for {s['sequence']} ({s['termini']})")
        return
    system = (s["sequence"], s["termini"])
    shipped = system in cat.shipped_systems(list(entries.values()))
    st.session_state.update({
        state.K_SOURCE: state.SOURCES[0] if shipped else state.SOURCES[1],
        state.K_SEQUENCE: s["sequence"], state.K_TERMINI: s["termini"], state.K_MODEL: s["model"],
        state.K_N: s["n"], state.K_SEED: s["seed"], state.tau_key(s["model"]): s["tau"],
        state.K_METHOD: s["method"].upper()})
    if shipped:
        st.session_state[state.K_SYSTEM] = f"{s['sequence']}:{s['termini']}"
    st.session_state[state.K_RECORD_MSG] = (
        "success", f"Settings loaded: {s['n']} samples of {s['sequence']} ({s['termini']}) with "
        f"{s['model']}, tau {s['tau']:g}, seed {s['seed']}. Press Sample to reproduce.")
