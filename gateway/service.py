"""The gateway: SMPP binds in, handlers in the middle, MTs out, with nothing kept in memory
that another gateway process on the same Redis would need.

An MO is answered ESME_ROK only after its handler's commit is durable in Redis, ESME_RX_T_APPN
when Redis is unreachable (the SMSC keeps it and retries), ESME_RTHROTTLED when its costly work (a password's
scrypt) would wait too long (`ussdgw.costly`: the SMSC brings it back once the backlog has drained,
and cheap MOs keep flowing meanwhile), and a permanent error, with nothing
queued, when its reply could never be addressed (`gateway.inbound.unanswerable`). MTs are queued in the same commit
and sent after it; one whose sender died is picked up by any gateway once its lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import hashlib
import itertools
import os
import socket
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.esme import EsmeClient
from gateway.inbound import Part, Receipt, find_part, is_notification, mo_identity, parse_receipt, unanswerable
from gateway.observe import MtsInFlight, UssdDialogues, route_label, watch_gateway
from handlers.access import cleared_to_send, mt_withheld, refuse_blocked, refuse_blocked_mo, refuse_if_blocked, today
from handlers.base import Channel, Context, Handler, InboundMessage
from handlers.number_management import review_due
from handlers.ports import Platform
from handlers.routing import Router
from handlers.ussd import handle_ussd
from ussdgw.audit_detail import render
from ussdgw.clock import Clock
from ussdgw.config import Settings
from ussdgw.costly import Overloaded
from ussdgw.inputs import ascii_digits
from ussdgw.logs import bind_context, get_logger, mask_msisdn, unbind_context
from ussdgw.metrics import GatewayMetrics, message_state_label
from ussdgw.smpp.pdu import DataSm, DeliverSm, EsmClass, MessageState, Status, SubmitSm
from ussdgw.smpp.text import TextDecodeError, choose_encoding, decode_text, encode_text, split_text
from ussdgw.store import AuditEvent, CommitResult, OutboundMessage, Store, StoreUnavailable
from ussdgw.store.core import lease_now
from ussdgw.tasks import Tasks

log = get_logger("ussdgw.gateway")

USSD_MAX_OCTETS = 160
STOP_GRACE_S = 5.0  # how long a stop lets MTs being sent finish
REVIEW_INTERVAL_S = 5.0  # how often every gateway runs the N2 reviews that are due
RECOVERY_MAX_INTERVAL_S = 1.0  # MT recovery looks at least this often: a stranded MT waits its lease plus ~2 s
LEASE_MARGIN_S = 0.2  # a submit is not started on a lease with less than this left
RECORD_RETRY_MAX_S = 1.0
RECENT_SUBMITS_KEPT = 100_000  # message ids this process submitted, kept to meet their receipts without Redis
RECORD_WAIT_S = 1.0  # how long a receipt waits for its part's record in this process before going through Redis
DELIVERED = MessageState.DELIVERED.name  # an enum's name is a property: read once, not per receipt


@dataclass(slots=True)
class PartSentHere:
    """An SMS part this process submitted: its MT, and `recorded`, resolved True once the part's
    record is in Redis (False when this process gave up recording it: its receipt goes through Redis)."""

    msisdn: str
    mt_id: str
    recorded: asyncio.Future[bool]


class SubmittedHere:
    """SMSC message id -> the part this process submitted under it, the newest `kept`, oldest first."""

    def __init__(self, kept: int) -> None:
        self.kept = kept
        self._parts: dict[str, PartSentHere] = {}

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, message_ids: list[str], msisdn: str, mt_id: str) -> asyncio.Future[bool]:
        """The parts of one MT, just submitted; the future tells whether their record went in."""
        recorded: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        parts = self._parts
        for message_id in message_ids:
            parts[message_id] = PartSentHere(msisdn, mt_id, recorded)
        while len(parts) > self.kept:
            del parts[next(iter(parts))]
        return recorded

    def take(self, message_id: str) -> PartSentHere | None:
        return self._parts.pop(message_id, None)

    def forget(self, message_ids: Iterable[str]) -> None:
        for message_id in message_ids:
            self._parts.pop(message_id, None)


class Gateway:
    def __init__(self, settings: Settings, store: Store, router: Router, clock: Clock | None = None, *,
                 metrics: GatewayMetrics | None = None, platform: Platform | None = None) -> None:
        self.settings = settings
        self.store = store
        self.router = router
        self.clock = clock or store.clock  # the platform's one clock: handlers read it, as the store does
        if self.clock is not store.clock:
            raise ValueError("the gateway and its store must share one clock")
        # What every MO's context carries: the composition root's (shared with the HTTP API), else
        # the platform without ports (the gateway sends what the handlers commit itself).
        self.platform = platform or Platform(store, settings, clock=self.clock)
        self._owns_platform = platform is None  # then its costly pool is stopped with the gateway
        if self.platform.store is not store:
            raise ValueError("the gateway and its platform must share one store")
        self.metrics = metrics or GatewayMetrics()  # the composition root's registry, else a private one
        self.clients = [
            EsmeClient(
                settings.smsc_host, settings.smsc_port, settings.system_id, settings.password.get_secret_value(),
                functools.partial(self.on_deliver, bind=name),
                on_receipts=functools.partial(self.on_receipts, bind=name),
                system_type=settings.system_type, window=settings.window, rate_per_s=settings.mt_rate_per_s,
                enquire_link_s=settings.enquire_link_s, response_timeout_s=settings.response_timeout_s,
                reconnect_max_s=settings.reconnect_max_s, name=name, metrics=self.metrics,
            )
            for name in (f"bind-{i + 1}" for i in range(max(1, settings.binds)))
        ]
        self._round_robin = itertools.cycle(self.clients)
        # Who this process is among the live gateways (which recovery buckets it looks at).
        self.gateway_id = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"
        self._share: tuple[int, ...] | None = None
        self._recovery_s = min(RECOVERY_MAX_INTERVAL_S, max(0.2, settings.mt_lease_s / 3))
        # MTs this process is sending, with the lease it holds on each (renewed while they wait).
        self._held: dict[str, OutboundMessage] = {}
        # The SMS parts this process submitted: a receipt that comes back through it (the common
        # case) needs no correlation in Redis. Any other process, or this one after a restart,
        # finds `dlr:<id>`.
        self._submitted = SubmittedHere(RECENT_SUBMITS_KEPT)
        self._sends = Tasks("gateway-sends")  # MTs being sent: finished (or left leased) on stop
        self._loops = Tasks("gateway-loops")  # the binds' runners and the periodic loops
        self.mts_in_flight = MtsInFlight()
        self.dialogues = UssdDialogues(self.metrics, self.clock, settings.ussd_step_timeout_s)
        watch_gateway(self.metrics, self)

    # ---- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        for client in self.clients:
            self._loops.spawn(client.run(), name=client.name)
        self._loops.every(self._recovery_s, self._recover_once, name="mt-recovery", quiet=(StoreUnavailable,))
        self._loops.every(max(0.1, self.settings.mt_lease_s / 4), self._keep_leases, name="mt-leases",
                          quiet=(StoreUnavailable,))
        self._loops.every(REVIEW_INTERVAL_S, lambda: review_due(self.store, self.settings, send=self.send,
                                                                buckets=self._share),
                          name="n2-review", quiet=(StoreUnavailable,))

    async def wait_bound(self, timeout: float = 10.0) -> None:
        """Until every bind is up (TimeoutError after `timeout`); no gather left behind when cancelled."""
        async with asyncio.timeout(timeout):
            for client in self.clients:
                await client.bound.wait()

    async def sends_done(self, timeout: float = 10.0) -> None:
        """Until the MTs this process is sending now are submitted and recorded (or `timeout`)."""
        await self._sends.wait(timeout)

    async def stop(self) -> None:
        """Finish in-flight work, unbind every link, stop background loops; returns only when all have ended.

        An MT still unsent after the grace period stays leased in Redis: any gateway sends it later.
        """
        await self._sends.stop(grace_s=STOP_GRACE_S)
        await asyncio.gather(*(c.stop() for c in self.clients), return_exceptions=True)
        await self._loops.stop()
        await self._stop_own_platform()
        with contextlib.suppress(StoreUnavailable):  # the others take this one's recovery buckets at once
            await self.store.indexes.gone(self.gateway_id)

    async def abort(self) -> None:
        """What SIGKILL does to a gateway process: links cut, no unbind, nothing in flight answered."""
        await asyncio.gather(*(client.abort() for client in self.clients))
        await self._loops.stop()
        await self._sends.stop()
        await self._stop_own_platform()

    async def _stop_own_platform(self) -> None:
        """The platform this gateway made itself (none was given) ends with it: its costly pool."""
        if self._owns_platform:
            await self.platform.stop()

    # ---- inbound ----------------------------------------------------------------------------
    async def on_deliver(self, pdu: DeliverSm | DataSm, bind: str = "") -> int:
        """One deliver_sm (an MO, a part of one, or a receipt) to the status its response carries.

        Every line logged meanwhile carries the bind, the masked MSISDN and the channel (and the
        MO's id once it is known); each MO ends with one canonical line, `mo_handled` or `mo_deferred`.
        """
        channel = Channel.USSD if pdu.ussd_service_op is not None else Channel.SMS
        token = bind_context(bind=bind, msisdn=mask_msisdn(pdu.source_addr), channel=channel._value_)
        try:
            if isinstance(pdu, DeliverSm) and pdu.is_delivery_receipt:
                return (await self.on_receipts([pdu], bind))[0]
            if is_notification(pdu):  # an intermediate notification: nothing to do, nothing to answer
                log.info("mt_notification", msisdn=pdu.source_addr, esm_class=pdu.esm_class,
                         state=pdu.message_state, message_id=pdu.receipted_message_id)
                return Status.ROK
            if (refused := unanswerable(pdu)) is not None:
                self.metrics.mo.inc(channel, "-", "refused")
                log.warning("mo_unanswerable", status=Status(refused).name, source_len=len(pdu.source_addr),
                            destination_len=len(pdu.destination_addr))
                return refused
            return await self._on_mo(pdu, channel)
        finally:
            unbind_context(token)

    async def _on_mo(self, pdu: DeliverSm | DataSm, channel: Channel) -> int:
        started = time.perf_counter()
        metrics = self.metrics

        def ms() -> float:
            return round((time.perf_counter() - started) * 1000, 2)

        part, payload = find_part(pdu)
        try:  # a whole MO (the common case) needs no round trip, nor a coroutine, to be read
            message = self._message(pdu, payload, None) if part is None else await self._assemble(pdu, part)
        except StoreUnavailable as exc:
            metrics.store_unavailable.inc("mo")
            metrics.mo.inc(channel, "-", "deferred")
            log.warning("mo_deferred", to=pdu.destination_addr, reason="redis_unavailable", error=str(exc), ms=ms())
            return Status.RX_T_APPN
        if message is None:  # a part of a long MO, kept in Redis until the others come
            metrics.mo.inc(channel, "-", "part")
            return Status.ROK
        mo_token = bind_context(mo_id=message.mo_id)
        try:
            try:
                handler_name, outcome = await self._dispatch(message)
            except StoreUnavailable as exc:
                metrics.store_unavailable.inc("mo")
                metrics.mo.inc(channel, "-", "deferred")
                log.warning("mo_deferred", to=message.short_code, reason="redis_unavailable", error=str(exc),
                            ms=ms())
                return Status.RX_T_APPN
            except Overloaded as exc:  # its costly work would wait too long: the SMSC brings it back later
                metrics.mo.inc(channel, "-", "throttled")
                log.warning("mo_deferred", to=message.short_code, reason="busy",
                         expected_wait_s=round(exc.expected_wait_s, 2), ms=ms())
                return Status.RTHROTTLED
            except Exception:  # answered as the ESME would; logged here, in the MO's context
                metrics.mo.inc(channel, "-", "failed")
                log.exception("mo_failed", to=message.short_code, ms=ms())
                return Status.RX_T_APPN
            metrics.mo.inc(channel, route_label(handler_name), outcome)
            metrics.mo_seconds.observe(time.perf_counter() - started, channel)
            ussd = {"ussd_op": message.ussd_service_op} if message.ussd_service_op is not None else {}
            log.info("mo_handled", to=message.short_code, handler=handler_name, status="ROK", ms=ms(), **ussd)
        finally:
            unbind_context(mo_token)
        return Status.ROK

    async def _assemble(self, pdu: DeliverSm | DataSm, part: Part) -> InboundMessage | None:
        """One part of a long MO kept in Redis; the whole message once every part is in, else None."""
        whole = await self.store.add_part(
            pdu.source_addr, f"{pdu.destination_addr}:{part.reference}:{part.total}", part.seqnum, part.total,
            part.payload,
        )
        if whole is None:
            log.debug("mo_part_stored", msisdn=pdu.source_addr, part=part.seqnum, total=part.total)
            return None
        return self._message(pdu, whole, part)

    def _message(self, pdu: DeliverSm | DataSm, payload: bytes, part: Part | None) -> InboundMessage:
        """What the handlers read of an MO whose payload is whole."""
        mo_id, mo_ttl = mo_identity(pdu, payload, part, window_s=self.settings.mo_dedup_window_s)
        try:
            text = decode_text(payload, pdu.data_coding)
        except TextDecodeError:
            log.info("mo_undecodable", msisdn=pdu.source_addr, data_coding=pdu.data_coding)
            text = ""
        is_ussd = pdu.ussd_service_op is not None
        return InboundMessage(
            msisdn=pdu.source_addr,
            short_code=pdu.destination_addr,
            text=text,
            channel=Channel.USSD if is_ussd else Channel.SMS,
            mo_id=mo_id,
            received_at=self.clock.now(),
            mo_ttl_s=mo_ttl,
            ussd_service_op=pdu.ussd_service_op,
            its_session_info=pdu.its_session_info,
            content_only=pdu.user_message_reference is None,
        )

    async def _dispatch(self, message: InboundMessage) -> tuple[str, str]:
        """Run the handler; (its name, the commit's outcome: applied or duplicate). A blocked
        number's MO is answered by the access model's refusal instead (`handlers.access`)."""
        handler = None
        if message.channel is Channel.USSD:  # dialogues, timeouts, aborts: handlers/ussd.py
            # The gate's read (the profile) goes with the dialogue's, in one round trip.
            first = await self.store.dialogues.step_read(message.msisdn, message.mo_id)
            refused = await refuse_if_blocked(message, self.platform, first.blocked_from)
        else:
            first = None
            route = self.router.route_sms(message.short_code, message.text)
            handler = route.handler
            if route.one_commit:
                # That commit checks N3 itself (no read before it); a blocked number's MO commits
                # nothing and gets the refusal instead.
                ctx = Context(self.platform, message, unless_blocked_on=today(self.clock.now()).isoformat())
                await handler(ctx)
                if ctx.blocked_from is None:
                    return self._handled(handler, ctx)
                refused = await refuse_blocked(message, self.platform)
            else:
                refused = await refuse_blocked_mo(message, self.platform)
        if refused is not None:
            for mt in refused.messages:
                self._spawn(self.send(mt))
            return "access.blocked", refused.outcome
        if first is not None:
            outcome = await handle_ussd(message, self.platform, self.router, first=first)
            self._send_all(outcome.result)
            if outcome.result.outcome == "applied":
                reply_op = next((m.ussd_service_op for m in outcome.result.messages
                                 if m.ussd_service_op is not None), None)
                self.dialogues.step(message.msisdn, message.ussd_service_op, message.its_session_info,
                                    outcome.handler, reply_op)
            return outcome.handler, outcome.result.outcome
        assert handler is not None
        ctx = Context(self.platform, message)
        await handler(ctx)
        return self._handled(handler, ctx)

    def _handled(self, handler: Handler, ctx: Context) -> tuple[str, str]:
        """A handler's MTs on their way; (its name, its commit's outcome)."""
        if ctx.result is None:
            raise RuntimeError(f"handler {handler.__qualname__} committed nothing")
        self._send_all(ctx.result)
        return handler.__qualname__, ctx.result.outcome

    def _send_all(self, result: CommitResult) -> None:
        """Send the MTs a commit queued; those it saw go to a number not blocked skip the N3 read."""
        cleared = cleared_to_send(result, self.clock.now())
        for mt in result.messages:
            self._spawn(self.send(mt, cleared=cleared))

    async def on_receipts(self, pdus: list[DeliverSm], bind: str = "") -> list[int]:
        """Delivery receipts (those one read brought, together) to the statuses their responses carry.

        Each is correlated with its MT: by this process's memory when it submitted the part and
        recorded it (`_submitted`), else in Redis (`dlr:<message id>`, whichever of receipt and
        submit_sm_resp comes second completes it). Those whose MT is known are recorded (state and
        audit entry): one round trip for the batch, two when some had to be met in Redis. Redis
        away: ESME_RX_T_APPN, the SMSC delivers them again. An unreadable receipt is answered
        ESME_ROK (a redelivery would be as unreadable) and logged."""
        statuses = [int(Status.ROK)] * len(pdus)
        readable: list[tuple[int, Receipt]] = []
        for at, pdu in enumerate(pdus):
            # The receipt text's fields (id, stat, err) are ASCII, where GSM 03.38, IA5 and Latin-1
            # agree: a byte-for-byte read is enough, and much cheaper than decoding GSM 7-bit.
            raw = pdu.short_message
            try:
                text = raw.decode("latin-1") if pdu.data_coding in (0, 1, 3) else decode_text(raw, pdu.data_coding)
            except TextDecodeError:
                text = ""
            receipt = parse_receipt(pdu, text)
            if receipt is None:
                log.warning("receipt_unreadable", bind=bind, msisdn=mask_msisdn(pdu.source_addr))
                continue
            self.metrics.receipts.inc(message_state_label(receipt.state._name_))
            readable.append((at, receipt))
        if not readable:
            return statuses
        complete: list[dict[str, str]] = []
        meet: list[Receipt] = []
        here: list[tuple[Receipt, PartSentHere]] = []
        for _, receipt in readable:
            part = self._submitted.take(receipt.message_id)
            if part is None:
                meet.append(receipt)
            else:
                here.append((receipt, part))
        if here:
            # A receipt may overtake its part's record (SMSCs answer a submit and send its receipt at
            # once): it waits for it here, in this process, rather than going through Redis.
            pending = {part.recorded for _, part in here if not part.recorded.done()}
            if pending:
                await asyncio.wait(pending, timeout=RECORD_WAIT_S)
            for receipt, part in here:
                if part.recorded.done() and part.recorded.result():
                    complete.append({"msisdn": part.msisdn, "mt_id": part.mt_id, "state": receipt.state._name_,
                                     "err": receipt.error})
                else:  # its record failed or is late: through Redis, as any other process would
                    meet.append(receipt)
        try:
            if meet:
                known = await self.store.receipts_arrived(
                    [(receipt.message_id, receipt.state._name_, receipt.error) for receipt in meet])
                # Without `msisdn`, the submit_sm_resp is still on its way: `send` finishes the job.
                complete += [k for k in known if "msisdn" in k]
            if complete:
                await self._record_receipts(complete)
        except StoreUnavailable as exc:
            self.metrics.store_unavailable.inc("receipt")
            log.warning("receipt_deferred", bind=bind, receipts=len(readable), reason="redis_unavailable",
                        error=str(exc))
            for at, _ in readable:
                statuses[at] = Status.RX_T_APPN
        return statuses

    async def _record_receipts(self, known: list[dict[str, str]]) -> None:
        """Each MT's final state and its audit entry, from what the correlation knows, in one round trip."""
        batch = []
        for k in known:
            msisdn, mt_id, state, err = k["msisdn"], k["mt_id"], k["state"], k.get("err", "")
            outcome = "ok" if state == DELIVERED else "failed"
            detail = render(mt=mt_id, state=state, err=err)
            audit = AuditEvent("mt_receipt", Channel.SMS, outcome=outcome, detail=detail)
            batch.append((msisdn, mt_id, state, audit))
            log.debug("mt_receipt", msisdn=msisdn, mt_id=mt_id, state=state, err=err)
        await self.store.receipts_recorded(batch)

    # ---- outbound ---------------------------------------------------------------------------
    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        if self._sends.stopping:  # the MT stays queued and leased: whoever runs next sends it
            coro.close()
            return
        self._sends.spawn(coro)

    def _pick_client(self) -> EsmeClient:
        """The next bind that can submit, round robin; when none is bound, any (it waits for its bind)."""
        for _ in range(len(self.clients)):
            client = next(self._round_robin)
            if client.can_submit:
                return client
        return next(self._round_robin)

    def _submit_pdus(self, mt: OutboundMessage) -> list[SubmitSm]:
        if mt.ussd_service_op is not None:
            coding = choose_encoding(mt.text)
            data = encode_text(mt.text, coding, cache=not mt.secret)[:USSD_MAX_OCTETS]
            return [SubmitSm(service_type="USSD", source_addr=mt.source, destination_addr=mt.destination,
                             data_coding=coding, short_message=data, ussd_service_op=mt.ussd_service_op,
                             its_session_info=mt.its_session_info)]
        # The reference comes from the MT id: parallel long MTs to one phone do not collide
        # (16 bits), and a resend after recovery carries the same reference as the first try.
        reference = int.from_bytes(hashlib.blake2b(mt.mt_id.encode(), digest_size=2).digest(), "big")
        split = split_text(mt.text, reference=reference, use_16bit_ref=True, cache=not mt.secret)
        esm_class = EsmClass.UDHI if split.esm_class_udhi else 0
        return [
            SubmitSm(source_addr_ton=0 if ascii_digits(mt.source) else 5, source_addr=mt.source,
                     dest_addr_ton=1, dest_addr_npi=1, destination_addr=mt.destination, esm_class=esm_class,
                     registered_delivery=1, data_coding=split.data_coding, short_message=part)
            for part in split.parts
        ]

    async def send(self, mt: OutboundMessage, *, cleared: bool = False) -> bool:
        """Submit one MT (all its parts); leave it queued for recovery if the link stays down.

        Throttling, timeouts and lost links are retried by the bind (never a drop); a submit that
        comes back unsent (the gateway is stopping) leaves the MT in the outbox, and its lease
        hands it to any live gateway. Once submitted, one pipelined round trip takes it out of
        the outbox, records its state and ties the SMSC message ids to it for the receipts.
        `cleared`: the commit that queued it has just seen its number not blocked (N3).
        """
        held = self._held.get(mt.mt_id)
        if held is not None:  # this process is sending it already (a redelivered MO, its own recovery):
            if mt.leased_until > held.leased_until:  # ... and now holds it under a newer lease
                self._held[mt.mt_id] = mt
            return False
        self.mts_in_flight.begin(mt.mt_id)
        self._held[mt.mt_id] = mt
        try:
            if not cleared and await self._withheld(mt):
                return False
            return await self._send(mt)
        finally:
            self._held.pop(mt.mt_id, None)
            self.mts_in_flight.end(mt.mt_id)

    def _still_leased(self, mt_id: str) -> bool:
        """Does this process hold `mt_id` under a lease with time left?"""
        held = self._held.get(mt_id)
        if held is None:
            return False
        return held.leased_until == 0.0 or held.leased_until - LEASE_MARGIN_S > lease_now()

    async def _may_submit(self, mt_id: str) -> bool:
        """May this process write the next part of `mt_id` now? Only under its lease: one close to its
        end is renewed first (it still is ours if nobody took it); one lost, or that cannot be renewed
        (Redis away), is left to whoever takes it."""
        if self._still_leased(mt_id):
            return True
        held = self._held.get(mt_id)
        if held is None or held.leased_until < 0:
            return False
        try:
            renewed = await self.store.renew_lease(held)
        except StoreUnavailable:
            return False
        if renewed is None:
            log.warning("mt_lease_lost", msisdn=held.destination, mt_id=mt_id)
            self._held[mt_id] = dataclasses.replace(held, leased_until=-1.0)
            return False
        if mt_id in self._held:
            self._held[mt_id] = renewed
        return True

    async def _keep_leases(self) -> None:
        """Renew the leases of MTs still being sent (waiting for a bind, the window, the SMSC) before
        they run out, so no other gateway takes them meanwhile; one lost is not sent by this process."""
        soon = lease_now() + self.settings.mt_lease_s / 2
        for mt_id, mt in list(self._held.items()):
            if mt.leased_until == 0.0 or mt.leased_until > soon:
                continue
            renewed = await self.store.renew_lease(mt)
            if mt_id not in self._held:
                continue
            if renewed is None:
                log.warning("mt_lease_lost", msisdn=mt.destination, mt_id=mt_id)
                self._held[mt_id] = dataclasses.replace(mt, leased_until=-1.0)
            else:
                self._held[mt_id] = renewed

    async def _withheld(self, mt: OutboundMessage) -> bool:
        """N3: an SMS for a blocked number leaves the outbox unsent, audited (`handlers.access`)."""
        try:
            if not await mt_withheld(self.store, mt, self.clock.now()):
                return False
            await self.store.mt_submitted(mt.destination, mt.mt_id, "WITHHELD", AuditEvent(
                "mt_withheld", Channel.SMS, outcome="blocked", detail=render(mt=mt.mt_id, **{"from": mt.source})), [])
        except StoreUnavailable:  # still queued and leased: sent (or withheld) when Redis is back
            self.metrics.store_unavailable.inc("mt")
            log.warning("mt_gate_unavailable", msisdn=mt.destination, mt_id=mt.mt_id)
            return True
        log.info("mt_withheld", msisdn=mt.destination, mt_id=mt.mt_id, reason="blocked")
        return True

    async def _send(self, mt: OutboundMessage) -> bool:
        message_ids: list[str] = []
        status = Status.ROK
        proceed = functools.partial(self._may_submit, mt.mt_id)
        # All parts on one bind, written together when its window has room for them.
        for resp in await self._pick_client().submit_all(self._submit_pdus(mt), proceed=proceed):
            if resp.status in (Status.RMSGQFUL, Status.RTHROTTLED):
                log.warning("mt_postponed", msisdn=mt.destination, mt_id=mt.mt_id, status=resp.status,
                            leased=self._still_leased(mt.mt_id))
                return False
            if resp.status == Status.ROK:
                message_ids.append(resp.message_id)
            elif status == Status.ROK:
                status = Status(resp.status) if resp.status in Status._value2member_map_ else Status.RUNKNOWNERR
        channel = Channel.USSD if mt.ussd_service_op is not None else Channel.SMS
        outcome = "ok" if status == Status.ROK else "failed"
        audit = AuditEvent("mt_submitted", channel, outcome=outcome,
                           detail=render(mt=mt.mt_id, **{"from": mt.source}, parts=len(message_ids),
                                         status=status._name_))
        state = "SUBMITTED" if outcome == "ok" else "REJECTED"
        # An SMS part's receipt that comes back here is met in memory, once the record below is done.
        recorded = (self._submitted.add(message_ids, mt.destination, mt.mt_id)
                    if mt.ussd_service_op is None and message_ids else None)
        delay = 0.05
        try:
            while True:  # sent: until it is recorded, nobody may send it again (its lease is kept meanwhile)
                try:
                    # A USSD screen asks for no receipt (registered_delivery 0): nothing to correlate.
                    known = await self.store.mt_submitted(mt.destination, mt.mt_id, state, audit, message_ids,
                                                          receipts=mt.ussd_service_op is None)
                    break
                except StoreUnavailable:
                    self.metrics.store_unavailable.inc("mt")
                    if delay == 0.05:
                        log.warning("mt_done_unrecorded", msisdn=mt.destination, mt_id=mt.mt_id, retry=True)
                    if self._sends.stopping:
                        log.warning("mt_done_unrecorded", msisdn=mt.destination, mt_id=mt.mt_id, retry=False)
                        return status == Status.ROK
                    await asyncio.sleep(delay)
                    delay = min(RECORD_RETRY_MAX_S, delay * 2)
            if recorded is not None:
                recorded.set_result(True)
                # those whose receipt came first, through Redis, are recorded just below
                self._submitted.forget(m for m, known_part in zip(message_ids, known, strict=True)
                                       if "state" in known_part)
        finally:
            if recorded is not None and not recorded.done():  # not recorded here: receipts go through Redis
                recorded.set_result(False)
                self._submitted.forget(message_ids)
        try:
            early = [receipt for receipt in known if "state" in receipt]  # came before the submit_sm_resp
            if early:
                await self._record_receipts(early)
        except StoreUnavailable:
            log.warning("receipt_unrecorded", msisdn=mt.destination, mt_id=mt.mt_id)
        log.debug("mt_sent", msisdn=mt.destination, mt_id=mt.mt_id, parts=len(message_ids), status=status._name_)
        return status == Status.ROK

    async def _recover_once(self) -> None:
        """Heartbeat, then take the MTs due in this gateway's share of the recovery buckets."""
        self._share = await self.store.indexes.heartbeat(self.gateway_id, lease_now(), self._recovery_s)
        for mt in await self.store.reclaim(self._share):
            # Its sender died (or lost Redis) between its commit and its record: it may have been
            # submitted already, and SMPP cannot tell without the message id that died with it.
            self.metrics.mt_resent.inc("reclaimed")
            log.warning("mt_reclaimed", msisdn=mt.destination, mt_id=mt.mt_id, maybe_sent=True)
            self._spawn(self.send(mt))
