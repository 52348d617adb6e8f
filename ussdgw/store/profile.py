"""The subscriber's profile (`sub:{m}`), typed, and every change to its fields.

Handlers read a `Profile` and change it only through the functions here, each a `Change` to
combine with a reply or an audit event: the field names live in this module and nowhere else.
One field set is written in one place: a newly issued password (`new_password`) by the SMS
handler, the USSD menu, N2's common password and recovery alike.

    owner_id, owner_name, passport, contract, region, corporate, email   who owns the number
    balance_kop, bonus_points, tariff, tariff_since                      money (`ussdgw.store.money`)
    svc:<id>, autopay_amount_kop, autopay_threshold_kop                  M4 services
    pw_hash, pw_failures, locked, pw_issued_at, pw_changed_at, last_signin, code_word_hash, auth_epoch
    blocked_from, owner_since, created_at
    sms_archive_digest, sms_archive_expires                              A1
    n2_state, n2_numbers, n2_app, n2_applied_at, n2_due_at, n2_reviewed_at, n2_reason, n2_group   N2
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from ussdgw.store.acting import attributed
from ussdgw.store.commit import Change, Check, CheckKind, Write, WriteOp
from ussdgw.store.errors import guarded
from ussdgw.store.keys import AUDIT_MAXLEN, audit_key, sub_key
from ussdgw.store.model import AuditEvent

if TYPE_CHECKING:
    from ussdgw.store.core import Store

SERVICE_PREFIX = "svc:"


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _float(value: str | None) -> float:
    try:
        return float(value or 0)
    except ValueError:
        return 0.0


@dataclass(frozen=True, slots=True)
class N2Application:
    """N2 "Управление номерами" as the applicant's profile holds it (a joined number: `group`)."""

    state: str = ""  # "" | pending | active | rejected | off
    numbers: tuple[str, ...] = ()  # the applicant first
    app_id: str = ""
    reason: str = ""
    group: str = ""  # on a joined number: the applicant's MSISDN


@dataclass(frozen=True, slots=True)
class Profile:
    """A subscriber's profile. An MSISDN never seen has an empty one (`exists` False): P3, its
    account exists all the same."""

    msisdn: str
    exists: bool = False
    owner_id: str = ""
    owner_name: str = ""
    passport: str = ""
    contract: str = ""
    region: str = ""
    corporate: bool = False
    email: str = ""
    balance_kop: int = 0
    bonus_points: int = 0
    tariff: str = ""
    services: frozenset[str] = frozenset()
    autopay_amount_kop: int = 0
    autopay_threshold_kop: int = 0
    pw_hash: str = ""
    pw_failures: int = 0
    locked: bool = False
    code_word_hash: str = ""
    auth_epoch: str = "0"
    blocked_from: date | None = None
    owner_since: float = 0.0  # when the present owner took the number (N4); 0: since it was seeded
    sms_archive_digest: str = ""
    sms_archive_expires: float = 0.0
    n2: N2Application = N2Application()

    @classmethod
    def from_fields(cls, msisdn: str, fields: Mapping[str, str]) -> Profile:
        get = fields.get
        blocked = get("blocked_from")
        return cls(
            msisdn=msisdn, exists=bool(fields), owner_id=get("owner_id", ""), owner_name=get("owner_name", ""),
            passport=get("passport", ""), contract=get("contract", ""), region=get("region", ""),
            corporate=get("corporate", "0") == "1", email=get("email", ""),
            balance_kop=_int(get("balance_kop")), bonus_points=_int(get("bonus_points")), tariff=get("tariff", ""),
            services=frozenset(k.removeprefix(SERVICE_PREFIX) for k in fields if k.startswith(SERVICE_PREFIX)),
            autopay_amount_kop=_int(get("autopay_amount_kop")),
            autopay_threshold_kop=_int(get("autopay_threshold_kop")),
            pw_hash=get("pw_hash", ""), pw_failures=_int(get("pw_failures")), locked=get("locked") == "1",
            code_word_hash=get("code_word_hash", ""), auth_epoch=get("auth_epoch", "0"),
            blocked_from=date.fromisoformat(blocked) if blocked else None, owner_since=_float(get("owner_since")),
            sms_archive_digest=get("sms_archive_digest", ""), sms_archive_expires=_float(get("sms_archive_expires")),
            n2=N2Application(state=get("n2_state", ""),
                             numbers=tuple(n for n in get("n2_numbers", "").split(",") if n),
                             app_id=get("n2_app", ""), reason=get("n2_reason", ""), group=get("n2_group", "")),
        )

    def has_service(self, service_id: str) -> bool:
        return service_id in self.services


