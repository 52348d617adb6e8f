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
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MO_TTL_S = 24 * 3600
DLR_TTL_S = 3 * 24 * 3600
AUDIT_MAXLEN = 2000


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

    def __init__(self, redis_client: aioredis.Redis, secret_key: bytes, *, lease_s: float = 15.0) -> None:
        self.redis = redis_client
        self.sealer = Sealer(secret_key)
        self.lease_s = lease_s
        self._commit = redis_client.register_script(_COMMIT_LUA)
        self._rate_peek = redis_client.register_script(_RATE_PEEK_LUA)
        self._mt_done = redis_client.register_script(_MT_DONE_LUA)
        self._reclaim = redis_client.register_script(_RECLAIM_LUA)
        self._add_part = redis_client.register_script(_ADD_PART_LUA)
        self._dlr_meet = redis_client.register_script(_DLR_MEET_LUA)

    @classmethod
    def from_url(cls, url: str, secret_key: bytes, **kwargs: Any) -> Store:
        client = aioredis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=2, health_check_interval=30,
        )
        return cls(client, secret_key, **kwargs)

    async def close(self) -> None:
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
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(sub_key(msisdn), mapping={k: str(v) for k, v in profile.items()})
            pipe.xadd(audit_key(msisdn), dict(_pairs(audit.fields(now))), maxlen=AUDIT_MAXLEN, approximate=True)
            await _guard(pipe.execute())

    async def rate_peek(self, msisdn: str, guard: RateGuard) -> tuple[str, float] | None:
        """Would `guard` refuse now? (a cheap read before costly work; `commit` decides for real)."""
        refused = await _guard(
            self._rate_peek(keys=[rate_key(msisdn, guard.name)], args=[guard.cooldown_s, guard.per_hour, time.time()])
        )
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
        now = time.time()
        payload = {
            "now": now,
            "lease_until": now + self.lease_s,
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
        result = await _guard(self._commit(keys=keys, args=[json.dumps(payload, ensure_ascii=False)]))
        outcome = result[0].decode()
        if outcome == "limited":
            return CommitResult("limited", reason=result[1].decode(), retry_at=float(result[2]))
        if outcome == "duplicate":
            sealed = tuple(self._unseal(b) for b in result[1:])
            if sealed:
                await _guard(self.redis.zadd(OUTBOX_INDEX, {msisdn: now}))
            return CommitResult("duplicate", messages=sealed)
        if messages:
            await _guard(self.redis.zadd(OUTBOX_INDEX, {msisdn: now}))
        return CommitResult("applied", messages=tuple(messages))

    def _unseal(self, blob_hex: bytes) -> OutboundMessage:
        return OutboundMessage.from_json(self.sealer.open(bytes.fromhex(blob_hex.decode())))

    # ---- MT lifecycle ----------------------------------------------------------------------
    async def mt_done(self, msisdn: str, mt_id: str, audit: AuditEvent) -> None:
        """The MT left the outbox (submitted, or failed for good)."""
        now = time.time()
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
        now = time.time()
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

    async def add_part(self, msisdn: str, reference: str, seqnum: int, total: int, payload: bytes,
                       ttl_s: int = 600) -> bytes | None:
        """Keep one part of a long MO; once all are in, the whole payload (parts stay until TTL,
        so a redelivered last part reassembles the same message and is deduplicated later)."""
        parts = await _guard(
            self._add_part(keys=[parts_key(msisdn, reference)], args=[seqnum, payload, total, ttl_s])
        )
        return b"".join(parts) if parts else None

    async def set_mt_state(self, msisdn: str, mt_id: str, state: str, audit: AuditEvent | None = None) -> None:
        now = time.time()
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
        now = time.time()
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
