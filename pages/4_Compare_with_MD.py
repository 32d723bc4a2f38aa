"""Compare with MD: E-W2, T-W2, TICA-W2 against reference MD (shipped or uploaded), with noise floors."""

import streamlit as st

from app_lib import figures, state, upload
from app_lib.notices import verdict_frame
from app_lib.compare import compare
from app_lib.page import results_page
from app_lib.paths import reference_path
from app_lib.text import plain
from arbg_core import plots

run = results_page("arbg: compare with MD", "Compare with MD",
                   "Three distances between this run and reference molecular dynamics (smaller is "
                   "closer): **E-W2** between the energy distributions (kT), **T-W2** between the "
                   "backbone angle distributions on the torus (radians), **TICA-W2** on the two "
                   "slowest collective motions of the reference. The **noise floor** is the same "
                   "distance between the two halves of the reference itself: a model at the floor "
                   "is as close as MD is to MD.")

options = ["Shipped reference MD"] if reference_path(run.model_name, run.result.peptide.name) else []
options.append("Upload my trajectory")
source = st.radio("Reference", options, key="cmp_source", horizontal=True)
if source == "Upload my trajectory":
    st.caption(f"Formats: {upload.FORMATS_TEXT}; at most {upload.MAX_UPLOAD_MB} MB in total. The "
               "atoms must be those of the sampled system in the same order, hydrogens included "
               "(as `arbg build` and `arbg md` write them).")
    kind = st.radio("Files", ["Topology PDB + trajectory", "One multi-model PDB"], key="cmp_kind",
                    horizontal=True)
    limit = upload.MAX_UPLOAD_MB
    if kind == "One multi-model PDB":
        files = [st.file_uploader("Multi-model PDB", type=["pdb"], key="cmp_single", max_upload_size=limit)]
    else:
        a, b = st.columns(2)
        files = [a.file_uploader("Topology (PDB)", type=["pdb"], key="cmp_top", max_upload_size=limit),
                 b.file_uploader("Trajectory (DCD, XTC, TRR or multi-model PDB)", key="cmp_traj",
                                 type=["dcd", "xtc", "trr", "pdb"], max_upload_size=limit)]
    if any(f is None for f in files):
        st.info("Upload the file(s) to compare.")
        st.stop()
    try:
        reference = state.validated_upload(files, run)
    except upload.UploadError as e:
        st.error(plain(f"Cannot use this upload: {e}"))
        st.stop()
    label = "your MD"
    st.success(f"{reference.n_frames} frames of {reference.n_atoms} atoms match the sampled system.")
else:
    reference, label = state.shipped_reference(run.model_name, run.result.peptide.name), "shipped MD"
    st.caption(f"{reference.n_frames} frames of the model's held-out (test split) MD.")

max_lag = max(1, reference.n_frames // 4)
with st.form("cmp_form"):
    c = st.columns(2)
    n_eval = c[0].slider("Points per side", 100, 5000, 2000, 100, key="cmp_n_eval",
                         help="exact optimal transport: memory grows with the square of this")
    lag = c[1].number_input("TICA lag (reference frames)", 1, max_lag, min(10, max_lag), key="cmp_lag")
    go = st.form_submit_button("Compare", type="primary")
if go:
    with st.status("Reference energies and the three distances...", expanded=False) as box:
        try:
            compare(run, reference, label, int(lag), int(n_eval))
            box.update(label="Comparison done", state="complete")
        except (ValueError, RuntimeError) as e:
            box.update(label="Comparison failed", state="error")
            st.error(plain(str(e)))

comp = run.comparison
if comp is None:
    st.stop()
m = comp.metrics
st.subheader(f"Against {comp.source} ({comp.n_frames} frames)")
st.table(figures.metrics_table(m).style.format("{:.4g}"))
st.markdown("**Against the noise floor** (how far from MD, in units of how far MD is from itself):")
st.dataframe(verdict_frame(m), hide_index=True)
st.caption(f"At most {m['n_points']} points per side ({m['n_reference_frames']} reference frames, "
           f"{m['n_model_samples']} samples; the reweighted set is resampled by weight), TICA lag "
           f"{m['tica_lag_frames']} frames, seed {m['seed']}.")
ref = comp.overlay()
st.plotly_chart(plots.ramachandran_figure({**run.angle_ensembles(), ref.label: (ref.angles, None)},
                                          run.residue_labels()), width="content")
st.plotly_chart(plots.energy_figure({**run.energy_ensembles(), ref.label: (ref.u, None)}))
