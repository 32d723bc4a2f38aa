"""Click-to-every-plot wall time of the app in a real browser (issue #17: <= 15 s on this 2-core
machine with nothing else running, and <= 2x that beside one other CPU-bound job).

Starts `streamlit run app.py` on the shipped models, drives Debian chromium with Playwright
(app_lib.serve, the same harness as tests/app/test_browser.py), samples the default system
(alanine dipeptide) with 2,000 samples, and times from the click: the "Sampled" message, then
the Ramachandran, Energy and How it works pages until every plotly figure on them is drawn.
It does this once per condition, each on a fresh server (a first click): `busy_jobs` lists how
many CPU-bound processes (a Python busy loop each) run beside it, e.g. "0,1". Stop other work on
the machine first: the figures are only comparable on an otherwise idle machine.

Needs a source checkout: app.py, pages/ and app_lib/ live beside the package, not in it. Run it
from the checkout's root as `python -m arbg_core.cli bench app` (what `make bench` does); where
app_lib cannot be imported, or chromium or playwright is missing, `run` raises
BenchmarkUnavailable saying so.
Usage: python -m arbg_core.bench.app [--out results] [--n 2000] [--busy-jobs 0,0,0,1,1,1]
"""

from __future__ import annotations

import re
import statistics
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


# (page link, heading, plotly figures drawn on it) in the order visited after the run
PLOT_PAGES = (("Ramachandran", "Ramachandran maps", 1), ("Energy", "Energies and weights", 2),
              ("How it works", "How it works", 5))
_DRAWN = ("n => Array.from(document.querySelectorAll('.js-plotly-plot')).filter(e => "
          "e.querySelector('.main-svg') && !e.closest('[data-stale=\"true\"]')).length >= n")


def _browser_cpu_s() -> float:
    """CPU seconds used so far by every chromium process (Linux /proc; 0 elsewhere)."""
    import os
    from pathlib import Path

    total, tick = 0.0, os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, rest = text[text.index("(") + 1:text.rindex(")")], text[text.rindex(")") + 2:]
        if "chrom" in name:
            fields = rest.split()
            total += (int(fields[11]) + int(fields[12])) / tick  # utime + stime
    return total


def _click_to_plots(serve, browser, url: str, n: int) -> dict:
    """Seconds from the Sample click to: the finished run, then every figure of each page."""
    s = serve.Session(browser, url)
    s.fill_sampling(n, seed=0)
    cpu0 = _browser_cpu_s()
    t0 = time.perf_counter()
    out0 = {"click_unix": time.time()}  # to place the server's job log line (unix times)
    s.sample_button.click()
    done = s.page.get_by_text(f"Sampled {n:,} conformations").first
    done.wait_for(timeout=600_000)
    out = {**out0, "click_to_sampled_s": time.perf_counter() - t0}
    # the app's own clock: the job's seconds from its start to its end (AppRun.done_text)
    m = re.search(r" in ([0-9.]+) s", done.inner_text())
    out["job_s"] = float(m.group(1)) if m else None
    out["browser_cpu_s_until_sampled"] = _browser_cpu_s() - cpu0  # the browser shares the cores
    for link, heading, n_plots in PLOT_PAGES:
        s.page.get_by_role("link", name=link, exact=True).click()
        s.page.get_by_role("heading", name=heading, exact=True).wait_for(timeout=300_000)
        s.page.wait_for_function(_DRAWN, arg=n_plots, timeout=300_000)
        out[f"click_to_{link.lower().replace(' ', '_')}_s"] = time.perf_counter() - t0
    out["click_to_every_plot_s"] = time.perf_counter() - t0
    s.ctx.close()
    return out


def _condition(serve, n: int, busy: int) -> dict:
    """One fresh server and browser, with `busy` CPU-bound processes beside them."""
    import subprocess
    import sys

    from playwright.sync_api import sync_playwright

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(busy)]
    try:
        with tempfile.TemporaryFile("w+") as log:
            proc, url = serve.start_streamlit({}, log)
            try:
                with sync_playwright() as p:
                    browser = p.chromium.launch(executable_path=serve.CHROMIUM,
                                                args=serve.CHROMIUM_ARGS)
                    result = _click_to_plots(serve, browser, url, n)
                    browser.close()
            finally:
                serve.stop(proc)
            log.seek(0)  # the server's own account of the run (app_lib.jobs logs one line)
            result["server_job_log"] = [line.strip() for line in log if "arbg job" in line]
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return {"other_cpu_jobs": busy, **result}


def run(out_dir: str = "results", n: int = 2000, busy_jobs: str = "0,0,0,1,1,1") -> dict:
    serve = _serve_module()
    conditions = [_condition(serve, n, int(b)) for b in busy_jobs.split(",")]
    result = {"n_samples": n, "system": "default (alanine dipeptide, shipped ala2 model)",
              "pages": [p[0] for p in PLOT_PAGES], "conditions": conditions,
              "goal_s": {"nothing_else_running": 15.0, "one_other_cpu_job": "2x the idle figure"}}
    # a condition listed more than once (e.g. "0,0,0,1,1,1": this VM's speed drifts by 20 %
    # within minutes) is summarized by its median
    by_busy = {}
    for c in conditions:
        by_busy.setdefault(c["other_cpu_jobs"], []).append(c["click_to_every_plot_s"])
    result["median_click_to_every_plot_s"] = {str(b): statistics.median(v)
                                              for b, v in by_busy.items()}
    if 0 in by_busy and 1 in by_busy:
        result["one_job_over_idle"] = (statistics.median(by_busy[1])
                                       / statistics.median(by_busy[0]))
    write(out_dir, "app", result)
    return result


if __name__ == "__main__":
    cli(run, __doc__)
