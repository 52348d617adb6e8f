"""USSD, I/O-free, for both ends of a dialogue: the dialled string (TS 22.030), `its_session_info`,
and the dialogue state machine as the network (the gateway's application) and the phone (the
simulator's handsets) each see it.

Nothing here reads a clock, a socket or Redis: every method that needs the time takes `now`, and
the network's dialogue serialises itself to JSON so that whichever gateway process gets the next
step of a dialogue can load it (the store keeps it, see `ussdgw.store`).

One dialogue, two views, the same states (PROTOCOL.md "USSD over SMPP")::

    phone dials *111#      deliver_sm op 1 (PSSR indication)   IDLE     --DIAL-->    PROCESSING
    menu shown, wait       submit_sm  op 2 (USSR request)      PROCESSING --SHOW-->  WAITING
    subscriber types 2     deliver_sm op 18 (USSR confirm)     WAITING  --ANSWER-->  PROCESSING
    result shown, closed   submit_sm  op 17 (PSSR response)    PROCESSING --END-->   CLOSED
    network releases       deliver_sm op 0x81 / 16 / 17        *        --ABORT-->   ABORTED
    nobody answers in time (checked when the next MO comes)    WAITING  --TIMEOUT--> TIMED_OUT

The network checks every step (`TRANSITIONS`). The phone is looser (`PHONE_TRANSITIONS`): its
subscriber may dial or cancel at any moment (a cancel leaves it IDLE), and whatever the network
sends is shown (SHOW for a USSR request, END for anything else). Any other event raises
`IllegalTransition`.

Errors (each carries `reply`, the Russian text that ends the dialogue on the phone)::

    UssdError
     +-- MalformedUssdString   the dialled string is not *SC[*SI...]# (TS 22.030)
     +-- DialogueExpired       an answer came after the step or the whole dialogue timed out
     +-- IllegalTransition     an event the current state does not allow (role, state, event named)
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from typing import Any

import orjson

from ussdgw.smpp.pdu import UssdOp
from ussdgw.smpp.text import _GSM7_ENCODE  # the default alphabet's table, to count septets

MAX_USSD_STRING = 182  # characters in one USSD string (GSM 7-bit, TS 23.038)
USSD_MAX_OCTETS = 160  # one USSD message (GSM 04.80)
USSD_MAX_GSM7 = 160  # unpacked septets: SMPP carries GSM 7-bit one septet per octet
USSD_MAX_UCS2 = 80  # characters: Cyrillic menus are UCS2, two octets each
VENDOR_ABORT_OPS = frozenset({0x81})  # "user aborted", as one vendor sends it

# *SC[*SI]*...# or #SC#: 1-2 leading * / #, a 1-4 digit service code, then *-separated
# supplementary parts of digits (a leading + for an international number), then #.
_USSD_STRING = re.compile(r"^(?P<prefix>[*#]{1,2})(?P<code>\d{1,4})(?P<rest>(?:\*\+?\d{1,20})*)#$")


class UssdError(Exception):
    """Root of this module's errors; `reply` is what the subscriber sees as the dialogue ends."""

    reply = "Запрос не выполнен. Попробуйте ещё раз позже."

    def __init__(self, message: str, reply: str | None = None) -> None:
        super().__init__(message)
        if reply is not None:
            self.reply = reply


class MalformedUssdString(UssdError):
    reply = "Неверный USSD-запрос. Наберите, например, *100# или *111#."


class DialogueExpired(UssdError):
    reply = "Время ожидания ответа истекло, сеанс завершён. Наберите запрос ещё раз."


class IllegalTransition(UssdError):
    def __init__(self, role: DialogueRole, state: DialogueState, event: DialogueEvent) -> None:
        super().__init__(f"{role.value} ussd dialogue: event {event.name} is not allowed in state {state.name}")
        self.role = role
        self.state = state
        self.event = event


# ---- the dialled string ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class UssdString:
    """`*111*828*1#` -> service code `111`, supplementary parts `('828', '1')`."""

    raw: str
    prefix: str
    service_code: str
    parts: tuple[str, ...] = ()

    @property
    def path(self) -> str:
        """Service code and parts joined by `*` (`111*828*1`): what the router matches prefixes of."""
        return "*".join((self.service_code, *self.parts))


def parse_ussd_string(text: str) -> UssdString:
    """Parse what the subscriber dialled; raises `MalformedUssdString` with a reply for anything else."""
    raw = text.strip()
    if not raw:
        raise MalformedUssdString("empty USSD string")
    if len(raw) > MAX_USSD_STRING:
        raise MalformedUssdString(f"USSD string of {len(raw)} characters, more than {MAX_USSD_STRING}")
    match = _USSD_STRING.match(raw)
    if match is None:
        raise MalformedUssdString(f"not a USSD string: {raw[:40]!r}")
    rest = match.group("rest")
    parts = tuple(rest[1:].split("*")) if rest else ()
    return UssdString(raw, match.group("prefix"), match.group("code"), parts)


