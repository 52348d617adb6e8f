"""`Store`: the platform's state in Redis. Every method is one atomic step or a read.

Every change to a subscriber is one `Change` committed by `Store.commit` (`ussdgw.store.commit`,
one script). The typed reads are grouped by what they read: `store.subscribers` (profiles),
`store.money` (holds, gifts, operation marks), `store.numbers` (linked numbers, blacklists,
consents, the N2 index), `store.sessions`, `store.archives`, `store.dialogues` (USSD). The MT
lifecycle after the commit (submitted, receipts, recovery of MTs whose sender died) and long MOs'
parts are methods here.

Time: what the rules compare with "now" (D2 send times, audit times, `created_at`) comes from the
store's injected `Clock` (`Store.clock`, the platform's one clock). MT leases and the outbox index
are real wall time (`lease_now`): every gateway process shares them, and a test that fast-forwards
the clock must not make an MT in flight look abandoned. TTLs are Redis's own time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.exceptions import InvalidTag
from redis.asyncio.cluster import RedisCluster

from ussdgw.clock import Clock
from ussdgw.store.acting import attributed
from ussdgw.store.archives import Archives
from ussdgw.store.commit import STALE, Change, CommitResult, MoMark, Outcome, script_call
from ussdgw.store.connect import Probe, RedisClient, connect
from ussdgw.store.dialogues import Dialogues
from ussdgw.store.errors import SealingKeyMismatch, StoreUnavailable, guarded
from ussdgw.store.indexes import Indexes
from ussdgw.store.keys import (
    AUDIT_MAXLEN,
    DLR_TTL_S,
    PARTS_TTL_S,
    SEALING_CHECK,
    audit_key,
    bucket_of,
    dlr_key,
    lease_key,
    mt_due_key,
    mt_state_key,
    outbox_key,
    pair_member,
    parts_key,
    rate_key,
)
from ussdgw.store.model import AuditEvent, OutboundMessage, RateGuard, audit_entry
from ussdgw.store.money import Money
from ussdgw.store.numbers import Numbers
from ussdgw.store.pipeline import AutoPipeline, replies
from ussdgw.store.profile import STORED, Profile, Subscribers, stored_change
from ussdgw.store.scripts import Scripts
from ussdgw.store.sealing import Sealer
from ussdgw.store.sessions import Sessions

UPDATE_ATTEMPTS = 5
SEALING_TEXT = b"ussdgw: this key seals the queued MTs"


_OUTCOMES = {outcome.value.encode(): outcome for outcome in Outcome}  # the script's first word, read per commit


def lease_now() -> float:
    """Real wall time, for MT leases and the outbox index only (never the business clock)."""
    return time.time()


def _leased(messages: Sequence[OutboundMessage], until: float) -> tuple[OutboundMessage, ...]:
    return tuple(m.leased(until) for m in messages)


def _consume(future: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a command nobody awaits any more (asyncio warns of one never read)."""
    if not future.cancelled():
        future.exception()


def _flat_hash(raw: Sequence[bytes]) -> dict[str, str]:
    return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}


