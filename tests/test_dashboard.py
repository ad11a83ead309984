"""The dashboard in headless Chromium: server-rendered, live without reloads, failover visible.

Uses Debian's ``chromium`` (or ``$CHROMIUM``), not Playwright's own browser download. A missing
browser fails these tests rather than skipping them: CI installs it, and a skipped browser test
would hide a broken dashboard.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import (
    Browser,
    Locator,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from bench.configs import render
from conftest import NUMBER, TEST_CONFIG, Harness, MakeGateway
from gateway.emulators import EMULATOR_CREDENTIALS, MODES
from gateway.reload import reload_now

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LIVE_TIMEOUT_MS = 10_000  # a few 3 s refresh periods
WIDE: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 375, "height": 800}


def chromium_path() -> str:
    """Debian's chromium; fail (never skip) with the fix when it is missing."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    if not path or not os.access(path, os.X_OK):
        pytest.fail("the dashboard tests need Chromium: `apt-get install chromium`, or set "
                    "CHROMIUM=/path/to/chromium (Playwright's own download is not used)",
                    pytrace=False)
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            await launched.close()


async def open_dashboard(browser: Browser, gw: Harness, *, javascript: bool = True,
                         viewport: ViewportSize = WIDE) -> Page:
    context = await browser.new_context(viewport=viewport, java_script_enabled=javascript)
    page = await context.new_page()
    response = await page.goto(str(gw.client.make_url("/")))
    assert response is not None and response.status == 200
    return page


def breaker(page: Page, provider: str) -> Locator:
    return page.get_by_test_id(f"state-{provider}")


async def test_failover_shows_up_live_without_a_reload(
    make_gateway: MakeGateway, browser: Browser, tmp_path: Path,
) -> None:
    gw = await make_gateway()
    page = await open_dashboard(browser, gw)
    await expect(breaker(page, "aliyun")).to_have_text("closed")
    await expect(breaker(page, "huawei")).to_have_text("closed")
    await expect(page.get_by_test_id("how-to-send")).to_contain_text("curl -X POST")
    await page.screenshot(path=tmp_path / "dashboard-closed.png", full_page=True)
    await page.evaluate("window.sameDocument = true")  # gone if the page reloads

    # Break aliyun from the dashboard's own control, as a new user would.
    control = page.locator('select.emu-mode[data-kind="aliyun"]')
    async with page.expect_response(lambda r: r.url.endswith("/_emulator/aliyun")) as changed:
        await control.select_option("fail")
    assert (await changed.value).status == 200
    assert gw.emulators["aliyun"].state.mode == "fail"

    for _ in range(3):  # the test config trips after 3 consecutive failures
        response = await gw.send()
        assert response.status == 200
        assert (await response.json())["provider"] == "huawei"

    await expect(breaker(page, "aliyun")).to_have_text("open", timeout=LIVE_TIMEOUT_MS)
    await expect(breaker(page, "huawei")).to_have_text("closed")
    aliyun = page.locator('tr[data-provider="aliyun"]')
    await expect(aliyun).to_contain_text("3 consecutive failures")
    await expect(aliyun).to_contain_text("until")
    recent = page.get_by_test_id("recent").locator("tbody tr")
    await expect(recent).to_have_count(3)
    await expect(recent.first.get_by_test_id("via")).to_have_text("huawei")
    await expect(recent.first).to_contain_text("aliyun unknown")
    await expect(page.locator('select.emu-mode[data-kind="aliyun"]')).to_have_value("fail")
    await expect(page).to_have_title("aliyun not closed · sms-gateway")
    assert await page.evaluate("window.sameDocument") is True
    await page.screenshot(path=tmp_path / "dashboard-open.png", full_page=True)


