"""Ramachandran maps: proposal, reweighted and reference side by side on the same scales."""

import pandas as pd
import streamlit as st

from app_lib.compare import reference_for_plots
from app_lib.page import results_page
from arbg_core import plots
from arbg_core.report import phi_basin_population

run = results_page("arbg: Ramachandran", "Ramachandran maps",
                   "Backbone dihedral angles φ and ψ of every residue that has both. Colour is the "
                   f"free energy -ln p in kT (0 = most populated, capped at {plots.FE_MAX_KT:g}; "
                   "blank = never visited), the same scale in every panel. **Proposal**: the samples "
                   "as the model drew them. **Reweighted**: the same samples with their Boltzmann "
                   "weights, i.e. the force field's equilibrium. **Reference**: molecular dynamics, "
                   "when available.")

ensembles = run.angle_ensembles()
ref = reference_for_plots(run)
if ref is not None:
    ensembles[ref.label] = (ref.angles, None)
else:
    st.caption("No reference MD for this model: upload your own on the Compare with MD page.")
bins = st.slider("Bins per axis", 24, 90, 60, 6, key="rama_bins")
st.plotly_chart(plots.ramachandran_figure(ensembles, run.residue_labels(), bins=bins))

st.subheader("Population of 0 < φ < 120° (αL / C7ax basins), first residue")
rows = {label: phi_basin_population(angles[0], w) for label, (angles, w) in ensembles.items()}
table = pd.DataFrame(rows).T.rename(columns={"p_alpha_l": "population", "stderr": "± std. error",
                                             "n_effective": "effective samples"})
st.dataframe(table)
st.caption("Plain 300 K MD visits φ > 0 rarely, so its estimate of this small population is noisy; "
           "the error uses the effective sample size.")
