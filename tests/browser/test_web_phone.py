"""The web phone in a real headless Chromium (Debian's /usr/bin/chromium through Playwright):
dial *100# and read the balance, get a password by SMS, switch the phone off and see the next
SMS marked undelivered, while the gateway records the same fate. Then what a QA engineer tried:
codes no network takes, a dialogue the network leaves open, SMS phone to phone on two phones side
by side, one clock, a phone-sized screen, the PDU log, held messages' history, the SMS counter,
the subscriber panel, the mailbox, copy buttons and a scenario saved from what was done."""

from __future__ import annotations

import asyncio
import re
import smtplib
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from simulator.pdulog import status_label
from simulator.scenario import load_scenario, report_lines, run_against
from tests.support.browser import CHROMIUM, TIMEOUT_MS
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.smpp.ussd import DialogueState
from ussdgw.store import AuditEvent

PHONE = "79161234567"

pytestmark = pytest.mark.needs_tool(not CHROMIUM.exists(), reason=f"{CHROMIUM} is missing (Debian package chromium)")

if CHROMIUM.exists():
    from playwright.async_api import Browser, Page, expect


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


# ---- what a QA engineer tried on the web phone ------------------------------------------------------
OTHER = "79260000001"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The simulator is the operator's network: the platform lets it sign in by MSISDN header (P6),
    which the subscriber panel does."""
    return settings.with_overrides(api_trusted_networks="127.0.0.1/32")


async def seed(stack: Stack, msisdn: str = PHONE, balance_kop: int = 25050) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put(msisdn, {"owner_id": f"p-{msisdn}", "region": "77", "corporate": 0,
                                              "balance_kop": balance_kop, "tariff": "basic"},
                                      AuditEvent("seeded", "admin"))


async def sim_call(stack: Stack, method: str, path: str, body: dict[str, object] | None = None
                   ) -> tuple[int, dict[str, object]]:
    """One request to the simulator's HTTP API: its status and JSON body."""
    async with aiohttp.ClientSession(stack.endpoints["simulator"]) as http, \
            http.request(method, path, json=body) as response:
        return response.status, await response.json()


async def dial(page: Page, code: str) -> None:
    await page.get_by_test_id("tab-dial").click()
    await page.get_by_test_id("dial-input").fill(code)
    await page.get_by_test_id("dial-call").click()


async def sms(page: Page, to: str, text: str) -> None:
    await page.get_by_test_id("tab-sms").click()
    await page.get_by_test_id("sms-to").fill(to)
    await page.get_by_test_id("sms-text").fill(text)
    await page.get_by_test_id("sms-send").click()


async def test_a_ussd_code_no_network_would_take_is_refused_on_the_page_in_russian_and_never_sent(
        stack: Stack, browser: Browser) -> None:
    assert stack.smsc is not None
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    popup, error = page.get_by_test_id("ussd-popup"), page.get_by_test_id("dial-error")
    refused = {
        "*1234567890123456789#": "Код услуги — от 1 до 4 цифр, а набрано 19",  # the 19-digit first part
        "*100*" + "1" * 200 + "#": "длиннее 182 символов",  # past one USSD string (over 254 octets too)
        "*100": "заканчивается на #",
        "*100*123456789012345678901#": "не больше 20 цифр",
        "89161234567": "Голосовые вызовы симулятор не умеет",
        "*10a#": "только цифры, * и #",
    }
    for code, why in refused.items():
        await dial(page, code)
        await expect(error).to_contain_text(why)
        await expect(popup).to_be_hidden()  # never "sent": nothing went out
    assert not [o for o in stack.smsc.phones.get(PHONE).outbox if o.kind == "ussd"]
    assert not stack.smsc.phones.pdu_entries(PHONE)

    # The API refuses the same before the SMPP encoder, naming the field.
    status, body = await sim_call(stack, "POST", f"/api/phones/{PHONE}/ussd/dial", {"code": "*1234567890123456789#"})
    assert status == 400
    assert body == {"error": "not a USSD string: '*1234567890123456789#'", "field": "code", "code": "malformed_ussd"}

    # A code it takes: the error goes, the popup shows the answer.
    await dial(page, "*100#")
    await expect(error).to_be_hidden()
    await expect(popup).to_have_attribute("data-state", "closed")
    await expect(page.get_by_test_id("ussd-title")).to_have_text("*100#")
    await page.get_by_test_id("ussd-cancel").click()

    # Refused by the simulator (409 with a code): the page says why in Russian, and nothing stays "sent".
    await page.get_by_test_id("power-off").check()
    await dial(page, "*100#")
    await expect(error).to_have_text(re.compile("^Телефон выключен"))
    await expect(popup).to_be_hidden()
    await page.get_by_test_id("power-on").check()
    await page.get_by_test_id("fault-unknown-number").check()
    await expect(page.get_by_test_id("status-network")).to_have_text("✗ неверный номер")
    await dial(page, "*100#")
    await expect(error).to_have_text(re.compile("^Неверный номер: такого абонента в сети нет"))
    await expect(popup).to_be_hidden()
    body = await page.locator("body").inner_text()
    assert "must be" not in body and "has no network" not in body
    await page.context.close()