async def test_server_rendered_page_works_without_javascript(
    make_gateway: MakeGateway, browser: Browser,
) -> None:
    gw = await make_gateway()
    page = await open_dashboard(browser, gw, javascript=False)
    rows = page.locator("tr[data-provider]")
    await expect(rows).to_have_count(2)
    assert [await r.get_attribute("data-provider") for r in await rows.all()] == [
        "aliyun", "huawei"]
    await expect(page.get_by_test_id("emulated-banner")).to_contain_text(
        "emulated: nothing is delivered")
    callbacks = page.get_by_test_id("callbacks")  # next to the Outbox tile
    await expect(callbacks).to_contain_text("0 queued")
    await expect(callbacks).to_contain_text("0 in flight")
    await expect(callbacks).to_contain_text("off: no server.callback_hosts")
    next_to_outbox = page.locator('[data-testid="outbox"] + [data-testid="callbacks"]')
    await expect(next_to_outbox).to_have_count(1)
    await expect(breaker(page, "aliyun")).to_have_text("closed")
    await expect(breaker(page, "huawei")).to_have_text("closed")
    # The emulator menu needs JavaScript: hidden and inert without it, the mode shown as text.
    await expect(page.locator("select.emu-mode").first).to_be_hidden()
    await expect(page.locator("select.emu-mode").first).to_be_disabled()
    await expect(page.locator(".emu-static").first).to_have_text("ok")

    await gw.mode("aliyun", "down")
    for _ in range(3):
        await gw.send()
    await page.reload()
    await expect(breaker(page, "aliyun")).to_have_text("open")
    await expect(page.get_by_test_id("recent").get_by_test_id("via").first).to_have_text("huawei")


async def test_reload_error_is_prominent_until_fixed_and_escaped(
    make_gateway: MakeGateway, browser: Browser,
) -> None:
    gw = await make_gateway()
    page = await open_dashboard(browser, gw, javascript=False)
    await expect(page.get_by_test_id("reload-error")).to_have_count(0)
    gw.config_path.write_text(TEST_CONFIG + '"<img src=x onerror=alert(1)>": true\n')
    assert not await reload_now(gw.gateway)
    await page.reload()
    alert = page.get_by_test_id("reload-error")
    await expect(alert).to_be_visible()
    await expect(alert).to_contain_text("still serving generation 1")
    await expect(alert).to_contain_text("<img src=x onerror=alert(1)>: unknown key")
    await expect(alert.locator("img")).to_have_count(0)
    gw.config_path.write_text(TEST_CONFIG)
    assert await reload_now(gw.gateway)
    await page.reload()
    await expect(alert).to_have_count(0)
    await expect(page.get_by_test_id("config")).to_contain_text("generation 2")


async def test_no_full_number_or_credential_reaches_the_page(
    make_gateway: MakeGateway, browser: Browser,
) -> None:
    gw = await make_gateway()
    others = ["13900139000", "+8613700137000"]
    assert (await gw.send(to=[NUMBER, *others])).status == 200
    await gw.mode("aliyun", "reject")  # the provider's error is about the number
    assert (await gw.send(to=NUMBER)).status == 422
    await gw.mode("aliyun", "fail")
    assert (await gw.send(to=f"{NUMBER},{others[0]}")).status == 200
    page = await open_dashboard(browser, gw)
    await expect(page.get_by_test_id("recent").locator("tbody tr")).to_have_count(3)
    html = await page.content()  # the DOM, attributes (titles) included
    partial = await (await gw.client.get("/?partial=1")).text()  # what the script swaps in
    assert "+86138******00" in html
    secrets = [v for creds in EMULATOR_CREDENTIALS.values() for v in creds.values()]
    for text in (html, partial):
        for forbidden in [NUMBER, "13800138000", *others, "13700137000", *secrets]:
            assert forbidden not in text


async def test_unreachable_gateway_greys_out_every_tile_and_says_since_when(
    make_gateway: MakeGateway, browser: Browser, tmp_path: Path,
) -> None:
    gw = await make_gateway()
    page = await open_dashboard(browser, gw)
    tiles = page.locator("#live .tile")
    assert await tiles.count() >= 4
    await expect(page).to_have_title("sms-gateway")
    await page.route("**/?partial=1", lambda route: route.abort())  # the gateway went away
    await expect(page).to_have_title(re.compile(r"^stale since \d\d:\d\d:\d\d · sms-gateway$"),
                                      timeout=LIVE_TIMEOUT_MS)
    await expect(page.get_by_test_id("updated")).to_contain_text("stale since")
    for tile in await tiles.all():
        await expect(tile).to_have_css("filter", "grayscale(1)")
    await page.screenshot(path=tmp_path / "dashboard-stale.png", full_page=True)
    await page.unroute("**/?partial=1")
    await expect(page).to_have_title("sms-gateway", timeout=LIVE_TIMEOUT_MS)
    for tile in await tiles.all():
        await expect(tile).to_have_css("filter", "none")


