"""One SMPP connection on asyncio, for either end: `SmppLink` moves bytes between a
StreamReader/StreamWriter and an `SmppSession`, and does nothing else.

- reading: `run()` feeds what arrives to the session; responses settle the future of their
  request, every other event goes to `on_event` (the owner: the gateway's ESME, the simulator's
  SMSC); what the session queued meanwhile leaves in one write;
- writing is coalesced: every PDU queued during one turn of the event loop leaves in one send;
- requests: `request` / `call` (inside the window) give a future per request; the session keeps
  it with the request (its `token`), so there is one table of outstanding requests, not two;
- response timeouts: one timer per link, armed for the earliest deadline; when it fires, the
  session hands back what is overdue (`SmppSession.expire`). No timer or task per PDU;
- ending: `keepalive` (enquire_link while bound), `unbind` (by the book), `close`, `abort` (as a
  crash would); whatever is still outstanding then fails with `LinkDown`.

Errors::

    LinkDown (ConnectionError)       the link is gone or going; safe to try again on the next bind
    ResponseTimeout (TimeoutError)   no response within the timeout; the request is forgotten
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from ussdgw.link.flow import Window
from ussdgw.smpp.pdu import EnquireLink, Pdu, Status, Unbind
from ussdgw.smpp.session import Event, ResponseReceived, Role, SessionState, SmppSession

READ_SIZE = 65536


class LinkDown(ConnectionError):
    """The SMPP link went away (or is unbinding) while a request was outstanding or about to be
    sent; safe to retry on the next bind. `maybe_sent`: the request may have reached the peer (it
    was outstanding when the link went), so a resend may repeat it; False when it never left."""

    def __init__(self, reason: str, *, maybe_sent: bool = True) -> None:
        super().__init__(reason)
        self.maybe_sent = maybe_sent


class ResponseTimeout(TimeoutError):
    """The peer did not answer a request within its response timeout."""


EventHandler = Callable[[Event], None]


class SmppLink:
    """One TCP connection and its session; lives from connect (or accept) to close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, session: SmppSession,
                 on_event: EventHandler, *, response_timeout_s: float = 10.0, window: int = 64) -> None:
        self.reader = reader
        self.writer = writer
        self.session = session
        self.on_event = on_event
        self.response_timeout_s = response_timeout_s
        self.window = Window(window)
        self.closed = asyncio.Event()
        self.peer = writer.get_extra_info("peername")
        self.error: OSError | None = None  # why reading stopped, when it was not a clean end
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # ---- writing ------------------------------------------------------------------------------
    def flush_soon(self) -> None:
        """Write what the session has queued at the end of this loop turn (one send for many PDUs)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    # ---- requests and responses -------------------------------------------------------------
    def request(self, pdu: Pdu, timeout: float | None = None) -> asyncio.Future[Pdu]:
        """Send a request outside the window; the future gets its response, `ResponseTimeout`
        (after `timeout`, default `response_timeout_s`) or `LinkDown`."""
        if self.closed.is_set() or self.session.state >= SessionState.UNBINDING:
            raise LinkDown("link closed" if self.closed.is_set() else "link unbinding", maybe_sent=False)
        loop = self._loop
        future: asyncio.Future[Pdu] = loop.create_future()
        deadline = loop.time() + (self.response_timeout_s if timeout is None else timeout)
        self.session.send(pdu, deadline=deadline, token=future)
        if self._timer is None or deadline < self._timer_at:
            self._arm(deadline)
        self.flush_soon()
        return future

    async def call(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        """Send a request inside the window (at most `window` outstanding) and wait for its response."""
        window = self.window
        if not window.try_acquire():
            await window.acquire()
        try:
            return await self.request(pdu, timeout)
        finally:
            window.release()

    def respond(self, request: Pdu, response: Pdu) -> None:
        """Answer a request the peer sent (later than the event that brought it)."""
        self.session.respond(request, response)
        self.flush_soon()

    def _arm(self, deadline: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop.call_at(deadline, self._on_deadline)
        self._timer_at = deadline

    def _on_deadline(self) -> None:
        self._timer = None
        for entry in self.session.expire(self._loop.time()):
            future = entry.token
            if future is not None and not future.done():
                future.set_exception(ResponseTimeout(f"no response to sequence {entry.request.sequence}"))
        deadline = self.session.next_deadline()
        if deadline is not None:
            self._arm(deadline)

    # ---- reading ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Read until the connection ends; the link is down (`closed` set) when this returns."""
        reader, session = self.reader, self.session
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                for event in session.receive_data(data):
                    if type(event) is ResponseReceived:
                        future = event.token
                        if future is not None and not future.done():
                            future.set_result(event.pdu)
                    else:
                        self.on_event(event)
                self.flush()
                if session.state is SessionState.CLOSED:
                    break
        except OSError as exc:  # ConnectionResetError and the like
            self.error = exc
        finally:
            self._down()

    def _down(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for entry in self.session.close():
            future = entry.token
            if future is not None and not future.done():
                future.set_exception(LinkDown("link closed"))
        self.closed.set()

    # ---- keeping alive and ending -------------------------------------------------------------
    async def keepalive(self, interval_s: float, timeout_s: float | None = None) -> None:
        """enquire_link every `interval_s` while bound, until the link closes. An unanswered probe
        means the link is dead: raises `LinkDown` (the caller drops the connection)."""
        while not self.closed.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self.closed.wait()
            if self.closed.is_set():
                return
            if not self.session.is_bound:
                continue
            try:
                resp = await self.request(EnquireLink(), timeout_s)
            except ResponseTimeout:
                raise LinkDown("enquire_link unanswered") from None
            if resp.status != Status.ROK:
                raise LinkDown(f"enquire_link answered 0x{resp.status:02x}")

    async def unbind(self, timeout: float) -> None:
        """End the session by the book: unbind, wait up to `timeout` for unbind_resp, then close.
        Raises `LinkDown` / `ResponseTimeout` if the peer did not answer (closed all the same)."""
        try:
            # From BINDING too: the peer may already count us bound (its bind_resp on the way), and
            # SMPP 3.4 lets it take an unbind there.
            binding = self.session.role is Role.ESME and self.session.state is SessionState.BINDING
            if (self.session.is_bound or binding) and not self.closed.is_set():
                await self.request(Unbind(), timeout)
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the connection; what is still outstanding fails with `LinkDown`."""
        self.writer.close()
        self._down()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def abort(self) -> None:
        """Cut the connection at once, unflushed data and all (as a crash or a network fault would)."""
        self.writer.transport.abort()
