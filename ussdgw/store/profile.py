"""The subscriber's profile (`sub:{m}`), typed, and every change to its fields.

Handlers read a `Profile` and change it only through the functions here, each a `Change` to
combine with a reply or an audit event: the field names live in this module and nowhere else.
One field set is written in one place: a newly issued password (`new_password`) by the SMS
handler, the USSD menu, N2's common password and recovery alike.

Stored compactly, because there is one hash per subscriber and an operator has tens of millions:
the store's code names fields as listed below, Redis holds them under the short names of `STORED`
(`Store.commit` translates every change, `Subscribers` every read), empty values are not stored,
and a password hash is packed to 64 bytes (`_pack_secret`), so every value stays within
`hash-max-listpack-value` (64) and Redis keeps the hash as one listpack (ziplist before 7.0)
instead of a hash table: ~0.25 KB a seeded subscriber instead of ~1.1 KB.

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
import base64
import binascii
import dataclasses
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from ussdgw.store.acting import attributed
from ussdgw.store.commit import Change, Check, CheckKind, Write, WriteOp
from ussdgw.store.errors import guarded
from ussdgw.store.keys import AUDIT_MAXLEN, IMPORT_TTL_S, audit_key, import_key, sub_key
from ussdgw.store.model import AuditEvent

if TYPE_CHECKING:
    from ussdgw.store.core import Store

SERVICE_PREFIX = "svc:"
_STORED_SERVICE_PREFIX = "s:"

STORED: Mapping[str, str] = {
    "owner_id": "oi", "owner_name": "on", "passport": "pp", "contract": "ct", "region": "rg", "corporate": "co",
    "email": "em", "balance_kop": "b", "bonus_points": "bp", "tariff": "t", "tariff_since": "tt",
    "autopay_amount_kop": "aa", "autopay_threshold_kop": "at", "pw_hash": "ph", "pw_failures": "pf",
    "locked": "lk", "pw_issued_at": "pi", "pw_changed_at": "pc", "last_signin": "ls", "code_word_hash": "cw",
    "auth_epoch": "ae", "blocked_from": "bf", "owner_since": "os", "created_at": "ca", "import_tag": "im",
    "code_word_set_at": "cs",
    "sms_archive_digest": "sd", "sms_archive_expires": "se", "n2_state": "ns", "n2_numbers": "nn",
    "n2_app": "na", "n2_applied_at": "nt", "n2_due_at": "nd", "n2_reviewed_at": "nr", "n2_reason": "nx",
    "n2_group": "ng",
}
"""Each profile field's name in Redis. A field not listed here is stored under its own name."""

_LOGICAL = {short: name for name, short in STORED.items()}
_SECRETS = frozenset({"pw_hash", "code_word_hash"})
_FLAGS = frozenset({"corporate", "locked"})  # "0" is their default: not stored
_PACKED_PREFIX = "scrypt$16384$8$1$"  # sms_codes' parameters: N=2^14, r=8, p=1
_PACKED_SHAPE = re.compile(r"[A-Za-z0-9_-]{64}")
_ESCAPE = "="


def _pack_secret(value: str) -> str:
    """The scrypt string `sms_codes` makes for its own parameters (16-byte salt, 32-byte key) in
    64 bytes instead of 86: salt and key in URL-safe base64, nothing else. Any other string is kept
    as it is, behind a "=" when it could be taken for a packed one or starts with "="."""
    if value.startswith(_PACKED_PREFIX):
        salt_b64, _, key_b64 = value.removeprefix(_PACKED_PREFIX).partition("$")
        if len(salt_b64) == 24 and len(key_b64) == 44:
            try:
                salt, key = base64.b64decode(salt_b64, validate=True), base64.b64decode(key_b64, validate=True)
            except (ValueError, binascii.Error):
                salt = key = b""
            if len(salt) == 16 and len(key) == 32 and _b64(salt) == salt_b64 and _b64(key) == key_b64:
                return base64.urlsafe_b64encode(salt + key).decode()
    if value.startswith(_ESCAPE) or _PACKED_SHAPE.fullmatch(value):
        return _ESCAPE + value
    return value


