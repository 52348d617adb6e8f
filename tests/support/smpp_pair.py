"""Two SMPP sessions, an ESME and an SMSC, joined by a fake link: no sockets, no event loop.

Like h11's `ConnectionPair`: whatever one side queues is handed to the other as bytes (cut into
pieces of `segment` octets when set, as TCP may), and the events that come out are returned, so
a test reads as the conversation it checks::

    pair = SessionPair()
    pair.bind()
    sent, [request] = pair.send(pair.esme, SubmitSm(...))
    [response] = pair.respond(pair.smsc, request.pdu, SubmitSmResp(message_id="1"))
"""

from __future__ import annotations

from typing import Any

from ussdgw.smpp.pdu import Bind, BindMode, BindResp, Pdu
from ussdgw.smpp.session import Event, RequestReceived, ResponseReceived, Role, SessionState, SmppSession


class SessionPair:
    def __init__(self, *, segment: int | None = None) -> None:
        self.esme = SmppSession(Role.ESME)
        self.smsc = SmppSession(Role.SMSC)
        self.segment = segment

    def peer(self, session: SmppSession) -> SmppSession:
        return self.smsc if session is self.esme else self.esme

    def deliver(self, sender: SmppSession) -> list[Event]:
        """Hand what `sender` queued to its peer; the peer's events."""
        return self._receive(self.peer(sender), sender.data_to_send())

    def _receive(self, receiver: SmppSession, data: bytes) -> list[Event]:
        if not self.segment:
            return receiver.receive_data(data)
        events: list[Event] = []
        for start in range(0, len(data), self.segment):
            events += receiver.receive_data(data[start : start + self.segment])
        return events

    def send(self, sender: SmppSession, pdu: Pdu, *, deadline: float | None = None,
             token: Any = None) -> tuple[Pdu, list[Event]]:
        """`sender` sends a request; the request as numbered, and the events at the peer."""
        sent = sender.send(pdu, deadline=deadline, token=token)
        return sent, self.deliver(sender)

    def respond(self, responder: SmppSession, request: Pdu, response: Pdu) -> list[Event]:
        """`responder` answers `request`; the events at the side that sent it."""
        responder.respond(request, response)
        return self.deliver(responder)

    def pump(self) -> tuple[list[Event], list[Event]]:
        """Move bytes both ways until neither side has anything to send; (ESME's, SMSC's) events.
        Automatic answers (enquire_link_resp, unbind_resp) flow back this way."""
        at_esme: list[Event] = []
        at_smsc: list[Event] = []
        while True:
            to_smsc, to_esme = self.esme.data_to_send(), self.smsc.data_to_send()
            if not to_smsc and not to_esme:
                return at_esme, at_smsc
            at_smsc += self._receive(self.smsc, to_smsc)
            at_esme += self._receive(self.esme, to_esme)

    def bind(self, mode: BindMode = BindMode.TRANSCEIVER, *, system_id: str = "esme",
             password: str = "secret") -> ResponseReceived:
        """Bind the way an ESME and an SMSC do, accepted; returns the ESME's response event."""
        _, [request] = self.send(self.esme, Bind(mode=mode, system_id=system_id, password=password))
        assert isinstance(request, RequestReceived) and isinstance(request.pdu, Bind)
        [response] = self.respond(self.smsc, request.pdu, BindResp(system_id="smsc"))
        assert isinstance(response, ResponseReceived)
        bound = {BindMode.TRANSMITTER: SessionState.BOUND_TX, BindMode.RECEIVER: SessionState.BOUND_RX,
                 BindMode.TRANSCEIVER: SessionState.BOUND_TRX}[mode]
        assert self.esme.state is self.smsc.state is bound
        return response