async def test_emulator_menu_offers_every_mode(
    make_gateway: MakeGateway, browser: Browser,
) -> None:
    gw = await make_gateway()
    page = await open_dashboard(browser, gw)
    menu = page.locator('select.emu-mode[data-kind="huawei"]')
    await expect(menu).to_be_enabled()
    values = [await o.get_attribute("value") for o in await menu.locator("option").all()]
    assert values == list(MODES)
    async with page.expect_response(lambda r: r.url.endswith("/_emulator/huawei")) as changed:
        await menu.select_option("drip")  # one of the modes the menu used to lack
    assert (await changed.value).status == 200
    assert gw.emulators["huawei"].state.mode == "drip"
    row = page.locator('tr[data-provider="huawei"]')
    await expect(row.locator(".emu-what")).to_have_text("answers one byte at a time",
                                                        timeout=LIVE_TIMEOUT_MS)


async def test_forced_open_provider_shows_until_closed(
    make_gateway: MakeGateway, browser: Browser,
) -> None:
    gw = await make_gateway()
    assert (await gw.client.post("/admin/providers/aliyun/open", json={})).status == 200
    await gw.mode("huawei", "down")
    for _ in range(3):
        await gw.send()  # huawei trips on its own: a timed open, with a countdown
    page = await open_dashboard(browser, gw, javascript=False)
    await expect(breaker(page, "aliyun")).to_have_text("open")
    await expect(page.get_by_test_id("until-aliyun")).to_contain_text("until closed")
    await expect(page.get_by_test_id("until-aliyun")).not_to_contain_text(
        re.compile(r"\bin \d|\bago\b|\d\d:\d\d"))  # no time, no countdown
    await expect(breaker(page, "huawei")).to_have_text("open")
    await expect(page.get_by_test_id("until-huawei")).to_contain_text(
        re.compile(r"until \d\d:\d\d:\d\d \(in \d"))


async def test_long_attempt_chips_wrap_on_a_phone(
    make_gateway: MakeGateway, browser: Browser, tmp_path: Path,
) -> None:
    long_name = "aliyun-primary-account-shenzhen-verification"
    gw = await make_gateway(TEST_CONFIG.replace("name: aliyun", f"name: {long_name}"))
    await gw.mode("aliyun", "reset")  # the longest error an emulator produces
    assert (await gw.send()).status == 200  # failed over to huawei
    page = await open_dashboard(browser, gw, viewport=PHONE)
    chip = page.locator(".att").filter(has_text=long_name)
    await expect(chip).to_contain_text("connection lost")
    await page.screenshot(path=tmp_path / "dashboard-phone.png", full_page=True)
    name = page.locator(f'tr[data-provider="{long_name}"] .c-name strong')
    for element in (chip, name):
        box = await element.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"]


