"""Each shipped per-system model through the app as a user meets it: its own name in the system
list, its card's tau, a run, and the plot pages with the shipped MD overlaid."""

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app_lib import catalog
from arbg_core import checkpoint

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PLOT_PAGES = ["pages/1_Conformers.py", "pages/2_Ramachandran.py", "pages/3_Energy.py",
              "pages/4_Compare_with_MD.py"]

PER_SYSTEM = [e for e in checkpoint.list_shipped() if not e.transferable]


@pytest.mark.parametrize("entry", PER_SYSTEM, ids=[e.name for e in PER_SYSTEM])
def test_shipped_system_through_every_page(entry, monkeypatch):
    for var in ("ARBG_MODELS_DIR", "ARBG_REFERENCE_DIR"):  # the repository's assets, not test models
        monkeypatch.delenv(var, raising=False)
    system = (entry.system.sequence, entry.system.termini)
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.selectbox(key="home_system").set_value(catalog.system_label(system)).run()
    assert at.selectbox(key="home_model").value == entry.name
    assert at.number_input(key=f"home_tau::{entry.name}").value == pytest.approx(entry.card.tau)
    at.number_input(key="home_n").set_value(128)
    at.button(key="home_submit").click().run(timeout=180)
    assert not at.exception and not at.error, [e.value for e in at.exception] + [e.value for e in at.error]
    run = at.session_state["arbg_run"]
    assert run.ensemble.n == 128 and run.ensemble.counts["kept"] > 100
    for page in PLOT_PAGES:
        at.switch_page(page).run(timeout=120)
        assert not at.exception and not at.error, (page, [e.value for e in at.exception])
    at.switch_page(PLOT_PAGES[1]).run(timeout=120)  # Ramachandran: the shipped test MD is overlaid
    titles = " ".join(str(c.proto.spec) for c in at.get("plotly_chart"))
    assert "reference (shipped MD)" in titles
