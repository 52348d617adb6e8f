"""The headless Chromium the page tests drive (Debian package `chromium`; `USSDGW_CHROMIUM` points elsewhere)."""

from __future__ import annotations

import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("USSDGW_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 10_000  # the longest a page step may take before the test fails