def is_ussd_string(text: str) -> bool:
    """`parse_ussd_string` as a yes/no (for checking input ahead, e.g. a scenario's dial step)."""
    try:
        parse_ussd_string(text)
    except MalformedUssdString:
        return False
    return True


# ---- its_session_info (TLV 0x1383) ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionInfo:
    """Octet 1: session number; octet 2: sequence number << 1 | end-of-session bit."""

    session: int
    sequence: int
    end: bool = False

    def pack(self) -> int:
        if not 0 <= self.session <= 0xFF or not 0 <= self.sequence <= 0x7F:
            raise ValueError(f"its_session_info out of range: session {self.session}, sequence {self.sequence}")
        return self.session << 8 | self.sequence << 1 | int(self.end)


def unpack_session_info(value: int) -> SessionInfo:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"its_session_info {value} does not fit two octets")
    return SessionInfo(value >> 8, (value & 0xFF) >> 1, bool(value & 1))


def reply_session_info(received: int | None, *, end: bool) -> int | None:
    """The value to echo in a reply: the same session and sequence, the end bit set when closing."""
    if received is None:
        return None
    info = unpack_session_info(received)
    return SessionInfo(info.session, info.sequence, end).pack()


def next_session_info(session: int, sequence: int, *, end: bool = False) -> int:
    """A phone's value for its next PDU: its session and sequence numbers (each wrapped to its
    field: 8 and 7 bits), the end bit set when it releases the dialogue."""
    return SessionInfo(session & 0xFF, sequence & 0x7F, end).pack()


# ---- what an inbound ussd_service_op means ---------------------------------------------------------
class MoKind(Enum):
    DIAL = "dial"  # a new dialogue: PSSR indication (1) or phase-1 PSSD indication (0)
    ANSWER = "answer"  # the subscriber's answer to our USSR request: USSR confirm (18)
    ABORT = "abort"  # the network released the dialogue
    NOTICE_ACK = "notice_ack"  # USSN confirm (19): the phone saw a notice, nothing to answer
    UNSUPPORTED = "unsupported"  # an op meant for the other direction, or a vendor op we do not know


def classify_op(op: int | None, session_info: int | None = None) -> MoKind:
    """Map an inbound ussd_service_op (and an end-of-session bit, if any) to what it means here."""
    if op in (UssdOp.PSSR_INDICATION, UssdOp.PSSD_INDICATION):
        return MoKind.DIAL
    if op == UssdOp.USSR_CONFIRM:
        if session_info is not None and unpack_session_info(session_info).end:
            return MoKind.ABORT
        return MoKind.ANSWER
    if op in VENDOR_ABORT_OPS or op in (UssdOp.PSSD_RESPONSE, UssdOp.PSSR_RESPONSE):
        return MoKind.ABORT
    if op == UssdOp.USSN_CONFIRM:
        return MoKind.NOTICE_ACK
    return MoKind.UNSUPPORTED


# ---- fitting text into one USSD message --------------------------------------------------------------
_SEPTETS = {char: len(code) for char, code in _GSM7_ENCODE.items()}  # 1, or 2 for the extension table


def ussd_length(text: str) -> tuple[int, int]:
    """(units used, units allowed) for one USSD message: septets of 160 in GSM 7-bit, else UCS2 chars of 80."""
    septets = 0
    for char in text:
        cost = _SEPTETS.get(char)
        if cost is None:  # not in the GSM default alphabet: the whole message goes as UCS2
            return len(text.encode("utf-16-be")) // 2, USSD_MAX_UCS2
        septets += cost
    return septets, USSD_MAX_GSM7


def fits_one_message(text: str) -> bool:
    used, allowed = ussd_length(text)
    return used <= allowed


# ---- the dialogue ----------------------------------------------------------------------------------
class DialogueState(IntEnum):
    IDLE = 0
    PROCESSING = 1  # an MO is being handled; the reply is not decided yet
    WAITING = 2  # a USSR request went out: waiting for the subscriber's answer
    CLOSED = 3  # a PSSR response went out
    ABORTED = 4  # the network released the dialogue
    TIMED_OUT = 5  # the answer did not come in time (per step or whole dialogue)


class DialogueEvent(Enum):
    DIAL = "dial"
    SHOW = "show"
    ANSWER = "answer"
    END = "end"
    ABORT = "abort"
    TIMEOUT = "timeout"


class DialogueRole(Enum):
    NETWORK = "network"  # the USSD application behind the gateway: one dialogue object per dial
    PHONE = "phone"  # the handset: one dialogue on its screen, replaced by each dial


