"""Regenerate docs/load-report.png: a real `ussdgw load --report` run, screenshotted with Debian's
headless Chromium (Grafana is not at hand here; the report shows the same kind of figures):

    .venv/bin/python docs/make_load_report.py [--rate 500 --duration 15 --phones 500]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from playwright.async_api import async_playwright

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ussdgw.app.cli import main as ussdgw

DOCS = Path(__file__).resolve().parent
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


async def screenshot(report: Path, out: Path) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = await browser.new_page(viewport={"width": 1200, "height": 900}, device_scale_factor=1)
        await page.goto(report.as_uri())
        await page.screenshot(path=str(out), full_page=True)
        await browser.close()


def run() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", default="500")
    parser.add_argument("--duration", default="15")
    parser.add_argument("--phones", default="500")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "load-report.html"
        code = ussdgw(["load", "--phones", args.phones, "--rate", args.rate, "--duration", args.duration,
                       "--report", str(report)])
        if not report.exists():
            return code or 1
        asyncio.run(screenshot(report, DOCS / "load-report.png"))
    print(f"wrote {DOCS / 'load-report.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(run())
