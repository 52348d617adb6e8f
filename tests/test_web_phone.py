"""The web phone in a real headless Chromium (Debian's /usr/bin/chromium through Playwright):
dial *100# and read the balance, get a password by SMS, switch the phone off and see the next
SMS marked undelivered, while the gateway records the same fate."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ussdgw.app.stack import Stack
from ussdgw.smpp.ussd import DialogueState
from ussdgw.store import AuditEvent

CHROMIUM = Path(os.environ.get("USSDGW_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
PHONE = "79161234567"
TIMEOUT_MS = 10_000

pytestmark = pytest.mark.needs_tool(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package chromium)")

if CHROMIUM.exists():
    from playwright.async_api import Browser, Page, async_playwright, expect


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=LAUNCH_ARGS)
        yield launched
        await launched.close()


async def open_phone(browser: Browser, stack: Stack, msisdn: str, **context: object) -> Page:
    page = await (await browser.new_context(**context)).new_page()  # type: ignore[arg-type]
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{stack.endpoints['simulator']}/#{msisdn}")
    await expect(page.locator("body")).to_have_attribute("data-ready", msisdn)
    return page


async def test_a_tester_dials_the_balance_gets_a_password_and_sees_an_sms_to_a_switched_off_phone_undelivered(
        stack: Stack, browser: Browser) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put(PHONE, {"owner_id": "p-1", "region": "77", "corporate": 0,
                                             "balance_kop": 25050, "tariff": "basic"}, AuditEvent("seeded", "admin"))
    page = await open_phone(browser, stack, PHONE)
    await expect(page.get_by_test_id("status-number")).to_have_text(f"+{PHONE}")

    # *100# on the keypad, as a subscriber would: the popup shows the balance and closes the dialogue.
    for key in "*100#":
        await page.locator(f'#keypad button[data-key="{key}"]').click()
    await expect(page.get_by_test_id("dial-input")).to_have_value("*100#")
    await page.get_by_test_id("dial-call").click()
    popup = page.get_by_test_id("ussd-popup")
    await expect(popup).to_have_attribute("data-state", "closed")
    await expect(page.get_by_test_id("ussd-text")).to_contain_text("250,50")
    await expect(page.get_by_test_id("ussd-answer")).to_be_hidden()  # PSSR response: nothing to answer
    await page.get_by_test_id("ussd-cancel").click()
    await expect(popup).to_be_hidden()

    # ПАРОЛЬ to 3339: the outgoing SMS is accepted and the reply lands in the inbox, delivered.
    await page.get_by_test_id("tab-sms").click()
    await page.get_by_test_id("sms-to").fill("3339")
    await page.get_by_test_id("sms-text").fill("ПАРОЛЬ")
    await page.get_by_test_id("sms-send").click()
    await expect(page.locator('[data-testid="sms-out"][data-state="accepted"]')).to_have_count(1)
    delivered = page.locator('[data-testid="sms-in"][data-sender="3339"][data-state="DELIVERED"]')
    await expect(delivered).to_have_count(1)
    await expect(delivered).to_contain_text(re.compile(r"Личный кабинет: [a-z0-9]{8,10}"))
    await expect(delivered.get_by_test_id("mt-state")).to_have_text("✓ доставлено")

    # Switched off: the next reply is held by the network, then expires; both show in the inbox.
    await page.get_by_test_id("power-off").check()
    await expect(page.get_by_test_id("status-network")).to_have_text("выключен")
    await page.get_by_test_id("sms-text").fill("пароль")
    await page.get_by_test_id("sms-send").click()
    held = page.locator('[data-testid="sms-in"][data-sender="3339"][data-state="ENROUTE"]')
    await expect(held.get_by_test_id("mt-state")).to_contain_text("ожидает")
    await page.get_by_test_id("advance-10m").click()  # past the SMSC's validity period (600 s)
    lost = page.locator('[data-testid="sms-in"][data-sender="3339"][data-state="EXPIRED"]')
    await expect(lost.get_by_test_id("mt-state")).to_contain_text("не доставлено")
    await expect(page.get_by_test_id("network-log").locator('tr[data-state="EXPIRED"]')).to_have_count(1)

    # The gateway recorded the same fate from the delivery receipt (SPEC D1, P10).
    trail = await stack.store.audit_trail(PHONE)
    receipts = [e["detail"] for e in trail if e["event"] == "mt_receipt"]
    assert any("state=EXPIRED" in d for d in receipts), receipts
    await page.context.close()


async def test_the_phone_fits_a_phone_screen_and_the_faults_panel_reaches_the_simulator(
        stack: Stack, browser: Browser) -> None:
    assert stack.smsc is not None
    page = await open_phone(browser, stack, "79260000001", viewport={"width": 390, "height": 844},
                            is_mobile=True, has_touch=True)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
    await page.get_by_test_id("fault-inbox-full").check()
    await page.get_by_test_id("block-input").fill("7888")
    await page.get_by_test_id("block-add").click()
    await expect(page.get_by_test_id("blocked-chip")).to_have_text(re.compile("7888"))
    phone = stack.smsc.phones.get("79260000001")
    assert phone.inbox_full and phone.blocked_senders == {"7888"}
    await page.context.close()


async def test_an_unanswered_ussd_menu_can_be_answered_and_cancelled_from_the_popup(
        stack: Stack, browser: Browser) -> None:
    assert stack.smsc is not None
    page = await open_phone(browser, stack, PHONE)
    await page.get_by_test_id("dial-input").fill("*111#")
    await page.get_by_test_id("dial-call").click()
    popup = page.get_by_test_id("ussd-popup")
    await expect(popup).to_have_attribute("data-state", "waiting")
    await expect(page.get_by_test_id("ussd-answer")).to_be_visible()
    await page.get_by_test_id("ussd-cancel").click()
    await expect(popup).to_be_hidden()
    dialogue = stack.smsc.phones.get(PHONE).ussd
    assert dialogue.state is DialogueState.IDLE and dialogue.history[-1]["op"] == "abort"