_S, _E = DialogueState, DialogueEvent
TRANSITIONS: dict[tuple[DialogueState, DialogueEvent], DialogueState] = {
    (_S.IDLE, _E.DIAL): _S.PROCESSING,
    (_S.PROCESSING, _E.SHOW): _S.WAITING,
    (_S.PROCESSING, _E.END): _S.CLOSED,
    (_S.PROCESSING, _E.ABORT): _S.ABORTED,
    (_S.WAITING, _E.ANSWER): _S.PROCESSING,
    (_S.WAITING, _E.ABORT): _S.ABORTED,
    (_S.WAITING, _E.TIMEOUT): _S.TIMED_OUT,
    (_S.WAITING, _E.END): _S.CLOSED,  # the application closes a waiting dialogue (a new dial replaced it)
}
_SCREEN = (_S.IDLE, _S.PROCESSING, _S.WAITING, _S.CLOSED)  # the states a phone's dialogue can be in
PHONE_TRANSITIONS: dict[tuple[DialogueState, DialogueEvent], DialogueState] = {
    **{(s, _E.DIAL): _S.PROCESSING for s in _SCREEN},  # a new dial replaces an open dialogue
    (_S.WAITING, _E.ANSWER): _S.PROCESSING,
    **{(s, _E.ABORT): _S.IDLE for s in _SCREEN},  # the subscriber closes the popup
    **{(s, _E.SHOW): _S.WAITING for s in _SCREEN},  # USSR request: shown, an answer expected
    **{(s, _E.END): _S.CLOSED for s in _SCREEN},  # PSSR/PSSD response, USSN, vendor ops: shown, closed
}
_TABLES = {DialogueRole.NETWORK: TRANSITIONS, DialogueRole.PHONE: PHONE_TRANSITIONS}
TERMINAL = frozenset({_S.CLOSED, _S.ABORTED, _S.TIMED_OUT})


def next_state(role: DialogueRole, state: DialogueState, event: DialogueEvent) -> DialogueState:
    """Where `event` takes a dialogue in `state`, for `role`; raises `IllegalTransition` off the table."""
    target = _TABLES[role].get((state, event))
    if target is None:
        raise IllegalTransition(role, state, event)
    return target


@dataclass(frozen=True, slots=True)
class Timeouts:
    step_s: float = 60.0  # for the subscriber's answer to one screen
    dialogue_s: float = 180.0  # for the whole dialogue, however quick each answer


@dataclass(slots=True)
class UssdDialogue:
    """One subscriber's USSD dialogue. `data` is the application's own state (JSON-able)."""

    msisdn: str
    service_code: str
    started_at: float
    dialogue_id: str = field(default_factory=lambda: secrets.token_hex(8))
    state: DialogueState = DialogueState.IDLE
    step: int = 0  # answers taken so far
    step_at: float = 0.0  # when the last screen went out
    session_info: int | None = None
    data: dict[str, Any] = field(default_factory=dict)

    ROLE = DialogueRole.NETWORK

    @classmethod
    def dial(cls, msisdn: str, service_code: str, now: float, session_info: int | None = None) -> UssdDialogue:
        """A new dialogue for a dialled string (it replaces whatever the phone had open)."""
        dialogue = cls(msisdn, service_code, started_at=now, step_at=now, session_info=session_info)
        dialogue._apply(DialogueEvent.DIAL)
        return dialogue

    @property
    def version(self) -> str:
        """Changes with every step: the store refuses to save a step computed from an older one."""
        return f"{self.dialogue_id}:{self.step}"

    def _apply(self, event: DialogueEvent) -> None:
        self.state = next_state(self.ROLE, self.state, event)

    def deadline(self, timeouts: Timeouts) -> float:
        """When the dialogue stops accepting an answer."""
        return min(self.step_at + timeouts.step_s, self.started_at + timeouts.dialogue_s)

    def answer(self, now: float, timeouts: Timeouts, session_info: int | None = None) -> None:
        """The subscriber answered; raises `DialogueExpired` (state TIMED_OUT) when it came too late."""
        if self.state is DialogueState.WAITING and now > self.deadline(timeouts):
            self._apply(DialogueEvent.TIMEOUT)
            whole = now > self.started_at + timeouts.dialogue_s
            raise DialogueExpired(f"answer {now - self.step_at:.1f}s after the screen "
                                  f"({'dialogue' if whole else 'step'} timeout)")
        self._apply(DialogueEvent.ANSWER)
        self.step += 1
        if session_info is not None:
            self.session_info = session_info

    def show(self, now: float) -> None:
        """A screen goes out and the dialogue waits for the answer (USSR request)."""
        self._apply(DialogueEvent.SHOW)
        self.step_at = now

    def end(self) -> None:
        """The last screen goes out and the dialogue closes (PSSR response)."""
        self._apply(DialogueEvent.END)

    def abort(self) -> None:
        self._apply(DialogueEvent.ABORT)

    @property
    def closed(self) -> bool:
        return self.state in TERMINAL

    @property
    def reply_op(self) -> UssdOp:
        """The ussd_service_op of the reply that the current state calls for."""
        if self.state is DialogueState.WAITING:
            return UssdOp.USSR_REQUEST
        if self.state is DialogueState.CLOSED:
            return UssdOp.PSSR_RESPONSE
        raise IllegalTransition(self.ROLE, self.state, DialogueEvent.SHOW)

    def to_json(self) -> str:
        """The dialogue as the store keeps it (UTF-8 JSON; orjson: one is written at every step)."""
        return orjson.dumps(
            {"msisdn": self.msisdn, "service_code": self.service_code, "started_at": self.started_at,
             "id": self.dialogue_id, "state": int(self.state), "step": self.step, "step_at": self.step_at,
             "session_info": self.session_info, "data": self.data},
        ).decode()

    @classmethod
    def from_json(cls, raw: str | bytes) -> UssdDialogue:
        d = orjson.loads(raw)
        return cls(d["msisdn"], d["service_code"], d["started_at"], d["id"], DialogueState(d["state"]), d["step"],
                   d["step_at"], d["session_info"], d["data"])


