"""The Redis side of the SMPP hot path against a real redis-server: commands of many MOs leave in
few round trips, each caller still gets its own answer or its own error, and a Redis that forgot
its scripts (a restart) is handled."""

from __future__ import annotations

import asyncio

import pytest

from handlers.base import Channel
from tests.support.platform import StoreFactory
from ussdgw.smpp.pdu import Status
from ussdgw.store import AuditEvent, Change, MoMark, OutboundMessage, Store, StoreUnavailable

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster


def reply(msisdn: str, n: int) -> OutboundMessage:
    return OutboundMessage(mt_id=f"mt{n}", source="3339", destination=msisdn, text="Ответ")


def answered(mo_id: str, mt: OutboundMessage, *audit: AuditEvent) -> Change:
    """An MO's reply, once per MO, as a handler commits it."""
    return Change(mo=MoMark(mo_id, 3600), messages=(mt,), audit=audit, create_profile=True)


async def test_concurrent_commits_share_round_trips_and_each_gets_its_own_result(store: Store) -> None:
    before = store.pipeline.batches
    results = await asyncio.gather(*(
        store.commit(f"7916{i:07d}", answered(f"mo{i}", reply(f"7916{i:07d}", i), AuditEvent("mo_received", "sms")))
        for i in range(200)
    ))
    assert [r.outcome for r in results] == ["applied"] * 200
    assert [r.messages[0].mt_id for r in results] == [f"mt{i}" for i in range(200)]
    assert store.pipeline.batches - before < 20  # 400 commands (script + index) in a handful of trips
    again = await store.commit("79160000007", answered("mo7", reply("79160000007", 999)))
    assert again.outcome == "duplicate" and again.messages == ()  # the first is still being sent


async def test_arguments_are_sent_as_redis_py_would_send_them(store: Store) -> None:
    batch = store.pipeline
    await asyncio.gather(
        batch.command("HSET", "h", "str", "ы", "enum", Channel.SMS, "int", 42, "intenum", Status.RTHROTTLED,
                      "float", 1.25, "bytes", b"\x00\xff", "bytearray", bytearray(b"ab")),
    )
    assert await store.redis.hgetall("h") == {
        b"str": "ы".encode(), b"enum": b"sms", b"int": b"42", b"intenum": b"88", b"float": b"1.25",
        b"bytes": b"\x00\xff", b"bytearray": b"ab",
    }
    neighbour = batch.command("SET", "k", "v")
    for bad in (None, True, object()):
        with pytest.raises(TypeError):
            batch.command("SET", "k", bad)  # the caller's mistake, refused at once ...
    assert await neighbour == b"OK"  # ... and no other command in the batch pays for it


async def test_one_failing_command_fails_only_its_caller(store: Store) -> None:
    batch = store.pipeline
    await store.redis.set("a-string", "x")
    good, bad = batch.command("SET", "k", "v"), batch.command("HSET", "a-string", "f", "v")
    results = await asyncio.gather(good, bad, return_exceptions=True)
    assert results[0] == b"OK"
    assert "WRONGTYPE" in str(results[1])


async def test_scripts_flushed_from_redis_are_loaded_again(store: Store) -> None:
    await store.commit("79161234567", answered("first", reply("79161234567", 1)))
    await store.redis.script_flush()
    result = await store.commit("79161234567", answered("second", reply("79161234567", 2)))
    assert result.outcome == "applied"
    known = await store.mt_submitted("79161234567", "mt2", "SUBMITTED", AuditEvent("mt_submitted", "sms"), ["m-2"])
    assert known == [{"msisdn": "79161234567", "mt_id": "mt2"}]


async def test_a_submit_without_receipts_leaves_the_outbox_and_ties_no_message_id(store: Store) -> None:
    await store.commit("79161234567", answered("first", reply("79161234567", 1)))
    known = await store.mt_submitted("79161234567", "mt1", "SUBMITTED", AuditEvent("mt_submitted", "ussd"),
                                     ["m-1"], receipts=False)
    assert known == [{}]  # one answer per message id: nothing is known of it, nothing was tied
    assert await store.mt_states("79161234567") == {"mt1": "SUBMITTED"}
    assert await store.receipt_arrived("m-1", "DELIVERED", "000") == {"state": "DELIVERED", "err": "000"}


async def test_a_redis_that_is_gone_fails_the_batch_with_store_unavailable(store_factory: StoreFactory) -> None:
    gone = store_factory("redis://127.0.0.1:1")
    with pytest.raises(StoreUnavailable):
        await gone.commit("79161234567", answered("x", reply("79161234567", 1)))


async def test_a_cluster_no_seed_node_answers_for_is_store_unavailable(store_factory: StoreFactory) -> None:
    gone = store_factory("redis+cluster://127.0.0.1:1,127.0.0.1:2")
    with pytest.raises(StoreUnavailable):
        await gone.commit("79161234567", answered("x", reply("79161234567", 1)))
    with pytest.raises(StoreUnavailable):  # redis-py's own cluster client, on a read
        await gone.subscribers.profile("79161234567")
    assert not await gone.ping()
