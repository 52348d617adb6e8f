"""The one commit engine's Python half: what a change is, and what committing it came to.

A `Change` is everything one atomic step may do to one subscriber's slot: checks that must hold,
D2 guards, writes (hash fields set, added to or deleted; set members; an expiring string), MTs to
queue (sealed), audit events, the MO's idempotency mark and the USSD dialogue state. MO replies,
USSD steps and self-care changes are all a `Change`, committed by `Store.commit` with one script
(`lua/commit.lua`): it checks, then writes, queues and audits, or refuses and changes nothing
(auditing the refusal when asked to). Changes combine with `+`, so a typed operation
(`ussdgw.store.profile.new_password`, `ussdgw.store.money.debit`, ...) and a handler's reply and
audit make one step.

Every key a change names must be in the subscriber's slot (its hash tag): a step never spans two
slots. What spans two subscribers (a gift, an owner-change fee) is a hold in one slot, then an
idempotent step in the other (`ussdgw.store.money`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import orjson

from ussdgw.audit_detail import clean
from ussdgw.records import record
from ussdgw.store.acting import attributed
from ussdgw.store.keys import (
    AUDIT_MAXLEN,
    audit_key,
    in_slot,
    lease_key,
    mo_key,
    outbox_key,
    pair_member,
    rate_key,
    slot_tag,
    sub_key,
    ussd_key,
)
from ussdgw.store.model import AuditEvent, OutboundMessage, RateGuard

if TYPE_CHECKING:
    from ussdgw.store.profile import Profile

STALE = "stale"
"""The refusal code of a check that guards a decision taken on an older read: decide again
(`Store.update` does)."""


class CheckKind(StrEnum):
    EXISTS = "exists"  # the hash field is there
    ABSENT = "absent"
    EQ = "eq"  # the field (missing = "") equals `value`
    NE = "ne"
    GT = "gt"  # numeric comparisons; a missing field counts as 0
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    MEMBER = "member"  # `value` is in the set at `key`
    NOT_MEMBER = "notmember"
    SIZE_BELOW = "scard_lt"  # the set at `key` has fewer than `value` members


class WriteOp(StrEnum):
    HSET = "hset"
    HINCR = "hincr"
    HDEL = "hdel"
    SADD = "sadd"
    SREM = "srem"
    SETEX = "setex"  # `value` under `key` for `ttl_s` seconds


@dataclass(frozen=True, slots=True)
class Check:
    """A condition of one step; `code` names the refusal when it fails."""

    kind: CheckKind
    key: str
    field: str = ""
    value: str | int = ""
    code: str = "conflict"


@dataclass(frozen=True, slots=True)
class Write:
    op: WriteOp
    key: str
    field: str = ""
    value: str | int = ""
    ttl_s: int = 0


@record
class MoMark:
    """The MO this step answers: the step is applied once per `mo_id`; its mark lives `ttl_s`.
    `again`: nothing but its content identifies the MO, so a repeat may be the subscriber asking
    again: it is answered like the first (its replies already sent go out once more; the mark
    keeps their sealed copies), never applied twice and never left without an answer."""

    mo_id: str
    ttl_s: int
    again: bool = False


@dataclass(frozen=True, slots=True)
class DialogueStep:
    """The USSD dialogue after this step: `state` (its JSON) with `version`, or None to close it.

    `expect` is the version the step was computed from (None: replace whatever is open, as a new
    dial does); a dialogue that moved on since makes the commit a `conflict`, with nothing written."""

    state: str | None
    version: str = ""
    ttl_s: float = 0.0
    expect: str | None = None


def _join_one(a: Any, b: Any, what: str) -> Any:
    if a is not None and b is not None:
        raise ValueError(f"two changes with a {what} cannot be one step")
    return a if a is not None else b


@record
class Change:
    """One atomic step on one subscriber's slot (module docstring). Empty parts do nothing."""

    checks: tuple[Check, ...] = ()
    writes: tuple[Write, ...] = ()
    guards: tuple[RateGuard, ...] = ()
    messages: tuple[OutboundMessage, ...] = ()
    audit: tuple[AuditEvent, ...] = ()
    refusal: AuditEvent | None = None  # audited with outcome = the refusal's code
    must_exist: bool = False  # refused with `not_found` when the subscriber has no profile
    create_profile: bool = False  # P3: a subscriber first seen gets a profile with its `created_at`
    mo: MoMark | None = None
    dialogue: DialogueStep | None = None
    read_profile: bool = False  # the result carries the profile as it is after the change
    autopaid_kop: int = 0  # money Автоплатёж pays in within this step (`ussdgw.store.money.debit`)
    # N3 checked inside the step (the operator's day, ISO): nothing is written, outcome BLOCKED, when
    # the number's block has begun by then. For a step with no side effect before its commit (the
    # help reply): the gate costs no read of its own, and no block can slip in between.
    unless_blocked_on: str = ""

    def __add__(self, other: Change) -> Change:
        if other is NO_CHANGE:  # the common case of an MO's reply without a change: nothing to build
            return self
        if self is NO_CHANGE:
            return other
        return Change(
            checks=self.checks + other.checks, writes=self.writes + other.writes, guards=self.guards + other.guards,
            messages=self.messages + other.messages, audit=self.audit + other.audit,
            refusal=_join_one(self.refusal, other.refusal, "refusal event"),
            must_exist=self.must_exist or other.must_exist,
            create_profile=self.create_profile or other.create_profile,
            mo=_join_one(self.mo, other.mo, "MO mark"), dialogue=_join_one(self.dialogue, other.dialogue, "dialogue"),
            read_profile=self.read_profile or other.read_profile, autopaid_kop=self.autopaid_kop + other.autopaid_kop,
            unless_blocked_on=max(self.unless_blocked_on, other.unless_blocked_on),
        )


