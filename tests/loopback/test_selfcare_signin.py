"""P1, P4-P10 over HTTP against the running stack (passwords arrive by real SMS over SMPP)."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from gateway.http_api import ensure_admin_token
from sms_codes import checksum_ok, generate_password, is_generated_shape, verify_password
from tests.support.selfcare_helpers import IVAN, IVAN2, MARIA, Api, extract_password, signed_in, sms_password, wait_sms
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import AuditEvent
from ussdgw.store.keys import GATEWAYS_ALIVE

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(api_trusted_networks="127.0.0.0/8")


async def test_a_password_from_3339_signs_in_and_the_token_opens_the_account(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("GET", "/accounts/me/balance", token=token)
    assert status == 200 and body["data"]["balance_kop"] == 25000


async def stored_hash(stack: Stack, msisdn: str) -> str:
    assert stack.store is not None
    return (await stack.store.subscribers.fields(msisdn)).get("pw_hash", "")


async def audit_events(stack: Stack, msisdn: str) -> list[dict[str, str]]:
    assert stack.store is not None
    return await stack.store.audit_trail(msisdn, count=500)


async def test_a_password_failing_the_p1_checksum_is_refused_before_the_hash_and_counts(stack: Stack, api: Api) -> None:
    await sms_password(stack, IVAN)
    bad = "12345abc"  # P1 shape, checksum 1+2+3+4+5+1+2+3 = 21, 21 % 11 = 10, not 7
    assert is_generated_shape(bad) and not checksum_ok(bad)
    status, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": bad})
    assert status == 401 and body["error"] == "wrong_password"
    failures = [e for e in await audit_events(stack, IVAN) if e["event"] == "signin"]
    assert failures[-1]["outcome"] == "wrong_password" and failures[-1]["detail"] == "checksum"
    assert stack.store is not None
    assert (await stack.store.subscribers.fields(IVAN))["pw_failures"] == "1"


async def test_three_wrong_passwords_lock_sign_in_until_a_new_sms_password(stack: Stack, api: Api) -> None:
    password = await sms_password(stack, IVAN)
    wrong = generate_password()
    codes = []
    for _ in range(3):
        status, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": wrong})
        codes.append((status, body["error"]))
    # the third locks, and reads like the others: a wrong password tells nobody the number exists
    assert codes == [(401, "wrong_password")] * 3
    status, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password})
    assert status == 423 and "ПАРОЛЬ на 3339" in body["message"]  # even the right password, until R1
    fresh = await sms_password(stack, IVAN)
    status, _ = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": fresh})
    assert status == 201


async def test_a_session_ends_after_the_idle_timeout_and_on_logout(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    assert stack.platform is not None
    assert (await api.call("GET", "/sessions/current", token=token))[0] == 200
    idle = stack.settings.session_idle_s
    stack.clock.advance(idle - 60)  # activity within 20 min keeps it alive
    assert (await api.call("GET", "/accounts/me", token=token))[0] == 200
    stack.clock.advance(idle + 1)
    status, body = await api.call("GET", "/accounts/me", token=token)
    assert status == 401 and body["error"] == "session_expired"
    assert stack.store is not None and await stack.store.sessions.get(token) is None  # gone for good
    assert (await api.call("GET", "/accounts/me", token=token))[0] == 401
    second = await signed_in(stack, api, IVAN)
    assert (await api.call("DELETE", "/sessions/current", token=second))[0] == 200
    status, body = await api.call("GET", "/accounts/me/balance", token=second)
    assert status == 401 and body["error"] == "session_expired"


async def test_sign_in_without_a_token_or_with_a_made_up_one_is_refused(stack: Stack, api: Api) -> None:
    status, body = await api.call("GET", "/accounts/me/balance", validate_request=False)
    assert status == 401 and body["error"] == "unauthorized" and "Bearer" in body["message"]
    status, body = await api.call("GET", "/accounts/me/balance", token="x" * 43)
    assert status == 401 and body["error"] == "session_expired"


async def test_header_enrichment_signs_in_from_a_trusted_network_only(stack: Stack, api: Api) -> None:
    status, body = await api.call("POST", "/sessions/network", headers={"X-MSISDN": IVAN})
    assert status == 201 and body["data"]["via"] == "network"
    assert (await api.call("GET", "/accounts/me", token=body["data"]["token"]))[1]["data"]["msisdn"] == IVAN
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(api_trusted_networks="10.0.0.0/8")
    status, body = await api.call("POST", "/sessions/network", headers={"X-MSISDN": IVAN})
    assert status == 403 and body["error"] == "not_trusted_network"
    status, body = await api.call("POST", "/sessions/network")
    assert status == 400


async def test_unknown_and_malformed_msisdns_get_clear_errors_and_create_nothing(stack: Stack, api: Api) -> None:
    status, body = await api.call("POST", "/sessions", body={"msisdn": "79990000000", "password": "a1b2c3d4e"})
    assert status == 401 and body["error"] == "wrong_password"
    status, body = await api.call("POST", "/sessions", body={"msisdn": "12ab", "password": "x"})
    assert status == 400 and body["error"] == "bad_request"
    status, body = await api.call("POST", "/sessions", raw=b"{not json", validate_request=False)
    assert status == 400 and body["error"] == "bad_request"
    assert stack.store is not None
    assert await stack.store.subscribers.fields("79990000000") == {}


async def test_sign_in_attempts_are_capped_per_hour_and_password(stack: Stack, api: Api) -> None:
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(signin_per_hour=2, signin_max_failures=10)
    await sms_password(stack, IVAN)
    statuses = [(await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": "Wrong1pass"}))[0]
                for _ in range(3)]
    assert statuses == [401, 401, 429]
    fresh = await sms_password(stack, IVAN)  # a new password starts the count afresh
    assert (await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": fresh}))[0] == 201


@contextlib.asynccontextmanager
async def client_at(stack: Stack, address: str) -> AsyncIterator[Api]:
    """The self-care API as seen from another loopback address (another client)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        yield Api(stack.endpoints["selfcare"], http)


