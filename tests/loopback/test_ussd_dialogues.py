"""USSD over loopback SMPP with a real Redis: *100#, bad strings, unknown codes, timeouts, aborts, redelivery."""

from __future__ import annotations

import asyncio

import pytest

from simulator.phones import InboxMessage
from tests.support.platform import all_keys, one_per_primary
from tests.support.ussd_helpers import answer, dial, events, seed, send_without_reply, submits_seen, ussd
from ussdgw.app.stack import Stack
from ussdgw.smpp.pdu import UssdOp
from ussdgw.smpp.ussd import SessionInfo, unpack_session_info
from ussdgw.store import OutboundMessage

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster

MSISDN = "79161234567"


async def test_star_100_shows_the_balance_in_roubles_and_closes_the_dialogue(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=123456)
    screen = await dial(stack, MSISDN, "*100#")
    assert screen.text.startswith("Ваш баланс: 1\u00a0234,56\u00a0₽")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE
    assert stack.store is not None and await stack.store.dialogues.ttl(MSISDN) is None
    assert (await events(stack, MSISDN))[1:4] == ["mo_received", "balance_shown", "ussd_dialogue_closed"]


async def test_a_negative_balance_is_shown_with_a_minus_and_a_top_up_hint(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=-1550)
    screen = await dial(stack, MSISDN, "*100#")
    assert "-15,50\u00a0₽" in screen.text and "Пополните" in screen.text


async def test_an_unknown_service_code_ends_with_the_list_of_codes(stack: Stack) -> None:
    screen = await dial(stack, MSISDN, "*555#")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE
    assert "*555# не обслуживается" in screen.text and "*100#" in screen.text
    assert "ussd_unknown_code" in await events(stack, MSISDN)


@pytest.mark.parametrize("dialled", ["*100", "*1a0#", "hello", "*111**1#"])
async def test_a_malformed_ussd_string_ends_with_a_clear_message(stack: Stack, dialled: str) -> None:
    screen = await dial(stack, MSISDN, dialled)
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE
    assert "Неверный USSD-запрос" in screen.text
    assert "ussd_malformed" in await events(stack, MSISDN)


async def test_an_answer_with_no_open_dialogue_is_told_politely_that_the_session_is_over(stack: Stack) -> None:
    screen = await answer(stack, MSISDN, "1")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and "завершён" in screen.text


async def test_the_reply_echoes_its_session_info_and_marks_the_end_of_session(stack: Stack) -> None:
    with submits_seen(stack) as seen:
        await dial(stack, MSISDN, "*100#", its_session_info=SessionInfo(0x2A, 1).pack())
    [submit] = seen
    assert submit.service_type == "USSD" and submit.ussd_service_op == UssdOp.PSSR_RESPONSE
    assert unpack_session_info(submit.its_session_info or 0) == SessionInfo(0x2A, 1, end=True)


async def test_a_dialogue_that_is_not_answered_times_out_and_the_late_answer_ends_politely(stack: Stack) -> None:
    menu = await dial(stack, MSISDN, "*111#")
    assert menu.ussd_op == UssdOp.USSR_REQUEST
    assert stack.store is not None
    ttl = await stack.store.dialogues.ttl(MSISDN)
    assert ttl is not None and ttl <= stack.settings.ussd_step_timeout_s + 60
    stack.clock.advance(stack.settings.ussd_step_timeout_s + 1)
    late = await answer(stack, MSISDN, "1")
    assert late.ussd_op == UssdOp.PSSR_RESPONSE and "Время ожидания ответа истекло" in late.text
    assert await stack.store.dialogues.ttl(MSISDN) is None
    assert "ussd_late_answer" in await events(stack, MSISDN)


