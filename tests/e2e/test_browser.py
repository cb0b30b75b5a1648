"""A real browser (Debian's Chromium driven by Playwright) on the inbox page."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import psycopg
import pytest
from playwright.async_api import async_playwright, expect

from router.auth import mint
from tests.fix_pipeline import Pipeline
from tests.fix_router import SECRET, wait_ready

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("OUTBOX_TEST_ARTIFACTS", ".artifacts"))


async def test_inbox_shows_acknowledges_and_survives_reload(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: `apt-get install chromium` (make test installs it)"
        )
    await wait_ready(pipeline.router.port, 60)
    teacher = "browser-teacher"
    token = mint(SECRET, teacher, 3600, now=time.time())
    url = f"http://127.0.0.1:{pipeline.router.port}/?token={token}"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )  # fmt: skip
        try:
            ctx = await browser.new_context(viewport={"width": 390, "height": 844})  # phone width
            page = await ctx.new_page()
            second = await ctx.new_page()  # another open tab of the same teacher
            await page.goto(url)
            await second.goto(url)
            await expect(page.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
            await expect(second.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
            with psycopg.connect(pipeline.db.dsn, autocommit=True) as conn:
                critical = await asyncio.to_thread(
                    pipeline.service_commit,
                    conn,
                    teacher,
                    "student_matching_confirmation_required",
                    1,
                )
                info = await asyncio.to_thread(
                    pipeline.service_commit, conn, teacher, "batch_processing_completed", 2
                )
            t0 = time.monotonic()
            pinned = page.locator(f'#pinned li[data-id="{critical}"]')
            await expect(pinned).to_be_visible(timeout=5000)
            seen_after = time.monotonic() - t0
            await expect(
                page.locator(f'section[data-category="batch_progress"] li[data-id="{info}"]')
            ).to_be_visible()
            await expect(pinned.locator(".deadline")).to_contain_text("left")
            await expect(pinned.locator(".badge")).to_have_text("CRITICAL")
            await expect(page.locator("#announcer, #announcer-urgent")).not_to_have_count(0)
            await page.screenshot(path=str(ARTIFACTS / "inbox-before-ack.png"), full_page=True)
            # acknowledge by keyboard
            await pinned.locator("button.ack").focus()
            await page.keyboard.press("Enter")
            await expect(page.locator(f'#pinned li[data-id="{critical}"]')).to_have_count(
                0, timeout=5000
            )
            await expect(second.locator(f'#pinned li[data-id="{critical}"]')).to_have_count(
                0, timeout=5000
            )
            await page.reload()
            await expect(page.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
            item = page.locator(f'li[data-id="{critical}"]')
            await expect(item).to_be_visible()
            await expect(item.locator(".state-acked")).to_have_text("✓ Acknowledged")
            await expect(page.locator("#pinned li")).to_have_count(0)
            await page.screenshot(path=str(ARTIFACTS / "inbox-after-reload.png"), full_page=True)
            assert seen_after < 5
        finally:
            await browser.close()