async def test_a_strangers_wrong_passwords_never_outlive_the_victims_next_sms_password(stack: Stack,
                                                                                      api: Api) -> None:
    """21 wrong sign-ins for someone else's number: P4 locks it after 3, the stranger's client is
    refused past its window; the victim's fresh SMS password lifts the lock and every count, and
    she signs in from her own client at once (it used to be 429 for an hour)."""
    await sms_password(stack, MARIA)
    async with client_at(stack, "127.0.0.2") as stranger:
        statuses = [(await stranger.call("POST", "/sessions", body={"msisdn": MARIA, "password": "Wrong1pass"}))[0]
                    for _ in range(21)]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429
    fresh = await sms_password(stack, MARIA)
    status, body = await api.call("POST", "/sessions", body={"msisdn": MARIA, "password": fresh})
    assert status == 201, body


async def data_keys(redis: Any) -> int:
    """Keys in Redis but the gateways' heartbeat (`gateways:alive`, written by the stack's own
    recovery loop whatever the requests do)."""
    return sum([key != GATEWAYS_ALIVE.encode() async for key in redis.scan_iter(count=1000)])


async def test_a_spray_from_one_client_is_refused_before_any_number_is_touched(stack: Stack, api: Api) -> None:
    """2,000 sign-ins against 2,000 numbers from one client: the client's window (20 a minute)
    answers the first, refuses the rest with 429, and no refusal reads or writes a Redis key."""
    assert stack.store is not None
    redis = stack.store.redis
    keys_before = await data_keys(redis)
    url = f"{stack.endpoints['selfcare']}/sessions"
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    for i in range(2000):
        async with api.http.post(url, json={"msisdn": f"7900{i:07d}", "password": generate_password()}) as response:
            statuses[response.status] += 1
    elapsed = time.perf_counter() - started
    keys = await data_keys(redis) - keys_before
    refused = statuses[429]
    print(f"\nspray: 2000 sign-ins, 2000 numbers, one client, {elapsed:.1f} s: answered {statuses[401]} (401), "
          f"refused {refused} (429); Redis keys created {keys}, {keys / refused:.3f} per refused attempt")
    assert statuses == {401: 20, 429: 1980}
    assert keys == 0


async def test_all_clients_together_meet_the_overall_window(stack: Stack, api: Api) -> None:
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(api_client_attempts=5, api_attempts_overall=12)
    got = []
    for n in range(2, 6):  # four clients, five attempts each: the overall twelve run out in the third
        async with client_at(stack, f"127.0.0.{n}") as client:
            got.append([(await client.call("POST", "/sessions", body={"msisdn": "79990000000",
                                                                      "password": "x"}))[0] for _ in range(5)])
    assert got == [[401] * 5, [401] * 5, [401, 401, 429, 429, 429], [429] * 5]
    status, body = await api.call("POST", "/sessions", body={"msisdn": "79990000000", "password": "x"})
    assert status == 429 and "Повторите через" in body["message"]


