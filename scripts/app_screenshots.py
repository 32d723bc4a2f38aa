"""Screenshots of the Energy, Ramachandran and How it works pages for one shipped system, as a
user sees them after sampling (issue #17 asked for tri-alanine at a low effective sample size).

    python scripts/app_screenshots.py --system tri-alanine --n 1000 --out results
writes OUT/app_<page>.png (palette PNGs, small enough to commit). Needs chromium and playwright.
"""

import argparse
import tempfile
from pathlib import Path

from app_lib import serve

PAGES = (("Energy", "energy"), ("Ramachandran", "ramachandran"), ("How it works", "how_it_works"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--system", default="tri-alanine", help="start of the shipped system's label")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results")
    args = p.parse_args()
    from PIL import Image
    from playwright.sync_api import sync_playwright

    out = Path(args.out)
    with tempfile.TemporaryFile("w+") as log:
        proc, url = serve.start_streamlit({}, log)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=serve.CHROMIUM, args=serve.CHROMIUM_ARGS)
                s = serve.Session(browser, url)
                s.choose_system(args.system)
                s.start_sampling(args.n, args.seed)
                s.wait_sampled(args.n)
                for link, name in PAGES:
                    s.open(link)
                    s.page.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2")
                    path = out / f"app_{name}.png"
                    s.shot(path)
                    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)
                    print(path, path.stat().st_size // 1024, "KiB")
                browser.close()
        finally:
            serve.stop(proc)


if __name__ == "__main__":
    main()
