"""The app in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

Screenshots of every page land in tests/app/_artifacts/ (not committed).
"""

import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from app_lib import serve
from app_lib.serve import CHROMIUM, CHROMIUM_ARGS, start_streamlit, wait_plots

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent / "_artifacts"
PAYLOAD = "</script><script>alert(1)</script>"


def _serve(models_dir: Path, tmp_path_factory):
    """Generator of a fixture: the URL of `streamlit run app.py` on `models_dir`."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; `make test` tries to)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python) is not installed")
    log = open(tmp_path_factory.mktemp("server") / "streamlit.log", "w+")
    try:
        proc, url = start_streamlit({"ARBG_MODELS_DIR": str(models_dir)}, log)
    except RuntimeError as e:
        pytest.fail(str(e))
    yield url
    serve.stop(proc)
    log.close()


@pytest.fixture(scope="module")
def server(models_dir, tmp_path_factory):
    yield from _serve(models_dir, tmp_path_factory)


def first_test_dipeptide() -> str:
    from arbg_core.data import read_sequence_list

    return next(s for s, role in read_sequence_list(REPO / "assets/corpus/dipeptides.txt") if role == "test")


@pytest.fixture(scope="module")
def transferable_server(tmp_path_factory):
    """Models: the shipped transferable models or, while none is shipped, a random-weight `tiny`
    transferable one for zwitterionic dipeptides."""
    from arbg_core import checkpoint

    models = tmp_path_factory.mktemp("arbg-transferable") / "models"
    models.mkdir()
    shipped = [e.name for e in checkpoint.list_shipped() if e.transferable]
    for name in shipped:
        shutil.copytree(checkpoint.resolve(name), models / name)
    if not shipped:
        shipped = ["general"]
        import torch

        from arbg_core.model import ArBG, ModelConfig
        from arbg_core.tokenizer import TokenizerConfig

        torch.manual_seed(0)
        checkpoint.save(models / "general", ArBG(ModelConfig.preset("tiny")),
                        TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                        card={"tau": 1.0, "name": "tiny transferable test model"},
                        extra={"termini": "zwitterionic", "lengths": [2, 2]})
    for url in _serve(models, tmp_path_factory):
        yield url, sorted(shipped)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Session(serve.Session):
    """A browser session that saves its screenshots in ARTIFACTS."""

    def shot(self, name: str) -> None:
        super().shot(ARTIFACTS / f"{name}.png")


def non_white_fraction(png: bytes) -> float:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int16)
    return float(np.mean(np.any(img < 235, axis=-1)))


def fail_showing_page(page, what: str) -> None:
    """Fail the test with `what` and the page's visible text (what the app said instead)."""
    body = page.locator("[data-testid=stMain]").inner_text(timeout=5_000)
    pytest.fail(f"{what}; the page said:\n{body[-3000:]}")


def wait_text(page, text: str, timeout: float = 180_000) -> None:
    """Wait for `text` on the page; on a timeout the failure shows what the page said instead."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_text(text).first.wait_for(timeout=timeout)
    except PlaywrightTimeout:
        fail_showing_page(page, f"{text!r} did not appear within {timeout / 1000:.0f} s")


def upload(page, label: str, name: str, data: bytes) -> None:
    """Put one file into the Streamlit uploader labelled `label`, once it is the only uploader on
    the page (a rerun can still be swapping the widgets out), and wait until the app has it."""
    widget = page.get_by_test_id("stFileUploader").filter(has=page.get_by_text(label, exact=True))
    widget.wait_for()
    page.wait_for_function("document.querySelectorAll('[data-testid=stFileUploader]').length === 1")
    widget.locator("input[type=file]").set_input_files({"name": name, "mimeType": "chemical/x-pdb", "buffer": data})
    widget.get_by_text(re.compile(r"^\d+(\.\d+)?[KMG]?B$")).wait_for()  # the file's size: it arrived


def wait_idle(page, quiet_s: float = 1.5, timeout_s: float = 180) -> None:
    """Wait until the app's script has not been running for `quiet_s` seconds in a row."""
    running = page.get_by_test_id("stStatusWidgetRunningIcon")
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < quiet_s:
        if running.count():
            quiet_since = time.monotonic()
        if time.monotonic() > deadline:
            pytest.fail(f"the app was still running after {timeout_s:.0f} s")
        page.wait_for_timeout(250)