NO_CHANGE = Change()


class Outcome(StrEnum):
    APPLIED = "applied"  # done now
    DUPLICATE = "duplicate"  # the MO was applied before: its MTs again, nothing changed
    REFUSED = "refused"  # a check failed (`code`, and the field in `detail`)
    LIMITED = "limited"  # a D2 guard refused (`code` = cooldown | hourly_cap, `retry_at`)
    CONFLICT = "conflict"  # the USSD dialogue moved on since the step was computed
    BLOCKED = "blocked"  # `Change.unless_blocked_on`: the number is blocked (N3), nothing written; `detail` its day


@record
class CommitResult:
    outcome: Outcome
    messages: tuple[OutboundMessage, ...] = ()
    code: str = ""
    detail: str = ""
    retry_at: float | None = None
    profile: Profile | None = None  # after the change, when the change asked (`read_profile`)
    autopaid_kop: int = 0
    # The number's N3 block day ("" for none) as the commit saw it, read when it queued an SMS
    # (`Store.commit`); None when not read.
    blocked_from: str | None = None

    @property
    def ok(self) -> bool:
        """The change is in Redis (now, or by an earlier delivery of the same MO)."""
        return self.outcome in (Outcome.APPLIED, Outcome.DUPLICATE)

    @property
    def refused(self) -> bool:
        """A check or a D2 guard said no: nothing was written (but the refusal's audit entry)."""
        return self.outcome in (Outcome.REFUSED, Outcome.LIMITED)

    @property
    def reason(self) -> str:
        """Why a D2 guard refused: cooldown | hourly_cap."""
        return self.code


def script_call(msisdn: str, change: Change, *, now: float, lease_until: float, tag: str,
                sealed: list[list[str]], lease_now: float = 0.0, grace_s: float = 0.0,
                replay: bool = False, created_field: str = "created_at", gate: str = "",
                block_field: str = "blocked_from", index_key: str = "") -> tuple[list[str], bytes]:
    """The keys and the JSON argument (UTF-8 bytes) of `lua/commit.lua` for `change` (only the parts it has);
    `change` names profile fields as Redis keeps them (`ussdgw.store.profile.stored_change`);
    `gate`: the stored name of the N3 block field, read back when the step applies; `block_field`:
    the same name, for `Change.unless_blocked_on`; `index_key`: the MT recovery index bucket the
    script writes the MTs' entries to before it queues them (on a single server only: the bucket is
    another cluster slot).

    Raises ValueError for a key outside `msisdn`'s slot: a step never spans two slots."""
    keys = [sub_key(msisdn), audit_key(msisdn), outbox_key(msisdn), lease_key(msisdn),
            mo_key(msisdn, change.mo.mo_id if change.mo is not None else "-"), ussd_key(msisdn)]
    index: dict[str, int] = {}  # filled on the first use: most steps name no other key

    def at(key: str) -> int:
        if not index:
            index.update((k, i) for i, k in enumerate(keys, 1))
        found = index.get(key)
        if found is None:
            if not in_slot(msisdn, key):
                raise ValueError(f"key {key!r} is not in the slot of {slot_tag(msisdn)}")
            keys.append(key)
            found = index[key] = len(keys)
        return found

    p: dict[str, Any] = {"now": now, "ts": f"{now:.3f}", "maxlen": AUDIT_MAXLEN, "lease_until": lease_until}
    if change.mo is not None:
        p["mo"] = change.mo.ttl_s
        if change.mo.again:
            p["again"] = True
        p["lease_now"], p["grace"] = lease_now, grace_s
        if replay:
            p["replay"] = True
    step = change.dialogue
    if step is not None:
        if step.expect is not None:
            p["expect"] = step.expect
        p["dialogue"] = {"version": step.version, "ttl_ms": max(1, int(step.ttl_s * 1000))}
        if step.state is not None:
            p["dialogue"]["write"] = step.state
    if change.must_exist:
        p["must_exist"] = True
    if change.create_profile:
        p["create"] = [created_field, f"{now:.0f}"]
    if change.checks:
        p["checks"] = [[c.kind.value, at(c.key), c.field, str(c.value), c.code] for c in change.checks]
    if change.guards:
        p["tag"] = tag
        p["guards"] = [[at(rate_key(msisdn, g.name)), g.cooldown_s, g.per_hour] for g in change.guards]
    if change.writes:
        p["writes"] = [[w.op.value, at(w.key), w.field, w.value if w.op is WriteOp.HINCR else str(w.value), w.ttl_s]
                       for w in change.writes]
    if sealed:
        p["mts"] = sealed
        if index_key:
            keys.append(index_key)
            p["index"] = [len(keys), *(pair_member(msisdn, m[0]) for m in sealed)]
    if change.audit:
        p["audit"] = [attributed(msisdn, a).packed(now) for a in change.audit]
    if change.refusal is not None:
        refusal = attributed(msisdn, change.refusal)
        p["refusal"] = [clean(refusal.event), clean(refusal.channel), clean(refusal.detail)]
    if change.read_profile:
        p["read"] = True
    if gate:
        p["gate"] = gate
    if change.unless_blocked_on:
        p["unblocked"] = [block_field, change.unless_blocked_on]
    return keys, orjson.dumps(p)  # UTF-8 JSON, as Lua's cjson reads it; several times json.dumps' speed
