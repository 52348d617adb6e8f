"""The one commit engine (ussdgw/store/commit.py, lua/commit.lua) on a real Redis: all or nothing,
once per MO, one slot per step; Автоплатёж decided in Python and guarded in the script."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import StoreFactory
from ussdgw.store import (
    STALE,
    AuditEvent,
    Change,
    DialogueStep,
    MoMark,
    OutboundMessage,
    Outcome,
    Store,
    sub_key,
)
from ussdgw.store.commit import script_call
from ussdgw.store.keys import outbox_key
from ussdgw.store.money import Autopay, credit, debit, service_on
from ussdgw.store.profile import new_password

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
    assert await store.redis.hget(sub_key(A), "balance_kop") == b"30500"
