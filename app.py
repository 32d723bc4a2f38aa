"""The app's entry point: `streamlit run app.py`. Every page is a script under pages/; this file
only names them for the sidebar (the Home page is pages/0_Home.py, shown as "Home", not "app")."""

import streamlit as st

st.navigation([
    st.Page("pages/0_Home.py", title="Home", default=True),  # no icon: its font comes from Google
    st.Page("pages/1_Conformers.py", title="Conformers"),
    st.Page("pages/2_Ramachandran.py", title="Ramachandran"),
    st.Page("pages/3_Energy.py", title="Energy"),
    st.Page("pages/4_Compare_with_MD.py", title="Compare with MD"),
    st.Page("pages/5_Export.py", title="Export"),
    st.Page("pages/6_How_it_works.py", title="How it works"),
]).run()
