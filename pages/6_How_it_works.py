"""How it works: the method in plain words, next to live figures of this session's run."""

import numpy as np
import streamlit as st

from app_lib import figures, jobs
from app_lib.jobs import current_run
from app_lib.notices import low_ess_notice
from arbg_core import plots

st.set_page_config(page_title="arbg: how it works", layout="wide")
st.title("How it works")
run = current_run()
if jobs.busy():
    jobs.progress_note()
if run is None:
    st.info("Sample a system on the Home page to see the figures of your own run next to the text.")
ens = run.ensemble if run is not None else None

st.header("1. A model proposes conformations")
st.markdown("The model writes a conformation one coordinate at a time (x, y, z of every atom), each "
            "time choosing among small bins, like a language model choosing the next word. Because "
            "it multiplies the probabilities of its own choices, it knows exactly how likely it "
            "was to write each conformation: **q(x)**. It learned from molecular dynamics, so it is "
            "good but not perfect.")
st.header("2. Physics says how likely each conformation should be")
st.markdown("At temperature T a conformation with energy E appears with probability proportional "
            "to **exp(−E / kT)** (Boltzmann). We write **u = E / kT**: one extra kT of energy makes "
            "a conformation e ≈ 2.7 times rarer. The energy comes from a force field (OpenMM).")
st.header("3. Weights correct the model")
st.markdown("Each sample gets the weight **w = exp(−u) / q**: large when physics likes it more than "
            "the model did, small when the model over-proposed it. Weighted averages over the samples "
            "are then averages over the Boltzmann distribution, whatever the model's errors, as long "
            "as the model proposes every important conformation at least sometimes.")
if ens is not None:
    phi, psi, _ = run.angles()
    weighted = low_ess_notice(run, "curve")
    a, b = st.columns(2)
    a.plotly_chart(figures.weight_scatter(ens.u, ens.log_q, ens.log_w))
    a.caption("Each dot is a sample of your run. Bright = large weight: low energy but not "
              "over-proposed by the model. Both axes cover the bulk of the samples; the few "
              "outside (clashes at very high energy) are counted above the plot.")
    overlay = {"proposal (model)": (phi[:, 0], None)}
    if weighted:
        overlay["reweighted (Boltzmann)"] = (phi[:, 0], ens.weights)
    b.plotly_chart(figures.angle_overlay(overlay))
    b.caption("The same samples counted plainly (proposal) and with their weights (reweighted).")
    if np.isfinite(ens.u).any():
        st.plotly_chart(plots.energy_figure(run.energy_ensembles()))

st.header("4. Effective sample size (ESS)")
st.markdown("If a few samples carry nearly all the weight, the average rests on those few. The "
            "**ESS** = (Σw)² / Σw² counts how many equally weighted, independent samples the "
            "weighted set is worth: n when all weights are equal, 1 when one sample has them all.")
if ens is not None:
    st.metric("ESS of your run", f"{ens.ess:,.1f} of {ens.n:,}", f"{ens.ess_fraction:.2%}",
              delta_color="off", delta_arrow="off")
    st.plotly_chart(figures.top_weights(ens.weights))
    st.caption(f"The 10 heaviest samples carry {run.top_share(10):.1%} of the total weight.")

st.header("5. What tau does")
st.markdown("tau is the model's temperature: its choice probabilities are raised to the power "
            "1/tau. Above 1 the model proposes more broadly (more coverage of rare regions, each "
            "sample less likely to be a good one); below 1 it sticks to what it knows best. The "
            "weights use the same tau, so the reweighted result stays correct either way; tau only "
            "changes how many samples you need for a given ESS.")
tau = st.slider("tau", 0.25, 3.0, float(run.result.tau) if run is not None else 1.0, 0.05, key="how_tau")
st.plotly_chart(figures.tau_demo(tau))
st.caption("A toy choice among bins at tau = 1 (dotted) and at the tau of the slider."
           + (f" Your run used tau = {run.result.tau:g}." if run is not None else ""))
