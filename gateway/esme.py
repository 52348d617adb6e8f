"""The gateway's SMPP client (ESME): a thin asyncio transport around `SmppSession`.

It binds (transceiver by default), keeps the link alive with enquire_link, keeps a window of
outstanding requests, reconnects with exponential backoff, and hands every deliver_sm to
`on_deliver` concurrently; the deliver_sm_resp carries the status `on_deliver` returns, sent only
when it returns (so ESME_ROK means the change is already durable).

Flow control on the sending side, per bind:
- a window: at most `window` requests outstanding, the next one waits for a response;
- a rate: at most `rate_per_s` submit_sm per second (0: no limit), spaced evenly;
- ESME_RTHROTTLED / ESME_RMSGQFUL: the whole bind pauses with exponential backoff and the
  message is sent again, never dropped; so are timeouts and a lost link (next bind);
- response timeouts: a request unanswered within `response_timeout_s` is given up and retried;
  an enquire_link unanswered means the link is dead: it is closed and bound again.

Writes are coalesced: every PDU queued during one turn of the event loop leaves in one send.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable

import structlog

from ussdgw.smpp.flow import Window
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    GenericNack,
    Pdu,
    Status,
    SubmitSm,
    SubmitSmResp,
    Unbind,
)
from ussdgw.smpp.session import (
    ProtocolError,
    RequestReceived,
    ResponseReceived,
    Role,
    SessionState,
    SmppSession,
    Unbound,
)
from ussdgw.tasks import Tasks, stop_task

log = structlog.get_logger("ussdgw.esme")

DeliverHandler = Callable[[DeliverSm | DataSm], Awaitable[int]]
RETRY_STATUSES = frozenset({Status.RTHROTTLED, Status.RMSGQFUL})
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0


class LinkDown(Exception):
    """The SMPP link went away while a request was outstanding; safe to retry on the next bind."""


class ResponseTimeout(TimeoutError):
    """The SMSC did not answer a request within the response timeout."""


class BindRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused with status 0x{status:02x}")
        self.status = status


class _Connection:
    """One TCP connection and its session; lives from connect to close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int,
                 response_timeout_s: float) -> None:
        self.reader = reader
        self.writer = writer
        self.session = SmppSession(Role.ESME)
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        self.timers: dict[int, asyncio.TimerHandle] = {}
        self.window = Window(window)
        self.response_timeout_s = response_timeout_s
        self.closed = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._flush_scheduled = False

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

    def request(self, pdu: Pdu, timeout: float | None = None) -> asyncio.Future[Pdu]:
        """Send a request; the future gets its response, `ResponseTimeout` or `LinkDown`."""
        if self.closed.is_set():
            raise LinkDown("link closed")
        sent = self.session.send(pdu)
        future: asyncio.Future[Pdu] = self._loop.create_future()
        self.pending[sent.sequence] = future
        self.timers[sent.sequence] = self._loop.call_later(
            self.response_timeout_s if timeout is None else timeout, self._expire, sent.sequence)
        self.flush_soon()
        return future

    def resolve(self, sequence: int, pdu: Pdu) -> None:
        timer = self.timers.pop(sequence, None)
        if timer is not None:
            timer.cancel()
        future = self.pending.pop(sequence, None)
        if future is not None and not future.done():
            future.set_result(pdu)

    def _expire(self, sequence: int) -> None:
        self.timers.pop(sequence, None)
        self.session.forget(sequence)
        future = self.pending.pop(sequence, None)
        if future is not None and not future.done():
            future.set_exception(ResponseTimeout(f"no response to sequence {sequence}"))

    def fail_all(self) -> None:
        for timer in self.timers.values():
            timer.cancel()
        self.timers.clear()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(LinkDown("link closed"))
        self.pending.clear()
        self.closed.set()


