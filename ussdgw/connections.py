"""Limits on the connections a server holds, for every server of the platform (the self-care API,
the simulator's HTTP API, its SMSC and its SMTP sink): how many at once, and how long one may be
connected without doing its part.

- `Gate` counts one server's live connections against its `limit`. A connection over it is refused
  at once in the protocol's own words and closed: HTTP 503 (JSON), SMTP 421; the SMSC answers its
  bind with ESME_RTHROTTLED (`simulator.smsc`).
- `GuardedProtocol` wraps an asyncio protocol factory: it admits a connection through the gate,
  and closes one whose first message has not arrived whole (`head_end`, e.g. the blank line ending
  HTTP headers) within `head_timeout_s` — a client that connects and sends nothing, or sends its
  headers a byte at a time. Later messages on a kept-alive connection are the server's own
  business (aiohttp closes a connection idle, or part-way through headers, after its
  `keepalive_timeout`).
- Running out of file descriptors (EMFILE/ENFILE on accept): asyncio's event loop logs it, stops
  accepting for a second and goes on; nothing here ever stops a server over it
  (`tests/loopback/test_connections.py` drives a server into EMFILE and back).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from ussdgw.logs import get_logger

log = get_logger("ussdgw.connections")

REFUSAL_LINGER_S = 1.0
"""How long a refused connection stays open after its refusal, so that the client reads it (a
close with unread data in the socket would reset the connection under the refusal)."""


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one server allows: `max_connections` at once; `idle_timeout_s` to send the first
    request whole (and, for HTTP, between requests); `body_timeout_s` for a request body."""

    max_connections: int = 512
    idle_timeout_s: float = 15.0
    body_timeout_s: float = 10.0


class Gate:
    """Live connections of one server, at most `limit` (`refused` counts the ones turned away)."""

    def __init__(self, name: str, limit: int) -> None:
        self.name, self.limit = name, limit
        self.open = 0
        self.refused = 0
        self._changed = asyncio.Event()

    def enter(self) -> bool:
        self._changed.set()
        if self.open >= self.limit:
            self.refused += 1
            log.warning("connection_refused", server=self.name, open=self.open, limit=self.limit)
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1
        self._changed.set()

    async def wait(self, until: Callable[[Gate], bool]) -> None:
        """Until `until(gate)` holds (checked whenever a connection comes or goes)."""
        while not until(self):
            self._changed.clear()
            await self._changed.wait()


class GuardedProtocol(asyncio.Protocol):
    """A protocol in front of the server's own (made only once the gate lets the connection in)."""

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol], gate: Gate, *, refusal: bytes,
                 head_end: bytes | None = None, head_timeout_s: float | None = None) -> None:
        self._factory, self._gate, self._refusal = factory, gate, refusal
        self._head_end, self._head_timeout_s = head_end, head_timeout_s
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        loop = asyncio.get_running_loop()
        if not self._gate.enter():
            transport.write(self._refusal)
            if transport.can_write_eof():
                transport.write_eof()
            self._timer = loop.call_later(REFUSAL_LINGER_S, transport.abort)
            return
        inner = self._factory()
        assert isinstance(inner, asyncio.Protocol)
        self._inner = inner
        if self._head_timeout_s is not None:
            self._timer = loop.call_later(self._head_timeout_s, self._too_slow)
        inner.connection_made(transport)

    def _too_slow(self) -> None:
        self._timer = None
        if self._transport is not None and not self._transport.is_closing():
            log.info("connection_too_slow", server=self._gate.name, peer=self._transport.get_extra_info("peername"),
                     after_s=self._head_timeout_s)
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return  # refused: what the client still sends is dropped
        if self._timer is not None and self._head_end is not None:
            seen = self._tail + data
            if self._head_end in seen:
                self._timer.cancel()
                self._timer = None
                self._tail = b""
            else:
                self._tail = seen[-(len(self._head_end) - 1):] if len(self._head_end) > 1 else b""
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self._inner is None:
            if self._transport is not None:
                self._transport.abort()
            return None
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._inner is not None:
            self._gate.leave()
            self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()