async def test_unknown_numbers_no_password_and_a_wrong_one_get_one_answer_in_one_time(stack: Stack,
                                                                                     api: Api) -> None:
    """The answer and the work are the same (scrypt against a dummy hash when there is none)."""
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(api_client_attempts=100, signin_max_failures=100)
    await sms_password(stack, IVAN)  # IVAN2 has never had a password; 79990000000 is nobody's
    cases = {"unknown": "79990000000", "no password": IVAN2, "wrong password": IVAN}
    answers: dict[str, set[str]] = {kind: set() for kind in cases}
    times: dict[str, list[float]] = {kind: [] for kind in cases}
    for _ in range(5):
        for kind, number in cases.items():
            started = time.perf_counter()  # a fresh P1-shaped password each time: scrypt runs for all three
            status, body = await api.call("POST", "/sessions", body={"msisdn": number, "password": generate_password()})
            times[kind].append(time.perf_counter() - started)
            answers[kind].add(json.dumps([status, body], ensure_ascii=False))
    assert len(set.union(*answers.values())) == 1, answers
    medians = {kind: statistics.median(t) for kind, t in times.items()}
    print("\nsign-in refusal, median of 5: " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items()))
    assert min(medians.values()) > 0.5 * max(medians.values()), medians


async def test_recovery_is_refused_per_client_before_any_lookup(stack: Stack, api: Api) -> None:
    assert stack.platform is not None and stack.store is not None
    stack.platform.settings = stack.platform.settings.with_overrides(api_client_attempts=3)
    keys_before = await data_keys(stack.store.redis)
    statuses = [(await api.call("POST", "/password-recovery",
                                body={"msisdn": f"7990000000{i}", "code_word": "x", "delivery": "sms"}))[0]
                for i in range(6)]
    assert statuses == [403, 403, 403, 429, 429, 429]
    assert await data_keys(stack.store.redis) == keys_before


async def test_change_password_with_the_old_one_and_the_new_one_twice(stack: Stack, api: Api) -> None:
    password = await sms_password(stack, IVAN)
    _, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password})
    token = body["data"]["token"]
    status, _ = await api.call("PUT", "/accounts/me/password", token=token, body={
        "old_password": password, "new_password": "Lilac2024", "new_password_repeat": "Lilac2024"})
    assert status == 200
    assert (await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": "Lilac2024"}))[0] == 201
    assert (await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password}))[0] == 401


@pytest.mark.parametrize(("new", "repeat", "status", "code"), [
    ("lilac2024", "lilac2024", 400, "weak_password"),  # no upper-case letter
    ("Li1", "Li1", 400, "weak_password"),  # too short
    ("Lilac2024", "Lilac2025", 400, "password_mismatch"),
])
async def test_a_weak_or_mismatched_new_password_changes_nothing(stack: Stack, api: Api, new: str, repeat: str,
                                                                  status: int, code: str) -> None:
    password = await sms_password(stack, IVAN)
    _, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password})
    before = await stored_hash(stack, IVAN)
    got, body = await api.call("PUT", "/accounts/me/password", token=body["data"]["token"], body={
        "old_password": password, "new_password": new, "new_password_repeat": repeat})
    assert (got, body["error"]) == (status, code) and "не изменён" in body["message"]
    assert await stored_hash(stack, IVAN) == before


async def test_a_wrong_old_password_changes_nothing_and_counts_towards_the_lock(stack: Stack, api: Api) -> None:
    token = await signed_in(stack, api, IVAN)
    before = await stored_hash(stack, IVAN)
    status, body = await api.call("PUT", "/accounts/me/password", token=token, body={
        "old_password": "Nope12345", "new_password": "Lilac2024", "new_password_repeat": "Lilac2024"})
    assert status == 401 and body["error"] == "wrong_password"
    assert await stored_hash(stack, IVAN) == before
    assert stack.store is not None
    assert (await stack.store.subscribers.fields(IVAN))["pw_failures"] == "1"


async def test_code_word_recovery_sends_a_new_password_by_sms(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None
    after = stack.smsc.phones.last_seq
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": IVAN, "code_word": "Сирень", "delivery": "sms"})
    assert status == 200, body
    password = extract_password(await wait_sms(stack, IVAN, "3339", after))
    assert verify_password(password, await stored_hash(stack, IVAN))
    assert (await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password}))[0] == 201


async def test_code_word_recovery_by_e_mail_lands_in_the_simulated_mailbox(stack: Stack, api: Api) -> None:
    assert stack.post_office is not None
    after = stack.post_office.last_seq
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": IVAN, "code_word": "сирень", "delivery": "email"})
    assert status == 200, body
    [mail] = await stack.post_office.wait_mail("ivan@example.com", after, 5)
    assert verify_password(extract_password(mail.body), await stored_hash(stack, IVAN))
    # the tester's view of the same mailbox
    async with api.http.get(f"{stack.endpoints['simulator']}/api/mail/ivan@example.com") as response:
        view = await response.json()
    assert view["messages"][-1]["subject"] == mail.subject


