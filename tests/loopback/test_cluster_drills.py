"""Drills on a private 3+3 Redis Cluster under load, through the real stack (SMSC simulator -> SMPP ->
gateway -> store -> cluster):

- failover: a primary is killed (SIGKILL) while phones on every shard send MOs; its replica takes
  over. No MO is lost or applied twice (each counted in the subscriber's audit trail), and
  the subscribers whose keys live on the healthy primaries are never deferred (each MO acknowledged
  at its first delivery). Each MO is HELP to 3339: one audited change and one reply. The gateway
  waits for one replica (`redis_wait_replicas`) before it acknowledges, so nothing it acknowledged
  dies with the primary; the killed node is started again (as an operator would) and rejoins as
  the new primary's replica.
- resharding: slots are migrated from one primary to another with CLUSTER SETSLOT and MIGRATE,
  a key at a time, while their subscribers send MOs: the store meets ASK, TRYAGAIN and MOVED
  (counted by its pipeline) and every MO is still applied exactly once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis

from simulator.smsc import PendingMo
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.redis_server import EmbeddedCluster
from ussdgw.store import sub_key
from ussdgw.store.keys import bucket_of, mt_due_key

APPLIED_EVENT = "unknown_request"  # HELP to 3339: one reply, one audited change per MO (no scrypt to wait for)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[EmbeddedCluster]:
    """A cluster of the drill's own (it gets broken), failure detected after 1 s of silence."""
    own = EmbeddedCluster(tmp_path / "cluster", persistent=False, node_timeout_ms=1000)
    own.start()
    yield own
    own.stop()


@pytest.fixture
async def drill_stack(cluster: EmbeddedCluster, tmp_path: Path) -> AsyncIterator[Stack]:
    settings = Settings(
        redis_url=cluster.url, state_dir=str(tmp_path / "state"), secret_key=secrets.token_hex(32),
        sim_port=0, sim_http_port=0, api_port=0, mt_lease_s=2.0, secret_cooldown_s=0, secret_per_hour=1000,
        d2_from_others_per_hour=1000, d2_caused_per_hour=1000, sim_retry_max_s=0.5, reconnect_max_s=0.5,
        redis_wait_replicas=1, redis_wait_timeout_ms=500,
    )
    stack = await Stack(settings).start()
    assert stack.gateway is not None
    await stack.gateway.wait_bound(10)
    yield stack
    await stack.stop()


def node_of(client: redis.RedisCluster, key: str) -> str:
    return str(client.get_node_from_key(key).name)


def mo_path_keys(msisdn: str) -> list[str]:
    """The keys an MO's step writes for `msisdn`: its slot, and its bucket of the MT recovery index."""
    return [sub_key(msisdn), mt_due_key(bucket_of(msisdn))]


def phones(count: int) -> list[str]:
    return [f"7916{n:07d}" for n in range(100, 100 + count)]


class Load:
    """Phones each sending `rounds` HELP MOs, each once the previous one was acknowledged;
    `acked(n)` is set once `n` of them have been."""

    def __init__(self, stack: Stack, crowd: list[str], rounds: int) -> None:
        self.stack, self.rounds = stack, rounds
        self.sent: dict[str, list[PendingMo]] = {m: [] for m in crowd}
        self.done = 0
        self._marks: dict[int, asyncio.Event] = {}
        self.task = asyncio.gather(*(self._phone(m) for m in crowd))

    def acked(self, count: int) -> asyncio.Event:
        return self._marks.setdefault(count, asyncio.Event())

    async def _phone(self, msisdn: str) -> None:
        assert self.stack.smsc is not None
        for _ in range(self.rounds):
            [mo] = self.stack.smsc.submit_mo(msisdn, "3339", "HELP")
            self.sent[msisdn].append(mo)
            await mo.delivered.wait()
            self.done += 1
            for count, event in self._marks.items():
                if self.done >= count:
                    event.set()


async def issued(stack: Stack, msisdn: str) -> int:
    assert stack.store is not None
    return [e["event"] for e in await stack.store.audit_trail(msisdn, count=500)].count(APPLIED_EVENT)


