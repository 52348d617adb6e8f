"""Menus as data: load-time checks that name file and screen, pages that fit, and *111# walked over SMPP."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from handlers.catalogue import catalogue
from handlers.ussd_menu import BINDINGS
from sms_codes import verify_password
from tests.support.platform import extract_password
from tests.support.ussd_helpers import answer, choose, dial, read_to_end, seed
from ussd_menus.engine import MenuError, load_menu, paginate
from ussdgw.app.stack import Stack
from ussdgw.smpp.pdu import UssdOp
from ussdgw.smpp.ussd import fits_one_message

MSISDN = "79161234567"
GOOD = """
service_code: "111"
start: main
screens:
  main:
    text: "Меню"
    items:
      - {label: "Баланс", action: balance}
      - {label: "Тарифы", goto: tariffs}
  tariffs:
    text: "Тарифы"
    list: tariffs
    select: main
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "menu.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_well_formed_menu_loads(tmp_path: Path) -> None:
    menu = load_menu(write(tmp_path, GOOD), BINDINGS)
    assert menu.service_code == "111" and set(menu.spec.screens) == {"main", "tariffs"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("goto: tariffs", "goto: tarifs"), r"screen 'main': item 2: goto names unknown screen 'tarifs'"),
        (("action: balance", "action: balanse"), r"screen 'main': item 1: action 'balanse' is not bound"),
        (("list: tariffs", "list: prices"), r"screen 'tariffs': list source 'prices' is not bound"),
        (('label: "Баланс"', 'label: "' + "Б" * 41 + '"'), r"screen 'main': item 1: label of 41 characters"),
        (("    select: main\n", "    select: main\n    colour: red\n"), r"screen 'tariffs': unknown key\(s\) colour"),
        (("start: main", "start: home"), r"top level: start names unknown screen 'home'"),
        (("    select: main\n", ""), r"screen 'tariffs': list and select go together"),
    ],
)
def test_a_broken_menu_fails_at_load_naming_the_file_and_the_screen(tmp_path: Path, change: tuple[str, str],
                                                                    message: str) -> None:
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(MenuError, match=re.escape(str(path)) + ": " + message):
        load_menu(path, BINDINGS)


def test_a_menu_that_is_not_yaml_fails_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "screens: [unclosed")
    with pytest.raises(MenuError, match=re.escape(str(path))):
        load_menu(path, BINDINGS)


@given(st.text(alphabet="абвгдежзик лмнопрстуф", max_size=400),
       st.lists(st.text(alphabet="абвгдежзик лмн", min_size=1, max_size=38), max_size=30),
       st.booleans(), st.booleans())
def test_every_page_fits_one_ussd_message_and_keeps_every_line(header: str, labels: list[str], back: bool,
                                                               main: bool) -> None:
    lines = [f"{n} {label}" for n, label in enumerate(labels, start=1)]
    pages = paginate(header, lines, back=back, main=main)
    assert all(fits_one_message(page) for page in pages)
    assert all(page.splitlines()[-3:].count("98 Далее") == 1 for page in pages[:-1])
    assert "98 Далее" not in pages[-1]
    shown = "\n".join(pages)
    assert all(line in shown for line in lines)


def test_the_shipped_tariffs_need_more_than_one_page_in_ucs2() -> None:
    lines = [f"{n} {t.name} {t.monthly_fee_kop // 100} ₽/мес" for n, t in enumerate(catalogue().tariffs, 1)]
    assert len(paginate("Ваш тариф: Смарт. Тарифы:", lines, back=True, main=True)) > 1


# ---- over SMPP -----------------------------------------------------------------------------------
async def walk(stack: Stack, *answers: str) -> Any:
    screen = await dial(stack, MSISDN, "*111#")
    for text in answers:
        assert screen.ussd_op == UssdOp.USSR_REQUEST, screen.text
        screen = await answer(stack, MSISDN, text)
    return screen


async def test_star_111_shows_the_main_menu_and_waits(stack: Stack) -> None:
    screen = await walk(stack)
    assert screen.ussd_op == UssdOp.USSR_REQUEST
    assert screen.text.splitlines()[:3] == ["Мой МТС", "1 Баланс", "2 Тарифы"]


async def test_tariffs_page_on_with_98_and_a_tariff_from_page_two_is_switched(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=50000, tariff="smart")
    pages = [await walk(stack, "2")]
    assert pages[0].text.startswith("Ваш тариф: Смарт.")
    while "98 Далее" in pages[-1].text:
        pages.append(await answer(stack, MSISDN, "98"))
    assert len(pages) >= 2 and all("0 Назад" in p.text for p in pages[1:])
    number, name = next((n, name) for n, name in re.findall(r"^(\d+) (\S+)", pages[-1].text, re.M)
                        if n not in ("0", "00", "98"))
    card = await answer(stack, MSISDN, number)
    assert card.text.startswith(name) and "1 Перейти на этот тариф" in (card.text + (await _rest(stack, card)))
    done = await answer(stack, MSISDN, "1")
    assert done.ussd_op == UssdOp.PSSR_RESPONSE and f"Тариф изменён на «{name}»" in done.text
    assert stack.store is not None
    tariff = next(t for t in catalogue().tariffs if t.name == name)
    profile = await stack.store.subscribers.fields(MSISDN)
    assert profile["tariff"] == tariff.id
    assert int(profile["balance_kop"]) == 50000 - tariff.switch_price_kop


