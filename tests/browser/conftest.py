"""Browser test infrastructure: Debian's Chromium driven headless by Playwright (never a downloaded browser), one
browser per session, a fresh context (cookies, storage) per test, and the real app on 127.0.0.1 from tests/conftest.py.

The console (tests/browser/test_console*.py) and the crew app (/app/) tests share these fixtures.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser, BrowserContext, Page, Playwright, async_playwright, expect

from tests.conftest import Server

# Debian's package (apt-get install chromium); .ci/run installs it when missing. Playwright never downloads one.
CHROMIUM = os.environ.get("FIELDSYNC_CHROMIUM", "/usr/bin/chromium")
# The machine has no outside network: no update checks, no sync, no first-run UI; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
# Actions and assertions (expect(): its own default is only 5 s) wait at most this long. A bound for failures, not a
# speed figure (that is ops/bench's job): on a loaded 2-core machine Chromium alone can take seconds per step.
TIMEOUT_MS = 30_000
expect.set_options(timeout=TIMEOUT_MS)


@pytest.fixture(scope="session")
async def playwright_driver() -> AsyncIterator[Playwright]:
    """One Playwright driver for the session (its node process is the expensive part)."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (never let Playwright download a browser)")
    async with async_playwright() as pw:
        yield pw


@pytest.fixture(scope="session")
async def browser_profile() -> AsyncIterator[str]:
    """A fresh, throwaway user-data dir: nothing from a previous run or another user's profile leaks in."""
    path = tempfile.mkdtemp(prefix="fs-chromium-")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
async def browser(playwright_driver: Playwright, browser_profile: str) -> AsyncIterator[Browser]:
    """Chromium headless, launched once; tests isolate themselves with new contexts (cheap) instead of new browsers."""
    b = await playwright_driver.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
        # Playwright gives each launch its own temp profile too; crash dumps and disk cache go under ours.
        env={**os.environ, "HOME": browser_profile, "XDG_CONFIG_HOME": browser_profile, "XDG_CACHE_HOME": browser_profile},
    )
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser context per test: its own cookies, so sessions never leak between tests."""
    ctx = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="en-US")
    ctx.set_default_timeout(TIMEOUT_MS)
    try:
        yield ctx
    finally:
        await ctx.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page that fails the test on any uncaught script error or CSP violation it reports."""
    p = await context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    p.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" and "Content Security Policy" in msg.text else None)
    yield p
    assert not errors, errors


@pytest.fixture
async def live_server(server: Server) -> Server:
    """The real app on a free 127.0.0.1 port (tests/conftest.py's `server`), named for what browser tests need."""
    return server