def download(page, button) -> Path:
    """Click a download button once the app is idle -> the downloaded file's path; on a timeout
    the failure shows what the page said."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    button.wait_for()
    wait_idle(page)
    try:
        with page.expect_download(timeout=120_000) as info:
            button.click()
        return Path(info.value.path())
    except PlaywrightTimeout:
        fail_showing_page(page, "no download within 120 s of the click")


def wheel_scrolls_the_page(page) -> None:
    """The mouse wheel over the 3D view scrolls the page (the view zooms only once clicked)."""
    main = page.get_by_test_id("stMain")
    box = page.locator("iframe").first.bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 300)
    page.wait_for_timeout(500)
    assert main.evaluate("e => e.scrollTop") > 0, "the 3D view captured the scroll wheel"


def test_sample_and_every_page(server, browser, ala2_pdb):
    s = Session(browser, server)
    page = s.page
    s.start_sampling(64, seed=0)
    s.wait_sampled(64)
    s.shot("1_home")

    s.open("Conformers")
    frame = page.frame_locator("iframe").first
    frame.locator("canvas").first.wait_for()
    frame.get_by_text("frame 2 /").wait_for(timeout=90_000)  # the animation advances
    canvas_png = frame.locator("canvas").first.screenshot()
    assert non_white_fraction(canvas_png) > 0.005, "the 3D canvas drew nothing"
    (ARTIFACTS / "2_conformers_canvas.png").write_bytes(canvas_png)
    wheel_scrolls_the_page(page)
    s.shot("2_conformers")

    s.open("Ramachandran")
    wait_plots(page, 1)
    assert page.get_by_text("reference (shipped MD)", exact=True).count() and page.get_by_text("ALA2", exact=True).count()
    s.shot("3_ramachandran")

    s.open("Energy")
    wait_plots(page, 2)
    s.shot("4_energy")

    s.open("Compare with MD")
    page.get_by_role("button", name="Compare", exact=True).click()
    page.get_by_text("noise floor (MD vs MD)").first.wait_for(timeout=300_000)
    wait_plots(page, 2)
    s.shot("5_compare_shipped")
    # an upload whose REMARK and residue names carry a script: inert everywhere
    page.get_by_text("Upload my trajectory", exact=True).click()
    page.get_by_text("One multi-model PDB", exact=True).click()
    hostile = "\n".join(l[:17] + "</s" + l[20:] if l.startswith("ATOM") and l[17:20] == "ALA" else l
                        for l in ala2_pdb.splitlines())
    upload(page, "Multi-model PDB", "<img src=x onerror=alert(2)>.pdb",
           f"REMARK   1 {PAYLOAD}\n{hostile}\n".encode())
    wait_text(page, "atom order mismatch at atom 7")
    s.shot("5_compare_upload_rejected")
    upload(page, "Multi-model PDB", "md.pdb", f"REMARK   1 {PAYLOAD}\n{ala2_pdb}".encode())
    wait_text(page, "20 frames of 22 atoms match")
    assert page.locator("img[src=x]").count() == 0
    assert page.evaluate("Array.from(document.scripts).some(s => s.textContent.includes('alert('))") is False
    s.shot("5_compare_upload_ok")

    s.open("Export")
    import pandas as pd

    table = pd.read_csv(download(page, page.get_by_role("button", name="CSV: one row per sample", exact=False)))
    assert len(table) == 64 and table["weight"].sum() == pytest.approx(1.0)
    s.shot("6_export")

    s.open("How it works")
    wait_plots(page, 4)
    s.shot("7_how_it_works")

    assert s.dialogs == [], f"a script ran: {s.dialogs}"
    assert s.foreign_hosts() == set(), f"requests left the machine: {s.foreign_hosts()}"
    s.ctx.close()


def test_two_sessions_sample_at_the_same_time(server, browser):
    a, b = Session(browser, server), Session(browser, server)
    a.start_sampling(48, seed=1)
    b.start_sampling(40, seed=2)
    a.wait_sampled(48)
    b.wait_sampled(40)
    assert a.page.get_by_role("heading", name="Last run").inner_text().endswith("48 samples, tau 1, seed 1")
    assert b.page.get_by_role("heading", name="Last run").inner_text().endswith("40 samples, tau 1, seed 2")
    for s in (a, b):
        assert s.foreign_hosts() == set()
        s.ctx.close()


def test_unseen_dipeptide_with_the_transferable_model(transferable_server, browser):
    """A typed dipeptide that no single-system model covers samples end to end."""
    from arbg_core.peptide import THREE_LETTER

    seq = first_test_dipeptide()  # never trained on (the corpus' test role)
    url, names = transferable_server
    s = Session(browser, url, ready=False)
    page = s.page
    page.get_by_text("Type a sequence", exact=True).click()
    box = page.get_by_label("Sequence (one-letter codes", exact=False)
    box.wait_for()
    box.fill(seq.lower())
    box.press("Enter")
    s.sample_button.wait_for()
    s.start_sampling(32, seed=3)
    s.wait_sampled(32)
    heading = page.get_by_role("heading", name="Last run").inner_text()
    assert heading.startswith(f"Last run: {seq}-zw, model {names[0]},"), heading
    s.shot("8_unseen_dipeptide")
    s.open("Ramachandran")  # a zwitterionic dipeptide: phi of residue 2 against psi of residue 1
    wait_plots(page, 1)
    assert page.get_by_text(f"φ {THREE_LETTER[seq[1]]}2 / ψ {THREE_LETTER[seq[0]]}1", exact=False).count() >= 1
    s.shot("8_unseen_ramachandran")
    s.open("Conformers")
    s.page.frame_locator("iframe").first.locator("canvas").first.wait_for()
    assert s.dialogs == [] and s.foreign_hosts() == set()
    s.ctx.close()


def note_or_done(page, note: str, done: str) -> None:
    """Wait for a page's run-in-progress `note` or, when the run finished before the page was
    drawn (the tiny model is fast), for text of the finished run (`done`)."""
    page.get_by_text(re.compile(f"{re.escape(note)}|{re.escape(done)}")).first.wait_for(timeout=60_000)


def test_navigating_away_during_sampling_and_back(server, browser):
    """#17's state bug: sample, visit another page while it runs, come back: the run finishes,
    the Sample button works again, and other pages say a run is in progress, then update."""
    s = Session(browser, server)
    page = s.page
    s.start_sampling(20000, seed=4)  # long enough to walk around while it runs
    page.get_by_text(re.compile(r"^Sampling A-cap")).wait_for(timeout=60_000)  # the job is running
    s.open("Energy")
    note_or_done(page, "A new run is in progress", "of 20,000 samples")
    s.open("Home")
    s.wait_sampled(20000)
    s.sample_button.wait_for()
    assert s.sample_button.is_enabled(), "the Sample button stayed disabled after the run"
    s.start_sampling(6000, seed=5)
    page.get_by_text(re.compile(r"^Sampling A-cap")).wait_for(timeout=60_000)
    s.open("Energy")  # shows the previous run with a note, then the new one by itself
    note_or_done(page, "still shows the previous run (20,000 samples)", "of 6,000 samples")
    wait_text(page, "of 6,000 samples", timeout=300_000)
    assert page.get_by_text("A new run is in progress").count() == 0
    s.open("Home")
    s.sample_button.wait_for()
    assert s.sample_button.is_enabled()
    assert page.get_by_role("heading", name="Last run").inner_text().endswith("6,000 samples, tau 1, seed 5")
    s.start_sampling(64, seed=6)
    s.wait_sampled(64)
    assert s.dialogs == [] and s.foreign_hosts() == set()
    s.ctx.close()


@pytest.fixture(scope="module")
def refine_server(tmp_path_factory):
    """A tiny transferable model of capped peptides (length 1-2) and an empty user models
    folder: the URL and that folder."""
    import torch

    from arbg_core import checkpoint
    from arbg_core.model import ArBG, ModelConfig
    from arbg_core.tokenizer import TokenizerConfig

    root = tmp_path_factory.mktemp("arbg-refine")
    torch.manual_seed(0)
    checkpoint.save(root / "models" / "general", ArBG(ModelConfig.preset("tiny")),
                    TokenizerConfig(n_bins=64, a=4.5, std=0.25), transferable=True,
                    card={"tau": 1.0, "name": "tiny transferable"},
                    extra={"termini": "capped", "lengths": [1, 2]})
    with pytest.MonkeyPatch.context() as mp:  # start_streamlit passes this process' environment
        mp.setenv("ARBG_USER_MODELS_DIR", str(root / "user"))
        for url in _serve(root / "models", tmp_path_factory):
            yield url, root / "user"


def test_refine_for_a_typed_sequence(refine_server, browser):
    """Refine for G (capped) with a seconds budget, leave Home while it runs, come back: the
    progress updates by itself, then the refined model is saved and selected."""
    url, user = refine_server
    s = Session(browser, url, ready=False)
    page = s.page
    page.get_by_text("Type a sequence", exact=True).click()
    page.get_by_text("capped (ACE / NME)", exact=True).click()
    box = page.get_by_label("Sequence (one-letter codes", exact=False)
    box.fill("G")
    box.press("Enter")
    page.get_by_text("Refine for this sequence (no MD)").click()
    for label, value in (("Time budget (minutes)", "0.05"), ("Samples per update", "16"),
                         ("Fresh samples for the ESS", "32")):
        field = page.get_by_role("spinbutton", name=label)
        field.fill(value)
        field.press("Tab")
    page.get_by_role("button", name="Refine general for G (capped)").click()
    page.get_by_role("button", name="Stop the refinement").wait_for(timeout=60_000)
    s.open("How it works")  # a page switch does not stop it
    s.open("Home")
    wait_text(page, "Refined model general-refined-G-cap saved", timeout=180_000)
    s.shot("9_refined")
    picker = page.get_by_test_id("stSelectbox").filter(has_text="Model").evaluate(
        "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
    assert "[refined" in picker and "refined from general" in picker, picker
    assert (user / "general-refined-G-cap" / "model.safetensors").is_file()
    assert s.dialogs == [] and s.foreign_hosts() == set()
    s.ctx.close()