class Subscribers:
    """Reads of profiles, and the writes that are not a `Change` (seeding, the P4 counter)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def fields(self, msisdn: str) -> dict[str, str]:
        """The profile hash as stored ({} for an MSISDN never seen). Through the store's auto-pipeline:
        handlers read it on the hot path (a USSD menu step), beside other MOs' commands."""
        raw = await guarded(self._store.pipeline.command("HGETALL", sub_key(msisdn)))
        if isinstance(raw, dict):  # a map when the connection speaks RESP3
            return {k.decode(): v.decode() for k, v in raw.items()}
        return {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}

    async def profile(self, msisdn: str) -> Profile:
        return Profile.from_fields(msisdn, await self.fields(msisdn))

    async def blocked_from(self, msisdn: str) -> date | None:
        """N3: the day the number's block starts (None: no block), one field read (the MO and MT gates)."""
        raw = await guarded(self._store.pipeline.command("HGET", sub_key(msisdn), "blocked_from"))
        try:
            return date.fromisoformat(raw.decode()) if raw else None
        except ValueError:
            return None

    async def profiles(self, *msisdns: str) -> list[Profile]:
        return list(await asyncio.gather(*(self.profile(m) for m in msisdns)))

    async def put(self, msisdn: str, fields: Mapping[str, str | int], audit: AuditEvent) -> None:
        """Create or overwrite profile fields, audited (seeding, admin tools)."""
        now = self._store.clock.now()
        async with self._store.redis.pipeline(transaction=True) as pipe:
            pipe.hset(sub_key(msisdn), mapping={k: str(v) for k, v in fields.items()})
            pipe.execute_command("XADD", audit_key(msisdn), "MAXLEN", "~", AUDIT_MAXLEN, "*", *audit.fields(now))
            await guarded(pipe.execute())

    async def wrong_password(self, msisdn: str, pw_hash: str, max_failures: int,
                             audit: AuditEvent) -> tuple[int, bool] | None:
        """P4: count a wrong password tried against `pw_hash`; (failures in a row, locked now), or
        None when the password changed meanwhile (then nothing is counted)."""
        raw = await self._store.scripts.run(
            "signin_failed", [sub_key(msisdn), audit_key(msisdn)],
            [pw_hash, max_failures, AUDIT_MAXLEN, *attributed(msisdn, audit).fields(self._store.clock.now())])
        if raw[0] == b"stale":
            return None
        return int(raw[1]), raw[2] == b"1"


def _set(msisdn: str, **fields: str | int) -> tuple[Write, ...]:
    return tuple(Write(WriteOp.HSET, sub_key(msisdn), name, value) for name, value in fields.items())


def _check(kind: CheckKind, msisdn: str, field: str, value: str | int = "", code: str = "conflict") -> Check:
    return Check(kind, sub_key(msisdn), field, value, code)


# ---- passwords and sign-in (P1, P4-P9) -------------------------------------------------------------
def sessions_ended(msisdn: str) -> Change:
    """Every P5 session of the number ends (each carries the `auth_epoch` it was opened under)."""
    return Change(writes=(Write(WriteOp.HINCR, sub_key(msisdn), "auth_epoch", 1),))


def new_password(msisdn: str, pw_hash: str, at: float) -> Change:
    """A newly issued password (R1, R2, N2's common one, P8, P9): it replaces the old one, lifts
    the P4 lock and the wrong-password count, and ends the number's sessions. The one place this
    field set is written."""
    return Change(writes=_set(msisdn, pw_hash=pw_hash, pw_failures=0, locked=0, pw_issued_at=int(at))) \
        + sessions_ended(msisdn)


def password_changed(msisdn: str, old_hash: str, new_hash: str, at: float) -> Change:
    """P7: the subscriber's own new password, if the old one is still the one checked."""
    return Change(checks=(_check(CheckKind.EQ, msisdn, "pw_hash", old_hash),),
                  writes=_set(msisdn, pw_hash=new_hash, pw_failures=0, pw_changed_at=int(at))) + sessions_ended(msisdn)


def password_cleared(msisdn: str) -> Change:
    """No password until a new one is issued (N2 joining resets the joined numbers')."""
    return Change(writes=(Write(WriteOp.HDEL, sub_key(msisdn), "pw_hash"),)) + sessions_ended(msisdn)


def signed_in(msisdn: str, pw_hash: str, at: float) -> Change:
    """P4: a right password ends the run of wrong ones; refused (`conflict` / `locked`) when the
    password changed or the lock came meanwhile."""
    return Change(checks=(_check(CheckKind.EQ, msisdn, "pw_hash", pw_hash),
                          _check(CheckKind.NE, msisdn, "locked", "1", "locked")),
                  writes=_set(msisdn, pw_failures=0, last_signin=int(at)))


def signed_in_by_network(msisdn: str, at: float) -> Change:
    """P6: no password involved; P3: the account exists from the first contact."""
    return Change(writes=_set(msisdn, last_signin=int(at)), create_profile=True)


def failures_reset(msisdn: str) -> Change:
    """The wrong-password count starts again (the password was just shown right, N1)."""
    return Change(writes=_set(msisdn, pw_failures=0))


# ---- N3 block, N4 owner ---------------------------------------------------------------------------
def blocked(msisdn: str, since: date) -> Change:
    """N3: blocked from `since`; refused (`conflict`) when a block is already set."""
    return Change(checks=(_check(CheckKind.ABSENT, msisdn, "blocked_from"),),
                  writes=_set(msisdn, blocked_from=since.isoformat()))


