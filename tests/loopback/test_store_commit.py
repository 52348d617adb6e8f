"""The one commit engine (ussdgw/store/commit.py, lua/commit.lua) on a real Redis: all or nothing,
once per MO, one slot per step; Автоплатёж decided in Python and guarded in the script."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from redis.asyncio.cluster import RedisCluster

from handlers.access import cleared_to_send
from sms_codes import OPERATOR_TZ
from tests.support.platform import StoreFactory, one_per_primary
from ussdgw.app.stack import Stack
from ussdgw.store import (
    STALE,
    AuditEvent,
    Change,
    DialogueStep,
    MoMark,
    OutboundMessage,
    Outcome,
    Store,
)
from ussdgw.store.commit import script_call
from ussdgw.store.indexes import ALL_BUCKETS
from ussdgw.store.keys import outbox_key
from ussdgw.store.money import Autopay, credit, debit, service_on
from ussdgw.store.profile import new_password

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster

A, B = "79161234567", "79261112233"


def mt(n: int) -> OutboundMessage:
    return OutboundMessage(mt_id=f"mt{n}", source="3339", destination=A, text="Ответ")


async def test_a_refused_check_writes_nothing_but_its_audited_refusal(store: Store) -> None:
    await store.subscribers.put(A, {"balance_kop": 100}, AuditEvent("seeded", "admin"))
    step = credit(A, 500) + Change(must_exist=True, messages=(mt(1),), audit=(AuditEvent("paid", "api"),),
                                   refusal=AuditEvent("pay", "api", detail="x"))
    refused = await store.commit(A, debit(await store.subscribers.profile(A), 1000) + step)
    assert (refused.outcome, refused.code) == (Outcome.REFUSED, "insufficient_funds")
    assert (await store.subscribers.profile(A)).balance_kop == 100
    assert [(e["event"], e["outcome"]) for e in await store.audit_trail(A)][-1] == ("pay", "insufficient_funds")
    assert await store.redis.hlen(outbox_key(A)) == 0


async def test_an_mo_is_applied_once_and_its_redelivery_gets_the_same_mts(store_factory: StoreFactory) -> None:
    store = store_factory(lease_s=0.2, reclaim_grace_s=0.1)
    step = new_password(A, "h1", 1.0) + Change(mo=MoMark("mo-1", 60), messages=(mt(1),), create_profile=True)
    first = await store.commit(A, step)
    again = await store.commit(A, new_password(A, "h2", 2.0) + Change(mo=MoMark("mo-1", 60), messages=(mt(2),)))
    assert first.outcome is Outcome.APPLIED and again.outcome is Outcome.DUPLICATE
    assert again.messages == ()  # its first sender holds it
    await asyncio.sleep(0.35)  # ... until its lease and the grace have run out
    late = await store.commit(A, new_password(A, "h3", 3.0) + Change(mo=MoMark("mo-1", 60), messages=(mt(3),)))
    assert late.outcome is Outcome.DUPLICATE and [m.mt_id for m in late.messages] == ["mt1"]
    assert (await store.subscribers.profile(A)).pw_hash == "h1"


async def test_a_step_computed_from_an_old_dialogue_is_a_conflict(store: Store) -> None:
    await store.commit(A, Change(dialogue=DialogueStep('{"s": 1}', "d:1", 60.0)))
    moved = await store.commit(A, Change(dialogue=DialogueStep('{"s": 2}', "d:2", 60.0, expect="d:0"),
                                         messages=(mt(1),)))
    assert moved.outcome is Outcome.CONFLICT
    _, raw = await store.dialogues.load(A, None)
    assert raw == b'{"s": 1}' and await store.redis.hlen(outbox_key(A)) == 0


async def test_a_ussd_steps_first_read_is_the_mark_the_dialogue_and_the_profile_in_one_call(store: Store) -> None:
    nothing = await store.dialogues.step_read(A, "mo-1")  # a number never seen: nothing, and no error
    assert (nothing.applied, nothing.dialogue, nothing.profile, nothing.blocked_from) == (False, None, [], None)
    await store.subscribers.put(A, {"balance_kop": 700, "blocked_from": "2030-01-02"}, AuditEvent("seeded", "admin"))
    await store.commit(A, Change(mo=MoMark("mo-1", 60), dialogue=DialogueStep('{"s": 1}', "d:1", 60.0)))
    read = await store.dialogues.step_read(A, "mo-1")
    assert read.applied and read.dialogue == b'{"s": 1}'
    assert str(read.blocked_from) == "2030-01-02" and b"700" in read.profile
    assert not (await store.dialogues.step_read(A, "mo-2")).applied  # another MO's mark is not this one's
    assert not (await store.dialogues.step_read(A, None)).applied  # an MO without an id is never "applied"
    assert (await store.dialogues.step_read(B, "mo-1")).dialogue is None  # nor is A's dialogue B's


def test_a_step_never_spans_two_slots() -> None:
    with pytest.raises(ValueError, match="slot"):
        script_call(A, credit(B, 1), now=0.0, lease_until=0.0, tag="", sealed=[])


def test_two_mo_marks_cannot_be_one_step() -> None:
    with pytest.raises(ValueError, match="MO mark"):
        Change(mo=MoMark("a", 1)) + Change(mo=MoMark("b", 1))


async def test_autopay_decided_on_an_old_balance_is_stale_and_update_decides_again(store: Store) -> None:
    await store.subscribers.put(A, {"balance_kop": 5000}, AuditEvent("seeded", "admin"))
    await store.commit(A, service_on(A, "autopay", 0.0, Autopay(amount_kop=30000, threshold_kop=1000)))
    before = await store.subscribers.profile(A)  # 50 ₽: a 45 ₽ debit leaves 5 ₽, at the threshold
    await store.commit(A, credit(A, 10000))  # meanwhile 100 ₽ more: no top-up is due any more
    stale = await store.commit(A, debit(before, 4500))
    assert (stale.outcome, stale.code) == (Outcome.REFUSED, STALE)
    done = await store.update(A, lambda fresh: debit(fresh, 4500))
    assert done.ok and done.autopaid_kop == 0 and done.profile is not None and done.profile.balance_kop == 10500


async def test_autopay_tops_up_within_the_debit_when_the_threshold_is_reached(store: Store) -> None:
    await store.subscribers.put(A, {"balance_kop": 5000}, AuditEvent("seeded", "admin"))
    await store.commit(A, service_on(A, "autopay", 0.0, Autopay(amount_kop=30000, threshold_kop=1000)))
    done = await store.update(A, lambda fresh: debit(fresh, 4500, pay=False))
    assert done.autopaid_kop == 30000 and done.profile is not None and done.profile.balance_kop == 500 + 30000
    assert [e["event"] for e in await store.audit_trail(A)][-1] == "autopay_topup"
    assert (await store.subscribers.fields(A))["balance_kop"] == "30500"


async def test_subscribers_on_every_primary_commit_in_one_batch_each_and_get_their_own_results(
        store: Store, redis_url: str) -> None:
    spread = one_per_primary(redis_url)
    steps = [new_password(m, f"h-{m}", 1.0) + Change(mo=MoMark("mo-1", 60), create_profile=True,
                                                     messages=(OutboundMessage(f"mt-{m}", "3339", m, "Ответ"),))
             for m in spread]
    results = await asyncio.gather(*(store.commit(m, s) for m, s in zip(spread, steps, strict=True)))
    assert [r.outcome for r in results] == [Outcome.APPLIED] * len(spread)
    assert [r.messages[0].mt_id for r in results] == [f"mt-{m}" for m in spread]
    assert [p.pw_hash for p in await store.subscribers.profiles(*spread)] == [f"h-{m}" for m in spread]
    if store.cluster:  # each one's keys on its own primary, sent there by the pipeline's slot routing
        assert len({n for n in store.pipeline.nodes}) == 3
        primaries = await primaries_holding_keys(store)
        assert len(primaries) == 3, primaries


async def primaries_holding_keys(store: Store) -> list[str]:
    assert isinstance(store.redis, RedisCluster)
    sizes = {node.name: await store.redis.execute_command("DBSIZE", target_nodes=node)
             for node in store.redis.get_primaries()}
    return sorted(name for name, size in sizes.items() if size)


async def test_a_commit_that_queues_an_sms_reads_the_block_day_and_a_ussd_screen_does_not(store: Store) -> None:
    await store.subscribers.put(A, {"balance_kop": 100}, AuditEvent("seeded", "admin"))
    plain = await store.commit(A, Change(messages=(mt(1),), read_profile=True))
    assert plain.blocked_from == "" and plain.profile is not None and plain.profile.balance_kop == 100
    assert cleared_to_send(plain, store.clock.now())
    due = await store.indexes.mts_due(ALL_BUCKETS, store.clock.now() + 3600)
    assert (A, "mt1") in due  # its recovery entry went in with the commit

    today = datetime.fromtimestamp(store.clock.now(), OPERATOR_TZ).date()
    await store.subscribers.put(A, {"blocked_from": (today + timedelta(days=1)).isoformat()},
                                AuditEvent("seeded", "admin"))
    tomorrow = await store.commit(A, Change(messages=(mt(2),)))
    assert tomorrow.blocked_from == (today + timedelta(days=1)).isoformat() and tomorrow.profile is None
    assert cleared_to_send(tomorrow, store.clock.now())  # not blocked yet: its first send is not read again
    assert not cleared_to_send(tomorrow, store.clock.now() + 2 * 86400)

    screen = OutboundMessage(mt_id="mt3", source="*100#", destination=A, text="Баланс", ussd_service_op=17)
    refusal = OutboundMessage(mt_id="mt4", source="3339", destination=A, text="Заблокирован", reaches_blocked=True)
    for queued in (screen, refusal):
        result = await store.commit(A, Change(messages=(queued,)))
        assert result.outcome is Outcome.APPLIED and result.blocked_from is None  # never gated: not read
        assert not cleared_to_send(result, store.clock.now())


async def test_an_sms_queued_for_a_number_blocked_by_then_is_withheld_at_its_first_send(stack: Stack) -> None:
    """The race the MO gate cannot see: the block lands between the gate's read and the commit."""
    assert stack.store is not None and stack.gateway is not None
    store = stack.store
    today = datetime.fromtimestamp(stack.clock.now(), OPERATOR_TZ).date()
    await store.subscribers.put(A, {"blocked_from": today.isoformat()}, AuditEvent("seeded", "admin"))
    result = await store.commit(A, Change(messages=(mt(1),)))
    assert result.blocked_from == today.isoformat()
    assert not cleared_to_send(result, stack.clock.now())
    sent = await stack.gateway.send(result.messages[0], cleared=cleared_to_send(result, stack.clock.now()))
    assert sent is False
    assert [e["event"] for e in await store.audit_trail(A)][-1] == "mt_withheld"
