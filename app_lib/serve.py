"""The app served to a real browser: `streamlit run app.py` on a free localhost port, and one
chromium session that drives it through Playwright (bench/app.py times it, tests/app/test_browser.py
checks it). Playwright is imported by whoever launches the browser, never here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

from .paths import REPO

CHROMIUM = next((p for p in (shutil.which("chromium"), "/usr/bin/chromium", "/usr/lib/chromium/chromium")
                 if p and Path(p).exists()), None)
# What Debian's headless chromium needs here (DESIGN §12): no sandbox, no network of its own,
# software WebGL for the 3D views.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--enable-unsafe-swiftshader", "--use-angle=swiftshader"]
LOCAL_HOSTS = {"127.0.0.1", "localhost"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_streamlit(env: dict, log, timeout_s: float = 90):
    """`streamlit run app.py` on a free localhost port -> (process, url) once it is healthy.

    env: variables on top of this process' environment (e.g. ARBG_MODELS_DIR); `log` is a file
    open for writing and reading (the server's output, shown if it does not start).
    """
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.fileWatcherType", "none", "--browser.gatherUsageStats", "false"],
        cwd=REPO, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(url + "_stcore/health", timeout=2) as r:
                if r.read() == b"ok":
                    return proc, url
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.seek(0)
            proc.kill()
            raise RuntimeError(f"streamlit did not start:\n{log.read()[-3000:]}")
        time.sleep(0.5)


def stop(proc, timeout_s: float = 15) -> None:
    """Terminate a server from `start_streamlit`; kill it if it does not exit in time."""
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()


class Session:
    """One browser context = one Streamlit session; records every request and dialog."""

    def __init__(self, browser, url, ready: bool = True):
        self.ctx = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        self.requests, self.dialogs = [], []
        self.ctx.on("request", lambda r: self.requests.append(r.url))
        self.page = self.ctx.new_page()
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.set_default_timeout(180_000)
        self.page.goto(url)
        if ready:  # False: the default system has no model, so no Sample button yet
            self.sample_button.wait_for()
        else:
            self.page.get_by_role("heading", level=1).first.wait_for()

    @property
    def sample_button(self):
        return self.page.get_by_role("button", name="Sample", exact=True)

    def fill_sampling(self, n: int, seed: int) -> None:
        """Type the sample count and seed into Home's form (no run yet: a form waits)."""
        for label, value in (("Number of samples", n), ("Seed", seed)):
            box = self.page.get_by_role("spinbutton", name=label)
            box.fill(str(value))
            box.press("Tab")

    def start_sampling(self, n: int, seed: int) -> None:
        self.fill_sampling(n, seed)
        self.sample_button.click()

    def wait_sampled(self, n: int) -> None:
        self.page.get_by_text(f"Sampled {n:,} conformations").wait_for(timeout=300_000)
        self.page.get_by_role("heading", name="Last run").wait_for()

    def open(self, name: str) -> None:
        self.page.get_by_role("link", name=name, exact=True).click()
        self.page.get_by_role("heading", level=1).first.wait_for()

    def choose_system(self, label_start: str) -> None:
        """Pick a shipped system in the Home page's selectbox by the start of its label."""
        self.page.get_by_role("combobox").first.click()
        self.page.get_by_role("option", name=label_start, exact=False).first.click()
        self.sample_button.wait_for()

    def shot(self, path, max_height: int = 6000) -> None:
        """The whole page as a PNG: Streamlit scrolls inside its main section, so the viewport
        grows to the content's height first."""
        self.page.wait_for_timeout(500)
        height = self.page.evaluate("Math.max(...Array.from(document.querySelectorAll("
                                    "'[data-testid=stMain], [data-testid=stMainBlockContainer]'))"
                                    ".map(e => e.scrollHeight), 900)")
        self.page.set_viewport_size({"width": 1280, "height": min(int(height) + 40, max_height)})
        self.page.wait_for_timeout(500)
        self.page.screenshot(path=str(path))
        self.page.set_viewport_size({"width": 1280, "height": 900})

    def foreign_hosts(self) -> set:
        hosts = {urlparse(u).hostname for u in self.requests if urlparse(u).scheme in ("http", "https", "ws", "wss")}
        return hosts - LOCAL_HOSTS


def wait_plots(page, n: int) -> None:
    """Wait until `n` plotly figures are drawn on the page."""
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {n}",
                           timeout=180_000)
