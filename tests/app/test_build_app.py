"""Home's "Build a model for this sequence" (issue #20 item 2, app_lib/building.py and
arbg_core/fit_jobs.py) through AppTest with a real detached `arbg fit` at tiny sizes (ps of MD,
a `tiny` model, 40 steps, 2 taus): the control is offered for a typed sequence no model serves;
a build started from the page creates its folder and shows its progress, a second start attaches
to it, cancel stops the process group, resume starts it again; a finished build's model is
listed as SYSTEM-fit and samples through the page."""

import shlex
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from app_helpers import messages, sample

from arbg_core import fit_jobs
from arbg_core.user_models import list_user, resolve

REPO = Path(__file__).resolve().parents[2]
APP = str(REPO / "app.py")
TINY = ["--device", "cpu", "--md-ns", "0.02", "--hot-ns", "0.01", "--save-ps", "0.1",
        "--warmup-ps", "1", "--chunk-frames", "20", "--size", "tiny", "--steps", "40",
        "--batch-size", "32", "--taus", "0.9,1.0", "--n-tune", "64", "--n-proposals", "128",
        "--n-eval", "32"]


@pytest.fixture
def user(tmp_path, monkeypatch, models_dir):
    """The shipped `tiny` (capped A) only, an empty user models folder, tiny fit sizes."""
    monkeypatch.setenv("ARBG_USER_MODELS_DIR", str(tmp_path / "user"))
    monkeypatch.setenv(fit_jobs.FLAGS_ENV, shlex.join(TINY))
    return tmp_path / "user"


def typed(sequence: str = "G", termini: str = "capped") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.radio(key="home_source").set_value("Type a sequence").run()
    at.radio(key="home_termini").set_value(termini)
    at.text_input(key="home_sequence").set_value(sequence).run()
    return at


def text(elements) -> str:
    """The messages as read on the page (markdown escapes dropped)."""
    return messages(elements).replace("\\", "")


def _wait(predicate, timeout_s: float = 120.0) -> None:
    t0 = time.monotonic()
    while not predicate():
        assert time.monotonic() - t0 < timeout_s, "timed out"
        time.sleep(0.2)


def _gone(pid: int) -> bool:
    fit_jobs._reap()
    return not Path(f"/proc/{pid}").exists()


def test_control_offered_for_an_unserved_sequence(user):
    at = typed()
    assert "No shipped model covers G (capped)" in text(at.info)
    assert at.button(key="build_start").label.replace("\\", "") == "Build a model for G (capped)"
    assert at.number_input(key="build_budget").value == 2.0
    assert not (user / "builds").exists()  # nothing started by looking


def test_start_attach_cancel_resume(user):
    at = typed()
    at.number_input(key="build_budget").set_value(0.05)
    at.button(key="build_start").click().run()
    folder = (user / "builds" / "G-cap").resolve()
    try:
        pid = fit_jobs.fit_pid(folder)
        assert pid is not None and (folder / "fit.log").is_file()
        assert fit_jobs.start("G", "capped", 1.0, user) == (folder, False)  # attached
        assert fit_jobs.fit_pid(folder) == pid
        _wait(lambda: (folder / "fit" / "status.json").is_file())
        at.run()
        bar = at.get("progress")[0].proto.text.replace("\\", "")
        assert "Building G (capped)" in bar and str(user) not in bar
        assert at.button(key="build_cancel")

        at.button(key="build_cancel").click().run()
        _wait(lambda: _gone(pid), 20)
        assert "was cancelled" in text(at.info)
        assert fit_jobs.view(folder).state == "cancelled"

        at.button(key="build_resume").click().run()  # the same command again
        pid2 = fit_jobs.fit_pid(folder)
        assert pid2 is not None and pid2 != pid
        assert "--budget-hours 0.05" in " ".join(fit_jobs._cmdline(pid2))
    finally:
        pids = [p for p in (fit_jobs.fit_pid(folder),) if p]
        fit_jobs.cancel(folder)
        for p in pids:
            _wait(lambda: _gone(p), 20)


def test_a_build_started_on_the_page_ends_listed_and_samples(user):
    """Start a tiny build from the page and let it finish: the page then offers its model
    (SYSTEM-fit) in the picker; it samples, and its held-back MD is the Compare reference."""
    at = typed()
    at.button(key="build_start").click().run()
    folder = (user / "builds" / "G-cap").resolve()
    try:
        _wait(lambda: fit_jobs.view(folder).state != "running", 400)
        assert fit_jobs.view(folder).state == "finished", (folder / "fit.log").read_text()[-3000:]
    finally:
        fit_jobs.cancel(folder)
    entries, skipped = list_user(user)
    assert [e.name for e in entries] == ["G-cap-fit"] and skipped == []
    assert resolve("G-cap-fit") == user / "builds" / "G-cap" / "fit" / "model"
    at.run()  # what the progress fragment does when the build has ended
    assert at.selectbox(key="home_model").value == "G-cap-fit"
    sample(at, n=32)
    run = at.session_state["arbg_run"]
    assert run.result.peptide.sequence == "G" and run.ensemble.n == 32
    at.switch_page("pages/4_Compare_with_MD.py").run(timeout=120)  # its held-back MD
    assert not at.exception, [e.value for e in at.exception]
    assert "Shipped reference MD" in [o for r in at.radio for o in r.options], \
        [r.options for r in at.radio]


def test_an_unfinished_build_is_not_listed(tmp_path):
    (tmp_path / "builds" / "AA-zw" / "fit" / "md").mkdir(parents=True)
    assert list_user(tmp_path) == ([], [])
    assert fit_jobs.view(tmp_path / "builds" / "AA-zw").state == "none"


@pytest.mark.parametrize("stage, state, said", [
    ("failed", "failed", "failed; the log in its folder has the details"),
    ("train", "stopped", "stopped during training the model (its process ended")])
def test_a_dead_build_is_shown_with_resume(user, stage, state, said):
    """A build whose process is gone before its model was done (a failure it reported, or a
    kill): said so, without paths or the error's text, with a resume button."""
    from arbg_core.files import write_json

    folder = user / "builds" / "G-cap"
    (folder / "fit").mkdir(parents=True)
    write_json(folder / "job.json", {"args": ["G"], "budget_hours": 1.0, "pid": 2**22 + 1})
    write_json(folder / "fit" / "status.json", {"stage": stage, "pid": 2**22 + 1,
                                               "error": f"boom in {folder}"})
    assert fit_jobs.view(folder).state == state
    at = typed()
    shown = text(at.error) + text(at.warning) + text(at.caption)
    assert said in shown and str(user) not in shown and "boom" not in shown
    assert [b.key for b in at.button] == ["build_resume"]  # nothing to cancel


def test_two_clicks_at_once_start_one_job(user):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: fit_jobs.start("G", "capped", 0.05, user), range(2)))
    folder = results[0][0]
    try:
        assert sorted(started for _, started in results) == [False, True]
        assert fit_jobs.fit_pid(folder) is not None
    finally:
        assert fit_jobs.cancel(folder)
    assert fit_jobs.view(folder).state == "cancelled"


def test_a_start_that_fails_is_said_without_its_text(user, monkeypatch):
    def refuse(*_):
        raise OSError(f"no space left in {user}")

    at = typed()
    monkeypatch.setattr(fit_jobs, "start", refuse)
    at.button(key="build_start").click().run()
    shown = text(at.error)
    assert "could not be started (OSError)" in shown and str(user) not in shown
    assert at.button(key="build_start")  # the form again