async def test_a_wrong_code_word_changes_nothing(stack: Stack, api: Api) -> None:
    password = await sms_password(stack, IVAN)
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": IVAN, "code_word": "тюльпан", "delivery": "sms"})
    assert status == 403 and body["error"] == "wrong_code_word"
    assert verify_password(password, await stored_hash(stack, IVAN))


async def test_recovery_to_a_full_mailbox_is_reported_and_keeps_the_old_password(stack: Stack, api: Api) -> None:
    password = await sms_password(stack, IVAN)
    async with api.http.patch(f"{stack.endpoints['simulator']}/api/mail/ivan@example.com",
                              json={"state": "full"}) as response:
        assert response.status == 200
    status, body = await api.call("POST", "/password-recovery",
                                  body={"msisdn": IVAN, "code_word": "сирень", "delivery": "email"})
    assert status == 502 and body["error"] == "mail_failed" and body["details"]["smtp_code"] == 452
    assert "переполнен" in body["message"]
    assert verify_password(password, await stored_hash(stack, IVAN))
    assert any(e["event"] == "email_failed" and e["outcome"] == "mailbox_full" for e in await audit_events(stack, IVAN))


async def test_recovery_answers_an_unknown_number_as_a_wrong_code_word(stack: Stack, api: Api) -> None:
    unknown = await api.call("POST", "/password-recovery",
                             body={"msisdn": "79990000000", "code_word": "тюльпан", "delivery": "sms"})
    wrong = await api.call("POST", "/password-recovery",
                           body={"msisdn": IVAN, "code_word": "тюльпан", "delivery": "sms"})
    no_word = await api.call("POST", "/password-recovery",
                             body={"msisdn": IVAN2, "code_word": "тюльпан", "delivery": "sms"})
    assert unknown == wrong == no_word and unknown[0] == 403 and unknown[1]["error"] == "wrong_code_word"


async def test_support_resets_a_password_after_passport_and_contract_match(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None and stack.store is not None
    await stack.store.subscribers.put(IVAN, {"locked": 1, "pw_failures": 3}, AuditEvent("test", "admin"))
    admin = ensure_admin_token(stack.settings)
    after = stack.smsc.phones.last_seq
    status, body = await api.call("POST", "/admin/password-resets", token=admin, body={
        "msisdn": IVAN, "passport": "4510123456", "contract": "d-2021-0001"})
    assert status == 200, body
    password = extract_password(await wait_sms(stack, IVAN, "3339", after))
    assert (await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password}))[0] == 201
    trail = await audit_events(stack, IVAN)
    assert any(e["event"] == "password_reset" and e["channel"] == "admin" for e in trail)


async def test_support_reset_refuses_a_wrong_passport_or_a_missing_token(stack: Stack, api: Api) -> None:
    password = await sms_password(stack, IVAN)
    admin = ensure_admin_token(stack.settings)
    status, body = await api.call("POST", "/admin/password-resets", token=admin, body={
        "msisdn": IVAN, "passport": "4510 000000", "contract": "D-2021-0001"})
    assert status == 403 and body["error"] == "wrong_identity"
    request = {"msisdn": IVAN, "passport": "4510 123456", "contract": "D-2021-0001"}
    status, body = await api.call("POST", "/admin/password-resets", body=request, validate_request=False)
    assert status == 401 and body["error"] == "unauthorized"
    status, body = await api.call("POST", "/admin/password-resets", body=request, token="guess")
    assert status == 403
    assert verify_password(password, await stored_hash(stack, IVAN))


async def test_every_sign_in_step_is_audited_and_no_secret_reaches_a_log_or_the_trail(stack: Stack, api: Api) -> None:
    with capture_logs() as logs:
        password = await sms_password(stack, IVAN)
        await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": "Wrong1pass"})
        _, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password})
        token = body["data"]["token"]
        status, trail = await api.call("GET", "/accounts/me/audit", token=token)
    assert status == 200
    events = [(e["event"], e["outcome"]) for e in trail["data"]["events"]]
    assert ("signin", "wrong_password") in events and ("signin", "ok") in events
    assert all(e["channel"] for e in trail["data"]["events"])
    flat = repr(logs) + repr(trail)
    assert password not in flat and token not in flat and "Wrong1pass" not in flat


async def test_unknown_routes_and_methods_answer_json_errors(stack: Stack, api: Api) -> None:
    base = stack.endpoints["selfcare"]
    async with api.http.get(f"{base}/no-such-thing") as response:
        assert response.status == 404 and (await response.json())["error"] == "not_found"
    async with api.http.patch(f"{base}/sessions") as response:
        assert response.status == 405 and (await response.json())["error"] == "method_not_allowed"
