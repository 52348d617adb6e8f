"""M1-M6 over HTTP against the running stack: balance, top-up, tariffs, services, call detail, gifts."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta

import pytest

from gateway.http_api import ensure_admin_token
from tests.support.platform import one_per_primary
from tests.support.selfcare_helpers import (
    CORP,
    IVAN,
    IVAN2,
    MARIA,
    Api,
    extract_code,
    operator_today,
    seed,
    signed_in,
    wait_sms,
)
from ussdgw.app.stack import Stack
from ussdgw.store import AuditEvent

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster


async def profile(stack: Stack, msisdn: str) -> dict[str, str]:
    assert stack.store is not None
    return await stack.store.subscribers.fields(msisdn)


async def give_points(stack: Stack, msisdn: str, points: int) -> None:
    assert stack.store is not None
    await stack.store.subscribers.put(msisdn, {"bonus_points": points}, AuditEvent("test_setup", "admin"))


# ---- M1 / M2 -------------------------------------------------------------------------------
async def test_balance_and_top_up_work_at_a_zero_balance(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, MARIA)  # balance 0
    status, body = await api.call("GET", "/accounts/me/balance", token=token)
    assert status == 200 and body["data"]["balance_kop"] == 0
    status, body = await api.call("POST", "/accounts/me/top-ups", token=token, body={"amount_kop": 50000},
                                  headers={"Idempotency-Key": "pay-1"})
    assert status == 200 and body["data"]["balance_kop"] == 50000 and body["data"]["bonus_points_added"] == 50
    again = await api.call("POST", "/accounts/me/top-ups", token=token, body={"amount_kop": 50000},
                           headers={"Idempotency-Key": "pay-1"})
    assert again == (status, body)  # the retried payment gets the first answer and is not paid in twice
    assert (await profile(stack, MARIA))["balance_kop"] == "50000"


@pytest.mark.parametrize("amount", [-100, 0, "abc", "12.5", 1.5, None, 10**12])
async def test_negative_or_non_numeric_top_ups_are_refused_and_change_nothing(stack: Stack, api: Api,
                                                                              amount: object) -> None:
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("POST", "/accounts/me/top-ups", token=token, body={"amount_kop": amount})
    assert status == 400 and body["error"] == "bad_request"
    assert (await profile(stack, IVAN))["balance_kop"] == "25000"


async def test_another_subscribers_account_is_out_of_reach(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("POST", f"/accounts/{MARIA}/top-ups", token=token, body={"amount_kop": 100})
    assert status == 403 and "Мои номера" in body["message"]
    status, body = await api.call("GET", f"/accounts/{MARIA}/balance", token=token)
    assert status == 403


# ---- M3 ------------------------------------------------------------------------------------
async def test_tariff_list_and_switch_at_once(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("GET", "/accounts/me/tariffs", token=token)
    assert status == 200 and body["data"]["current"] == "smart"
    assert all(t["description"] for t in body["data"]["tariffs"])
    status, body = await api.call("PUT", "/accounts/me/tariff", token=token, body={"tariff_id": "tarifische"})
    assert status == 200, body
    assert (await profile(stack, IVAN))["tariff"] == "tarifische"
    assert (await profile(stack, IVAN))["balance_kop"] == "15000"  # 250 ₽ - 100 ₽ switch price


async def test_a_paid_switch_at_zero_balance_is_refused_with_the_reason(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, MARIA)
    status, body = await api.call("PUT", "/accounts/me/tariff", token=token, body={"tariff_id": "smart"})
    assert status == 402 and body["error"] == "insufficient_funds" and "положительный баланс" in body["message"]
    assert (await profile(stack, MARIA))["tariff"] == "basic"
    status, body = await api.call("PUT", "/accounts/me/tariff", token=token, body={"tariff_id": "no-such"})
    assert status == 404


# ---- M4 ------------------------------------------------------------------------------------
async def test_services_on_and_off_and_autopay_tops_up_when_billing_drains_the_balance(stack: Stack,
                                                                                       api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("PUT", "/accounts/me/services/autopay", token=token,
                                  body={"params": {"amount_kop": 30000, "threshold_kop": 0}})
    assert status == 200, body
    admin = ensure_admin_token(stack.settings)
    status, body = await api.call("POST", "/admin/charges", token=admin, body={"msisdn": IVAN, "amount_kop": 26000})
    assert status == 200 and body["data"]["autopaid_kop"] == 30000
    assert (await profile(stack, IVAN))["balance_kop"] == str(25000 - 26000 + 30000)
    _, body = await api.call("GET", "/accounts/me/services", token=token)
    assert {s["id"]: s["enabled"] for s in body["data"]["services"]}["autopay"] is True
    assert (await api.call("DELETE", "/accounts/me/services/autopay", token=token))[0] == 200
    assert (await api.call("DELETE", "/accounts/me/services/autopay", token=token))[0] == 409
    assert (await api.call("PUT", "/accounts/me/services/teleport", token=token))[0] == 404


async def test_easy_payment_needs_the_service_and_the_money(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    pay = {"merchant": "Кинотеатр", "amount_kop": 5000}
    assert (await api.call("POST", "/accounts/me/payments", token=token, body=pay))[0] == 403
    assert (await api.call("PUT", "/accounts/me/services/easy_pay", token=token))[0] == 200
    status, body = await api.call("POST", "/accounts/me/payments", token=token, body=pay)
    assert status == 200 and body["data"]["balance_kop"] == 20000
    status, _ = await api.call("POST", "/accounts/me/payments", token=token, body={**pay, "amount_kop": 900000})
    assert status == 402 and (await profile(stack, IVAN))["balance_kop"] == "20000"


async def test_what_a_subscriber_types_stays_one_field_of_the_audit_detail(stack: Stack, api: Api) -> None:
    """A merchant named like more fields (`x=1 by=admin`), with a bidi override: the audit keeps it as
    one JSON-quoted field, nothing unprintable in the stored line, and the API hands the fields back."""
    token = await signed_in(stack, api, IVAN)
    assert (await api.call("PUT", "/accounts/me/services/easy_pay", token=token))[0] == 200
    merchant = "Кино\u0085 x=1 by=admin\u202e!"
    status, _ = await api.call("POST", "/accounts/me/payments", token=token,
                               body={"merchant": merchant, "amount_kop": 100})
    assert status == 200
    _, trail = await api.call("GET", "/accounts/me/audit", token=token)
    [paid] = [e for e in trail["data"]["events"] if e["event"] == "easy_payment"]
    assert paid["fields"] == {"amount_kop": "100", "merchant": merchant}
    assert paid["detail"].isprintable() and paid["detail"].startswith('amount_kop=100 merchant="Кино\\u0085 x=1')
    assert stack.store is not None
    await stack.store.audit(IVAN, AuditEvent("probe\n", "api\x00", "ok", "line\nbreak\rnext\x1b[2J"))
    [probe] = [e for e in await stack.store.audit_trail(IVAN, count=5) if e["event"].startswith("probe")]
    assert all(value.isprintable() for value in probe.values()) and probe["detail"] == "line\\u000abreak" \
        "\\u000dnext\\u001b[2J"


async def test_locator_shows_a_subscriber_only_with_their_consent(stack: Stack, api: Api) -> None:
    ivan, maria = await signed_in(stack, api, IVAN), await signed_in(stack, api, MARIA)
    assert (await api.call("GET", f"/accounts/me/locator/{MARIA}", token=ivan))[0] == 403  # no service yet
    assert (await api.call("PUT", "/accounts/me/services/locator", token=ivan))[0] == 200
    status, body = await api.call("GET", f"/accounts/me/locator/{MARIA}", token=ivan)
    assert status == 403 and body["error"] == "no_consent"
    assert (await api.call("PUT", f"/accounts/me/locator/consents/{IVAN}", token=maria))[0] == 200
    status, body = await api.call("GET", f"/accounts/me/locator/{MARIA}", token=ivan)
    assert status == 200 and {"lat", "lon", "accuracy_m"} <= set(body["data"])
    assert (await api.call("DELETE", f"/accounts/me/locator/consents/{IVAN}", token=maria))[0] == 200
    assert (await api.call("GET", f"/accounts/me/locator/{MARIA}", token=ivan))[0] == 403


async def test_parental_control_blacklists_numbers_for_a_linked_childs_number(stack: Stack, api: Api) -> None:
    ivan = await signed_in(stack, api, IVAN)
    child_password = extract_password_of(await sms(stack, MARIA))
    assert (await api.call("PUT", "/accounts/me/services/parental", token=ivan))[0] == 200
    path = f"/accounts/me/parental/{MARIA}/blacklist/79005553535"
    status, body = await api.call("PUT", path, token=ivan)
    assert status == 403 and "Мои номера" in body["message"]  # the child's number is not linked yet
    assert (await api.call("POST", "/accounts/me/linked", token=ivan,
                           body={"msisdn": MARIA, "password": child_password}))[0] == 200
    assert (await api.call("PUT", path, token=ivan))[0] == 200
    status, body = await api.call("GET", f"/accounts/me/parental/{MARIA}", token=ivan)
    assert status == 200 and body["data"]["blacklist"] == ["79005553535"] and body["data"]["balance_kop"] == 0


# ---- M5 ------------------------------------------------------------------------------------
async def test_call_detail_online_for_up_to_six_months(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    today = operator_today(stack)
    status, body = await api.call("GET", "/accounts/me/calls", token=token,
                                  params={"from": (today - timedelta(days=150)).isoformat(), "to": today.isoformat()})
    assert status == 200 and len(body["data"]["records"]) > 100
    assert body["data"]["total_cost_kop"] == sum(r["cost_kop"] for r in body["data"]["records"])
    status, body = await api.call("GET", "/accounts/me/calls", token=token,
                                  params={"from": (today - timedelta(days=200)).isoformat(), "to": today.isoformat()})
    assert status == 400 and "6 месяцев" in body["message"]
    status, _ = await api.call("GET", "/accounts/me/calls", token=token, params={"from": "вчера", "to": "x"})
    assert status == 400


async def test_call_detail_by_e_mail_arrives_as_csv_and_an_unknown_address_is_reported(stack: Stack,
                                                                                      api: Api) -> None:
    assert stack.post_office is not None
    token = await signed_in(stack, api, IVAN)
    period = {"from": (operator_today(stack) - timedelta(days=30)).isoformat(), "to": operator_today(stack).isoformat()}
    after = stack.post_office.last_seq
    status, body = await api.call("POST", "/accounts/me/calls/email", token=token, body=period)
    assert status == 200, body
    [mail] = await stack.post_office.wait_mail("ivan@example.com", after, 5)
    [attachment] = mail.attachments
    assert attachment["filename"] == "detail.csv" and attachment["text"].count("\n") == body["data"]["records"] + 1
    from simulator.mailbox import MailboxState

    stack.post_office.box("ivan@example.com").state = MailboxState.UNKNOWN
    status, body = await api.call("POST", "/accounts/me/calls/email", token=token, body=period)
    assert status == 502 and body["details"]["smtp_code"] == 550 and "не существует" in body["message"]


# ---- M6 ------------------------------------------------------------------------------------
async def test_a_gift_reaches_the_recipient_only_after_the_sms_code_is_entered(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None
    await give_points(stack, IVAN, 100)
    ivan, maria = await signed_in(stack, api, IVAN), await signed_in(stack, api, MARIA)
    after = stack.smsc.phones.last_seq
    status, body = await api.call("POST", "/accounts/me/gifts", token=ivan, body={"to": MARIA, "points": 30})
    assert status == 202, body
    code = extract_code(await wait_sms(stack, MARIA, "3339", after))
    assert (await profile(stack, IVAN))["bonus_points"] == "70"
    assert (await profile(stack, MARIA)).get("bonus_points", "0") == "0"  # not before the code
    status, body = await api.call("POST", "/accounts/me/gifts/accept", token=maria, body={"code": code})
    assert status == 200 and body["data"]["points"] == 30
    assert (await profile(stack, MARIA))["bonus_points"] == "30"
    status, _ = await api.call("POST", "/accounts/me/gifts/accept", token=maria, body={"code": code})
    assert status == 403  # a code works once
    assert (await profile(stack, MARIA))["bonus_points"] == "30"
    _, sent = await api.call("GET", "/accounts/me/gifts", token=ivan)
    assert [g["state"] for g in sent["data"]["sent"]] == ["captured"]


@pytest.mark.parametrize(("to", "points", "status", "error"), [
    (IVAN, 10, 400, "bad_request"),  # to self
    (MARIA, 500, 402, "insufficient_funds"),  # above the points there are
    (MARIA, -5, 400, "bad_request"),
    (MARIA, "много", 400, "bad_request"),
    ("79990000000", 10, 404, "unknown_subscriber"),
])
async def test_bad_gifts_are_refused_and_move_no_points(stack: Stack, api: Api, to: str, points: object,
                                                        status: int, error: str) -> None:
    await give_points(stack, IVAN, 100)
    token = await signed_in(stack, api, IVAN)
    got, body = await api.call("POST", "/accounts/me/gifts", token=token, body={"to": to, "points": points})
    assert (got, body["error"]) == (status, error)
    assert (await profile(stack, IVAN))["bonus_points"] == "100"
    assert (await profile(stack, MARIA)).get("bonus_points", "0") == "0"


async def test_a_wrong_or_late_code_credits_nothing_and_a_late_one_returns_the_points(stack: Stack,
                                                                                     api: Api) -> None:
    assert stack.smsc is not None and stack.platform is not None
    await give_points(stack, IVAN, 100)
    stack.platform.settings = stack.platform.settings.with_overrides(gift_code_ttl_s=300)
    ivan, maria = await signed_in(stack, api, IVAN), await signed_in(stack, api, MARIA)
    after = stack.smsc.phones.last_seq
    await api.call("POST", "/accounts/me/gifts", token=ivan, body={"to": MARIA, "points": 40})
    code = extract_code(await wait_sms(stack, MARIA, "3339", after))
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    status, body = await api.call("POST", "/accounts/me/gifts/accept", token=maria, body={"code": wrong})
    assert status == 403 and body["error"] == "wrong_code"
    stack.clock.advance(301)  # the session (20 min) outlives the code
    status, body = await api.call("POST", "/accounts/me/gifts/accept", token=maria, body={"code": code})
    assert status == 410 and body["error"] == "expired"
    assert (await profile(stack, IVAN))["bonus_points"] == "100"
    assert (await profile(stack, MARIA)).get("bonus_points", "0") == "0"


async def test_fifty_parallel_gifts_and_top_ups_leave_the_totals_exact(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None and stack.store is not None
    people = [IVAN, IVAN2, MARIA]
    for msisdn in people:
        await give_points(stack, msisdn, 1000)
    before = {m: await profile(stack, m) for m in people}
    tokens = {m: await signed_in(stack, api, m) for m in people}
    rng = random.Random(7)
    gifts = []
    for _ in range(50):
        sender, recipient = rng.sample(people, 2)
        gifts.append((sender, recipient, rng.randint(1, 60)))
    top_ups = [(rng.choice(people), rng.randint(100, 300_000), f"t{i}") for i in range(50)]
    after = stack.smsc.phones.last_seq

    async def gift(sender: str, recipient: str, points: int) -> int:
        return (await api.call("POST", f"/accounts/{sender}/gifts", token=tokens[sender],
                               body={"to": recipient, "points": points}))[0]

    async def top_up(msisdn: str, amount: int, key: str) -> int:
        return (await api.call("POST", "/accounts/me/top-ups", token=tokens[msisdn], body={"amount_kop": amount},
                               headers={"Idempotency-Key": key}))[0]

    statuses = await asyncio.gather(*(gift(*g) for g in gifts), *(top_up(*t) for t in top_ups))
    assert statuses[50:] == [200] * 50
    offered = statuses[:50].count(202)
    assert offered == 50, statuses[:50]

    codes: dict[str, list[str]] = {m: [] for m in people}
    async with asyncio.timeout(20):
        while sum(map(len, codes.values())) < offered:
            await stack.smsc.phones.wait_change(1)
            for m in people:
                codes[m] = [extract_code(s.text) for s in stack.smsc.phones.get(m).inbox
                            if s.seq > after and s.sender == "3339" and "Код:" in s.text]
    accepted = await asyncio.gather(*(api.call("POST", f"/accounts/{m}/gifts/accept", token=tokens[m],
                                               body={"code": c}) for m in people for c in codes[m]))
    assert [s for s, _ in accepted] == [200] * offered

    admin = ensure_admin_token(stack.settings)
    status, body = await api.call("POST", "/admin/holds/recover", token=admin)
    assert status == 200 and body["data"]["refunded"] == 0
    final = {m: await profile(stack, m) for m in people}
    paid_in = {m: sum(a for who, a, _ in top_ups if who == m) for m in people}
    accrued = sum(a // 1000 for _, a, _ in top_ups)
    assert sum(int(final[m]["bonus_points"]) for m in people) == 3000 + accrued
    for m in people:
        assert int(final[m]["balance_kop"]) == int(before[m]["balance_kop"]) + paid_in[m]
        gained = sum(p for _, r, p in gifts if r == m) - sum(p for s, _, p in gifts if s == m)
        own_accrual = sum(a // 1000 for who, a, _ in top_ups if who == m)
        assert int(final[m]["bonus_points"]) == 1000 + gained + own_accrual


async def sms(stack: Stack, msisdn: str) -> str:
    from tests.support.platform import send_and_wait

    [reply] = await send_and_wait(stack, msisdn, "3339", "ПАРОЛЬ")
    return reply.text


def extract_password_of(text: str) -> str:
    from tests.support.selfcare_helpers import extract_password

    return extract_password(text)


def _unused() -> list[str]:
    return [CORP]


# ---- Idempotency-Key: a POST that moves money or points is safe to retry -------------------------
async def test_a_gift_retried_with_its_idempotency_key_is_given_once_and_answered_as_the_first(
        stack: Stack, api: Api) -> None:
    assert stack.smsc is not None and stack.store is not None
    await give_points(stack, IVAN, 100)
    ivan = await signed_in(stack, api, IVAN)
    after = stack.smsc.phones.last_seq
    key = {"Idempotency-Key": "gift-2026-11-30-1"}
    first = await api.call("POST", "/accounts/me/gifts", token=ivan, body={"to": MARIA, "points": 10}, headers=key)
    again = await api.call("POST", "/accounts/me/gifts", token=ivan, body={"to": MARIA, "points": 10}, headers=key)
    assert first[0] == 202 and again == first  # the same gift id, nothing held twice
    other = await api.call("POST", "/accounts/me/gifts", token=ivan, body={"to": MARIA, "points": 11}, headers=key)
    assert other[0] == 422 and other[1]["details"]["field"] == "Idempotency-Key"
    assert "Idempotency-Key" in other[1]["message"]
    assert (await profile(stack, IVAN))["bonus_points"] == "90"
    assert len(await stack.store.money.holds(IVAN)) == 1
    await wait_sms(stack, MARIA, "3339", after)
    await asyncio.sleep(0.3)
    codes = [m for m in stack.smsc.phones.get(MARIA).inbox if m.seq > after and "Код:" in m.text]
    assert len(codes) == 1


async def test_every_post_that_moves_money_or_points_takes_an_idempotency_key(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    calls = [("/accounts/me/top-ups", {"amount_kop": 10000}, {"amount_kop": 10001}),
             ("/accounts/me/payments", {"merchant": "mts", "amount_kop": 100}, {"merchant": "mts", "amount_kop": 101}),
             ("/accounts/me/gifts", {"to": MARIA, "points": 1}, {"to": MARIA, "points": 2}),
             ("/accounts/me/gifts/accept", {"code": "000000"}, {"code": "000001"}),
             ("/accounts/me/owner-change", {"new_owner_msisdn": MARIA, "password": "Wrong1x"},
              {"new_owner_msisdn": MARIA, "password": "Wrong2x"})]
    for i, (path, body, other) in enumerate(calls):
        key = {"Idempotency-Key": f"k-{i}"}
        first = await api.call("POST", path, token=token, body=body, headers=key)
        assert await api.call("POST", path, token=token, body=body, headers=key) == first, path
        reused = await api.call("POST", path, token=token, body=other, headers=key)
        assert reused[0] == 422 and reused[1]["details"]["field"] == "Idempotency-Key", path
        bad = await api.call("POST", path, token=token, body=body, headers={"Idempotency-Key": "a key"})
        assert bad[0] == 400 and bad[1]["details"]["field"] == "Idempotency-Key", path


async def test_top_ups_and_gifts_between_subscribers_on_every_primary_add_up(stack: Stack, api: Api,
                                                                             redis_url: str) -> None:
    """On a cluster each of these lives on another primary: a gift's hold, its code and its capture
    cross shards, and each top-up lands on its own."""
    assert stack.smsc is not None
    spread = one_per_primary(redis_url)
    await seed(stack, [{"msisdn": m, "owner": {"id": f"p-{m}", "name": "Абонент"}, "region": "77", "balance": 0,
                        "tariff": "basic"} for m in spread])
    tokens = [await signed_in(stack, api, m) for m in spread]
    for n, token in enumerate(tokens):
        status, body = await api.call("POST", "/accounts/me/top-ups", token=token, body={"amount_kop": 10000},
                                      headers={"Idempotency-Key": f"spread-{n}"})
        assert status == 200 and body["data"]["bonus_points_added"] == 10, body
    for n, (giver, token) in enumerate(zip(spread, tokens, strict=True)):
        taker = spread[(n + 1) % len(spread)]
        after = stack.smsc.phones.last_seq
        status, body = await api.call("POST", "/accounts/me/gifts", token=token, body={"to": taker, "points": 4})
        assert status == 202, (giver, body)
        code = extract_code(await wait_sms(stack, taker, "3339", after))
        status, body = await api.call("POST", "/accounts/me/gifts/accept", token=tokens[(n + 1) % len(spread)],
                                      body={"code": code})
        assert status == 200 and body["data"]["points"] == 4, body
    assert [(await profile(stack, m))["bonus_points"] for m in spread] == ["10"] * len(spread)
    assert [(await profile(stack, m))["balance_kop"] for m in spread] == ["10000"] * len(spread)
