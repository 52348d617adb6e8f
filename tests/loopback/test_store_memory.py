"""What a subscriber costs in Redis: an idle, seeded one stays within 1 KB (a compact profile hash
Redis keeps as a listpack, and a P10 audit trail that is a list of packed entries, not a stream),
and what is made compact reads back exactly as written."""

from __future__ import annotations

import pytest

from sms_codes import hash_password, verify_password
from ussdgw.store import AUDIT_MAXLEN, AuditEvent, Store, audit_key, sub_key
from ussdgw.store.profile import STORED

A = "79161234567"
SEEDED = {
    "owner_id": "p-1001", "owner_name": "Иван Петров", "passport": "4510 123456", "contract": "D-2021-0001",
    "region": "77", "corporate": 0, "balance_kop": 25000, "tariff": "smart", "email": "ivan@example.com",
}


async def _bytes_of(store: Store, msisdn: str) -> int:
    keys = [k async for k in store.redis.scan_iter(match=f"sub:{{{msisdn}}}*")]
    return sum([int(await store.redis.memory_usage(k, samples=0) or 0) for k in keys])


async def test_a_seeded_idle_subscriber_costs_at_most_one_kilobyte(store: Store) -> None:
    await store.subscribers.put(A, {**SEEDED, "code_word_hash": hash_password("сирень")}, AuditEvent("seeded", "admin"))
    used = await _bytes_of(store, A)
    assert used <= 1024, used
    assert (await store.redis.object("encoding", sub_key(A))) in (b"ziplist", b"listpack")
    assert (await store.redis.type(audit_key(A))) == b"list"


async def test_the_profile_reads_back_under_its_names_with_the_password_hash_whole(store: Store) -> None:
    stored_hash = hash_password("сирень")
    await store.subscribers.put(A, {**SEEDED, "pw_hash": stored_hash}, AuditEvent("seeded", "admin"))
    raw = await store.redis.hgetall(sub_key(A))
    assert raw[STORED["pw_hash"].encode()] != stored_hash.encode() and len(raw[STORED["pw_hash"].encode()]) <= 64
    assert b"owner_name" not in raw and STORED["corporate"].encode() not in raw  # short names, no default flag
    profile = await store.subscribers.profile(A)
    assert profile.pw_hash == stored_hash and verify_password("сирень", profile.pw_hash)
    assert (profile.owner_name, profile.balance_kop, profile.corporate) == ("Иван Петров", 25000, False)
    fields = await store.subscribers.fields(A)
    assert fields["pw_hash"] == stored_hash and fields["owner_id"] == "p-1001"


SCRYPT = "scrypt$16384$8$1$"


@pytest.mark.parametrize("odd", ["scrypt$1024$8$1$c2FsdA==$a2V5", "plain-old-value", "=" * 61, "=x", "==", "",
                                 "A" * 64, "-" * 64, "A" * 63, SCRYPT + "A" * 22 + "==$" + "A" * 43 + "B",
                                 SCRYPT + "A" * 21 + "B==$" + "A" * 43 + "=",
                                 SCRYPT + "A" * 22 + "==$" + "A" * 43 + "="])
async def test_a_hash_of_another_form_is_kept_as_it_is(store: Store, odd: str) -> None:
    await store.subscribers.put(A, {"pw_hash": odd, "owner_id": "x"}, AuditEvent("seeded", "admin"))
    assert (await store.subscribers.profile(A)).pw_hash == odd


async def test_audit_entries_are_numbered_kept_in_order_and_capped(store: Store) -> None:
    for i in range(AUDIT_MAXLEN + 5):
        await store.audit(A, AuditEvent("probe", "test", detail=f"n={i}"))
    trail = await store.audit_trail(A, count=AUDIT_MAXLEN + 10)
    assert len(trail) == AUDIT_MAXLEN == await store.redis.llen(audit_key(A))
    assert [int(e["id"]) for e in trail] == list(range(6, AUDIT_MAXLEN + 6))
    assert trail[-1]["detail"] == f"n={AUDIT_MAXLEN + 4}" and trail[0]["detail"] == "n=5"
    newest = await store.audit_trail(A, count=2)
    assert [e["detail"] for e in newest] == [f"n={AUDIT_MAXLEN + 3}", f"n={AUDIT_MAXLEN + 4}"]


async def test_a_detail_holding_the_separator_stays_one_field(store: Store) -> None:
    hostile = "a\x1fevent\x1fforged\x1e\x00"
    await store.audit(A, AuditEvent("probe", "test\x1fapi", outcome="ok\x1f", detail=hostile))
    [entry] = await store.audit_trail(A)
    assert entry["event"] == "probe" and "\x1f" not in "".join(entry.values())
    assert entry["channel"] == "test\\u001fapi" and entry["detail"].startswith("a\\u001fevent")
    assert set(entry) == {"id", "ts", "event", "channel", "outcome", "detail"}


async def test_fields_after_the_five_are_kept_as_pairs(store: Store) -> None:
    fields = [*AuditEvent("signin", "api").fields(store.clock.now()), "actor", "79161234568", "via", "api"]
    await store.scripts.run("audit", [audit_key(A)], [AUDIT_MAXLEN, *fields])
    [entry] = await store.audit_trail(A)
    assert (entry["event"], entry["actor"], entry["via"], entry["id"]) == ("signin", "79161234568", "api", "1")
