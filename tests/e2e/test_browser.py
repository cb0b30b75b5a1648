"""A real browser (Debian's Chromium driven by Playwright) on the inbox page,
at a desktop and a phone width: the words, the order, the token, the sign-in
screens, keyboard-only acknowledge and an axe-core accessibility scan."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from contracts.catalog import CATALOG
from contracts.words import CATEGORIES, EXAMPLES, describe
from router.auth import mint
from tests.fix_pipeline import Pipeline
from tests.fix_router import SECRET, wait_ready

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("OUTBOX_TEST_ARTIFACTS", ".artifacts"))
AXE = Path(__file__).resolve().parents[2] / "node_modules" / "axe-core" / "axe.min.js"
WIDTHS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
# Each width in another locale and time zone: the page must follow the browser's.
PLACES = {"desktop": ("en-GB", "Europe/Stockholm"), "phone": ("sv-SE", "America/New_York")}


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Debian's chromium is missing: `apt-get install chromium` (make test installs it)"
        )
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run",
                  "--disable-quic"],
        )  # fmt: skip
        try:
            yield browser
        finally:
            await browser.close()


def commit(pipeline: Pipeline, teacher: str, t: str, i: int) -> str:
    with psycopg.connect(pipeline.db.dsn, autocommit=True) as conn:
        return pipeline.service_commit(conn, teacher, t, i, payload={**EXAMPLES[t], "i": i})


async def ids(page: Page, selector: str) -> list[str]:
    return await page.eval_on_selector_all(selector, "els => els.map(e => e.dataset.id)")


async def visible_categories(page: Page) -> list[str]:
    return await page.eval_on_selector_all(
        "#groups section:not([hidden])", "els => els.map(e => e.dataset.category)"
    )


async def axe_scan(page: Page, name: str) -> list[dict[str, Any]]:
    """axe-core's serious and critical violations on the page (the full report
    is saved in .artifacts)."""
    await page.evaluate(AXE.read_text() + "\n;true")  # evaluate is not subject to the CSP
    report = await page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    (ARTIFACTS / f"axe-{name}.json").write_text(json.dumps(report["violations"], indent=1))
    return [v for v in report["violations"] if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("width", sorted(WIDTHS))
async def test_inbox_words_order_token_and_keyboard_acknowledge(
    pipeline: Pipeline, width: str
) -> None:
    assert AXE.exists(), "axe-core is missing: run `make bootstrap` (npm ci)"
    await wait_ready(pipeline.router.port, 60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    teacher = f"browser-{width}"
    base = f"http://127.0.0.1:{pipeline.router.port}/"
    token = mint(SECRET, teacher, 3600, now=time.time())
    # Before the page opens: two action items and an ordinary one.
    before = {
        "immediate": await asyncio.to_thread(commit, pipeline, teacher, "batch_validation_failed", 1),
        "high": await asyncio.to_thread(commit, pipeline, teacher, "batch_processing_failed", 2),
        "class_old": await asyncio.to_thread(commit, pipeline, teacher, "class_created", 3),
    }  # fmt: skip
    await asyncio.sleep(1.0)
    console: list[str] = []
    async with chromium() as browser:
        locale, zone = PLACES[width]
        ctx = await browser.new_context(viewport=WIDTHS[width], locale=locale,  # type: ignore[arg-type]
                                        timezone_id=zone)  # fmt: skip
        page = await ctx.new_page()
        page.on("console", lambda m: console.append(m.text))
        await page.goto(base + "?token=" + token)
        await expect(page.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
        # The token left the address bar and the history entry.
        assert "token" not in page.url
        assert await page.evaluate("location.search") == ""
        assert await page.evaluate("sessionStorage.getItem('outbox.token')") == token
        await expect(page.locator("#pinned li")).to_have_count(2)
        # Live: two CRITICAL items (the later one has the nearer deadline) and
        # two more in categories of their own, one newer in Classes.
        live = {
            "critical_24h": await asyncio.to_thread(
                commit, pipeline, teacher, "student_matching_confirmation_required", 4),
            "critical_3h": await asyncio.to_thread(
                commit, pipeline, teacher, "student_matching_deadline_approaching", 5),
            "files": await asyncio.to_thread(commit, pipeline, teacher, "batch_files_uploaded", 6),
            "class_new": await asyncio.to_thread(commit, pipeline, teacher, "class_created", 7),
        }  # fmt: skip
        await expect(page.locator("#pinned li")).to_have_count(4, timeout=10000)
        await expect(page.locator(f'li[data-id="{live["class_new"]}"]')).to_be_visible()
        pinned_order = [live["critical_3h"], live["critical_24h"], before["immediate"],
                        before["high"]]  # fmt: skip
        classes = 'section[data-category="class_management"] li'
        assert await ids(page, "#pinned li") == pinned_order
        assert await ids(page, classes) == [live["class_new"], before["class_old"]]
        order = [c.value for c in CATEGORIES]
        shown = await visible_categories(page)
        assert shown == sorted(shown, key=order.index) and len(shown) == 2
        assert await page.title() == "(4) Teacher inbox"
        # Words from the catalog, the same as contracts.words renders them.
        for t, key in (("student_matching_deadline_approaching", "critical_3h"),
                       ("batch_files_uploaded", "files"), ("class_created", "class_new")):  # fmt: skip
            title, text = describe(t, {**EXAMPLES[t], "i": 0})
            card = page.locator(f'li[data-id="{live[key]}"]')
            await expect(card.locator(".title")).to_have_text(title)
            await expect(card.locator(".text")).to_have_text(text)
        body = await page.inner_text("#inbox")
        assert not any(t in body for t in CATALOG) and "_" not in body
        # Times: relative on the card, exact on hover (title) and on focus.
        when = page.locator(f'li[data-id="{live["files"]}"] time.when')
        await expect(when).to_have_text("just now")
        assert await when.get_attribute("title")
        due = page.locator(f'li[data-id="{live["critical_3h"]}"] .deadline')
        await expect(due).to_contain_text("Due ")
        await expect(due).to_contain_text("left")
        # the deadline in the teacher's zone, on the 24-hour clock of both locales
        deadline = await due.locator(".left").get_attribute("data-deadline")
        assert deadline is not None
        local = datetime.fromisoformat(deadline).astimezone(ZoneInfo(zone))
        await expect(due.locator("time")).to_contain_text(f"{local.hour:02d}:{local.minute:02d}")
        assert "AM" not in await due.inner_text() and "PM" not in await due.inner_text()
        await page.screenshot(path=str(ARTIFACTS / f"inbox-{width}-live.png"), full_page=True)
        assert await axe_scan(page, f"{width}-live") == []

        # A reload: the same order everywhere.
        await page.reload()
        await expect(page.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
        await expect(page.locator("#pinned li")).to_have_count(4)
        assert await ids(page, "#pinned li") == pinned_order
        assert await ids(page, classes) == [live["class_new"], before["class_old"]]
        assert await visible_categories(page) == shown
        await page.screenshot(path=str(ARTIFACTS / f"inbox-{width}-reloaded.png"), full_page=True)

        # Keyboard only: Tab to the first Acknowledge button, Enter.
        for _ in range(60):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.classList.contains('ack')"):
                break
        else:
            pytest.fail("Tab never reached an Acknowledge button")
        focused = await page.evaluate("document.activeElement.closest('li').dataset.id")
        assert focused == live["critical_3h"]
        await page.keyboard.press("Enter")
        await expect(page.locator("#pinned li")).to_have_count(3, timeout=5000)
        await expect(page).to_have_title("(3) Teacher inbox")
        acked = page.locator(f'li[data-id="{live["critical_3h"]}"] .state-acked')
        await expect(acked).to_have_text("✓ Acknowledged")
        assert not [m for m in console if "Content Security Policy" in m], console
        await ctx.close()


@pytest.mark.parametrize("width", sorted(WIDTHS))
async def test_sign_in_screens_say_what_to_do(pipeline: Pipeline, width: str) -> None:
    await wait_ready(pipeline.router.port, 60)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{pipeline.router.port}/"
    cases = {
        "missing": (base, "Open your inbox from the platform"),
        "expired": (base + "?token=" + mint(SECRET, "t-exp", -120, now=time.time()),
                    "Your sign-in has expired"),
        "refused": (base + "?token=not-a-token", "We could not sign you in"),
    }  # fmt: skip
    async with chromium() as browser:
        for kind, (url, heading) in cases.items():
            ctx = await browser.new_context(viewport=WIDTHS[width])  # type: ignore[arg-type]
            page = await ctx.new_page()
            await page.goto(url)
            await expect(page.locator("#signin")).to_be_visible(timeout=10000)
            await expect(page.locator("#signin-title")).to_have_text(heading)
            await expect(page.locator("#signin-text")).to_contain_text("platform")
            await expect(page.locator("#content")).to_be_hidden()
            assert await page.evaluate("sessionStorage.getItem('outbox.token')") is None
            assert "token" not in page.url
            assert await page.inner_text("h1") == "Inbox"
            await page.screenshot(path=str(ARTIFACTS / f"signin-{kind}-{width}.png"))
            assert await axe_scan(page, f"signin-{kind}-{width}") == []
            await ctx.close()


@pytest.mark.parametrize(
    ("code", "reason", "shown", "wait_s"),
    [
        # The teacher's replay budget is spent: the page comes back no sooner.
        (1013, "this teacher's connections replayed too much; reconnect in 3 s",
         "Offline, reconnecting in 3 s", 3.0),
        # The page sent what the server would not take, which says nothing of
        # the sign-in: no sign-in screen, the token kept, back after 5 s.
        (1008, "too many bad frames (rate_limited)",
         "Paused by the inbox server, reconnecting in 5 s", 5.0),
    ],
)  # fmt: skip
async def test_the_page_waits_as_long_as_a_close_says(pipeline: Pipeline, code: int, reason: str,
                                                      shown: str, wait_s: float) -> None:  # fmt: skip
    """The page shows why it is offline and comes back no sooner than the close
    asks (the first connection is answered by a routed socket, every later one
    by the real router)."""
    await wait_ready(pipeline.router.port, 60)
    base = f"http://127.0.0.1:{pipeline.router.port}/"
    token = mint(SECRET, f"browser-wait-{code}", 3600, now=time.time())
    attempts: list[float] = []

    async def route(ws: Any) -> None:
        attempts.append(time.monotonic())
        if len(attempts) == 1:
            await ws.close(code=code, reason=reason)
        else:
            ws.connect_to_server()

    async with chromium() as browser:
        ctx = await browser.new_context(viewport=WIDTHS["desktop"])  # type: ignore[arg-type]
        page = await ctx.new_page()
        await page.route_web_socket("**/ws", route)
        await page.goto(base + "?token=" + token)
        await expect(page.locator("#conn-text")).to_have_text(shown, timeout=10000)
        await expect(page.locator("#signin")).to_be_hidden()
        await expect(page.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
        await ctx.close()
    assert len(attempts) == 2 and attempts[1] - attempts[0] >= wait_s, attempts


async def test_an_ack_refused_for_now_can_be_tried_again(pipeline: Pipeline) -> None:
    """An ``ack`` answered with an ``error`` naming its id (the teacher's tabs
    sent too much together: ``rate_limited``) gives the teacher the button back,
    saying so, on a page that stays live; the second try is acknowledged. The
    first ack is answered by the routed socket, everything else by the router."""
    await wait_ready(pipeline.router.port, 60)
    teacher = "browser-busy"
    item = await asyncio.to_thread(commit, pipeline, teacher, "batch_validation_failed", 1)
    base = f"http://127.0.0.1:{pipeline.router.port}/"
    token = mint(SECRET, teacher, 3600, now=time.time())
    refused: list[str] = []

    async def route(ws: Any) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") == "ack" and not refused:
                refused.append(frame["id"])
                ws.send(json.dumps({"type": "error", "code": "rate_limited", "id": frame["id"],
                                    "message": "this teacher's connections sent too many "
                                    "messages together; try again in a moment"}))  # fmt: skip
            else:
                server.send(message)

        ws.on_message(from_page)

    async with chromium() as browser:
        ctx = await browser.new_context(viewport=WIDTHS["desktop"])  # type: ignore[arg-type]
        page = await ctx.new_page()
        await page.route_web_socket("**/ws", route)
        await page.goto(base + "?token=" + token)
        await expect(page.locator("#conn")).to_have_class("conn conn-online", timeout=15000)
        button = page.locator(f'li[data-id="{item}"] button.ack')
        await button.click()
        await expect(button).to_have_text("Not acknowledged yet: try again", timeout=5000)
        await expect(button).to_be_enabled()
        await expect(page.locator("#conn")).to_have_class("conn conn-online")
        await button.click()
        acked = page.locator(f'li[data-id="{item}"] .state-acked')
        await expect(acked).to_have_text("✓ Acknowledged", timeout=5000)
        await ctx.close()
    assert refused == [item]
