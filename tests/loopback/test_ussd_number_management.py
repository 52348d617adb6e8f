"""N2 "Управление номерами" over SMPP: *111*828*1# accepted or refused, reviewed after the delay, *111*828*2#."""

from __future__ import annotations

import asyncio

import pytest

from handlers.number_management import review_due
from simulator.phones import InboxMessage
from sms_codes import verify_password
from tests.support.platform import extract_password
from tests.support.ussd_helpers import choose, dial, events, seed, wait_sms
from ussdgw.app.stack import Stack
from ussdgw.smpp.pdu import UssdOp
from ussdgw.store import linked_key
from ussdgw.store.connect import connect
from ussdgw.store.keys import linked_by_key

IVAN, IVAN2, MARIA, FIRM = "79161234567", "79161234568", "79261112233", "79031112233"


@pytest.fixture
async def people(stack: Stack) -> Stack:
    await seed(stack, IVAN, owner_id="p-1001", region="77", pw_hash="old-hash-1")
    await seed(stack, IVAN2, owner_id="p-1001", region="77", pw_hash="old-hash-2")
    await seed(stack, MARIA, owner_id="p-2002", region="50")
    await seed(stack, FIRM, owner_id="c-3003", region="77", corporate=1)
    return stack


async def profile(stack: Stack, msisdn: str) -> dict[str, str]:
    assert stack.store is not None
    return await stack.store.subscribers.fields(msisdn)


async def review_after_a_day(stack: Stack) -> list[InboxMessage]:
    """Fast-forward past the review delay, run the review, return the SMS it sent (from 111)."""
    assert stack.store is not None and stack.gateway is not None and stack.smsc is not None
    after = stack.smsc.phones.last_seq
    stack.clock.advance(24 * 3600)
    reviews = await review_due(stack.store, stack.settings, send=stack.gateway.send)
    assert reviews
    await asyncio.sleep(0)  # let the phones' inbox notifications run
    return [m for p in stack.smsc.phones.phones.values() for m in p.inbox if m.seq > after and m.sender == "111"]


async def test_an_application_for_two_numbers_of_one_owner_is_accepted_and_pending(people: Stack) -> None:
    screen = await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE
    assert "принята: 2\u00a0номера." in screen.text and "24 ч." in screen.text
    mine = await profile(people, IVAN)
    assert mine["n2_state"] == "pending" and mine["n2_numbers"] == f"{IVAN},{IVAN2}"
    state = await dial(people, IVAN, "*111*828#")
    assert "на рассмотрении" in state.text


async def test_pending_becomes_active_after_review_and_the_joined_passwords_are_reset(people: Stack) -> None:
    await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    assert people.store is not None and people.gateway is not None
    assert await review_due(people.store, people.settings, send=people.gateway.send) == []  # not due yet
    sms = await review_after_a_day(people)
    mine, joined = await profile(people, IVAN), await profile(people, IVAN2)
    assert mine["n2_state"] == "active" and joined["n2_group"] == IVAN
    assert "pw_hash" not in mine and "pw_hash" not in joined
    to_ivan = [m for m in sms if m.text.startswith("Услуга «Управление номерами» подключена")]
    assert len(to_ivan) == 1 and "*111*828*3#" in to_ivan[0].text
    assert any(m.text.startswith("Ваш номер объединён") for m in sms)
    assert "n2_activated" in await events(people, IVAN) and "password_reset" in await events(people, IVAN2)
    assert "подключена" in (await dial(people, IVAN, "*111*828#")).text


async def test_the_new_common_password_opens_every_joined_number(people: Stack) -> None:
    await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    await review_after_a_day(people)
    assert people.smsc is not None
    after = people.smsc.phones.last_seq
    screen = await dial(people, IVAN, "*111*828*3#")
    assert "Общий пароль (2 номера) отправлен" in screen.text
    sms = await wait_sms(people, IVAN, after)
    assert sms.sender == "3339"
    password = extract_password(sms.text)
    assert verify_password(password, (await profile(people, IVAN))["pw_hash"])
    assert verify_password(password, (await profile(people, IVAN2))["pw_hash"])


async def test_a_corporate_number_is_refused_and_nothing_changes(people: Stack) -> None:
    screen = await dial(people, FIRM, "*111*828*1#")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and "корпоративным клиентам" in screen.text
    assert "n2_state" not in await profile(people, FIRM)


