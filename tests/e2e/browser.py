"""Debian's Chromium driven by Playwright: the browser the page's tests run in.

Playwright never downloads a browser here; it drives the system's /usr/bin/chromium with
background networking off, so the browser only ever talks to the test's loopback server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


def open_page(chromium: Any, base_url: str) -> Iterator[Any]:
    """Yield a new page of the server at `base_url`; fail if the page logged any error."""
    context = chromium.new_context(
        base_url=base_url, accept_downloads=True, viewport={"width": 1200, "height": 900}
    )
    context.set_default_timeout(60_000)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Refused requests are logged by the browser too; the tests check what the page shows.
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}")
            if message.type == "error" and not message.text.startswith("Failed to load resource")
            else None
        ),
    )
    yield page
    context.close()
    assert not problems, problems


def sign_in(page: Any, key: str) -> None:
    """Open the page; it asks for a key (the service requires one); give it."""
    from playwright.sync_api import expect

    page.goto("/ui/")
    expect(page.get_by_role("alert")).to_contain_text("needs an API key")
    # ... and says how to get one: keys are made on the server.
    expect(page.get_by_role("alert")).to_contain_text("textq keys create --tenant NAME")
    page.get_by_role("textbox", name="API key").fill(key)
    page.get_by_role("button", name="Use this key").click()
    expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()
    expect(page.get_by_role("alert")).to_be_hidden()


def screenshot_path(name: str) -> Path:
    """Return where a test saves a screenshot (kept as a CI artifact)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"
