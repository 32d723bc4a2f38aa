"""The frame every results page shares: its config, the session's run (or a pointer to the
Home page), its title and introduction."""

from __future__ import annotations

import streamlit as st

from .jobs import require_run
from .run import AppRun


def results_page(page_title: str, title: str, intro: str | None = None) -> AppRun:
    """Set up a page that shows the session's run; without a run, says so and st.stop()s."""
    st.set_page_config(page_title=page_title, layout="wide")
    run = require_run()
    st.title(title)
    if intro:
        st.markdown(intro)
    return run
