"""Browser tests: the bundled Converse.js in Debian's Chromium, driven by Playwright.

Playwright (from PyPI) launches /usr/bin/chromium headless with a fresh profile; nothing is
downloaded. scripts/install-test-deps.sh installs Chromium, Playwright and the web client.
Screenshots go to test-artifacts/ at the repository's root.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from minimix.web.server import WEB_CLIENT_DIST

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# No background traffic: this machine has no network beyond loopback.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return "Debian's chromium is not installed (scripts/install-test-deps.sh)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    if not (WEB_CLIENT_DIST / "converse.min.js").exists():
        return "the web client is not installed (scripts/install-web-client.sh)"
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    reason = _missing()
    if reason:
        pytest.skip(reason)
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        # Playwright starts Chromium on a new, empty --user-data-dir of its own each time; each
        # browser context in it is isolated (cookies, IndexedDB), like a separate browser.
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture
def artifacts(request: pytest.FixtureRequest) -> Path:
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
