"""Virtual phones: what a subscriber's handset would see, and the faults it can have (SPEC D1).

The SMSC asks a phone for the fate of each MT: delivered into the inbox, refused (inbox full,
anti-spam, unknown number), or held while the phone is off until it comes back or the validity
period runs out. Listeners (the web phone, the CLI) wait on new inbox entries without polling.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ussdgw.smpp.concat import Reassembler
from ussdgw.smpp.pdu import MessageState


class Power(StrEnum):
    ON = "on"
    OFF = "off"
    AIRPLANE = "airplane"


@dataclass(slots=True)
class InboxMessage:
    seq: int
    sender: str
    text: str
    received_at: float
    kind: str = "sms"  # "sms" or "ussd"
    message_ids: list[str] = field(default_factory=list)
    state: str = "DELIVERED"
    ussd_op: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class HeldMessage:
    """An MT waiting for a switched-off phone until `expires_at`."""

    message_id: str
    sender: str
    text: str
    expires_at: float
    on_fate: Callable[[MessageState, int], None]


@dataclass(slots=True)
class Phone:
    msisdn: str
    power: Power = Power.ON
    inbox_full: bool = False
    unknown_number: bool = False
    blocked_senders: set[str] = field(default_factory=set)
    inbox: list[InboxMessage] = field(default_factory=list)
    held: list[HeldMessage] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    next_reference: int = 1
    inbox_capacity: int = 100

    def settings(self) -> dict[str, Any]:
        return {
            "msisdn": self.msisdn, "power": self.power.value, "inbox_full": self.inbox_full,
            "unknown_number": self.unknown_number, "blocked_senders": sorted(self.blocked_senders),
            "inbox_count": len(self.inbox), "held_count": len(self.held),
        }

    def take_reference(self) -> int:
        ref = self.next_reference
        self.next_reference = ref % 0xFFFF + 1
        return ref


class PhoneBook:
    def __init__(self, *, reassembly_timeout: float = 60.0) -> None:
        self.phones: dict[str, Phone] = {}
        self._changed = asyncio.Condition()
        self._seq = 0
        self._reassembler = Reassembler(timeout=reassembly_timeout)
        self.pdu_log: dict[str, deque[dict[str, Any]]] = {}

    def get(self, msisdn: str) -> Phone:
        phone = self.phones.get(msisdn)
        if phone is None:
            phone = self.phones[msisdn] = Phone(msisdn)
        return phone

    def log_pdu(self, msisdn: str, direction: str, summary: dict[str, Any]) -> None:
        entries = self.pdu_log.setdefault(msisdn, deque(maxlen=200))
        entries.append({"at": time.time(), "direction": direction, **summary})

    async def notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    def _notify_soon(self) -> None:
        asyncio.get_running_loop().create_task(self.notify())

    def deliver_mt(
        self, msisdn: str, sender: str, text: str, message_id: str, *, validity_s: float,
        on_fate: Callable[[MessageState, int], None],
    ) -> None:
        """Decide the MT's fate now, or hold it while the phone is off; report through `on_fate`.

        Error codes in receipts: 1 unknown subscriber, 2 absent (off/airplane, expired),
        8 memory capacity exceeded (inbox full), 10 refused by the handset (anti-spam).
        """
        phone = self.get(msisdn)
        if phone.unknown_number:
            on_fate(MessageState.UNDELIVERABLE, 1)
        elif phone.power is not Power.ON:
            phone.held.append(HeldMessage(message_id, sender, text, time.time() + validity_s, on_fate))
            self._notify_soon()
        else:
            self._land(phone, sender, text, message_id, on_fate)

    def _land(self, phone: Phone, sender: str, text: str, message_id: str,
              on_fate: Callable[[MessageState, int], None]) -> None:
        if phone.inbox_full or len(phone.inbox) >= phone.inbox_capacity:
            on_fate(MessageState.UNDELIVERABLE, 8)
            return
        if sender in phone.blocked_senders:
            on_fate(MessageState.UNDELIVERABLE, 10)
            return
        self.add_to_inbox(phone, sender, text, message_ids=[message_id])
        on_fate(MessageState.DELIVERED, 0)

    def add_to_inbox(self, phone: Phone, sender: str, text: str, *, kind: str = "sms",
                     message_ids: list[str] | None = None, ussd_op: int | None = None) -> InboxMessage:
        self._seq += 1
        message = InboxMessage(self._seq, sender, text, time.time(), kind, message_ids or [], ussd_op=ussd_op)
        phone.inbox.append(message)
        self._notify_soon()
        return message

    def set_power(self, msisdn: str, power: Power) -> None:
        phone = self.get(msisdn)
        phone.power = power
        if power is Power.ON:
            held, phone.held = phone.held, []
            now = time.time()
            for message in held:
                if message.expires_at < now:
                    message.on_fate(MessageState.EXPIRED, 2)
                else:
                    self._land(phone, message.sender, message.text, message.message_id, message.on_fate)
        self._notify_soon()

    def expire_held(self, now: float | None = None) -> int:
        """Expire MTs held too long for switched-off phones; returns how many expired."""
        now = time.time() if now is None else now
        count = 0
        for phone in self.phones.values():
            keep = []
            for message in phone.held:
                if message.expires_at <= now:
                    message.on_fate(MessageState.EXPIRED, 2)
                    count += 1
                else:
                    keep.append(message)
            phone.held = keep
        return count

    async def wait_inbox(self, msisdn: str, after: int, timeout: float) -> list[InboxMessage]:
        """Inbox entries with seq > `after`, waiting up to `timeout` for the first to arrive."""
        phone = self.get(msisdn)

        def fresh() -> list[InboxMessage]:
            return [m for m in phone.inbox if m.seq > after]

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(lambda: bool(fresh())), timeout)
            except TimeoutError:
                pass
        return fresh()

    async def wait_change(self, timeout: float) -> None:
        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass

    def reassemble(self, msisdn: str, sender: str, ref: int, total: int, seq: int, payload: bytes,
                   data_coding: int) -> bytes | None:
        return self._reassembler.add((msisdn, sender), ref, total, seq, payload, data_coding, time.monotonic())

    @property
    def last_seq(self) -> int:
        return self._seq
