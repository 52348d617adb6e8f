"""Money and points (M1-M6): balance, tariff, services, Автоплатёж, holds, gifts, operation marks.

    sub:{m}        balance_kop, bonus_points, tariff, tariff_since, svc:<id>, autopay_amount_kop,
                   autopay_threshold_kop
    sub:{m}:ops    <op> -> applied | void; pay:<payment id> -> amount: a retried step finds its mark
    sub:{m}:holds  <op> -> JSON {purpose, to, field, amount}, <op>:state -> held | captured | refunded,
                   <op>:at: money or points taken from this subscriber for a step in another slot
    sub:{m}:gifts  <tid> -> JSON {from, amount, digest}, <tid>:state -> offered | accepted | expired |
                   void, <tid>:expires, code:<digest> -> tid
    idx:holds:{b<n>} "msisdn|op" -> time held: written before the hold (`ussdgw.store.indexes`)

Автоплатёж is decided here, in Python, before the commit (`debit`): the change then carries
checks that the balance and the settings it was decided on still hold, and a commit refused by
one of them (`STALE`) is decided again on a fresh profile (`Store.update`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from ussdgw.store.commit import STALE, Change, Check, CheckKind, Write, WriteOp
from ussdgw.store.errors import guarded
from ussdgw.store.keys import gifts_key, holds_key, idempotency_key, ops_key, sub_key
from ussdgw.store.model import AuditEvent
from ussdgw.store.profile import SERVICE_PREFIX, Profile

if TYPE_CHECKING:
    from ussdgw.store.core import Store

INSUFFICIENT_FUNDS = "insufficient_funds"


class Asset(StrEnum):
    """What a hold takes: money or bonus points (the profile field)."""

    MONEY = "balance_kop"
    POINTS = "bonus_points"


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), ensure_ascii=False, separators=(",", ":"))


def _num(kind: CheckKind, msisdn: str, field: str, value: int, code: str) -> Check:
    return Check(kind, sub_key(msisdn), field, value, code)


# ---- balance and points ---------------------------------------------------------------------------
def credit(msisdn: str, amount_kop: int, points: int = 0) -> Change:
    """M2: money paid in (and bonus points with it); the result carries the balance after."""
    writes = [Write(WriteOp.HINCR, sub_key(msisdn), Asset.MONEY, amount_kop)]
    if points:
        writes.append(Write(WriteOp.HINCR, sub_key(msisdn), Asset.POINTS, points))
    return Change(writes=tuple(writes), read_profile=True)


def paid(msisdn: str, price_kop: int) -> Change:
    """M1: a paid operation needs a positive balance that covers the price (`insufficient_funds`)."""
    checks = [_num(CheckKind.GT, msisdn, Asset.MONEY, 0, INSUFFICIENT_FUNDS)]
    if price_kop > 0:
        checks.append(_num(CheckKind.GTE, msisdn, Asset.MONEY, price_kop, INSUFFICIENT_FUNDS))
    return Change(checks=tuple(checks))


def debit(profile: Profile, amount_kop: int, *, pay: bool = True) -> Change:
    """Take `amount_kop` from the balance: a paid operation (`pay`: M1's positive balance needed,
    see `paid`) or usage billing (may go negative). Автоплатёж (M4): a debit that leaves the
    balance at or below its threshold tops it up by its amount at once, decided on `profile` and
    guarded by checks (`STALE`) that the balance is still on the same side of the threshold."""
    msisdn = profile.msisdn
    change = (paid(msisdn, amount_kop) if pay else Change()) + Change(
        writes=(Write(WriteOp.HINCR, sub_key(msisdn), Asset.MONEY, -amount_kop),) if amount_kop else (),
        read_profile=True)
    if amount_kop <= 0:
        return change
    key = sub_key(msisdn)
    amount, threshold = profile.autopay_amount_kop, profile.autopay_threshold_kop
    if amount <= 0:  # no Автоплатёж: still none when this is committed
        return change + Change(checks=(Check(CheckKind.ABSENT, key, "autopay_amount_kop", code=STALE),))
    settings = (Check(CheckKind.EQ, key, "autopay_amount_kop", amount, STALE),
                Check(CheckKind.EQ, key, "autopay_threshold_kop", threshold, STALE))
    limit = threshold + amount_kop  # after the debit at or below the threshold <=> before at or below this
    if profile.balance_kop > limit:
        return change + Change(checks=(*settings, _num(CheckKind.GT, msisdn, Asset.MONEY, limit, STALE)))
    return change + Change(
        checks=(*settings, _num(CheckKind.LTE, msisdn, Asset.MONEY, limit, STALE)),
        writes=(Write(WriteOp.HINCR, key, Asset.MONEY, amount),),
        audit=(AuditEvent("autopay_topup", "billing", detail=f"amount_kop={amount}"),),
        autopaid_kop=amount,
    )


# ---- M3 tariff, M4 services -----------------------------------------------------------------------
def tariff_switched(profile: Profile, tariff_id: str, at: float) -> Change:
    """M3: `conflict` when the tariff changed since `profile` was read."""
    key = sub_key(profile.msisdn)
    return Change(checks=(Check(CheckKind.EQ, key, "tariff", profile.tariff),),
                  writes=(Write(WriteOp.HSET, key, "tariff", tariff_id),
                          Write(WriteOp.HSET, key, "tariff_since", int(at))))


@dataclass(frozen=True, slots=True)
class Autopay:
    """Автоплатёж's settings: top up by `amount_kop` when a debit leaves the balance at or below `threshold_kop`."""

    amount_kop: int
    threshold_kop: int