def _unpack_secret(value: str) -> str:
    if value.startswith(_ESCAPE):
        return value[1:]
    if not _PACKED_SHAPE.fullmatch(value):
        return value
    raw = base64.urlsafe_b64decode(value)
    return f"{_PACKED_PREFIX}{_b64(raw[:16])}${_b64(raw[16:])}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stored_name(field: str) -> str:
    """`field`'s name in Redis."""
    if field.startswith(SERVICE_PREFIX):
        return _STORED_SERVICE_PREFIX + field.removeprefix(SERVICE_PREFIX)
    return STORED.get(field, field)


def stored_value(field: str, value: str | int) -> str | int:
    """`field`'s value as Redis keeps it (a password hash packed)."""
    return _pack_secret(value) if field in _SECRETS and isinstance(value, str) else value


def logical_fields(raw: Mapping[bytes, bytes] | Mapping[str, str]) -> dict[str, str]:
    """The profile hash as Redis returned it, under the names and values the code uses."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        if name.startswith(_STORED_SERVICE_PREFIX):
            name = SERVICE_PREFIX + name.removeprefix(_STORED_SERVICE_PREFIX)
        else:
            name = _LOGICAL.get(name, name)
        out[name] = _unpack_secret(text) if name in _SECRETS else text
    return out


def stored_change(msisdn: str, change: Change) -> Change:
    """`change` with every check and write on `msisdn`'s profile in the names and values Redis keeps
    (`Store.commit` sends nothing else)."""
    if not change.checks and not change.writes:  # a USSD screen, an MO's reply: nothing to rename
        return change
    key = sub_key(msisdn)
    if not any(c.key == key for c in change.checks) and not any(w.key == key for w in change.writes):
        return change
    checks = tuple(dataclasses.replace(c, field=stored_name(c.field), value=stored_value(c.field, c.value))
                   if c.key == key and c.field else c for c in change.checks)
    writes = tuple(dataclasses.replace(w, field=stored_name(w.field), value=stored_value(w.field, w.value))
                   if w.key == key and w.field else w for w in change.writes)
    return dataclasses.replace(change, checks=checks, writes=writes)


def stored_pairs(fields: Mapping[str, str | int]) -> tuple[list[str], list[str]]:
    """(flat name/value pairs to set, names to delete) for a whole profile written from outside."""
    pairs: list[str] = []
    dropped: list[str] = []
    for name, value in fields.items():
        text = value if isinstance(value, str) else str(value)
        short = STORED.get(name) or stored_name(name)
        if text == "" or (text == "0" and name in _FLAGS):
            dropped.append(short)
        else:
            pairs += (short, _pack_secret(text) if name in _SECRETS else text)
    return pairs, dropped


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
    def from_stored(cls, msisdn: str, raw: Mapping[bytes, bytes] | Mapping[str, str]) -> Profile:
        """The profile from the hash as Redis returned it."""
        return cls.from_fields(msisdn, logical_fields(raw))

    @classmethod
    def from_flat(cls, msisdn: str, flat: Sequence[bytes]) -> Profile:
        """The profile from the hash as a read returned it, flat (field, value, ...). The same stored
        hash always makes the same (immutable) profile, and the steps of a USSD dialogue read an
        unchanged one again and again: each distinct one is parsed once (the stored content is the
        key, so a changed profile is a new entry, never a stale one)."""
        return _profile_of(msisdn, tuple(flat))

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


PARSED_PROFILES_KEPT = 4096


@functools.lru_cache(maxsize=PARSED_PROFILES_KEPT)
def _profile_of(msisdn: str, flat: tuple[bytes, ...]) -> Profile:
    return Profile.from_stored(msisdn, dict(zip(flat[::2], flat[1::2], strict=True)))


def block_day(raw: bytes | str | None) -> date | None:
    """The N3 block day as Redis keeps it (ISO), or None: none set, or unreadable."""
    if not raw:
        return None
    try:
        return date.fromisoformat(raw.decode() if isinstance(raw, bytes) else raw)
    except ValueError:
        return None


class Subscribers:
    """Reads of profiles, and the writes that are not a `Change` (seeding, the P4 counter)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def fields(self, msisdn: str) -> dict[str, str]:
        """The profile hash under the code's field names ({} for an MSISDN never seen). Through the
        store's auto-pipeline: handlers read it on the hot path (a USSD menu step), beside other MOs'
        commands."""
        raw = await guarded(self._store.pipeline.command("HGETALL", sub_key(msisdn)))
        if isinstance(raw, dict):  # a map when the connection speaks RESP3
            return logical_fields(raw)
        return logical_fields({raw[i]: raw[i + 1] for i in range(0, len(raw), 2)})

    async def profile(self, msisdn: str) -> Profile:
        return Profile.from_fields(msisdn, await self.fields(msisdn))

    async def blocked_from(self, msisdn: str) -> date | None:
        """N3: the day the number's block starts (None: no block), one field read (the MO and MT gates)."""
        return block_day(await guarded(self._store.pipeline.command("HGET", sub_key(msisdn), STORED["blocked_from"])))

    async def profiles(self, *msisdns: str) -> list[Profile]:
        return list(await asyncio.gather(*(self.profile(m) for m in msisdns)))

    async def put(self, msisdn: str, fields: Mapping[str, str | int], audit: AuditEvent) -> None:
        """Create or overwrite profile fields (an empty value deletes one), audited, in one step
        (admin tools, tests)."""
        await self._store.scripts.run("profile_put", *_put_call(msisdn, fields, audit.fields(self._store.clock.now())))

    async def put_many(self, rows: Sequence[tuple[str, Mapping[str, str | int]]], audit: AuditEvent,
                       import_tag: str) -> int:
        """`put` for many profiles in one batch (the bulk import), each left alone when `import_tag`
        wrote it before (a resumed import writes each once); how many were written now."""
        entry = audit.fields(self._store.clock.now())
        submit = self._store.scripts.submit
        done = await guarded(asyncio.gather(*(submit("profile_put", *_put_call(m, f, entry, import_tag))
                                              for m, f in rows)))
        return sum(int(d) for d in done)

    async def imported(self, import_tag: str) -> int:
        """How many leading entries of the import `import_tag` are in (0 for one never started)."""
        return int(await guarded(self._store.redis.get(import_key(import_tag))) or 0)

    async def import_advanced(self, import_tag: str, done: int) -> None:
        """The first `done` entries of the import are in: a resumed run starts after them."""
        await guarded(self._store.redis.set(import_key(import_tag), done, ex=IMPORT_TTL_S))

    async def wrong_password(self, msisdn: str, pw_hash: str, max_failures: int,
                             audit: AuditEvent) -> tuple[int, bool] | None:
        """P4: count a wrong password tried against `pw_hash`; (failures in a row, locked now), or
        None when the password changed meanwhile (then nothing is counted)."""
        names = [STORED[f] for f in ("pw_hash", "pw_failures", "locked")]
        raw = await self._store.scripts.run(
            "signin_failed", [sub_key(msisdn), audit_key(msisdn)],
            [stored_value("pw_hash", pw_hash), max_failures, AUDIT_MAXLEN, *names,
             *attributed(msisdn, audit).fields(self._store.clock.now())])
        if raw[0] == b"stale":
            return None
        return int(raw[1]), raw[2] == b"1"


def _put_call(msisdn: str, fields: Mapping[str, str | int], audit_fields: list[str],
              import_tag: str = "") -> tuple[list[str], list[str | int]]:
    """The keys and arguments of `lua/profile_put.lua` for one profile."""
    pairs, dropped = stored_pairs(fields)
    if import_tag:
        pairs += (STORED["import_tag"], import_tag)
    args: list[str | int] = [AUDIT_MAXLEN, STORED["import_tag"], import_tag, len(pairs), *pairs, len(dropped),
                             *dropped, *audit_fields]
    return [sub_key(msisdn), audit_key(msisdn)], args


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
