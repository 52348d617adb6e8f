"""Every Redis key, TTL and Lua script of the platform, in one place.

Keys are cluster-safe: everything about one subscriber carries the hash tag `{<msisdn>}`, so a
change to one subscriber is one single-slot Lua script and is atomic. The only global keys are
indexes that can be rebuilt (`outbox:index`) and the delivery-receipt correlation keys.

    sub:{m}                hash     the subscriber profile (see `Subscriber`)
    sub:{m}:mo:<id>        string   an MO already applied (idempotency), value = its MT ids; TTL 1 day
    sub:{m}:outbox         hash     MT id -> sealed MT (AES-GCM: secrets never rest in plain text)
    sub:{m}:lease          zset     MT id -> time until which one gateway owns sending it
    sub:{m}:audit          stream   P10 audit trail, capped
    sub:{m}:rl:<name>      zset     send times, for D2 cool-down and hourly caps; TTL 1 h
    sub:{m}:parts:<ref>    hash     parts of a long MO, seqnum -> payload; TTL 10 min
    sub:{m}:mtstate        hash     MT id -> its last known state (submitted, DELIVERED, UNDELIV, ...)
    outbox:index           zset     msisdn -> last time an MT was queued for it (recovery scan)
    dlr:<message_id>       hash     SMSC message id -> msisdn, MT id (receipt correlation); TTL 3 days

Errors: Redis being unreachable surfaces as `StoreUnavailable`, which the gateway answers with
ESME_RX_T_APPN so that the SMSC keeps the message and retries.

Time: what the rules compare with "now" (D2 send times, audit times, `created_at`) comes from the
store's injected `Clock` (`Store.clock`, the platform's one clock). MT leases and the outbox index
are real wall time (`_lease_now`): every gateway process shares them, and a test that fast-forwards
the clock must not make an MT in flight look abandoned. TTLs are Redis's own time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ussdgw.clock import Clock

MO_TTL_S = 24 * 3600
DLR_TTL_S = 3 * 24 * 3600
AUDIT_MAXLEN = 2000


def _lease_now() -> float:
    """Real wall time, for MT leases and the outbox index only (never the business clock)."""
    return time.time()


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer; the operation may be retried as a whole."""


def sub_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}"


def mo_key(msisdn: str, mo_id: str) -> str:
    return f"sub:{{{msisdn}}}:mo:{mo_id}"


def outbox_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:outbox"


def lease_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:lease"


def audit_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:audit"


def rate_key(msisdn: str, name: str) -> str:
    return f"sub:{{{msisdn}}}:rl:{name}"


OUTBOX_INDEX = "outbox:index"


def parts_key(msisdn: str, reference: str) -> str:
    return f"sub:{{{msisdn}}}:parts:{reference}"


def mt_state_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:mtstate"


def dlr_key(message_id: str) -> str:
    return f"dlr:{message_id}"


@dataclass(frozen=True, slots=True)
class RateGuard:
    """D2: at most `per_hour` sends per hour and one per `cooldown_s`, for one counter name."""

    name: str
    cooldown_s: int
    per_hour: int


@dataclass(frozen=True, slots=True)
class OutboundMessage:
    """An MT waiting to be sent. `text` may hold a secret: it is sealed before it reaches Redis."""

    mt_id: str
    source: str
    destination: str
    text: str
    ussd_service_op: int | None = None
    its_session_info: int | None = None
    secret: bool = False

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "mt_id": self.mt_id, "source": self.source, "destination": self.destination, "text": self.text,
                "ussd_service_op": self.ussd_service_op, "its_session_info": self.its_session_info,
                "secret": self.secret,
            },
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> OutboundMessage:
        return cls(**json.loads(data))


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """P10: what happened, through which channel, with what outcome. Never a secret in `detail`."""

    event: str
    channel: str
    outcome: str = "ok"
    detail: str = ""

    def fields(self, now: float) -> list[str]:
        return ["ts", f"{now:.3f}", "event", self.event, "channel", self.channel, "outcome", self.outcome,
                "detail", self.detail]


@dataclass(frozen=True, slots=True)
class Change:
    """One atomic change to a subscriber: fields to set, counters to add to, guards to pass."""

    set_fields: Mapping[str, str | int] = field(default_factory=dict)
    incr_fields: Mapping[str, int] = field(default_factory=dict)
    delete_fields: Sequence[str] = ()
    rate_guards: Sequence[RateGuard] = ()


@dataclass(frozen=True, slots=True)
class CommitResult:
    """`applied`: done now; `duplicate`: the MO was applied before; `limited`: a guard refused."""

    outcome: str
    messages: tuple[OutboundMessage, ...] = ()
    retry_at: float | None = None
    reason: str | None = None

    @property
    def refused(self) -> bool:
        return self.outcome == "limited"


_RATE_CHECK_LUA = """
local function rate_check(key, cooldown, per_hour, now)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 3600)
  local last = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
  if last[2] and now - tonumber(last[2]) < cooldown then
    return {'cooldown', tostring(tonumber(last[2]) + cooldown)}
  end
  if redis.call('ZCARD', key) >= per_hour then
    local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return {'hourly_cap', tostring(tonumber(first[2]) + 3600)}
  end
  return nil
end
"""

