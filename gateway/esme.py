"""The gateway's SMPP client (ESME): a thin asyncio transport around `SmppSession`.

It binds (transceiver by default), keeps the link alive with enquire_link, keeps a window of
outstanding requests, reconnects with exponential backoff, and hands every deliver_sm to
`on_deliver` concurrently; the deliver_sm_resp carries the status `on_deliver` returns, sent only
when it returns (so ESME_ROK means the change is already durable). Delivery receipts, when an
`on_receipts` handler is given, go to it together, all those one read brought as one batch (one
task and one round trip to Redis for them all, not one each); each is answered when it returns.

Flow control on the sending side, per bind:
- a window: at most `window` requests outstanding, the next one waits for a response;
- a rate: at most `rate_per_s` submit_sm per second (0: no limit), spaced evenly;
- ESME_RTHROTTLED / ESME_RMSGQFUL: the whole bind pauses with exponential backoff and the
  message is sent again, never dropped; so are timeouts and a lost link (next bind); a resend
  after a try whose answer was lost (it may have reached the SMSC) is counted and logged
  (`submit_resent`): it is a second copy if the SMSC had taken the first;
- response timeouts: a request unanswered within `response_timeout_s` is given up and retried;
  an enquire_link unanswered means the link is dead: it is closed and bound again.

The connection itself (reading, coalesced writes, response futures and timeouts, keepalive,
unbind) is the shared `ussdgw.link.SmppLink`; this module holds what only an ESME does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence

from ussdgw.link.backoff import Backoff
from ussdgw.link.link import LinkDown, ResponseTimeout, SmppLink
from ussdgw.logs import get_logger
from ussdgw.metrics import GatewayMetrics, status_name
from ussdgw.smpp.pdu import (
    Bind,
    BindMode,
    DataSm,
    DataSmResp,
    DeliverSm,
    DeliverSmResp,
    GenericNack,
    Pdu,
    Status,
    SubmitSm,
    SubmitSmResp,
)
from ussdgw.smpp.session import (
    Event,
    ProtocolError,
    RequestReceived,
    Role,
    SmppSession,
    Unbound,
)
from ussdgw.tasks import Tasks, stop_task

__all__ = ["BindRefused", "DeliverHandler", "EsmeClient", "LinkDown", "ResponseTimeout"]

log = get_logger("ussdgw.esme")

DeliverHandler = Callable[[DeliverSm | DataSm], Awaitable[int]]
# Delivery receipts of one read, handled together: one status per receipt, in order.
ReceiptsHandler = Callable[[list[DeliverSm]], Awaitable[list[int]]]
RETRY_STATUSES = frozenset({Status.RTHROTTLED, Status.RMSGQFUL})
BACKOFF_MIN_S = 0.05
BACKOFF_MAX_S = 5.0
BIND_REFUSED_WAIT_S = 5.0  # a refused bind is not retried sooner: the credentials will not fix themselves


class BindRefused(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused with status 0x{status:02x}")
        self.status = status


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
        metrics: GatewayMetrics | None = None,
        on_receipts: ReceiptsHandler | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.system_id, self._password, self.system_type = system_id, password, system_type
        self.on_deliver = on_deliver
        self.on_receipts = on_receipts
        self._receipts: list[DeliverSm] = []  # receipts of the read being processed, handled together after it
        self.mode = mode
        self.window = window
        self.rate_per_s = rate_per_s
        self.enquire_link_s = enquire_link_s
        self.response_timeout_s = response_timeout_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self.name = name
        self.metrics = metrics or GatewayMetrics()
        self.bound = asyncio.Event()
        self._conn: SmppLink | None = None
        self._stopping = False
        self._stopped = asyncio.Event()
        self._deliveries = Tasks(f"{name}-deliveries")  # one per deliver_sm being handled
        self._next_send_at = 0.0  # rate limit: the earliest moment the next submit_sm may leave
        self._paused_until = 0.0  # backoff after ESME_RTHROTTLED / ESME_RMSGQFUL, for the whole bind
        self._backoff = Backoff(BACKOFF_MIN_S, BACKOFF_MAX_S)
        self._log = log.bind(bind=name, smsc=f"{host}:{port}", system_id=system_id)

    @property
    def can_submit(self) -> bool:
        return self.bound.is_set() and self.mode.can_send

    def window_usage(self) -> tuple[int, int]:
        """(requests outstanding, requests waiting for a slot) on the current link; (0, 0) without one."""
        conn = self._conn
        if conn is None or conn.closed.is_set():
            return 0, 0
        return conn.window.in_use, conn.window.waiting

    # ---- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, bind and serve until `stop`; reconnect with backoff whenever the link drops."""
        backoff = Backoff(self.reconnect_min_s, self.reconnect_max_s)
        while not self._stopping:
            try:
                await self._serve_once()
                backoff.reset()
                if not self._stopping:
                    self.metrics.bind_events.inc("link_down")
            except BindRefused as exc:
                self.metrics.bind_events.inc("refused")
                self._log.error("bind_refused", status=exc.status)
                backoff.at_least(BIND_REFUSED_WAIT_S)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:  # LinkDown is an OSError
                self.metrics.bind_events.inc("link_down")
                self._log.warning("link_down", error=str(exc) or type(exc).__name__)
            if self._stopping:
                break
            await asyncio.sleep(backoff.next())

    async def stop(self, timeout: float = 5.0) -> None:
        """Unbind cleanly (waiting for in-flight deliveries to be answered first), then close."""
        self._stopping = True
        self._stopped.set()  # submits waiting for a bind give up: their MTs stay queued in Redis
        conn = self._conn
        await self._deliveries.wait(timeout)  # answer what is being handled before unbinding
        if conn is None:
            await self._deliveries.stop()
            return
        was_bound = conn.session.is_bound and not conn.closed.is_set()
        try:
            await conn.unbind(timeout)
            if was_bound:
                self._log.info("unbound")
        except (LinkDown, TimeoutError) as exc:
            self._log.warning("unbind_unanswered", error=str(exc) or type(exc).__name__)
        await conn.closed.wait()
        await self._deliveries.stop()  # unanswered: the SMSC delivers them again

    async def abort(self) -> None:
        """Cut the link without unbinding and answer nothing more, as a crash would (fault drills)."""
        self._stopping = True
        self._stopped.set()
        if self._conn is not None:
            self._conn.abort()
        await self._deliveries.stop()

    async def _serve_once(self) -> None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
        conn = SmppLink(reader, writer, SmppSession(Role.ESME), lambda event: self._on_event(conn, event),
                        response_timeout_s=self.response_timeout_s, window=self.window)
        self._conn = conn
        reader_task = asyncio.create_task(conn.run(), name=f"{self.name}-reader")
        try:
            resp = await conn.request(Bind(mode=self.mode, system_id=self.system_id, password=self._password,
                                           system_type=self.system_type))
            if resp.status != Status.ROK:
                raise BindRefused(resp.status)
            self._log.info("bound", mode=self.mode.name.lower())
            self.metrics.bind_events.inc("bound")
            self.bound.set()
            await conn.keepalive(self.enquire_link_s)  # until the link closes; raises LinkDown if it died
        finally:
            self.bound.clear()
            await stop_task(reader_task)
            if conn.error is not None:
                self._log.warning("read_failed", error=str(conn.error))
            await conn.close()

    def _on_event(self, conn: SmppLink, event: Event) -> None:
        if type(event) is RequestReceived:  # type checks, not isinstance: this runs for every PDU
            pdu = event.pdu
            if type(pdu) is DeliverSm or type(pdu) is DataSm:
                if self._deliveries.stopping:  # not answered: the SMSC delivers it again on the next bind
                    return
                if self.on_receipts is not None and type(pdu) is DeliverSm and pdu.is_delivery_receipt:
                    if not self._receipts:  # the first of this read: the batch leaves once the read is processed
                        asyncio.get_running_loop().call_soon(self._receipts_read, conn)
                    self._receipts.append(pdu)
                    return
                self._deliveries.spawn(self._deliver(conn, pdu))
            else:
                conn.session.respond(pdu, GenericNack(status=Status.RINVCMDID))
        elif isinstance(event, ProtocolError):
            self._log.warning("protocol_error", reason=event.reason, status=event.status, fatal=event.fatal)
        elif isinstance(event, Unbound):
            self._log.info("unbound_by_smsc" if event.by_peer else "unbind_confirmed")

    def _receipts_read(self, conn: SmppLink) -> None:
        batch, self._receipts = self._receipts, []
        if batch and not self._deliveries.stopping:
            self._deliveries.spawn(self._deliver_receipts(conn, batch))

    async def _deliver_receipts(self, conn: SmppLink, batch: list[DeliverSm]) -> None:
        assert self.on_receipts is not None
        try:
            statuses = await self.on_receipts(batch)
        except Exception:
            self._log.exception("receipts_handler_failed")
            statuses = [Status.RX_T_APPN] * len(batch)
        if conn.closed.is_set():
            return  # the SMSC will deliver them again on the next bind
        for pdu, status in zip(batch, statuses, strict=True):
            self.metrics.deliver_sm_resp.inc(status_name(status))
            conn.respond(pdu, DeliverSmResp(sequence=pdu.sequence, status=status))

    async def _deliver(self, conn: SmppLink, pdu: DeliverSm | DataSm) -> None:
        try:
            status = await self.on_deliver(pdu)
        except Exception:
            self._log.exception("deliver_handler_failed")
            status = Status.RX_T_APPN
        if conn.closed.is_set():
            return  # the SMSC will deliver it again on the next bind
        self.metrics.deliver_sm_resp.inc(status_name(status))
        resp: Pdu = (DataSmResp(sequence=pdu.sequence, status=status) if isinstance(pdu, DataSm)
                     else DeliverSmResp(sequence=pdu.sequence, status=status))
        conn.respond(pdu, resp)

    # ---- sending ----------------------------------------------------------------------------
    async def submit(self, pdu: SubmitSm, *, attempts: int | None = None,
                     proceed: Callable[[], Awaitable[bool]] | None = None) -> SubmitSmResp:
        """Send one submit_sm inside the window and the rate; what the SMSC asks to retry
        (throttled, queue full), timeouts and lost links are retried with backoff, never dropped.

        Gives up only when the client is stopping, after `attempts` tries (None: no limit), or when
        `proceed()` says no just before the PDU would be written (the caller lost the right to send
        it, e.g. its lease), answering ESME_RMSGQFUL: the caller leaves the message queued for later.
        """
        attempt = 0
        answer_lost = False  # a try may have reached the SMSC, its answer never came back
        while not self._stopping and (attempts is None or attempt < attempts):
            attempt += 1
            if not self.bound.is_set() and not await self._bound_or_stopped():
                break
            await self._pace()
            conn = self._conn
            if conn is None or not conn.session.can_submit:
                await asyncio.sleep(self._next_backoff())
                continue
            if proceed is not None and not await proceed():
                break
            conn = self._conn  # the link may have changed while `proceed` waited
            if conn is None or not conn.session.can_submit:
                continue
            sent = time.perf_counter()
            try:
                resp = await conn.call(pdu)
            except (TimeoutError, LinkDown) as exc:
                answer_lost = answer_lost or not isinstance(exc, LinkDown) or exc.maybe_sent
                self.metrics.submit_sm_errors.inc("timeout" if isinstance(exc, TimeoutError) else "link_down")
                self._log.warning("submit_retry", attempt=attempt, error=str(exc) or type(exc).__name__)
                await asyncio.sleep(self._next_backoff())
                continue
            self.metrics.submit_sm_seconds.observe(time.perf_counter() - sent)
            self.metrics.submit_sm_resp.inc(status_name(resp.status))
            if resp.status in RETRY_STATUSES:
                self._throttled(resp.status, attempt)
                continue
            self._backoff.reset()
            if answer_lost and resp.status == Status.ROK:
                # SMPP has no way to ask whether the lost try was taken: if it was, this is a second copy
                self.metrics.mt_resent.inc("answer_lost")
                self._log.warning("submit_resent", reason="answer_lost", attempt=attempt,
                                  msisdn=pdu.destination_addr)
            if isinstance(resp, SubmitSmResp):
                return resp
            return SubmitSmResp(sequence=resp.sequence, status=resp.status or Status.RSYSERR)
        return SubmitSmResp(status=Status.RMSGQFUL)

    async def submit_all(self, pdus: Sequence[SubmitSm], *,
                         proceed: Callable[[], Awaitable[bool]] | None = None) -> list[SubmitSmResp]:
        """The parts of one MT: the responses, in the parts' order, up to the first part that ended
        in an error (the ones after it are not sent).

        When the bind is up, unpaced, and its window has room for every part, they are written
        together (one lease check, one write, one window reservation) and answered in any order;
        a part the SMSC asks to retry, or that timed out or lost its link, then goes again alone
        through `submit`. Otherwise the parts go one after the other through `submit`. A response
        ESME_RMSGQFUL without a write means `submit` gave up (see there)."""
        conn = self._conn
        window = conn.window if conn is not None else None
        if (len(pdus) < 2 or conn is None or window is None or self._stopping or not self.bound.is_set()
                or self.rate_per_s > 0 or self._paused_until > time.monotonic() or not conn.session.can_submit
                or not window.try_acquire_many(len(pdus))):
            return await self._submit_one_by_one(pdus, proceed)
        held = len(pdus)  # window slots this call still holds
        try:
            if proceed is not None:
                if not await proceed():
                    return [SubmitSmResp(status=Status.RMSGQFUL)]
                if self._conn is not conn or not conn.session.can_submit:  # the link changed meanwhile
                    window.release_many(held)
                    held = 0
                    return await self._submit_one_by_one(pdus, proceed)
            sent = time.perf_counter()
            try:
                futures = [conn.request(pdu) for pdu in pdus]
            except LinkDown:  # gone between the check and the write: the parts go one by one
                window.release_many(held)
                held = 0
                return await self._submit_one_by_one(pdus, proceed)
            responses: list[SubmitSmResp] = []
            for pdu, future in zip(pdus, futures, strict=True):
                try:
                    resp: Pdu | None = await future
                except (TimeoutError, LinkDown) as exc:
                    self.metrics.submit_sm_errors.inc("timeout" if isinstance(exc, TimeoutError) else "link_down")
                    self._log.warning("submit_retry", attempt=1, error=str(exc) or type(exc).__name__)
                    resp = None
                finally:
                    window.release()
                    held -= 1
                if resp is not None:
                    self.metrics.submit_sm_seconds.observe(time.perf_counter() - sent)
                    self.metrics.submit_sm_resp.inc(status_name(resp.status))
                    if resp.status in RETRY_STATUSES:
                        self._throttled(resp.status, 1)
                        resp = None
                if resp is None:  # asked to retry, timed out, or its link went: this part alone again
                    responses.append(await self.submit(pdu, proceed=proceed))
                elif isinstance(resp, SubmitSmResp):
                    self._backoff.reset()
                    responses.append(resp)
                else:
                    responses.append(SubmitSmResp(sequence=resp.sequence, status=resp.status or Status.RSYSERR))
            return responses
        finally:
            if held:
                window.release_many(held)

    async def _submit_one_by_one(self, pdus: Sequence[SubmitSm],
                                 proceed: Callable[[], Awaitable[bool]] | None) -> list[SubmitSmResp]:
        responses = []
        for pdu in pdus:
            resp = await self.submit(pdu, proceed=proceed)
            responses.append(resp)
            if resp.status != Status.ROK:
                break
        return responses

    def _throttled(self, status: int, attempt: int) -> None:
        """The SMSC asked to slow down: the first refusal since the last pause pauses the bind (longer
        each time); the others sent before the pause just wait it out and go again."""
        now = time.monotonic()
        if now >= self._paused_until:
            pause = self._next_backoff()
            self._paused_until = now + pause
            self._log.info("submit_throttled", status=status, attempt=attempt, pause_s=round(pause, 3))

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
        return self._backoff.next()

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