def service_on(msisdn: str, service_id: str, at: float, autopay: Autopay | None = None) -> Change:
    """M4: `conflict` when it is on already."""
    key = sub_key(msisdn)
    writes = [Write(WriteOp.HSET, key, SERVICE_PREFIX + service_id, int(at))]
    if autopay is not None:
        writes += [Write(WriteOp.HSET, key, "autopay_amount_kop", autopay.amount_kop),
                   Write(WriteOp.HSET, key, "autopay_threshold_kop", autopay.threshold_kop)]
    return Change(checks=(Check(CheckKind.ABSENT, key, SERVICE_PREFIX + service_id),), writes=tuple(writes))


def service_off(msisdn: str, service_id: str) -> Change:
    """M4: `conflict` when it is not on; Автоплатёж's settings go with it."""
    key = sub_key(msisdn)
    fields = [SERVICE_PREFIX + service_id]
    if service_id == "autopay":
        fields += ["autopay_amount_kop", "autopay_threshold_kop"]
    return Change(checks=(Check(CheckKind.EXISTS, key, SERVICE_PREFIX + service_id),),
                  writes=tuple(Write(WriteOp.HDEL, key, f) for f in fields))


def service_required(msisdn: str, service_id: str, code: str = "forbidden") -> Change:
    return Change(checks=(Check(CheckKind.EXISTS, sub_key(msisdn), SERVICE_PREFIX + service_id, code=code),))


# ---- operation marks ------------------------------------------------------------------------------
def payment_once(msisdn: str, payment_id: str, amount_kop: int) -> Change:
    """M2 idempotency: a payment id is credited once (`conflict` the second time)."""
    field = f"pay:{payment_id}"
    return Change(checks=(Check(CheckKind.ABSENT, ops_key(msisdn), field),),
                  writes=(Write(WriteOp.HSET, ops_key(msisdn), field, amount_kop),))


def op_marked(msisdn: str, op: str, state: str) -> Change:
    """Operation `op` on `msisdn` came to `state` (applied | void), once: `conflict` if it has one."""
    return Change(checks=(Check(CheckKind.ABSENT, ops_key(msisdn), op),),
                  writes=(Write(WriteOp.HSET, ops_key(msisdn), op, state),))


# ---- holds ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Hold:
    op: str
    purpose: str  # gift | owner_change
    to: str
    asset: Asset
    amount: int
    state: str  # held | captured | refunded


