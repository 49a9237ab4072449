"""The page at / in a real headless Chromium (Debian's package, driven by Playwright).

Two pages chat through two server instances on Redis; stopping and restarting one instance
shows the page reconnecting and recovering what was said meanwhile, without duplicates.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from support.browser import launched_chromium, needs_chromium
from support.server_process import ServerProcess

SCREENSHOT = os.environ.get("SANIC_FEEDS_SCREENSHOT")  # where to keep a picture of the page

pytestmark = needs_chromium


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with launched_chromium() as chromium:
        yield chromium


async def join(page: Page, url: str, user: str, channel: str = "lobby") -> None:
    await page.goto(url)
    await page.fill("#channel", channel)
    await page.fill("#user", user)
    await page.click("#join")
    await expect(page.locator("#state")).to_have_attribute(
        "data-state", "connected", timeout=10_000
    )


async def say(page: Page, text: str) -> None:
    await page.focus("#message")
    await page.keyboard.type(text)
    await page.keyboard.press("Enter")


def chats(page: Page, text: str) -> Locator:
    return page.locator('#log [data-type="chat"]', has_text=text)


async def test_two_pages_chat_and_recover_after_a_restart(
    browser: Browser, redis_url: str, tmp_path: Path
) -> None:
    with ServerProcess(redis_url) as one, ServerProcess(redis_url) as two:
        ann = await browser.new_page()
        bob = await browser.new_page()
        await join(ann, one.http_url + "/", "ann")
        await join(bob, two.http_url + "/", "bob")

        # Both see each other and chat across instances.
        await expect(bob.locator("#present")).to_contain_text("ann", timeout=10_000)
        await say(ann, "hello from ann")
        await expect(chats(bob, "hello from ann")).to_have_count(1, timeout=10_000)
        await say(bob, "hi ann")
        await expect(chats(ann, "hi ann")).to_have_count(1, timeout=10_000)

        # Ann's instance goes away; bob keeps talking; it comes back on the same port.
        port = one.port
        one.stop()
        await expect(ann.locator("#state")).to_have_attribute(
            "data-state", "reconnecting", timeout=10_000
        )
        for n in range(3):
            await say(bob, f"while you were away {n}")
        with ServerProcess(redis_url, port=port):
            await expect(ann.locator("#state")).to_have_attribute(
                "data-state", "connected", timeout=30_000
            )
            for n in range(3):
                await expect(chats(ann, f"while you were away {n}")).to_have_count(
                    1, timeout=10_000
                )
            await expect(ann.locator('#log [data-type="recovered"]')).to_have_count(1)
            await expect(chats(ann, "hello from ann")).to_have_count(1)  # nothing doubled
            await say(ann, "back again")
            # Her own copy first: it says the chat was published, so a failure below is the
            # delivery to the other instance, not the sending.
            await expect(chats(ann, "back again")).to_have_count(1, timeout=10_000)
            await expect(chats(bob, "back again")).to_have_count(1, timeout=10_000)
            if SCREENSHOT:
                await ann.screenshot(path=SCREENSHOT, full_page=True)
            else:
                await ann.screenshot(path=str(tmp_path / "page.png"))


async def test_page_is_labelled_and_keyboard_usable(browser: Browser, redis_url: str) -> None:
    """Every input has a label; the form works from the keyboard alone."""
    with ServerProcess(redis_url) as server:
        page = await browser.new_page()
        await page.goto(server.http_url + "/")
        for field in ("channel", "user", "token", "message"):
            label = page.locator(f'label[for="{field}"]')
            assert await label.count() == 1, f"no label for #{field}"
        await page.focus("#channel")
        await page.keyboard.press("Control+A")
        await page.keyboard.type("keys")
        await page.keyboard.press("Enter")
        await expect(page.locator("#state")).to_have_attribute(
            "data-state", "connected", timeout=10_000
        )
        await say(page, "typed only")
        await expect(chats(page, "typed only")).to_have_count(1, timeout=10_000)
