"""Energy: reduced-energy histograms and the diagnostics of the importance weights."""

import numpy as np
import streamlit as st

from app_lib.compare import reference_for_plots
from app_lib.notices import low_ess_notice
from app_lib.page import results_page
from arbg_core import plots

run = results_page("arbg: energy", "Energies and weights",
                   "Reduced energy u = E / kT of each sample under the force field (kT ≈ 0.6 "
                   "kcal/mol at 300 K). The **reweighted** histogram should match the **reference** "
                   "MD: the weights undo the model's bias. The axis covers the bulk of every curve; "
                   "samples outside it (clashes) are counted above the plot.")
ens = run.ensemble

live = np.isfinite(ens.u)
ensembles = run.energy_ensembles()
if not low_ess_notice(run, "energy histogram"):
    del ensembles["reweighted"]
ref = reference_for_plots(run, energies=True)
if ref is not None and ref.u is not None:
    ensembles[ref.label] = (ref.u, None)
if live.any():
    st.plotly_chart(plots.energy_figure(ensembles))
else:
    st.warning("No sample has a finite energy.")
if (~live).any():
    st.caption(f"{int((~live).sum())} samples without a finite energy (dropped or exploded) are "
               "left out of the histograms.")

st.subheader("Weight diagnostics")
st.markdown("Left: each sample's log weight relative to the heaviest (0), counted (grey bars) and "
            "as its share of the total weight (blue line): the blue line shows where the weight "
            "is. Right: the share of the total weight carried by the k heaviest samples; a curve "
            "that reaches 1 at small k means a few samples carry everything (low effective "
            "sample size, marked).")
st.plotly_chart(plots.log_weight_figure(ens.log_w))
c = st.columns(4)
for col, k in zip(c, (1, 10, 100, 1000)):
    col.metric(f"Top {k} carry", f"{run.top_share(k):.1%}")
st.caption(f"ESS {ens.ess:,.1f} of {ens.n:,} samples ({ens.ess_fraction:.2%}); largest normalized "
           f"weight {ens.max_weight:.3g}; the weights of the {ens.counts['clipped']} largest log "
           "weights were set to zero (clipping).")
