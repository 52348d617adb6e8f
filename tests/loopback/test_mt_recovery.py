"""MT recovery by due time, against a real redis-server: an MT whose sender died goes out once its
lease has run out, found through a sharded index whose size is what is in flight (never the number
of subscribers); a live sender's MT is never taken from it; a redelivered MO resends only what
nobody is sending; `reindex` rebuilds the indexes from the data."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import pytest

from gateway.service import Gateway
from handlers.registry import build_router
from tests.support.platform import StoreFactory, send_and_wait
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import (
    AuditEvent,
    Change,
    MoMark,
    OutboundMessage,
    Store,
    StoreUnavailable,
    Write,
    WriteOp,
    sub_key,
)
from ussdgw.store.core import lease_now
from ussdgw.store.indexes import share
from ussdgw.store.keys import INDEX_BUCKETS, LEGACY_INDEXES, bucket_of, holds_due_key, mt_due_key, n2_due_key
from ussdgw.store.money import Asset, hold_placed
from ussdgw.store.profile import n2_applied

pytestmark = pytest.mark.redis_both  # the buckets spread over a cluster's primaries

ALL = tuple(range(INDEX_BUCKETS))
LEASE_S, GRACE_S = 0.5, 0.2


def mt(msisdn: str, n: int) -> OutboundMessage:
    return OutboundMessage(mt_id=f"{msisdn}-mt{n}", source="3339", destination=msisdn, text="Ответ")


def answered(mo_id: str, message: OutboundMessage) -> Change:
    return Change(mo=MoMark(mo_id, 3600), messages=(message,), create_profile=True)


async def entries(store: Store) -> list[str]:
    return [m.decode() for b in ALL for m in await store.redis.zrange(mt_due_key(b), 0, -1)]


async def sent(store: Store, message: OutboundMessage) -> None:
    await store.mt_submitted(message.destination, message.mt_id, "SUBMITTED", AuditEvent("mt_submitted", "sms"),
                             [f"id-{message.mt_id}"])


async def reclaim_until_taken(store: Store, timeout_s: float = 5.0) -> tuple[list[OutboundMessage], float]:
    """Look every 0.1 s (as a gateway's loop does) until something is taken: (it, when)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        taken = await store.reclaim(ALL)
        if taken:
            return taken, lease_now()
        await asyncio.sleep(0.1)
    return [], lease_now()


async def test_a_queued_mt_is_indexed_before_its_commit_and_a_sent_one_leaves_nothing(
        store_factory: StoreFactory) -> None:
    store = store_factory(lease_s=LEASE_S, reclaim_grace_s=GRACE_S)
    first = (await store.commit("79161110001", answered("mo-1", mt("79161110001", 1)))).messages[0]
    assert first.leased_until > lease_now()
    assert await entries(store) == ["79161110001|79161110001-mt1"]
    key = mt_due_key(bucket_of("79161110001"))
    assert await store.redis.zscore(key, "79161110001|79161110001-mt1") == first.leased_until  # due at its lease's end
    await sent(store, first)
    assert await entries(store) == []
    assert await store.reclaim(ALL) == []


async def test_a_stranded_mt_goes_out_within_its_lease_and_a_grace_and_to_one_gateway_only(
        store_factory: StoreFactory) -> None:
    first, second = (store_factory(lease_s=LEASE_S, reclaim_grace_s=GRACE_S) for _ in range(2))
    committed = await first.commit("79161110002", answered("mo-2", mt("79161110002", 1)))  # its sender dies here
    stranded = committed.messages[0]
    assert await second.reclaim(ALL) == []  # its lease still runs
    taken: list[OutboundMessage] = []
    while not taken and lease_now() < stranded.leased_until + 3:  # both look, as two gateways' loops do
        await asyncio.sleep(0.1)
        taken = [m for found in await asyncio.gather(first.reclaim(ALL), second.reclaim(ALL)) for m in found]
    at = lease_now()
    assert [m.mt_id for m in taken] == [stranded.mt_id]  # one gateway, never both
    assert stranded.leased_until < at < stranded.leased_until + GRACE_S + 1.0
    assert taken[0].leased_until > at  # leased anew to its finder
    assert await first.reclaim(ALL) == [] and await second.reclaim(ALL) == []


async def test_finding_a_stranded_mt_costs_the_same_among_thousands_of_subscribers(
        store_factory: StoreFactory) -> None:
    store = store_factory(lease_s=LEASE_S, reclaim_grace_s=GRACE_S)
    replies = await asyncio.gather(*(store.commit(f"7916{i:07d}", answered(f"mo{i}", mt(f"7916{i:07d}", i)))
                                     for i in range(3000)))
    await asyncio.gather(*(sent(store, r.messages[0]) for r in replies[1:]))  # all but one were sent
    assert await entries(store) == ["79160000000|79160000000-mt0"]
    await asyncio.sleep(LEASE_S)
    before = store.pipeline.batches
    taken, _ = await reclaim_until_taken(store)
    assert [m.mt_id for m in taken] == ["79160000000-mt0"]
    assert store.pipeline.batches - before <= 40  # a few looks, a batch (per primary) each: not per subscriber


async def test_a_sender_that_renews_its_lease_keeps_the_mt_and_loses_it_once_taken(
        store_factory: StoreFactory) -> None:
    store, other = (store_factory(lease_s=LEASE_S, reclaim_grace_s=GRACE_S) for _ in range(2))
    held = (await store.commit("79161110003", answered("mo-3", mt("79161110003", 1)))).messages[0]
    for _ in range(4):  # a send waiting for a bind, twice as long as the lease
        await asyncio.sleep(LEASE_S / 4)
        renewed = await store.renew_lease(held)
        assert renewed is not None and renewed.leased_until > held.leased_until
        held = renewed
        assert await other.reclaim(ALL) == []
    await asyncio.sleep(LEASE_S)  # the sender stops renewing: the other takes it ...
    taken, _ = await reclaim_until_taken(other)
    assert [m.mt_id for m in taken] == [held.mt_id]
    assert await store.renew_lease(held) is None  # ... and the first may no longer send it


async def test_a_redelivered_mo_resends_only_what_nobody_is_sending(store_factory: StoreFactory) -> None:
    store = store_factory(lease_s=LEASE_S, reclaim_grace_s=GRACE_S)
    first = await store.commit("79161110004", answered("mo-4", mt("79161110004", 1)))
    again = await store.commit("79161110004", answered("mo-4", mt("79161110004", 99)))
    assert again.outcome == "duplicate" and again.messages == ()  # its sender's lease still runs
    assert await entries(store) == [f"79161110004|{first.messages[0].mt_id}"]  # none for the MT not queued
    await asyncio.sleep(LEASE_S + GRACE_S + 0.05)
    late = await store.commit("79161110004", answered("mo-4", mt("79161110004", 99)))
    assert [m.mt_id for m in late.messages] == [first.messages[0].mt_id]  # abandoned: this one sends it
    assert late.messages[0].leased_until > lease_now()
    assert (await store.commit("79161110004", answered("mo-4", mt("79161110004", 99)))).messages == ()
    await sent(store, late.messages[0])
    await asyncio.sleep(LEASE_S + GRACE_S + 0.05)
    assert (await store.commit("79161110004", answered("mo-4", mt("79161110004", 99)))).messages == ()


def test_live_gateways_share_the_buckets_without_gap_or_overlap() -> None:
    members = ["gw-b", "gw-a", "gw-c"]
    shares = [share(members, me) for me in members]
    assert sorted(b for s in shares for b in s) == list(range(INDEX_BUCKETS))
    assert share([], "gw-a") == tuple(range(INDEX_BUCKETS))  # alone: everything


async def test_a_gateway_that_goes_quiet_hands_its_buckets_over(store: Store) -> None:
    now = lease_now()
    assert await store.indexes.heartbeat("gw-a", now, 1.0) == ALL  # alone
    theirs = await store.indexes.heartbeat("gw-b", now, 1.0)
    mine = await store.indexes.heartbeat("gw-a", now, 1.0)
    assert set(mine).isdisjoint(theirs) and len(mine) + len(theirs) == INDEX_BUCKETS
    assert await store.indexes.heartbeat("gw-a", now + 5.0, 1.0) == ALL  # gw-b silent for 3 heartbeats
    await store.indexes.heartbeat("gw-b", now + 5.0, 1.0)
    await store.indexes.gone("gw-b")
    assert await store.indexes.heartbeat("gw-a", now + 5.5, 1.0) == ALL  # stopped: at once


async def test_reindex_rebuilds_every_index_from_the_data(store: Store) -> None:
    queued = (await store.commit("79161110005", answered("mo-5", mt("79161110005", 1)))).messages[0]
    await store.commit("79161110006", Change(create_profile=True, writes=(
        Write(WriteOp.HSET, sub_key("79161110006"), Asset.POINTS, 50),)))
    payer = await store.subscribers.profile("79161110006")
    held = await store.commit("79161110006", hold_placed(payer, "op1", asset=Asset.POINTS, amount=10, purpose="gift",
                                                         to="79161110007", at=100.0, pay=False))
    assert held.outcome == "applied"
    await store.commit("79161110008", n2_applied("79161110008", ["79161110008"], "app1", 100.0, 200.0)
                       + Change(create_profile=True))
    await store.redis.zadd(LEGACY_INDEXES[0], {"79161110005": 1.0})
    await store.redis.delete(*(k(b) for b in ALL for k in (mt_due_key, holds_due_key, n2_due_key)))
    counts = await store.indexes.rebuild(now=150.0, wall_now=lease_now())
    assert counts == {"mts": 1, "holds": 1, "n2": 1}
    assert await entries(store) == [f"79161110005|{queued.mt_id}"]
    assert await store.money.holds_due(before=101.0) == [("79161110006", "op1", 100.0)]
    assert await store.numbers.n2_due(now=200.0) == ["79161110008"]
    assert await store.numbers.n2_due(now=199.0) == []
    assert not await store.redis.exists(*LEGACY_INDEXES)


# ---- through a gateway ------------------------------------------------------------------------
async def test_an_mt_waiting_for_a_bind_keeps_its_lease_and_is_left_to_others_on_stop(
        settings: Settings, store_factory: StoreFactory) -> None:
    with socket.socket() as closed:  # an SMSC that is not there: the send waits for a bind
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    store, other = store_factory(), store_factory(reclaim_grace_s=GRACE_S)
    gateway = Gateway(settings.with_overrides(smsc_port=port), store, build_router())
    await gateway.start()
    queued = (await store.commit("79161110009", answered("mo-9", mt("79161110009", 1)))).messages[0]
    sending = asyncio.ensure_future(gateway.send(queued))
    try:
        deadline = lease_now() + 3 * settings.mt_lease_s
        while lease_now() < deadline:  # another gateway's recovery, looking all the while
            assert await other.reclaim(ALL) == []
            await asyncio.sleep(0.1)
        assert not sending.done()
    finally:
        await gateway.stop()
    stopped = lease_now()
    assert await sending is False  # left queued, not sent
    taken, at = await reclaim_until_taken(other)
    assert [m.mt_id for m in taken] == [queued.mt_id]
    assert at < stopped + settings.mt_lease_s + GRACE_S + 1.0  # within its last lease and the grace


async def test_an_mt_sent_while_redis_is_away_is_recorded_when_it_is_back_and_never_sent_again(
        stack: Stack, store_factory: StoreFactory) -> None:
    assert stack.gateway is not None and stack.store is not None and stack.smsc is not None
    real = stack.store.mt_submitted
    refusals = 6  # ~2.5 s of retries: longer than the lease and its grace

    async def redis_away_then_back(*args: Any, **kwargs: Any) -> list[dict[str, str]]:
        nonlocal refusals
        if refusals:
            refusals -= 1
            raise StoreUnavailable("connection refused")
        return await real(*args, **kwargs)

    stack.store.mt_submitted = redis_away_then_back  # type: ignore[method-assign]
    other = store_factory(reclaim_grace_s=GRACE_S)
    looking = asyncio.ensure_future(_recover_for(other, 4.0))
    [reply] = await send_and_wait(stack, "79161110010", "5555", "HELP")
    found = await looking
    assert found == []  # the other gateway's recovery never took it
    assert refusals == 0 and await entries(stack.store) == []  # recorded: out of the outbox and the index
    phones = stack.smsc.phones
    assert [m.text for m in phones.get("79161110010").inbox] == [reply.text]


async def _recover_for(store: Store, seconds: float) -> list[OutboundMessage]:
    found: list[OutboundMessage] = []
    deadline = lease_now() + seconds
    while lease_now() < deadline:
        found += await store.reclaim(ALL)
        await asyncio.sleep(0.1)
    return found