async def test_the_phone_gives_up_on_a_ussd_dialogue_after_the_networks_timeout_and_says_so(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    await dial(page, "*111#")
    popup = page.get_by_test_id("ussd-popup")
    await expect(popup).to_have_attribute("data-state", "waiting")
    await expect(page.get_by_test_id("ussd-wait")).to_contain_text("Сеанс закроется через")
    await page.get_by_test_id("advance-10m").click()  # past sim_ussd_timeout_s (180 s)
    await expect(popup).to_have_attribute("data-state", "closed")
    await expect(popup).to_have_attribute("data-reason", "timeout")
    await expect(page.get_by_test_id("ussd-text")).to_contain_text("Нет ответа от сети: время ожидания истекло")
    await expect(page.get_by_test_id("ussd-answer")).to_be_hidden()
    await page.context.close()


async def test_an_sms_to_another_subscriber_goes_phone_to_phone_side_by_side_never_through_the_platform(
        stack: Stack, browser: Browser) -> None:
    assert stack.smsc is not None
    await seed(stack)
    page = await (await browser.new_context(viewport={"width": 1300, "height": 900})).new_page()
    page.set_default_timeout(TIMEOUT_MS)
    await page.goto(f"{stack.endpoints['simulator']}/?phones={PHONE},{OTHER}")
    first, second = (page.frame_locator(f'iframe[data-msisdn="{n}"]') for n in (PHONE, OTHER))
    await expect(first.locator("body")).to_have_attribute("data-ready", PHONE)
    await expect(second.locator("body")).to_have_attribute("data-ready", OTHER)

    # +7 with spaces and dashes is the subscriber's number, and the «Кому» field keeps every digit.
    await first.get_by_test_id("tab-sms").click()
    to = first.get_by_test_id("sms-to")
    await to.fill("+7 926 000-00-01")
    assert await to.evaluate("e => e.scrollWidth <= e.clientWidth"), "the «Кому» field cuts the number"
    await first.get_by_test_id("sms-text").fill("Привет, это Иван")
    await first.get_by_test_id("sms-send").click()
    await expect(first.locator('[data-testid="sms-out"][data-delivery="DELIVERED"]')).to_contain_text(
        "✓ доставлено абоненту")
    await second.get_by_test_id("tab-sms").click()
    got = second.locator(f'[data-testid="sms-in"][data-sender="{PHONE}"][data-state="DELIVERED"]')
    await expect(got).to_contain_text("Привет, это Иван")
    await expect(got).to_contain_text(f"+{PHONE}")

    # The other phone off: the network holds it; on again, it lands and the sender sees it.
    await second.get_by_test_id("power-off").check()
    await first.get_by_test_id("sms-to").fill("89260000001")
    await first.get_by_test_id("sms-text").fill("Ты где?")
    await first.get_by_test_id("sms-send").click()
    held = first.locator('[data-testid="sms-out"][data-delivery="ENROUTE"]')
    await expect(held).to_contain_text("ждёт доставки: абонент недоступен")
    await second.get_by_test_id("power-on").check()
    await expect(first.locator('[data-testid="sms-out"][data-delivery="DELIVERED"]')).to_have_count(2)

    # Never through the platform: no deliver_sm to it, no "not served" answer from the other number.
    assert not [e for e in stack.smsc.phones.pdu_entries(PHONE) if e["to"] == OTHER]
    assert not [m for m in stack.smsc.phones.get(PHONE).inbox if m.sender == OTHER]

    # What a phone would not send: refused on the page in Russian, nothing leaves.
    sent = len(stack.smsc.phones.get(PHONE).outbox)
    for bad, why in (("3339#", "Кому: короткий номер сервиса"), ("+7 916", "Кому: короткий номер сервиса"),
                     (f"+{PHONE}", "SMS себе не отправить"), ("", "укажите номер")):
        await first.get_by_test_id("sms-to").fill(bad)
        await first.get_by_test_id("sms-text").fill("тест")
        await first.get_by_test_id("sms-send").click()
        await expect(first.get_by_test_id("sms-error")).to_contain_text(why)
    assert len(stack.smsc.phones.get(PHONE).outbox) == sent
    # The API refuses the same with a 400 naming the field.
    status, body = await sim_call(stack, "POST", f"/api/phones/{PHONE}/sms", {"to": "3339#", "text": "x"})
    assert status == 400 and body["field"] == "to" and body["code"] == "bad_recipient"
    await page.context.close()


async def test_one_clock_status_bar_pdus_and_messages_and_a_reset(stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    status, _ = await sim_call(stack, "POST", "/api/clock/advance", {"seconds": 4320})  # 1.2 h, from elsewhere
    assert status == 200
    await expect(page.locator("#clock-offset")).to_have_text("+1,2 ч")
    expected = await page.evaluate("() => { const d = new Date(Date.now() + 4320e3); return [d.getHours(), "
                                   "d.getMinutes()].map(n => String(n).padStart(2, '0')).join(':'); }")
    assert await page.locator("#sb-clock").inner_text() in {expected, expected[:-1] + str(int(expected[-1]) - 1)}
    await sms(page, "3339", "ПАРОЛЬ")
    reply = page.locator('[data-testid="sms-in"][data-state="DELIVERED"]').first
    await expect(reply).to_be_visible()
    shown = (await reply.locator(".meta span").nth(1).inner_text())[:8]  # HH:MM:SS of the simulator
    pdu_times = await page.get_by_test_id("pdu-log").locator(".t").all_inner_texts()
    assert shown in pdu_times, (shown, pdu_times)  # the PDU log keeps the same clock as the messages
    await page.get_by_test_id("clock-reset").click()
    await expect(page.locator("#clock-offset")).to_have_text("сейчас")
    assert stack.clock.offset == 0
    await page.context.close()


async def test_at_phone_size_the_network_log_shows_the_state_and_pdu_lines_wrap(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE, viewport={"width": 390, "height": 844}, is_mobile=True,
                            has_touch=True)
    await sms(page, "3339", "ПАРОЛЬ")
    state = page.get_by_test_id("network-state").first
    await expect(state).to_contain_text("платформа записала")  # the last change: the receipt acknowledged
    left, right = await state.evaluate("e => { e.scrollIntoView(); const r = e.getBoundingClientRect(); "
                                       "return [r.left, r.right]; }")
    assert left >= 0 and right <= 390, (left, right)
    await expect(state).to_be_visible()
    line = page.get_by_test_id("pdu").first
    right, cut = await line.evaluate("e => { e.scrollIntoView(); return [e.getBoundingClientRect().right, "
                                     "e.scrollWidth > e.clientWidth + 1]; }")
    assert right <= 390 and not cut, (right, cut)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways on a phone: {width}px"
    await page.context.close()


async def test_the_pdu_log_names_statuses_receipts_parts_sessions_and_expands(stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    await sms(page, "3339", "ПАРОЛЬ")  # the reply is two parts: UDH part numbers, receipts for both
    log = page.get_by_test_id("pdu-log")
    receipts = log.locator('[data-command="deliver_sm"]').filter(has_text="квитанция DELIVERED err:000")
    await expect(receipts).not_to_have_count(0)
    await expect(log.locator('[data-command="submit_sm"]').filter(has_text="часть 1/2 (UDH")).to_have_count(1)
    await expect(log.get_by_test_id("pdu-status").first).to_have_text("resp ESME_ROK")
    await expect(log.locator('[data-command="submit_sm"]').first).to_contain_text(re.compile(r"#\d+"))
    await dial(page, "*100#")
    await expect(page.get_by_test_id("ussd-popup")).to_have_attribute("data-state", "closed")
    answer = log.locator('[data-command="submit_sm"]').filter(has_text="PSSR_RESPONSE").first
    await expect(answer).to_contain_text("конец сеанса (end bit)")
    await answer.locator("summary").click()
    fields = answer.get_by_test_id("pdu-fields")
    await expect(fields).to_be_visible()
    await expect(fields).to_contain_text("its_session_info")
    await expect(fields).to_contain_text("Ваш баланс")
    await expect(fields).to_contain_text("ESME_ROK (0x00000000)")

    assert stack.smsc is not None
    assert {e["status_name"] for e in stack.smsc.phones.pdu_entries(PHONE)} == {"ESME_ROK"}

    # The filter: only what matches, and a Russian line when nothing does.
    await page.get_by_test_id("log-filter").fill("submit_sm")
    commands = await log.get_by_test_id("pdu").evaluate_all("es => es.map(e => e.dataset.command)")
    assert commands and set(commands) == {"submit_sm"}
    await page.get_by_test_id("log-filter").fill("нет-такого")
    await expect(log).to_have_text("Ничего не подходит под фильтр")
    await expect(page.get_by_test_id("network-log").locator("tbody")).to_have_text("Ничего не подходит под фильтр")
    await page.context.close()


async def test_a_held_then_delivered_sms_keeps_its_history_and_the_platforms_receipt(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    await page.get_by_test_id("power-off").check()
    await sms(page, "3339", "ПАРОЛЬ")
    held = page.locator('[data-testid="sms-in"][data-state="ENROUTE"]').first
    await expect(held.get_by_test_id("mt-state")).to_contain_text("ожидает")
    await page.locator('[data-advance="60"]').click()
    await expect(page.locator("#clock-offset")).to_have_text("+1 мин")
    await page.get_by_test_id("power-on").check()
    delivered = page.locator('[data-testid="sms-in"][data-state="DELIVERED"]').first
    await expect(delivered.get_by_test_id("mt-state")).to_have_text("✓ доставлено")
    history = delivered.get_by_test_id("mt-history")
    await expect(history).to_contain_text(re.compile(r"сеть держала с \d\d:\d\d:\d\d, доставлено в \d\d:\d\d:\d\d "
                                                     r"\(ждало 1 мин\)"))
    await expect(history).to_contain_text("квитанция DELIVERED: платформа записала")
    # The same in the network log, and the platform's own audit says so too.
    await expect(page.get_by_test_id("network-state").first).to_contain_text("ждало 1 мин")
    assert stack.store is not None
    trail = await stack.store.audit_trail(PHONE)
    assert any("state=DELIVERED" in e["detail"] for e in trail if e["event"] == "mt_receipt")
    await page.context.close()


async def test_the_sms_counter_counts_extension_characters_twice_warns_past_the_limit_and_keeps_phone_order(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    await page.get_by_test_id("tab-sms").click()
    text, counter = page.get_by_test_id("sms-text"), page.get_by_test_id("sms-counter")
    await text.fill("{}[]~^|€\\")
    await expect(counter).to_have_text("9 симв. · 18 септет. · 1 SMS · GSM 7-бит")
    await text.fill("a" * 160)
    await expect(counter).to_contain_text("160 септет. · 1 SMS")
    await text.fill("{" * 81)  # 162 septets: two parts
    await expect(counter).to_contain_text("162 септет. · 2 SMS")
    await text.fill("Я" * 71)
    await expect(counter).to_have_text("71 симв. · 2 SMS · UCS2")
    await text.fill("a" * 1601)
    await expect(counter).to_contain_text("Слишком длинное сообщение: 1\u00a0601 символов, можно не больше 1\u00a0600")
    await page.get_by_test_id("sms-to").fill("3339")
    await page.get_by_test_id("sms-send").click()
    await expect(page.get_by_test_id("sms-error")).to_contain_text("Слишком длинное сообщение")
    assert stack.smsc is not None and not stack.smsc.phones.get(PHONE).outbox

    # Phone order: the newest at the bottom; or newest first, as the tester chooses.
    await sms(page, "3339", "БАЛАНС")
    await sms(page, "3339", "ПАРОЛЬ")
    await expect(page.locator('[data-testid="sms-in"][data-state="DELIVERED"]')).not_to_have_count(0)
    await expect(page.locator('[data-testid="sms-out"]')).to_have_count(2)
    outs = page.locator('[data-testid="sms-out"] .body')
    await expect(outs.last).to_have_text("ПАРОЛЬ")
    await page.get_by_test_id("newest-first").check()
    await expect(outs.first).to_have_text("ПАРОЛЬ")
    await page.context.close()


async def test_the_subscriber_panel_reads_the_platform_and_the_mailbox_shows_mail_with_copy_buttons(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE, permissions=["clipboard-read", "clipboard-write"])
    panel = page.get_by_test_id("subscriber-panel")
    await expect(panel).to_be_visible()
    await expect(page.get_by_test_id("subscriber-balance")).to_have_text("250,50\u00a0₽")
    await expect(page.get_by_test_id("subscriber-block")).to_have_text("активен")
    await expect(page.get_by_test_id("subscriber-n2")).to_have_text("нет")
    # The platform refuses (here: the network's MSISDN header is not the one it reads): its Russian
    # text; the platform unreachable: the simulator's own.
    link = stack.selfcare_link
    assert link is not None
    link.msisdn_header = "X-Not-The-MSISDN"
    await seed(stack, OTHER)
    other = await open_phone(browser, stack, OTHER)  # no session of its own yet: it signs in now
    await expect(other.get_by_test_id("subscriber-error")).to_have_text("Нет заголовка X-MSISDN с номером.")
    await other.context.close()
    base, link.base_url = link.base_url, "http://127.0.0.1:9/api/v1"
    await page.get_by_role("button", name="Обновить").click()
    await expect(page.get_by_test_id("subscriber-error")).to_have_text("Нет связи с API личного кабинета платформы.")
    link.base_url, link.msisdn_header = base, "X-MSISDN"

    # The password SMS gets a copy button; it copies the password.
    await sms(page, "3339", "ПАРОЛЬ")
    copy = page.locator('[data-testid="sms-in"][data-state="DELIVERED"]').first.get_by_test_id("copy-code")
    await expect(copy).to_have_count(1)
    code = await copy.get_attribute("data-code")
    assert code and re.fullmatch(r"[a-z0-9]{8,10}", code)
    await copy.click()
    assert await page.evaluate("navigator.clipboard.readText()") == code

    # Mail that reaches the simulator's SMTP sink shows in the mailbox panel (SPEC D3).
    host, port = stack.settings.smtp_host, stack.settings.smtp_port
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "lk@selfcare.example", "ivan@example.com", "Код"
    message.set_content("Ваш код подтверждения: 4821\n")

    def send() -> None:
        with smtplib.SMTP(host, port, timeout=10) as smtp:
            smtp.send_message(message)

    await asyncio.to_thread(send)
    letter = page.get_by_test_id("letter").first
    await expect(letter).to_contain_text("Ваш код подтверждения: 4821")
    await expect(page.get_by_test_id("mailbox").first).to_contain_text("ivan@example.com")
    await expect(letter.get_by_test_id("copy-code")).to_have_attribute("data-code", "4821")
    await page.context.close()


async def test_the_subscriber_panel_is_hidden_when_the_simulator_knows_no_platform(
        settings: Settings, browser: Browser) -> None:
    stack = Stack(settings)
    await stack.start(gateway=False, api=False)
    try:
        page = await open_phone(browser, stack, PHONE)
        await expect(page.get_by_test_id("subscriber-panel")).to_be_hidden()
        status, body = await sim_call(stack, "GET", f"/api/phones/{PHONE}/subscriber")
        assert status == 404 and body["code"] == "no_selfcare"
        await page.context.close()
    finally:
        await stack.stop()


async def test_what_was_done_saves_as_a_scenario_the_loader_takes_and_the_runner_passes(
        stack: Stack, browser: Browser, tmp_path: Path) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE, accept_downloads=True)
    await page.get_by_test_id("save-scenario").click()  # nothing done yet: nothing to save
    await expect(page.locator("#toast")).to_contain_text("Пока нечего сохранить")

    await sms(page, "3339", "ПАРОЛЬ")
    await expect(page.locator('[data-testid="sms-in"][data-state="DELIVERED"]')).not_to_have_count(0)
    await dial(page, "*100#")
    await expect(page.get_by_test_id("ussd-popup")).to_have_attribute("data-state", "closed")
    await page.get_by_test_id("ussd-cancel").click()
    async with page.expect_download() as waiting:
        await page.get_by_test_id("save-scenario").click()
    download = await waiting.value
    saved = tmp_path / download.suggested_filename
    await download.save_as(saved)
    scenario = load_scenario(saved)
    kinds = [s.kind for s in scenario.steps]
    assert kinds[0] == "sms" and "dial" in kinds and "expect" in kinds, kinds
    password = next(s for s in scenario.steps if s.kind == "expect" and "sms" in s.args)
    assert "[A-Za-z0-9]+" in password.args["sms"]["text"]  # a password differs on every run
    # It runs: the same steps against the same simulator pass again.
    result = await run_against(stack.endpoints["simulator"], scenario)
    assert result.ok, report_lines(result)
    await page.context.close()


def test_status_names_are_smpps_own() -> None:
    assert status_label(0) == "ESME_ROK"
    assert status_label(0x0B) == "ESME_RINVDSTADR"
    assert status_label(0x1234) == "0x00001234"  # no name in SMPP 3.4: its number


async def test_the_page_checks_its_own_forms_in_russian_and_says_when_the_simulator_is_gone(
        stack: Stack, browser: Browser) -> None:
    await seed(stack)
    page = await open_phone(browser, stack, PHONE)
    # The page's own texts, not the browser's bubbles.
    assert await page.evaluate("[...document.forms].every(f => f.noValidate)")
    await page.get_by_test_id("msisdn-input").fill("12ab")
    await page.get_by_test_id("open-phone").click()
    await expect(page.get_by_test_id("msisdn-error")).to_have_text(
        "Номер телефона: от 5 до 15 цифр, например 79161234567.")
    await expect(page.get_by_test_id("msisdn-input")).to_have_attribute("aria-invalid", "true")
    await page.get_by_test_id("msisdn-input").fill("+7 926 000-00-01")  # a number as people write it opens
    await page.get_by_test_id("open-phone").click()
    await expect(page.locator("body")).to_have_attribute("data-ready", OTHER)
    await page.get_by_test_id("block-input").fill("спам")
    await page.get_by_test_id("block-add").click()
    await expect(page.get_by_test_id("block-error")).to_contain_text("Блокировать можно короткий номер")

    # The simulator unreachable ("Failed to fetch" in the browser): said in Russian.
    await page.route("**/api/phones/*/sms", lambda route: route.abort())
    await sms(page, "3339", "ПАРОЛЬ")
    await expect(page.get_by_test_id("sms-error")).to_have_text(
        "Нет связи с симулятором: он остановлен или недоступен. Запустите его и повторите.")
    await page.unroute("**/api/phones/*/sms")
    await sms(page, "3339", "ПАРОЛЬ")
    await expect(page.get_by_test_id("sms-error")).to_be_hidden()
    await expect(page.locator('[data-testid="sms-out"][data-state="accepted"]')).to_have_count(1)
    await page.context.close()
