"""Who may act on which number: the one access model, asked by every channel.

A number is acted on through a *grant*, and every grant names its origin, so it can be revoked:

- `own`: the number's SIM (SMS, USSD) or a session signed in as it (its password, P6). Given by
  the password or the network; ends with a password change or reset and with an owner change.
- `n1`: a session of a number it was linked to («Мои номера»). Given by showing its password
  once (N1); ends when either side revokes it or either number changes owner.
- `n2`: a session of a number joined with it in one account. Given by the N2 review (one owner
  checked); ends when the option is switched off or a member is sold and the rest no longer qualify.

What each origin may do (`Act`):

| act      | what                                                                  | own | n1                 | n2  |
|----------|-----------------------------------------------------------------------|-----|--------------------|-----|
| `view`   | account, balance, services, calls (the present owner's only), audit   | yes | yes                | yes |
| `manage` | top-up, tariff, services, payments, gifts, block and unblock, unlink   | yes | yes                | yes |
| `owner`  | owner change (N4), code word, e-mail, who is linked to it, N2 apply    | yes | same owner only    | yes |
| `self`   | its own password (P7), linking numbers into its own account            | yes | no                 | no  |

A blocked number (N3, from its date on) acts on nothing: its MOs get one refusal (`refuse_blocked_mo`),
nothing else is delivered to it (`mt_withheld`), nobody signs in as it and its sessions end
(`handlers.account`); it stays a target, so its owner unblocks it from a linked or joined number's
session (or support does), never from the blocked SIM.

The N1 grant is two ends in two slots (`ussdgw.store.grants`): it holds only while both are there.
An N2 membership holds only while the member names the group, the group's head lists the member,
the group is active and both have one owner. So a crash between two writes, or a sale that only
reached one slot, never leaves a grant standing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from handlers.base import Channel, Context, InboundMessage, UssdStep
from handlers.ports import Platform
from handlers.ussd import timeouts_of
from sms_codes import OPERATOR_TZ
from ussdgw.logs import get_logger
from ussdgw.smpp.ussd import MoKind, UssdDialogue, classify_op
from ussdgw.store import AuditEvent, Change, CommitResult, OutboundMessage, Store, new_mt_id
from ussdgw.store.grants import Grants
from ussdgw.store.profile import block_day

log = get_logger("ussdgw.handlers.access")

BLOCKED_TEXT = ("Номер заблокирован по заявке владельца: SMS, USSD и вход в Личный кабинет недоступны. "
                "Снять блокировку можно из Личного кабинета другого номера владельца или через поддержку.")
BLOCKED_USSD = "Номер заблокирован владельцем: услуги недоступны."  # one screen, closes the dialogue


class Origin(StrEnum):
    OWN = "own"
    LINKED = "n1"
    JOINED = "n2"


class Act(StrEnum):
    VIEW = "view"
    MANAGE = "manage"
    OWNER = "owner"
    SELF = "self"


ALLOWED: dict[Origin, frozenset[Act]] = {
    Origin.OWN: frozenset(Act),
    Origin.LINKED: frozenset({Act.VIEW, Act.MANAGE}),  # + OWNER when the same person owns both
    Origin.JOINED: frozenset({Act.VIEW, Act.MANAGE, Act.OWNER}),
}


@dataclass(frozen=True, slots=True)
class Grant:
    actor: str
    target: str
    origin: Origin


@dataclass(frozen=True, slots=True)
class Denied:
    code: str
    text: str


_current_day: tuple[float, float, date] = (0.0, 0.0, date.min)  # [start, end) of the day last asked for


def today(now: float) -> date:
    """The operator's calendar day at `now` (asked once per MO: the day's bounds are kept)."""
    global _current_day
    start, end, day = _current_day
    if start <= now < end:
        return day
    day = datetime.fromtimestamp(now, OPERATOR_TZ).date()
    start = datetime.combine(day, time(), OPERATOR_TZ).timestamp()
    end = datetime.combine(day + timedelta(days=1), time(), OPERATOR_TZ).timestamp()
    _current_day = (start, end, day)
    return day


def blocked_on(since: date | None, now: float) -> bool:
    """N3: a block takes effect on its date (the operator's calendar)."""
    return since is not None and since <= today(now)


async def is_blocked(store: Store, msisdn: str, now: float) -> bool:
    return blocked_on(await store.subscribers.blocked_from(msisdn), now)


async def joined_numbers(store: Store, msisdn: str) -> list[str]:
    """The other members of `msisdn`'s active N2 account, each verified from both ends (it names
    the group, the head lists it, one owner), in the group's order; [] outside an active one."""
    profile = await store.subscribers.profile(msisdn)
    group = profile.n2.group
    if not group:
        return []
    head = profile if group == msisdn else await store.subscribers.profile(group)
    members = head.n2.numbers
    owner = profile.owner_id
    if head.n2.state != "active" or msisdn not in members or not owner or head.owner_id != owner:
        return []
    others = [m for m in members if m != msisdn]
    profiles = await store.subscribers.profiles(*others)
    return [m for m, p in zip(others, profiles, strict=True) if p.owner_id == owner and p.n2.group == group]


async def grant_of(store: Store, actor: str, target: str) -> Grant | None:
    """Why `actor` may act on `target` at all (own number first, then N1, then N2), or None."""
    if actor == target:
        return Grant(actor, target, Origin.OWN)
    if await Grants(store).holds(actor, target):
        return Grant(actor, target, Origin.LINKED)
    if target in await joined_numbers(store, actor):
        return Grant(actor, target, Origin.JOINED)
    return None


async def authorize(store: Store, actor: str, target: str, act: Act) -> Grant | Denied:
    """May `actor` (a signed-in number) do `act` on `target`? The one check every channel makes."""
    found = await grant_of(store, actor, target)
    if found is None:
        return Denied("forbidden", f"Нет доступа к номеру {target}. Добавьте его в «Мои номера» с паролем "
                      "этого номера или объедините номера услугой «Управление номерами».")
    if act in ALLOWED[found.origin]:
        return found
    if act is Act.OWNER and found.origin is Origin.LINKED:
        mine, theirs = await store.subscribers.profiles(actor, target)
        if mine.owner_id and mine.owner_id == theirs.owner_id:
            return found
        return Denied("forbidden", f"Это может сделать только владелец номера {target}: войдите с его паролем.")
    return Denied("forbidden", f"Это делается только в кабинете самого номера {target}.")


# ---- N3: the blocked SIM gets nothing but one refusal --------------------------------------------
async def refuse_blocked_mo(message: InboundMessage, platform: Platform) -> CommitResult | None:
    """The answer to an MO from a blocked number: one refusal (SMS, or a closing USSD screen),
    audited, once per MO; None when the number is not blocked (or the MO needs no answer)."""
    blocked_from = await platform.store.subscribers.blocked_from(message.msisdn)
    return await refuse_if_blocked(message, platform, blocked_from)


async def refuse_if_blocked(message: InboundMessage, platform: Platform,
                            blocked_from: date | None) -> CommitResult | None:
    """`refuse_blocked_mo` with the number's block day read already (a USSD step reads it with its
    dialogue, in one round trip)."""
    if not blocked_on(blocked_from, platform.now()):
        return None
    return await refuse_blocked(message, platform)


async def refuse_blocked(message: InboundMessage, platform: Platform) -> CommitResult | None:
    """The refusal of an MO from a number known to be blocked (its commit found it so, or a read
    did); None for what needs no answer (a USSD abort or notice acknowledgement)."""
    store, now = platform.store, platform.now()
    refused = AuditEvent("mo_refused", message.channel, outcome="blocked", detail=f"to={message.short_code}")
    if message.channel is Channel.USSD:
        kind = classify_op(message.ussd_service_op, message.its_session_info)
        if kind in (MoKind.ABORT, MoKind.NOTICE_ACK):
            return None  # nothing is shown for these: the USSD code handles them as ever
        dialogue = UssdDialogue.dial(message.msisdn, "", now, message.its_session_info)
        ctx = Context(platform, message, ussd=UssdStep(dialogue, timeouts_of(platform.settings)))
        result = await ctx.end(BLOCKED_USSD, audit=[refused])
    else:
        reply = OutboundMessage(mt_id=new_mt_id(), source=message.short_code, destination=message.msisdn,
                                text=BLOCKED_TEXT, reaches_blocked=True)
        result = await store.commit(message.msisdn, message.once() + Change(
            messages=(reply,), create_profile=True,
            audit=(AuditEvent("mo_received", message.channel, detail=f"to={message.short_code}"), refused)))
    log.info("mo_refused_blocked", msisdn=message.msisdn, to=message.short_code)
    return result


async def mt_withheld(store: Store, mt: OutboundMessage, now: float) -> bool:
    """An SMS for a blocked number is not delivered (but the refusal of its own MO). USSD screens
    answer an MO that already passed the gate, so they are not read again."""
    if mt.ussd_service_op is not None or mt.reaches_blocked:
        return False
    return await is_blocked(store, mt.destination, now)


def cleared_to_send(result: CommitResult, now: float) -> bool:
    """Did the commit that queued `result.messages` see their number not blocked (N3)? Then their
    first send, right after it, needs no second read (`mt_withheld`); a later send (recovery, a
    redelivered MO's MTs) reads again."""
    return result.blocked_from is not None and not blocked_on(block_day(result.blocked_from), now)