# KEYS: sub, mo marker ('' slot filler if none), outbox, lease, audit, rate keys...
# ARGV[1]: JSON {now, lease_until, mo, create, set, incr, del, guards, mts, audit, mo_ttl}
_COMMIT_LUA = _RATE_CHECK_LUA + """
local p = cjson.decode(ARGV[1])
if p.mo and redis.call('EXISTS', KEYS[2]) == 1 then
  local ids = cjson.decode(redis.call('GET', KEYS[2]))
  local out = {'duplicate'}
  for _, id in ipairs(ids) do
    local blob = redis.call('HGET', KEYS[3], id)
    if blob then
      redis.call('ZADD', KEYS[4], p.lease_until, id)
      table.insert(out, blob)
    end
  end
  return out
end
for i, g in ipairs(p.guards) do
  local refused = rate_check(KEYS[5 + i], g[1], g[2], p.now)
  if refused then return {'limited', refused[1], refused[2]} end
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], unpack(p.create))
end
if #p.set > 0 then redis.call('HSET', KEYS[1], unpack(p.set)) end
for i = 1, #p.incr, 2 do redis.call('HINCRBY', KEYS[1], p.incr[i], p.incr[i + 1]) end
if #p.del > 0 then redis.call('HDEL', KEYS[1], unpack(p.del)) end
for i, g in ipairs(p.guards) do
  redis.call('ZADD', KEYS[5 + i], p.now, tostring(p.now) .. ':' .. tostring(i))
  redis.call('EXPIRE', KEYS[5 + i], 3600)
end
local ids = {}
for _, m in ipairs(p.mts) do
  redis.call('HSET', KEYS[3], m[1], m[2])
  redis.call('ZADD', KEYS[4], p.lease_until, m[1])
  table.insert(ids, m[1])
end
for _, a in ipairs(p.audit) do
  redis.call('XADD', KEYS[5], 'MAXLEN', '~', p.audit_maxlen, '*', unpack(a))
end
if p.mo then redis.call('SET', KEYS[2], cjson.encode(ids), 'EX', p.mo_ttl) end
return {'applied'}
"""

_RATE_PEEK_LUA = _RATE_CHECK_LUA + """
local refused = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if refused then return refused end
return {}
"""

# KEYS: parts; ARGV: seqnum, payload, total, ttl -> all parts in order once complete, else {}
_ADD_PART_LUA = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
local total = tonumber(ARGV[3])
if redis.call('HLEN', KEYS[1]) < total then return {} end
local out = {}
for i = 1, total do
  local part = redis.call('HGET', KEYS[1], tostring(i))
  if not part then return {} end
  table.insert(out, part)
end
return out
"""

# KEYS: dlr:<id>; ARGV: field/value pairs from one side (sender or receipt) -> the whole hash
# The sender writes msisdn+mt_id, the receipt writes state+err; whoever comes second sees both.
_DLR_MEET_LUA = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: outbox, lease, audit; ARGV: mt_id, audit fields...
_MT_DONE_LUA = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if #ARGV > 2 then redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3)) end
return 1
"""

# KEYS: outbox, lease; ARGV: now, lease_until, limit -> sealed MTs whose lease ran out, now ours
_RECLAIM_LUA = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local blob = redis.call('HGET', KEYS[1], id)
  if blob then
    redis.call('ZADD', KEYS[2], ARGV[2], id)
    table.insert(out, blob)
  else
    redis.call('ZREM', KEYS[2], id)
  end
