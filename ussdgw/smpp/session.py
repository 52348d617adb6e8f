"""An SMPP 3.4 session as an I/O-free state machine, for both ends of the link.

Feed it bytes with `receive_data`, act on the events it returns, queue PDUs with `send` /
`respond`, and write `data_to_send()` to the socket. It frames, decodes, numbers requests,
matches responses by sequence number, answers enquire_link and unbind by itself, and enforces
the bind state: a PDU that is illegal in the current state, or cannot be parsed, is answered
with an error status (`generic_nack` where no response type fits) and the session goes on.
Only a broken frame length, after which no further PDU can be found, ends the session.

Everything that decides the bind state lives in the two tables below, and nowhere else:

- `REQUESTS`: which requests each side may send in each state (SMPP 3.4 §2.3). The receiving
  side checks the same table with the sender's role, so both ends agree by construction;
- `TRANSITIONS`: how the state moves, by role, state and `SessionEvent`::

      ESME:  OPEN --SEND_BIND--> BINDING --BIND_OK_TX/RX/TRX--> BOUND_TX/RX/TRX
      SMSC:  OPEN --BIND_RECEIVED--> BINDING --BIND_OK_TX/RX/TRX--> BOUND_TX/RX/TRX
      both:  BINDING --BIND_FAILED--> OPEN
             bound --SEND_UNBIND--> UNBINDING --UNBIND_ANSWERED--> CLOSED
             bound or UNBINDING --UNBIND_RECEIVED--> CLOSED;   any --CLOSE--> CLOSED

  (an ESME may also unbind from OPEN or BINDING, as SMPP 3.4 lets the SMSC accept it there).

A local event outside the table (we bind twice, we submit before binding) raises `SessionError`
naming role, state and event: that is our bug. A remote one never raises: the peer gets an error
status or the event becomes a `ProtocolError`.

The session also keeps every request of ours that waits for its response (`outstanding`), each
with an optional deadline and an opaque `token` (the I/O layer's future): there is no second
table of pending requests in the transport. `expire(now)` hands back the overdue ones.

Errors::

    SessionError   we tried something the session's state forbids (role, state and event named)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum, IntEnum
from typing import Any

import structlog

from ussdgw.records import record
from ussdgw.smpp import codec
from ussdgw.smpp.pdu import (
    REQUEST_RESPONSE,
    Bind,
    BindMode,
    BindResp,
    CommandId,
    DataSmResp,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    QuerySmResp,
    Status,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    command_of,
    with_sequence,
)

log = structlog.get_logger("ussdgw.smpp.session")


class Role(Enum):
    ESME = "esme"
    SMSC = "smsc"


class SessionState(IntEnum):
    OPEN = 0
    BINDING = 1
    BOUND_TX = 2
    BOUND_RX = 3
    BOUND_TRX = 4
    UNBINDING = 5
    CLOSED = 6


class SessionEvent(Enum):
    SEND_BIND = "send bind"  # ESME: bind_* sent
    BIND_RECEIVED = "bind received"  # SMSC: bind_* received
    BIND_OK_TX = "bind ok (transmitter)"  # the bind_resp said ESME_ROK
    BIND_OK_RX = "bind ok (receiver)"
    BIND_OK_TRX = "bind ok (transceiver)"
    BIND_FAILED = "bind failed"  # the bind_resp (or a generic_nack) carried an error
    SEND_UNBIND = "send unbind"
    UNBIND_ANSWERED = "unbind answered"  # the response to our unbind came
    UNBIND_RECEIVED = "unbind received"  # the peer unbound (answered by the session)
    CLOSE = "close"  # the connection is gone, or its framing broke


_S, _E, _C = SessionState, SessionEvent, CommandId
_BOUND_STATES = (_S.BOUND_TX, _S.BOUND_RX, _S.BOUND_TRX)
_BINDS = frozenset({_C.BIND_RECEIVER, _C.BIND_TRANSMITTER, _C.BIND_TRANSCEIVER})

# Requests each side may send, by the sender's role and the session's state (as the end that
# checks sees it). Once an unbind is out, only enquire_link and a crossing unbind are in order.
REQUESTS: dict[tuple[Role, SessionState], frozenset[CommandId]] = {
    (Role.ESME, _S.OPEN): _BINDS | {_C.ENQUIRE_LINK, _C.UNBIND},
    (Role.ESME, _S.BINDING): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.ESME, _S.BOUND_TX): frozenset({_C.SUBMIT_SM, _C.DATA_SM, _C.QUERY_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.ESME, _S.BOUND_RX): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.ESME, _S.BOUND_TRX): frozenset({_C.SUBMIT_SM, _C.DATA_SM, _C.QUERY_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, _S.OPEN): frozenset({_C.ENQUIRE_LINK}),
    (Role.SMSC, _S.BINDING): frozenset({_C.ENQUIRE_LINK}),
    (Role.SMSC, _S.BOUND_TX): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, _S.BOUND_RX): frozenset({_C.DELIVER_SM, _C.DATA_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, _S.BOUND_TRX): frozenset({_C.DELIVER_SM, _C.DATA_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
    **{(role, _S.UNBINDING): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}) for role in Role},
}
_UNBIND_FROM = {(role, state) for (role, state), allowed in REQUESTS.items()
                if _C.UNBIND in allowed and state is not _S.UNBINDING}

TRANSITIONS: dict[tuple[Role, SessionState, SessionEvent], SessionState] = {
    (Role.ESME, _S.OPEN, _E.SEND_BIND): _S.BINDING,
    (Role.SMSC, _S.OPEN, _E.BIND_RECEIVED): _S.BINDING,
    **{(role, _S.BINDING, _E.BIND_OK_TX): _S.BOUND_TX for role in Role},
    **{(role, _S.BINDING, _E.BIND_OK_RX): _S.BOUND_RX for role in Role},
    **{(role, _S.BINDING, _E.BIND_OK_TRX): _S.BOUND_TRX for role in Role},
    **{(role, _S.BINDING, _E.BIND_FAILED): _S.OPEN for role in Role},
    # Unbind: sent wherever the table above lets us send it, received wherever it lets the peer
    # (in UNBINDING too: both ends unbound at once).
    **{(role, state, _E.SEND_UNBIND): _S.UNBINDING for (role, state) in _UNBIND_FROM},
    **{(role, _S.UNBINDING, _E.UNBIND_ANSWERED): _S.CLOSED for role in Role},
    **{(receiver, state, _E.UNBIND_RECEIVED): _S.CLOSED
       for (sender, state), allowed in REQUESTS.items() if _C.UNBIND in allowed
       for receiver in Role if receiver is not sender},
    **{(role, state, _E.CLOSE): _S.CLOSED for role in Role for state in SessionState},
}

_BIND_OK = {BindMode.TRANSMITTER: _E.BIND_OK_TX, BindMode.RECEIVER: _E.BIND_OK_RX,
            BindMode.TRANSCEIVER: _E.BIND_OK_TRX}
_PEER = {Role.ESME: Role.SMSC, Role.SMSC: Role.ESME}

_EMPTY_RESPONSE: dict[CommandId, type[Pdu]] = {
    _C.SUBMIT_SM_RESP: SubmitSmResp,
    _C.DELIVER_SM_RESP: DeliverSmResp,
    _C.DATA_SM_RESP: DataSmResp,
    _C.QUERY_SM_RESP: QuerySmResp,
    _C.ENQUIRE_LINK_RESP: EnquireLinkResp,
    _C.UNBIND_RESP: UnbindResp,
}


class SessionError(Exception):
    """We tried something the session's state forbids (a bug on our side, not the peer's)."""

    def __init__(self, role: Role, state: SessionState, event: SessionEvent | CommandId) -> None:
        what = event.value if isinstance(event, SessionEvent) else f"send {event.name.lower()}"
        super().__init__(f"{role.value}: {what} is not allowed in state {state.name}")
        self.role, self.state, self.event = role, state, event


@record
class RequestReceived:
    """A request the application must answer with `respond` (submit_sm, deliver_sm, bind, ...)."""

    pdu: Pdu


@record
class ResponseReceived:
    """A response, paired with the request of ours it answers (None if we sent no such request)
    and the token that request was sent with."""

    pdu: Pdu
    request: Pdu | None
    token: Any = None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; the session already answered what needed an answer."""

    reason: str
    status: int
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Unbound:
    """The session is over (the peer unbound, or answered our unbind)."""

    by_peer: bool


