"""Click-to-plots wall time of the app in a real browser (issue goal: <= 20 s on this CPU).

Starts `streamlit run app.py` on the shipped models, drives Debian chromium with Playwright,
samples the default system with 5,000 samples, and times: click -> "Sampled" message; then the
Ramachandran and Energy pages until their plotly figures are drawn.

Needs a source checkout: app.py and pages/ live beside the package (its parent folder), not in
it; elsewhere, or without chromium or playwright, `run` raises BenchmarkUnavailable.
Usage: python -m arbg_core.bench.app [--out results] [--n 5000]
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from . import BenchmarkUnavailable
from .common import cli, write

CHECKOUT = Path(__file__).resolve().parents[2]  # the folder holding arbg_core/, app.py, pages/
BROWSER_FLAGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]  # DESIGN §12
TIMEOUT_MS = 600_000


def _requirements() -> str:
    """chromium's path, or BenchmarkUnavailable saying what is missing."""
    if not (CHECKOUT / "app.py").is_file():
        raise BenchmarkUnavailable(f"the app benchmark needs a source checkout (app.py beside "
                                   f"arbg_core/); {CHECKOUT} has none")
    chromium = shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if Path(p).exists()), None)
    if chromium is None:
        raise BenchmarkUnavailable("chromium is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise BenchmarkUnavailable("playwright (python) is not installed") from None
    return chromium


def _streamlit(log) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` of the checkout on a free local port, once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py",
                             "--server.headless", "true", "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.fileWatcherType", "none",
                             "--browser.gatherUsageStats", "false"],
                            cwd=CHECKOUT, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(180):  # 90 s
        try:
            if urllib.request.urlopen(url + "_stcore/health", timeout=2).read() == b"ok":
                return proc, url
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(0.5)
    proc.kill()
    log.seek(0)
    raise RuntimeError(f"streamlit did not start:\n{log.read()[-3000:]}")


def _time_clicks(page, n: int) -> dict:
    """Seconds from the Sample click (filling in n and the seed first, as a user does) to the
    message, the Ramachandran and the Energy plots."""
    sample = page.get_by_role("button", name="Sample", exact=True)
    sample.wait_for()
    t0 = time.perf_counter()
    for label, value in (("Number of samples", n), ("Seed", 0)):
        box = page.get_by_role("spinbutton", name=label)
        box.fill(str(value))
        box.press("Tab")
    sample.click()
    page.get_by_text(f"Sampled {n:,} conformations").wait_for(timeout=TIMEOUT_MS)
    times = {"click_to_sampled_s": time.perf_counter() - t0}
    for key, link, n_plots in (("click_to_ramachandran_s", "Ramachandran", 1),
                               ("click_to_all_plots_s", "Energy", 2)):
        page.get_by_role("link", name=link, exact=True).click()
        page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length "
                               f">= {n_plots}", timeout=TIMEOUT_MS)
        times[key] = time.perf_counter() - t0
    return times


def run(out_dir: str = "results", n: int = 5000) -> dict:
    chromium = _requirements()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryFile("w+") as log:
        proc, url = _streamlit(log)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=chromium, args=BROWSER_FLAGS)
                page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
                page.set_default_timeout(180_000)
                page.goto(url)
                times = _time_clicks(page, n)
                browser.close()
        finally:
            proc.terminate()
            proc.wait(15)
    result = {"n_samples": n, "system": "default (first shipped model)", **times, "goal_s": 20.0}
    write(out_dir, "app", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__)