end
return {out, redis.call('HLEN', KEYS[1])}
"""


# =============================================================================================
# USSD (issue 4): dialogue state, one step = one atomic script; N2 review index.
#
#     sub:{m}:ussd       hash     the phone's one open USSD dialogue: v = version (dialogue id:step),
#                                 d = JSON (`ussdgw.smpp.ussd.UssdDialogue`); PEXPIRE at the nearer of
#                                 the step and the whole-dialogue deadline, plus a grace so that a late
#                                 answer is told politely that it came too late
#     n2:pending         zset     msisdn -> when its N2 "Управление номерами" application is due for
#                                 review (an index, rebuildable: the application is the n2_* fields
#                                 of sub:{m})
#
# A USSD step is one `ussd_commit`: the usual commit (subscriber change, reply MTs, audit, MO mark)
# and the dialogue write or delete, in one script. It answers `conflict` and changes nothing when
# the dialogue moved on since the step was computed from it; a duplicate MO leaves it alone.
# =============================================================================================

N2_PENDING = "n2:pending"


def ussd_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:ussd"


# KEYS: as `_COMMIT_LUA`, then the dialogue key last; ARGV[1] as `_COMMIT_LUA`,
# ARGV[2]: JSON {expect?: version the step was computed from, write?: dialogue JSON, version, ttl_ms}
_USSD_COMMIT_LUA = "local function base_commit()\n" + _COMMIT_LUA + """
end
local d = cjson.decode(ARGV[2])
local dk = KEYS[#KEYS]
local duplicate = cjson.decode(ARGV[1]).mo and redis.call('EXISTS', KEYS[2]) == 1
if not duplicate and d.expect and (redis.call('HGET', dk, 'v') or '') ~= d.expect then
  return {'conflict'}
end
local r = base_commit()
if r[1] == 'applied' then
  redis.call('DEL', dk)
  if d.write then
    redis.call('HSET', dk, 'v', d.version, 'd', d.write)
    redis.call('PEXPIRE', dk, d.ttl_ms)
  end
end
return r
"""

async def ussd_load(store: Store, msisdn: str, mo_id: str | None) -> tuple[bool, bytes | None]:
    """(was this MO applied already, the open dialogue's JSON or None), in one round trip."""
    async with store.redis.pipeline(transaction=False) as pipe:
        pipe.exists(mo_key(msisdn, mo_id or "-"))
        pipe.hget(ussd_key(msisdn), "d")
        seen, raw = await _guard(pipe.execute())
    return bool(seen) and mo_id is not None, raw


async def ussd_commit(
    store: Store,
    msisdn: str,
    *,
    mo_id: str | None,
    mo_ttl_s: int = MO_TTL_S,
    expect: str | None,
    dialogue: str | None,
    version: str = "",
    ttl_s: float = 0.0,
    change: Change = Change(),
    messages: Sequence[OutboundMessage] = (),
    audit: Sequence[AuditEvent] = (),
) -> CommitResult:
    """One USSD step, all or nothing: `Store.commit` plus writing `dialogue` (None: delete it).

    `expect` is the version the step was computed from (None: replace whatever is open, as a new
    dial does); outcome `conflict` means another step got there first and nothing was written.
    """
    script = getattr(store, "_ussd_commit_script", None)
    if script is None:  # registered once per Store, like the scripts in Store.__init__
        script = store.redis.register_script(_USSD_COMMIT_LUA)
        setattr(store, "_ussd_commit_script", script)  # noqa: B010  (Store is not ours to extend)
    now, leased = store.clock.now(), _lease_now()
    payload = {
        "now": now, "lease_until": leased + store.lease_s, "mo": mo_id is not None, "mo_ttl": mo_ttl_s,
        "audit_maxlen": AUDIT_MAXLEN, "create": _flat({"created_at": f"{now:.0f}"}),
        "set": _flat(change.set_fields), "incr": _flat(change.incr_fields), "del": list(change.delete_fields),
        "guards": [[g.cooldown_s, g.per_hour] for g in change.rate_guards],
        "mts": [[m.mt_id, store.sealer.seal(m.to_json()).hex()] for m in messages],
        "audit": [a.fields(now) for a in audit],
    }
    step: dict[str, Any] = {"version": version, "ttl_ms": max(1, int(ttl_s * 1000))}
    if expect is not None:
        step["expect"] = expect
    if dialogue is not None:
        step["write"] = dialogue
    keys = [
        sub_key(msisdn), mo_key(msisdn, mo_id or "-"), outbox_key(msisdn), lease_key(msisdn), audit_key(msisdn),
        *(rate_key(msisdn, g.name) for g in change.rate_guards), ussd_key(msisdn),
    ]
    args = [json.dumps(payload, ensure_ascii=False), json.dumps(step, ensure_ascii=False)]
    result = await _guard(script(keys=keys, args=args))
    outcome = result[0].decode()
    if outcome == "conflict":
        return CommitResult("conflict")
    if outcome == "limited":
        return CommitResult("limited", reason=result[1].decode(), retry_at=float(result[2]))
    sent = tuple(store._unseal(b) for b in result[1:]) if outcome == "duplicate" else tuple(messages)
    if sent:
        await _guard(store.redis.zadd(OUTBOX_INDEX, {msisdn: leased}))
    return CommitResult(outcome, messages=sent)


async def ussd_dialogue_ttl(store: Store, msisdn: str) -> float | None:
    """Seconds the open dialogue has left in Redis (None when there is none)."""
    ms = int(await _guard(store.redis.pttl(ussd_key(msisdn))))
    return ms / 1000 if ms >= 0 else None


async def n2_linked_numbers(store: Store, msisdn: str) -> list[str]:
    """N1 numbers linked to `msisdn` (self-care's `sub:{m}:linked`), sorted."""
    raw = await _guard(store.redis.smembers(linked_key(msisdn)))  # defined in the self-care section
    return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in raw)


async def n2_index_add(store: Store, msisdn: str, due_at: float) -> None:
    await _guard(store.redis.zadd(N2_PENDING, {msisdn: due_at}))


async def n2_index_remove(store: Store, msisdn: str) -> None:
    await _guard(store.redis.zrem(N2_PENDING, msisdn))


async def n2_index_due(store: Store, now: float, limit: int = 100) -> list[str]:
    raw = await _guard(store.redis.zrangebyscore(N2_PENDING, "-inf", now, start=0, num=limit))
    return [m.decode() for m in raw]


# ============================================ end of USSD (issue 4) ==========================


class Sealer:
    """AES-GCM around MT bodies at rest, so a password in a queued SMS is never plain in Redis."""

    def __init__(self, key: bytes) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("the secret key must be 16, 24 or 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, data: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, None)

    def open(self, blob: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], None)


class Store:
    """The platform's state in Redis. Every method is one atomic step or a read."""

    def __init__(self, redis_client: aioredis.Redis, secret_key: bytes, *, lease_s: float = 15.0,
                 clock: Clock | None = None) -> None:
        self.redis = redis_client
        self.sealer = Sealer(secret_key)
        self.lease_s = lease_s
        self.clock = clock or Clock()  # business time (module docstring); leases are real wall time
        self._commit = redis_client.register_script(_COMMIT_LUA)
        self._rate_peek = redis_client.register_script(_RATE_PEEK_LUA)
        self._mt_done = redis_client.register_script(_MT_DONE_LUA)
        self._reclaim = redis_client.register_script(_RECLAIM_LUA)
        self._add_part = redis_client.register_script(_ADD_PART_LUA)
        self._dlr_meet = redis_client.register_script(_DLR_MEET_LUA)

    @classmethod
    def from_url(cls, url: str, secret_key: bytes, **kwargs: Any) -> Store:
        # A blocking pool: a burst of concurrent requests waits for a free connection instead of
        # failing with "Too many connections" (redis-py's default pool holds 100 and then raises).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30, max_connections=256, timeout=5,
        )
        client = aioredis.Redis.from_pool(pool)
        return cls(client, secret_key, **kwargs)

    async def close(self) -> None:
        batcher = _AUTO_PIPELINES.pop(self, None)  # issue 6: the batcher's own connections
        if batcher is not None:
            await batcher.close()
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except redis.exceptions.RedisError:
            return False

    # ---- subscribers -----------------------------------------------------------------------
    async def subscriber(self, msisdn: str) -> dict[str, str]:
        """The profile, or {} for an MSISDN never seen (P3: its account exists all the same)."""
        raw = await _guard(self.redis.hgetall(sub_key(msisdn)))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def put_subscriber(self, msisdn: str, profile: Mapping[str, str | int], audit: AuditEvent) -> None:
        """Create or overwrite profile fields (seeding, admin)."""
        now = self.clock.now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(sub_key(msisdn), mapping={k: str(v) for k, v in profile.items()})
            pipe.xadd(audit_key(msisdn), dict(_pairs(audit.fields(now))), maxlen=AUDIT_MAXLEN, approximate=True)
            await _guard(pipe.execute())

    async def rate_peek(self, msisdn: str, guard: RateGuard) -> tuple[str, float] | None:
        """Would `guard` refuse now? (a cheap read before costly work; `commit` decides for real)."""
        args = [guard.cooldown_s, guard.per_hour, self.clock.now()]
        refused = await _guard(self._rate_peek(keys=[rate_key(msisdn, guard.name)], args=args))
        if not refused:
            return None
        return refused[0].decode(), float(refused[1])

    async def commit(
        self,
        msisdn: str,
        *,
        mo_id: str | None,
        mo_ttl_s: int = MO_TTL_S,
        change: Change = Change(),
        messages: Sequence[OutboundMessage] = (),
        audit: Sequence[AuditEvent] = (),
        create: Mapping[str, str] | None = None,
    ) -> CommitResult:
        """Apply one subscriber change, queue its MTs and audit it, all or nothing, once per MO."""
        now, leased = self.clock.now(), _lease_now()
        payload = {
            "now": now,
            "lease_until": leased + self.lease_s,
            "mo": mo_id is not None,
            "mo_ttl": mo_ttl_s,
            "audit_maxlen": AUDIT_MAXLEN,
            "create": _flat(create or {"created_at": f"{now:.0f}"}),
            "set": _flat(change.set_fields),
            "incr": _flat(change.incr_fields),
            "del": list(change.delete_fields),
            "guards": [[g.cooldown_s, g.per_hour] for g in change.rate_guards],
            "mts": [[m.mt_id, self.sealer.seal(m.to_json()).hex()] for m in messages],
            "audit": [a.fields(now) for a in audit],
        }
        keys = [
            sub_key(msisdn), mo_key(msisdn, mo_id or "-"), outbox_key(msisdn), lease_key(msisdn),
            audit_key(msisdn), *(rate_key(msisdn, g.name) for g in change.rate_guards),
        ]
        # Batched with other MOs' commits (AutoPipeline, issue 6). With MTs, the recovery index is
        # written in the same round trip, just before the script (an entry for nothing is harmless).
        batch = auto_pipeline(self)
        indexed = batch.command("ZADD", OUTBOX_INDEX, leased, msisdn) if messages else None
        committed = batch.script(self._commit, keys, [json.dumps(payload, ensure_ascii=False)])
        result = (await _guard(asyncio.gather(committed, indexed)))[0] if indexed else await _guard(committed)
        outcome = result[0].decode()
        if outcome == "limited":
            return CommitResult("limited", reason=result[1].decode(), retry_at=float(result[2]))
        if outcome == "duplicate":
            sealed = tuple(self._unseal(b) for b in result[1:])
            if sealed and indexed is None:
                await _guard(self.redis.zadd(OUTBOX_INDEX, {msisdn: leased}))
            return CommitResult("duplicate", messages=sealed)
        return CommitResult("applied", messages=tuple(messages))

    def _unseal(self, blob_hex: bytes) -> OutboundMessage:
        return OutboundMessage.from_json(self.sealer.open(bytes.fromhex(blob_hex.decode())))

    # ---- MT lifecycle ----------------------------------------------------------------------
    async def mt_done(self, msisdn: str, mt_id: str, audit: AuditEvent) -> None:
        """The MT left the outbox (submitted, or failed for good)."""
        now = self.clock.now()
        await _guard(
            self._mt_done(
                keys=[outbox_key(msisdn), lease_key(msisdn), audit_key(msisdn)],
                args=[mt_id, AUDIT_MAXLEN, *audit.fields(now)],
            )
        )

    async def receipt_meet(self, message_id: str, **side: str) -> dict[str, str]:
        """Record one side of a receipt correlation (sender: msisdn+mt_id, receipt: state+err);
        returns everything known, so that whichever side comes second can finish the job."""
        args: list[str | int] = [DLR_TTL_S]
        for k, v in side.items():
            args += [k, v]
        raw = await _guard(self._dlr_meet(keys=[dlr_key(message_id)], args=args))
        return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}

    async def reclaim(self, limit: int = 100) -> list[OutboundMessage]:
        """MTs whose owner died before sending them: lease them to the caller."""
        now = _lease_now()
        out: list[OutboundMessage] = []
        members = await _guard(self.redis.zrangebyscore(OUTBOX_INDEX, "-inf", now - self.lease_s, start=0, num=limit))
        for raw in members:
            msisdn = raw.decode()
            blobs, remaining = await _guard(
                self._reclaim(keys=[outbox_key(msisdn), lease_key(msisdn)], args=[now, now + self.lease_s, limit])
            )
            out.extend(self._unseal(b) for b in blobs)
            if remaining == 0:
                await _guard(self.redis.zrem(OUTBOX_INDEX, msisdn))
            else:
                await _guard(self.redis.zadd(OUTBOX_INDEX, {msisdn: now}))
        return out

    async def outbox_depth(self, limit: int = 1000, chunk: int = 200) -> tuple[int, int]:
        """(MTs queued and not yet submitted, subscribers in the outbox index), counted over the
        `limit` most recently queued subscribers, for the metrics: bounded, and batched through the
        auto-pipeline `chunk` at a time, so a busy gateway's MOs never wait long behind it."""
        batch = auto_pipeline(self)
        indexed, members = await _guard(asyncio.gather(batch.command("ZCARD", OUTBOX_INDEX),
                                                       batch.command("ZREVRANGE", OUTBOX_INDEX, 0, limit - 1)))
        depth = 0
        for at in range(0, len(members), chunk):
            depths = await _guard(asyncio.gather(*(batch.command("HLEN", outbox_key(m.decode()))
                                                   for m in members[at:at + chunk])))
            depth += sum(int(d) for d in depths)
        return depth, int(indexed)

    async def add_part(self, msisdn: str, reference: str, seqnum: int, total: int, payload: bytes,
                       ttl_s: int = 600) -> bytes | None:
        """Keep one part of a long MO; once all are in, the whole payload (parts stay until TTL,
        so a redelivered last part reassembles the same message and is deduplicated later)."""
        parts = await _guard(
            self._add_part(keys=[parts_key(msisdn, reference)], args=[seqnum, payload, total, ttl_s])
        )
        return b"".join(parts) if parts else None

    async def set_mt_state(self, msisdn: str, mt_id: str, state: str, audit: AuditEvent | None = None) -> None:
        now = self.clock.now()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(mt_state_key(msisdn), mt_id, state)
            pipe.expire(mt_state_key(msisdn), DLR_TTL_S)
            if audit is not None:
                pipe.xadd(audit_key(msisdn), dict(_pairs(audit.fields(now))), maxlen=AUDIT_MAXLEN, approximate=True)
            await _guard(pipe.execute())

    async def mt_state(self, msisdn: str, mt_id: str) -> str | None:
        raw = await _guard(self.redis.hget(mt_state_key(msisdn), mt_id))
        return raw.decode() if raw is not None else None

    async def audit(self, msisdn: str, event: AuditEvent) -> None:
        now = self.clock.now()
        await _guard(
            self.redis.xadd(audit_key(msisdn), dict(_pairs(event.fields(now))), maxlen=AUDIT_MAXLEN, approximate=True)
        )

    async def audit_trail(self, msisdn: str, count: int = 100) -> list[dict[str, str]]:
        entries = await _guard(self.redis.xrevrange(audit_key(msisdn), count=count))
        return [
            {"id": eid.decode(), **{k.decode(): v.decode() for k, v in data.items()}} for eid, data in reversed(entries)
        ]


