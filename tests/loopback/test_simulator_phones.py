"""The simulator's phones over its HTTP API: faults decide each MT's fate (SPEC D1), the receipt says
so and the gateway records it; the event stream shows every change; the clock can be fast-forwarded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from simulator.phones import INBOX_KEEP, NETWORK_LOG_SIZE, Power
from tests.support.hostile import Raw, send
from tests.support.platform import send_and_wait
from ussdgw.app.stack import Stack
from ussdgw.config import Settings

PHONE = "79161234567"


@pytest.fixture
async def sim(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(stack.endpoints["simulator"]) as session:
        await call(session, "POST", "/api/phones", {"msisdn": PHONE}, status=201)  # a look makes no phone
        yield session


async def call(sim: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any] | None = None,
               status: int = 200) -> Any:
    async with sim.request(method, path, json=body if body is not None or method == "GET" else {}) as response:
        data = await response.json()
        assert response.status == status, data
        return data


async def mt_fate(sim: aiohttp.ClientSession, msisdn: str, sender: str, *, wait_final: bool = True) -> dict[str, Any]:
    """The phone's newest network-log entry from `sender`, once it has a final state."""
    async with sim.get(f"/api/phones/{msisdn}/events") as response:
        async for event, data in sse_events(response):
            entries = data["network"] if event == "snapshot" else [data] if event == "network" else []
            for entry in reversed(entries):
                if entry["sender"] == sender and (not wait_final or entry["state"] != "ENROUTE"):
                    return dict(entry)
    raise AssertionError("event stream ended")


async def sse_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    event = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            yield event, json.loads(line[5:].strip())


async def recorded_state(stack: Stack, msisdn: str, final: set[str]) -> str | None:
    """The MT state the gateway recorded in Redis (the last one it wrote), once it is final."""
    assert stack.store is not None and stack.smsc is not None
    for _ in range(100):
        trail = await stack.store.audit_trail(msisdn)
        receipts = [e["detail"] for e in trail if e["event"] == "mt_receipt"]
        for detail in reversed(receipts):
            state = detail.split("state=")[1].split()[0]
            if state in final:
                return state
        await stack.smsc.phones.wait_change(0.1)
    return None


async def test_mt_to_a_switched_off_phone_is_held_then_expires_and_the_gateway_records_it(
        stack: Stack, sim: aiohttp.ClientSession) -> None:
    await call(sim, "PATCH", f"/api/phones/{PHONE}", {"power": "off"})
    await call(sim, "POST", f"/api/phones/{PHONE}/sms", {"to": "3339", "text": "ПАРОЛЬ"}, status=202)
    held = await mt_fate(sim, PHONE, "3339", wait_final=False)
    assert held["state"] == "ENROUTE" and held["reason"] == "absent" and held["held_until"] is not None
    assert held["parts"] == 2  # the password SMS is two UCS2 parts, held as one message

    result = await call(sim, "POST", "/api/clock/advance", {"seconds": 601})
    assert result["expired"] == 1
    expired = await mt_fate(sim, PHONE, "3339")
    assert expired["state"] == "EXPIRED" and expired["reason"] == "expired"
    assert await recorded_state(stack, PHONE, {"EXPIRED"}) == "EXPIRED"
    phone = await call(sim, "GET", f"/api/phones/{PHONE}")
    assert phone["held_count"] == 0 and phone["inbox_count"] == 0


async def test_a_phone_switched_back_on_in_time_receives_what_was_held(
        stack: Stack, sim: aiohttp.ClientSession) -> None:
    await call(sim, "PATCH", f"/api/phones/{PHONE}", {"power": "airplane"})
    await call(sim, "POST", f"/api/phones/{PHONE}/sms", {"to": "3339", "text": "HELLO"}, status=202)
    assert (await mt_fate(sim, PHONE, "3339", wait_final=False))["state"] == "ENROUTE"
    await call(sim, "POST", "/api/clock/advance", {"seconds": 60})
    await call(sim, "PATCH", f"/api/phones/{PHONE}", {"power": "on"})
    landed = await mt_fate(sim, PHONE, "3339")
    assert landed["state"] == "DELIVERED" and landed["inbox_seq"] is not None
    inbox = await call(sim, "GET", f"/api/phones/{PHONE}/inbox")
    assert [m["sender"] for m in inbox["messages"]] == ["3339"]
    assert await recorded_state(stack, PHONE, {"DELIVERED"}) == "DELIVERED"


