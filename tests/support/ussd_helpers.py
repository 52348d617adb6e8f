"""Driving USSD through the real stack: a phone dials and answers, the SMSC sends deliver_sm over SMPP."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from simulator.phones import InboxMessage
from simulator.smsc import PendingMo
from ussdgw.app.stack import Stack
from ussdgw.smpp.pdu import SubmitSm, UssdOp
from ussdgw.store import AuditEvent


async def ussd(stack: Stack, msisdn: str, text: str, *, op: int = UssdOp.PSSR_INDICATION, to: str = "*111#",
               its_session_info: int | None = None, timeout: float = 10.0) -> InboxMessage:
    """The phone sends one USSD MO (a dial or an answer) and returns the USSD screen that comes back."""
    assert stack.smsc is not None
    phones = stack.smsc.phones
    after = phones.last_seq
    stack.smsc.submit_mo(msisdn, to, text, ussd_service_op=op, its_session_info=its_session_info)
    async with asyncio.timeout(timeout):
        while True:
            for message in await phones.wait_inbox(msisdn, after, timeout):
                after = max(after, message.seq)
                if message.kind == "ussd":
                    return message


async def dial(stack: Stack, msisdn: str, dialled: str, **kw: Any) -> InboxMessage:
    """A dial: the string in short_message, its service code as destination_addr (at most 20 octets)."""
    code = re.match(r"[*#]*(\d+)", dialled)
    to = f"*{code.group(1)}#" if code else dialled[:20]
    return await ussd(stack, msisdn, dialled, op=UssdOp.PSSR_INDICATION, to=to, **kw)


async def answer(stack: Stack, msisdn: str, text: str, *, to: str = "*111#", **kw: Any) -> InboxMessage:
    return await ussd(stack, msisdn, text, op=UssdOp.USSR_CONFIRM, to=to, **kw)


async def choose(stack: Stack, msisdn: str, screen: InboxMessage, label: str) -> InboxMessage:
    """Page on (98) until a choice whose label starts with `label` is shown, then answer its number:
    a menu takes only a choice the subscriber has seen on the page in front of her."""
    for _ in range(20):
        found = re.search(rf"^(\d+) {re.escape(label)}", screen.text, re.M)
        if found:
            return await answer(stack, msisdn, found.group(1))
        assert "98 Далее" in screen.text, f"no {label!r} in {screen.text!r}"
        screen = await answer(stack, msisdn, "98")
    raise AssertionError(f"{label!r} never shown")


async def read_to_end(stack: Stack, msisdn: str, screen: InboxMessage) -> str:
    """A closing text that came over several screens (98 Далее): all of it, once the dialogue closed."""
    text = screen.text
    while screen.ussd_op != UssdOp.PSSR_RESPONSE:
        assert text.endswith("98 Далее"), text
        text = text.removesuffix("98 Далее").rstrip("\n")
        screen = await answer(stack, msisdn, "98")
        text += " " + screen.text
    return text


async def wait_sms(stack: Stack, msisdn: str, after: int, timeout: float = 10.0) -> InboxMessage:
    """The first SMS (not a USSD screen) that reaches the phone's inbox after `after`."""
    assert stack.smsc is not None
    async with asyncio.timeout(timeout):
        while True:
            for message in await stack.smsc.phones.wait_inbox(msisdn, after, timeout):
                after = max(after, message.seq)
                if message.kind == "sms":
                    return message


async def send_without_reply(stack: Stack, msisdn: str, text: str, op: int, to: str = "*111#") -> PendingMo:
    """A USSD MO that gets no screen back (an abort): returns once the gateway acknowledged it."""
    assert stack.smsc is not None
    [mo] = stack.smsc.submit_mo(msisdn, to, text, ussd_service_op=op)
    await asyncio.wait_for(mo.delivered.wait(), 10)
    return mo


async def seed(stack: Stack, msisdn: str, **profile: str | int) -> None:
    assert stack.store is not None
    fields: dict[str, str | int] = {"owner_id": f"p-{msisdn}", "region": "77", "corporate": 0, "balance_kop": 0,
                                    "tariff": "basic"}
    fields.update(profile)
    await stack.store.subscribers.put(msisdn, fields, AuditEvent("seeded", "admin"))


async def events(stack: Stack, msisdn: str) -> list[str]:
    assert stack.store is not None
    return [e["event"] for e in await stack.store.audit_trail(msisdn, 500)]


@contextmanager
def submits_seen(stack: Stack) -> Iterator[list[SubmitSm]]:
    """Every submit_sm the SMSC receives from the gateway, while the block runs (the SMSC still handles it)."""
    assert stack.smsc is not None
    smsc = stack.smsc
    seen: list[SubmitSm] = []
    original = smsc._to_phone

    def spy(record: Any, pdu: SubmitSm) -> None:
        seen.append(pdu)
        original(record, pdu)

    smsc._to_phone = spy  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        smsc._to_phone = original  # type: ignore[method-assign]
