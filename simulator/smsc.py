"""The SMSC simulator: an asyncio SMPP server in front of the virtual phones.

- binds are checked against configured accounts (ESME_RINVSYSID / ESME_RINVPASWD otherwise);
- an MO from a phone becomes a deliver_sm to a bound receiver, retried until it is acknowledged
  with ESME_ROK (ESME_RX_T_APPN, a timeout or a dropped link all mean "again, later");
- a submit_sm goes to the phone, which decides its fate; a receipt follows when one was asked for.

As an SMPP peer: the session enforces bind states (ESME_RINVBNDSTS, ESME_RALYBND), answers
unknown commands with generic_nack and survives malformed PDUs; each link (the shared
`ussdgw.link.SmppLink`) has a window of outstanding deliver_sm, is probed with enquire_link and
dropped when it stops answering, and is unbound cleanly on shutdown. Flow control can be
switched on to exercise ESMEs: `max_submit_per_s` answers submits over that rate per bind with
ESME_RTHROTTLED, and `refuse_submits` (a queue of statuses) answers the next submits with, say,
ESME_RMSGQFUL.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import random
import re
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from simulator.phones import Fate, PhoneBook, PhoneBookFull
from ussdgw.clock import Clock
from ussdgw.config import Settings
from ussdgw.inputs import parse_address
from ussdgw.link.backoff import Backoff
from ussdgw.link.flow import TokenBucket
from ussdgw.link.link import LinkDown, SmppLink
from ussdgw.logs import get_logger
from ussdgw.metrics import SimulatorMetrics, status_name
from ussdgw.smpp import codec
from ussdgw.smpp.concat import ConcatError, ConcatInfo, parse_udh
from ussdgw.smpp.pdu import (
    Bind,
    BindResp,
    DataSm,
    DataSmResp,
    DeliverSm,
    EsmClass,
    MessageState,
    Pdu,
    QuerySm,
    QuerySmResp,
    Status,
    SubmitSm,
    SubmitSmResp,
)
from ussdgw.smpp.receipt import receipt_pdu
from ussdgw.smpp.session import Event, ProtocolError, RequestReceived, Role, SmppSession, Unbound
from ussdgw.smpp.text import TextDecodeError, choose_encoding, decode_text, encode_text, split_text
from ussdgw.smpp.ussd import fits_one_message, is_ussd_string
from ussdgw.tasks import Tasks, stop_tasks

log = get_logger("ussdgw.smsc")

# deliver_sm_resp statuses that mean "not now, later": the SMSC keeps the PDU and tries again.
RETRY_STATUSES = frozenset({Status.RX_T_APPN, Status.RMSGQFUL, Status.RTHROTTLED, Status.RSYSERR})


@dataclass(slots=True)
class PendingMo:
    """A deliver_sm the SMSC owes an ESME, kept until acknowledged."""

    mo_id: str
    pdu: DeliverSm
    msisdn: str
    system_id: str | None = None  # receipts go back to the bind that submitted the MT
    attempts: int = 0
    delivered: asyncio.Event = field(default_factory=asyncio.Event)
    last_status: int | None = None
    # Every attempt's outcome (a command_status, or None for a timeout or a dropped link).
    outcomes: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)


@dataclass(slots=True)
class MtRecord:
    message_id: str
    system_id: str
    source: str
    destination: str
    submitted_at: float
    state: MessageState = MessageState.ENROUTE
    error: int = 0
    done_at: float | None = None
    registered_delivery: int = 0


class SmscConnection:
    """One ESME's connection: the shared `SmppLink`, and what the SMSC keeps per bind."""

    def __init__(self, smsc: Smsc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.smsc = smsc
        self.link = SmppLink(reader, writer, SmppSession(Role.SMSC), self._on_event,
                             response_timeout_s=smsc.deliver_timeout_s, window=smsc.window)
        self.submit_rate = TokenBucket(smsc.max_submit_per_s)
        self.submits = 0  # submit_sm accepted on this bind
        self.over_limit = False  # accepted past `Smsc.max_connections`: its bind is refused, then it is closed
        self._keepalive: asyncio.Task[None] | None = None

    @property
    def session(self) -> SmppSession:
        return self.link.session

    @property
    def peer(self) -> Any:
        return self.link.peer

    def bound(self) -> None:
        """The bind succeeded: from now on the link is probed with enquire_link."""
        if self._keepalive is None and self.smsc.enquire_link_s > 0:
            self._keepalive = self.smsc.spawn(self._probe())

    async def _probe(self) -> None:
        try:
            await self.link.keepalive(self.smsc.enquire_link_s, self.smsc.deliver_timeout_s)
        except LinkDown:
            if not self.link.closed.is_set():  # the probe went unanswered, not the link away
                log.warning("esme_silent", system_id=self.session.system_id, peer=str(self.peer))
                self.link.abort()

    async def unbind(self, timeout: float = 2.0) -> None:
        """End the session by the book: unbind, wait for unbind_resp, then close."""
        with contextlib.suppress(TimeoutError, ConnectionError):
            await self.link.unbind(timeout)

    async def serve(self) -> None:
        deadline = None
        if self.smsc.bind_timeout_s > 0:
            deadline = asyncio.get_running_loop().call_later(self.smsc.bind_timeout_s, self._bind_deadline)
        try:
            await self.link.run()  # the keepalive ends with it
        finally:
            if deadline is not None:
                deadline.cancel()
            self.smsc.forget(self)
            await self.link.close()

    def _bind_deadline(self) -> None:
        """Bind within `bind_timeout_s` of connecting, or be closed: a connection that never binds
        (or only ever fails to) holds a slot and a socket for nothing."""
        if not self.session.is_bound and not self.link.closed.is_set():
            log.info("esme_bind_timeout", peer=str(self.peer), after_s=self.smsc.bind_timeout_s)
            self.link.abort()

    def close_soon(self) -> None:
        """Close once what was answered has left (a refused bind's bind_resp)."""
        def close() -> None:
            self.link.flush()
            self.link.writer.close()
        asyncio.get_running_loop().call_soon(close)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, RequestReceived):
            self.smsc.on_request(self, event.pdu)
        elif isinstance(event, ProtocolError):
            log.warning("smsc_protocol_error", peer=str(self.peer), reason=event.reason, status=event.status)
        elif isinstance(event, Unbound):
            self.smsc.unbinds.append(self.session.system_id)
            del self.smsc.unbinds[:-1000]
            log.info("esme_unbound", system_id=self.session.system_id, by_esme=event.by_peer)


