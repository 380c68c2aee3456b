"""Headless Chromium for the browser tests (Debian ``chromium`` + ``chromium-driver``, driven by Selenium).

:func:`require` skips a test when no browser can be had, with the reason; under ``CI=true`` it fails instead, so
a CI run never passes without having driven the real pages. ``make test`` installs the browser where it can.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
        "--window-size=1360,1000", "--hide-scrollbars")


def find() -> tuple[str, str] | str:
    """(chromium, chromedriver) paths, or why there is no browser."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (`pip install -e .[test]`)"
    browser = os.environ.get("NEGDB_CHROMIUM") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = os.environ.get("NEGDB_CHROMEDRIVER") or shutil.which("chromedriver")
    if browser is None or driver is None:
        return ("no headless Chromium: `apt-get install chromium chromium-driver` (make test does this as root)"
                f" [chromium: {browser or 'missing'}, chromedriver: {driver or 'missing'}]")
    return browser, driver


def require() -> tuple[str, str]:
    found = find()
    if isinstance(found, str):
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {found}")
        pytest.skip(found)
    return found


def start(user_data_dir: Path) -> Any:
    """A headless Chromium session with a fresh profile; the browser console is kept (``get_log('browser')``)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = require()
    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager look for drivers online
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ARGS:
        opts.add_argument(a)
    opts.add_argument(f"--user-data-dir={user_data_dir}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def console_errors(drv: Any) -> list[str]:
    """SEVERE entries of the browser console since the last call."""
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


CHART_STATE = """
const out = [];
document.querySelectorAll('[data-chart]').forEach(el => {
  const c = el.querySelector('canvas');
  let inked = 0;
  if (c && c.width && c.height) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4 * 7) { if (d[i] > 0) inked++; }
  }
  out.push({id: el.id, drawn: el.dataset.drawn === '1', points: +(el.dataset.points || 0),
            canvas: !!c, width: c ? c.width : 0, inked: inked, scale: el.dataset.scale || ''});
});
return out;
"""
"""JavaScript: per chart, whether uPlot drew it, its data points and how many canvas pixels are inked."""
