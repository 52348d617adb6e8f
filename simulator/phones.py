"""Virtual phones: what a subscriber's handset would see, and the faults it can have (SPEC D1).

The SMSC asks a phone for the fate of each MT: delivered into the inbox, refused (inbox full,
anti-spam, unknown number), or held while the phone is off until it comes back or the validity
period runs out. Every MT addressed to a phone is kept in its network log (`Phone.network`) with
that fate, so a tester sees what never landed as well as what did.

Each phone also holds its side of a USSD dialogue (`UssdDialogue`): what the network showed last,
whether it waits for an answer (USSR request, op 2) or has closed (PSSR response, op 17), and
the `its_session_info` to echo. The dialogue itself (states, moves, the dialled string's check,
`its_session_info`) is the phone's role in `ussdgw.smpp.ussd`; this module adds what a screen shows.

Listeners get every change as a `PhoneEvent`: per phone through `subscribe()` (the web phone's
event stream), or all phones through `watchers` (the load generator); `wait_inbox` and
`wait_change` wait without polling. Time is the book's `clock` (`ussdgw.clock.Clock`, injected:
in one process with the platform it is the platform's one clock), which scenarios can fast-forward
to expire held MTs; the reassembly of long MTs times out on monotonic time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from simulator.pdulog import summarize, with_response
from ussdgw.clock import Clock
from ussdgw.smpp.concat import Reassembler
from ussdgw.smpp.pdu import DataSm, MessageState, ShortMessagePdu
from ussdgw.smpp.ussd import (
    DialogueEvent,
    DialogueState,
    PhoneDialogue,
    UssdError,
    UssdRequest,
    parse_ussd_string,
)

Fate = Callable[[MessageState, int], None]  # what the SMSC does with a fate: record it, send the receipt

# Receipt error codes (the `err:` of the receipt text and the network_error_code TLV).
ERR_UNKNOWN_SUBSCRIBER = 1
ERR_ABSENT = 2
ERR_MEMORY_FULL = 8
ERR_REFUSED_BY_HANDSET = 10
ERR_UNDECODABLE = 99

REASONS = {
    "unknown_number": "номер не существует",
    "absent": "абонент недоступен (телефон выключен или в режиме полёта)",
    "expired": "истёк срок доставки: телефон не включился",
    "inbox_full": "память SMS переполнена",
    "anti_spam": "отклонено антиспамом на телефоне",
    "incomplete": "не пришли все части длинного сообщения",
    "undecodable": "не удалось прочитать текст",
}

NETWORK_LOG_SIZE = 200
INBOX_KEEP = 1000  # messages kept per phone, whatever its inbox_capacity (a full inbox refuses SMS first)
PDU_LOG_SIZE = 200
FEED_QUEUE_SIZE = 1000


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
        return _fields(self)


@dataclass(slots=True)
class NetworkEntry:
    """One MT addressed to the phone, as the network saw it: landed or not, and why."""

    message_id: str
    sender: str
    text: str
    submitted_at: float
    kind: str = "sms"
    state: str = MessageState.ENROUTE.name  # ENROUTE while held, then DELIVERED / UNDELIVERABLE / EXPIRED
    error: int = 0
    reason: str = ""  # a key of REASONS
    held_until: float | None = None
    done_at: float | None = None
    inbox_seq: int | None = None
    parts: int = 1
    held_since: float | None = None  # when the network started holding it (the phone was off)
    receipt: str = ""  # "" none asked, "sent" to the platform, "recorded" (acknowledged), "refused"
    receipt_status: int | None = None
    receipt_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = _fields(self)
        out["reason_text"] = REASONS.get(self.reason, "")
        return out


@dataclass(slots=True)
class OutboxEntry:
    """An MO the phone sent: `sent` until the gateway acknowledges it (`accepted`) or refuses it."""

    id: int
    to: str
    text: str
    at: float
    kind: str = "sms"
    mo_ids: list[str] = field(default_factory=list)
    state: str = "sent"
    status: int | None = None
    ussd_version: int | None = None  # a USSD request: the dialogue's version once it was sent
    delivery: str = ""  # phone to phone: the recipient's fate (DELIVERED, ENROUTE, EXPIRED, UNDELIVERABLE)
    reason: str = ""  # a key of REASONS when it was not delivered

    def to_dict(self) -> dict[str, Any]:
        return _fields(self)


def _fields(obj: Any) -> dict[str, Any]:
    """A shallow dict of a slotted dataclass (lists copied): `asdict` deep-copies, far slower."""
    return {name: list(value) if isinstance(value, list) else value
            for name in obj.__slots__ for value in (getattr(obj, name),)}


class Verdict:
    """The fate of one tracked MT: updates its network-log entry, tells the SMSC, tells listeners."""

    __slots__ = ("book", "entry", "msisdn", "on_fate")

    def __init__(self, book: PhoneBook, msisdn: str, entry: NetworkEntry, on_fate: Fate) -> None:
        self.book, self.msisdn, self.entry, self.on_fate = book, msisdn, entry, on_fate

    def __call__(self, state: MessageState, error: int, reason: str = "") -> None:
        entry = self.entry
        entry.state, entry.error, entry.done_at, entry.held_until = state.name, error, self.book.clock.now(), None
        entry.reason = reason
        self.on_fate(state, error)
        self.book.publish(self.msisdn, "network", entry.to_dict())


@dataclass(slots=True)
class HeldMessage:
    """An MT waiting for a switched-off phone until `expires_at` (the book's clock)."""

    message_id: str
    sender: str
    text: str
    expires_at: float
    on_fate: Verdict


# How the web phone, the HTTP API and scenarios name the dialogue's states.
SCREEN_STATES = {DialogueState.IDLE: "idle", DialogueState.PROCESSING: "sent", DialogueState.WAITING: "waiting",
                 DialogueState.CLOSED: "closed"}


USSD_TIMED_OUT = "Нет ответа от сети: время ожидания истекло, запрос USSD не выполнен."
USSD_REFUSED = "Запрос USSD отклонён сетью."


class PhoneOffline(UssdError):
    """A dial from a phone that has no network: `why` is its power state or `unknown_number`."""

    def __init__(self, why: str) -> None:
        super().__init__(f"the phone has no network ({why}): switch it on first")
        self.why = why


@dataclass(slots=True)
class UssdDialogue(PhoneDialogue):
    """The phone's USSD dialogue, with the history its screen lists, and when the phone gives up
    on it (`deadline`, the book's clock: the network's dialogue timeout after the dial)."""

    history: list[dict[str, Any]] = field(default_factory=list)
    deadline: float | None = None

    def give_up(self, text: str, why: str, now: float) -> None:
        """The network will not answer (timed out, or refused the request): the popup shows
        `text` and closes, as a handset's does."""
        self._apply(DialogueEvent.END)
        self.text, self.last_op, self.deadline = text, None, None
        self.history.append({"from": "phone", "text": text, "op": why, "at": now})

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": SCREEN_STATES[self.state], "service": self.service, "text": self.text, "last_op": self.last_op,
            "its_session_info": self.its_session_info, "version": self.version, "sender": self.sender,
            "open": self.open, "deadline": self.deadline, "history": list(self.history[-20:]),
        }


