"""Regenerate the screenshots in docs/ with Debian's headless Chromium:

    .venv/bin/python docs/make_screenshots.py

Starts the whole platform on free ports (private Redis). The web phone: one phone through a USSD
menu, a password by SMS, an SMS held for a switched-off phone and one dropped by anti-spam, the
subscriber panel and an expanded PDU; two phones side by side texting each other. The
cabinet («Личный кабинет», demo/subscribers.yaml): a password by SMS from its sign-in page, a
top-up, a tariff switch, a linked number and a gift. Saves what a laptop and a phone screen show.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

from playwright.async_api import Browser, FrameLocator, Page, async_playwright, expect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ussdgw import logs
from ussdgw.app.seed import load_seed_file, seed_subscribers
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import AuditEvent

DOCS = Path(__file__).resolve().parent
PHONE = "79161234567"
OTHER = "79161234568"  # the same owner's second number (demo/subscribers.yaml)
SHOTS = ("web-phone-sms.png", "web-phone-ussd.png", "web-phone-mobile.png", "web-phone-two.png",
         "cabinet-signin.png", "cabinet-laptop.png", "cabinet-phone.png")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--lang=ru-RU"]


async def sms(page: Page | FrameLocator, to: str, text: str) -> None:
    await page.get_by_test_id("sms-to").fill(to)
    await page.get_by_test_id("sms-text").fill(text)
    await page.get_by_test_id("sms-send").click()


async def main() -> None:
    logs.configure("warning")
    with tempfile.TemporaryDirectory() as state:
        settings = Settings(state_dir=state, secret_key=secrets.token_hex(32), sim_port=0, sim_http_port=0,
                            api_port=0, secret_cooldown_s=0, secret_per_hour=100,
                            api_trusted_networks="127.0.0.1/32")  # the subscriber panel signs in as the network
        stack = await Stack(settings).start()
        try:
            assert stack.gateway is not None and stack.store is not None
            await stack.gateway.wait_bound(10)
            await stack.store.subscribers.put(PHONE, {"owner_id": "p-1001", "region": "77", "corporate": 0,
                                                     "balance_kop": 25050, "tariff": "smart"},
                                              AuditEvent("seeded", "admin"))
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                await web_phone(browser, stack)
                await cabinet(browser, stack)
                await browser.close()
        finally:
            await stack.stop()
    for name in SHOTS:
        print(DOCS / name)


async def web_phone(browser: Browser, stack: Stack) -> None:
    url = f"{stack.endpoints['simulator']}/#{PHONE}"
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
    await page.locator('[data-advance="60"]').click()
    await page.get_by_test_id("power-on").check()  # the held one lands, with its history
    await expect(page.locator('[data-testid="sms-in"][data-state="ENROUTE"]')).to_have_count(0)
    await page.get_by_test_id("power-off").check()
    await sms(page, "3339", "пароль")
    await expect(page.locator('[data-testid="sms-in"][data-state="ENROUTE"]')).to_have_count(1)
    await expect(page.get_by_test_id("subscriber-balance")).not_to_be_empty()
    await page.get_by_test_id("pdu").first.locator("summary").click()
    await page.set_viewport_size({"width": 1440, "height": 1600})  # the panels down to the expanded PDU
    await page.screenshot(path=DOCS / "web-phone-sms.png")
    await page.set_viewport_size({"width": 1440, "height": 900})

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
    await mobile.get_by_test_id("ussd-cancel").click()  # "OK": the popup closes on every view of the phone

    two = await browser.new_page(viewport={"width": 1000, "height": 820}, device_scale_factor=1)
    two.set_default_timeout(10_000)
    await two.goto(f"{stack.endpoints['simulator']}/?phones={PHONE},{OTHER}")
    first, second = (two.frame_locator(f'iframe[data-msisdn="{n}"]') for n in (PHONE, OTHER))
    await expect(second.locator("body")).to_have_attribute("data-ready", OTHER)
    await first.get_by_test_id("tab-sms").click()
    await sms(first, f"+{OTHER}", "Привет! Это SMS с одного телефона на другой, мимо платформы.")
    await second.get_by_test_id("tab-sms").click()
    await expect(second.locator(f'[data-testid="sms-in"][data-sender="{PHONE}"]')).to_have_count(1)
    await two.screenshot(path=DOCS / "web-phone-two.png")


async def sms_password(stack: Stack, msisdn: str, ask: Callable[[], Awaitable[object]]) -> str:
    """`ask` for a password, then read it from the phone's inbox (the SMS from 3339)."""
    assert stack.smsc is not None
    phones = stack.smsc.phones
    after = phones.last_seq
    await ask()
    while fresh := await phones.wait_inbox(msisdn, after, 10):
        for message in fresh:
            after = max(after, message.seq)
            found = re.search(r"Личный кабинет: (\S+)", message.text)
            if message.sender == "3339" and found:
                return found.group(1)
    raise TimeoutError(f"no password for {msisdn}")