def _flat(mapping: Mapping[str, Any]) -> list[Any]:
    out: list[Any] = []
    for k, v in mapping.items():
        out += [k, v if isinstance(v, int) else str(v)]
    return out


def _pairs(flat: list[str]) -> list[tuple[str, str]]:
    return list(zip(flat[::2], flat[1::2], strict=True))


async def _guard(awaitable: Any) -> Any:
    try:
        return await awaitable
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc


# =============================================================================================
# Self-care (issue 3): sessions, sign-in lock, linked numbers, holds and transfers, archives.
#
#     sub:{m}:ops            hash     operation id -> outcome (top-up payment ids, owner changes):
#                                     a retried or recovered step finds its mark and is not redone
#     sub:{m}:holds          hash     <op> -> JSON {purpose, to, field, amount, at}, <op>:state ->
#                                     held | captured | refunded: money or points taken from this
#                                     subscriber for a step that happens in another subscriber's slot
#     sub:{m}:gifts          hash     M6 incoming gifts: <tid> -> JSON {from, amount}, <tid>:state ->
#                                     offered | accepted | expired | void, <tid>:expires, code:<digest> -> tid
#     sub:{m}:linked         set      N1 numbers this subscriber may act on (their password was shown)
#     sub:{m}:blacklist      set      M4 Родительский контроль: numbers this (child's) number must not reach
#     sub:{m}:locator:allow  set      M4 Локатор: numbers this subscriber agreed to be located by
#     sub:{m}:mms_archive    string   A2 the MMS archive is open while this key lives (TTL 72 h)
#     session:<sha256>       string   P5 a signed-in session, JSON; the key is the token's hash, TTL
#     holds:index            zset     "msisdn|op" -> time held (recovery scan; rebuildable)
#
# A change to one subscriber is one `sc_apply` call: one Lua script that checks its conditions,
# applies every write, queues MTs and audits, or refuses with a code and changes nothing (the
# refusal itself is audited, P10). A cross-subscriber change (a gift, an owner change paid from
# another number) is a hold in the payer's slot, then an idempotent step in the other slot keyed
# by the operation id, then the hold is captured or refunded; `holds:index` lets recovery finish
# whatever a crash left in between. No step ever spans two slots.
# =============================================================================================


