"""A real headless Chromium for page and EventSource tests (the system's, driven by Playwright).

Tests that need it are skipped where no ``chromium`` is on PATH (scripts/test.sh installs it on
Debian); ``SANIC_FEEDS_CHROMIUM`` names another binary.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = os.environ.get("SANIC_FEEDS_CHROMIUM") or shutil.which("chromium") or ""

needs_chromium = pytest.mark.skipif(
    not CHROMIUM, reason="no chromium on PATH (scripts/test.sh installs it on Debian)"
)

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@asynccontextmanager
async def launched_chromium() -> AsyncIterator[Browser]:
    """A fresh headless Chromium, closed after the block."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            await browser.close()