def hold_placed(payer: Profile, op: str, *, asset: Asset, amount: int, purpose: str, to: str, at: float,
                pay: bool) -> Change:
    """Take `amount` of `asset` from `payer` into hold `op` (`conflict` if `op` exists). Money
    taken for a paid operation (`pay`) follows M1; anything else needs only to be there
    (`insufficient_funds`); money taken goes through `debit` (Автоплатёж)."""
    key = holds_key(payer.msisdn)
    enough = Change(checks=(_num(CheckKind.GTE, payer.msisdn, asset, amount, INSUFFICIENT_FUNDS),))
    if asset is Asset.MONEY:
        taken = debit(payer, amount, pay=True) if pay else enough + debit(payer, amount, pay=False)
    else:
        taken = enough + Change(writes=(Write(WriteOp.HINCR, sub_key(payer.msisdn), asset, -amount),))
    return Change(checks=(Check(CheckKind.ABSENT, key, f"{op}:state"),)) + taken + Change(writes=(
        Write(WriteOp.HSET, key, op, _json({"purpose": purpose, "to": to, "field": asset.value, "amount": amount})),
        Write(WriteOp.HSET, key, f"{op}:state", "held"), Write(WriteOp.HSET, key, f"{op}:at", f"{at:.3f}")))


def hold_settled(payer: str, hold: Hold, outcome: str) -> Change:
    """Finish `hold`: `captured` (the other step happened) or `refunded` (it never will), once
    (`conflict` when it is not held any more)."""
    key = holds_key(payer)
    change = Change(checks=(Check(CheckKind.EQ, key, f"{hold.op}:state", "held"),),
                    writes=(Write(WriteOp.HSET, key, f"{hold.op}:state", outcome),))
    if outcome == "refunded":
        change += Change(writes=(Write(WriteOp.HINCR, sub_key(payer), hold.asset, hold.amount),))
    return change


# ---- M6 gifts -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Gift:
    tid: str
    sender: str
    points: int
    digest: str
    state: str  # offered | accepted | expired | void
    expires_at: float


def gift_offered(recipient: str, tid: str, *, sender: str, points: int, digest: str, expires: float) -> Change:
    """`conflict` when the gift has a state already (voided by a recovery that refunded it)."""
    key = gifts_key(recipient)
    return Change(checks=(Check(CheckKind.ABSENT, key, f"{tid}:state"),), writes=(
        Write(WriteOp.HSET, key, tid, _json({"from": sender, "amount": points, "digest": digest})),
        Write(WriteOp.HSET, key, f"{tid}:state", "offered"),
        Write(WriteOp.HSET, key, f"{tid}:expires", f"{expires:.3f}"),
        Write(WriteOp.HSET, key, f"code:{digest}", tid)))


def gift_void(recipient: str, tid: str) -> Change:
    """A gift never offered is marked void, so that no late offer can follow its refund."""
    key = gifts_key(recipient)
    return Change(checks=(Check(CheckKind.ABSENT, key, f"{tid}:state"),),
                  writes=(Write(WriteOp.HSET, key, f"{tid}:state", "void"),))


def gift_expired(recipient: str, gift: Gift, now: float) -> Change:
    """`conflict` unless it is still offered and its time is up."""
    key = gifts_key(recipient)
    return Change(checks=(Check(CheckKind.EQ, key, f"{gift.tid}:state", "offered"),
                          Check(CheckKind.LTE, key, f"{gift.tid}:expires", f"{now:.3f}")),
                  writes=(Write(WriteOp.HSET, key, f"{gift.tid}:state", "expired"),
                          Write(WriteOp.HDEL, key, f"code:{gift.digest}")))


def gift_accepted(recipient: str, gift: Gift, now: float) -> Change:
    """The points reach the recipient: `conflict` unless still offered, `expired` once its time is up."""
    key = gifts_key(recipient)
    return Change(checks=(Check(CheckKind.EQ, key, f"{gift.tid}:state", "offered"),
                          Check(CheckKind.GTE, key, f"{gift.tid}:expires", f"{now:.3f}", "expired")),
                  writes=(Write(WriteOp.HINCR, sub_key(recipient), Asset.POINTS, gift.points),
                          Write(WriteOp.HSET, key, f"{gift.tid}:state", "accepted"),
                          Write(WriteOp.HDEL, key, f"code:{gift.digest}")))