@dataclass(slots=True)
class Phone:
    msisdn: str
    power: Power = Power.ON
    inbox_full: bool = False
    unknown_number: bool = False
    blocked_senders: set[str] = field(default_factory=set)
    # What a phone keeps is bounded, whatever is sent to it or from it: the oldest goes first.
    inbox: deque[InboxMessage] = field(default_factory=lambda: deque(maxlen=INBOX_KEEP))
    held: list[HeldMessage] = field(default_factory=list)
    sent: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=NETWORK_LOG_SIZE))
    outbox: deque[OutboxEntry] = field(default_factory=lambda: deque(maxlen=NETWORK_LOG_SIZE))
    network: deque[NetworkEntry] = field(default_factory=lambda: deque(maxlen=NETWORK_LOG_SIZE))
    ussd: UssdDialogue = field(default_factory=UssdDialogue)
    next_reference: int = 1
    next_ussd_session: int = 1
    inbox_capacity: int = 100
    version: int = 0  # bumps on every change of this phone, for long polls

    def settings(self) -> dict[str, Any]:
        return {
            "msisdn": self.msisdn, "power": self.power.value, "inbox_full": self.inbox_full,
            "unknown_number": self.unknown_number, "blocked_senders": sorted(self.blocked_senders),
            "inbox_count": len(self.inbox), "held_count": len(self.held), "inbox_capacity": self.inbox_capacity,
            "outbox_pending": sum(1 for entry in self.outbox if entry.state == "sent"),
        }

    def take_reference(self) -> int:
        ref = self.next_reference
        self.next_reference = ref % 0xFFFF + 1
        return ref

    def network_entry(self, message_id: str) -> NetworkEntry | None:
        for entry in reversed(self.network):
            if entry.message_id == message_id:
                return entry
        return None


