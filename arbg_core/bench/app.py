"""Click-to-plots wall time of the app in a real browser (issue goal: <= 20 s on this CPU).

Starts `streamlit run app.py` on the shipped models, drives Debian chromium with Playwright
(app_lib.serve, the same harness as tests/app/test_browser.py), samples the default system with
5,000 samples, and times: click -> "Sampled" message; then the Ramachandran and Energy pages until
their plotly figures are drawn.

Needs a source checkout: app.py, pages/ and app_lib/ live beside the package, not in it. Run it
from the checkout's root as `python -m arbg_core.cli bench app` (what `make bench` does); where
app_lib cannot be imported, or chromium or playwright is missing, `run` raises
BenchmarkUnavailable saying so.
Usage: python -m arbg_core.bench.app [--out results] [--n 5000]
"""

from __future__ import annotations

import tempfile
import time

from . import BenchmarkUnavailable
from .common import cli, write


def _serve_module():
    """app_lib.serve of the source checkout, or BenchmarkUnavailable saying what is missing."""
    try:
        from app_lib import serve
    except ImportError:
        raise BenchmarkUnavailable(
            "the app benchmark needs a source checkout (app.py and app_lib/ beside arbg_core/): "
            "run `python -m arbg_core.cli bench app` from its root") from None
    if serve.CHROMIUM is None:
        raise BenchmarkUnavailable("chromium is not installed (apt-get install chromium)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        raise BenchmarkUnavailable("playwright (python) is not installed") from None
    return serve


def run(out_dir: str = "results", n: int = 5000) -> dict:
    serve = _serve_module()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryFile("w+") as log:
        proc, url = serve.start_streamlit({}, log)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=serve.CHROMIUM,
                                            args=serve.CHROMIUM_ARGS)
                s = serve.Session(browser, url)
                t0 = time.perf_counter()
                s.start_sampling(n, seed=0)
                s.page.get_by_text(f"Sampled {n:,} conformations").wait_for(timeout=600_000)
                sampled = time.perf_counter() - t0
                s.open("Ramachandran")
                serve.wait_plots(s.page, 1)
                rama = time.perf_counter() - t0
                s.open("Energy")
                serve.wait_plots(s.page, 2)
                total = time.perf_counter() - t0
                browser.close()
        finally:
            serve.stop(proc)
    result = {"n_samples": n, "system": "default (first shipped model)",
              "click_to_sampled_s": sampled, "click_to_ramachandran_s": rama,
              "click_to_all_plots_s": total, "goal_s": 20.0}
    write(out_dir, "app", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__)