async def test_recent_sends_filter_by_status_and_link_to_their_record(
    make_gateway: MakeGateway, browser: Browser,
) -> None:
    gw = await make_gateway()
    sent = await (await gw.send()).json()
    await gw.mode("aliyun", "reject")  # the caller's fault: 422, status rejected
    refused = await gw.send()
    assert refused.status == 422
    rejected = (await refused.json())["id"]
    await gw.mode("aliyun", "ok")

    # Without JavaScript: a plain GET form, rendered by the server.
    page = await open_dashboard(browser, gw, javascript=False)
    rows = page.get_by_test_id("recent").locator("tbody tr")
    await expect(rows).to_have_count(2)
    await page.get_by_test_id("status-select").select_option("rejected")
    await page.get_by_test_id("status-filter").get_by_role("button").click()
    await page.wait_for_url(re.compile(r"\?status=rejected$"))
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_have_attribute("data-status", "rejected")
    await expect(page.get_by_test_id("status-select")).to_have_value("rejected")
    await rows.first.locator("td.c-id a").click()  # the row's link: the record page
    await page.wait_for_url(re.compile(rf"/sms/{rejected}$"))
    record = page.get_by_test_id("record")
    await expect(record).to_contain_text("rejected")
    await expect(record).to_contain_text("+86138******00")
    assert NUMBER not in await page.content()  # masked: no read_numbers right

    # With JavaScript: choosing applies at once, and the live refresh keeps the filter.
    page = await open_dashboard(browser, gw)
    rows = page.get_by_test_id("recent").locator("tbody tr")
    await page.get_by_test_id("status-select").select_option("sent")
    await page.wait_for_url(re.compile(r"\?status=sent$"))
    await expect(rows).to_have_count(1)
    await expect(rows.first.locator("td.c-id a")).to_have_attribute("href", f"/sms/{sent['id']}")
    await gw.mode("aliyun", "reject")
    await gw.send()  # a new rejected send must not appear under "sent" after a refresh
    await gw.send(to="+8613900139000", params={"code": "1"})
    await gw.mode("aliyun", "ok")
    await gw.send()
    await expect(rows).to_have_count(2, timeout=LIVE_TIMEOUT_MS)
    for row in await rows.all():
        await expect(row).to_have_attribute("data-status", "sent")

    # A status nobody knows: a clear 400 naming the filter, not a 500.
    response = await gw.client.get("/?status=bogus")
    assert response.status == 400 and (await response.json())["field"] == "status"
    nothing = await page.goto(str(gw.client.make_url("/?status=expired")))
    assert nothing is not None and nothing.status == 200
    await expect(page.get_by_test_id("none-with-status")).to_contain_text("expired")


async def test_delivery_ratio_and_charts_show_with_and_without_javascript(
    make_gateway: MakeGateway, browser: Browser, tmp_path: Path,
) -> None:
    token = "dashboard-receipt-token-0123"
    gw = await make_gateway(TEST_CONFIG + render({"receipts": {"token": token}}))
    aliyun = gw.emulators["aliyun"].state
    aliyun.receipt_url = str(gw.client.make_url(f"/receipts/aliyun/{token}"))
    aliyun.set_receipts("deliver", 0.05)
    for _ in range(2):
        assert (await gw.send()).status == 200
    page = await open_dashboard(browser, gw, javascript=False)
    for _ in range(100):  # the receipts arrive 50 ms after each send
        if aliyun.counters["receipts"] == 2:
            break
        await page.wait_for_timeout(50)
    await page.reload()
    await expect(page.get_by_test_id("ratio-aliyun")).to_have_text("100.0%")
    await expect(page.get_by_test_id("ratio-huawei")).to_have_text("no receipts")
    for index in range(1, 5):  # sends, failures, delivery ratio, p95 latency
        await expect(page.get_by_test_id(f"chart-aliyun-{index}").locator("svg")).to_have_count(1)
    await expect(page.get_by_test_id("chart-aliyun-1").locator("svg polyline, svg circle")
                 ).not_to_have_count(0)
    assert token not in await page.content()

    live = await open_dashboard(browser, gw)  # with JavaScript: the ratio follows live
    aliyun.set_receipts("undeliver")
    assert (await gw.send()).status == 200
    await expect(live.get_by_test_id("ratio-aliyun")).to_have_text("66.7%",
                                                                  timeout=LIVE_TIMEOUT_MS)
    await expect(live.get_by_test_id("chart-aliyun-3").locator("svg")).to_have_count(1)
    await live.screenshot(path=tmp_path / "dashboard-delivery.png", full_page=True)


async def test_summary_tiles_fill_even_rows(make_gateway: MakeGateway, browser: Browser) -> None:
    """Six tiles: one row on a laptop, rows of three on a tablet, two on a small one (never a
    lone tile on a row of its own, as the Process tile was once Callbacks joined), one on a
    narrow phone."""
    gw = await make_gateway()
    sizes: list[tuple[ViewportSize, int]] = [
        (WIDE, 6), ({"width": 1000, "height": 900}, 3), ({"width": 600, "height": 900}, 2),
        (PHONE, 1)]
    for viewport, per_row in sizes:
        page = await open_dashboard(browser, gw, javascript=False, viewport=viewport)
        tiles = page.locator(".tiles > .tile")
        await expect(tiles).to_have_count(6)
        tops = [box["y"] for box in [await t.bounding_box() for t in await tiles.all()] if box]
        rows = [tops.count(top) for top in sorted(set(tops))]
        assert rows == [per_row] * (6 // per_row), (viewport, rows)
        await page.context.close()