class Smsc:
    def __init__(
        self,
        accounts: dict[str, str],
        phones: PhoneBook | None = None,
        *,
        window: int = 64,
        deliver_timeout_s: float = 5.0,
        retry_min_s: float = 0.2,
        retry_max_s: float = 10.0,
        validity_s: float = 600.0,
        enquire_link_s: float = 30.0,
        max_submit_per_s: float = 0.0,
        receipt_delay_s: float = 0.005,
        intermediate_states: tuple[MessageState, ...] = (),
        stop_grace_s: float = 2.0,
        state_file: str = "",
        clock: Clock | None = None,
        metrics: SimulatorMetrics | None = None,
        max_connections: int = 64,
        bind_timeout_s: float = 10.0,
    ) -> None:
        self.accounts = accounts
        # A receipt leaves this long after its submit_sm_resp (never in the same write); the
        # intermediate notifications (esm_class 0x20) an ESME gets when its registered_delivery
        # asks for them (bit 0x10), sent as the MT is accepted, before its final receipt.
        self.receipt_delay_s = receipt_delay_s
        self.intermediate_states = intermediate_states
        self.stop_grace_s = stop_grace_s  # a clean stop first delivers what it owes, this long at most
        # Where a stop writes what it still owes and its phones, and a start reads them back (a
        # restarted SMSC, like a real one, has not forgotten its queue); empty: nothing is kept.
        self.state_file = state_file
        self.max_connections = max_connections  # ESMEs at once; the next bind gets ESME_RTHROTTLED
        self.bind_timeout_s = bind_timeout_s  # 0: no deadline
        self.refused_connections = 0
        self.enquire_link_s = enquire_link_s
        self.max_submit_per_s = max_submit_per_s  # per bind; 0: no limit
        self.refuse_submits: deque[int] = deque()  # statuses for the next submits (fault drills, tests)
        self.submit_refusals: dict[int, int] = {}  # status -> how many submits were refused with it
        self.unbinds: list[str] = []  # system_ids of sessions that ended with unbind/unbind_resp (the last 1,000)
        self.phones = phones or PhoneBook(clock=clock)
        self.clock = self.phones.clock  # one clock with the phones: submit/done dates, receipts
        if clock is not None and clock is not self.clock:
            raise ValueError("the SMSC and its phone book must share one clock")
        self.window = window
        self.deliver_timeout_s = deliver_timeout_s
        self.retry_min_s, self.retry_max_s = retry_min_s, retry_max_s
        self.validity_s = validity_s
        self.connections: set[SmscConnection] = set()
        self.mt_records: dict[str, MtRecord] = {}
        self.final_records_kept = FINAL_RECORDS_KEPT
        self._final: deque[str] = deque()  # message ids of final records, oldest first (pruned past the bound)
        self.mo_pending: dict[str, PendingMo] = {}
        self._bound_changed = asyncio.Event()
        self._drained = asyncio.Event()  # set while nothing is owed to any ESME
        self._drained.set()
        self._ids = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._tasks = Tasks("smsc")  # deliveries to ESMEs, enquire_link probes, the expiry of held MTs
        self._serve_tasks: set[asyncio.Task[Any]] = set()
        self.host = ""
        self.port = 0
        self._stopping = False
        self.metrics = metrics or SimulatorMetrics()  # the composition root's registry, else a private one
        self.metrics.binds.read = lambda: [((), float(sum(1 for c in self.connections if c.session.is_bound)))]
        self.metrics.mo_pending.read = lambda: [((), float(len(self.mo_pending)))]

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._accept, host, port)
        sock = self._server.sockets[0].getsockname()
        self.host, self.port = sock[0], sock[1]
        self._tasks.every(1.0, self._expire_held, name="smsc-expiry")
        if self.state_file:
            self._load_state(Path(self.state_file))
        log.info("smsc_listening", host=self.host, port=self.port)
        return self.host, self.port

    @classmethod
    def from_settings(cls, settings: Settings, *, clock: Clock | None = None, **overrides: Any) -> Smsc:
        """The simulator as the platform's settings describe it (`sim_*`), its phones on `clock`."""
        phones = PhoneBook(clock=clock, ussd_timeout_s=settings.sim_ussd_timeout_s, max_phones=settings.sim_max_phones)
        options: dict[str, Any] = {
            "window": settings.window, "validity_s": settings.sim_validity_s,
            "receipt_delay_s": settings.sim_receipt_delay_s, "retry_max_s": settings.sim_retry_max_s,
            "intermediate_states": parse_states(settings.sim_intermediate_states),
            "state_file": settings.sim_state_file,
        }
        options.update(overrides)
        return cls(settings.sim_credentials(), phones, **options)

    async def stop(self) -> None:
        """Stop by the book: no new binds; what is owed to bound ESMEs is delivered first (for
        `stop_grace_s` at most); then every ESME is unbound and every task ends."""
        if self._server is not None:
            self._server.close()
        await self._drain(self.stop_grace_s)
        self._stopping = True
        await asyncio.gather(*(conn.unbind() for conn in list(self.connections)), return_exceptions=True)
        await self._tasks.stop()
        await stop_tasks(self._serve_tasks)
        if self._server is not None:
            await self._server.wait_closed()
        if self.state_file:
            self._save_state(Path(self.state_file))
        log.info("smsc_stopped")

    def _save_state(self, path: Path) -> None:
        """Write what is still owed to ESMEs (every MO and receipt), the phones, and the records of
        the MTs whose fate is still to come (held for a phone that is off, parts of a long MT)."""
        pending = [{"mo_id": mo.mo_id, "msisdn": mo.msisdn, "system_id": mo.system_id, "attempts": mo.attempts,
                    "pdu": codec.encode(mo.pdu).hex()} for mo in self.mo_pending.values()]
        undecided = [dataclasses.asdict(self.mt_records[mid]) for mid in sorted(self.phones.held_message_ids())
                     if mid in self.mt_records]
        for record in undecided:
            record["state"] = int(record["state"])
        data = {"version": 1, "pending": pending, "phones": self.phones.dump(), "mt_records": undecided}
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        partial.replace(path)
        log.info("smsc_state_saved", path=str(path), pending=len(pending), phones=len(self.phones.phones),
                 undecided_mts=len(undecided))

    def _load_state(self, path: Path) -> None:
        """Read back what `_save_state` wrote; what was owed is delivered again from now on, and the
        fates still to come are reported as if nothing had happened."""
        if not path.exists():
            return
        data = json.loads(path.read_text(encoding="utf-8"))
        for saved in data.get("mt_records", []):
            record = MtRecord(**{**saved, "state": MessageState(saved["state"])})
            self.mt_records[record.message_id] = record

        def fate_for(message_id: str) -> Fate | None:
            record = self.mt_records.get(message_id)
            return None if record is None else lambda state, err: self._fate(record, state, err)

        self.phones.restore(data["phones"], fate_for)
        for saved in data["pending"]:
            pdu = codec.decode(bytes.fromhex(saved["pdu"]))
            assert isinstance(pdu, DeliverSm)
            self._enqueue(PendingMo(saved["mo_id"], pdu, saved["msisdn"], system_id=saved["system_id"],
                                    attempts=saved["attempts"]))
        log.info("smsc_state_loaded", path=str(path), pending=len(data["pending"]), phones=len(self.phones.phones))

    async def _drain(self, timeout: float) -> None:
        """Wait until nothing is owed, or no ESME is bound to take it, or `timeout`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.mo_pending and self._receiver(None) is not None and loop.time() < deadline:
            self._bound_changed.clear()
            waits = {asyncio.ensure_future(self._drained.wait()), asyncio.ensure_future(self._bound_changed.wait())}
            try:
                await asyncio.wait(waits, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()
        if self.mo_pending:
            log.warning("smsc_stopped_owing", pending=len(self.mo_pending))

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any] | None:
        """Run `coro` until `stop`; once stopping, nothing new starts (None)."""
        if self._tasks.stopping:
            coro.close()
            return None
        return self._tasks.spawn(coro)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = SmscConnection(self, reader, writer)
        if len(self.connections) >= self.max_connections:
            conn.over_limit = True  # kept out of `connections`: it answers one bind, then goes
            self.refused_connections += 1
            log.warning("esme_connection_over_limit", peer=str(conn.peer), limit=self.max_connections)
        else:
            self.connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._serve_tasks.add(task)
        try:
            await conn.serve()
        finally:
            if task is not None:
                self._serve_tasks.discard(task)

    def forget(self, conn: SmscConnection) -> None:
        self.connections.discard(conn)
        self._bound_changed.set()

    async def drop_connections(self) -> None:
        """Cut every link at once, as a network failure would (for tests and fault drills)."""
        for conn in list(self.connections):
            conn.link.abort()

    # ---- requests from ESMEs ----------------------------------------------------------------
    def on_request(self, conn: SmscConnection, pdu: Pdu) -> None:
        if isinstance(pdu, Bind):
            self._bind(conn, pdu)
        elif isinstance(pdu, SubmitSm):
            if (refused := self._refusal(conn)) is not None:
                conn.session.respond(pdu, SubmitSmResp(status=refused))
            else:
                self._submit(conn, pdu)
        elif isinstance(pdu, DataSm):
            if (refused := self._refusal(conn)) is not None:
                conn.session.respond(pdu, DataSmResp(status=refused))
            else:
                conn.session.respond(pdu, DataSmResp(message_id=self._submit_data_sm(conn, pdu)))
        elif isinstance(pdu, QuerySm):
            record = self.mt_records.get(pdu.message_id)
            if record is None:
                conn.session.respond(pdu, QuerySmResp(status=Status.RQUERYFAIL, message_id=pdu.message_id))
            else:
                final = _smpp_time(record.done_at) if record.done_at else ""
                conn.session.respond(pdu, QuerySmResp(message_id=record.message_id, final_date=final,
                                                      message_state=record.state, error_code=record.error))

    def _refusal(self, conn: SmscConnection) -> int | None:
        """Flow control: the status to refuse this submit with, or None to accept it."""
        status: int | None = None
        if self.refuse_submits:
            status = self.refuse_submits.popleft()
        elif not conn.submit_rate.take():
            status = Status.RTHROTTLED
        if status is not None:
            self.submit_refusals[status] = self.submit_refusals.get(status, 0) + 1
        self.metrics.submit_sm.inc(status_name(status or Status.ROK))
        return status

    def _bind(self, conn: SmscConnection, pdu: Bind) -> None:
        expected = self.accounts.get(pdu.system_id)
        if conn.over_limit:
            conn.session.respond(pdu, BindResp(status=Status.RTHROTTLED))
            log.info("esme_bind", system_id=pdu.system_id, mode=pdu.mode.name.lower(), status="RTHROTTLED")
            conn.close_soon()
            return
        if expected is None:
            status = Status.RINVSYSID
        elif expected != pdu.password:
            status = Status.RINVPASWD
        else:
            status = Status.ROK
        conn.session.respond(pdu, BindResp(status=status, system_id="ussdgw-smsc" if status == Status.ROK else ""))
        self.metrics.bind_requests.inc(status_name(status))
        log.info("esme_bind", system_id=pdu.system_id, mode=pdu.mode.name.lower(), status=Status(status).name)
        if status == Status.ROK:
            conn.bound()
            self._bound_changed.set()

    def _next_message_id(self) -> str:
        return f"{next(self._ids):08x}{random.getrandbits(32):08x}"

    def _submit(self, conn: SmscConnection, pdu: SubmitSm) -> None:
        message_id = self._next_message_id()
        conn.submits += 1
        conn.session.respond(pdu, SubmitSmResp(message_id=message_id))
        record = MtRecord(message_id, conn.session.system_id, pdu.source_addr, pdu.destination_addr, self.clock.now(),
                          registered_delivery=pdu.registered_delivery)
        self.mt_records[message_id] = record
        self._notify_intermediate(record)
        try:
            self._to_phone(record, pdu)
        except (TextDecodeError, ConcatError) as exc:
            self.phones.reject_mt(pdu.destination_addr, pdu.source_addr, message_id,
                                  lambda state, err: self._fate(record, state, err))
            log.info("mt_undecodable", msisdn=pdu.destination_addr, error=str(exc))

    def _submit_data_sm(self, conn: SmscConnection, pdu: DataSm) -> str:
        message_id = self._next_message_id()
        record = MtRecord(message_id, conn.session.system_id, pdu.source_addr, pdu.destination_addr, self.clock.now(),
                          registered_delivery=pdu.registered_delivery)
        self.mt_records[message_id] = record
        self._notify_intermediate(record)
        self.phones.log_pdu(pdu.destination_addr, "gateway->smsc", pdu, Status.ROK, message_id=message_id)
        text = decode_text(pdu.message_payload or b"", pdu.data_coding)
        self.phones.deliver_mt(pdu.destination_addr, pdu.source_addr, text, message_id, validity_s=self.validity_s,
                               on_fate=lambda state, err: self._fate(record, state, err))
        return message_id

    def _to_phone(self, record: MtRecord, pdu: SubmitSm) -> None:
        payload = pdu.payload
        phones = self.phones
        phones.log_pdu(pdu.destination_addr, "gateway->smsc", pdu, Status.ROK, message_id=record.message_id)
        fate: Fate = lambda state, err: self._fate(record, state, err)  # noqa: E731
        if pdu.ussd_service_op is not None:
            text = decode_text(payload, pdu.data_coding)
            phones.ussd_from_network(pdu.destination_addr, pdu.source_addr, text, pdu.ussd_service_op,
                                     pdu.its_session_info, record.message_id, fate)
            return
        parts = 1
        info: ConcatInfo | None = None
        if pdu.sar_msg_ref_num is not None and pdu.sar_total_segments and pdu.sar_segment_seqnum:
            info = ConcatInfo(pdu.sar_msg_ref_num, pdu.sar_total_segments, pdu.sar_segment_seqnum)
            if not 1 <= info.seqnum <= info.total:
                raise ConcatError(f"SAR segment {info.seqnum} of {info.total}")
        elif pdu.esm_class & EsmClass.UDHI:
            info, payload = parse_udh(payload)
        if info is not None and info.total > 1:  # one part of a long MT, by UDH or SAR TLVs alike
            whole = phones.reassemble(pdu.destination_addr, pdu.source_addr, info.reference, info.total,
                                      info.seqnum, payload, pdu.data_coding, on_fate=fate,
                                      message_id=record.message_id)
            if whole is None:
                return  # each part's fate is the whole message's, decided once all parts are in
            payload, parts = whole, info.total
            fate = phones.whole_fate(pdu.destination_addr, pdu.source_addr, info.reference)
        text = decode_text(payload, pdu.data_coding)
        phones.deliver_mt(pdu.destination_addr, pdu.source_addr, text, record.message_id, validity_s=self.validity_s,
                          on_fate=fate, parts=parts)

    def _fate(self, record: MtRecord, state: MessageState, error: int) -> None:
        record.state, record.error, record.done_at = state, error, self.clock.now()
        self.metrics.fate(state.name)
        self._prune(record)
        wants = record.registered_delivery & 0x03
        if wants == 1 or (wants == 2 and state is not MessageState.DELIVERED):
            self._send_receipt(record)

    def _prune(self, record: MtRecord) -> None:
        """Keep the records of MTs whose fate is final for query_sm and /api/mts, only the newest
        `final_records_kept` of them: an SMSC that runs for days does not keep every MT it saw."""
        if record.state in FINAL_STATES:
            self._final.append(record.message_id)
            while len(self._final) > self.final_records_kept:
                self.mt_records.pop(self._final.popleft(), None)

    def _send_receipt(self, record: MtRecord) -> None:
        pdu = receipt_pdu(record.message_id, record.state, record.error, source=record.destination,
                          destination=record.source, submitted_at=record.submitted_at,
                          done_at=record.done_at or self.clock.now())
        self._enqueue(PendingMo(f"dlr-{record.message_id}", pdu, record.destination, system_id=record.system_id),
                      delay_s=self.receipt_delay_s)
        self.phones.receipt_sent(record.destination, record.message_id)

    def _notify_intermediate(self, record: MtRecord) -> None:
        """Intermediate notifications (esm_class 0x20) for an MT just accepted, when its ESME asked."""
        if not record.registered_delivery & REGISTERED_INTERMEDIATE:
            return
        for state in self.intermediate_states:
            pdu = receipt_pdu(record.message_id, state, 0, source=record.destination, destination=record.source,
                              submitted_at=record.submitted_at, done_at=self.clock.now())
            pdu = dataclasses.replace(pdu, esm_class=EsmClass.INTERMEDIATE_NOTIFICATION)
            self._enqueue(PendingMo(f"dlr-{record.message_id}-{state.name.lower()}", pdu, record.destination,
                                    system_id=record.system_id), delay_s=self.receipt_delay_s)

    # ---- MOs to ESMEs -----------------------------------------------------------------------
    def submit_mo(
        self, msisdn: str, to: str, text: str, *, ussd_service_op: int | None = None,
        its_session_info: int | None = None, system_id: str | None = None,
    ) -> list[PendingMo]:
        """A phone sends an SMS (split into parts when long) or a USSD string; returns what is queued.
        `system_id`: delivered only to that ESME's binds (the network routes by its own rules; a
        test routes the steps of one dialogue through different gateways this way).

        Raises `MoRefused` (and queues nothing) for what no deliver_sm could carry."""
        check_mo(msisdn, to, text, ussd=ussd_service_op is not None)
        try:
            phone = self.phones.get(msisdn)
        except PhoneBookFull as exc:
            raise MoRefused(str(exc), "msisdn") from None
        reference = phone.take_reference()
        pdus: list[DeliverSm]
        if ussd_service_op is not None:
            coding = choose_encoding(text)
            pdus = [DeliverSm(service_type="USSD", source_addr_ton=1, source_addr_npi=1, source_addr=msisdn,
                              destination_addr=to, data_coding=coding, short_message=encode_text(text, coding),
                              ussd_service_op=ussd_service_op, its_session_info=its_session_info,
                              user_message_reference=reference)]
        else:
            split = split_text(text, reference=reference & 0xFF)
            pdus = [DeliverSm(source_addr_ton=1, source_addr_npi=1, source_addr=msisdn, destination_addr=to,
                              esm_class=EsmClass.UDHI if split.esm_class_udhi else 0, data_coding=split.data_coding,
                              short_message=part, user_message_reference=reference)
                    for part in split.parts]
        phone.sent.append({"at": self.clock.now(), "to": to, "text": text, "kind": "ussd" if ussd_service_op is not None
                           else "sms"})
        queued = []
        for i, pdu in enumerate(pdus):
            mo = PendingMo(f"mo-{msisdn}-{reference}-{i + 1}", pdu, msisdn, system_id=system_id)
            self._enqueue(mo)
            queued.append(mo)
        return queued

    def _enqueue(self, mo: PendingMo, *, delay_s: float = 0.0) -> None:
        self.mo_pending[mo.mo_id] = mo
        self._drained.clear()
        self.spawn(self._deliver_until_acked(mo, delay_s))

    def _receiver(self, system_id: str | None) -> SmscConnection | None:
        candidates = [c for c in self.connections if c.session.can_deliver
                      and (system_id is None or c.session.system_id == system_id)]
        return random.choice(candidates) if candidates else None

    async def _wait_bound(self, timeout: float) -> None:
        """Until a bind arrives (any: the caller checks whether it is the one it needs), or `timeout`."""
        self._bound_changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._bound_changed.wait()

    async def _deliver_until_acked(self, mo: PendingMo, delay_s: float = 0.0) -> None:
        """Send `mo` until an ESME acknowledges it (or refuses it for good). Nothing that goes
        wrong on the way ends this loop or loses the PDU: a link that drops (`LinkDown`, even
        mid-call) means "wait for a bind, then again"; a timeout, a temporary refusal or any
        other error means "again after a backoff"."""
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        backoff = Backoff(self.retry_min_s, self.retry_max_s, jitter=0.0)
        metrics = self.metrics
        kind = _kind(mo.pdu)
        while not self._stopping:
            conn = self._receiver(mo.system_id)
            if conn is None:
                await self._wait_bound(self.retry_max_s)
                continue
            mo.attempts += 1
            try:
                resp = await conn.link.call(mo.pdu, self.deliver_timeout_s)
            except LinkDown:  # the link went (or is going) away: the next bind gets it at once
                self._retry(mo, None, "link_down")
                if conn.link.closed.is_set() or not conn.session.can_deliver:
                    continue
                await asyncio.sleep(backoff.next())  # unbinding but not yet closed: do not spin
                continue
            except TimeoutError:
                self._retry(mo, None, "timeout")
            except Exception as exc:  # a bug or a PDU the link could not send: log it, keep the PDU
                log.exception("deliver_error", mo_id=mo.mo_id, attempt=mo.attempts)
                self._retry(mo, None, type(exc).__name__)
            else:
                mo.last_status = resp.status
                mo.outcomes.put_nowait(resp.status)
                self.phones.log_pdu(mo.msisdn, "smsc->gateway", mo.pdu, resp.status, sequence=resp.sequence,
                                    attempt=mo.attempts)
                if resp.status == Status.ROK:
                    metrics.mo_delivered.inc(kind)
                    self._settled(mo)
                    return
                if resp.status not in RETRY_STATUSES:
                    metrics.mo_rejected.inc(kind)
                    log.info("deliver_rejected", mo_id=mo.mo_id, status=resp.status)
                    self._settled(mo)
                    return
                metrics.mo_retried.inc(kind, status_name(resp.status))
                log.info("deliver_retry", mo_id=mo.mo_id, attempt=mo.attempts, status=resp.status)
            await asyncio.sleep(backoff.next())

    def _retry(self, mo: PendingMo, status: int | None, reason: str) -> None:
        self.metrics.mo_retried.inc(_kind(mo.pdu), reason if reason in ("link_down", "timeout") else "error")
        log.info("deliver_retry", mo_id=mo.mo_id, attempt=mo.attempts, error=reason)
        mo.last_status = status
        mo.outcomes.put_nowait(status)

    def _settled(self, mo: PendingMo) -> None:
        self.mo_pending.pop(mo.mo_id, None)
        mo.delivered.set()
        self.phones.mo_settled(mo.mo_id, mo.last_status)
        receipted = mo.pdu.receipted_message_id
        if receipted and not mo.pdu.esm_class & EsmClass.INTERMEDIATE_NOTIFICATION:
            self.phones.receipt_settled(mo.msisdn, receipted, mo.last_status)
        if not self.mo_pending:
            self._drained.set()

    async def _expire_held(self) -> None:
        self.phones.expire_held()


FINAL_RECORDS_KEPT = 10_000
FINAL_STATES = frozenset({MessageState.DELIVERED, MessageState.EXPIRED, MessageState.DELETED,
                          MessageState.UNDELIVERABLE, MessageState.REJECTED})


class MoRefused(ValueError):
    """What a phone tried to send cannot travel as a deliver_sm (an address or a text too long,
    not a number): refused before it reaches the SMPP encoder, with the reason, the `field` it
    concerns (msisdn, to, text) and a `code` a screen can word in its own language."""

    def __init__(self, message: str, field: str = "text", code: str = "") -> None:
        super().__init__(message)
        self.field = field
        self.code = code or f"bad_{field}"


ADDRESS = re.compile(r"^[0-9A-Za-z*#+]{1,20}\Z")  # an SMPP address: 20 octets at most (21 with the NUL)
MAX_SHORT_MESSAGE = 254  # octets in one deliver_sm's short_message
REGISTERED_INTERMEDIATE = 0x10  # registered_delivery bit 4: intermediate notifications wanted


def check_mo(msisdn: str, to: str, text: str, *, ussd: bool = False) -> None:
    """Raise `MoRefused` unless an MO from `msisdn` to `to` with `text` fits deliver_sm PDUs:
    the phone's number 5-15 ASCII digits (`ussdgw.inputs.parse_address`, no '+'), the destination
    an SMPP address (`check_text` for the text)."""
    if parse_address(msisdn) != msisdn:
        raise MoRefused(f"the phone's number must be 5-15 digits, not {str(msisdn)[:30]!r}", "msisdn")
    if not isinstance(to, str) or not ADDRESS.match(to):
        raise MoRefused(f"the destination must be a short code or number of 1-20 characters, not {str(to)[:30]!r}",
                        "to")
    check_text(text, ussd=ussd)


def check_text(text: str, *, ussd: bool = False) -> None:
    """Raise `MoRefused` unless `text` fits: a USSD text in one message (160 GSM 7-bit characters
    or 80 others, TS 23.038; a dialled string up to 182), an SMS text in `MAX_SMS_CHARS`."""
    if not isinstance(text, str):
        raise MoRefused("the text must be a string")
    if ussd:
        octets = len(encode_text(text, choose_encoding(text)))
        if octets > MAX_SHORT_MESSAGE or not (fits_one_message(text) or is_ussd_string(text)):
            raise MoRefused(f"a USSD message holds 160 GSM 7-bit characters or 80 others; this one has "
                            f"{len(text)} characters ({octets} octets)")
    elif len(text) > MAX_SMS_CHARS:
        raise MoRefused(f"an SMS text holds at most {MAX_SMS_CHARS} characters here")


MAX_SMS_CHARS = 1600


def parse_states(text: str) -> tuple[MessageState, ...]:
    """`"ENROUTE,ACCEPTED"` -> the message states to send as intermediate notifications."""
    states = []
    for name in (part.strip().upper() for part in text.split(",")):
        if not name:
            continue
        try:
            states.append(MessageState[name])
        except KeyError:
            raise ValueError(f"unknown message state {name!r}: one of {[s.name for s in MessageState]}") from None
    return tuple(states)


def _kind(pdu: DeliverSm) -> str:
    """What a deliver_sm carries, for the metrics: a receipt, a USSD MO or an SMS MO."""
    return "receipt" if pdu.is_delivery_receipt else "ussd" if pdu.ussd_service_op is not None else "sms"


def _smpp_time(ts: float) -> str:
    """SMPP absolute time, UTC: YYMMDDhhmmsstnnp."""
    return datetime.fromtimestamp(ts, UTC).strftime("%y%m%d%H%M%S") + "000+"
