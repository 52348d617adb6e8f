"""Regenerate the web phone screenshots in docs/ with Debian's headless Chromium:

    .venv/bin/python docs/make_screenshots.py

Starts the whole platform on free ports (private Redis), drives one phone through a USSD menu,
a password by SMS, an SMS held for a switched-off phone and one dropped by anti-spam, and
saves what a laptop and a phone screen show.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
import tempfile
from pathlib import Path

from playwright.async_api import Page, async_playwright, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ussdgw import logs
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import AuditEvent

DOCS = Path(__file__).resolve().parent
PHONE = "79161234567"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


async def sms(page: Page, to: str, text: str) -> None:
    await page.get_by_test_id("sms-to").fill(to)
    await page.get_by_test_id("sms-text").fill(text)
    await page.get_by_test_id("sms-send").click()


async def main() -> None:
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(state_dir=state, secret_key=secrets.token_hex(32), sim_port=0, sim_http_port=0,
                            api_port=0, secret_cooldown_s=0)
        stack = await Stack(settings).start()
        try:
            assert stack.gateway is not None and stack.store is not None
            await stack.gateway.wait_bound(10)
            await stack.store.subscribers.put(PHONE, {"owner_id": "p-1001", "region": "77", "corporate": 0,
                                                     "balance_kop": 25050, "tariff": "smart"},
                                              AuditEvent("seeded", "admin"))
            url = f"{stack.endpoints['simulator']}/#{PHONE}"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = await browser.new_page(viewport={"width": 1440, "height": 900}, device_scale_factor=1)
                page.set_default_timeout(10_000)
                await page.goto(url)
                await expect(page.locator("body")).to_have_attribute("data-ready", PHONE)

                await page.get_by_test_id("tab-sms").click()
                await sms(page, "3339", "ПАРОЛЬ")
                await expect(page.locator('[data-testid="sms-in"][data-state="DELIVERED"]')).to_have_count(1)
                await page.get_by_test_id("block-input").fill("7888")
                await page.get_by_test_id("block-add").click()
                await sms(page, "7888", "логин")
                await expect(page.locator('[data-testid="sms-in"][data-state="UNDELIVERABLE"]')).to_have_count(1)
                await page.get_by_test_id("blocked-chip").click()
                await page.get_by_test_id("power-off").check()
                await sms(page, "3339", "пароль")
                await expect(page.locator('[data-testid="sms-in"][data-state="ENROUTE"]')).to_have_count(1)
                await page.screenshot(path=DOCS / "web-phone-sms.png")

                await page.get_by_test_id("power-on").check()
                await page.get_by_test_id("tab-dial").click()
                await page.get_by_test_id("dial-input").fill("*111#")
                await page.get_by_test_id("dial-call").click()
                await expect(page.get_by_test_id("ussd-popup")).to_have_attribute("data-state", "waiting")
                await page.get_by_test_id("ussd-answer").fill("1")
                await page.screenshot(path=DOCS / "web-phone-ussd.png")
                await page.get_by_test_id("ussd-cancel").click()

                mobile = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                                is_mobile=True, has_touch=True)
                await mobile.goto(url)
                await expect(mobile.locator("body")).to_have_attribute("data-ready", PHONE)
                await mobile.get_by_test_id("dial-input").fill("*100#")
                await mobile.get_by_test_id("dial-call").click()
                await expect(mobile.get_by_test_id("ussd-popup")).to_have_attribute("data-state", "closed")
                await mobile.screenshot(path=DOCS / "web-phone-mobile.png")
                await browser.close()
        finally:
            await stack.stop()
    for name in ("web-phone-sms.png", "web-phone-ussd.png", "web-phone-mobile.png"):
        print(DOCS / name)


if __name__ == "__main__":
    asyncio.run(main())