async def sign_in(page: Page, stack: Stack, msisdn: str) -> None:
    by_sms = page.get_by_role("region", name="Получить пароль по SMS")
    await by_sms.get_by_label("Номер телефона").fill(msisdn)
    password = await sms_password(stack, msisdn, by_sms.get_by_role("button", name="Получить пароль").click)
    await expect(page.get_by_test_id("sms-password-result")).not_to_be_empty()
    form = page.get_by_role("region", name="Вход", exact=True)
    await form.get_by_label("Пароль").fill(password)
    await form.get_by_role("button", name="Войти").click()
    await expect(page.locator("body")).to_have_attribute("data-view", "cabinet")


async def go(page: Page, section: str) -> None:
    await page.get_by_role("navigation", name="Разделы кабинета").get_by_role("link", name=section).click()
    await expect(page.get_by_role("heading", level=1, name=section)).to_be_visible()


async def cabinet(browser: Browser, stack: Stack) -> None:
    assert stack.store is not None and stack.smsc is not None
    await seed_subscribers(stack.store, load_seed_file(DOCS.parent / "demo" / "subscribers.yaml"))
    url = stack.endpoints["cabinet"]
    page = await browser.new_page(viewport={"width": 1280, "height": 800}, device_scale_factor=1, locale="ru-RU")
    page.set_default_timeout(10_000)
    await page.goto(url)
    await expect(page.locator("body")).to_have_attribute("data-view", "signin")
    by_sms = page.get_by_role("region", name="Получить пароль по SMS")
    await by_sms.get_by_label("Номер телефона").fill(PHONE)
    password = await sms_password(stack, PHONE, by_sms.get_by_role("button", name="Получить пароль").click)
    await expect(page.get_by_test_id("sms-password-result")).not_to_be_empty()
    await page.screenshot(path=DOCS / "cabinet-signin.png")

    form = page.get_by_role("region", name="Вход", exact=True)
    await form.get_by_label("Пароль").fill(password)
    await form.get_by_role("button", name="Войти").click()
    await page.get_by_label("Сумма, ₽").fill("500")
    await page.get_by_role("button", name="Пополнить", exact=True).click()
    await expect(page.get_by_test_id("topup-result")).not_to_be_empty()
    await go(page, "Мои номера")
    smsc = stack.smsc

    async def sms_from_the_other_phone() -> None:  # its owner texts ПАРОЛЬ to 3339
        smsc.submit_mo(OTHER, "3339", "ПАРОЛЬ")

    other = await sms_password(stack, OTHER, sms_from_the_other_phone)
    linked = page.get_by_role("region", name="Привязанные номера")
    await linked.get_by_label("Номер", exact=True).fill(OTHER)
    await linked.get_by_label("Пароль этого номера").fill(other)
    await linked.get_by_role("button", name="Добавить номер").click()
    await expect(page.get_by_test_id("link-result")).not_to_be_empty()
    await go(page, "Бонусы")
    gift = page.get_by_role("region", name="Подарить баллы")
    await gift.get_by_label("Номер получателя").fill(OTHER)
    await gift.get_by_label("Сколько баллов").fill("21")
    await gift.get_by_role("button", name="Подарить").click()
    await expect(page.get_by_test_id("gift-list")).not_to_be_empty()
    await go(page, "Тарифы")
    card = page.get_by_role("listitem").filter(has=page.get_by_role("heading", name="Тарифище"))
    await card.get_by_role("button", name="Перейти на этот тариф").click()
    await expect(card.get_by_text("Ваш тариф")).to_be_visible()
    await page.mouse.move(0, 0)
    await page.screenshot(path=DOCS / "cabinet-laptop.png")

    phone = await browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True,
                                   has_touch=True, locale="ru-RU")
    phone.set_default_timeout(10_000)
    await phone.goto(url)
    await expect(phone.locator("body")).to_have_attribute("data-view", "signin")
    await sign_in(phone, stack, PHONE)
    await expect(phone.get_by_test_id("tariff-name")).to_have_text("Тарифище")
    await expect(phone.get_by_test_id("acting").locator("option")).to_have_count(2)  # with the linked number
    await phone.screenshot(path=DOCS / "cabinet-phone.png")


if __name__ == "__main__":
    asyncio.run(main())
