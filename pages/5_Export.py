"""Export: structures (PDB, DCD + topology), one CSV row per sample, and the JSON run record."""

import streamlit as st

from app_lib import exports
from app_lib.page import results_page

run = results_page("arbg: export", "Export")
stem = f"{run.result.peptide.name}_{run.model_name}_seed{run.result.config.seed}"

st.subheader("Structures")
c = st.columns(2)
which = c[0].radio("Frames of the multi-model PDB", ["Resampled ensemble", "Highest weight", "All samples"],
                   key="exp_which")
count = c[1].number_input("How many", 1, run.ensemble.n, min(100, run.ensemble.n), key="exp_count",
                          disabled=which == "All samples")
if which == "All samples":
    idx = slice(None)
elif which == "Highest weight":
    idx = run.top_indices(int(count))
else:
    idx = run.resampled(int(count), seed=run.result.config.seed)
st.download_button("Multi-model PDB", data=lambda: exports.pdb_bytes(run.topology, run.xyz[idx]),
                   file_name=f"{stem}.pdb", mime="chemical/x-pdb", key="exp_pdb")
st.download_button("DCD + topology PDB + weights CSV + record (zip)", key="exp_zip",
                   data=lambda: exports.dcd_zip_bytes(run), file_name=f"{stem}.zip", mime="application/zip")
st.caption("The DCD holds every sample (after the chirality fix); its frames line up with the CSV rows, "
           "so weighted averages are sum(weight × value).")

st.subheader("Numbers")
# CSV and JSON are small (about 100 bytes a sample): served as files, which survive a rerun; a
# deferred download's id is new on every run, so a click that meets a rerun would be lost.
st.download_button("CSV: one row per sample (weight, log q, u, φ/ψ, status)", key="exp_csv",
                   data=exports.csv_bytes(run), file_name=f"{stem}.csv", mime="text/csv")
with st.expander("What the CSV columns mean"):
    st.markdown("\n".join(f"- `{c}`: {h}" for c, h in exports.COLUMN_HELP.items())
                + "\n- `phi_<residue>_deg`, `psi_<residue>_deg`: backbone dihedrals, degrees")
st.download_button("JSON run record", data=exports.record_bytes(run), file_name=f"{stem}.json",
                   mime="application/json", key="exp_json")
st.markdown("**Reproduce** this run: load the record on the Home page (*Reproduce a run*) and press "
            "Sample, or run on the command line:")
st.code(exports.cli_command(run), language="bash", wrap_lines=True)
with st.expander("Run record"):
    st.json(exports.run_record(run))
