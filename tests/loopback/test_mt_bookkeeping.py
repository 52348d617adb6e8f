"""An MT's bookkeeping around its send, against a real redis-server and a cluster: the recovery entry
written with (one server) or before (cluster) the commit that queues it, the record after the
submit that drops it and ties every part's message id, the receipts of several subscribers recorded
together. A receipt met at another gateway, before or after the record, and a Redis answer lost
mid-batch leave nothing stranded or doubled."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from tests.support.platform import StoreFactory
from ussdgw.store import AuditEvent, Change, MoMark, OutboundMessage, Store, StoreUnavailable
from ussdgw.store.keys import INDEX_BUCKETS, dlr_key, mt_due_key, mt_state_key

ALL = tuple(range(INDEX_BUCKETS))
PHONE = "79161234567"


def reply(msisdn: str, mt_id: str) -> OutboundMessage:
    return OutboundMessage(mt_id=mt_id, source="5555", destination=msisdn, text="Справка")


def answered(mo_id: str, mt: OutboundMessage) -> Change:
    return Change(mo=MoMark(mo_id, 3600), messages=(mt,), audit=(AuditEvent("mo_received", "sms"),),
                  create_profile=True)


async def entries(store: Store) -> list[str]:
    return sorted([m.decode() for b in ALL for m in await store.redis.zrange(mt_due_key(b), 0, -1)])


async def events(store: Store, msisdn: str) -> list[str]:
    return [e["event"] for e in await store.audit_trail(msisdn)]


SUBMITTED = AuditEvent("mt_submitted", "sms", detail="parts=2")


@pytest.mark.redis_both
async def test_a_submitted_mt_leaves_the_outbox_and_the_index_and_ties_each_part(store: Store) -> None:
    queued = (await store.commit(PHONE, answered("mo-1", reply(PHONE, "mt-1")))).messages[0]
    assert await entries(store) == [f"{PHONE}|mt-1"]
    await store.mt_submitted(PHONE, "mt-0", "SUBMITTED", SUBMITTED, [])  # Redis knows the script from now on
    trips = store.pipeline.batches
    known = await store.mt_submitted(PHONE, queued.mt_id, "SUBMITTED", SUBMITTED, ["m-1", "m-2"])
    assert known == [{"msisdn": PHONE, "mt_id": "mt-1"}] * 2  # no receipt yet, for either part
    if not store.cluster:  # one script: state, audit, index entry and both parts
        assert store.pipeline.batches - trips == 1
    assert await entries(store) == []
    assert await store.redis.hlen(f"sub:{{{PHONE}}}:outbox") == 0
    assert await store.mt_states(PHONE) == {"mt-0": "SUBMITTED", "mt-1": "SUBMITTED"}
    assert await events(store, PHONE) == ["mo_received", "mt_submitted", "mt_submitted"]
    for message_id in ("m-1", "m-2"):
        assert await store.redis.hgetall(dlr_key(message_id)) == {b"msisdn": PHONE.encode(), b"mt_id": b"mt-1"}
        assert 0 < await store.redis.ttl(dlr_key(message_id)) <= 7 * 24 * 3600
    assert await store.redis.ttl(mt_state_key(PHONE)) > 0


@pytest.mark.redis_both
async def test_receipts_met_at_another_gateway_before_and_after_the_record(
        store: Store, store_factory: StoreFactory) -> None:
    """Another gateway process gets the parts' receipts: the first before the sender has recorded
    the submit (it knows only the receipt, and leaves it for the sender), the second after (it
    finds the MT). Neither is lost, neither is recorded twice."""
    other = store_factory()
    queued = (await store.commit(PHONE, answered("mo-1", reply(PHONE, "mt-1")))).messages[0]
    assert await other.receipt_arrived("m-1", "DELIVERED", "000") == {"state": "DELIVERED", "err": "000"}
    known = await store.mt_submitted(PHONE, queued.mt_id, "SUBMITTED", SUBMITTED, ["m-1", "m-2"])
    assert known == [{"msisdn": PHONE, "mt_id": "mt-1", "state": "DELIVERED", "err": "000"},
                     {"msisdn": PHONE, "mt_id": "mt-1"}]
    assert await other.receipt_arrived("m-2", "UNDELIVERABLE", "") == {
        "msisdn": PHONE, "mt_id": "mt-1", "state": "UNDELIVERABLE", "err": ""}
    # The sender records the first, the other gateway the second (what the gateway does with them).
    await store.receipt_recorded(PHONE, "mt-1", "DELIVERED", AuditEvent("mt_receipt", "sms"))
    await other.receipt_recorded(PHONE, "mt-1", "UNDELIVERABLE", AuditEvent("mt_receipt", "sms", outcome="failed"))
    assert await store.mt_states(PHONE) == {"mt-1": "UNDELIVERABLE"}
    assert (await events(store, PHONE)).count("mt_receipt") == 2


@pytest.mark.redis_both
async def test_a_read_of_receipts_at_another_gateway_is_met_in_one_step(
        store: Store, store_factory: StoreFactory) -> None:
    """A gateway that did not send the parts gets a read of receipts: those whose sender recorded its
    side come back with their MT, the one whose submit_sm_resp is still on its way with its state
    only (left for the sender), a receipt repeated in the same read is met again, unchanged."""
    other = store_factory()
    for n in (1, 2):
        queued = (await store.commit(PHONE, answered(f"mo-{n}", reply(PHONE, f"mt-{n}")))).messages[0]
        await store.mt_submitted(PHONE, queued.mt_id, "SUBMITTED", SUBMITTED, [f"m-{n}"])
    await other.receipts_arrived([("m-0", "DELIVERED", "000")])  # Redis knows the script from now on
    trips = other.pipeline.batches
    known = await other.receipts_arrived([("m-1", "DELIVERED", "000"), ("m-9", "EXPIRED", "001"),
                                          ("m-2", "UNDELIVERABLE", ""), ("m-1", "DELIVERED", "000")])
    if not other.cluster:
        assert other.pipeline.batches - trips == 1
    assert known == [{"msisdn": PHONE, "mt_id": "mt-1", "state": "DELIVERED", "err": "000"},
                     {"state": "EXPIRED", "err": "001"},
                     {"msisdn": PHONE, "mt_id": "mt-2", "state": "UNDELIVERABLE", "err": ""},
                     {"msisdn": PHONE, "mt_id": "mt-1", "state": "DELIVERED", "err": "000"}]
    assert await other.receipts_arrived([]) == []
    # The sender of m-9 records its submit later: it finds the receipt that came first.
    queued = (await store.commit(PHONE, answered("mo-9", reply(PHONE, "mt-9")))).messages[0]
    assert await store.mt_submitted(PHONE, queued.mt_id, "SUBMITTED", SUBMITTED, ["m-9"]) == [
        {"msisdn": PHONE, "mt_id": "mt-9", "state": "EXPIRED", "err": "001"}]
    assert 0 < await store.redis.ttl(dlr_key("m-9")) <= 7 * 24 * 3600


@pytest.mark.redis_both
async def test_a_submit_without_receipts_still_drops_its_recovery_entry(store: Store) -> None:
    queued = (await store.commit(PHONE, answered("mo-1", reply(PHONE, "mt-1")))).messages[0]
    assert await store.mt_submitted(PHONE, queued.mt_id, "SUBMITTED", SUBMITTED, ["m-1"], receipts=False) == [{}]
    assert await entries(store) == []
    assert not await store.redis.exists(dlr_key("m-1"))


@pytest.mark.redis_both
async def test_receipts_of_several_subscribers_are_recorded_in_one_step(store: Store) -> None:
    phones = [f"7916555000{i}" for i in range(3)]
    batch = [(m, f"{m}-mt", state, AuditEvent("mt_receipt", "sms", outcome="ok" if state == "DELIVERED" else "failed",
                                              detail=f"part={part}"))
             for m in phones for part, state in ((1, "DELIVERED"), (2, "EXPIRED"))]
    await store.receipts_recorded([("79160000000", "mt", "DELIVERED", AuditEvent("mt_receipt", "sms"))])
    trips = store.pipeline.batches  # Redis knows the script from now on
    await store.receipts_recorded(batch)
    if not store.cluster:
        assert store.pipeline.batches - trips == 1  # one script for the three subscribers
    for m in phones:
        assert await store.mt_states(m) == {f"{m}-mt": "EXPIRED"}  # the parts' receipts in their order
        trail = await store.audit_trail(m)
        assert [(e["event"], e["outcome"], e["detail"]) for e in trail] == [
            ("mt_receipt", "ok", "part=1"), ("mt_receipt", "failed", "part=2")]
        assert await store.redis.ttl(mt_state_key(m)) > 0
    await store.receipts_recorded([])  # an empty batch writes nothing and does not fail


@pytest.mark.redis_both
async def test_a_commit_that_queues_nothing_leaves_no_recovery_entry(store: Store) -> None:
    first = await store.commit(PHONE, answered("mo-1", reply(PHONE, "mt-1")))
    assert first.outcome == "applied"
    again = await store.commit(PHONE, answered("mo-1", reply(PHONE, "mt-2")))  # a redelivery: its new MT is not queued
    assert again.outcome == "duplicate"
    refused = await store.commit("79160000000", Change(must_exist=True, messages=(reply("79160000000", "mt-3"),)))
    assert refused.outcome == "refused"
    assert await entries(store) == [f"{PHONE}|mt-1"]


@pytest.mark.redis_both
async def test_a_store_without_redis_fails_the_bookkeeping_with_store_unavailable(
        store_factory: StoreFactory, redis_backend: str) -> None:
    gone = store_factory("redis://127.0.0.1:1" if redis_backend == "single"
                         else "redis+cluster://127.0.0.1:1,127.0.0.1:2")
    with pytest.raises(StoreUnavailable):
        await gone.mt_submitted(PHONE, "mt-1", "SUBMITTED", SUBMITTED, ["m-1"])
    with pytest.raises(StoreUnavailable):
        await gone.receipts_recorded([(PHONE, "mt-1", "DELIVERED", AuditEvent("mt_receipt", "sms"))])


class AnswerEater:
    """A TCP proxy in front of a Redis on a Unix socket that, once armed, lets the next request
    holding `marker` through and drops the connection instead of its answer: Redis has run it, the
    client never hears back (a Redis or a network that went away mid-batch)."""

    def __init__(self, socket_path: str) -> None:
        self._path = socket_path
        self.marker: bytes | None = None
        self.eaten = 0
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for pump in list(self._pumps):
            pump.cancel()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        redis_r, redis_w = await asyncio.open_unix_connection(self._path)
        eat = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    eat.set()
                redis_w.write(data)
                await redis_w.drain()

        async def downstream() -> None:
            while data := await redis_r.read(65536):
                if eat.is_set():  # the answer to the marked request: dropped, and the connection with it
                    self.eaten += 1
                    client_w.transport.abort()
                    redis_w.close()
                    return
                client_w.write(data)
                await client_w.drain()

        for pump in (asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())):
            self._pumps.add(pump)
            pump.add_done_callback(self._pumps.discard)


@pytest.fixture
async def eater(redis_url: str) -> AsyncIterator[AnswerEater]:
    proxy = AnswerEater(redis_url.removeprefix("unix://"))
    await proxy.start()
    yield proxy
    with contextlib.suppress(Exception):
        await proxy.close()


# On one server only: the steps folded into one script are its own (a cluster keeps them apart).
async def test_answers_lost_mid_batch_leave_nothing_stranded_or_doubled(
        store: Store, store_factory: StoreFactory, eater: AnswerEater) -> None:
    port = await eater.start()
    proxied = store_factory(f"redis://127.0.0.1:{port}")
    other = store_factory()  # another gateway process, on Redis directly
    await proxied.subscribers.profile(PHONE)  # the connections are up: what follows is mid-session
    # The commit ran, its answer is lost: the MO is retried (the SMSC redelivers it, unacknowledged).
    eater.marker = b"mo-1"
    with pytest.raises(StoreUnavailable):
        await proxied.commit(PHONE, answered("mo-1", reply(PHONE, "mt-1")))
    assert eater.eaten == 1
    assert await entries(store) == [f"{PHONE}|mt-1"]  # indexed with it: recovery will send the MT
    again = await proxied.commit(PHONE, answered("mo-1", reply(PHONE, "mt-1b")))
    assert again.outcome == "duplicate" and again.messages == ()  # leased still: nobody else sends it now
    assert await entries(store) == [f"{PHONE}|mt-1"]
    # The record after the submit ran, its answer is lost; meanwhile another gateway gets the
    # first part's receipt (and finds the MT); the sender retries the record.
    eater.marker = b"m-1"
    with pytest.raises(StoreUnavailable):
        await proxied.mt_submitted(PHONE, "mt-1", "SUBMITTED", SUBMITTED, ["m-1", "m-2"])
    assert eater.eaten == 2
    assert await other.receipt_arrived("m-1", "DELIVERED", "000") == {
        "msisdn": PHONE, "mt_id": "mt-1", "state": "DELIVERED", "err": "000"}
    known = await proxied.mt_submitted(PHONE, "mt-1", "SUBMITTED", SUBMITTED, ["m-1", "m-2"])
    assert known == [{"msisdn": PHONE, "mt_id": "mt-1", "state": "DELIVERED", "err": "000"},
                     {"msisdn": PHONE, "mt_id": "mt-1"}]
    assert await entries(store) == []
    assert await store.redis.hlen(f"sub:{{{PHONE}}}:outbox") == 0
    assert await store.mt_states(PHONE) == {"mt-1": "SUBMITTED"}
    # The receipts of a read: its answer lost, retried (the SMSC delivers the receipts again).
    eater.marker = b"mt_receipt"
    receipt = [(PHONE, "mt-1", "DELIVERED", AuditEvent("mt_receipt", "sms"))]
    with pytest.raises(StoreUnavailable):
        await proxied.receipts_recorded(receipt)
    await proxied.receipts_recorded(receipt)
    assert await store.mt_states(PHONE) == {"mt-1": "DELIVERED"}
