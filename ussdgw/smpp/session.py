"""An SMPP 3.4 session as an I/O-free state machine, for both ends of the link.

Feed it bytes with `receive_data`, act on the events it returns, queue PDUs with `send` /
`respond`, and write `data_to_send()` to the socket. It frames, decodes, numbers requests,
matches responses by sequence number, answers enquire_link and unbind by itself, and enforces
the bind state: a PDU that is illegal in the current state, or cannot be parsed, is answered
with an error status (`generic_nack` where no response type fits) and the session goes on.
Only a broken frame length, after which no further PDU can be found, ends the session.

Bind states (SMPP 3.4 §2.3) and what each allows is the table `_ALLOWED` below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum, IntEnum

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
)


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


_BOUND = {BindMode.TRANSMITTER: SessionState.BOUND_TX, BindMode.RECEIVER: SessionState.BOUND_RX,
          BindMode.TRANSCEIVER: SessionState.BOUND_TRX}

# Requests a peer may send us, by our role and our state.
_C = CommandId
_ALLOWED: dict[tuple[Role, SessionState], frozenset[CommandId]] = {
    (Role.SMSC, SessionState.OPEN): frozenset({_C.BIND_RECEIVER, _C.BIND_TRANSMITTER, _C.BIND_TRANSCEIVER,
                                               _C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, SessionState.BINDING): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, SessionState.BOUND_TX): frozenset({_C.SUBMIT_SM, _C.DATA_SM, _C.QUERY_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, SessionState.BOUND_RX): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.SMSC, SessionState.BOUND_TRX): frozenset({_C.SUBMIT_SM, _C.DATA_SM, _C.QUERY_SM, _C.ENQUIRE_LINK,
                                                    _C.UNBIND}),
    (Role.ESME, SessionState.OPEN): frozenset({_C.ENQUIRE_LINK}),
    (Role.ESME, SessionState.BINDING): frozenset({_C.ENQUIRE_LINK}),
    (Role.ESME, SessionState.BOUND_TX): frozenset({_C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.ESME, SessionState.BOUND_RX): frozenset({_C.DELIVER_SM, _C.DATA_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
    (Role.ESME, SessionState.BOUND_TRX): frozenset({_C.DELIVER_SM, _C.DATA_SM, _C.ENQUIRE_LINK, _C.UNBIND}),
}
_BIND_COMMANDS = frozenset({_C.BIND_RECEIVER, _C.BIND_TRANSMITTER, _C.BIND_TRANSCEIVER})

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


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request the application must answer with `respond` (submit_sm, deliver_sm, bind, ...)."""

    pdu: Pdu


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response, paired with the request of ours it answers (None if we sent no such request)."""

    pdu: Pdu
    request: Pdu | None


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """The peer broke the protocol; `answered` says whether the session already replied."""

    reason: str
    status: int
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class Unbound:
    """The session is over (the peer unbound, or answered our unbind)."""

    by_peer: bool


Event = RequestReceived | ResponseReceived | ProtocolError | Unbound


class SmppSession:
    def __init__(self, role: Role, *, max_pdu_size: int = codec.MAX_PDU_SIZE) -> None:
        self.role = role
        self.state = SessionState.OPEN
        self.bind_mode: BindMode | None = None
        self.system_id = ""
        self.max_pdu_size = max_pdu_size
        self.outstanding: dict[int, Pdu] = {}
        self._in = bytearray()
        self._out = bytearray()
        self._next_sequence = 1

    # ---- outbound -------------------------------------------------------------------------
    def next_sequence(self) -> int:
        seq = self._next_sequence
        self._next_sequence = 1 if seq >= 0x7FFFFFFF else seq + 1
        return seq

    def send(self, pdu: Pdu) -> Pdu:
        """Queue a request; returns it with its sequence number, for matching the response."""
        if self.state is SessionState.CLOSED:
            raise SessionError("session is closed")
        command = command_of(pdu)
        if isinstance(pdu, Bind):
            if self.role is not Role.ESME or self.state is not SessionState.OPEN:
                raise SessionError(f"{self.role.value} cannot bind in state {self.state.name}")
            self.state = SessionState.BINDING
        elif isinstance(pdu, Unbind):
            self.state = SessionState.UNBINDING
        elif command is not _C.ENQUIRE_LINK and not self.is_bound:
            raise SessionError(f"{self.role.value} cannot send {command.name.lower()} in state {self.state.name}")
        pdu = replace(pdu, sequence=self.next_sequence())
        self._out += codec.encode(pdu)
        self.outstanding[pdu.sequence] = pdu
        return pdu

    def respond(self, request: Pdu, response: Pdu) -> None:
        """Queue the response to a request we received (sequence copied from the request)."""
        if self.state is SessionState.CLOSED:
            return
        response = replace(response, sequence=request.sequence)
        if isinstance(request, Bind) and isinstance(response, BindResp):
            response = replace(response, mode=request.mode)
            if response.status == Status.ROK:
                self.state = _BOUND[request.mode]
                self.bind_mode = request.mode
                self.system_id = request.system_id
            else:
                self.state = SessionState.OPEN
        self._out += codec.encode(response)

    def forget(self, sequence: int) -> Pdu | None:
        """Stop waiting for the response to a request (it timed out); a late response then
        arrives as a `ResponseReceived` with no request."""
        return self.outstanding.pop(sequence, None)

    def data_to_send(self) -> bytes:
        data = bytes(self._out)
        self._out.clear()
        return data

    @property
    def is_bound(self) -> bool:
        return self.state in (SessionState.BOUND_TX, SessionState.BOUND_RX, SessionState.BOUND_TRX)

    @property
    def can_deliver(self) -> bool:
        """SMSC side: may we send deliver_sm on this bind?"""
        return self.state in (SessionState.BOUND_RX, SessionState.BOUND_TRX)

    @property
    def can_submit(self) -> bool:
        """ESME side: may we send submit_sm on this bind?"""
        return self.state in (SessionState.BOUND_TX, SessionState.BOUND_TRX)

    def close(self) -> None:
        self.state = SessionState.CLOSED

    # ---- inbound --------------------------------------------------------------------------
    def receive_data(self, data: bytes) -> list[Event]:
        self._in += data
        events: list[Event] = []
        while self.state is not SessionState.CLOSED and len(self._in) >= 4:
            length = int.from_bytes(self._in[:4], "big")
            if length < codec.HEADER_SIZE or length > self.max_pdu_size:
                # Past a broken length there is no telling where the next PDU starts.
                seq = int.from_bytes(self._in[12:16], "big") if len(self._in) >= 16 else 0
                self._out += codec.encode(GenericNack(sequence=seq, status=Status.RINVCMDLEN))
                self._in.clear()
                self.state = SessionState.CLOSED
                events.append(ProtocolError(f"command_length {length} out of range", Status.RINVCMDLEN, fatal=True))
                break
            if len(self._in) < length:
                break
            frame = bytes(self._in[:length])
            del self._in[:length]
            event = self._receive_pdu(frame)
            if event is not None:
                events.append(event)
        return events

    def _receive_pdu(self, frame: bytes) -> Event | None:
        try:
            pdu = codec.decode(frame)
        except codec.PduDecodeError as exc:
            return self._undecodable(exc)
        command = command_of(pdu)
        if pdu.is_response:
            return self._response(pdu)
        if command not in _ALLOWED[(self.role, self._state_for_rules())]:
            return self._refuse(pdu, command)
        if command is _C.ENQUIRE_LINK:
            self._out += codec.encode(EnquireLinkResp(sequence=pdu.sequence))
            return None
        if command is _C.UNBIND:
            self._out += codec.encode(UnbindResp(sequence=pdu.sequence))
            self.state = SessionState.CLOSED
            return Unbound(by_peer=True)
        if command in _BIND_COMMANDS:
            self.state = SessionState.BINDING
        return RequestReceived(pdu)

    def _state_for_rules(self) -> SessionState:
        return SessionState.OPEN if self.state is SessionState.UNBINDING else self.state

    def _response(self, pdu: Pdu) -> Event:
        request = self.outstanding.pop(pdu.sequence, None)
        if request is not None and not isinstance(pdu, GenericNack):
            expected = REQUEST_RESPONSE.get(command_of(request))
            if expected is not command_of(pdu):
                self.outstanding[pdu.sequence] = request
                return ProtocolError(
                    f"{command_of(pdu).name.lower()} answers {command_of(request).name.lower()}", Status.RSYSERR
                )
        if isinstance(request, Bind) and isinstance(pdu, BindResp | GenericNack):
            if pdu.status == Status.ROK and isinstance(pdu, BindResp):
                self.state = _BOUND[request.mode]
                self.bind_mode = request.mode
                self.system_id = pdu.system_id
            else:
                self.state = SessionState.OPEN
        elif isinstance(request, Unbind):
            self.state = SessionState.CLOSED
            return Unbound(by_peer=False)
        return ResponseReceived(pdu, request)

    def _refuse(self, pdu: Pdu, command: CommandId) -> Event:
        if command in _BIND_COMMANDS and self.is_bound:
            status = Status.RALYBND
        elif command in (_C.DELIVER_SM,) and self.role is Role.SMSC:
            status = Status.RINVCMDID
        else:
            status = Status.RINVBNDSTS
        if command in _BIND_COMMANDS:
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
            request = self.outstanding.pop(exc.sequence, None)
            if request is not None:
                # A garbled response still settles its request: the caller must not wait forever.
                return ResponseReceived(GenericNack(sequence=exc.sequence, status=exc.status), request)
        else:
            self._out += codec.encode(GenericNack(sequence=exc.sequence, status=exc.status))
        return ProtocolError(str(exc), exc.status)


def enquire_link() -> EnquireLink:
    return EnquireLink()
