"""Click-to-plots wall time of the app in a real browser (issue goal: <= 20 s on this CPU).

Starts `streamlit run app.py` on the shipped models, drives Debian chromium with Playwright
(the same harness as tests/app/test_browser.py), samples the default system with 5,000 samples,
and times: click -> "Sampled" message; then the Ramachandran and Energy pages until their
plotly figures are drawn.
Usage: python bench/app.py [--out results] [--n 5000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # app_lib lives beside app.py, outside the package


def run(out_dir="results", n=5000) -> dict:
    from playwright.sync_api import sync_playwright
    from app_lib.serve import CHROMIUM, CHROMIUM_ARGS, Session, start_streamlit, wait_plots

    if CHROMIUM is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    log = tempfile.TemporaryFile("w+")
    proc, url = start_streamlit({}, log)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            s = Session(browser, url)
            t0 = time.perf_counter()
            s.start_sampling(n, seed=0)
            s.page.get_by_text(f"Sampled {n:,} conformations").wait_for(timeout=600_000)
            sampled = time.perf_counter() - t0
            s.open("Ramachandran")
            wait_plots(s.page, 1)
            rama = time.perf_counter() - t0
            s.open("Energy")
            wait_plots(s.page, 2)
            total = time.perf_counter() - t0
            browser.close()
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    result = {"n_samples": n, "system": "default (first shipped model)",
              "click_to_sampled_s": sampled, "click_to_ramachandran_s": rama,
              "click_to_all_plots_s": total, "goal_s": 20.0}
    write(out_dir, "app", result)
    return result


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="results")
    p.add_argument("--n", type=int, default=5000)
    a = p.parse_args()
    print(run(a.out, a.n))