def unblocked(msisdn: str) -> Change:
    return Change(checks=(_check(CheckKind.EXISTS, msisdn, "blocked_from"),),
                  writes=(Write(WriteOp.HDEL, sub_key(msisdn), "blocked_from"),))


def owner_changed(msisdn: str, old: Profile, new: Profile, contract: str, at: float) -> Change:
    """N4: `new`'s owner takes the number of `old`'s: owner data and e-mail from `new`, a new
    contract, no password or code word, old sessions ended (`auth_epoch`). Refused with `conflict`
    if the owner changed meanwhile, `debt` if the balance went negative."""
    return Change(
        checks=(_check(CheckKind.EQ, msisdn, "owner_id", old.owner_id),
                _check(CheckKind.GTE, msisdn, "balance_kop", 0, "debt")),
        writes=(*_set(msisdn, owner_id=new.owner_id, owner_name=new.owner_name, passport=new.passport,
                      contract=contract, corporate=int(new.corporate), owner_since=int(at),
                      email=new.email),  # the old owner's address gets nothing any more
                Write(WriteOp.HINCR, sub_key(msisdn), "auth_epoch", 1),
                Write(WriteOp.HDEL, sub_key(msisdn), "pw_hash"),
                Write(WriteOp.HDEL, sub_key(msisdn), "code_word_hash"),
                # no N2 account, application or membership passes with the number
                *(Write(WriteOp.HDEL, sub_key(msisdn), name) for name in N2_FIELDS)),
    )


def code_word_set(msisdn: str, code_word_hash: str, at: float) -> Change:
    """P8: the owner's code word (a new owner sets her own after N4)."""
    return Change(writes=_set(msisdn, code_word_hash=code_word_hash, code_word_set_at=int(at)))


def email_set(msisdn: str, email: str) -> Change:
    """Where e-mail for the number goes (P8 recovery by e-mail, call detail)."""
    return Change(writes=_set(msisdn, email=email))


# ---- A1: the SMS archive code ---------------------------------------------------------------------
def sms_archive_code(msisdn: str, digest: str, expires: float) -> Change:
    return Change(writes=_set(msisdn, sms_archive_digest=digest, sms_archive_expires=int(expires)))


def sms_archive_opened(msisdn: str, digest: str) -> Change:
    """The code is used up: refused (`conflict`) when it is not `digest` any more."""
    key = sub_key(msisdn)
    return Change(checks=(_check(CheckKind.EQ, msisdn, "sms_archive_digest", digest),),
                  writes=(Write(WriteOp.HDEL, key, "sms_archive_digest"),
                          Write(WriteOp.HDEL, key, "sms_archive_expires")))


# ---- N2 "Управление номерами" ---------------------------------------------------------------------
def n2_applied(msisdn: str, numbers: list[str], app_id: str, at: float, due: float) -> Change:
    return Change(writes=_set(msisdn, n2_state="pending", n2_numbers=",".join(numbers), n2_app=app_id,
                              n2_applied_at=int(at), n2_due_at=int(due), n2_reason=""))


def n2_off(msisdn: str) -> Change:
    return Change(writes=_set(msisdn, n2_state="off", n2_reason=""))


def n2_reviewed(msisdn: str, *, app_id: str, active: bool, reason: str, at: float) -> Change:
    """The verdict on application `app_id`; refused (`conflict`) when it is not pending any more
    (withdrawn, or the number changed owner since)."""
    return Change(checks=(_check(CheckKind.EQ, msisdn, "n2_app", app_id),
                          _check(CheckKind.EQ, msisdn, "n2_state", "pending")),
                  writes=_set(msisdn, n2_state="active" if active else "rejected", n2_reason=reason,
                              n2_reviewed_at=int(at)))


N2_FIELDS = ("n2_state", "n2_numbers", "n2_app", "n2_applied_at", "n2_due_at", "n2_reviewed_at", "n2_reason",
             "n2_group")


def n2_left(msisdn: str, group: str) -> Change:
    """The number leaves `group`'s account (nothing happens if it is in another one by now)."""
    return Change(checks=(_check(CheckKind.EQ, msisdn, "n2_group", group),),
                  writes=(Write(WriteOp.HDEL, sub_key(msisdn), "n2_group"),))


def n2_members(head: str, numbers: list[str]) -> Change:
    """The numbers of `head`'s N2 account (the head first) after a member left."""
    return Change(writes=_set(head, n2_numbers=",".join(numbers)))


def n2_joined(msisdn: str, group: str, owner_id: str) -> Change:
    """A number joins `group`'s account; its password is reset (SPEC N2). Refused (`conflict`)
    when it is not `owner_id`'s any more (sold since the application was checked)."""
    return Change(checks=(_check(CheckKind.EQ, msisdn, "owner_id", owner_id),),
                  writes=_set(msisdn, n2_group=group)) + password_cleared(msisdn)