HOLDS_INDEX = "holds:index"


def ops_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:ops"


def holds_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:holds"


def gifts_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:gifts"


def linked_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:linked"


def blacklist_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:blacklist"


def locator_allow_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:locator:allow"


def mms_archive_key(msisdn: str) -> str:
    return f"sub:{{{msisdn}}}:mms_archive"


def session_key(token: str) -> str:
    """Sessions are found by the token's SHA-256: a Redis dump does not hold usable tokens."""
    return "session:" + hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Check:
    """One condition `sc_apply` tests before writing; `code` names the refusal if it fails.

    kind: exists | absent | eq | ne (hash field vs `value`), gt | gte | lte (numeric field vs
    `value`, a missing field counts as 0), member | notmember (set member `value`), scard_lt.
    """

    kind: str
    key: str
    field: str
    value: str | int
    code: str


@dataclass(slots=True)
class Plan:
    """Everything one atomic self-care step may check and write, all in one subscriber's slot."""

    checks: list[Check] = field(default_factory=list)
    hset: list[tuple[str, str, str | int]] = field(default_factory=list)
    hincr: list[tuple[str, str, int]] = field(default_factory=list)
    hdel: list[tuple[str, str]] = field(default_factory=list)
    sadd: list[tuple[str, str]] = field(default_factory=list)
    srem: list[tuple[str, str]] = field(default_factory=list)
    setex: list[tuple[str, str, int]] = field(default_factory=list)
    guards: list[RateGuard] = field(default_factory=list)
    messages: list[OutboundMessage] = field(default_factory=list)
    audit: list[AuditEvent] = field(default_factory=list)
    refusal: AuditEvent | None = None  # audited with outcome = the refusal code
    must_exist: bool = True
    read: list[tuple[str, str]] = field(default_factory=list)  # hash fields returned after the change


@dataclass(frozen=True, slots=True)
class Applied:
    """`ok`, or `refused` with `code` (and the field it concerns), or `limited` by a D2 guard."""

    outcome: str
    code: str = ""
    detail: str = ""
    balance_kop: int = 0
    autopaid_kop: int = 0
    retry_at: float | None = None
    values: tuple[str | None, ...] = ()

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