Event = RequestReceived | ResponseReceived | ProtocolError | Unbound


@dataclass(slots=True)
class Outstanding:
    """A request of ours waiting for its response: when to give up on it (None: never), and the
    caller's token (whatever it needs to hand the response on, e.g. a future)."""

    request: Pdu
    deadline: float | None = None
    token: Any = None


class SmppSession:
    def __init__(self, role: Role, *, max_pdu_size: int = codec.MAX_PDU_SIZE) -> None:
        self.role = role
        self.state = SessionState.OPEN
        self.bind_mode: BindMode | None = None
        self.system_id = ""
        self.max_pdu_size = max_pdu_size
        self.outstanding: dict[int, Outstanding] = {}
        self._may_send = REQUESTS.get((role, SessionState.OPEN), frozenset())
        self._may_receive = REQUESTS.get((_PEER[role], SessionState.OPEN), frozenset())
        self._in = bytearray()
        self._out = bytearray()
        self._next_sequence = 1

    # ---- the state machine ----------------------------------------------------------------
    def _move(self, event: SessionEvent) -> bool:
        """Apply `event`; False (state unchanged) when the table has no such move."""
        target = TRANSITIONS.get((self.role, self.state, event))
        if target is None:
            return False
        if target is not self.state:
            log.debug("smpp_session_state", role=self.role.value, on=event.name, old=self.state.name,
                      new=target.name)
        self.state = target
        self._may_send = REQUESTS.get((self.role, target), frozenset())
        self._may_receive = REQUESTS.get((_PEER[self.role], target), frozenset())
        return True

    def _must_move(self, event: SessionEvent) -> None:
        """A local event: outside the table it is our bug, and says so."""
        if not self._move(event):
            raise SessionError(self.role, self.state, event)

    def _bound(self, mode: BindMode, system_id: str) -> None:
        self._must_move(_BIND_OK[mode])
        self.bind_mode = mode
        self.system_id = system_id

    # ---- outbound -------------------------------------------------------------------------
    def next_sequence(self) -> int:
        seq = self._next_sequence
        self._next_sequence = 1 if seq >= 0x7FFFFFFF else seq + 1
        return seq

    def send(self, pdu: Pdu, *, deadline: float | None = None, token: Any = None) -> Pdu:
        """Queue a request; returns it with its sequence number, for matching the response.

        `deadline` (in the caller's clock) is when `expire` gives up on it; `token` comes back with
        its response (`ResponseReceived.token`) or from `expire` / `close`.
        """
        command = command_of(pdu)
        if command not in self._may_send:
            raise SessionError(self.role, self.state, command)
        if command in _BINDS:
            self._must_move(SessionEvent.SEND_BIND)
        elif command is _C.UNBIND:
            self._must_move(SessionEvent.SEND_UNBIND)
        pdu = with_sequence(pdu, self.next_sequence())
        self._out += codec.encode(pdu)
        self.outstanding[pdu.sequence] = Outstanding(pdu, deadline, token)
        return pdu

    def respond(self, request: Pdu, response: Pdu) -> None:
        """Queue the response to a request we received (sequence copied from the request)."""
        if self.state is SessionState.CLOSED:
            return
        if isinstance(request, Bind) and isinstance(response, BindResp):
            response = replace(response, sequence=request.sequence, mode=request.mode)
            if response.status == Status.ROK:
                self._bound(request.mode, request.system_id)
            else:
                self._must_move(SessionEvent.BIND_FAILED)
        self._out += codec.encode(response, request.sequence)

    def forget(self, sequence: int) -> Pdu | None:
        """Stop waiting for the response to a request; a late response then arrives as a
        `ResponseReceived` with no request."""
        entry = self.outstanding.pop(sequence, None)
        return entry.request if entry is not None else None

    def expire(self, now: float) -> list[Outstanding]:
        """Forget and return the requests whose deadline is `now` or earlier."""
        overdue = [seq for seq, entry in self.outstanding.items()
                   if entry.deadline is not None and entry.deadline <= now]
        return [self.outstanding.pop(seq) for seq in overdue]

    def next_deadline(self) -> float | None:
        """The earliest deadline of the requests still outstanding."""
        return min((e.deadline for e in self.outstanding.values() if e.deadline is not None), default=None)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def is_bound(self) -> bool:
        return self.state in _BOUND_STATES

    @property
    def can_deliver(self) -> bool:
        """SMSC side: may we send deliver_sm on this bind?"""
        return _C.DELIVER_SM in self._may_send

    @property
    def can_submit(self) -> bool:
        """ESME side: may we send submit_sm on this bind?"""
        return _C.SUBMIT_SM in self._may_send

    def close(self) -> list[Outstanding]:
        """The connection is gone: the session ends, and the requests that will never be answered
        are handed back."""
        self._move(SessionEvent.CLOSE)
        lost = list(self.outstanding.values())
        self.outstanding.clear()
        return lost

    # ---- inbound --------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        """The events of the PDUs `data` completes (what is left of a PDU waits for the next call).

        PDUs are cut from the bytes read where they lie: one copy per PDU, and the buffer is
        touched only when a PDU spans two reads."""
        if self._in:
            self._in += data
            data = bytes(self._in)
            self._in.clear()
        elif type(data) is not bytes:  # a bytearray or memoryview: PDUs hold bytes
            data = bytes(data)
        events: list[Event] = []
        pos, end = 0, len(data)
        while self.state is not SessionState.CLOSED and end - pos >= 4:
            length = int.from_bytes(data[pos:pos + 4], "big")
            if length < codec.HEADER_SIZE or length > self.max_pdu_size:
                # Past a broken length there is no telling where the next PDU starts.
                seq = int.from_bytes(data[pos + 12:pos + 16], "big") if end - pos >= 16 else 0
                self._out += codec.encode(GenericNack(sequence=seq, status=Status.RINVCMDLEN))
                pos = end
                self._move(SessionEvent.CLOSE)
                events.append(ProtocolError(f"command_length {length} out of range", Status.RINVCMDLEN, fatal=True))
                break
            if end - pos < length:
                break
            self._receive_pdu(data if length == end else data[pos:pos + length], events)
            pos += length
        if pos < end:
            self._in += data[pos:]
        return events

    def _receive_pdu(self, frame: bytes, events: list[Event]) -> None:
        try:
            pdu = codec.decode(frame)
        except codec.PduDecodeError as exc:
            events.append(self._undecodable(exc))
            return
        command = command_of(pdu)
        if command & 0x80000000:
            self._response(pdu, events)
        elif command not in self._may_receive or (command in _BINDS and not self._move(SessionEvent.BIND_RECEIVED)):
            events.append(self._refuse(pdu, command))
        elif command is _C.ENQUIRE_LINK:
            self._out += codec.encode(EnquireLinkResp(sequence=pdu.sequence))
        elif command is _C.UNBIND:
            self._out += codec.encode(UnbindResp(sequence=pdu.sequence))
            self._move(SessionEvent.UNBIND_RECEIVED)
            events.append(Unbound(by_peer=True))
        else:
            events.append(RequestReceived(pdu))

    def _response(self, pdu: Pdu, events: list[Event]) -> None:
        entry = self.outstanding.pop(pdu.sequence, None)
        if entry is None:
            events.append(ResponseReceived(pdu, None))
            return
        request = entry.request
        if not isinstance(pdu, GenericNack) and REQUEST_RESPONSE.get(command_of(request)) is not command_of(pdu):
            self.outstanding[pdu.sequence] = entry
            events.append(ProtocolError(
                f"{command_of(pdu).name.lower()} answers {command_of(request).name.lower()}", Status.RSYSERR
            ))
            return
        # The response always reaches its requester (with its token), whatever it does to the state.
        events.append(ResponseReceived(pdu, request, entry.token))
        if isinstance(request, Bind):
            if pdu.status == Status.ROK and isinstance(pdu, BindResp):
                if self._move(_BIND_OK[request.mode]):
                    self.bind_mode, self.system_id = request.mode, pdu.system_id
            else:
                self._move(SessionEvent.BIND_FAILED)
        elif isinstance(request, Unbind):
            self._move(SessionEvent.UNBIND_ANSWERED)
            events.append(Unbound(by_peer=False))

    def _refuse(self, pdu: Pdu, command: CommandId) -> Event:
        if command in _BINDS and self.is_bound:
            status = Status.RALYBND
        elif command is _C.DELIVER_SM and self.role is Role.SMSC:
            status = Status.RINVCMDID
        else:
            status = Status.RINVBNDSTS
        if command in _BINDS:
            assert isinstance(pdu, Bind)
            self._out += codec.encode(BindResp(sequence=pdu.sequence, status=status, mode=pdu.mode))
        else:
            resp_id = REQUEST_RESPONSE.get(command)
            resp_cls = _EMPTY_RESPONSE.get(resp_id) if resp_id is not None else None
            resp = resp_cls(sequence=pdu.sequence, status=status) if resp_cls else GenericNack(
                sequence=pdu.sequence, status=status)
            self._out += codec.encode(resp)
        return ProtocolError(f"{command.name.lower()} not allowed in state {self.state.name}", status)

    def _undecodable(self, exc: codec.PduDecodeError) -> Event:
        is_response = bool(exc.command_id & 0x80000000)
        if is_response:
            entry = self.outstanding.pop(exc.sequence, None)
            if entry is not None:
                # A garbled response still settles its request: the caller must not wait forever.
                return ResponseReceived(GenericNack(sequence=exc.sequence, status=exc.status), entry.request,
                                        entry.token)
        else:
            self._out += codec.encode(GenericNack(sequence=exc.sequence, status=exc.status))
        return ProtocolError(str(exc), exc.status)


def enquire_link() -> EnquireLink:
    return EnquireLink()
