"""The recovery indexes: where the background loops find work a crash may have left.

Three indexes, each sharded into `keys.INDEX_BUCKETS` buckets (one key each, a hash tag of its own,
so they spread over a cluster's slots; an entry lives in the bucket of its subscriber's number):

    MTs     "msisdn|mt_id" -> when to look at it again: its lease's end. Found due, the MT is
            looked at in its own slot (`lua/reclaim.lua`): sent (gone), held by a live sender,
            or abandoned and leased to the finder. A sent MT's entry is removed after its send.
    holds   "msisdn|op" -> when the hold was placed: settled or refunded by the hold recovery.
    N2      msisdn -> when its application is due for review.

Every entry is written before the change it indexes, on a cluster as a command of its own (one
script touches one slot); on a single server the MT entries are written and dropped by the MT's
own scripts (`lua/commit.lua` before it queues the MT, `lua/mt_done.lua` once it left the outbox),
a command less each. A stray entry costs one look and is dropped then; a missing one would strand
the work.
The work found per look is bounded by what is due, never by how many subscribers exist.

Which gateway looks at which buckets: each one heartbeats into `gateways:alive` and takes the
buckets whose number modulo the count of live gateways is its rank. While views differ (one just
started or died) a bucket may be looked at twice (harmless: every step is atomic) or by nobody for
a heartbeat or two (caught up at the next).

`rebuild` (the `ussdgw reindex` command) scans the subscribers' keys and writes every entry that
should be there, then folds the pre-bucket global keys in and deletes them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ussdgw.store.errors import guarded
from ussdgw.store.keys import (
    GATEWAYS_ALIVE,
    INDEX_BUCKETS,
    LEGACY_INDEXES,
    bucket_of,
    holds_due_key,
    mt_due_key,
    n2_due_key,
    pair_member,
    split_member,
)
from ussdgw.store.profile import STORED

if TYPE_CHECKING:
    from ussdgw.store.core import Store

ALL_BUCKETS = tuple(range(INDEX_BUCKETS))
ALIVE_FOR_HEARTBEATS = 3  # a gateway silent for this many heartbeats no longer counts


def share(members: Sequence[str], me: str, buckets: int = INDEX_BUCKETS) -> tuple[int, ...]:
    """The buckets `me` looks at among the live gateways `members` (all of them when it is alone)."""
    ranked = sorted(set(members) | {me})
    rank = ranked.index(me)
    return tuple(b for b in range(buckets) if b % len(ranked) == rank)


class Indexes:
    """Writes and reads of the three recovery indexes (module docstring)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # ---- who looks where -------------------------------------------------------------------
    async def heartbeat(self, gateway_id: str, now: float, every_s: float) -> tuple[int, ...]:
        """Say `gateway_id` is alive at `now`; the buckets it should look at."""
        pipe = self._store.pipeline
        stale = now - ALIVE_FOR_HEARTBEATS * every_s
        _, _, members = await guarded(asyncio.gather(
            pipe.command("ZADD", GATEWAYS_ALIVE, now, gateway_id),
            pipe.command("ZREMRANGEBYSCORE", GATEWAYS_ALIVE, "-inf", f"({now - 3600}"),
            pipe.command("ZRANGEBYSCORE", GATEWAYS_ALIVE, stale, "+inf"),
        ))
        return share([m.decode() for m in members], gateway_id)

    async def gone(self, gateway_id: str) -> None:
        """A gateway that stops hands its buckets over at once."""
        await guarded(self._store.pipeline.command("ZREM", GATEWAYS_ALIVE, gateway_id))

    # ---- MTs -------------------------------------------------------------------------------
    def mts_queued(self, msisdn: str, mt_ids: Iterable[str], due: float) -> Awaitable[Any]:
        """The entries of MTs about to be queued (a future: the commit awaits it first)."""
        flat: list[object] = []
        for mt_id in mt_ids:
            flat += [due, pair_member(msisdn, mt_id)]
        return self._store.pipeline.command("ZADD", mt_due_key(bucket_of(msisdn)), *flat)

    async def mts_dropped(self, msisdn: str, mt_ids: Sequence[str]) -> None:
        """Entries written for MTs a commit did not queue (a redelivery, a refusal)."""
        await guarded(self._store.pipeline.command("ZREM", mt_due_key(bucket_of(msisdn)),
                                                   *(pair_member(msisdn, mt_id) for mt_id in mt_ids)))

    async def mt_due_at(self, msisdn: str, mt_id: str, due: float) -> None:
        """Look at an indexed MT again at `due`; an entry its sender removed meanwhile stays removed."""
        await guarded(self._store.pipeline.command("ZADD", mt_due_key(bucket_of(msisdn)), "XX", due,
                                                   pair_member(msisdn, mt_id)))

    async def mt_done(self, msisdn: str, mt_id: str) -> None:
        await guarded(self._store.pipeline.command("ZREM", mt_due_key(bucket_of(msisdn)), pair_member(msisdn, mt_id)))

    async def mts_due(self, buckets: Sequence[int], now: float, limit: int = 100) -> list[tuple[str, str]]:
        """(msisdn, mt_id) of entries due by `now` in `buckets`, at most `limit` per bucket."""
        pipe = self._store.pipeline
        found = await guarded(asyncio.gather(*(
            pipe.command("ZRANGEBYSCORE", mt_due_key(b), "-inf", now, "LIMIT", 0, limit) for b in buckets)))
        return [pair for members in found for m in members if (pair := split_member(m)) is not None]

    async def mts_indexed(self, now: float) -> tuple[int, int]:
        """(entries in every MT bucket, those due by `now`): MTs queued or being sent, plus strays."""
        pipe = self._store.pipeline
        counts = await guarded(asyncio.gather(*(pipe.command("ZCARD", mt_due_key(b)) for b in ALL_BUCKETS),
                                              *(pipe.command("ZCOUNT", mt_due_key(b), "-inf", now)
                                                for b in ALL_BUCKETS)))
        return sum(int(n) for n in counts[:INDEX_BUCKETS]), sum(int(n) for n in counts[INDEX_BUCKETS:])

    # ---- holds -----------------------------------------------------------------------------
    async def hold_placing(self, payer: str, op: str, at: float) -> None:
        """Before a hold is placed: its recovery finds it even if this process dies just after."""
        await guarded(self._store.pipeline.command("ZADD", holds_due_key(bucket_of(payer)), at,
                                                   pair_member(payer, op)))

    async def hold_done(self, payer: str, op: str) -> None:
        await guarded(self._store.pipeline.command("ZREM", holds_due_key(bucket_of(payer)),
                                                   pair_member(payer, op)))

    async def holds_due(self, before: float, limit: int = 100,
                        buckets: Sequence[int] = ALL_BUCKETS) -> list[tuple[str, str, float]]:
        """(payer, op, when its entry was written) of holds placed before `before`."""
        pipe = self._store.pipeline
        found = await guarded(asyncio.gather(*(
            pipe.command("ZRANGEBYSCORE", holds_due_key(b), "-inf", before, "WITHSCORES", "LIMIT", 0, limit)
            for b in buckets)))
        return [(*pair, float(score)) for reply in found for member, score in _pairs(reply)
                if (pair := split_member(member)) is not None]

    # ---- N2 --------------------------------------------------------------------------------
    async def n2_due_at(self, msisdn: str, due_at: float) -> None:
        await guarded(self._store.pipeline.command("ZADD", n2_due_key(bucket_of(msisdn)), due_at, msisdn))

    async def n2_done(self, msisdn: str) -> None:
        await guarded(self._store.pipeline.command("ZREM", n2_due_key(bucket_of(msisdn)), msisdn))

    async def n2_due(self, now: float, limit: int = 100, buckets: Sequence[int] = ALL_BUCKETS) -> list[str]:
        pipe = self._store.pipeline
        found = await guarded(asyncio.gather(*(
            pipe.command("ZRANGEBYSCORE", n2_due_key(b), "-inf", now, "LIMIT", 0, limit) for b in buckets)))
        return [m.decode() for members in found for m in members]

    # ---- reindex ---------------------------------------------------------------------------
    async def rebuild(self, now: float, wall_now: float, count: int = 1000) -> dict[str, int]:
        """Write every entry the subscribers' keys call for (scanning them all), fold the global
        keys of before the buckets in and delete them. Entries already there stay as they are.
        `now` is the business time (holds, N2), `wall_now` the leases' (MTs: due at once)."""
        redis = self._store.redis
        counts = {"mts": 0, "holds": 0, "n2": 0}
        async for key in redis.scan_iter(match="sub:{*}:outbox", count=count):
            msisdn = _tag_of(key)
            for mt_id in await guarded(redis.hkeys(key)):
                await guarded(redis.zadd(mt_due_key(bucket_of(msisdn)),
                                         {pair_member(msisdn, mt_id.decode()): wall_now}, nx=True))
                counts["mts"] += 1
        async for key in redis.scan_iter(match="sub:{*}:holds", count=count):
            payer = _tag_of(key)
            fields = {k.decode(): v.decode() for k, v in (await guarded(redis.hgetall(key))).items()}
            for op, value in fields.items():
                if ":" in op or fields.get(f"{op}:state") != "held":
                    continue
                at = float(fields.get(f"{op}:at") or json.loads(value).get("at", now))
                await guarded(redis.zadd(holds_due_key(bucket_of(payer)), {pair_member(payer, op): at}, nx=True))
                counts["holds"] += 1
        async for key in redis.scan_iter(match="sub:{*}", count=count, _type="hash"):
            state, due = await guarded(redis.hmget(key, STORED["n2_state"], STORED["n2_due_at"]))
            if state == b"pending":
                await guarded(redis.zadd(n2_due_key(bucket_of(_tag_of(key))), {_tag_of(key): float(due or now)},
                                         nx=True))
                counts["n2"] += 1
        await guarded(redis.delete(*LEGACY_INDEXES))
        return counts


def _pairs(reply: Sequence[Any]) -> list[tuple[bytes, Any]]:
    """WITHSCORES as (member, score) pairs, whether the reply is flat (RESP2) or paired (RESP3)."""
    if reply and isinstance(reply[0], list):
        return [(m, s) for m, s in reply]
    return [(reply[i], reply[i + 1]) for i in range(0, len(reply), 2)]


def _tag_of(key: bytes | str) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text[text.index("{") + 1:text.index("}")]