_SC_APPLY_LUA = _RATE_CHECK_LUA + """
local p = cjson.decode(ARGV[1])
local function audit(list) redis.call('XADD', KEYS[2], 'MAXLEN', '~', p.maxlen, '*', unpack(list)) end
local function num(v) return tonumber(v or '0') or 0 end
local function refuse(code, detail)
  if p.refusal ~= cjson.null then
    audit({'ts', p.ts, 'event', p.refusal[1], 'channel', p.refusal[2], 'outcome', code, 'detail', p.refusal[3]})
  end
  return {'refused', code, detail}
end
if p.must_exist and redis.call('EXISTS', KEYS[1]) == 0 then return refuse('not_found', '') end
for _, c in ipairs(p.checks) do
  local kind, key, fld, val = c[1], KEYS[c[2]], c[3], c[4]
  local ok
  if kind == 'member' or kind == 'notmember' then
    ok = (redis.call('SISMEMBER', key, val) == 1) == (kind == 'member')
  elseif kind == 'scard_lt' then
    ok = redis.call('SCARD', key) < num(val)
  else
    local cur = redis.call('HGET', key, fld)
    if kind == 'exists' then ok = cur ~= false
    elseif kind == 'absent' then ok = cur == false
    elseif kind == 'eq' then ok = (cur or '') == val
    elseif kind == 'ne' then ok = (cur or '') ~= val
    elseif kind == 'gt' then ok = num(cur) > num(val)
    elseif kind == 'gte' then ok = num(cur) >= num(val)
    elseif kind == 'lte' then ok = num(cur) <= num(val)
    else return redis.error_reply('unknown check ' .. kind) end
  end
  if not ok then return refuse(c[5], fld) end
end
for _, g in ipairs(p.guards) do
  local refused = rate_check(KEYS[g[1]], g[2], g[3], p.now)
  if refused then
    local r = refuse('rate_limited', refused[1])
    return {'limited', refused[1], refused[2]}
  end
end
local before = num(redis.call('HGET', KEYS[1], 'balance_kop'))
for _, w in ipairs(p.hset) do redis.call('HSET', KEYS[w[1]], w[2], w[3]) end
for _, w in ipairs(p.hincr) do redis.call('HINCRBY', KEYS[w[1]], w[2], w[3]) end
for _, w in ipairs(p.hdel) do redis.call('HDEL', KEYS[w[1]], w[2]) end
for _, w in ipairs(p.sadd) do redis.call('SADD', KEYS[w[1]], w[2]) end
for _, w in ipairs(p.srem) do redis.call('SREM', KEYS[w[1]], w[2]) end
for _, w in ipairs(p.setex) do redis.call('SET', KEYS[w[1]], w[2], 'EX', w[3]) end
for i, g in ipairs(p.guards) do
  redis.call('ZADD', KEYS[g[1]], p.now, tostring(p.now) .. ':' .. tostring(i))
  redis.call('EXPIRE', KEYS[g[1]], 3600)
end
for _, m in ipairs(p.mts) do
  redis.call('HSET', KEYS[3], m[1], m[2])
  redis.call('ZADD', KEYS[4], p.lease_until, m[1])
end
for _, a in ipairs(p.audit) do audit(a) end
-- Автоплатёж (M4): a debit that leaves the balance at or below the threshold tops it up at once.
local after = num(redis.call('HGET', KEYS[1], 'balance_kop'))
local autopaid = 0
if after < before then
  local amount = num(redis.call('HGET', KEYS[1], 'autopay_amount_kop'))
  if amount > 0 and after <= num(redis.call('HGET', KEYS[1], 'autopay_threshold_kop')) then
    redis.call('HINCRBY', KEYS[1], 'balance_kop', amount)
    autopaid = amount
    audit({'ts', p.ts, 'event', 'autopay_topup', 'channel', 'billing', 'outcome', 'ok',
           'detail', 'amount_kop=' .. amount})
  end
end
local out = {'ok', tostring(after + autopaid), tostring(autopaid)}
for _, r in ipairs(p.read) do
  local v = redis.call('HGET', KEYS[r[1]], r[2])
  table.insert(out, v or '')
  table.insert(out, v and '1' or '0')
end
return out
"""

# KEYS: rate key; ARGV: cooldown, per_hour, now -> {} and the attempt counted, or {reason, retry_at}
_SC_ATTEMPT_LUA = _RATE_CHECK_LUA + """
local refused = rate_check(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
if refused then return refused end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[3] .. ':' .. ARGV[4])
redis.call('EXPIRE', KEYS[1], 3600)
return {}
"""

# P4: KEYS sub, audit; ARGV expected pw_hash, max failures, maxlen, audit fields...
# A wrong password counts only against the hash it was tried on (a new SMS password meanwhile wins).
_SC_SIGNIN_FAIL_LUA = """
if (redis.call('HGET', KEYS[1], 'pw_hash') or '') ~= ARGV[1] then return {'stale', '0', '0'} end
local n = redis.call('HINCRBY', KEYS[1], 'pw_failures', 1)
local locked = 0
if n >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'locked', 1)
  locked = 1
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 4))
return {'counted', tostring(n), tostring(locked)}
"""

_SC_SCRIPTS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def _sc_script(store: Store, name: str, source: str) -> Any:
    scripts = _SC_SCRIPTS.setdefault(store.redis, {})
    if name not in scripts:
        scripts[name] = store.redis.register_script(source)
    return scripts[name]


async def sc_apply(store: Store, msisdn: str, plan: Plan) -> Applied:
    """Run one self-care step on `msisdn`'s slot: all of `plan` or nothing (see `Plan`)."""
    now, leased = store.clock.now(), _lease_now()
    keys = [sub_key(msisdn), audit_key(msisdn), outbox_key(msisdn), lease_key(msisdn)]
    tag = f"{{{msisdn}}}"

    def idx(key: str) -> int:
        if tag not in key:
            raise ValueError(f"key {key!r} is not in the slot of {tag}")
        if key not in keys:
            keys.append(key)
        return keys.index(key) + 1

    payload = {
        "now": now, "ts": f"{now:.3f}", "maxlen": AUDIT_MAXLEN, "lease_until": leased + store.lease_s,
        "must_exist": plan.must_exist,
        "checks": [[c.kind, idx(c.key), c.field, str(c.value), c.code] for c in plan.checks],
        "guards": [[idx(rate_key(msisdn, g.name)), g.cooldown_s, g.per_hour] for g in plan.guards],
        "hset": [[idx(k), f, str(v)] for k, f, v in plan.hset],
        "hincr": [[idx(k), f, int(v)] for k, f, v in plan.hincr],
        "hdel": [[idx(k), f] for k, f in plan.hdel],
        "sadd": [[idx(k), m] for k, m in plan.sadd],
        "srem": [[idx(k), m] for k, m in plan.srem],
        "setex": [[idx(k), v, int(ttl)] for k, v, ttl in plan.setex],
        "mts": [[m.mt_id, store.sealer.seal(m.to_json()).hex()] for m in plan.messages],
        "audit": [a.fields(now) for a in plan.audit],
        "refusal": [plan.refusal.event, plan.refusal.channel, plan.refusal.detail] if plan.refusal else None,
        "read": [[idx(k), f] for k, f in plan.read],
    }
    script = _sc_script(store, "apply", _SC_APPLY_LUA)
    raw = await _guard(script(keys=keys, args=[json.dumps(payload, ensure_ascii=False)]))
    result = [r.decode() if isinstance(r, bytes) else r for r in raw]
    if result[0] == "refused":
        return Applied("refused", code=result[1], detail=result[2])
    if result[0] == "limited":
        return Applied("limited", code=result[1], retry_at=float(result[2]))
    if plan.messages:
        await _guard(store.redis.zadd(OUTBOX_INDEX, {msisdn: leased}))
    rest = result[3:]
    values = tuple(rest[i] if rest[i + 1] == "1" else None for i in range(0, len(rest), 2))
    return Applied("ok", balance_kop=int(result[1]), autopaid_kop=int(result[2]), values=values)


