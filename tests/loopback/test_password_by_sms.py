"""R1, R2, R9, P1-P4 over the real channel: phone -> SMSC simulator -> SMPP -> gateway -> Redis -> MT."""

from __future__ import annotations

import asyncio
import re

import pytest

import handlers.base
from sms_codes import checksum_ok, verify_password
from tests.support.platform import extract_password, one_per_primary, send_and_wait
from ussdgw.app.stack import Stack
from ussdgw.smpp.pdu import DeliverSm, Status
from ussdgw.store import AuditEvent

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster

def is_p1(password: str) -> bool:
    digits = sum(c.isdigit() for c in password)
    letters = sum(c.isascii() and c.isalpha() for c in password)
    return digits == 5 and 3 <= letters <= 5 and digits + letters == len(password)


async def stored_hash(stack: Stack, msisdn: str) -> str:
    assert stack.store is not None
    return (await stack.store.subscribers.fields(msisdn))["pw_hash"]


async def test_parol_to_3339_replies_from_3339_with_a_p1_password_that_verifies(stack: Stack) -> None:
    [reply] = await send_and_wait(stack, "79161234567", "3339", "ПАРОЛЬ")
    assert reply.sender == "3339"
    password = extract_password(reply.text)
    assert is_p1(password) and checksum_ok(password)
    assert verify_password(password, await stored_hash(stack, "79161234567"))


async def test_a_second_request_replaces_the_password_and_the_old_one_stops_verifying(stack: Stack) -> None:
    [first] = await send_and_wait(stack, "79161234567", "3339", "пароль")
    [second] = await send_and_wait(stack, "79161234567", "3339", "Parol")
    old, new = extract_password(first.text), extract_password(second.text)
    assert old != new
    stored = await stored_hash(stack, "79161234567")
    assert verify_password(new, stored)
    assert not verify_password(old, stored)


async def test_every_spelling_of_the_keyword_is_understood(stack: Stack) -> None:
    for i, spelling in enumerate(["ПАРОЛЬ", "пароль", " Пароль! ", "PAROL", "password", "PASSWORD"]):
        [reply] = await send_and_wait(stack, f"7916000000{i}", "3339", spelling)
        assert is_p1(extract_password(reply.text)), spelling


async def test_a_keyword_typed_with_look_alike_letters_of_the_other_alphabet_is_understood(stack: Stack) -> None:
    latin_a = "П\u0041РОЛЬ"  # ПAРОЛЬ with a Latin A, as a phone with two keyboards types it
    [reply] = await send_and_wait(stack, "79160000010", "3339", latin_a)
    assert is_p1(extract_password(reply.text))
    [archive] = await send_and_wait(stack, "79160000011", "232", "\u0420\u0415R")  # РЕR: Cyrillic Р and Е
    assert archive.sender == "232" and re.search(r"\d{4,}", archive.text), archive.text


async def test_login_to_7888_recovers_the_password_from_7888(stack: Stack) -> None:
    [reply] = await send_and_wait(stack, "79161230000", "7888", "логин")
    assert reply.sender == "7888"
    password = extract_password(reply.text)
    assert "79161230000" not in reply.text  # the login itself is never sent
    assert verify_password(password, await stored_hash(stack, "79161230000"))


async def test_unknown_keyword_gets_the_help_of_that_code(stack: Stack) -> None:
    [reply] = await send_and_wait(stack, "79161234567", "3339", "HELLO")
    assert reply.sender == "3339"
    assert "ПАРОЛЬ" in reply.text
    assert stack.store is not None
    assert "pw_hash" not in await stack.store.subscribers.fields("79161234567")


async def test_unknown_short_code_answers_with_the_list_of_codes(stack: Stack) -> None:
    [reply] = await send_and_wait(stack, "79161234567", "5555", "anything")
    assert reply.sender == "5555"
    assert "3339" in reply.text and "7888" in reply.text


async def test_cyrillic_arrives_as_ucs2_and_the_reply_goes_out_as_ucs2(stack: Stack) -> None:
    await send_and_wait(stack, "79161234567", "3339", "пароль")
    assert stack.smsc is not None
    log = stack.smsc.phones.pdu_entries("79161234567")
    submits = [e for e in log if e["command"] == "submit_sm"]
    assert submits and all(e["data_coding"] == 8 for e in submits)
    mo = stack.smsc.phones.get("79161234567").sent[-1]
    assert mo["text"] == "пароль"


async def test_a_new_password_unlocks_a_locked_account(stack: Stack) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put("79161234567", {"locked": 1, "pw_failures": 3}, AuditEvent("locked", "test"))
    assert (await stack.store.subscribers.profile("79161234567")).locked
    await send_and_wait(stack, "79161234567", "3339", "ПАРОЛЬ")
    profile = await stack.store.subscribers.fields("79161234567")
    assert profile["locked"] == "0" and profile["pw_failures"] == "0"


async def test_unknown_msisdn_gets_an_account_on_first_contact(stack: Stack) -> None:
    assert stack.store is not None
    assert await stack.store.subscribers.fields("79990000001") == {}
    await send_and_wait(stack, "79990000001", "3339", "ПАРОЛЬ")
    profile = await stack.store.subscribers.fields("79990000001")
    assert "created_at" in profile and "pw_hash" in profile


async def test_every_mo_state_change_and_mt_is_in_the_audit_stream(stack: Stack) -> None:
    await send_and_wait(stack, "79161234567", "3339", "ПАРОЛЬ")
    assert stack.store is not None
    events: list[str] = []
    for _ in range(50):  # the MT record lands just after the phone sees the SMS
        events = [e["event"] for e in await stack.store.audit_trail("79161234567")]
        if "mt_submitted" in events and "mt_receipt" in events:
            break
        assert stack.smsc is not None
        await stack.smsc.phones.wait_change(0.1)
    assert events[:2] == ["mo_received", "password_issued"]
    assert "mt_submitted" in events and "mt_receipt" in events


async def test_a_redelivered_parol_is_found_before_any_password_is_hashed(
        stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under load a redelivery of an MO still being handled must not cost another scrypt."""
    assert stack.gateway is not None and stack.store is not None
    hashed: list[str] = []
    real = handlers.base.hash_password

    def counted(password: str) -> str:
        hashed.append(password)
        return real(password)

    monkeypatch.setattr(handlers.base, "hash_password", counted)
    pdu = DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr="79161234500", destination_addr="3339",
                    data_coding=8, short_message="ПАРОЛЬ".encode("utf-16-be"), user_message_reference=7)
    assert await stack.gateway.on_deliver(pdu) == Status.ROK
    assert await stack.gateway.on_deliver(pdu) == Status.ROK  # the SMSC missed the first answer
    assert len(hashed) == 1
    trail = await stack.store.audit_trail("79161234500")
    assert [e["event"] for e in trail].count("password_issued") == 1
    assert verify_password(hashed[0], await stored_hash(stack, "79161234500"))


async def test_phones_whose_subscribers_live_on_every_primary_each_get_their_own_password(
        stack: Stack, redis_url: str) -> None:
    spread = one_per_primary(redis_url)
    replies = await asyncio.gather(*(send_and_wait(stack, m, "3339", "ПАРОЛЬ") for m in spread))
    for msisdn, [reply] in zip(spread, replies, strict=True):
        assert verify_password(extract_password(reply.text), await stored_hash(stack, msisdn))