class Store:
    """The platform's state in Redis (module docstring)."""

    def __init__(self, redis_client: RedisClient, secret_key: bytes, *, lease_s: float = 15.0,
                 clock: Clock | None = None, wait_replicas: int = 0, wait_timeout_ms: int = 200,
                 reclaim_grace_s: float = 1.0) -> None:
        self.redis = redis_client
        self._cluster = isinstance(redis_client, RedisCluster)  # asked once: RedisCluster's isinstance is slow
        self.sealer = Sealer(secret_key)
        self.lease_s = lease_s
        # How long past its end an MT's lease stays untouched (by recovery, by a redelivered MO):
        # its sender may have sent it while Redis was away and be recording it now.
        self.reclaim_grace_s = reclaim_grace_s
        # The lease ends recovery saw expired once, per (msisdn, mt_id): taken only when seen again.
        self._expired_seen: dict[tuple[str, str], str] = {}
        self.clock = clock or Clock()  # business time (module docstring); leases are real wall time
        # Every script and the hot path's commands go through one batcher of its own connections.
        self.pipeline = AutoPipeline(redis_client)
        # Durability: a commit is answered once this many replicas have it (0: once the primary has it).
        self.pipeline.wait_replicas, self.pipeline.wait_timeout_ms = wait_replicas, wait_timeout_ms
        self.scripts = Scripts(self.pipeline)
        self.subscribers = Subscribers(self)
        self.money = Money(self)
        self.numbers = Numbers(self)
        self.sessions = Sessions(self)
        self.archives = Archives(self)
        self.dialogues = Dialogues(self)
        self.indexes = Indexes(self)

    @classmethod
    def from_url(cls, url: str, secret_key: bytes, **kwargs: Any) -> Store:
        """A store on `url`: one server, or a Redis Cluster for `redis+cluster://` (`ussdgw.store.connect`)."""
        return cls(connect(url), secret_key, **kwargs)

    @property
    def cluster(self) -> bool:
        return self._cluster

    async def close(self) -> None:
        await self.pipeline.close()
        await self.redis.aclose()

    def probe(self, timeout_s: float = 0.5) -> Probe:
        """A readiness probe that PINGs every primary over connections of its own."""
        return Probe(self.redis, timeout_s)

    async def ping(self) -> bool:
        """Whether every primary answers (one server: whether it does)."""
        probe = self.probe(timeout_s=2.0)
        try:
            return all(answer == "ok" for answer in (await probe.check()).values())
        finally:
            await probe.close()

    async def check_sealing_key(self) -> None:
        """Refuse to run with a key that cannot read the queue: the first process to use this Redis
        leaves a known text sealed with its key; every later one must open it (gateways on several
        hosts share one `secret_key`). Raises `SealingKeyMismatch` saying what to do."""
        await guarded(self.redis.set(SEALING_CHECK, self.sealer.seal(SEALING_TEXT).hex(), nx=True))
        stored = await guarded(self.redis.get(SEALING_CHECK))
        try:
            fits = stored is not None and self.sealer.open(bytes.fromhex(stored.decode())) == SEALING_TEXT
        except (InvalidTag, ValueError):
            fits = False
        if not fits:
            raise SealingKeyMismatch(
                "the secret key (secret_key, USSDGW_SECRET_KEY, else <state_dir>/secret.key) is not the key that "
                "sealed the MTs queued in this Redis: give every gateway sharing it the same key (or, to start "
                f"afresh with a new key once no MT is queued, delete the Redis key {SEALING_CHECK!r})")

    # ---- the one commit engine -------------------------------------------------------------
    async def commit(self, msisdn: str, change: Change) -> CommitResult:
        """Apply `change` to `msisdn`'s slot, all or nothing, once per MO when it has an MO mark.

        A change that queues an SMS also reads the number's N3 block day, within the script
        (`CommitResult.blocked_from`): the first send of an MT queued for a number not blocked then
        needs no second read. The MTs' recovery entries are in Redis before the MTs: on one server
        the script writes them itself, ahead of the MTs and only when it queues them; on a cluster
        they live on another node, so they are written first and their answer awaited."""
        now, leased = self.clock.now(), lease_now()
        until = round(leased + self.lease_s, 3)
        messages = change.messages
        sealed = [[m.mt_id, self.sealer.seal_message(m)] for m in messages]
        gate = any(m.ussd_service_op is None and not m.reaches_blocked for m in messages)
        # An index entry for nothing is harmless, an MT without one is not (docstring).
        indexed = bool(sealed) and self.cluster
        keys, arg = script_call(msisdn, stored_change(msisdn, change), now=now, lease_until=until,
                                tag=os.urandom(4).hex() if change.guards else "", sealed=sealed,
                                lease_now=leased, grace_s=self.reclaim_grace_s, created_field=STORED["created_at"],
                                gate=STORED["blocked_from"] if gate else "", block_field=STORED["blocked_from"],
                                index_key=mt_due_key(bucket_of(msisdn)) if sealed and not indexed else "")
        if indexed:
            await guarded(self.indexes.mts_queued(msisdn, (m.mt_id for m in messages), until))
        raw = await guarded(self.scripts.submit("commit", keys, [arg], durable=True))
        outcome = _OUTCOMES[raw[0]]
        if indexed and outcome is not Outcome.APPLIED:  # nothing was queued: its entries go now, not at their due time
            with contextlib.suppress(StoreUnavailable):
                await self.indexes.mts_dropped(msisdn, [m.mt_id for m in messages])
        if outcome is Outcome.APPLIED:
            profile = Profile.from_stored(msisdn, _flat_hash(raw[1])) if change.read_profile else None
            return CommitResult(outcome, _leased(messages, until), profile=profile,
                                autopaid_kop=change.autopaid_kop, blocked_from=raw[2].decode() if gate else None)
        if outcome is Outcome.DUPLICATE:
            return await self._answered_again(msisdn, change.mo, raw[1:], until)
        if outcome is Outcome.LIMITED:
            return CommitResult(outcome, code=raw[1].decode(), retry_at=float(raw[2]))
        if outcome is Outcome.REFUSED:
            return CommitResult(outcome, code=raw[1].decode(), detail=raw[2].decode())
        if outcome is Outcome.BLOCKED:
            return CommitResult(outcome, detail=raw[1].decode())
        return CommitResult(outcome)

    async def replay(self, msisdn: str, mark: MoMark) -> CommitResult | None:
        """A redelivered MO's answer (as `commit` gives it: the MTs nobody is sending any more), or None
        when the MO was never applied; writes nothing then. Lets a costly handler (a password's
        scrypt) find a redelivery before doing its work."""
        leased = lease_now()
        until = round(leased + self.lease_s, 3)
        keys, arg = script_call(msisdn, Change(mo=mark), now=self.clock.now(), lease_until=until, tag="", sealed=[],
                                lease_now=leased, grace_s=self.reclaim_grace_s, replay=True)
        raw = await guarded(self.scripts.submit("commit", keys, [arg]))
        if raw[0] == b"absent":
            return None
        return await self._answered_again(msisdn, mark, raw[1:], until)

    async def _answered_again(self, msisdn: str, mark: MoMark | None, blobs: Sequence[bytes],
                              until: float) -> CommitResult:
        """A repeated MO's result: its MTs that come back, now leased to the caller. Those whose lease
        had run out still have their recovery entries (removed only after a send); copies queued again
        for a repeat known by its text alone (`MoMark.again`) get theirs here (a crash before this
        leaves the MO unacknowledged: its redelivery finds them in the outbox once their lease ran out)."""
        again = [self.sealer.open_message(blob) for blob in blobs]
        if again and mark is not None and mark.again:
            await guarded(self.indexes.mts_queued(msisdn, (m.mt_id for m in again), until))
        return CommitResult(Outcome.DUPLICATE, _leased(again, until))

    async def update(self, msisdn: str, build: Callable[[Profile], Change]) -> CommitResult:
        """Commit what `build` makes of `msisdn`'s profile as it is now; when a check it made on that
        profile no longer holds (`STALE`: the balance moved meanwhile), read it again and rebuild.
        Like redis-py's `transaction(func, *watches)`, with the watch inside the script."""
        for _ in range(UPDATE_ATTEMPTS - 1):
            result = await self.commit(msisdn, build(await self.subscribers.profile(msisdn)))
            if result.code != STALE:
                return result
        return await self.commit(msisdn, build(await self.subscribers.profile(msisdn)))

    # ---- D2 without a change ---------------------------------------------------------------
    async def rate_peek(self, msisdn: str, guard: RateGuard) -> tuple[str, float] | None:
        """Would `guard` refuse now? (reason, retry_at) or None; counts nothing. A cheap read
        before costly work: the commit that counts decides for real."""
        refused = await self.scripts.run("rate_peek", [rate_key(msisdn, guard.name)],
                                         [guard.cooldown_s, guard.per_hour, self.clock.now()])
        return (refused[0].decode(), float(refused[1])) if refused else None

    async def attempt(self, msisdn: str, guard: RateGuard) -> tuple[str, float] | None:
        """Count one attempt (sign-in, code entry) against `guard`; a refused one counts nothing."""
        refused = await self.scripts.run("attempt", [rate_key(msisdn, guard.name)],
                                         [guard.cooldown_s, guard.per_hour, self.clock.now(), os.urandom(4).hex()])
        return (refused[0].decode(), float(refused[1])) if refused else None

    # ---- audit -----------------------------------------------------------------------------
    async def audit(self, msisdn: str, event: AuditEvent) -> None:
        """One P10 entry on its own (a step that changes something audits within its commit)."""
        await self.scripts.run("audit", [audit_key(msisdn)],
                               [AUDIT_MAXLEN, *attributed(msisdn, event).fields(self.clock.now())])

    async def audit_trail(self, msisdn: str, count: int = 100) -> list[dict[str, str]]:
        """The newest `count` entries, oldest first, each with its `id` (its number in the trail)."""
        entries = await guarded(self.pipeline.command("LRANGE", audit_key(msisdn), 0, count - 1))
        return [audit_entry(raw) for raw in reversed(entries)]

    # ---- long MOs --------------------------------------------------------------------------
    async def add_part(self, msisdn: str, reference: str, seqnum: int, total: int, payload: bytes,
                       ttl_s: int = PARTS_TTL_S) -> bytes | None:
        """Keep one part of a long MO; once all are in, the whole payload (parts stay until TTL,
        so a redelivered last part reassembles the same message and is deduplicated later)."""
        parts = await self.scripts.run("add_part", [parts_key(msisdn, reference)], [seqnum, payload, total, ttl_s])
        return b"".join(parts) if parts else None

    # ---- MTs after the commit --------------------------------------------------------------
    async def mt_submitted(self, msisdn: str, mt_id: str, state: str, audit: AuditEvent,
                           message_ids: Sequence[str], *, receipts: bool = True) -> list[dict[str, str]]:
        """The MT left the outbox with `state` (SUBMITTED / REJECTED) and its SMSC message ids are
        tied to it for receipt correlation, in one round trip. Returns, per message id, everything
        known about it: a receipt that arrived before the submit_sm_resp shows up with its `state`.
        Without `receipts` (a USSD screen asks for none) nothing is tied: nothing known, per id.

        On one server it is one script (`lua/mt_done.lua`): the state, the audit entry, the recovery
        entry's removal and every part's `dlr:<id>`. On a cluster the `dlr:<id>` keys and the index
        live in other slots than the subscriber's: a script per part, and the index entry removed
        once the MT is out of the outbox. Each step is atomic and idempotent, so a crash in between
        is repaired by the lease (the MT is sent again) and by the receipt correlation (whichever
        side comes second)."""
        keys = [outbox_key(msisdn), lease_key(msisdn), audit_key(msisdn), mt_state_key(msisdn)]
        single = not self.cluster
        args = [mt_id, AUDIT_MAXLEN, state, DLR_TTL_S, msisdn, pair_member(msisdn, mt_id) if single else "",
                audit.packed(self.clock.now())]
        if single:
            keys.append(mt_due_key(bucket_of(msisdn)))
            if receipts:
                keys += [dlr_key(m) for m in message_ids]
            met = await self.scripts.run("mt_done", keys, args)
            if not receipts:
                return [{} for _ in message_ids]
            return [{"msisdn": msisdn, "mt_id": mt_id, "state": met[i].decode(), "err": met[i + 1].decode()}
                    if met[i] else {"msisdn": msisdn, "mt_id": mt_id} for i in range(0, len(met), 2)]
        done = self.scripts.submit("mt_done", keys, args)
        meets = [self.scripts.submit("dlr_meet", [dlr_key(m)], [DLR_TTL_S, "msisdn", msisdn, "mt_id", mt_id])
                 for m in (message_ids if receipts else ())]
        results = await guarded(replies([done, *meets]))
        # Out of the outbox, its recovery entry can go (or recovery drops it).
        with contextlib.suppress(StoreUnavailable):
            await self.indexes.mt_done(msisdn, mt_id)
        return [_flat_hash(raw) for raw in results[1:]] if receipts else [{} for _ in message_ids]

    async def receipt_arrived(self, message_id: str, state: str, err: str) -> dict[str, str]:
        """A receipt's side of the correlation: everything known about `message_id` (with `msisdn`
        and `mt_id` once the sender's side is in)."""
        return (await self.receipts_arrived([(message_id, state, err)]))[0]

    async def receipts_arrived(self, receipts: Sequence[tuple[str, str, str]]) -> list[dict[str, str]]:
        """`receipt_arrived` for each (message id, state, err) of a batch, in one round trip: on one
        server one script for all of them, on a cluster one per receipt (each `dlr:<id>` its slot)."""
        if not receipts:
            return []
        if not self.cluster:
            args: list[str | int] = [DLR_TTL_S]
            for _, state, err in receipts:
                args += [state, err]
            sender = await self.scripts.run("dlr_receipts", [dlr_key(m) for m, _, _ in receipts], args)
            return [{"msisdn": sender[2 * i].decode(), "mt_id": sender[2 * i + 1].decode(), "state": state, "err": err}
                    if sender[2 * i] else {"state": state, "err": err} for i, (_, state, err) in enumerate(receipts)]
        raws = await guarded(replies([
            self.scripts.submit("dlr_meet", [dlr_key(message_id)], [DLR_TTL_S, "state", state, "err", err])
            for message_id, state, err in receipts]))
        return [_flat_hash(raw) for raw in raws]

    async def receipt_recorded(self, msisdn: str, mt_id: str, state: str, audit: AuditEvent) -> None:
        """The MT's final state from its receipt, and its audit entry, in the next batch."""
        await self.receipts_recorded([(msisdn, mt_id, state, audit)])

    async def receipts_recorded(self, receipts: Sequence[tuple[str, str, str, AuditEvent]]) -> None:
        """`receipt_recorded` for each (msisdn, MT id, state, audit event) of a batch, in one round
        trip: on one server one script for all of them; on a cluster one per subscriber (its slot),
        with all of its receipts (a reply's parts)."""
        now = self.clock.now()
        if not self.cluster:
            keys: list[str] = []
            at: dict[str, int] = {}
            args: list[str | int] = [DLR_TTL_S, AUDIT_MAXLEN]
            for msisdn, mt_id, state, audit in receipts:
                s = at.get(msisdn)
                if s is None:
                    s = at[msisdn] = len(at) + 1
                    keys += [mt_state_key(msisdn), audit_key(msisdn)]
                args += [s, mt_id, state, audit.packed(now)]
            await self.scripts.run("mt_receipt", keys, args)
            return
        by_subscriber: dict[str, list[str | int]] = {}
        for msisdn, mt_id, state, audit in receipts:
            by_subscriber.setdefault(msisdn, [DLR_TTL_S, AUDIT_MAXLEN]).extend([1, mt_id, state, audit.packed(now)])
        await guarded(replies([
            self.scripts.submit("mt_receipt", [mt_state_key(msisdn), audit_key(msisdn)], args)
            for msisdn, args in by_subscriber.items()]))

    async def mt_states(self, msisdn: str) -> dict[str, str]:
        """MT id -> its last known state, for the MTs of the last `DLR_TTL_S`."""
        raw = await guarded(self.redis.hgetall(mt_state_key(msisdn)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def outbox_depth(self) -> tuple[int, int]:
        """(MTs queued or being sent, those past their lease's end), from the MT recovery index:
        one command per bucket, whatever the number of subscribers."""
        return await self.indexes.mts_indexed(lease_now())

    async def renew_lease(self, mt: OutboundMessage) -> OutboundMessage | None:
        """Extend the lease this process holds on `mt` by `lease_s`; None when it is no longer ours
        (sent, or taken by another gateway after it ran out): then this process must not send it."""
        until = round(lease_now() + self.lease_s, 3)
        msisdn = mt.destination
        renewed = await self.scripts.run("renew", [outbox_key(msisdn), lease_key(msisdn)],
                                         [mt.mt_id, repr(mt.leased_until), repr(until)])
        return mt.leased(until) if renewed else None

    async def reclaim(self, buckets: Sequence[int], limit: int = 100) -> list[OutboundMessage]:
        """MTs due in `buckets` whose sender died (their lease ran out, and was seen so `reclaim_grace_s`
        before): leased to the caller. Entries of MTs sent are dropped; of MTs held, moved to their
        lease's end. The work is what is due, never the number of subscribers."""
        now = lease_now()
        until = round(now + self.lease_s, 3)
        out: list[OutboundMessage] = []
        due = await self.indexes.mts_due(buckets, now, limit)
        looks = [self.scripts.submit("reclaim", [outbox_key(m), lease_key(m)],
                                     [mt_id, repr(now), repr(until), self._expired_seen.get((m, mt_id), "")])
                 for m, mt_id in due]
        for (msisdn, mt_id), raw in zip(due, await guarded(asyncio.gather(*looks)), strict=True):
            verdict = raw[0].decode()
            if verdict == "gone":
                self._expired_seen.pop((msisdn, mt_id), None)
                await self.indexes.mt_done(msisdn, mt_id)
            elif verdict == "held":
                self._expired_seen.pop((msisdn, mt_id), None)
                await self.indexes.mt_due_at(msisdn, mt_id, float(raw[1]))
            elif verdict == "expired":
                if len(self._expired_seen) > 100_000:
                    self._expired_seen.clear()
                self._expired_seen[(msisdn, mt_id)] = raw[1].decode()
                await self.indexes.mt_due_at(msisdn, mt_id, now + self.reclaim_grace_s)
            else:
                self._expired_seen.pop((msisdn, mt_id), None)
                await self.indexes.mt_due_at(msisdn, mt_id, until)
                out.append(self.sealer.open_message(raw[1]).leased(until))
        return out