async def sc_attempt(store: Store, msisdn: str, guard: RateGuard) -> tuple[str, float] | None:
    """Count one attempt (sign-in, code entry) against `guard`; a refusal counts nothing."""
    now = store.clock.now()
    script = _sc_script(store, "attempt", _SC_ATTEMPT_LUA)
    refused = await _guard(script(keys=[rate_key(msisdn, guard.name)],
                                  args=[guard.cooldown_s, guard.per_hour, now, os.urandom(4).hex()]))
    if not refused:
        return None
    return refused[0].decode(), float(refused[1])


async def sc_signin_failed(store: Store, msisdn: str, pw_hash: str, max_failures: int,
                           audit: AuditEvent) -> tuple[int, bool] | None:
    """P4: count a wrong password; returns (failures in a row, locked now) or None if the hash changed."""
    script = _sc_script(store, "signin_fail", _SC_SIGNIN_FAIL_LUA)
    raw = await _guard(script(keys=[sub_key(msisdn), audit_key(msisdn)],
                              args=[pw_hash, max_failures, AUDIT_MAXLEN, *audit.fields(store.clock.now())]))
    if raw[0] == b"stale":
        return None
    return int(raw[1]), raw[2] == b"1"


async def sc_hash(store: Store, key: str) -> dict[str, str]:
    raw = await _guard(store.redis.hgetall(key))
    return {k.decode(): v.decode() for k, v in raw.items()}


async def sc_members(store: Store, key: str) -> set[str]:
    return {m.decode() for m in await _guard(store.redis.smembers(key))}


async def sc_ttl(store: Store, key: str) -> int:
    """Seconds the key has left; -2 when it does not exist, -1 without a TTL."""
    return int(await _guard(store.redis.ttl(key)))


async def session_put(store: Store, token: str, data: Mapping[str, Any], ttl_s: int) -> None:
    await _guard(store.redis.set(session_key(token), json.dumps(dict(data)), ex=max(1, ttl_s)))


async def session_get(store: Store, token: str) -> dict[str, Any] | None:
    raw = await _guard(store.redis.get(session_key(token)))
    return json.loads(raw) if raw else None


async def session_delete(store: Store, token: str) -> bool:
    return bool(await _guard(store.redis.delete(session_key(token))))


async def holds_index_add(store: Store, msisdn: str, op: str, at: float) -> None:
    await _guard(store.redis.zadd(HOLDS_INDEX, {f"{msisdn}|{op}": at}))


async def holds_index_remove(store: Store, msisdn: str, op: str) -> None:
    await _guard(store.redis.zrem(HOLDS_INDEX, f"{msisdn}|{op}"))


async def holds_index_due(store: Store, before: float, limit: int = 100) -> list[tuple[str, str]]:
    raw = await _guard(store.redis.zrangebyscore(HOLDS_INDEX, "-inf", before, start=0, num=limit))
    pairs = [m.decode().split("|", 1) for m in raw]
    return [(p[0], p[1]) for p in pairs if len(p) == 2]


async def sc_get(store: Store, key: str) -> str | None:
    raw = await _guard(store.redis.get(key))
    return raw.decode() if raw is not None else None


# =============================================================================================
# SMPP MT path (issue 6): what the gateway writes once an MT has been submitted, in one round trip
# instead of one per step. Not a MULTI: the `dlr:<id>` keys live in other cluster slots than the
# subscriber's; each step is atomic on its own and idempotent, so a crash in between is repaired by
# the lease (the MT is sent again) and by the receipt correlation (whichever side comes second).
# =============================================================================================


