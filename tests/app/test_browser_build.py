"""A build ("Build a model for this sequence", app_lib/building.py) in a real browser: it
outlives a reload of the page (a detached `arbg fit`, not the session's) and cancels. Helpers
and the chromium setup are test_browser.py's."""

import pytest

from app_lib.serve import CHROMIUM, CHROMIUM_ARGS
from test_browser import ARTIFACTS, Session, _serve, wait_text

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser(build_server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def build_server(models_dir, tmp_path_factory):
    """The `tiny` capped A only, an empty user models folder, and builds at tiny sizes (MD long
    enough that the build is still running when the test cancels it)."""
    import shlex

    from arbg_core import fit_jobs

    root = tmp_path_factory.mktemp("arbg-build")
    flags = ["--device", "cpu", "--md-ns", "2", "--hot-ns", "1", "--save-ps", "1",
             "--warmup-ps", "1", "--size", "tiny", "--steps", "40", "--batch-size", "32",
             "--taus", "0.9,1.0", "--n-tune", "64", "--n-proposals", "128", "--n-eval", "32"]
    with pytest.MonkeyPatch.context() as mp:  # start_streamlit passes this process' environment
        mp.setenv("ARBG_USER_MODELS_DIR", str(root / "user"))
        mp.setenv(fit_jobs.FLAGS_ENV, shlex.join(flags))
        for url in _serve(models_dir, tmp_path_factory):
            yield url, root / "user"
    fit_jobs.cancel(root / "user" / "builds" / "G-cap")  # whatever happened above


def _type_capped_g(page) -> None:
    page.get_by_text("Type a sequence", exact=True).click()
    page.get_by_text("capped (ACE / NME)", exact=True).click()
    box = page.get_by_label("Sequence (one-letter codes", exact=False)
    box.fill("G")
    box.press("Enter")


def test_build_outlives_the_page_and_cancels(build_server, browser):
    """Start a build of G (capped) from the page, reload: it is still running (a detached
    process, not the session's); cancel it: its process ends and the page offers a resume."""
    from arbg_core import fit_jobs

    url, user = build_server
    folder = user / "builds" / "G-cap"
    s = Session(browser, url, ready=False)
    page = s.page
    _type_capped_g(page)
    page.get_by_role("button", name="Build a model for G (capped)").click()
    page.get_by_role("button", name="Cancel the build").wait_for(timeout=60_000)
    pid = fit_jobs.fit_pid(folder)
    assert pid is not None
    page.reload()
    page.get_by_role("heading", level=1).first.wait_for()
    if not page.get_by_role("button", name="Cancel the build").is_visible():
        _type_capped_g(page)  # a reload is a new session: the sequence is typed again
    page.get_by_role("button", name="Cancel the build").wait_for(timeout=60_000)
    wait_text(page, "Building G (capped)")
    assert fit_jobs.fit_pid(folder) == pid
    s.shot("10_building")
    page.get_by_role("button", name="Cancel the build").click()
    wait_text(page, "was cancelled", timeout=60_000)
    page.get_by_role("button", name="Resume the build").wait_for()
    assert fit_jobs.fit_pid(folder) is None
    assert s.dialogs == [] and s.foreign_hosts() == set()
    s.ctx.close()