@dataclass(frozen=True, slots=True)
class LoggedPdu:
    """One PDU exchanged for a phone, with the status its response carried."""

    at: float
    direction: str  # "gateway->smsc" or "smsc->gateway"
    pdu: ShortMessagePdu | DataSm
    status: int
    extra: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """`extra` (the SMSC's sequence number of a deliver_sm, its attempt, an MT's message id) wins."""
        return {"at": self.at, "direction": self.direction, **with_response(summarize(self.pdu), self.status,
                                                                            **self.extra)}


@dataclass(frozen=True, slots=True)
class PhoneEvent:
    """A change on one phone. `kind`: phone, inbox, network, outbox, ussd, pdu."""

    msisdn: str
    kind: str
    data: dict[str, Any]


class PhoneFeed:
    """One listener's queue of a phone's events; `overflowed` once it fell too far behind."""

    def __init__(self, msisdn: str, size: int = FEED_QUEUE_SIZE) -> None:
        self.msisdn = msisdn
        self.queue: asyncio.Queue[PhoneEvent] = asyncio.Queue(size)
        self.overflowed = False

    def push(self, event: PhoneEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


MAX_PHONES = 100_000


class PhoneBookFull(Exception):
    """No room for another phone: the book holds `max_phones` (setting `sim_max_phones`)."""

    def __init__(self, max_phones: int) -> None:
        super().__init__(f"the simulator holds its maximum of {max_phones} phones")
        self.max_phones = max_phones


class PhoneBook:
    def __init__(self, *, reassembly_timeout: float = 60.0, clock: Clock | None = None,
                 ussd_timeout_s: float = 180.0, max_phones: int = MAX_PHONES) -> None:
        self.phones: dict[str, Phone] = {}
        self.max_phones = max_phones  # whatever a client sends or the network addresses, no more are made
        self.clock = clock or Clock()
        self.ussd_timeout_s = ussd_timeout_s  # a phone gives up on a dialogue still open this long after the dial
        self._ussd_open: dict[str, float] = {}  # msisdn -> its open dialogue's deadline
        self._seq = 0
        self._changed = asyncio.Event()
        self._reassembler = Reassembler(timeout=reassembly_timeout)
        self._part_fates: dict[tuple[str, str, int], list[Fate]] = {}
        self._held_parts: dict[tuple[str, str, int], dict[str, Any]] = {}  # what `dump` keeps of them
        self._outbox_ids = 0
        self._awaiting: dict[str, tuple[str, OutboxEntry]] = {}  # MO id -> the phone and what it sent
        self.pdu_log: dict[str, deque[LoggedPdu]] = {}
        self._feeds: dict[str, set[PhoneFeed]] = {}
        self.watchers: list[Callable[[PhoneEvent], None]] = []

    def find(self, msisdn: str) -> Phone | None:
        """The phone, if one was made (a POST, an MO or an MT for it); never makes one."""
        return self.phones.get(msisdn)

    def get(self, msisdn: str) -> Phone:
        """The phone, made when there is none yet; `PhoneBookFull` when there is no room for it."""
        phone = self.phones.get(msisdn)
        if phone is None:
            if len(self.phones) >= self.max_phones:
                raise PhoneBookFull(self.max_phones)
            phone = self.phones[msisdn] = Phone(msisdn)
        return phone

    # ---- events -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def subscribe(self, msisdn: str) -> Iterator[PhoneFeed]:
        """Receive every event of one phone while the `with` block runs."""
        feed = PhoneFeed(msisdn)
        self._feeds.setdefault(msisdn, set()).add(feed)
        try:
            yield feed
        finally:
            feeds = self._feeds.get(msisdn)
            if feeds is not None:
                feeds.discard(feed)
                if not feeds:
                    del self._feeds[msisdn]

    def close_feeds(self) -> None:
        """Tell every listener the stream is over (an event of kind `bye`)."""
        for msisdn, feeds in self._feeds.items():
            for feed in feeds:
                feed.push(PhoneEvent(msisdn, "bye", {}))

    def publish(self, msisdn: str, kind: str, data: dict[str, Any]) -> None:
        phone = self.phones.get(msisdn)
        if phone is not None:
            phone.version += 1
        feeds = self._feeds.get(msisdn)
        if feeds or self.watchers:
            event = PhoneEvent(msisdn, kind, data)
            for feed in feeds or ():
                feed.push(event)
            for watcher in self.watchers:
                watcher(event)
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def notify(self) -> None:
        self._wake()

    def phone_changed(self, phone: Phone) -> None:
        self.publish(phone.msisdn, "phone", phone.settings())

    def snapshot(self, msisdn: str) -> dict[str, Any]:
        """Everything a fresh viewer of the phone needs before the events that follow."""
        phone = self.get(msisdn)
        return {
            "version": phone.version,
            "phone": phone.settings(),
            "inbox": [m.to_dict() for m in phone.inbox],
            "network": [e.to_dict() for e in phone.network],
            "outbox": [o.to_dict() for o in phone.outbox],
            "ussd": phone.ussd.to_dict(),
            "pdus": self.pdu_entries(msisdn),
            "clock_offset": self.clock.offset,
        }

    def log_pdu(self, msisdn: str, direction: str, pdu: ShortMessagePdu | DataSm, status: int,
                **extra: Any) -> None:
        """Keep the PDU for the phone's PDU log; it is described (`simulator.pdulog`) only when
        someone looks, so a load run pays for a deque append."""
        entries = self.pdu_log.get(msisdn)
        if entries is None:
            entries = self.pdu_log[msisdn] = deque(maxlen=PDU_LOG_SIZE)
        logged = LoggedPdu(self.clock.now(), direction, pdu, status, extra)
        entries.append(logged)
        if msisdn in self._feeds:
            self.publish(msisdn, "pdu", logged.to_dict())

    def pdu_entries(self, msisdn: str) -> list[dict[str, Any]]:
        """The phone's PDU log, oldest first, as the web phone and `GET .../pdus` show it."""
        return [logged.to_dict() for logged in self.pdu_log.get(msisdn, ())]

    # ---- MTs: the fate of each ----------------------------------------------------------------
    def _track(self, phone: Phone, message_id: str, sender: str, text: str, on_fate: Fate, *, kind: str = "sms",
               parts: int = 1) -> tuple[NetworkEntry, Verdict]:
        """Put the MT in the phone's network log; its verdict updates that entry."""
        entry = NetworkEntry(message_id, sender, text, self.clock.now(), kind=kind, parts=parts)
        phone.network.append(entry)
        return entry, Verdict(self, phone.msisdn, entry, on_fate)

    def deliver_mt(
        self, msisdn: str, sender: str, text: str, message_id: str, *, validity_s: float,
        on_fate: Fate, parts: int = 1,
    ) -> None:
        """Decide the MT's fate now, or hold it while the phone is off; report through `on_fate`.

        Error codes in receipts: 1 unknown subscriber, 2 absent (off/airplane, expired),
        8 memory capacity exceeded (inbox full), 10 refused by the handset (anti-spam).
        """
        try:
            phone = self.get(msisdn)
        except PhoneBookFull:  # no phone to take it: as a number the network does not know
            on_fate(MessageState.UNDELIVERABLE, ERR_UNKNOWN_SUBSCRIBER)
            return
        entry, fate = self._track(phone, message_id, sender, text, on_fate, parts=parts)
        if phone.unknown_number:
            fate(MessageState.UNDELIVERABLE, ERR_UNKNOWN_SUBSCRIBER, "unknown_number")
        elif phone.power is not Power.ON:
            expires_at = self.clock.now() + validity_s
            entry.held_until, entry.held_since, entry.reason = expires_at, self.clock.now(), "absent"
            phone.held.append(HeldMessage(message_id, sender, text, expires_at, fate))
            self.publish(msisdn, "network", entry.to_dict())
            self.phone_changed(phone)
        else:
            self._land(phone, entry, fate)

    def _land(self, phone: Phone, entry: NetworkEntry, fate: Verdict) -> None:
        if phone.inbox_full or len(phone.inbox) >= phone.inbox_capacity:
            fate(MessageState.UNDELIVERABLE, ERR_MEMORY_FULL, "inbox_full")
            return
        if entry.sender in phone.blocked_senders:
            fate(MessageState.UNDELIVERABLE, ERR_REFUSED_BY_HANDSET, "anti_spam")
            return
        message = self.add_to_inbox(phone, entry.sender, entry.text, message_ids=[entry.message_id])
        entry.inbox_seq = message.seq
        entry.reason = ""
        fate(MessageState.DELIVERED, 0)

    def reject_mt(self, msisdn: str, sender: str, message_id: str, on_fate: Fate, reason: str = "undecodable") -> None:
        """An MT the phone cannot show at all (text that does not decode)."""
        phone = self.get(msisdn)
        _, fate = self._track(phone, message_id, sender, "", on_fate)
        fate(MessageState.UNDELIVERABLE, ERR_UNDECODABLE, reason)

    def add_to_inbox(self, phone: Phone, sender: str, text: str, *, kind: str = "sms",
                     message_ids: list[str] | None = None, ussd_op: int | None = None) -> InboxMessage:
        self._seq += 1
        message = InboxMessage(self._seq, sender, text, self.clock.now(), kind, message_ids or [], ussd_op=ussd_op)
        phone.inbox.append(message)
        self.publish(phone.msisdn, "inbox", message.to_dict())
        return message

    def clear_inbox(self, msisdn: str) -> int:
        phone = self.get(msisdn)
        count = len(phone.inbox)
        phone.inbox.clear()
        self.phone_changed(phone)
        return count

    def set_power(self, msisdn: str, power: Power) -> None:
        phone = self.get(msisdn)
        phone.power = power
        if power is Power.ON:
            held, phone.held = phone.held, []
            now = self.clock.now()
            for message in held:
                if message.expires_at <= now:
                    message.on_fate(MessageState.EXPIRED, ERR_ABSENT, "expired")
                else:
                    self._land(phone, message.on_fate.entry, message.on_fate)
        self.phone_changed(phone)

    def set_faults(self, msisdn: str, *, power: Power | None = None, inbox_full: bool | None = None,
                   unknown_number: bool | None = None, blocked_senders: set[str] | None = None) -> Phone:
        phone = self.get(msisdn)
        if inbox_full is not None:
            phone.inbox_full = inbox_full
        if unknown_number is not None:
            phone.unknown_number = unknown_number
        if blocked_senders is not None:
            phone.blocked_senders = set(blocked_senders)
        if power is not None:
            self.set_power(msisdn, power)
        else:
            self.phone_changed(phone)
        return phone

    def expire_held(self, now: float | None = None) -> int:
        """Expire MTs held too long for switched-off phones, and long MTs whose parts never all came;
        returns how many expired."""
        now = self.clock.now() if now is None else now
        count = 0
        for phone in self.phones.values():
            if not phone.held:
                continue
            keep = []
            for message in phone.held:
                if message.expires_at <= now:
                    message.on_fate(MessageState.EXPIRED, ERR_ABSENT, "expired")
                    count += 1
                else:
                    keep.append(message)
            if len(keep) != len(phone.held):
                phone.held = keep
                self.phone_changed(phone)
        self._expire_ussd(now)
        for dropped in self._reassembler.expire(time.monotonic()):
            (msisdn, sender), ref = dropped.key, dropped.reference
            self._held_parts.pop((msisdn, sender, ref), None)
            for on_fate in self._part_fates.pop((msisdn, sender, ref), []):
                on_fate(MessageState.UNDELIVERABLE, ERR_ABSENT)
        return count

    def _expire_ussd(self, now: float) -> None:
        """Phones give up on dialogues the network left open past their deadline."""
        for msisdn, deadline in list(self._ussd_open.items()):
            if deadline > now:
                continue
            del self._ussd_open[msisdn]
            dialogue = self.get(msisdn).ussd
            if dialogue.open and dialogue.deadline is not None and dialogue.deadline <= now:
                dialogue.give_up(USSD_TIMED_OUT, "timeout", now)
                self.publish(msisdn, "ussd", dialogue.to_dict())

    def advance(self, seconds: float) -> int:
        """Fast-forward the simulator clock; returns how many held MTs expired on the way."""
        self.clock.advance(seconds)
        expired = self.expire_held()
        self._clock_moved()
        return expired

    def reset_clock(self) -> None:
        """The simulator clock back to real time (see `Clock.reset`)."""
        self.clock.reset()
        self._clock_moved()

    def _clock_moved(self) -> None:
        """Every viewer shows the simulator's time (status bar, message and PDU times alike)."""
        for msisdn in list(self._feeds):
            self.publish(msisdn, "clock", {"offset": self.clock.offset, "now": self.clock.now()})

    # ---- phone to phone -------------------------------------------------------------------------
    def phone_to_phone(self, sender: str, recipient: str, text: str, *, validity_s: float,
                       parts: int = 1) -> OutboxEntry:
        """An SMS from one subscriber to another: the network delivers it to the recipient's phone
        (held while it is off, refused by its faults) and the sender's outbox follows its fate;
        the platform never sees it."""
        self._outbox_ids += 1
        entry = OutboxEntry(self._outbox_ids, recipient, text, self.clock.now(), "sms", state="accepted", status=0,
                            delivery=MessageState.ENROUTE.name)
        self.get(sender).outbox.append(entry)
        self.publish(sender, "outbox", entry.to_dict())
        target = self.get(recipient)

        def fate(state: MessageState, error: int) -> None:
            logged = target.network_entry(message_id)
            entry.delivery, entry.reason = state.name, logged.reason if logged is not None else ""
            self.publish(sender, "outbox", entry.to_dict())

        message_id = f"p2p-{sender}-{entry.id}"
        self.deliver_mt(recipient, sender, text, message_id, validity_s=validity_s, on_fate=fate, parts=parts)
        held = target.network_entry(message_id)
        if held is not None and held.state == MessageState.ENROUTE.name and entry.delivery == "ENROUTE":
            entry.reason = held.reason
            self.publish(sender, "outbox", entry.to_dict())
        return entry

    # ---- receipts to the platform ---------------------------------------------------------------
    def receipt_sent(self, msisdn: str, message_id: str) -> None:
        """The SMSC queued the receipt of MT `message_id` for the platform."""
        self._receipt_state(msisdn, message_id, "sent", None)

    def receipt_settled(self, msisdn: str, message_id: str, status: int | None) -> None:
        """The platform acknowledged the receipt (status 0: it recorded the fate) or refused it."""
        self._receipt_state(msisdn, message_id, "recorded" if status == 0 else "refused", status)

    def _receipt_state(self, msisdn: str, message_id: str, receipt: str, status: int | None) -> None:
        phone = self.find(msisdn)
        entry = phone.network_entry(message_id) if phone is not None else None
        if entry is None:
            return  # a part of a long MT (the message's entry carries another part's id), or forgotten
        entry.receipt, entry.receipt_status, entry.receipt_at = receipt, status, self.clock.now()
        self.publish(msisdn, "network", entry.to_dict())

    # ---- long MTs -----------------------------------------------------------------------------
    def reassemble(self, msisdn: str, sender: str, ref: int, total: int, seq: int, payload: bytes,
                   data_coding: int, on_fate: Fate | None = None, message_id: str = "") -> bytes | None:
        """Keep one part; the whole payload once all parts are in. With `on_fate`, the part's fate
        waits for the whole message's (see `whole_fate`). The parts held are the phone's: they
        outlive a restart of the SMSC (`dump`), as a handset's memory would."""
        key = (msisdn, sender, ref)
        whole = self._reassembler.add((msisdn, sender), ref, total, seq, payload, data_coding, time.monotonic())
        if on_fate is not None:
            self._part_fates.setdefault(key, []).append(on_fate)
        if whole is None:
            held = self._held_parts.setdefault(key, {"total": total, "data_coding": data_coding, "parts": {}})
            held["parts"].setdefault(seq, (payload.hex(), []))[1].append(message_id)
        else:
            self._held_parts.pop(key, None)
        return whole

    def held_message_ids(self) -> set[str]:
        """The MTs whose fate is not decided yet: parts waiting for the rest, messages waiting for a phone."""
        ids = {mid for held in self._held_parts.values() for _, mids in held["parts"].values() for mid in mids}
        ids.update(m.message_id for phone in self.phones.values() for m in phone.held)
        ids.discard("")
        return ids

    def whole_fate(self, msisdn: str, sender: str, ref: int) -> Fate:
        """One fate for all the parts of a long MT: what happens to the message happens to each part."""
        fates = self._part_fates.pop((msisdn, sender, ref), [])

        def fate(state: MessageState, error: int) -> None:
            for on_fate in fates:
                on_fate(state, error)

        return fate

    # ---- USSD, the phone's side --------------------------------------------------------------
    def ussd_dial(self, msisdn: str, code: str) -> UssdRequest:
        dialled = parse_ussd_string(code)
        phone = self.get(msisdn)
        if phone.unknown_number:
            raise PhoneOffline("unknown_number")
        if phone.power is not Power.ON:
            raise PhoneOffline(phone.power.value)
        dialogue = phone.ussd
        request = dialogue.dial(dialled, phone.next_ussd_session)
        phone.next_ussd_session = phone.next_ussd_session % 0xFF + 1
        now = self.clock.now()
        dialogue.deadline = self._ussd_open[msisdn] = now + self.ussd_timeout_s
        dialogue.history = [{"from": "phone", "text": request.text, "op": int(request.op), "at": now}]
        self.publish(msisdn, "ussd", dialogue.to_dict())
        return request

    def ussd_answer(self, msisdn: str, text: str) -> UssdRequest:
        dialogue = self.get(msisdn).ussd
        request = dialogue.answer(text)
        dialogue.history.append({"from": "phone", "text": text, "op": int(request.op), "at": self.clock.now()})
        self.publish(msisdn, "ussd", dialogue.to_dict())
        return request

    def ussd_cancel(self, msisdn: str) -> UssdRequest | None:
        """Close the popup; if the network still waits on this phone, tell it (end-of-session bit)."""
        dialogue = self.get(msisdn).ussd
        request = dialogue.cancel()
        dialogue.deadline = None
        self._ussd_open.pop(msisdn, None)
        if request is not None:
            dialogue.history.append({"from": "phone", "text": "", "op": "abort", "at": self.clock.now()})
        self.publish(msisdn, "ussd", dialogue.to_dict())
        return request

    def ussd_from_network(self, msisdn: str, sender: str, text: str, op: int, its_session_info: int | None,
                          message_id: str, on_fate: Fate) -> None:
        """A USSD MT: shown in the popup at once, or undeliverable (a USSD message is never held)."""
        phone = self.get(msisdn)
        entry, fate = self._track(phone, message_id, sender, text, on_fate, kind="ussd")
        if phone.unknown_number:
            fate(MessageState.UNDELIVERABLE, ERR_UNKNOWN_SUBSCRIBER, "unknown_number")
            return
        if phone.power is not Power.ON:
            fate(MessageState.UNDELIVERABLE, ERR_ABSENT, "absent")
            return
        dialogue = phone.ussd
        dialogue.receive(sender, text, op, its_session_info)
        if not dialogue.open:
            dialogue.deadline = None
            self._ussd_open.pop(msisdn, None)
        dialogue.history.append({"from": "network", "text": text, "op": op, "at": self.clock.now()})
        message = self.add_to_inbox(phone, sender, text, kind="ussd", message_ids=[message_id], ussd_op=op)
        entry.inbox_seq = message.seq
        fate(MessageState.DELIVERED, 0)
        self.publish(msisdn, "ussd", dialogue.to_dict())

    def ussd_refused(self, msisdn: str, version: int, status: int | None) -> None:
        """The network refused the request sent at dialogue `version` for good: if the phone still
        waits for the answer to it, it stops waiting (the popup says so and closes)."""
        dialogue = self.get(msisdn).ussd
        if dialogue.version != version or dialogue.state is not DialogueState.PROCESSING:
            return
        self._ussd_open.pop(msisdn, None)
        reason = f"{USSD_REFUSED} (0x{status:02X})" if status is not None else USSD_REFUSED
        dialogue.give_up(reason, "refused", self.clock.now())
        self.publish(msisdn, "ussd", dialogue.to_dict())

    async def wait_ussd(self, msisdn: str, version: int, timeout: float) -> UssdDialogue:
        """The phone's dialogue once the network has spoken after `version` (or at the timeout)."""
        dialogue = self.get(msisdn).ussd

        def answered() -> bool:
            return dialogue.version > version and dialogue.state is not DialogueState.PROCESSING

        await self._wait_for(answered, timeout)
        return dialogue

    # ---- MOs: what the phone sent --------------------------------------------------------------
    def record_sent(self, msisdn: str, to: str, text: str, kind: str, mo_ids: list[str], *,
                    ussd_version: int | None = None) -> OutboxEntry:
        """The phone sent an MO (its deliver_sm ids `mo_ids`): `sent` until `mo_settled` for each."""
        self._outbox_ids += 1
        entry = OutboxEntry(self._outbox_ids, to, text, self.clock.now(), kind, mo_ids, ussd_version=ussd_version)
        self.get(msisdn).outbox.append(entry)
        for mo_id in mo_ids:
            self._awaiting[mo_id] = (msisdn, entry)
        self.publish(msisdn, "outbox", entry.to_dict())
        return entry

    def mo_settled(self, mo_id: str, status: int | None) -> None:
        """The SMSC is done with one deliver_sm: acknowledged (0) or refused for good. Once every
        part of what the phone sent is, its outbox entry says `accepted` or `rejected` (the first
        refusal's status); a refused USSD request ends the phone's wait for its answer."""
        found = self._awaiting.pop(mo_id, None)
        if found is None:
            return  # not sent through a handset (the load generator, a receipt)
        msisdn, entry = found
        if status and not entry.status:
            entry.status = status
        if any(other in self._awaiting for other in entry.mo_ids):
            return
        entry.status = entry.status or 0
        entry.state = "accepted" if entry.status == 0 else "rejected"
        self.publish(msisdn, "outbox", entry.to_dict())
        if entry.state == "rejected" and entry.ussd_version is not None:
            self.ussd_refused(msisdn, entry.ussd_version, entry.status)

    # ---- waiting ------------------------------------------------------------------------------
    async def _wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not predicate():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            changed = self._changed
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)
        return True

    async def wait_inbox(self, msisdn: str, after: int, timeout: float) -> list[InboxMessage]:
        """Inbox entries with seq > `after`, waiting up to `timeout` for the first to arrive."""
        phone = self.get(msisdn)

        def fresh() -> list[InboxMessage]:
            return [m for m in phone.inbox if m.seq > after]

        await self._wait_for(lambda: bool(fresh()), timeout)
        return fresh()

    async def wait_network(self, msisdn: str, message_filter: Callable[[NetworkEntry], bool],
                           timeout: float) -> NetworkEntry | None:
        """The newest network-log entry matching `message_filter`, waiting up to `timeout`."""
        phone = self.get(msisdn)

        def found() -> NetworkEntry | None:
            return next((e for e in reversed(phone.network) if message_filter(e)), None)

        await self._wait_for(lambda: found() is not None, timeout)
        return found()

    async def wait_phone(self, msisdn: str, version: int, timeout: float) -> Phone:
        """The phone once it changed after `version` (or at the timeout)."""
        phone = self.get(msisdn)
        await self._wait_for(lambda: phone.version > version, timeout)
        return phone

    async def wait_change(self, timeout: float) -> None:
        changed = self._changed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)

    @property
    def last_seq(self) -> int:
        return self._seq

    # ---- kept across a restart ------------------------------------------------------------------
    def dump(self) -> dict[str, Any]:
        """What a restart of the simulator keeps (JSON-able): each phone's settings, inbox, outbox,
        network log, MO reference counters, MTs held while it is off and parts of long MTs it holds
        (their fates are the SMSC's to restore: `restore(fate_for=...)`). Not kept: open USSD
        dialogues (a restarted network has dropped them), the PDU log."""
        return {"seq": self._seq, "outbox_ids": self._outbox_ids, "phones": {
            msisdn: {
                "power": phone.power.value, "inbox_full": phone.inbox_full, "unknown_number": phone.unknown_number,
                "blocked_senders": sorted(phone.blocked_senders), "inbox_capacity": phone.inbox_capacity,
                "next_reference": phone.next_reference, "next_ussd_session": phone.next_ussd_session,
                "inbox": [m.to_dict() for m in phone.inbox], "outbox": [o.to_dict() for o in phone.outbox],
                "network": [{k: v for k, v in e.to_dict().items() if k != "reason_text"} for e in phone.network],
                "held": [{"message_id": m.message_id, "sender": m.sender, "text": m.text, "expires_at": m.expires_at}
                         for m in phone.held],
            }
            for msisdn, phone in self.phones.items()
        }, "parts": [
            {"msisdn": msisdn, "sender": sender, "ref": ref, "total": held["total"], "data_coding": held["data_coding"],
             "parts": [[seq, payload, mids] for seq, (payload, mids) in sorted(held["parts"].items())]}
            for (msisdn, sender, ref), held in self._held_parts.items()
        ]}

    def restore(self, data: dict[str, Any], fate_for: Callable[[str], Fate | None] = lambda _: None) -> None:
        """Take back what `dump` wrote; MOs still `sent` wait for their acknowledgement again, and
        held MTs and parts get their fates from `fate_for(message_id)` (None: nobody to tell)."""
        def fate(message_id: str) -> Fate:
            return fate_for(message_id) or (lambda state, error: None)

        self._seq, self._outbox_ids = int(data["seq"]), int(data["outbox_ids"])
        for msisdn, saved in data["phones"].items():
            phone = self.get(msisdn)
            phone.power, phone.inbox_full = Power(saved["power"]), bool(saved["inbox_full"])
            phone.unknown_number, phone.blocked_senders = bool(saved["unknown_number"]), set(saved["blocked_senders"])
            phone.inbox_capacity = int(saved["inbox_capacity"])
            phone.next_reference = int(saved["next_reference"])
            phone.next_ussd_session = int(saved["next_ussd_session"])
            phone.inbox = deque((InboxMessage(**m) for m in saved["inbox"]), maxlen=INBOX_KEEP)
            phone.outbox.extend(OutboxEntry(**o) for o in saved["outbox"])
            phone.network.extend(NetworkEntry(**e) for e in saved["network"])
            for entry in phone.outbox:
                if entry.state == "sent":
                    for mo_id in entry.mo_ids:
                        self._awaiting[mo_id] = (msisdn, entry)
            for held in saved.get("held", []):
                logged = phone.network_entry(held["message_id"]) or NetworkEntry(
                    held["message_id"], held["sender"], held["text"], self.clock.now())
                phone.held.append(HeldMessage(held["message_id"], held["sender"], held["text"], held["expires_at"],
                                              Verdict(self, msisdn, logged, fate(held["message_id"]))))
        for long_mt in data.get("parts", []):
            for seq, payload, mids in long_mt["parts"]:
                for mid in mids:
                    self.reassemble(long_mt["msisdn"], long_mt["sender"], long_mt["ref"], long_mt["total"], seq,
                                    bytes.fromhex(payload), long_mt["data_coding"], on_fate=fate(mid), message_id=mid)


__all__ = ["Fate", "InboxMessage", "NetworkEntry", "OutboxEntry", "Phone", "PhoneBook", "PhoneEvent",
           "PhoneFeed", "PhoneOffline", "Power", "UssdDialogue", "UssdError", "UssdRequest"]
