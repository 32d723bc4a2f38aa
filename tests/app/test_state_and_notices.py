"""What #17 fixed, through AppTest with the random-weight `tiny` checkpoint: the typed sequence
never dead-ends, a run in progress is shown on every page and the Sample button comes back, a
low effective sample size is said plainly with its remedies."""

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from app_helpers import FakeJob, messages, sample

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
PAGES = ["pages/1_Conformers.py", "pages/2_Ramachandran.py", "pages/3_Energy.py",
         "pages/4_Compare_with_MD.py", "pages/5_Export.py", "pages/6_How_it_works.py"]


def fresh() -> AppTest:
    return AppTest.from_file(APP, default_timeout=60).run()


def at_errors(at):
    return [e.value for e in at.exception] + [e.value for e in at.error]


@pytest.fixture(scope="module")
def home(models_dir):
    return sample(fresh())


def test_uncovered_sequence_gives_cli_recipe_with_times(models_dir):
    at = fresh()
    at.radio(key="home_source").set_value("Type a sequence").run()
    at.radio(key="home_termini").set_value("zwitterionic")
    at.text_input(key="home_sequence").set_value("GYDPETGTWG").run()  # chignolin
    assert "No shipped model covers GYDPETGTWG" in messages(at.info)
    code = at.code[0].value
    assert "arbg md GYDPETGTWG --termini zwitterionic --ns" in code and "arbg train --data" in code
    estimate = messages(at.caption)
    assert "Estimated for 138 atoms" in estimate  # the atom count the builder gives chignolin
    assert "reference MD" in estimate and "on this CPU" in estimate and "on a GPU" in estimate
    assert [b.key for b in at.button] == ["build_start"]  # nothing to sample with; build one


def test_typed_sequence_starts_served_and_offers_the_other_termini(models_dir):
    at = fresh()
    at.radio(key="home_source").set_value("Type a sequence").run()
    # the only model serves capped A: the box starts there, ready to sample
    assert (at.text_input(key="home_sequence").value, at.radio(key="home_termini").value) == ("A", "capped")
    assert at.button(key="home_submit") and not at.info
    at.radio(key="home_termini").set_value("zwitterionic").run()  # a free Ala: not even buildable
    assert "A with capped termini is served" in messages(at.info)
    at.button(key="home_switch_termini").click().run()
    assert at.radio(key="home_termini").value == "capped" and at.button(key="home_submit")


class _RunningJob(FakeJob):
    """Looks like a job that is still running (the fragment never waits on it)."""

    running = True


def test_sample_button_is_enabled_again_after_a_run_followed_on_return(models_dir, ala2):
    """The state bug: Home drawn while a run is in progress (the user came back to it) showed a
    disabled Sample button even after the run had finished."""
    from arbg_core import checkpoint
    from arbg_core.pipeline import SampleConfig

    from app_lib.jobs import Job

    at = fresh()
    job = Job(checkpoint.load(models_dir / "tiny"), ala2, SampleConfig(n=48, seed=1), "A-cap with tiny")
    job.meta = {"model_name": "tiny", "settings": {}, "prep_timings": {}}
    at.session_state["arbg_job"] = job.start()
    at.run(timeout=120)  # follows the job to its end, then draws the page again
    assert not at_errors(at)
    assert "arbg_job" not in at.session_state and at.session_state["arbg_run"].ensemble.n == 48
    assert not at.button(key="home_submit").disabled
    assert any("Sampled 48 conformations" in s.label for s in at.status)
    assert not any("animation: none" in m.value for m in at.markdown)  # animations back after the run


@pytest.mark.parametrize("page", PAGES[:3] + PAGES[5:])
def test_pages_say_a_run_is_in_progress(home, page):
    home.session_state["arbg_job"] = _RunningJob()
    try:
        home.switch_page(page).run()
        assert not home.exception
        text = messages(home.info)
        assert "A new run is in progress" in text and "still shows the previous run (64 samples)" in text
        # a browser on the same cores drew the animations with a whole core: stopped while a run goes
        assert any("animation: none" in m.value for m in home.markdown)
    finally:
        del home.session_state["arbg_job"]


def test_low_ess_notice_and_its_remedies(models_dir):
    at = sample(fresh(), n=32)
    at.switch_page(PAGES[1]).run()
    ess = at.session_state["arbg_run"].ensemble.ess
    assert f"rests on **{ess:,.1f} effective conformations**" in messages(at.warning)
    table = at.dataframe[0].value
    assert {"reweighted: population", "reference (shipped MD): F = -ln p (kT)"} <= set(table.columns)
    assert any("not resolved" in v or "±" in v for v in table["reweighted: population"])
    at.toggle(key="view_proposal_only::map").set_value(True).run()  # the proposal view
    titles = [a["text"] for a in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["annotations"]]
    assert "reweighted" not in titles and "proposal" in titles
    at.switch_page(PAGES[2]).run()  # the choice holds on the other pages
    names = [t.get("name") for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert names == ["proposal", "reference (shipped MD)"]
    at.button(key="more_energy histogram").click().run(timeout=120)  # one click: 4x the samples
    assert not at_errors(at)
    assert at.session_state["arbg_run"].ensemble.n == 128 and at.number_input(key="home_n").value == 128
