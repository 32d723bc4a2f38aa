"""Ramachandran maps: proposal, reweighted and reference side by side on the same scales."""

import streamlit as st

from app_lib.compare import reference_for_plots
from app_lib.notices import low_ess_notice, populations_frame
from app_lib.page import results_page
from arbg_core import plots

run = results_page("arbg: Ramachandran", "Ramachandran maps",
                   "Backbone dihedral angles φ and ψ of every residue that has both. Colour is the "
                   f"free energy -ln p in kT (0 = most populated, capped at {plots.FE_MAX_KT:g}; "
                   "blank = never visited), the same scale in every panel. **Proposal**: the samples "
                   "as the model drew them. **Reweighted**: the same samples with their Boltzmann "
                   "weights, i.e. the force field's equilibrium. **Reference**: molecular dynamics, "
                   "when available.")
if any(" / " in label for label in run.residue_labels()):
    st.caption("A zwitterionic dipeptide has no residue with both angles, so its map pairs the "
               "two torsions around the peptide bond: φ of residue 2 against ψ of residue 1 (the "
               "usual dipeptide map).")

ensembles = run.angle_ensembles()
if not low_ess_notice(run, "map"):
    del ensembles["reweighted"]
ref = reference_for_plots(run)
if ref is not None:
    ensembles[ref.label] = (ref.angles, None)
else:
    st.caption("No reference MD for this model: upload your own on the Compare with MD page.")
bins = st.slider("Bins per axis", 24, 90, 60, 6, key="rama_bins")
st.plotly_chart(plots.ramachandran_figure(ensembles, run.residue_labels(), bins=bins), width="content")

st.subheader("Basin populations, with their errors")
st.dataframe(populations_frame(ensembles, run.residue_labels(), {ref.label} if ref else set()),
             hide_index=True)
st.caption("Basins: αR (φ < 0, −120° < ψ < 50°), β / PPII (φ < 0, other ψ), αL / C7ax "
           "(0 < φ < 120°). ± is one standard error: for weighted samples from the effective "
           "sample size (Kish), for MD from 10 block averages (consecutive frames are correlated). "
           "**Not resolved**: the value is smaller than its error, so the data cannot tell it from 0.")
