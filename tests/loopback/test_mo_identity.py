"""MO identity: the SMSC's redeliveries are dropped, a subscriber's new message never. A message
reference is trusted only within `mo_dedup_window_s` (a handset's 8-bit reference wraps every 256
messages, a restarted SMSC may count from 1 again); the phones of a restarted simulator go on
counting where they were."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gateway.service import Gateway
from handlers.registry import build_router
from simulator.phones import InboxMessage
from simulator.smsc import Smsc
from sms_codes import verify_password
from tests.support.platform import StoreFactory, extract_password
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.smpp.pdu import DeliverSm, Status
from ussdgw.store import Store

PHONE = "79161234501"


def parol(reference: int | None) -> DeliverSm:
    return DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=PHONE, destination_addr="3339", data_coding=8,
                     short_message="ПАРОЛЬ".encode("utf-16-be"), user_message_reference=reference)


async def issued(store: Store) -> int:
    return [e["event"] for e in await store.audit_trail(PHONE)].count("password_issued")


async def first_answer(stack: Stack, mo: DeliverSm) -> InboxMessage:
    """`mo` handed to the bound gateway: acknowledged ESME_ROK, its one reply on the phone, and
    that reply's submit recorded (so that what follows is a repeat of a finished MO)."""
    assert stack.gateway is not None and stack.smsc is not None
    after = stack.smsc.phones.last_seq
    assert await stack.gateway.on_deliver(mo) == Status.ROK
    [first] = await stack.smsc.phones.wait_inbox(PHONE, after, 10)
    await stack.gateway.sends_done()
    return first


async def test_a_reference_is_trusted_within_the_window_and_a_wrapped_one_after_it_is_a_new_mo(
        settings: Settings) -> None:
    stack = Stack(settings.with_overrides(mo_dedup_window_s=1.0))
    await stack.start()
    try:
        assert stack.gateway is not None and stack.store is not None
        assert await stack.gateway.on_deliver(parol(255)) == Status.ROK
        assert await stack.gateway.on_deliver(parol(255)) == Status.ROK  # redelivered: the same MO
        assert await issued(stack.store) == 1
        assert await stack.gateway.on_deliver(parol(0)) == Status.ROK  # the next reference: a new MO
        assert await issued(stack.store) == 2
        await asyncio.sleep(1.1)  # 256 messages later the phone's reference is 255 again
        assert await stack.gateway.on_deliver(parol(255)) == Status.ROK
        assert await issued(stack.store) == 3
    finally:
        await stack.stop()


async def test_without_a_reference_the_same_text_after_the_window_is_a_new_mo(settings: Settings) -> None:
    stack = Stack(settings.with_overrides(mo_dedup_window_s=1.0))
    await stack.start()
    try:
        assert stack.gateway is not None and stack.store is not None
        assert await stack.gateway.on_deliver(parol(None)) == Status.ROK
        assert await stack.gateway.on_deliver(parol(None)) == Status.ROK
        assert await issued(stack.store) == 1
        await asyncio.sleep(1.1)
        assert await stack.gateway.on_deliver(parol(None)) == Status.ROK
        assert await issued(stack.store) == 2
    finally:
        await stack.stop()


async def test_a_parol_repeated_after_a_simulator_restart_gets_a_new_password(
        settings: Settings, store_factory: StoreFactory, tmp_path: Path) -> None:
    state = str(tmp_path / "smsc-state.json")
    accounts = {settings.system_id: settings.password.get_secret_value()}
    first = Smsc(accounts, enquire_link_s=0, stop_grace_s=0.5, state_file=state)
    _, port = await first.start("127.0.0.1", 0)
    store = store_factory()
    gateway = Gateway(settings.with_overrides(smsc_port=port), store, build_router())
    await gateway.start()
    second: Smsc | None = None
    try:
        await gateway.wait_bound(5)
        after = first.phones.last_seq
        first.submit_mo(PHONE, "3339", "ПАРОЛЬ")
        [before] = await first.phones.wait_inbox(PHONE, after, 10)
        await first.stop()

        second = Smsc(accounts, enquire_link_s=0, state_file=state)
        await second.start("127.0.0.1", port)  # the MO waits there until the gateway binds again
        after = second.phones.last_seq
        second.submit_mo(PHONE, "3339", "ПАРОЛЬ")
        [again] = await second.phones.wait_inbox(PHONE, after, 10)
        assert extract_password(again.text) != extract_password(before.text)
        assert await issued(store) == 2
    finally:
        await gateway.stop()
        if second is not None:
            await second.stop()


async def test_without_a_reference_a_repeat_within_the_window_is_answered_like_the_first_not_applied_again(
        stack: Stack) -> None:
    """Nothing tells the subscriber asking again from a redelivery: the first answer goes out once
    more (the same password, which still verifies), and nothing is applied twice."""
    assert stack.gateway is not None and stack.store is not None and stack.smsc is not None
    phones = stack.smsc.phones
    first = await first_answer(stack, parol(None))
    assert await stack.gateway.on_deliver(parol(None)) == Status.ROK  # the same text, no reference
    [again] = await phones.wait_inbox(PHONE, first.seq, 10)
    assert again.text == first.text and again.sender == "3339"
    assert await issued(stack.store) == 1
    stored = (await stack.store.subscribers.fields(PHONE))["pw_hash"]
    assert verify_password(extract_password(first.text), stored)
    await stack.gateway.sends_done()
    # A third time: answered once more, still the same
    assert await stack.gateway.on_deliver(parol(None)) == Status.ROK
    [third] = await phones.wait_inbox(PHONE, again.seq, 10)
    assert third.text == first.text and await issued(stack.store) == 1
    await stack.gateway.sends_done()
    assert (await stack.store.outbox_depth())[0] == 0  # nothing left queued


async def test_a_redelivery_with_its_reference_is_dropped_and_its_answer_not_sent_again(stack: Stack) -> None:
    """The hostile side: what carries a reference is known for a redelivery, and a reply already
    sent is not sent twice."""
    assert stack.gateway is not None and stack.store is not None and stack.smsc is not None
    first = await first_answer(stack, parol(17))
    assert await stack.gateway.on_deliver(parol(17)) == Status.ROK
    assert await stack.smsc.phones.wait_inbox(PHONE, first.seq, 1.0) == []
    assert await issued(stack.store) == 1


async def test_any_sms_to_1234_repeated_without_a_reference_is_answered_twice_and_opens_the_archive_once(
        stack: Stack) -> None:
    assert stack.gateway is not None and stack.store is not None and stack.smsc is not None
    any_sms = DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=PHONE, destination_addr="1234",
                        short_message=b"open")
    first = await first_answer(stack, any_sms)
    assert await stack.gateway.on_deliver(any_sms) == Status.ROK
    [again] = await stack.smsc.phones.wait_inbox(PHONE, first.seq, 10)
    assert again.text == first.text
    events = [e["event"] for e in await stack.store.audit_trail(PHONE)]
    assert events.count("mo_received") == 1