@pytest.mark.parametrize(("faults", "reason", "err"), [
    ({"inbox_full": True}, "inbox_full", 8),
    ({"blocked_senders": ["3339"]}, "anti_spam", 10),
    ({"unknown_number": True}, "unknown_number", 1),
])
async def test_each_fault_makes_the_mt_undeliverable_with_its_reason(
        stack: Stack, sim: aiohttp.ClientSession, faults: dict[str, Any], reason: str, err: int) -> None:
    await call(sim, "PATCH", f"/api/phones/{PHONE}", faults)
    await call(sim, "POST", f"/api/phones/{PHONE}/sms", {"to": "3339", "text": "HELLO"}, status=202)
    fate = await mt_fate(sim, PHONE, "3339")
    assert (fate["state"], fate["reason"], fate["error"]) == ("UNDELIVERABLE", reason, err)
    assert fate["reason_text"]
    assert await recorded_state(stack, PHONE, {"UNDELIVERABLE"}) == "UNDELIVERABLE"
    records = await call(sim, "GET", f"/api/mts?msisdn={PHONE}")
    assert {r["state"] for r in records["mts"]} == {"UNDELIVERABLE"}


async def test_anti_spam_drops_only_the_blocked_code(stack: Stack, sim: aiohttp.ClientSession) -> None:
    await call(sim, "PATCH", f"/api/phones/{PHONE}", {"blocked_senders": ["7888"]})
    [reply] = await send_and_wait(stack, PHONE, "3339", "HELLO")
    assert reply.sender == "3339"


async def test_the_event_stream_starts_with_a_snapshot_and_then_shows_the_sms_the_outbox_and_pdus(
        stack: Stack, sim: aiohttp.ClientSession) -> None:
    seen: dict[str, list[Any]] = {}
    async with sim.get(f"/api/phones/{PHONE}/events") as response:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = sse_events(response)
        kind, snapshot = await anext(events)
        assert kind == "snapshot" and snapshot["phone"]["msisdn"] == PHONE and snapshot["inbox"] == []
        await call(sim, "POST", f"/api/phones/{PHONE}/sms", {"to": "3339", "text": "HELLO"}, status=202)
        async with asyncio.timeout(10):
            async for kind, data in events:
                seen.setdefault(kind, []).append(data)
                if kind == "inbox" and any(o["state"] == "accepted" for o in seen.get("outbox", [])):
                    break
    assert seen["inbox"][0]["sender"] == "3339" and "ПАРОЛЬ" in seen["inbox"][0]["text"]
    assert seen["outbox"][0]["state"] == "sent" and seen["outbox"][-1]["state"] == "accepted"
    commands = {p["command"] for p in seen["pdu"]}
    assert {"deliver_sm", "submit_sm"} <= commands


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("PATCH", f"/api/phones/{PHONE}", {"power": "sideways"}, 400),
    ("PATCH", f"/api/phones/{PHONE}", {"inbox_full": "yes"}, 400),
    ("PATCH", f"/api/phones/{PHONE}", {"colour": "red"}, 400),
    ("PATCH", f"/api/phones/{PHONE}", {"blocked_senders": "3339"}, 400),
    ("POST", f"/api/phones/{PHONE}/sms", {"to": "not a code", "text": "x"}, 400),
    ("POST", "/api/phones/12/sms", {"to": "3339", "text": "x"}, 400),
    ("POST", f"/api/phones/{PHONE}/ussd/dial", {"code": "100"}, 400),
    ("POST", f"/api/phones/{PHONE}/ussd/answer", {"text": "1"}, 409),
    ("POST", "/api/clock/advance", {"seconds": -5}, 400),
    ("POST", "/api/phones", {"msisdn": "abc"}, 400),
])
async def test_bad_requests_get_a_clear_error_and_change_nothing(
        stack: Stack, sim: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any], status: int) -> None:
    before = await call(sim, "GET", f"/api/phones/{PHONE}/state")
    error = await call(sim, method, path, body, status=status)
    assert error["error"]
    after = await call(sim, "GET", f"/api/phones/{PHONE}/state")
    assert after == before


# ---- only this machine drives the simulator, and it keeps a bounded amount --------------------------
def test_the_simulator_and_the_api_listen_on_loopback_by_default() -> None:
    defaults = Settings()
    assert defaults.sim_host == "127.0.0.1" and defaults.api_host == "127.0.0.1"


