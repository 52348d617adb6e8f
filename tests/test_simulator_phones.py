"""The simulator's phones over its HTTP API: faults decide each MT's fate (SPEC D1), the receipt says
so and the gateway records it; the event stream shows every change; the clock can be fast-forwarded."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from simulator.phones import Power
from tests.conftest import send_and_wait
from ussdgw.app.stack import Stack
from ussdgw.config import Settings

PHONE = "79161234567"


@pytest.fixture
async def sim(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(stack.endpoints["simulator"]) as session:
        yield session


async def call(sim: aiohttp.ClientSession, method: str, path: str, body: dict[str, Any] | None = None,
               status: int = 200) -> Any:
    async with sim.request(method, path, json=body) as response:
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
