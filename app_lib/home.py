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


def default_typed_system(entries) -> tuple[str, str]:
    """What the sequence box starts with: AAA with termini a model serves (capped AAA is
    shipped), else the first system any model serves, else zwitterionic AAA."""
    for termini in ("zwitterionic", "capped"):
        if cat.models_for(entries, "AAA", termini):
            return "AAA", termini
    systems = cat.shipped_systems(entries)
    return systems[0] if systems else ("AAA", "zwitterionic")


def _switch_termini(termini: str) -> None:
    st.session_state[state.K_TERMINI] = termini


def offer_other_termini(entries, text: str, termini: str) -> bool:
    """When the typed text is served with the other termini, say so with a one-click switch."""
    from arbg_core.peptide import normalize_sequence

    from .text import plain

    other = next(t for t in cat.TERMINI_LABELS if t != termini)
    try:
        sequence = normalize_sequence(text, other)
    except ValueError:
        return False
    if not cat.models_for(entries, sequence, other):
        return False
    st.info(plain(f"{sequence} with {other} termini is served: switch to sample it."))
    st.button(f"Switch to {cat.TERMINI_LABELS[other]}", type="primary", key="home_switch_termini",
              on_click=_switch_termini, args=(other,))
    return True


def unserved(entries, sequence: str, termini: str) -> None:
    """No model serves (sequence, termini): offer the other termini when that one is served,
    else the CLI recipe with how long it takes here and on a GPU. Then st.stop()."""
    from .estimates import build_time
    from .text import plain

    if offer_other_termini(entries, sequence, termini):
        st.stop()
    from . import building

    st.info(plain(f"No shipped model covers {sequence} ({termini}) yet.") + " Build one here "
            "(below), or with the command line (`arbg fit`, in the expander).")
    st.caption(plain(build_time(sequence, termini, entries).text()))
    for limit in cat.transferable_limits(entries, sequence, termini):
        st.caption(plain(limit))
    building.control(sequence, termini)
    with st.expander("The same with the command line"):
        st.code(cat.build_commands(sequence, termini), language="bash", wrap_lines=True)
    st.stop()


def reference_preview(model_name: str, pep) -> None:
    """Before a run: the system's shipped reference MD as a Ramachandran map (what the samples
    will be compared with), in a collapsed expander; nothing when the model ships none."""
    found = state.reference_angles(model_name, pep.name, pep.topology)
    if found is None:
        return
    from arbg_core import plots

    angles, labels = found
    with st.expander("What molecular dynamics says about this system (the reference)"):
        st.caption("The shipped reference MD of this system as a Ramachandran map: the same "
                   "scale as on the Ramachandran page, where your samples join it.")
        st.plotly_chart(plots.ramachandran_figure({"reference (shipped MD)": (angles, None)},
                                                  labels), width="content")
