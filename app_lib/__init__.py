"""Helpers of the Streamlit app (app.py and pages/); arbg_core never imports from here.

    state.py    the one module that uses st.cache_*; the session's keys
    paths.py    where models and reference MD are (ARBG_MODELS_DIR, ARBG_USER_MODELS_DIR,
                ARBG_REFERENCE_DIR)
    jobs.py     the background sampling job and its life in the session (start, follow, collect)
    refining.py Home's "Refine for this sequence": a background refinement, its progress, result
    page.py     the frame of every results page (the session's run or a pointer Home)
    home.py     a run record's settings into the Home widgets
    compare.py  a run against reference MD (typed `Comparison`) and the plots' reference overlay
    catalog.py  shipped models -> systems they serve; CLI recipe for an uncovered sequence
    run.py      a finished run as the pages see it
    viewer.py   3Dmol.js HTML from our own topology (never from uploaded text)
    upload.py   validation of uploaded trajectories (size, format, truncation, atom order)
    exports.py  PDB / DCD zip / CSV / JSON run record as bytes, and reading a record back
    figures.py  app-only plotly figures (teaching page, weights); the shared ones are arbg_core.plots
    text.py     user text -> inert markdown
    serve.py    `streamlit run app.py` on a free port, and a chromium session driving it

state, jobs, refining, page, home and compare use streamlit; the rest is plain Python, so tests call it
directly.
"""