@pytest.mark.parametrize(("host", "status"), [
    ("127.0.0.1:{port}", 200), ("localhost:{port}", 200), ("[::1]:{port}", 200), ("LOCALHOST.", 200),
    ("127.5.6.7", 200),  # all of 127/8 is this machine
    ("evil.example", 421), ("rebound.attacker.example:{port}", 421), ("127.0.0.1.evil.example", 421),
    ("192.168.1.10:{port}", 421), ("", 421),
])
async def test_a_request_for_another_host_is_refused(stack: Stack, host: str, status: int) -> None:
    """A page of another site that rebinds its own name to 127.0.0.1 still sends that name."""
    parts = urlsplit(stack.endpoints["simulator"])
    assert parts.hostname is not None and parts.port is not None
    for path in ("/api/phones", f"/api/phones/{PHONE}/inbox", "/"):
        answer = await send(parts.hostname, parts.port, Raw("GET", path, host=host.format(port=parts.port)))
        assert answer.status in ((200, 404) if status == 200 else (status,)), (host, path, answer.status)
        if status == 421:
            assert answer.json()["field"] == "Host"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          ""])
async def test_a_change_that_is_not_json_is_refused_and_sends_nothing(stack: Stack, sim: aiohttp.ClientSession,
                                                                      content_type: str) -> None:
    """What any page may post across sites without asking (a form, text/plain) changes nothing."""
    assert stack.smsc is not None
    headers = {"Content-Type": content_type} if content_type else {}
    for path, data in ((f"/api/phones/{PHONE}/sms", b'{"to": "3339", "text": "HELP"}'),
                       (f"/api/phones/{PHONE}/ussd/cancel", b""), ("/api/clock/advance", b'{"seconds": 60}')):
        async with sim.post(path, data=data, headers=headers) as response:
            assert response.status == 415 and (await response.json())["field"] == "Content-Type"
    assert not stack.smsc.phones.get(PHONE).outbox and stack.smsc.mo_pending == {}


async def test_looking_at_a_phone_never_makes_one_only_a_post_does(stack: Stack, sim: aiohttp.ClientSession) -> None:
    assert stack.smsc is not None and stack.post_office is not None
    stranger = "79990001122"
    for suffix in ("", "/state", "/inbox", "/network", "/outbox", "/pdus", "/ussd", "/events"):
        async with sim.get(f"/api/phones/{stranger}{suffix}") as response:
            assert response.status == 404 and (await response.json())["field"] == "msisdn", suffix
    assert (await call(sim, "PATCH", f"/api/phones/{stranger}", {"power": "off"}, status=404))["field"] == "msisdn"
    assert stranger not in stack.smsc.phones.phones
    await call(sim, "POST", "/api/phones", {"msisdn": stranger}, status=201)
    assert (await call(sim, "GET", f"/api/phones/{stranger}"))["msisdn"] == stranger
    view = await call(sim, "GET", "/api/mail/nobody@example.com")
    assert view["messages"] == [] and "nobody@example.com" not in stack.post_office.boxes


async def test_what_a_phone_keeps_is_bounded_and_final_mt_records_are_pruned(stack: Stack) -> None:
    assert stack.smsc is not None
    phones = stack.smsc.phones
    phone = phones.get(PHONE)
    stack.smsc.final_records_kept = 3
    for _ in range(6):  # each HELP brings one MT, delivered: a final record
        await send_and_wait(stack, PHONE, "3339", "HELP")
    assert len(phone.sent) == 6  # submit_mo records it (the outbox is the handsets' record, below)
    finals = [r for r in stack.smsc.mt_records.values() if r.state.name == "DELIVERED"]
    assert len(finals) <= 3
    for n in range(INBOX_KEEP + 50):
        phones.add_to_inbox(phone, "3339", f"message {n}")
    assert len(phone.inbox) == INBOX_KEEP and phone.inbox[-1].text == f"message {INBOX_KEEP + 49}"
    for n in range(NETWORK_LOG_SIZE + 20):
        phones.record_sent(PHONE, "3339", f"mo {n}", "sms", [])
    assert len(phone.outbox) == NETWORK_LOG_SIZE


async def test_validity_period_is_a_setting(settings: Settings) -> None:
    stack = Stack(settings.with_overrides(sim_validity_s=0.5))
    await stack.start()
    try:
        assert stack.smsc is not None and stack.gateway is not None
        await stack.gateway.wait_bound(5)
        stack.smsc.phones.set_power(PHONE, Power.OFF)
        stack.smsc.submit_mo(PHONE, "3339", "HELLO")
        entry = await stack.smsc.phones.wait_network(PHONE, lambda e: e.state == "EXPIRED", 10)
        assert entry is not None and entry.reason == "expired"
    finally:
        await stack.stop()
