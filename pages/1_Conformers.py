"""Conformers: the highest-weight samples and a resampled ensemble in 3D (3Dmol.js, sticks)."""

import streamlit as st

from app_lib import exports, viewer
from app_lib.page import results_page

run = results_page("arbg: conformers", "Conformers",
                   "Samples are superposed on the backbone of the first one shown. **Highest weight** "
                   "lists the samples the reweighting trusts most. A **resampled ensemble** draws "
                   "samples in proportion to their weights, so it behaves like a plain Boltzmann "
                   "ensemble (the same sample can repeat when the effective sample size is small).")

c = st.columns(4)
which = c[0].radio("Conformers", ["Highest weight", "Resampled ensemble"], key="conf_which")
count = c[1].slider("How many", 1, 50, 10, key="conf_count")
mode = c[2].radio("View", ["Animate", "Overlay", "One at a time"], key="conf_mode")
color = c[3].radio("Color", ["by residue", "by element"], key="conf_color")

if which == "Highest weight":
    idx = run.top_indices(count)
else:
    idx = run.resampled(count, seed=run.result.config.seed)
if len(idx) == 0:
    st.warning("No sample has a positive weight in this run (all dropped or of infinite energy).")
    st.stop()
shown = idx
if mode == "One at a time" and len(idx) > 1:
    k = st.slider("Conformer", 1, len(idx), 1, key="conf_k")
    shown = idx[k - 1:k]
fps = 2.0
if mode == "Animate":
    fps = st.slider("Speed (frames per second)", 0.5, 10.0, 2.0, 0.5, key="conf_fps")

w, log_w = run.weights, run.ensemble.log_w
labels = [f"sample {i}, weight {w[i]:.3g} (log w {log_w[i]:.4g})" for i in shown]
page = viewer.viewer_html(run.topology, run.xyz[shown], color=color.split()[-1], fps=fps,
                          mode={"Animate": "animate", "Overlay": "overlay"}.get(mode, "single"),
                          frame_labels=labels)
if not viewer.JS_FILE.is_file():
    st.error("3Dmol.js is not installed in static/: run `make setup` (it comes from npm).")
st.iframe(page, height=540)
table = exports.samples_table(run).iloc[shown]
st.dataframe(table, hide_index=True, column_config={
    c: st.column_config.Column(help=h) for c, h in exports.column_help(table.columns).items()})
st.caption("Hover a column name for what it means.")
