"""Helpers of the Streamlit app (app.py and pages/); arbg_core never imports from here.

    state.py    the one module that touches st.cache_* and st.session_state
    catalog.py  shipped models -> systems they serve; CLI recipe for an uncovered sequence
    run.py      a finished run as the pages see it, and the background sampling job
    viewer.py   3Dmol.js HTML from our own topology (never from uploaded text)
    upload.py   validation of uploaded trajectories (size, format, truncation, atom order)
    exports.py  PDB / DCD zip / CSV / JSON run record as bytes, and reading a record back
    figures.py  app-only plotly figures (teaching page, weights); the shared ones are arbg_core.plots
    text.py     user text -> inert markdown

Everything except state.py is plain Python (no streamlit), so tests call it directly.
"""
