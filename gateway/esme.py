"""The gateway's SMPP client (ESME): a thin asyncio transport around `SmppSession`.

It binds as transceiver, keeps the link alive with enquire_link, keeps a window of outstanding
requests, reconnects with exponential backoff, and hands every deliver_sm to `on_deliver`
concurrently; the deliver_sm_resp carries the status `on_deliver` returns, sent only when it
returns (so ESME_ROK means the change is already durable).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace

import structlog

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
    SmppSession,
    Unbound,
)

log = structlog.get_logger("ussdgw.esme")

DeliverHandler = Callable[[DeliverSm | DataSm], Awaitable[int]]
RETRY_STATUSES = frozenset({Status.RTHROTTLED, Status.RMSGQFUL})


class LinkDown(Exception):
    """The SMPP link went away while a request was outstanding; safe to retry on the next bind."""


class BindRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused with status 0x{status:02x}")
        self.status = status


class _Connection:
    """One TCP connection and its session; lives from connect to close."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, window: int) -> None:
        self.reader = reader
        self.writer = writer
        self.session = SmppSession(Role.ESME)
        self.pending: dict[int, asyncio.Future[Pdu]] = {}
        self.window = asyncio.Semaphore(window)
        self.closed = asyncio.Event()

    def flush(self) -> None:
        data = self.session.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, pdu: Pdu) -> asyncio.Future[Pdu]:
        sent = self.session.send(pdu)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self.pending[sent.sequence] = future
        self.flush()
        return future

    def fail_all(self) -> None:
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
        window: int = 64,
        enquire_link_s: float = 30.0,
        response_timeout_s: float = 10.0,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 30.0,
        name: str = "bind-1",
    ) -> None:
        self.host, self.port = host, port
        self.system_id, self._password, self.system_type = system_id, password, system_type
        self.on_deliver = on_deliver
        self.window = window
        self.enquire_link_s = enquire_link_s
        self.response_timeout_s = response_timeout_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.name = name
        self.bound = asyncio.Event()
        self._conn: _Connection | None = None
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._log = log.bind(bind=name, smsc=f"{host}:{port}", system_id=system_id)

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
        conn = self._conn
        if conn is None:
            return
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=timeout)
        if conn.session.is_bound:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.request(Unbind()), timeout)
            self._log.info("unbound")
        conn.writer.close()
        with contextlib.suppress(Exception):
            await conn.writer.wait_closed()
        await conn.closed.wait()

    async def _serve_once(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
        conn = _Connection(reader, writer, self.window)
        self._conn = conn
        reader_task = asyncio.create_task(self._read_loop(conn))
        try:
            resp = await asyncio.wait_for(
                conn.request(Bind(mode=BindMode.TRANSCEIVER, system_id=self.system_id, password=self._password,
                                  system_type=self.system_type)),
                self.response_timeout_s,
            )
            if resp.status != Status.ROK:
                raise BindRefused(resp.status)
            self._log.info("bound", mode="transceiver")
            self.bound.set()
            await self._keepalive(conn)
        finally:
            self.bound.clear()
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
            conn.fail_all()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _keepalive(self, conn: _Connection) -> None:
        while not conn.closed.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(conn.closed.wait(), self.enquire_link_s)
            if conn.closed.is_set() or self._stopping:
                return
            resp = await asyncio.wait_for(conn.request(EnquireLink()), self.response_timeout_s)
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
                if conn.session.state.name == "CLOSED":
                    break
        except (ConnectionError, OSError) as exc:
            self._log.warning("read_failed", error=str(exc))
        finally:
            conn.fail_all()

    def _on_event(self, conn: _Connection, event: object) -> None:
        if isinstance(event, ResponseReceived):
            future = conn.pending.pop(event.pdu.sequence, None)
            if future is not None and not future.done():
                future.set_result(event.pdu)
        elif isinstance(event, RequestReceived):
            pdu = event.pdu
            if isinstance(pdu, DeliverSm | DataSm):
                task = asyncio.create_task(self._deliver(conn, pdu))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
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
        conn.flush()

    # ---- sending ----------------------------------------------------------------------------
    async def submit(self, pdu: SubmitSm, *, attempts: int = 8) -> SubmitSmResp:
        """Send one submit_sm inside the window; throttling and link loss are retried, not dropped."""
        delay = 0.05
        for attempt in range(attempts):
            await self.bound.wait()
            conn = self._conn
            assert conn is not None
            try:
                async with conn.window:
                    if not conn.session.can_submit:
                        raise LinkDown("not bound")
                    resp = await asyncio.wait_for(conn.request(replace(pdu)), self.response_timeout_s)
            except (TimeoutError, LinkDown) as exc:
                self._log.warning("submit_retry", attempt=attempt + 1, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if resp.status in RETRY_STATUSES:
                self._log.info("submit_throttled", status=resp.status, attempt=attempt + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            if isinstance(resp, SubmitSmResp):
                return resp
            return SubmitSmResp(sequence=resp.sequence, status=resp.status or Status.RSYSERR)
        return SubmitSmResp(status=Status.RMSGQFUL)