class AutoPipeline:
    """Commands issued while Redis is busy with the previous batch leave together, as one batch.

    A busy gateway has hundreds of MOs in flight, each awaiting its own script; sent one by one,
    every call costs a pooled connection, a write and a read, and redis-py's machinery around
    them. Here they go over one connection of their own: the first command of an idle moment
    leaves at the end of the loop turn; whatever is issued while a batch is out waits and leaves
    as the next batch (the more load, the bigger the batches). Each command stays what it was (a
    script is atomic on its own; a pipeline is not a transaction and none is needed), and each
    caller gets its own result or its own error. A script Redis has forgotten (NOSCRIPT, after a
    restart) is loaded and run again. A batch that fails as a whole (Redis away) fails each of
    its callers with `StoreUnavailable`, and the next batch connects afresh.
    """

    def __init__(self, redis_client: aioredis.Redis, timeout_s: float = 5.0, connections: int = 2) -> None:
        self.redis = redis_client
        pool = redis_client.connection_pool
        # Connections of its own, no per-reply socket timeout (a timer per reply): a batch has one
        # deadline. Two, so that the gateway prepares the next batch while Redis runs the last one.
        self._idle = [pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
                      for _ in range(connections)]
        self._all = list(self._idle)
        self.timeout_s = timeout_s
        self._queue: list[tuple[tuple[Any, ...], bytes, Any, asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self.batches = 0  # how many round trips so far (for tests and the benchmark)
        # Told the size and duration of every batch that went through (the metrics hang here).
        self.on_batch: Callable[[int, float], None] | None = None

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(self._sending, timeout=self.timeout_s)
        for conn in self._all:
            await conn.disconnect()

    def script(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Run a registered script (by SHA) in the next batch."""
        return self._add(("EVALSHA", script.sha, len(keys), *keys, *args), script)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any other Redis command in the next batch."""
        return self._add(args, None)

    def _add(self, args: tuple[Any, ...], script: Any) -> asyncio.Future[Any]:
        packed = _resp(args)  # a bad argument is the caller's TypeError, never the batch's failure
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, packed, script, future))
        if self._idle and not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._idle or not self._queue:
            return
        batch, self._queue = self._queue, []
        conn = self._idle.pop()
        task = asyncio.ensure_future(self._run(conn, batch))
        self._sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, conn))

    def _sent(self, task: asyncio.Task[None], conn: Any) -> None:
        self._sending.discard(task)
        self._idle.append(conn)
        self._flush()  # what piled up meanwhile leaves now, as one batch

    async def _run(self, conn: Any, batch: list[tuple[tuple[Any, ...], bytes, Any, asyncio.Future[Any]]]) -> None:
        results: list[Any] = []
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if not conn.is_connected:
                    await conn.connect()
                await conn.send_packed_command(b"".join(packed for _, packed, _, _ in batch), False)
                for _ in batch:
                    try:
                        results.append(await conn.read_response(disconnect_on_error=False))
                    except redis.exceptions.ResponseError as exc:  # this command's error, not the batch's
                        results.append(exc)
            self.batches += 1
            elapsed = time.perf_counter() - started
        except Exception as exc:  # the batch as a whole failed: Redis away, or too slow
            await conn.disconnect(nowait=True)
            failure = StoreUnavailable(str(exc) or type(exc).__name__)
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        except BaseException:  # cancelled mid-batch (shutdown): no caller may wait forever
            await conn.disconnect(nowait=True)
            for _, _, _, future in batch:
                if not future.done():
                    future.set_exception(StoreUnavailable("batch cancelled"))
            raise
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # a metrics hook never fails commands Redis has run
                self.on_batch(len(batch), elapsed)
        for (args, _, script, future), result in zip(batch, results, strict=True):
            if isinstance(result, redis.exceptions.NoScriptError) and script is not None:
                result = await _settle(script(keys=list(args[3 : 3 + args[2]]), args=list(args[3 + args[2] :])))
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


def _resp(args: tuple[Any, ...]) -> bytes:
    """One command in RESP: redis-py's packer encodes argument by argument through several
    layers and cost a sixth of the gateway's CPU here; these are the same bytes."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)
        if kind is bytes:
            raw = arg
        elif kind is str:
            raw = arg.encode()
        elif kind is int:
            raw = b"%d" % arg
        elif kind is float:
            raw = repr(arg).encode()
        elif isinstance(arg, bytearray | memoryview):
            raw = bytes(arg)
        elif isinstance(arg, str):  # StrEnum and other str subclasses: their str value
            raw = str.encode(arg)
        elif isinstance(arg, int) and kind is not bool:  # IntEnum
            raw = b"%d" % int(arg)
        else:
            raise TypeError(f"cannot send {kind.__name__} to Redis")
        out.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"".join(out)


async def _settle(awaitable: Any) -> Any:
    try:
        return await awaitable
    except Exception as exc:
        return exc


_AUTO_PIPELINES: weakref.WeakKeyDictionary[Store, AutoPipeline] = weakref.WeakKeyDictionary()


def auto_pipeline(store: Store) -> AutoPipeline:
    """The store's batcher (one per store, made on first use)."""
    batcher = _AUTO_PIPELINES.get(store)
    if batcher is None:
        batcher = _AUTO_PIPELINES[store] = AutoPipeline(store.redis)
    return batcher


async def mt_submitted(
    store: Store, msisdn: str, mt_id: str, state: str, audit: AuditEvent, message_ids: Sequence[str],
) -> list[dict[str, str]]:
    """The MT left the outbox with `state` (SUBMITTED / REJECTED) and its SMSC message ids are tied
    to it for receipt correlation. Returns, per message id, everything known about it: a receipt
    that arrived before the submit_sm_resp shows up here with its `state`."""
    batch = auto_pipeline(store)
    done = batch.script(store._mt_done, [outbox_key(msisdn), lease_key(msisdn), audit_key(msisdn)],
                        [mt_id, AUDIT_MAXLEN, *audit.fields(store.clock.now())])
    recorded = batch.command("HSET", mt_state_key(msisdn), mt_id, state)
    expiry = batch.command("EXPIRE", mt_state_key(msisdn), DLR_TTL_S)
    meets = [batch.script(store._dlr_meet, [dlr_key(m)], [DLR_TTL_S, "msisdn", msisdn, "mt_id", mt_id])
             for m in message_ids]
    results = await _guard(asyncio.gather(done, recorded, expiry, *meets))
    return [_hash(raw) for raw in results[3:]]


async def receipt_arrived(store: Store, message_id: str, state: str, err: str) -> dict[str, str]:
    """A receipt's side of the correlation (see `Store.receipt_meet`), in the next batch."""
    raw = await _guard(auto_pipeline(store).script(
        store._dlr_meet, [dlr_key(message_id)], [DLR_TTL_S, "state", state, "err", err]))
    return _hash(raw)


async def receipt_recorded(store: Store, msisdn: str, mt_id: str, state: str, audit: AuditEvent) -> None:
    """The MT's final state from its receipt, and its audit entry, in the next batch."""
    batch = auto_pipeline(store)
    await _guard(asyncio.gather(
        batch.command("HSET", mt_state_key(msisdn), mt_id, state),
        batch.command("EXPIRE", mt_state_key(msisdn), DLR_TTL_S),
        batch.command("XADD", audit_key(msisdn), "MAXLEN", "~", AUDIT_MAXLEN, "*", *audit.fields(store.clock.now())),
    ))


def _hash(raw: list[bytes]) -> dict[str, str]:
    return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
