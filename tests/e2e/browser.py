"""Debian's Chromium driven by Playwright: the browser the page's tests run in.

Playwright never downloads a browser here; it drives the system's /usr/bin/chromium with
background networking off, so the browser only ever talks to the test's loopback server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = Path(os.environ.get("TEXTQ_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-gpu",
]
ARTIFACTS = Path(os.environ.get("TEXTQ_TEST_ARTIFACTS", "build/test-artifacts")) / "ui"


def chromium_or_skip() -> Path:
    """Return the browser's path; without one, fail in CI and skip elsewhere."""
    if CHROMIUM.exists() or shutil.which(str(CHROMIUM)):
        return CHROMIUM
    reason = f"{CHROMIUM} is missing; `make install` installs Debian's chromium (as root)"
    if os.environ.get("TEXTQ_TEST_REQUIRE_SERVICES"):
        pytest.fail(reason)
    pytest.skip(reason)


def launch() -> Iterator[object]:
    """Yield a headless Chromium browser (a Playwright `Browser`)."""
    from playwright.sync_api import sync_playwright

    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(executable), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot_path(name: str) -> Path:
    """Return where a test saves a screenshot (kept as a CI artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"