def call(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


# ---- failover -----------------------------------------------------------------------------------
async def test_failover_a_primary_killed_under_load_loses_no_mo_and_defers_only_its_own(
        cluster: EmbeddedCluster, drill_stack: Stack) -> None:
    stack = drill_stack
    view = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        global_nodes = {node_of(view, key) for m in phones(1) for key in mo_path_keys(m)[1:]}
        victim = next(n for n in cluster.nodes[:cluster.primaries] if f"127.0.0.1:{n.port}" not in global_nodes)
        victim_name = f"127.0.0.1:{victim.port}"
        crowd = phones(60)  # an MO touches two slots (its own, its index bucket): enough stay healthy
        on_victim = {m for m in crowd if any(node_of(view, k) == victim_name for k in mo_path_keys(m))}
    finally:
        view.close()
    healthy = [m for m in crowd if m not in on_victim]
    assert on_victim and len(healthy) >= 20, (len(on_victim), len(healthy))

    rounds = 6
    load = Load(stack, crowd, rounds)
    sent = load.sent
    await asyncio.wait_for(load.acked(len(crowd)).wait(), 20)  # under way: the first round acknowledged
    assert victim.process is not None
    victim.process.kill()  # SIGKILL: no goodbye to the cluster
    killed_at = time.monotonic()
    # Before the failover: not ready (the dead primary named), and a self-care request for one of
    # its subscribers is a 503 "unavailable", never a 500.
    api = stack.endpoints["selfcare"]
    async with aiohttp.ClientSession() as http:
        async with http.get(api.removesuffix("/api/v1") + "/ready") as ready:
            report = await ready.json()
        async with http.post(f"{api}/password-requests", json={"msisdn": sorted(on_victim)[0]}) as refused:
            refused_status, refused_body = refused.status, await refused.json()
    looked_after = time.monotonic() - killed_at
    if await asyncio.to_thread(still_serving_its_slots, cluster, victim.port):  # asked before the failover
        assert ready.status == 503 and victim_name in report["checks"]["redis"], report
        assert report["checks"]["redis_primaries"] == "2 of 3 answer", report
        assert refused_status == 503 and refused_body["error"] == "unavailable", refused_body
    await asyncio.to_thread(wait_for_promotion, cluster, victim.port, 20)
    promoted_after = time.monotonic() - killed_at
    victim.process.wait()
    victim.process = None
    victim.start()  # back as the new primary's replica: its shard can be written with WAIT 1 again
    await asyncio.wait_for(load.task, 45)

    assert stack.store is not None
    counts = {m: await issued(stack, m) for m in crowd}
    assert counts == dict.fromkeys(crowd, rounds), "an MO lost or applied twice"
    deferred_healthy = {m: [mo.attempts for mo in sent[m]] for m in healthy if any(mo.attempts > 1 for mo in sent[m])}
    assert not deferred_healthy, f"subscribers on healthy primaries deferred: {deferred_healthy}"
    assert any(mo.attempts > 1 for m in on_victim for mo in sent[m]), "the kill did not meet the load"
    print(f"failover drill: {len(crowd)} phones x {rounds} MOs, {len(on_victim)} on the killed primary, "
          f"replica promoted after {promoted_after:.1f} s (outage seen {looked_after:.2f} s after the kill), "
          f"{sum(mo.attempts - 1 for m in on_victim for mo in sent[m])} redeliveries on its shard, 0 elsewhere")


def still_serving_its_slots(cluster: EmbeddedCluster, port: int) -> bool:
    """Whether a survivor still has the node at `port` as its slots' primary (no failover yet)."""
    client = cluster.client(next(i for i, n in enumerate(cluster.nodes) if n.port != port))
    try:
        nodes = call(client, "CLUSTER NODES")
        return bool(next(v for k, v in nodes.items() if k.startswith(f"127.0.0.1:{port}"))["slots"])
    finally:
        client.close()


def wait_for_promotion(cluster: EmbeddedCluster, dead_port: int, timeout: float) -> None:
    """Until a survivor reports the cluster whole again with the dead node's slots on another primary."""
    survivor = next(i for i, n in enumerate(cluster.nodes) if n.port != dead_port)
    client = cluster.client(survivor)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            nodes = call(client, "CLUSTER NODES")
            dead = next(v for k, v in nodes.items() if k.startswith(f"127.0.0.1:{dead_port}"))
            whole = call(client, "CLUSTER INFO").get("cluster_state") == "ok"
            if "fail" in dead["flags"] and whole and not dead["slots"]:
                return
            time.sleep(0.05)  # another process's state: nothing to await
    finally:
        client.close()
    raise AssertionError(f"no replica promoted within {timeout} s")


# ---- resharding ---------------------------------------------------------------------------------
async def test_resharding_slots_migrated_under_load_meet_ask_and_tryagain_and_apply_each_mo_once(
        cluster: EmbeddedCluster, drill_stack: Stack) -> None:
    stack = drill_stack
    assert stack.store is not None
    view = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        source = view.get_node_from_key(sub_key(phones(1)[0]))
        movers = [m for m in phones(200) if view.get_node_from_key(sub_key(m)) == source][:6]
        target = next(n for n in view.get_primaries() if n != source)
        slots = sorted({view.keyslot(sub_key(m)) for m in movers})
    finally:
        view.close()
    crowd = movers + [m for m in phones(30) if m not in movers][:14]
    rounds = 8
    before = stack.store.pipeline.redirections.copy()
    load = Load(stack, crowd, rounds)
    await asyncio.wait_for(load.acked(len(crowd) // 2).wait(), 20)
    asked: list[Any] = []
    for slot in slots:
        # The slot half moved: a read of a key that is already (or never was) on the source is ASKed
        # to the target; the load's multi-key steps meet TRYAGAIN meanwhile.
        await asyncio.to_thread(begin_migration, cluster, slot, source.port, target.port)
        mover = next(m for m in movers if stack.store.redis.keyslot(sub_key(m)) == slot)
        await asyncio.to_thread(move_keys, cluster, slot, source.port, target.port, 0.03)
        asked.append(await stack.store.pipeline.command("HGET", f"sub:{{{mover}}}:nothing-here", "f"))
        await asyncio.to_thread(end_migration, cluster, slot, target.port)
    await asyncio.wait_for(load.task, 45)

    counts = {m: await issued(stack, m) for m in crowd}
    assert counts == dict.fromkeys(crowd, rounds), "an MO lost or applied twice"
    seen = stack.store.pipeline.redirections - before
    assert asked == [None] * len(slots)
    assert seen["ASK"] >= len(slots) and seen["TRYAGAIN"] >= 1 and seen["MOVED"] >= 1, seen
    metrics = stack.endpoints["selfcare"].removesuffix("/api/v1") + "/metrics"  # the operator sees them too
    async with aiohttp.ClientSession() as http, http.get(metrics) as scraped:
        exposition = await scraped.text()
    for kind in ("ASK", "TRYAGAIN", "MOVED"):
        line = next(x for x in exposition.splitlines()
                    if x.startswith(f'ussdgw_store_cluster_replies_total{{kind="{kind}"}}'))
        assert float(line.split()[-1]) >= seen[kind], line
    check = redis.RedisCluster(host="127.0.0.1", port=cluster.nodes[0].port)
    try:
        assert {check.get_node_from_key(sub_key(m)).name for m in movers} == {target.name}
    finally:
        check.close()
    print(f"resharding drill: {len(slots)} slots moved under {len(crowd)} phones x {rounds} MOs; "
          f"pipeline saw {dict(seen)}")


def _client_on(cluster: EmbeddedCluster, port: int) -> redis.Redis:
    return cluster.client(next(i for i, n in enumerate(cluster.nodes) if n.port == port))


def begin_migration(cluster: EmbeddedCluster, slot: int, source: int, target: int) -> None:
    src, dst = _client_on(cluster, source), _client_on(cluster, target)
    try:
        call(dst, "CLUSTER SETSLOT", slot, "IMPORTING", call(src, "CLUSTER MYID"))
        call(src, "CLUSTER SETSLOT", slot, "MIGRATING", call(dst, "CLUSTER MYID"))
    finally:
        src.close()
        dst.close()


def move_keys(cluster: EmbeddedCluster, slot: int, source: int, target: int, pause: float) -> None:
    """MIGRATE the slot's keys one at a time, `pause` apart, so that steps of the load fall in between."""
    src = _client_on(cluster, source)
    try:
        while keys := call(src, "CLUSTER GETKEYSINSLOT", slot, 1):
            call(src, "MIGRATE", "127.0.0.1", target, "", 0, 5000, "KEYS", *keys)
            time.sleep(pause)
    finally:
        src.close()


def end_migration(cluster: EmbeddedCluster, slot: int, target: int) -> None:
    """The slot is the target's: told to every primary (the others learn it by gossip)."""
    dst = _client_on(cluster, target)
    try:
        target_id = call(dst, "CLUSTER MYID")
    finally:
        dst.close()
    for i in range(cluster.primaries):
        client = cluster.client(i)
        try:
            if call(client, "CLUSTER INFO").get("cluster_state") is not None:
                call(client, "CLUSTER SETSLOT", slot, "NODE", target_id)
        except redis.exceptions.ResponseError:
            pass  # a primary that is not the source or the target may refuse; gossip tells it
        finally:
            client.close()
