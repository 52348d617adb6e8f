"""The access model over the real API, SMPP and Redis: each attack on linked, joined, blocked and
sold numbers refused, and the owner's own paths still open.

Ivan owns 79161234567 (IVAN) and 79161234568 (IVAN2); Maria owns 79261112233 (MARIA); Olga owns
79051234567 (OLGA).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from gateway.http_api import ensure_admin_token
from handlers.number_management import review_due
from simulator.phones import InboxMessage
from sms_codes import OPERATOR_TZ, verify_password
from tests.support.selfcare_helpers import (
    IVAN,
    IVAN2,
    MARIA,
    Api,
    extract_password,
    operator_today,
    seed,
    signed_in,
    sms_password,
)
from tests.support.ussd_helpers import dial
from ussdgw.app.stack import Stack
from ussdgw.audit_detail import parse
from ussdgw.store import AuditEvent

OLGA = "79051234567"


async def fields(stack: Stack, msisdn: str) -> dict[str, str]:
    assert stack.store is not None
    return await stack.store.subscribers.fields(msisdn)


async def trail(stack: Stack, msisdn: str) -> list[dict[str, str]]:
    assert stack.store is not None
    return await stack.store.audit_trail(msisdn, count=500)


async def link(api: Api, stack: Stack, token: str, other: str) -> None:
    password = await sms_password(stack, other)
    status, body = await api.call("POST", "/accounts/me/linked", token=token, body={"msisdn": other,
                                                                                     "password": password})
    assert status == 200, body


async def sell(stack: Stack, api: Api, token: str, number: str, to: str) -> None:
    """`number` sold to the owner of `to` (N4: 340 ₽ from `to`'s balance, consent by its password)."""
    assert stack.store is not None
    await stack.store.subscribers.put(to, {"balance_kop": 50_000}, AuditEvent("test_setup", "admin"))
    consent = await sms_password(stack, to)
    status, body = await api.call("POST", f"/accounts/{number}/owner-change", token=token,
                                  body={"new_owner_msisdn": to, "password": consent})
    assert status == 200, body


async def joined(stack: Stack, a: str, b: str) -> None:
    """`a` applies for N2 with `b` by USSD and the review (a day later) grants it."""
    assert stack.store is not None and stack.gateway is not None
    screen = await dial(stack, a, f"*111*828*1*{b}#")
    assert "принята: 2\u00a0номера" in screen.text, screen.text
    stack.clock.advance(24 * 3600)
    assert [r.state for r in await review_due(stack.store, stack.settings, send=stack.gateway.send)] == ["active"]


async def inbox_after(stack: Stack, msisdn: str, after: int, *, settle: float = 0.3) -> list[InboxMessage]:
    """What reached the phone after seq `after`, once the platform has had `settle` s to send more."""
    assert stack.smsc is not None
    await asyncio.sleep(settle)
    phone = stack.smsc.phones.phones.get(msisdn)
    return [m for m in phone.inbox if m.seq > after] if phone is not None else []


async def sms_from(stack: Stack, msisdn: str, sender: str, after: int, timeout: float = 10) -> InboxMessage:
    assert stack.smsc is not None
    phones = stack.smsc.phones
    async with asyncio.timeout(timeout):
        while True:
            for message in await phones.wait_inbox(msisdn, after, timeout):
                after = max(after, message.seq)
                if message.sender == sender and message.kind != "ussd":
                    return message


# ---- N1 + N4: a sold number leaves every grant ----------------------------------------------------
async def test_a_linked_number_once_sold_is_closed_to_the_old_holder_and_its_calls_to_the_new_owner(
        stack: Stack, api: Api) -> None:
    await seed(stack, [{"msisdn": OLGA, "owner": {"id": "p-4004", "name": "Ольга Ким", "passport": "4001 111222",
                                                  "contract": "D-2023-0009"}, "region": "77", "balance": 10}])
    ivan = await signed_in(stack, api, IVAN)
    await link(api, stack, ivan, OLGA)  # Ivan holds Olga's number: she gave him its password
    today = datetime.fromtimestamp(stack.clock.now(), OPERATOR_TZ).date()
    period = {"from": (today - timedelta(days=30)).isoformat(), "to": today.isoformat()}
    status, before = await api.call("GET", f"/accounts/{OLGA}/calls", token=ivan, params=period)
    assert status == 200 and before["data"]["records"]
    olga = await signed_in(stack, api, OLGA)
    _, grants = await api.call("GET", "/accounts/me/grants", token=olga)
    assert grants["data"]["grantees"] == [{"msisdn": IVAN, "origin": "n1", "state": "active"}]

    await sell(stack, api, olga, OLGA, MARIA)  # Olga sells the number to Maria
    for method, path, body in [("GET", f"/accounts/{OLGA}", None), ("GET", f"/accounts/{OLGA}/calls", None),
                               ("PUT", f"/accounts/{OLGA}/block", {"from": today.isoformat()}),
                               ("POST", f"/accounts/{OLGA}/owner-change",
                                {"new_owner_msisdn": IVAN, "password": "Whatever1"})]:
        status, refused = await api.call(method, path, token=ivan, body=body,
                                         params=period if path.endswith("/calls") else None)
        assert (status, refused["error"]) == (403, "forbidden"), (path, refused)
    assert (await api.call("GET", "/accounts/me/linked", token=ivan))[1]["data"]["numbers"] == []
    sold = await fields(stack, OLGA)
    assert "blocked_from" not in sold and sold["owner_id"] == "p-2002"
    assert (await api.call("GET", "/accounts/me", token=olga))[0] == 401  # the seller's session ended

    # the new owner signs in from the SIM and sees only the calls made since the number became hers
    owner = await signed_in(stack, api, OLGA)
    sold_at = float((await fields(stack, OLGA))["owner_since"])
    status, after = await api.call("GET", "/accounts/me/calls", token=owner, params=period)
    assert status == 200
    assert len(after["data"]["records"]) < len(before["data"]["records"])
    for record in after["data"]["records"]:
        at = datetime.fromisoformat(record["at"])
        at = at if at.tzinfo else at.replace(tzinfo=OPERATOR_TZ)
        assert at.timestamp() >= sold_at
    _, grants = await api.call("GET", "/accounts/me/grants", token=owner)
    assert grants["data"]["grantees"] == []


async def test_either_side_revokes_a_link_and_a_lone_end_grants_nothing(stack: Stack, api: Api) -> None:
    assert stack.store is not None
    ivan = await signed_in(stack, api, IVAN)
    await link(api, stack, ivan, MARIA)
    maria = await signed_in(stack, api, MARIA)
    status, body = await api.call("DELETE", f"/accounts/me/grants/{IVAN}", token=maria)
    assert status == 200, body
    assert (await api.call("GET", f"/accounts/{MARIA}", token=ivan))[0] == 403
    assert MARIA not in await stack.store.numbers.linked(IVAN)
    assert (await api.call("DELETE", f"/accounts/me/grants/{IVAN}", token=maria))[0] == 404
    # a crash after the granting end was written, before the holder's: nothing is granted, the owner sees it
    await stack.store.redis.sadd(f"sub:{{{MARIA}}}:linked_by", IVAN2)
    assert (await api.call("GET", f"/accounts/{MARIA}", token=await signed_in(stack, api, IVAN2)))[0] == 403
    _, grants = await api.call("GET", "/accounts/me/grants", token=maria)
    assert grants["data"]["grantees"] == [{"msisdn": IVAN2, "origin": "n1", "state": "incomplete"}]
    # and the holder's end alone (the granting end revoked, the second write lost): nothing either
    await stack.store.redis.sadd(f"sub:{{{IVAN}}}:linked", MARIA)
    assert (await api.call("GET", f"/accounts/{MARIA}", token=ivan))[0] == 403
    assert (await api.call("GET", "/accounts/me/linked", token=ivan))[1]["data"]["numbers"] == []


async def test_a_linked_holder_of_another_person_may_manage_but_not_sell_or_set_the_code_word(
        stack: Stack, api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    await link(api, stack, ivan, MARIA)
    assert (await api.call("POST", f"/accounts/{MARIA}/top-ups", token=ivan, body={"amount_kop": 500}))[0] == 200
    for method, path, body in [("POST", f"/accounts/{MARIA}/owner-change",
                                {"new_owner_msisdn": IVAN2, "password": "Whatever1"}),
                               ("PUT", f"/accounts/{MARIA}/code-word", {"code_word": "чужое"}),
                               ("PUT", f"/accounts/{MARIA}/email", {"email": "ivan@evil.example"}),
                               ("PUT", f"/accounts/{MARIA}/password", {"old_password": "x", "new_password": "Aa1aaa",
                                                                        "new_password_repeat": "Aa1aaa"}),
                               ("POST", f"/accounts/{MARIA}/linked", {"msisdn": IVAN2, "password": "x"})]:
        status, refused = await api.call(method, path, token=ivan, body=body)
        assert (status, refused["error"]) == (403, "forbidden"), (path, refused)
    profile = await fields(stack, MARIA)
    assert profile["owner_id"] == "p-2002" and profile["email"] == "maria@example.com"


# ---- N2 + N4: a sold member leaves the account; an application does not pass with the number ---------
async def test_a_sold_member_gets_no_common_password_and_the_account_ends(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None
    await joined(stack, IVAN, IVAN2)
    ivan = await signed_in(stack, api, IVAN)
    assert (await api.call("GET", f"/accounts/{IVAN2}", token=ivan))[0] == 200  # one account, no more passwords
    after = stack.smsc.phones.last_seq
    await sell(stack, api, ivan, IVAN2, MARIA)  # Ivan sells his second number to Maria
    told = await sms_from(stack, IVAN, "111", after)
    assert "отключена" in told.text and IVAN2 in told.text
    screen = await dial(stack, IVAN, "*111*828*3#")
    assert "не подключена" in screen.text
    assert (await api.call("GET", f"/accounts/{IVAN2}", token=ivan))[0] == 403
    # the new owner's number keeps no trace of the old account, and its new password is its own
    sold = await fields(stack, IVAN2)
    assert "n2_group" not in sold and "n2_state" not in sold
    password = await sms_password(stack, IVAN2)
    assert not verify_password(password, (await fields(stack, IVAN))["pw_hash"] or "x")


async def test_an_application_does_not_pass_to_a_new_owner(stack: Stack, api: Api) -> None:
    assert stack.store is not None and stack.gateway is not None
    screen = await dial(stack, IVAN, f"*111*828*1*{IVAN2}#")
    assert "принята" in screen.text
    await sell(stack, api, await signed_in(stack, api, IVAN), IVAN, MARIA)  # sold before the review
    mine = await fields(stack, IVAN)
    assert "n2_state" not in mine and "n2_numbers" not in mine
    maria_password = await sms_password(stack, IVAN)  # the new owner's password
    stack.clock.advance(24 * 3600)
    assert await review_due(stack.store, stack.settings, send=stack.gateway.send) == []
    assert verify_password(maria_password, (await fields(stack, IVAN))["pw_hash"])  # not reset by a review
    assert "n2_group" not in await fields(stack, IVAN2)


async def test_a_member_sold_meanwhile_is_not_joined_at_the_review(stack: Stack, api: Api) -> None:
    assert stack.store is not None and stack.gateway is not None
    await dial(stack, IVAN, f"*111*828*1*{IVAN2}#")
    await sell(stack, api, await signed_in(stack, api, IVAN2), IVAN2, MARIA)
    new_password = await sms_password(stack, IVAN2)
    stack.clock.advance(24 * 3600)
    [review] = await review_due(stack.store, stack.settings, send=stack.gateway.send)
    assert review.state == "rejected" and "другого владельца" in review.reason
    assert verify_password(new_password, (await fields(stack, IVAN2))["pw_hash"])


# ---- N2 end to end ---------------------------------------------------------------------------------
async def test_n2_by_the_api_members_manage_each_other_and_switching_off_tells_every_member(
        stack: Stack, api: Api) -> None:
    assert stack.store is not None and stack.gateway is not None and stack.smsc is not None
    ivan = await signed_in(stack, api, IVAN)
    status, refused = await api.call("POST", "/accounts/me/number-management", token=ivan, body={"numbers": []})
    assert status == 400 and "не меньше 2" in refused["message"]
    status, refused = await api.call("POST", "/accounts/me/number-management", token=ivan, body={"numbers": [MARIA]})
    assert status == 403 and "другого владельца" in refused["message"]
    status, body = await api.call("POST", "/accounts/me/number-management", token=ivan, body={"numbers": [IVAN2]})
    assert status == 202 and body["data"]["numbers"] == [IVAN, IVAN2]
    assert (await api.call("GET", "/accounts/me/number-management", token=ivan))[1]["data"]["state"] == "pending"
    stack.clock.advance(24 * 3600)
    await review_due(stack.store, stack.settings, send=stack.gateway.send)

    # a common password: every member signs in with it; a member manages the other without a password
    screen = await dial(stack, IVAN2, "*111*828*3#")
    assert "Общий пароль (2 номера) отправлен" in screen.text and "завершены" in screen.text
    ivan = await signed_in(stack, api, IVAN)  # R1 from a member: the common one
    common = (await fields(stack, IVAN))["pw_hash"]
    assert common == (await fields(stack, IVAN2))["pw_hash"]
    _, state = await api.call("GET", f"/accounts/{IVAN2}/number-management", token=ivan)
    assert state["data"]["state"] == "active" and state["data"]["joined"] == [IVAN]
    assert (await api.call("POST", f"/accounts/{IVAN2}/top-ups", token=ivan, body={"amount_kop": 700}))[0] == 200
    status, body = await api.call("PUT", f"/accounts/{IVAN2}/block", token=ivan,
                                  body={"from": (operator_today(stack) + timedelta(days=3)).isoformat()})
    assert status == 200 and body["data"]["state"] == "scheduled"
    _, grants = await api.call("GET", f"/accounts/{IVAN2}/grants", token=ivan)
    assert grants["data"]["grantees"] == [{"msisdn": IVAN, "origin": "n2", "state": "active"}]

    after = stack.smsc.phones.last_seq
    status, body = await api.call("DELETE", f"/accounts/{IVAN2}/number-management", token=ivan)
    assert status == 200, body
    for member in (IVAN, IVAN2):
        assert "отключена" in (await sms_from(stack, member, "111", after)).text
    assert (await api.call("GET", f"/accounts/{IVAN2}", token=ivan))[0] == 403


async def test_a_new_sms_password_for_a_member_is_the_common_one_and_says_so(stack: Stack, api: Api) -> None:
    await joined(stack, IVAN, IVAN2)
    await dial(stack, IVAN, "*111*828*3#")
    ivan2 = await signed_in(stack, api, IVAN2)
    [reply] = [m.text for m in await _password_sms(stack, IVAN)]
    assert "общий пароль" in reply and "завершены" in reply
    password = extract_password(reply)
    for member in (IVAN, IVAN2):
        assert verify_password(password, (await fields(stack, member))["pw_hash"])
    status, body = await api.call("GET", "/accounts/me", token=ivan2)  # the member's session ended with it
    assert status == 401 and body["error"] == "session_expired"
    status, body = await api.call("POST", "/sessions", body={"msisdn": IVAN2, "password": password})
    assert status == 201, body
    entry = [e for e in await trail(stack, IVAN2) if e["event"] == "password_issued"][-1]
    assert parse(entry["detail"])["actor"] == IVAN


async def _password_sms(stack: Stack, msisdn: str) -> list[InboxMessage]:
    assert stack.smsc is not None
    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(msisdn, "3339", "ПАРОЛЬ")
    return [await sms_from(stack, msisdn, "3339", after)]


# ---- N3: the blocked SIM gets nothing; its owner unblocks from another way in ----------------------------
async def test_a_blocked_number_is_refused_on_every_channel_and_unblocked_from_a_linked_one(
        stack: Stack, api: Api) -> None:
    assert stack.smsc is not None
    ivan = await signed_in(stack, api, IVAN)
    await link(api, stack, ivan, MARIA)
    maria_password = await sms_password(stack, MARIA)
    _, opened = await api.call("POST", "/sessions", body={"msisdn": MARIA, "password": maria_password})
    maria = opened["data"]["token"]
    old_hash = (await fields(stack, MARIA))["pw_hash"]
    status, body = await api.call("PUT", f"/accounts/{MARIA}/block", token=ivan,
                                  body={"from": operator_today(stack).isoformat()})
    assert status == 200 and body["data"]["state"] == "blocked"
    entry = [e for e in await trail(stack, MARIA) if e["event"] == "number_blocked"][-1]
    assert parse(entry["detail"])["actor"] == IVAN and parse(entry["detail"])["actor_channel"] == "api:n1"

    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(MARIA, "3339", "ПАРОЛЬ")  # no new password by SMS from the blocked SIM
    refusal = await sms_from(stack, MARIA, "3339", after)
    assert "заблокирован" in refusal.text and "Пароль для входа" not in refusal.text
    assert (await fields(stack, MARIA))["pw_hash"] == old_hash  # nothing issued
    screen = await dial(stack, MARIA, "*100#")
    assert "заблокирован" in screen.text
    status, body = await api.call("POST", "/sessions", body={"msisdn": MARIA, "password": maria_password})
    assert (status, body["error"]) == (403, "blocked")
    status, body = await api.call("GET", "/accounts/me", token=maria)  # her open session ended
    assert status in (401, 403)
    after = stack.smsc.phones.last_seq
    assert (await api.call("POST", "/password-requests", body={"msisdn": MARIA}))[0] == 200  # told nothing
    assert stack.store is not None
    await stack.store.subscribers.put(IVAN, {"bonus_points": 10}, AuditEvent("test_setup", "admin"))
    status, body = await api.call("POST", "/accounts/me/gifts", token=ivan, body={"to": MARIA, "points": 1})
    assert status == 202, body
    got = [m for m in await inbox_after(stack, MARIA, after) if m.kind != "ussd"]
    assert got == []  # neither the password nor the gift code reached the blocked SIM
    assert any(e["event"] == "mt_withheld" for e in await trail(stack, MARIA))

    status, body = await api.call("DELETE", f"/accounts/{MARIA}/block", token=ivan)
    assert status == 200, body
    assert "Пароль для входа" in (await _password_sms(stack, MARIA))[0].text


async def test_a_blocked_number_writing_anything_gets_the_refusal_and_never_the_help(stack: Stack, api: Api) -> None:
    """The help reply checks N3 inside its own commit (no read before it): a block from a later day
    still lets it through, one in force turns it into the refusal, audited once, nothing else sent."""
    assert stack.smsc is not None
    maria = await signed_in(stack, api, MARIA)
    tomorrow = (operator_today(stack) + timedelta(days=1)).isoformat()
    assert (await api.call("PUT", "/accounts/me/block", token=maria, body={"from": tomorrow}))[0] == 200
    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(MARIA, "5555", "HELLO")  # not blocked yet: the help
    help_reply = await sms_from(stack, MARIA, "5555", after)
    assert "заблокирован" not in help_reply.text and "Сервисные номера" in help_reply.text

    admin = ensure_admin_token(stack.settings)
    assert (await api.call("POST", "/admin/unblocks", token=admin, body={
        "msisdn": MARIA, "passport": "4612 654321", "contract": "D-2022-0107"}))[0] == 200
    maria = await signed_in(stack, api, MARIA)
    today = operator_today(stack).isoformat()
    assert (await api.call("PUT", "/accounts/me/block", token=maria, body={"from": today}))[0] == 200
    before = len(await trail(stack, MARIA))
    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(MARIA, "5555", "HELLO")
    refusal = await sms_from(stack, MARIA, "5555", after)
    assert "заблокирован" in refusal.text and "Сервисные номера" not in refusal.text
    assert [m.text for m in await inbox_after(stack, MARIA, after)] == [refusal.text]  # one answer only
    events = [e["event"] for e in (await trail(stack, MARIA))[before:]]
    assert events.count("mo_refused") == 1 and "unknown_request" not in events

    # The MMS archive's route also does nothing but its one commit: refused the same way, nothing opened.
    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(MARIA, "1234", "открой")
    refusal = await sms_from(stack, MARIA, "1234", after)
    assert "заблокирован" in refusal.text and "Архив MMS" not in refusal.text
    assert [m.text for m in await inbox_after(stack, MARIA, after)] == [refusal.text]
    events = [e["event"] for e in (await trail(stack, MARIA))[before:]]
    assert events.count("mo_refused") == 2 and "mms_archive_opened" not in events
    assert stack.store is not None and await stack.store.archives.mms_opened_at(MARIA) is None


async def test_support_unblocks_after_checking_the_owner_and_the_sim_never_can(stack: Stack, api: Api) -> None:
    maria = await signed_in(stack, api, MARIA)
    tomorrow = (operator_today(stack) + timedelta(days=1)).isoformat()
    today = operator_today(stack).isoformat()
    assert (await api.call("PUT", "/accounts/me/block", token=maria, body={"from": today}))[0] == 200
    status, _ = await api.call("DELETE", "/accounts/me/block", token=maria)
    assert status in (401, 403)
    admin = ensure_admin_token(stack.settings)
    status, body = await api.call("POST", "/admin/unblocks", token=admin,
                                  body={"msisdn": MARIA, "passport": "0000 000000", "contract": "D-2022-0107"})
    assert (status, body["error"]) == (403, "wrong_identity")
    status, body = await api.call("POST", "/admin/unblocks", token=admin,
                                  body={"msisdn": MARIA, "passport": "4612 654321", "contract": "D-2022-0107"})
    assert status == 200, body
    assert (await api.call("PUT", "/accounts/me/block", token=await signed_in(stack, api, MARIA),
                           body={"from": tomorrow}))[0] == 200


# ---- sessions end with every password change ---------------------------------------------------------
async def test_every_password_change_or_reset_ends_the_other_sessions(stack: Stack, api: Api) -> None:
    password = await sms_password(stack, MARIA)

    async def session() -> str:
        status, body = await api.call("POST", "/sessions", body={"msisdn": MARIA, "password": password})
        assert status == 201, body
        token: str = body["data"]["token"]
        return token

    async def alive(token: str) -> bool:
        return (await api.call("GET", "/accounts/me", token=token))[0] == 200

    first, second = await session(), await session()
    status, body = await api.call("PUT", "/accounts/me/password", token=first, body={
        "old_password": password, "new_password": "Novyi2024", "new_password_repeat": "Novyi2024"})
    assert status == 200 and "завершены" in body["message"]
    assert await alive(first) and not await alive(second)  # P7: the asking session alone goes on
    password = extract_password((await _password_sms(stack, MARIA))[0].text)  # R1
    assert not await alive(first)
    third = await session()
    assert stack.smsc is not None
    after = stack.smsc.phones.last_seq
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": MARIA, "code_word": "ромашка", "delivery": "sms"})
    assert status == 200 and "завершены" in body["message"]  # P8
    assert not await alive(third)
    password = extract_password((await sms_from(stack, MARIA, "3339", after)).text)
    fourth = await session()
    admin = ensure_admin_token(stack.settings)
    status, body = await api.call("POST", "/admin/password-resets", token=admin,
                                  body={"msisdn": MARIA, "passport": "4612 654321", "contract": "D-2022-0107"})
    assert status == 200  # P9
    assert not await alive(fourth)


# ---- N4 end to end: the new owner's own code word and e-mail -------------------------------------------
async def test_sale_with_fee_and_balance_then_the_new_owner_sets_code_word_and_email_and_recovers(
        stack: Stack, api: Api) -> None:
    assert stack.store is not None
    balance = int((await fields(stack, IVAN2))["balance_kop"])
    await sell(stack, api, await signed_in(stack, api, IVAN2), IVAN2, MARIA)  # Ivan sells his second number
    sold = await fields(stack, IVAN2)
    assert sold["owner_id"] == "p-2002" and int(sold["balance_kop"]) == balance
    assert int((await fields(stack, MARIA))["balance_kop"]) == 50_000 - 34_000
    assert "code_word_hash" not in sold and "pw_hash" not in sold
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": IVAN2, "code_word": "сирень", "delivery": "sms"})
    assert status == 403  # no code word of the previous owner's works

    owner = await signed_in(stack, api, IVAN2)  # the new owner, from the SIM
    assert (await api.call("PUT", "/accounts/me/code-word", token=owner, body={"code_word": "x"}))[0] == 400
    assert (await api.call("PUT", "/accounts/me/email", token=owner, body={"email": "not-an-address"}))[0] == 400
    status, body = await api.call("PUT", "/accounts/me/code-word", token=owner, body={"code_word": "Василёк"})
    assert status == 200, body
    status, body = await api.call("PUT", "/accounts/me/email", token=owner, body={"email": "maria.new@example.com"})
    assert status == 200, body
    _, account = await api.call("GET", "/accounts/me", token=owner)
    assert account["data"]["code_word_set"] and account["data"]["email"] == "maria.new@example.com"
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": IVAN2, "code_word": " василёк ", "delivery": "sms"})
    assert status == 200, body
    assert (await api.call("GET", "/accounts/me", token=owner))[0] == 401  # recovery ended the session


# ---- P10: an act on another number names who did it -------------------------------------------------
async def test_acts_on_another_number_are_audited_with_the_actor_and_the_grant(stack: Stack, api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    await link(api, stack, ivan, MARIA)
    today = operator_today(stack)
    period = {"from": (today - timedelta(days=7)).isoformat(), "to": today.isoformat()}
    assert (await api.call("POST", f"/accounts/{MARIA}/calls/email", token=ivan, body=period))[0] == 200
    assert (await api.call("POST", f"/accounts/{MARIA}/top-ups", token=ivan, body={"amount_kop": 100}))[0] == 200
    assert (await api.call("PUT", f"/accounts/{MARIA}/block", token=ivan,
                           body={"from": (today + timedelta(days=2)).isoformat()}))[0] == 200
    by_ivan = {e["event"]: parse(e["detail"]) for e in await trail(stack, MARIA)
               if parse(e["detail"]).get("actor") == IVAN}
    for event in ("linked_by", "call_detail", "top_up", "number_blocked"):
        assert event in by_ivan, (event, list(by_ivan))
    assert by_ivan["call_detail"]["actor_channel"] == "api:n1" and by_ivan["call_detail"]["via"] == "email"
    # her own acts stay hers: no actor on what Maria does to her own number
    maria = await signed_in(stack, api, MARIA)
    assert (await api.call("DELETE", "/accounts/me/block", token=maria))[0] == 200
    [own] = [e for e in await trail(stack, MARIA) if e["event"] == "number_unblocked"]
    assert "actor" not in parse(own["detail"])


async def test_a_member_sold_out_of_three_leaves_and_the_common_password_no_longer_reaches_it(
        stack: Stack, api: Api) -> None:
    assert stack.store is not None and stack.gateway is not None and stack.smsc is not None
    third = "79161234569"
    await seed(stack, [{"msisdn": third, "owner": {"id": "p-1001", "name": "Иван Петров", "passport": "4510 123456",
                                                   "contract": "D-2021-0003"}, "region": "77"}])
    screen = await dial(stack, IVAN, f"*111*828*1*{IVAN2}*{third}#")
    assert "принята: 3\u00a0номера" in screen.text, screen.text
    stack.clock.advance(24 * 3600)
    await review_due(stack.store, stack.settings, send=stack.gateway.send)
    after = stack.smsc.phones.last_seq
    await sell(stack, api, await signed_in(stack, api, IVAN2), IVAN2, MARIA)
    assert IVAN2 in (await sms_from(stack, IVAN, "111", after)).text  # the head is told who left
    assert (await fields(stack, IVAN))["n2_numbers"] == f"{IVAN},{third}"  # the other two go on together
    screen = await dial(stack, third, "*111*828*3#")
    assert "Общий пароль (2 номера)" in screen.text, screen.text
    common = (await fields(stack, third))["pw_hash"]
    assert (await fields(stack, IVAN))["pw_hash"] == common
    assert (await fields(stack, IVAN2)).get("pw_hash") != common
    ivan = await signed_in(stack, api, IVAN)
    assert (await api.call("GET", f"/accounts/{third}", token=ivan))[0] == 200
    assert (await api.call("GET", f"/accounts/{IVAN2}", token=ivan))[0] == 403