# ---- the phone's side ---------------------------------------------------------------------------------
MAX_ANSWER_CHARS = 160  # what a handset lets the subscriber type into one USSD answer


@dataclass(slots=True)
class UssdRequest:
    """What the phone sends for one move: the deliver_sm's destination, text, op and its_session_info."""

    to: str
    text: str
    op: int
    its_session_info: int


@dataclass(slots=True)
class PhoneDialogue:
    """The handset's side of a USSD dialogue: what the network showed last, whether it waits for an
    answer (USSR request) or has closed, and the `its_session_info` to echo. `version` bumps with
    every move (for whoever waits for the screen to change)."""

    state: DialogueState = DialogueState.IDLE
    service: str = ""  # the service code dialled (*111*828*1# -> *111#): where the dialogue's PDUs go
    session_number: int = 0
    sequence: int = 0
    its_session_info: int | None = None  # the last one the network sent, echoed back
    text: str = ""  # what the screen shows now
    last_op: int | None = None
    sender: str = ""
    version: int = 0

    ROLE = DialogueRole.PHONE

    def _apply(self, event: DialogueEvent) -> None:
        self.state = next_state(self.ROLE, self.state, event)
        self.version += 1

    @property
    def open(self) -> bool:
        """A dialogue is going on: the phone waits for the network, or the network for the subscriber."""
        return self.state in (DialogueState.PROCESSING, DialogueState.WAITING)

    def dial(self, dialled: UssdString, session_number: int) -> UssdRequest:
        """A new dialogue (replacing any open one). Its PDUs go to the service code: an SMPP address
        holds 20 octets at most, a dialled string up to 182 characters."""
        self._apply(DialogueEvent.DIAL)
        self.service = f"*{dialled.service_code}#"
        self.sender, self.text = "", ""
        self.session_number = session_number
        self.sequence, self.its_session_info, self.last_op = 0, None, UssdOp.PSSR_INDICATION
        return UssdRequest(self.service, dialled.raw, UssdOp.PSSR_INDICATION, self._session_info())

    def answer(self, text: str) -> UssdRequest:
        """The subscriber answers the network's question (USSR confirm)."""
        if len(text) > MAX_ANSWER_CHARS:
            raise UssdError(f"a USSD answer holds at most {MAX_ANSWER_CHARS} characters")
        self._apply(DialogueEvent.ANSWER)
        self.sequence += 1
        self.last_op = UssdOp.USSR_CONFIRM
        return UssdRequest(self.service, text, UssdOp.USSR_CONFIRM, self._session_info())

    def cancel(self) -> UssdRequest | None:
        """The subscriber closes the popup; if a dialogue was open, the network is told (end bit)."""
        was_open = self.open
        self._apply(DialogueEvent.ABORT)
        self.text = ""
        if not was_open:
            return None
        self.sequence += 1
        return UssdRequest(self.service, "", UssdOp.USSR_CONFIRM, self._session_info(end=True))

    def receive(self, sender: str, text: str, op: int, its_session_info: int | None) -> None:
        """The network's PDU is shown: a USSR request asks for an answer, anything else ends the dialogue."""
        self._apply(DialogueEvent.SHOW if op == UssdOp.USSR_REQUEST else DialogueEvent.END)
        if its_session_info is not None:
            self.its_session_info = its_session_info
        self.text, self.last_op, self.sender = text, op, sender
        if not self.service:
            self.service = sender

    def _session_info(self, *, end: bool = False) -> int:
        """The network's session number (ours if it sent none) with our sequence number."""
        session = self.session_number if self.its_session_info is None else self.its_session_info >> 8
        return next_session_info(session, self.sequence, end=end)
