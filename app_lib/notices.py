"""What the results pages say about how far their numbers can be trusted: the low-ESS notice with
its one-click remedies, populations with errors ("not resolved"), metrics against the noise floor.
"""

from __future__ import annotations

import streamlit as st

from arbg_core.uncertainty import basin_table, noise_verdict

from . import jobs, state
from .run import AppRun

LOW_ESS = 100  # effective conformations below which reweighted views are flagged as unreliable
K_PROPOSAL_VIEW = "view_proposal_only"


def low_ess_notice(run: AppRun, what: str) -> bool:
    """Above a reweighted `what` ("map", "energy histogram"): when the ESS is low, say plainly
    what it rests on and offer more samples and the proposal view. Returns whether to draw the
    reweighted ensemble (False when the user chose the proposal view)."""
    ens = run.ensemble
    if ens.ess >= LOW_ESS:
        return True
    more = min(state.MAX_SAMPLES, 4 * ens.n)
    with st.container(border=True):
        st.warning(f"The reweighted {what} rests on **{ens.ess:,.1f} effective conformations** "
                   f"(ESS) out of {ens.n:,} samples. Its shape is mostly that of those few samples, "
                   "not of the Boltzmann distribution: basins they miss look empty. The proposal "
                   "(what the model drew) is unbiased by the weights but carries the model's errors.")
        a, b = st.columns(2)
        if more > ens.n:
            if a.button(f"Sample again with {more:,} samples (about {more // ens.n}x the ESS)",
                        key=f"more_{what}", disabled=jobs.busy()):
                if jobs.sample_more(run, more) is not None:
                    st.switch_page("app.py")
        else:
            a.caption(f"Already at the most samples a run may draw ({state.MAX_SAMPLES:,}): try "
                      "another tau on the Home page.")
        key = f"{K_PROPOSAL_VIEW}::{what}"  # one toggle per page, one choice for all pages
        b.toggle("Proposal view: hide the reweighted panels", key=key, on_change=_keep, args=(key,),
                 value=st.session_state.get(K_PROPOSAL_VIEW, False))
    return not st.session_state.get(K_PROPOSAL_VIEW, False)


def _keep(key: str) -> None:
    st.session_state[K_PROPOSAL_VIEW] = st.session_state[key]


def populations_frame(ensembles: dict, residue_labels: list[str], time_series: set):
    """Basin populations and free energies (-ln p, kT) of each ensemble as strings with their
    errors, 'not resolved' where a value is within its error."""
    import pandas as pd

    rows = basin_table(ensembles, residue_labels, time_series)
    out = []
    for row in rows:
        cells = {"residue": row["residue"], "basin": row["basin"]}
        for label in ensembles:
            cells[f"{label}: population"] = row[label].text()
        for label in ensembles:
            if label != "proposal":
                cells[f"{label}: F = -ln p (kT)"] = row[f"{label} F"].text()
        out.append(cells)
    return pd.DataFrame(out)


def verdict_frame(metrics: dict):
    """Each distance of proposal and reweighted as a multiple of the MD-vs-MD noise floor, with a
    plain verdict."""
    import pandas as pd

    names = {"e_w2": "E-W2 (kT)", "t_w2": "T-W2 (rad)", "tica_w2": "TICA-W2"}
    rows = []
    for key, name in names.items():
        floor = metrics["noise_floor"][key]
        for which in ("proposal", "reweighted"):
            value = metrics[which][key]
            ratio, verdict = noise_verdict(value, floor)
            rows.append({"distance": name, "ensemble": which, "value": f"{value:.3g}",
                         "noise floor": f"{floor:.3g}",
                         "x noise floor": "n/a" if ratio != ratio else f"{ratio:.1f}x",
                         "verdict": verdict})
    return pd.DataFrame(rows)