async def test_joining_a_number_of_another_owner_is_refused(people: Stack) -> None:
    await seed(people, "79161110000", owner_id="p-9999", region="77")
    screen = await dial(people, IVAN, "*111*828*1*79161110000#")
    assert "другого владельца" in screen.text and "n2_state" not in await profile(people, IVAN)


async def test_joining_a_number_of_another_region_is_refused(people: Stack) -> None:
    await seed(people, "79161110001", owner_id="p-1001", region="50")
    screen = await dial(people, IVAN, "*111*828*1*+79161110001#")
    assert "другом регионе" in screen.text and "n2_state" not in await profile(people, IVAN)


async def test_linked_numbers_join_the_application_and_are_checked_too(people: Stack, redis_url: str) -> None:
    client = connect(redis_url)
    await client.sadd(linked_key(IVAN), MARIA)  # the holder's end alone is no grant: Maria is not asked about
    screen = await dial(people, IVAN, "*111*828*1#")
    assert "не меньше 2 номеров" in screen.text
    await client.sadd(linked_by_key(MARIA), IVAN)  # both ends: Maria's number is linked, and checked
    await client.aclose()
    screen = await dial(people, IVAN, "*111*828*1#")
    assert f"номер {MARIA} оформлен на другого владельца" in screen.text


async def test_an_application_whose_numbers_changed_is_rejected_at_review_with_the_reason(people: Stack) -> None:
    await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    await seed(people, IVAN2, owner_id="p-1001", region="50")  # moved to another region meanwhile
    sms = await review_after_a_day(people)
    mine = await profile(people, IVAN)
    assert mine["n2_state"] == "rejected" and "другом регионе" in mine["n2_reason"]
    assert [m.text for m in sms if m.text.startswith("Заявка на услугу «Управление номерами» отклонена")]
    assert (await profile(people, IVAN2))["pw_hash"] == "old-hash-2"
    assert "отклонена" in (await dial(people, IVAN, "*111*828#")).text


async def test_star_111_828_2_switches_the_option_off(people: Stack) -> None:
    not_yet = await dial(people, IVAN, "*111*828*2#")
    assert "не подключена" in not_yet.text
    await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    await review_after_a_day(people)
    off = await dial(people, IVAN, "*111*828*2#")
    assert off.ussd_op == UssdOp.PSSR_RESPONSE and "отключена" in off.text
    assert (await profile(people, IVAN))["n2_state"] == "off"
    assert "n2_off" in await events(people, IVAN)


async def test_a_one_number_application_is_refused(people: Stack) -> None:
    screen = await dial(people, IVAN, "*111*828*1#")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and "не меньше 2 номеров" in screen.text
    assert "n2_state" not in await profile(people, IVAN)


async def test_a_second_application_while_one_is_pending_says_so(people: Stack) -> None:
    await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    again = await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    assert "на рассмотрении" in again.text


async def test_a_malformed_number_in_the_string_is_refused(people: Stack) -> None:
    screen = await dial(people, IVAN, "*111*828*1*123#")
    assert "Неверный номер" in screen.text


async def test_the_menu_applies_for_the_option_too(people: Stack, redis_url: str) -> None:
    client = connect(redis_url)
    await client.sadd(linked_key(IVAN), IVAN2)  # Ivan's second number in his «Мои номера» (both ends)
    await client.sadd(linked_by_key(IVAN2), IVAN)
    await client.aclose()
    screen = await dial(people, IVAN, "*111*4#")
    assert screen.text.startswith("«Управление номерами»: не подключена.")
    done = await choose(people, IVAN, screen, "Подключить")
    assert done.ussd_op == UssdOp.PSSR_RESPONSE and "принята: 2\u00a0номера." in done.text


async def test_advancing_the_simulator_clock_runs_the_review(people: Stack) -> None:
    await dial(people, IVAN, f"*111*828*1*{IVAN2}#")
    assert people.handsets is not None
    report = await people.handsets.advance_time(24 * 3600)
    assert report["hooks"]["ussd"]["n2_reviews"] == ["active"]
    assert (await profile(people, IVAN))["n2_state"] == "active"
