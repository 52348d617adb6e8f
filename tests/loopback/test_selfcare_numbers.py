"""N1, N3, N4 over HTTP against the running stack."""

from __future__ import annotations

from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from gateway.http_api import ensure_admin_token
from tests.support.selfcare_helpers import CORP, IVAN, IVAN2, MARIA, Api, operator_today, signed_in, sms_password
from ussdgw.app.stack import Stack
from ussdgw.logs import MSISDN_KEYS
from ussdgw.store import AuditEvent


async def profile(stack: Stack, msisdn: str) -> dict[str, str]:
    assert stack.store is not None
    return await stack.store.subscribers.fields(msisdn)


# ---- N1 ------------------------------------------------------------------------------------
async def test_a_number_is_linked_with_its_own_password_and_can_then_be_served(stack: Stack, api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    maria_password = await sms_password(stack, MARIA)
    with capture_logs() as events:
        status, body = await api.call("POST", "/accounts/me/linked", token=ivan,
                                      body={"msisdn": MARIA, "password": maria_password})
    assert status == 200, body
    numbers_logged = [k for e in events for k, v in e.items() if isinstance(v, str) and v.isdigit() and len(v) == 11]
    assert numbers_logged and set(numbers_logged) <= MSISDN_KEYS  # every number goes where the log masks it
    _, listed = await api.call("GET", "/accounts/me/linked", token=ivan)
    assert [n["msisdn"] for n in listed["data"]["numbers"]] == [MARIA]
    status, body = await api.call("POST", f"/accounts/{MARIA}/top-ups", token=ivan, body={"amount_kop": 10000})
    assert status == 200 and (await profile(stack, MARIA))["balance_kop"] == "10000"
    trail = [e["event"] for e in (await api.call("GET", f"/accounts/{MARIA}/audit", token=ivan))[1]["data"]["events"]]
    assert "linked_by" in trail and "top_up" in trail
    assert (await api.call("DELETE", f"/accounts/me/linked/{MARIA}", token=ivan))[0] == 200
    assert (await api.call("GET", f"/accounts/{MARIA}/balance", token=ivan))[0] == 403


async def test_linking_with_a_wrong_password_is_refused_and_counts_on_the_other_number(stack: Stack,
                                                                                     api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    await sms_password(stack, MARIA)
    status, body = await api.call("POST", "/accounts/me/linked", token=ivan,
                                  body={"msisdn": MARIA, "password": "Guess1234"})
    assert status == 401 and body["error"] == "wrong_password"
    assert (await api.call("GET", f"/accounts/{MARIA}/balance", token=ivan))[0] == 403
    assert (await profile(stack, MARIA))["pw_failures"] == "1"


@pytest.mark.parametrize(("number", "status", "error"), [
    (IVAN, 400, "bad_request"),  # one's own number
    ("79990000000", 401, "wrong_password"),  # as a wrong password: linking is no probe of who exists
    ("12345", 400, "bad_request"),
])
async def test_linking_oneself_an_unknown_or_malformed_number_is_refused(stack: Stack, api: Api, number: str,
                                                                         status: int, error: str) -> None:
    ivan = await signed_in(stack, api, IVAN)
    got, body = await api.call("POST", "/accounts/me/linked", token=ivan, body={"msisdn": number, "password": "x"})
    assert (got, body["error"]) == (status, error)
    assert (await api.call("GET", "/accounts/me/linked", token=ivan))[1]["data"]["numbers"] == []


# ---- N3 ------------------------------------------------------------------------------------
async def test_block_today_or_from_a_later_date_and_unblock(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    later = (operator_today(stack) + timedelta(days=10)).isoformat()
    status, body = await api.call("PUT", "/accounts/me/block", token=token, body={"from": later})
    assert status == 200 and body["data"]["state"] == "scheduled"
    assert (await api.call("PUT", "/accounts/me/block", token=token, body={"from": later}))[0] == 409
    _, account = await api.call("GET", "/accounts/me", token=token)
    assert account["data"]["state"] == "scheduled" and account["data"]["blocked_from"] == later
    assert (await api.call("DELETE", "/accounts/me/block", token=token))[0] == 200
    today = operator_today(stack).isoformat()
    status, body = await api.call("PUT", "/accounts/me/block", token=token, body={"from": today})
    assert status == 200 and body["data"]["state"] == "blocked"
    # from now on nobody is signed in as the number: the block is lifted from another way in
    status, body = await api.call("DELETE", "/accounts/me/block", token=token)
    assert (status, body["error"]) == (403, "blocked")
    other = await signed_in(stack, api, IVAN2)
    assert (await api.call("DELETE", f"/accounts/{IVAN}/block", token=other))[0] == 403  # not linked
    status, body = await api.call("POST", "/admin/unblocks", token=ensure_admin_token(stack.settings),
                                  body={"msisdn": IVAN, "passport": "4510 123456", "contract": "D-2021-0001"})
    assert status == 200, body
    assert "blocked_from" not in await profile(stack, IVAN)


@pytest.mark.parametrize("when", ["2001-01-01", "завтра", "2030-13-45", ""])
async def test_a_block_date_in_the_past_or_malformed_is_refused(stack: Stack, api: Api, when: str) -> None:
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("PUT", "/accounts/me/block", token=token, body={"from": when})
    assert status == 400 and body["error"] == "bad_request"
    assert "blocked_from" not in await profile(stack, IVAN)


# ---- N4 ------------------------------------------------------------------------------------
async def test_owner_change_takes_340_roubles_from_the_new_owner_and_the_balance_passes(stack: Stack,
                                                                                       api: Api) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put(MARIA, {"balance_kop": 50000}, AuditEvent("test_setup", "admin"))
    ivan = await signed_in(stack, api, IVAN)
    maria_password = await sms_password(stack, MARIA)
    status, body = await api.call("POST", "/accounts/me/owner-change", token=ivan,
                                  body={"new_owner_msisdn": MARIA, "password": maria_password})
    assert status == 200, body
    assert "переоформлен на Марию Смирнову." in body["message"]  # the name in the case «на» needs
    number, payer = await profile(stack, IVAN), await profile(stack, MARIA)
    assert number["owner_id"] == "p-2002" and number["owner_name"] == "Мария Смирнова"
    assert number["balance_kop"] == "25000"  # passes to the new owner, not refunded
    assert payer["balance_kop"] == str(50000 - 34000)
    assert "pw_hash" not in number  # the old owner's password no longer opens the number
    assert number["email"] == "maria@example.com" and "code_word_hash" not in number
    status, body = await api.call("GET", "/accounts/me", token=ivan)
    assert status == 401 and body["error"] == "session_expired"  # nor does the old owner's session
    holds = await stack.store.money.holds(MARIA)
    assert [h.state for h in holds.values()] == ["captured"]


async def test_owner_change_with_a_debt_is_refused_and_nothing_is_charged(stack: Stack, api: Api) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put(MARIA, {"balance_kop": 50000}, AuditEvent("test_setup", "admin"))
    ivan = await signed_in(stack, api, IVAN)
    await stack.store.subscribers.put(IVAN, {"balance_kop": -1200}, AuditEvent("test_setup", "admin"))
    maria_password = await sms_password(stack, MARIA)
    status, body = await api.call("POST", "/accounts/me/owner-change", token=ivan,
                                  body={"new_owner_msisdn": MARIA, "password": maria_password})
    assert status == 409 and body["error"] == "debt" and "12\u00a0₽" in body["message"]
    assert (await profile(stack, IVAN))["owner_id"] == "p-1001"
    assert (await profile(stack, MARIA))["balance_kop"] == "50000"


async def test_one_person_cannot_be_both_old_and_new_owner(stack: Stack, api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    other_password = await sms_password(stack, IVAN2)  # the same person's second number
    status, body = await api.call("POST", "/accounts/me/owner-change", token=ivan,
                                  body={"new_owner_msisdn": IVAN2, "password": other_password})
    assert status == 409 and body["error"] == "same_owner"
    assert (await profile(stack, IVAN2))["balance_kop"] == "1550"


async def test_owner_change_needs_340_roubles_and_the_new_owners_password(stack: Stack, api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    maria_password = await sms_password(stack, MARIA)  # balance 0
    status, body = await api.call("POST", "/accounts/me/owner-change", token=ivan,
                                  body={"new_owner_msisdn": MARIA, "password": maria_password})
    assert status == 402 and "340\u00a0₽" in body["message"]
    status, body = await api.call("POST", "/accounts/me/owner-change", token=ivan,
                                  body={"new_owner_msisdn": CORP, "password": "Wrong1234"})
    assert status == 401
    status, body = await api.call("POST", "/accounts/me/owner-change", token=ivan,
                                  body={"new_owner_msisdn": "79990000000", "password": "x"})
    assert status == 401  # as a wrong password: nothing told about a number before its owner consents
    assert (await profile(stack, IVAN))["owner_id"] == "p-1001"
    assert (await profile(stack, CORP))["balance_kop"] == "120000"