# ---- reads ----------------------------------------------------------------------------------------
async def _hash(store: Store, key: str) -> dict[str, str]:
    raw = await guarded(store.redis.hgetall(key))
    return {k.decode(): v.decode() for k, v in raw.items()}


class Money:
    """Reads of holds, gifts and operation marks; the holds' recovery index."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def holds(self, payer: str) -> dict[str, Hold]:
        raw = await _hash(self._store, holds_key(payer))
        out = {}
        for op, value in raw.items():
            if ":" in op:
                continue
            record = json.loads(value)
            out[op] = Hold(op, str(record["purpose"]), str(record["to"]), Asset(record["field"]),
                           int(record["amount"]), raw.get(f"{op}:state", ""))
        return out

    async def hold(self, payer: str, op: str) -> Hold | None:
        return (await self.holds(payer)).get(op)

    async def gifts(self, recipient: str) -> dict[str, Gift]:
        """Every gift offered to `recipient` that has its record (a voided one has none)."""
        raw = await _hash(self._store, gifts_key(recipient))
        out = {}
        for tid, value in raw.items():
            if ":" in tid:
                continue
            record = json.loads(value)
            out[tid] = Gift(tid, str(record["from"]), int(record["amount"]), str(record.get("digest", "")),
                            raw.get(f"{tid}:state", ""), float(raw.get(f"{tid}:expires", 0)))
        return out

    async def gift_state(self, recipient: str, tid: str) -> str | None:
        raw = await guarded(self._store.redis.hget(gifts_key(recipient), f"{tid}:state"))
        return raw.decode() if raw is not None else None

    async def gift_by_code(self, recipient: str, digest: str) -> Gift | None:
        tid = await guarded(self._store.redis.hget(gifts_key(recipient), f"code:{digest}"))
        return (await self.gifts(recipient)).get(tid.decode()) if tid is not None else None

    async def op_state(self, msisdn: str, op: str) -> str | None:
        raw = await guarded(self._store.redis.hget(ops_key(msisdn), op))
        return raw.decode() if raw is not None else None

    # ---- Idempotency-Key of the self-care API -------------------------------------------------
    async def idempotency_begin(self, msisdn: str, key: str, fingerprint: str, pending_s: int) -> dict[str, Any] | None:
        """Claim `key` for a request with `fingerprint` (None: claimed, run it), or what the first
        request with it left: {"fp": its fingerprint, "status" and "body" once it has answered}."""
        raw = await self._store.scripts.run("idempotency_begin", [idempotency_key(msisdn, key)],
                                            [json.dumps({"fp": fingerprint}), pending_s])
        if raw is None:
            return None
        found: dict[str, Any] = json.loads(raw)
        return found

    async def idempotency_answered(self, msisdn: str, key: str, fingerprint: str, status: int, body: str,
                                   keep_s: int) -> None:
        """The first answer to `key`, given again to every retry with the same body for `keep_s`."""
        await guarded(self._store.pipeline.command(
            "SET", idempotency_key(msisdn, key), json.dumps({"fp": fingerprint, "status": status, "body": body},
                                                            ensure_ascii=False), "EX", keep_s))

    async def idempotency_dropped(self, msisdn: str, key: str) -> None:
        """The request failed before an answer worth keeping (Redis away, an error): a retry runs it."""
        await guarded(self._store.pipeline.command("DEL", idempotency_key(msisdn, key)))

    async def index_hold(self, payer: str, op: str, at: float) -> None:
        """The hold's recovery entry: written before the hold is placed (`ussdgw.store.indexes`)."""
        await self._store.indexes.hold_placing(payer, op, at)

    async def unindex_hold(self, payer: str, op: str) -> None:
        await self._store.indexes.hold_done(payer, op)

    async def holds_due(self, before: float, limit: int = 100) -> list[tuple[str, str, float]]:
        """(payer, op, placed at) of holds placed before `before`, from every bucket."""
        return await self._store.indexes.holds_due(before, limit)