async def _rest(stack: Stack, screen: Any) -> str:
    """The text of a card's later pages (leaves the dialogue on its last page)."""
    text = ""
    while "98 Далее" in screen.text:
        screen = await answer(stack, MSISDN, "98")
        text += screen.text
    return text


async def test_a_paid_tariff_switch_at_zero_balance_is_refused_and_changes_nothing(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=0, tariff="basic")
    offered = [t for t in catalogue().tariffs if not t.corporate_only]
    paid = next(t for t in offered if t.switch_price_kop > 0)
    card = await choose(stack, MSISDN, await dial(stack, MSISDN, "*111*2#"), paid.name)
    assert card.text.startswith(paid.name)
    done = await read_to_end(stack, MSISDN, await choose(stack, MSISDN, card, "Перейти на этот тариф"))
    assert "положительный баланс" in done
    assert stack.store is not None and (await stack.store.subscribers.fields(MSISDN))["tariff"] == "basic"


async def test_a_direct_string_opens_a_screen_without_walking_the_menu(stack: Stack) -> None:
    screen = await dial(stack, MSISDN, "*111*3#")
    assert screen.text.startswith("Услуги") and "Локатор (выкл)" in screen.text


async def test_a_service_is_switched_on_and_off_from_the_menu(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=10000)
    on = await choose(stack, MSISDN, await walk(stack, "3", "1"), "Подключить")
    assert on.ussd_op == UssdOp.PSSR_RESPONSE and "подключена" in on.text
    assert stack.store is not None and "svc:locator" in await stack.store.subscribers.fields(MSISDN)
    off = await choose(stack, MSISDN, await walk(stack, "3", "1"), "Отключить")
    assert "отключена" in off.text and "svc:locator" not in await stack.store.subscribers.fields(MSISDN)


async def test_autopay_asks_for_an_amount_and_a_bad_amount_is_asked_again(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=10000)
    autopay = next(n for n, s in enumerate(catalogue().services, 1) if s.id == "autopay")
    prompt = await choose(stack, MSISDN, await walk(stack, "3", str(autopay)), "Подключить")
    assert "Сумма Автоплатежа" in prompt.text
    again = await answer(stack, MSISDN, "7")
    assert again.ussd_op == UssdOp.USSR_REQUEST and "от 100 до 5000" in again.text
    done = await answer(stack, MSISDN, "300")
    assert done.ussd_op == UssdOp.PSSR_RESPONSE and "подключена" in done.text
    assert stack.store is not None
    assert (await stack.store.subscribers.fields(MSISDN))["autopay_amount_kop"] == "30000"


async def test_a_wrong_choice_shows_the_screen_again_with_a_hint(stack: Stack) -> None:
    screen = await walk(stack, "7")
    assert screen.ussd_op == UssdOp.USSR_REQUEST
    assert screen.text.startswith("Нет такого пункта.") and "1 Баланс" in screen.text


def deliver_statuses(stack: Stack) -> list[int]:
    """The status the gateway answered each deliver_sm of the phone with."""
    assert stack.smsc is not None
    return [e["status"] for e in stack.smsc.phones.pdu_entries(MSISDN)
            if e.get("command") == "deliver_sm" and e.get("status") is not None]


@pytest.mark.parametrize("choice", ["１", "٣", "²", "1\u0301", "9" * 150])
async def test_a_choice_in_other_digits_is_no_item_and_the_network_gets_rok(stack: Stack, choice: str) -> None:
    screen = await walk(stack, choice)
    assert screen.ussd_op == UssdOp.USSR_REQUEST and screen.text.startswith("Нет такого пункта.")
    assert set(deliver_statuses(stack)) == {0}  # never ESME_RX_T_APPN: nothing to retry


async def test_an_amount_in_fullwidth_digits_is_asked_again_and_a_dialled_one_refused(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=10000)
    autopay = next(n for n, s in enumerate(catalogue().services, 1) if s.id == "autopay")
    await choose(stack, MSISDN, await walk(stack, "3", str(autopay)), "Подключить")
    again = await answer(stack, MSISDN, "３００")
    assert again.ussd_op == UssdOp.USSR_REQUEST and "от 100 до 5000" in again.text
    assert stack.store is not None and "autopay_amount_kop" not in await stack.store.subscribers.fields(MSISDN)
    dialled = await dial(stack, MSISDN, "*111*３#")
    assert dialled.text.startswith("Нет такого пункта.")  # the dialled extra runs as an answer, refused politely
    assert set(deliver_statuses(stack)) == {0}