async def test_quick_answers_do_not_keep_a_dialogue_open_past_its_whole_timeout(stack: Stack) -> None:
    # The clock is real time plus what the test advances, so every answer is half a step away from
    # both deadlines: a slow machine's seconds move neither across.
    step_s, dialogue_s = stack.settings.ussd_step_timeout_s, stack.settings.ussd_dialogue_timeout_s
    gap = step_s / 2
    answers = int(dialogue_s // gap) - 1  # the last of them still half a step inside the whole timeout
    await dial(stack, MSISDN, "*111#")
    for _ in range(answers):
        stack.clock.advance(gap)
        screen = await answer(stack, MSISDN, "0")
        assert screen.ussd_op == UssdOp.USSR_REQUEST
    stack.clock.advance((dialogue_s - answers * gap + step_s) / 2)  # past the whole timeout, inside the step's
    screen = await answer(stack, MSISDN, "0")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and "истекло" in screen.text
    assert stack.store is not None
    [late] = [e for e in await stack.store.audit_trail(MSISDN, 500) if e["event"] == "ussd_late_answer"]
    assert "(dialogue timeout)" in late["detail"]


async def test_an_abort_from_the_network_ends_the_dialogue_without_a_reply(stack: Stack) -> None:
    await dial(stack, MSISDN, "*111#")
    assert stack.store is not None and stack.smsc is not None
    inbox_before = len(stack.smsc.phones.get(MSISDN).inbox)
    await send_without_reply(stack, MSISDN, "", op=0x81)
    assert await stack.store.dialogues.ttl(MSISDN) is None
    assert "ussd_aborted" in await events(stack, MSISDN)
    late = await answer(stack, MSISDN, "1")
    assert "завершён" in late.text
    assert len(stack.smsc.phones.get(MSISDN).inbox) == inbox_before + 1


async def test_a_new_dial_replaces_the_open_dialogue(stack: Stack) -> None:
    await seed(stack, MSISDN, balance_kop=500)
    await dial(stack, MSISDN, "*111#")
    screen = await dial(stack, MSISDN, "*100#")
    assert "5\u00a0₽" in screen.text
    assert stack.store is not None and await stack.store.dialogues.ttl(MSISDN) is None


async def test_an_op_meant_for_the_other_direction_ends_with_a_clear_message(stack: Stack) -> None:
    screen = await ussd(stack, MSISDN, "*100#", op=UssdOp.USSR_REQUEST)
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and "не поддерживается" in screen.text


async def test_phones_on_every_primary_walk_the_menu_side_by_side(stack: Stack, redis_url: str) -> None:
    spread = one_per_primary(redis_url)
    for n, msisdn in enumerate(spread):
        await seed(stack, msisdn, balance_kop=10000 * (n + 1))

    async def walk(msisdn: str) -> list[InboxMessage]:
        return [await dial(stack, msisdn, "*111#"), await answer(stack, msisdn, "1")]

    walks = await asyncio.gather(*(walk(m) for m in spread))
    for n, (menu, balance) in enumerate(walks):
        assert menu.ussd_op == UssdOp.USSR_REQUEST and balance.ussd_op == UssdOp.PSSR_RESPONSE
        assert f"{100 * (n + 1)}" in balance.text, balance.text


async def test_a_screen_leaves_the_outbox_submitted_with_no_receipt_to_wait_for(stack: Stack, redis_url: str) -> None:
    """A USSD screen asks for no delivery receipt: once submitted it is recorded, and nothing is
    kept to correlate a receipt that never comes (an SMS keeps its message id for one)."""
    await seed(stack, MSISDN, balance_kop=100)
    await dial(stack, MSISDN, "*100#")
    assert stack.gateway is not None and stack.store is not None
    await stack.gateway.sends_done()
    assert list((await stack.store.mt_states(MSISDN)).values()) == ["SUBMITTED"]
    assert all_keys(redis_url, "dlr:*") == []
    await stack.gateway.send(OutboundMessage(mt_id="sms-1", source="3339", destination=MSISDN, text="Код"))
    assert len(all_keys(redis_url, "dlr:*")) == 1
