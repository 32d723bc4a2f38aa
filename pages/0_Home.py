"""Home: choose a system and a model, sample, read the summary (the default page of app.py)."""

import streamlit as st

from app_lib import catalog as cat
from app_lib import jobs, refining, state
from app_lib.home import (apply_record, default_typed_system, offer_other_termini,
                          reference_preview, unserved)
from app_lib.notices import LOW_ESS
from app_lib.paths import models_dir
from app_lib.text import plain
from arbg_core.peptide import TERMINI, normalize_sequence
from arbg_core.pipeline import SampleConfig
from arbg_core.sampling import batch_for

st.set_page_config(page_title="arbg: sample", layout="wide")
st.title("Boltzmann-weighted peptide conformations")
st.markdown("A generative model proposes conformations of a peptide; each one is weighted by how "
            "likely the **force field** finds it (Boltzmann factor) relative to how likely the "
            "**model** was to propose it. See *How it works* for the idea in plain words.")

with st.expander("Reproduce a run from its JSON record"):
    st.file_uploader("Run record (record.json from the Export page)", type=["json"],
                     key="home_record", on_change=apply_record, args=("home_record",))
    msg = st.session_state.pop(state.K_RECORD_MSG, None)
    if msg:
        (st.success if msg[0] == "success" else st.error)(plain(msg[1]))

refining.collect()  # a refinement of this session that has finished: its model is offered
listing = state.listing()
entries = listing.entries
if listing.skipped:
    st.warning(plain(f"Skipped in your models folder (not complete models): "
                     f"{'; '.join(s.text() for s in listing.skipped)}"))
if not entries:
    st.warning(f"No models found in {plain(models_dir())} (set ARBG_MODELS_DIR to use "
               "another folder).")
systems = [f"{s}:{t}" for s, t in cat.shipped_systems(entries)]
st.session_state.setdefault(state.K_SOURCE, state.SOURCES[0 if systems else 1])
source = st.radio("System", state.SOURCES, key=state.K_SOURCE, horizontal=True, persist_state="session")
if source == state.SOURCES[0] and systems:
    if st.session_state.get(state.K_SYSTEM) not in systems:
        st.session_state[state.K_SYSTEM] = systems[0]  # alanine dipeptide when shipped
    sid = st.selectbox("Shipped system", systems, key=state.K_SYSTEM, persist_state="session",
                       format_func=lambda i: cat.system_label(tuple(i.split(":"))))
    sequence, termini = sid.split(":")
else:
    if source == state.SOURCES[0]:
        st.info("No shipped system yet: type a sequence instead.")
    typed = default_typed_system(entries)  # one a model serves: never a dead end at first
    st.session_state.setdefault(state.K_SEQUENCE, typed[0])
    st.session_state.setdefault(state.K_TERMINI, typed[1])
    left, right = st.columns([2, 1])
    text = left.text_input("Sequence (one-letter codes, 1-20 residues, e.g. AAA)",
                           key=state.K_SEQUENCE, persist_state="session")
    termini = right.radio("Termini", TERMINI, key=state.K_TERMINI, persist_state="session",
                          format_func=cat.TERMINI_LABELS.get)
    try:
        sequence = normalize_sequence(text, termini)
    except ValueError as e:
        st.error(plain(f"Invalid sequence: {e}"))
        offer_other_termini(entries, text, termini)
        st.stop()

models = {m.name: m for m in cat.models_for(entries, sequence, termini)}
if not models:
    unserved(entries, sequence, termini)
refining.offer(sequence, termini, models)
if st.session_state.get(state.K_MODEL) not in models:
    st.session_state[state.K_MODEL] = next(iter(models))
name = st.selectbox("Model", list(models), key=state.K_MODEL, persist_state="session",
                    format_func=lambda n: cat.model_label(models[n]))
entry = models[name]
refining.control(entry, sequence, termini)  # transferable: "Refine for this sequence"
loaded, pep = jobs.preload(entry, sequence, termini)  # while the user reads: not after the click
if pep is not None and not jobs.busy() and jobs.current_run() is None:
    reference_preview(name, pep)  # also loads the plotting code before the click

for key, default in ((state.tau_key(name), entry.tau), (state.K_N, 2000), (state.K_SEED, 0),
                     (state.K_METHOD, "SNIS")):
    st.session_state.setdefault(key, default)
with st.form("sample_form"):
    c = st.columns(4)
    n = c[0].number_input("Number of samples", 1, state.MAX_SAMPLES, step=500, key=state.K_N,
                          help=f"at most {state.MAX_SAMPLES:,}", persist_state="session")
    tau = c[1].number_input("tau (model temperature)", 0.05, 5.0, step=0.05, key=state.tau_key(name),
                            persist_state="session",
                            help=f"the model card suggests {entry.tau:g}; above 1 the model proposes "
                                 "more broadly, below 1 more narrowly (see How it works)")
    seed = c[2].number_input("Seed", 0, 2**31 - 1, step=1, key=state.K_SEED, persist_state="session",
                             help="same seed, settings and device: the same samples")
    method = c[3].selectbox("Method", ["SNIS", "SMC"], key=state.K_METHOD, persist_state="session")
    go = st.form_submit_button("Sample", type="primary", key=state.K_SUBMIT, disabled=jobs.busy())

if go:
    batch = batch_for(loaded.model, pep.n_atoms, int(n)) if loaded is not None else 1024
    cfg = SampleConfig(n=int(n), tau=float(tau), seed=int(seed), device=state.device(),
                       batch_size=batch, method=method.lower())
    settings = {"sequence": sequence, "termini": termini, "model": name, "n": cfg.n,
                "tau": cfg.tau, "seed": cfg.seed, "method": cfg.method}
    jobs.start_sampling(entry, sequence, termini, cfg, settings)
jobs.follow_job()

run = jobs.current_run()
if run is not None:
    ens, r = run.ensemble, run.result
    if run.label:
        st.status(run.done_text, state="complete", expanded=False)
    st.subheader(plain(f"Last run: {r.peptide.name}, model {run.model_name}, {ens.n:,} samples, "
                       f"tau {r.tau:g}, seed {r.config.seed}"))
    m = st.columns(4)
    m[0].metric("ESS (effective samples)", f"{ens.ess:,.1f}", f"{ens.ess_fraction:.2%} of samples",
                delta_color="off", delta_arrow="off")
    m[1].metric("Largest normalized weight", f"{ens.max_weight:.3g}")
    m[2].metric("Kept / mirrored / dropped",
                f"{ens.counts['kept']} / {ens.counts['mirrored']} / {ens.counts['dropped']}")
    m[3].metric("Device", r.device)
    if ens.ess < LOW_ESS:
        st.warning(f"The reweighted results rest on only **{ens.ess:,.1f} effective conformations** "
                   f"(ESS) of {ens.n:,} samples: a few samples carry almost all the weight, so "
                   "reweighted maps and populations show those few, not the Boltzmann "
                   "distribution. Draw more samples (the ESS grows in proportion) or try another tau; "
                   "the pages say which numbers are resolved.")
    st.dataframe(run.summary_rows(), hide_index=True)
    st.caption("Explore the run with the pages in the sidebar: Conformers, Ramachandran, Energy, "
               "Compare with MD, Export, How it works.")