class EsmeClient:
    def __init__(
        self,
        host: str,
        port: int,
        system_id: str,
        password: str,
        on_deliver: DeliverHandler,
        *,
        system_type: str = "",
        mode: BindMode = BindMode.TRANSCEIVER,
        window: int = 64,
        rate_per_s: float = 0.0,
        enquire_link_s: float = 30.0,
        response_timeout_s: float = 10.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 30.0,
        name: str = "bind-1",
    ) -> None:
        self.host, self.port = host, port
        self.system_id, self._password, self.system_type = system_id, password, system_type
        self.on_deliver = on_deliver
        self.mode = mode
        self.window = window
        self.rate_per_s = rate_per_s
        self.enquire_link_s = enquire_link_s
        self.response_timeout_s = response_timeout_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.name = name
        self.bound = asyncio.Event()
        self._conn: _Connection | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._deliveries = Tasks(f"{name}-deliveries")  # one per deliver_sm being handled
        self._next_send_at = 0.0  # rate limit: the earliest moment the next submit_sm may leave
        self._paused_until = 0.0  # backoff after ESME_RTHROTTLED / ESME_RMSGQFUL, for the whole bind
        self._backoff = BACKOFF_MIN_S
        self._log = log.bind(bind=name, smsc=f"{host}:{port}", system_id=system_id)

    @property
    def can_submit(self) -> bool:
        return self.bound.is_set() and self.mode.can_send

    # ---- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, bind and serve until `stop`; reconnect with backoff whenever the link drops."""
        delay = self.reconnect_min_s
        while not self._stopping:
            try:
                await self._serve_once()
                delay = self.reconnect_min_s
            except BindRefused as exc:
                self._log.error("bind_refused", status=exc.status)
                delay = max(delay, 5.0)
            except (TimeoutError, OSError, LinkDown, asyncio.IncompleteReadError) as exc:
                self._log.warning("link_down", error=str(exc) or type(exc).__name__)
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.reconnect_max_s)

    async def stop(self, timeout: float = 5.0) -> None:
        """Unbind cleanly (waiting for in-flight deliveries to be answered first), then close."""
        self._stopping = True
        self._stopped.set()  # submits waiting for a bind give up: their MTs stay queued in Redis
        conn = self._conn
        await self._deliveries.wait(timeout)  # answer what is being handled before unbinding
        if conn is None:
            await self._deliveries.stop()
            return
        if conn.session.is_bound and not conn.closed.is_set():
            try:
                await conn.request(Unbind(), timeout)
                self._log.info("unbound")
            except (LinkDown, TimeoutError) as exc:
                self._log.warning("unbind_unanswered", error=str(exc) or type(exc).__name__)
        conn.writer.close()
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()
        await conn.closed.wait()
        await self._deliveries.stop()  # unanswered: the SMSC delivers them again

    async def abort(self) -> None:
        """Cut the link without unbinding and answer nothing more, as a crash would (fault drills)."""
        self._stopping = True
        self._stopped.set()
        if self._conn is not None:
            self._conn.writer.transport.abort()
        await self._deliveries.stop()

    async def _serve_once(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
        conn = _Connection(reader, writer, self.window, self.response_timeout_s)
        self._conn = conn
        reader_task = asyncio.create_task(self._read_loop(conn))
        try:
            resp = await conn.request(Bind(mode=self.mode, system_id=self.system_id, password=self._password,
                                           system_type=self.system_type))
            if resp.status != Status.ROK:
                raise BindRefused(resp.status)
            self._log.info("bound", mode=self.mode.name.lower())
            self.bound.set()
            await self._keepalive(conn)
        finally:
            self.bound.clear()
            await stop_task(reader_task)
            conn.fail_all()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _keepalive(self, conn: _Connection) -> None:
        """enquire_link every `enquire_link_s`; an unanswered one means the link is dead."""
        while not conn.closed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), self.enquire_link_s)
            if conn.closed.is_set() or self._stopping:
                return
            try:
                resp = await conn.request(EnquireLink())
            except ResponseTimeout:
                raise LinkDown("enquire_link unanswered") from None
            if resp.status != Status.ROK:
                raise LinkDown(f"enquire_link answered 0x{resp.status:02x}")

    async def _read_loop(self, conn: _Connection) -> None:
        try:
            while True:
                data = await conn.reader.read(65536)
                if not data:
                    break
                for event in conn.session.receive_data(data):
                    self._on_event(conn, event)
                conn.flush()
                if conn.session.state is SessionState.CLOSED:
                    break
        except (ConnectionError, OSError) as exc:
            self._log.warning("read_failed", error=str(exc))
        finally:
            conn.fail_all()

    def _on_event(self, conn: _Connection, event: object) -> None:
        if isinstance(event, ResponseReceived):
            conn.resolve(event.pdu.sequence, event.pdu)
        elif isinstance(event, RequestReceived):
            pdu = event.pdu
            if isinstance(pdu, DeliverSm | DataSm):
                if self._deliveries.stopping:  # not answered: the SMSC delivers it again on the next bind
                    return
                self._deliveries.spawn(self._deliver(conn, pdu))
            else:
                conn.session.respond(pdu, GenericNack(status=Status.RINVCMDID))
        elif isinstance(event, ProtocolError):
            self._log.warning("protocol_error", reason=event.reason, status=event.status, fatal=event.fatal)
        elif isinstance(event, Unbound):
            self._log.info("unbound_by_smsc" if event.by_peer else "unbind_confirmed")

    async def _deliver(self, conn: _Connection, pdu: DeliverSm | DataSm) -> None:
        try:
            status = await self.on_deliver(pdu)
        except Exception:
            self._log.exception("deliver_handler_failed")
            status = Status.RX_T_APPN
        if conn.closed.is_set():
            return  # the SMSC will deliver it again on the next bind
        resp: Pdu = DataSmResp(status=status) if isinstance(pdu, DataSm) else DeliverSmResp(status=status)
        conn.session.respond(pdu, resp)
        conn.flush_soon()

    # ---- sending ----------------------------------------------------------------------------
    async def submit(self, pdu: SubmitSm, *, attempts: int | None = None) -> SubmitSmResp:
        """Send one submit_sm inside the window and the rate; what the SMSC asks to retry
        (throttled, queue full), timeouts and lost links are retried with backoff, never dropped.

        Gives up only when the client is stopping or after `attempts` tries (None: no limit),
        answering ESME_RMSGQFUL: the caller leaves the message queued for later.
        """
        attempt = 0
        while not self._stopping and (attempts is None or attempt < attempts):
            attempt += 1
            if not self.bound.is_set() and not await self._bound_or_stopped():
                break
            await self._pace()
            conn = self._conn
            if conn is None or not conn.session.can_submit:
                await asyncio.sleep(self._next_backoff())
                continue
            try:
                async with conn.window:
                    resp = await conn.request(pdu)
            except (TimeoutError, LinkDown) as exc:
                self._log.warning("submit_retry", attempt=attempt, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(self._next_backoff())
                continue
            if resp.status in RETRY_STATUSES:
                now = time.monotonic()
                if now >= self._paused_until:  # the first refusal since the last pause: pause (longer)
                    pause = self._next_backoff()
                    self._paused_until = now + pause
                    self._log.info("submit_throttled", status=resp.status, attempt=attempt, pause_s=round(pause, 3))
                continue  # the others sent before the pause just wait it out and go again
            self._backoff = BACKOFF_MIN_S
            if isinstance(resp, SubmitSmResp):
                return resp
            return SubmitSmResp(sequence=resp.sequence, status=resp.status or Status.RSYSERR)
        return SubmitSmResp(status=Status.RMSGQFUL)

    async def _bound_or_stopped(self) -> bool:
        """Wait for the bind (True) or for `stop` (False)."""
        waiters = [asyncio.ensure_future(self.bound.wait()), asyncio.ensure_future(self._stopped.wait())]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return self.bound.is_set() and not self._stopping

    def _next_backoff(self) -> float:
        delay = self._backoff * (0.8 + 0.4 * random.random())
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        return delay

    async def _pace(self) -> None:
        """Wait out a throttling pause, then keep to `rate_per_s` (slots reserved in order)."""
        now = time.monotonic()
        if self._paused_until > now:
            await asyncio.sleep(self._paused_until - now)
            now = time.monotonic()
        if self.rate_per_s <= 0:
            return
        slot = max(now, self._next_send_at)
        self._next_send_at = slot + 1.0 / self.rate_per_s
        if slot > now:
            await asyncio.sleep(slot - now)