async def test_back_and_main_menu_navigate(stack: Stack) -> None:
    card = [await walk(stack, "3", "1")]
    while "98 Далее" in card[-1].text:  # a long card: read it to the page with its choices
        card.append(await answer(stack, MSISDN, "98"))
    assert len(card) > 1 and "0 Назад" in card[-1].text and "00 Главное меню" in card[-1].text
    back = await answer(stack, MSISDN, "0")  # on a later page, 0 goes back a page ...
    assert back.text == card[-2].text
    for _ in card[1:-1]:
        back = await answer(stack, MSISDN, "0")
    back = await answer(stack, MSISDN, "0")  # ... and on the first, back to the screen before
    assert back.text.startswith("Услуги")
    main = await answer(stack, MSISDN, "00")
    assert main.text.startswith("Мой МТС")


async def test_a_choice_not_on_the_page_shown_is_refused_on_that_same_page(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=50000, tariff="basic")
    tariffs = await dial(stack, MSISDN, "*111*2#")
    shown = {int(n) for n in re.findall(r"^(\d+) ", tariffs.text, re.M)} - {0, 98}
    hidden = max(shown) + 1  # a tariff the next page lists, never seen on this one
    refused = await answer(stack, MSISDN, str(hidden))
    assert refused.ussd_op == UssdOp.USSR_REQUEST and refused.text.startswith("Нет такого пункта.")
    assert {int(n) for n in re.findall(r"^(\d+) ", refused.text, re.M)} - {0, 98} == shown  # the same page
    assert stack.store is not None and (await stack.store.subscribers.fields(MSISDN))["tariff"] == "basic"
    # a card opened by a dialled string, then answered: the page shown has no «1» yet
    card = await dial(stack, MSISDN, f"*111*2*{min(shown)}#")
    assert "98 Далее" in card.text and "Перейти" not in card.text
    refused = await answer(stack, MSISDN, "1")
    assert refused.text.startswith("Нет такого пункта.")
    assert int((await stack.store.subscribers.fields(MSISDN))["balance_kop"]) == 50000


async def test_a_published_shortcut_dialled_whole_still_reaches_its_choice(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=10000)
    on = await dial(stack, MSISDN, "*111*3*1*1#")  # Услуги → Локатор → Подключить, typed at once
    assert on.ussd_op == UssdOp.PSSR_RESPONSE and "подключена" in on.text
    assert stack.store is not None and "svc:locator" in await stack.store.subscribers.fields(MSISDN)


def test_a_number_never_leaves_its_unit_and_a_long_card_uses_the_screen() -> None:
    card = ("Супер: безлимит внутри сети, 500 минут на другие сети России, 10 ГБ интернета, "
            "ещё 300 SMS и 100 ММС. 500,00\u00a0₽/мес, переход бесплатно.")
    pages = paginate(card, ["1 Перейти на этот тариф"], back=True, main=True)
    text_pages = [p for p in pages if "1 Перейти" not in p]
    assert len(text_pages) >= 2 and all(p.endswith("\n98 Далее") and "0 Назад" not in p for p in text_pages[:-1])
    assert all(len(p) >= 70 for p in text_pages[:-1])  # of the 80 UCS2 characters a page holds
    for page in pages:
        body = page.split("\n")[0]
        assert not re.search(r"\d$", body), page  # no page ends on a bare number
    assert "1 Перейти на этот тариф" in pages[-1] and "0 Назад" in pages[-1]


async def test_balance_from_the_menu_closes_the_dialogue(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=25000)
    screen = await walk(stack, "1")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and screen.text == "Ваш баланс: 250\u00a0₽."


async def test_new_password_from_the_menu_comes_by_sms_from_3339(stack: Stack) -> None:
    assert stack.smsc is not None and stack.store is not None
    after = stack.smsc.phones.last_seq
    screen = await walk(stack, "5")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and "по SMS с номера 3339" in screen.text
    async with asyncio.timeout(10):
        while True:
            sms = [m for m in await stack.smsc.phones.wait_inbox(MSISDN, after, 10) if m.kind == "sms"]
            if sms:
                break
            after = stack.smsc.phones.last_seq
    assert sms[0].sender == "3339"
    assert verify_password(extract_password(sms[0].text), (await stack.store.subscribers.fields(MSISDN))["pw_hash"])


async def test_the_tariff_list_laid_out_once_is_never_another_kind_of_subscribers(stack: Stack) -> None:
    """Layouts are shared between subscribers who see the same screen: a corporate number's list
    (with the corporate-only tariffs) and a private number's are two layouts, whichever came first."""
    firm, person = "79160000001", "79160000002"
    await seed(stack, firm, balance_kop=50000, tariff="smart", corporate=1)
    await seed(stack, person, balance_kop=50000, tariff="smart")
    corporate = [t.name for t in catalogue().tariffs if t.corporate_only]
    assert corporate
    for _ in range(2):  # the second walk meets both layouts laid out already
        for msisdn, sees_corporate in ((firm, True), (person, False), (firm, True)):
            await dial(stack, msisdn, "*111#")
            screen = await answer(stack, msisdn, "2")
            text = screen.text
            while "98 Далее" in screen.text:
                screen = await answer(stack, msisdn, "98")
                text += screen.text
            assert all((name in text) is sees_corporate for name in corporate), (msisdn, text)
