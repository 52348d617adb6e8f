"""The cabinet («Личный кабинет») in a real headless Chromium against the whole stack: a subscriber
gets her password by SMS from the sign-in page, signs in, tops up, switches tariff, links a second
number, gifts it points and accepts them acting as that number, finds it all in the audit trail and
logs out — on a laptop and on a phone. Refusals show the API's own Russian text; a session the API
has ended, or that ran out of idle time on the page's countdown (P5), returns to sign-in."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest

from handlers.account import WRONG_TEXT
from tests.support.browser import CHROMIUM, TIMEOUT_MS
from tests.support.selfcare_helpers import (
    IVAN,
    IVAN2,
    extract_code,
    extract_password,
    seed,
    seed_with_passwords,
    sms_password,
    wait_sms,
)
from ussdgw.app.stack import Stack
from ussdgw.config import Settings

pytestmark = pytest.mark.needs_tool(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package chromium)")

if CHROMIUM.exists():
    from playwright.async_api import Browser, Page, expect

SCREENS: dict[str, dict[str, Any]] = {
    "laptop": {"viewport": {"width": 1280, "height": 800}},
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True},
}


async def open_cabinet(browser: Browser, stack: Stack, *, fake_clock: bool = False, **context: Any) -> Page:
    page = await (await browser.new_context(locale="ru-RU", **context)).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.problems = problems  # type: ignore[attr-defined]
    if fake_clock:
        await page.clock.install()
    await page.goto(stack.endpoints["cabinet"])
    await expect(page.locator("body")).to_have_attribute("data-view", "signin")
    return page


async def sign_in(page: Page, msisdn: str, password: str) -> None:
    form = page.get_by_role("region", name="Вход", exact=True)
    await form.get_by_label("Номер телефона").fill(msisdn)
    await form.get_by_label("Пароль").fill(password)
    await form.get_by_role("button", name="Войти").click()
    await expect(page.locator("body")).to_have_attribute("data-view", "cabinet")


async def go(page: Page, section: str) -> None:
    await page.get_by_role("navigation", name="Разделы кабинета").get_by_role("link", name=section).click()
    await expect(page.get_by_role("heading", level=1, name=section)).to_be_visible()


@pytest.mark.parametrize("screen", SCREENS)
async def test_a_subscriber_walks_the_cabinet_from_the_sms_password_to_log_out(
        stack: Stack, browser: Browser, screen: str) -> None:
    assert stack.smsc is not None and stack.store is not None
    await seed(stack)
    page = await open_cabinet(browser, stack, **SCREENS[screen])

    # «Получить пароль по SMS»: the password comes from 3339 to the phone's inbox.
    after = stack.smsc.phones.last_seq
    by_sms = page.get_by_role("region", name="Получить пароль по SMS")
    await by_sms.get_by_label("Номер телефона").fill(IVAN)
    await by_sms.get_by_role("button", name="Получить пароль").click()
    await expect(page.get_by_test_id("sms-password-result")).to_have_text(
        f"Пароль отправлен по SMS с номера 3339 на {IVAN}.")
    password = extract_password(await wait_sms(stack, IVAN, "3339", after))
    await expect(page.get_by_role("region", name="Вход", exact=True).get_by_label("Номер телефона")).to_have_value(IVAN)
    await sign_in(page, IVAN, password)
    await expect(page.get_by_test_id("balance")).to_have_text("250 ₽")
    await expect(page.get_by_test_id("idle-timer")).to_contain_text(re.compile(r"\b(20:00|19:[0-5]\d)\b"))

    # Top-up: 500 ₽ and 50 bonus points.
    await page.get_by_label("Сумма, ₽").fill("500")
    await page.get_by_role("button", name="Пополнить", exact=True).click()
    await expect(page.get_by_test_id("topup-result")).to_have_text("Счёт пополнен на 500 ₽. Баланс: 750 ₽.")
    await expect(page.get_by_test_id("balance")).to_have_text("750 ₽")
    await expect(page.get_by_test_id("bonus-points")).to_have_text("50")

    # «Перейти на этот тариф».
    await go(page, "Тарифы")
    card = page.get_by_role("listitem").filter(has=page.get_by_role("heading", name="Тарифище"))
    await card.get_by_role("button", name="Перейти на этот тариф").click()
    await expect(page.get_by_test_id("tariffs-result")).to_have_text(
        "Тариф изменён на «Тарифище». Списано 100 ₽. Баланс: 650 ₽.")
    await expect(card.get_by_text("Ваш тариф")).to_be_visible()

    # «Мои номера»: the second number, with its own password (its owner got it by SMS).
    await go(page, "Мои номера")
    other_password = await sms_password(stack, IVAN2)
    linked = page.get_by_role("region", name="Привязанные номера")
    await linked.get_by_label("Номер", exact=True).fill(IVAN2)
    await linked.get_by_label("Пароль этого номера").fill(other_password)
    await linked.get_by_role("button", name="Добавить номер").click()
    await expect(page.get_by_test_id("link-result")).to_have_text(f"Номер {IVAN2} добавлен в «Мои номера».")
    await expect(page.get_by_test_id("linked-list")).to_contain_text("+7 916 123-45-68")

    # A gift of 21 points: held, and a code by SMS to the other number.
    await go(page, "Бонусы")
    after = stack.smsc.phones.last_seq
    gift = page.get_by_role("region", name="Подарить баллы")
    await gift.get_by_label("Номер получателя").fill(IVAN2)
    await gift.get_by_label("Сколько баллов").fill("21")
    await gift.get_by_role("button", name="Подарить").click()
    await expect(page.get_by_test_id("gift-result")).to_contain_text(f"Код подтверждения отправлен на номер {IVAN2}.")
    await expect(page.get_by_test_id("gift-list")).to_contain_text("ждёт кода получателя")
    code = extract_code(await wait_sms(stack, IVAN2, "3339", after))

    # Acting as the linked number, the code is entered there and the points arrive.
    await page.get_by_test_id("acting").select_option(IVAN2)
    await expect(page.get_by_test_id("acting-note")).to_contain_text("+7 916 123-45-68")
    accept = page.get_by_role("region", name="Получить подаренные баллы")
    await accept.get_by_label("Код из SMS").fill(code)
    await accept.get_by_role("button", name="Получить баллы").click()
    await expect(page.get_by_test_id("accept-result")).to_have_text(f"Подарок зачислен: 21\u00a0балл от {IVAN}.")
    await expect(page.locator("#bonus-points")).to_have_text("21")

    # Back on one's own number: the audit trail shows what was done.
    await page.get_by_role("button", name="Вернуться к своему номеру").click()
    await expect(page.get_by_test_id("acting-note")).to_be_hidden()
    await go(page, "История действий")
    audit = page.get_by_test_id("audit-table")
    await expect(audit.locator('tr[data-event="gift_sent"]')).to_contain_text("Подарок баллов")
    await expect(audit.locator('tr[data-event="hold_captured"]')).to_contain_text("успешно")
    for event in ("top_up", "tariff_switched", "number_linked", "signin"):
        await expect(audit.locator(f'tr[data-event="{event}"]')).not_to_have_count(0)

    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= SCREENS[screen]["viewport"]["width"], f"the page scrolls sideways: {width}px"

    # «Выход»: the session ends at once, the page is back at sign-in with nothing of the account left.
    await page.get_by_role("button", name="Выход").click()
    await expect(page.locator("body")).to_have_attribute("data-view", "signin")
    await expect(page.get_by_test_id("signin-notice")).to_have_text("Вы вышли из Личного кабинета.")
    await expect(page.get_by_test_id("audit-table").locator("tbody tr")).to_have_count(0)
    assert (await stack.store.audit_trail(IVAN))[-1]["event"] == "signout"
    await page.context.close()


async def test_a_wrong_password_shows_the_apis_refusal_and_empty_fields_the_pages_own_words(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    await sms_password(stack, IVAN)
    page = await open_cabinet(browser, stack)
    form = page.get_by_role("region", name="Вход", exact=True)

    await form.get_by_role("button", name="Войти").click()  # nothing filled: no browser bubble, our text
    number = form.get_by_label("Номер телефона")
    await expect(number).to_have_attribute("aria-invalid", "true")
    await expect(number).to_have_accessible_description("Введите номер телефона, например 79161234567")
    await expect(number).to_be_focused()
    assert await number.evaluate("input => input.validationMessage") == ""

    # Nowhere in the page (sign-in and cabinet alike) does the browser validate, and every field has a label.
    assert await page.evaluate("""() => [...document.querySelectorAll("form")].every((f) => f.noValidate)
        && !document.querySelector("[required], [pattern], [min], [max], [minlength], [maxlength]")""")
    unlabelled = await page.evaluate("""() => [...document.querySelectorAll("input, select")]
        .filter((e) => !e.hidden && !e.labels.length && !e.getAttribute("aria-label"))
        .map((e) => e.id)""")
    assert unlabelled == []

    await number.fill(IVAN)
    await expect(number).not_to_have_attribute("aria-invalid", "true")
    await form.get_by_label("Пароль").fill("12345abc")
    await form.get_by_role("button", name="Войти").click()
    result = page.get_by_test_id("signin-result")
    await expect(result).to_have_text(WRONG_TEXT)  # the same for any number: no count that tells it exists
    await expect(result).to_have_attribute("data-state", "error")
    await expect(page.locator("body")).to_have_attribute("data-view", "signin")
    await page.context.close()


async def test_a_sign_in_the_busy_pool_refuses_says_when_to_try_again_and_the_next_try_signs_in(
        settings: Settings, browser: Browser) -> None:
    stack = Stack(settings.with_overrides(costly_workers=1, costly_max_wait_s=0.0))
    await stack.start(smsc=False, gateway=False, api=True)
    gate = threading.Event()
    try:
        assert stack.platform is not None
        passwords = await seed_with_passwords(stack, [IVAN])
        costly = stack.platform.costly
        await costly.run(len, "timed")  # the pool knows what a task costs: nothing may wait behind one
        hashing = asyncio.ensure_future(costly.run(gate.wait, 30))  # its one thread busy (another hash)
        page = await open_cabinet(browser, stack)
        form = page.get_by_role("region", name="Вход", exact=True)
        await form.get_by_label("Номер телефона").fill(IVAN)
        await form.get_by_label("Пароль").fill(passwords[IVAN])
        await form.get_by_role("button", name="Войти").click()
        result = page.get_by_test_id("signin-result")
        await expect(result).to_have_text(re.compile(r"^Сервис сейчас перегружен\. Повторите через \d+ с"))
        await expect(result).to_have_attribute("data-state", "error")
        await expect(page.locator("body")).to_have_attribute("data-view", "signin")

        # A 503 without the API's words (a proxy's page in front of it) reads the same, from Retry-After.
        await page.route("**/api/v1/sessions", lambda route: route.fulfill(
            status=503, headers={"Retry-After": "7", "Content-Type": "text/html"}, body="<h1>503</h1>"))
        await form.get_by_role("button", name="Войти").click()
        await expect(result).to_have_text("Сервис сейчас перегружен. Повторите через 7 с.")
        await page.unroute("**/api/v1/sessions")

        gate.set()
        await hashing
        await form.get_by_role("button", name="Войти").click()  # the refused tries counted nowhere
        await expect(page.locator("body")).to_have_attribute("data-view", "cabinet")
        assert page.problems == [] or all("503" in p for p in page.problems)  # type: ignore[attr-defined]
        await page.context.close()
    finally:
        gate.set()
        await stack.stop()


async def test_when_the_api_says_the_session_has_ended_the_page_returns_to_sign_in(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_cabinet(browser, stack)
    await sign_in(page, IVAN, await sms_password(stack, IVAN))
    await expect(page.get_by_test_id("balance")).to_have_text("250 ₽")

    stack.clock.advance(stack.settings.session_idle_s + 1)  # 20 minutes without a request, on the platform's clock
    await page.get_by_role("navigation", name="Разделы кабинета").get_by_role("link", name="Тарифы").click()
    await expect(page.locator("body")).to_have_attribute("data-view", "signin")
    await expect(page.get_by_test_id("signin-notice")).to_have_text(
        "Сессия завершена: 20 минут без активности или выход. Войдите снова.")
    await expect(page.get_by_test_id("cabinet-view")).to_be_hidden()
    await page.context.close()


async def test_the_idle_countdown_warns_before_the_end_and_signs_out_when_it_runs_out(
        stack: Stack, browser: Browser) -> None:
    assert stack.store is not None
    await seed(stack)
    page = await open_cabinet(browser, stack, fake_clock=True)
    await sign_in(page, IVAN, await sms_password(stack, IVAN))
    timer, warning = page.get_by_test_id("idle-timer"), page.get_by_test_id("idle-warning")
    await expect(timer).to_contain_text("20:00")
    await expect(warning).to_be_hidden()
    # Every answer restarts the idle time: the jump must come after the last of the sign-in's requests.
    await expect(page.locator("body")).to_have_attribute("aria-busy", "false")

    await page.clock.fast_forward("18:30")
    await expect(warning).to_be_visible()
    await expect(warning).to_contain_text("Сеанс завершится через 1:30")
    await expect(timer).to_contain_text("1:30")
    await page.get_by_role("button", name="Продолжить работу").click()  # one request restarts both timers
    await expect(warning).to_be_hidden()
    await expect(timer).to_contain_text("20:00")
    await expect(page.locator("body")).to_have_attribute("aria-busy", "false")

    async with page.expect_response(lambda r: r.request.method == "DELETE" and r.url.endswith("/sessions/current")) \
            as ended:
        await page.clock.fast_forward("20:01")
    await expect(page.locator("body")).to_have_attribute("data-view", "signin")
    await expect(page.get_by_test_id("signin-notice")).to_have_text(
        "Сеанс завершён: 20 минут без активности. Войдите снова.")
    assert (await ended.value).status == 200  # the page ended it in the API too: the token is dead
    assert (await stack.store.audit_trail(IVAN))[-1]["event"] == "signout"
    await page.context.close()


async def test_the_owner_sets_her_code_word_and_email_in_the_settings(stack: Stack, browser: Browser) -> None:
    assert stack.store is not None
    await seed(stack)
    page = await open_cabinet(browser, stack)
    await sign_in(page, IVAN2, await sms_password(stack, IVAN2))  # a number without a code word
    await go(page, "Настройки")
    await expect(page.get_by_test_id("code-word")).to_have_text("не задано")
    await page.get_by_label("Новое кодовое слово").fill("ландыш")
    await page.locator("#code-word-form").get_by_role("button", name="Сохранить").click()
    await expect(page.get_by_test_id("code-word-result")).to_have_attribute("data-state", "ok")
    await expect(page.get_by_test_id("code-word")).to_have_text("задано")
    await page.get_by_label("Новый e-mail").fill("not an address")
    await page.locator("#email-form").get_by_role("button", name="Сохранить").click()
    await expect(page.get_by_test_id("email-result")).to_have_attribute("data-state", "error")
    await page.get_by_label("Новый e-mail").fill("ivan.new@example.com")
    await page.locator("#email-form").get_by_role("button", name="Сохранить").click()
    await expect(page.get_by_test_id("email")).to_have_text("ivan.new@example.com")
    assert (await stack.store.subscribers.profile(IVAN2)).email == "ivan.new@example.com"
    await page.context.close()
