"""The store's one script registry: every Lua file loads, each is run by its SHA, and a Redis that
forgot them (SCRIPT FLUSH, a restart) gets them again without the caller noticing. (That the
files ship in the wheel: test_wheel.py.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from redis.asyncio.cluster import RedisCluster

from ussdgw.store import AuditEvent, Change, MoMark, OutboundMessage, RateGuard, Store, rate_key
from ussdgw.store.scripts import PRELUDE, load_script, script_names

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster

ROOT = Path(__file__).resolve().parents[2]
A = "79161234567"


def test_the_scripts_are_the_lua_files_and_each_starts_with_the_one_prelude() -> None:
    files = sorted(p.stem for p in (ROOT / "ussdgw/store/lua").glob("*.lua"))
    assert script_names() == [name for name in files if name != PRELUDE]
    prelude = (ROOT / "ussdgw/store/lua/prelude.lua").read_text(encoding="utf-8")
    for name in script_names():
        assert load_script(name).source.startswith(prelude)


@pytest.mark.parametrize("name", script_names())
async def test_every_script_loads_into_redis_under_the_sha_the_registry_gives_it(store: Store, name: str) -> None:
    script = load_script(name)
    assert (await store.redis.script_load(script.source)) == script.sha  # compiles: no syntax error


def test_no_lua_lives_in_python_strings() -> None:
    for path in (ROOT / "ussdgw").rglob("*.py"):
        assert "redis.call(" not in path.read_text(encoding="utf-8"), path


async def test_a_flushed_script_is_loaded_again_and_the_call_answered(store: Store) -> None:
    guard = RateGuard("secret", cooldown_s=60, per_hour=5)
    assert await store.rate_peek(A, guard) is None
    await store.redis.script_flush()
    assert not await script_known(store, rate_key(A, guard.name), load_script("rate_peek").sha)
    await store.redis.zadd(rate_key(A, guard.name), {"x": store.clock.now()})
    assert (await store.rate_peek(A, guard) or ("", 0.0))[0] == "cooldown"  # NOSCRIPT, SCRIPT LOAD, again
    assert await script_known(store, rate_key(A, guard.name), load_script("rate_peek").sha)


async def test_many_calls_in_one_batch_after_a_flush_all_get_their_answers(store: Store) -> None:
    def reply(n: int) -> Change:
        mt = OutboundMessage(mt_id=f"mt{n}", source="3339", destination=A, text="Ответ")
        return Change(mo=MoMark(f"mo{n}", 60), messages=(mt,), audit=(AuditEvent("mo_received", "sms"),))

    await store.commit(A, reply(0))
    await store.redis.script_flush()
    results = await asyncio.gather(*(store.commit(A, reply(n)) for n in range(1, 50)))
    assert all(r.ok for r in results)
    assert [r.messages[0].mt_id for r in results] == [f"mt{n}" for n in range(1, 50)]
    assert len(await store.audit_trail(A)) == 50


async def script_known(store: Store, key: str, sha: str) -> bool:
    """Whether the Redis that serves `key` (on a cluster: that slot's primary) knows script `sha`."""
    if isinstance(store.redis, RedisCluster):
        node = store.redis.get_node_from_key(key)
        return bool((await store.redis.execute_command("SCRIPT EXISTS", sha, target_nodes=node))[0])
    return bool((await store.redis.script_exists(sha))[0])
