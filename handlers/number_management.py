"""N2 "Управление номерами": R5 `*111*828*1#` applies, R6 `*111*828*2#` switches off, `*111*828#` tells the state.

The option joins a subscriber's numbers under one account. Rules (SPEC N2), checked when the
subscriber applies and again at the review:

- free (no balance check, M1);
- every number belongs to one owner (`owner_id`) and is registered in one region (`region`);
- not for corporate clients (`corporate`), neither the applicant nor a joined number.

The numbers are the applicant's own, the numbers dialled after it (`*111*828*1*79161234568#`)
and the numbers linked to the account ("Мои номера", N1: `store.numbers.linked`).

An application is `pending` until it is reviewed, `n2_review_delay_s` after it was made (the
SPEC allows 24 hours). `review_due` reviews what is due by the store's clock, the platform's one
clock (the gateway runs it every few seconds; the simulator's "advance time" moves that clock and
runs it): it re-checks the rules, sets `active` or `rejected` with the reason, and tells the
subscriber by SMS from 111. Joining resets the passwords of every joined number; the SMS asks for
a new common password, which `*111*828*3#` (or ПАРОЛЬ to 3339) sends.

The application is the applicant's `Profile.n2` (state pending | active | rejected | off, the
numbers with the applicant first, the application id, the reason); a joined number's `n2.group`
is the applicant's MSISDN. The store writes them (`ussdgw.store.profile.n2_*`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from handlers import access, d2
from handlers.base import Channel, Context
from handlers.operations import Result, fmt_time
from handlers.password import password_reply, spread_common
from handlers.ports import Platform
from sms_codes import generate_password
from ussdgw import russian
from ussdgw.config import Settings
from ussdgw.inputs import parse_msisdn
from ussdgw.logs import get_logger
from ussdgw.store import (
    MO_TTL_S,
    AuditEvent,
    Change,
    MoMark,
    OutboundMessage,
    Outcome,
    Profile,
    Store,
    StoreUnavailable,
    acting,
)
from ussdgw.store.grants import Grants
from ussdgw.store.profile import n2_applied, n2_joined, n2_left, n2_members, n2_off, n2_reviewed, new_password

log = get_logger("ussdgw.handlers.number_management")

OPTION = "«Управление номерами»"
NOTIFY_FROM = "111"
MAX_NUMBERS = 10
MIN_NUMBERS = 2

Sender = Callable[[OutboundMessage], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    text: str


async def group_of(store: Store, applicant: str, named: Sequence[str] = ()) -> list[str]:
    """The applicant first, then the named and the linked numbers (N1, both ends), each once."""
    linked = sorted(await store.numbers.linked(applicant))
    live = [n for n, ok in zip(linked, await Grants(store).granting_ends(applicant, linked), strict=True) if ok]
    numbers = [applicant]
    for number in [*named, *live]:
        if number not in numbers:
            numbers.append(number)
    return numbers


async def check_group(store: Store, numbers: Sequence[str]) -> Refusal | None:
    """The N2 conditions over `numbers` (the applicant first), or the first one that fails: at
    least two numbers, one owner, one region, none corporate, none in another N2 account."""
    applicant = numbers[0]
    profiles = await store.subscribers.profiles(*numbers)
    owner, region = profiles[0].owner_id, profiles[0].region
    if not owner or not region:
        return Refusal("unknown_owner", "нет данных о владельце номера, обратитесь в офис.")
    if len(numbers) > MAX_NUMBERS:
        return Refusal("too_many", f"можно объединить не больше {MAX_NUMBERS} номеров.")
    for number, profile in zip(numbers, profiles, strict=True):
        if profile.corporate:
            whose = "" if number == applicant else f" (номер {number})"
            return Refusal("corporate", f"услуга недоступна корпоративным клиентам{whose}.")
        if not profile.exists:
            return Refusal("unknown_number", f"номер {number} не обслуживается.")
        if profile.owner_id != owner:
            return Refusal("other_owner", f"номер {number} оформлен на другого владельца.")
        if profile.region != region:
            return Refusal("other_region", f"номер {number} зарегистрирован в другом регионе.")
        if profile.n2.group and profile.n2.group != applicant:
            return Refusal("other_group", f"номер {number} уже объединён с другими номерами.")
    if len(numbers) < MIN_NUMBERS:
        return Refusal("too_few", "нужно не меньше 2 номеров: *111*828*1*номер#")
    return None


async def account_of(store: Store, msisdn: str) -> Profile:
    """The profile that holds `msisdn`'s N2 state: the head's for a verified member, else its own."""
    profile = await store.subscribers.profile(msisdn)
    group = profile.n2.group
    if group and group != msisdn and await access.joined_numbers(store, msisdn):
        return await store.subscribers.profile(group)
    return profile


def short_state(profile: Profile) -> str:
    """One word or two for a menu header: не подключена, на рассмотрении, подключена, отклонена."""
    return {"pending": "заявка на рассмотрении", "active": "подключена",
            "rejected": "заявка отклонена"}.get(profile.n2.state, "не подключена")


def state_text(profile: Profile) -> str:
    state = profile.n2.state
    if state == "pending":
        return f"Заявка на услугу {OPTION} на рассмотрении, ответ придёт по SMS."
    if state == "active":
        return f"Услуга {OPTION} подключена: {russian.count(len(profile.n2.numbers), 'номер')}."
    if state == "rejected":
        return f"Заявка на услугу {OPTION} отклонена: {profile.n2.reason}"
    return f"Услуга {OPTION} не подключена. Подключить: *111*828*1#"


def state_view(profile: Profile) -> dict[str, object]:
    """The account's N2 state for the API."""
    return {"state": profile.n2.state or "off", "numbers": list(profile.n2.numbers),
            "head": profile.msisdn if profile.n2.state else None, "reason": profile.n2.reason}


# ---- the USSD handler: *111*828#, *111*828*1#, *111*828*2#, *111*828*3# ------------------------------
async def number_management(ctx: Context) -> None:
    command, *rest = ctx.ussd_step().args or ("",)
    if command == "1":
        named = [parse_msisdn(r) for r in rest]
        if None in named:
            await ctx.end("Неверный номер. Пример: *111*828*1*79161234568#",
                          audit=[AuditEvent("n2_apply", Channel.USSD, outcome="bad_number")])
            return
        await apply(ctx, [n for n in named if n is not None])
    elif command == "2" and not rest:
        await switch_off(ctx)
    elif command == "3" and not rest:
        await common_password(ctx)
    elif command == "" and not rest:
        account = await account_of(ctx.store, ctx.msisdn)
        await ctx.end(state_text(account), audit=[AuditEvent("n2_state_shown", Channel.USSD)])
    else:
        await ctx.end("*111*828*1# - подключить, *111*828*2# - отключить, *111*828# - состояние.",
                      audit=[AuditEvent("n2_unknown_command", Channel.USSD, outcome="help_sent")])


@dataclass(frozen=True, slots=True)
class Application:
    numbers: list[str]
    change: Change
    due: float
    text: str


async def prepare(store: Store, settings: Settings, msisdn: str, named: Sequence[str], *, now: float,
                  channel: str) -> Application | Refusal:
    """R5 or the API: the application for `msisdn` and `named` (and its linked numbers), checked now."""
    account = await account_of(store, msisdn)
    state = account.n2.state
    if state in ("pending", "active"):
        return Refusal(f"already_{state}", state_text(account))
    numbers = await group_of(store, msisdn, named)
    refusal = await check_group(store, numbers)
    if refusal is not None:
        log.info("n2_refused", msisdn=msisdn, reason=refusal.code)
        return refusal
    others = [n for n in numbers if n != msisdn]
    busy = await notices_refused(store, settings, msisdn, others, now=now)
    if busy is not None:
        return busy
    due = now + settings.n2_review_delay_s
    app_id = secrets.token_hex(6)
    caused = d2.by_sender(settings) * len(others)  # one entry for each notice the review will send
    return Application(numbers, n2_applied(msisdn, numbers, app_id, now, due) + Change(
        guards=caused, audit=(AuditEvent("n2_applied", channel, detail=f"app={app_id} numbers={len(numbers)}"),)),
        due,
        f"Заявка на услугу {OPTION} принята: {russian.count(len(numbers), 'номер')}. Ответ по SMS за 24 ч.")


async def apply(ctx: Context, named: Sequence[str] = ()) -> None:
    """R5: check the rules now, then leave the application pending for review."""
    prepared = await prepare(ctx.store, ctx.settings, ctx.msisdn, named, now=ctx.clock.now(), channel=Channel.USSD)
    if isinstance(prepared, Refusal):
        text = prepared.text if prepared.code.startswith("already_") else f"Отказ: {prepared.text}"
        await ctx.end(text, audit=[AuditEvent("n2_apply", Channel.USSD, outcome="refused", detail=prepared.code)])
        return
    await ctx.store.numbers.n2_due_at(ctx.msisdn, prepared.due)  # the review's entry before the application
    result = await ctx.end(prepared.text, change=prepared.change)
    if result.refused:  # the applicant's budget for SMS to others ran out meanwhile (a stray review entry is harmless)
        await ctx.end(f"Отказ: {sender_busy(ctx.settings, result.retry_at or ctx.clock.now())}",
                      audit=[AuditEvent("n2_apply", Channel.USSD, outcome="rate_limited")])
        return
    log.info("n2_applied", msisdn=ctx.msisdn, numbers=len(prepared.numbers), outcome=result.outcome)


async def notices_refused(store: Store, settings: Settings, applicant: str, others: Sequence[str], *,
                          now: float) -> Refusal | None:
    """D2: the review tells each joined number by SMS, which the applicant causes: her budget for SMS
    she causes (`d2:caused`) and each recipient's for SMS from others (`d2:others`), never anyone's
    own (`handlers.d2`). The recipients' are spent here, when the application causes the notices,
    the applicant's with the application; a refusal says whose budget is used up and until when."""
    if not others:
        return None
    busy = await d2.peek(store, applicant, d2.by_sender(settings))
    if busy is not None:
        return Refusal("rate_limited", sender_busy(settings, busy[2]))
    received = d2.to_recipient(settings, d2.Kind.N2_NOTICE)
    for other in others:
        busy = await d2.peek(store, other, received)
        if busy is not None:
            return Refusal("rate_limited", _recipient_busy(other, busy[2]))
    for other in others:
        spent = await store.commit(other, Change(guards=received))
        if spent.refused:
            return Refusal("rate_limited", _recipient_busy(other, spent.retry_at or now))
    return None


def sender_busy(settings: Settings, retry_at: float) -> str:
    return f"не более {settings.d2_caused_per_hour} SMS в час на другие номера. Повторите после {fmt_time(retry_at)}."


def _recipient_busy(number: str, retry_at: float) -> str:
    return f"много SMS на {number}. Повторите после {fmt_time(retry_at)}."


async def switch_off(ctx: Context) -> None:
    """R6: the option off (a pending application is withdrawn), from any member. Free."""
    account = await account_of(ctx.store, ctx.msisdn)
    if account.n2.state not in ("pending", "active"):
        await ctx.end(f"Услуга {OPTION} не подключена.",
                      audit=[AuditEvent("n2_off", Channel.USSD, outcome="not_active")])
        return
    result = await ctx.end(f"Услуга {OPTION} отключена. Об этом сообщено по SMS каждому номеру.")
    if result.ok:
        sent = await group_off(ctx.store, account, by=ctx.msisdn, channel=Channel.USSD,
                               reason=f"отключена с номера {ctx.msisdn}")
        ctx.result = dataclasses.replace(result, messages=(*result.messages, *sent))


async def group_off(store: Store, head: Profile, *, by: str, channel: str, reason: str,
                    step: str = "") -> list[OutboundMessage]:
    """The N2 account of `head` ends: the head first (from then on no member acts on another),
    then each member leaves it and is told by SMS from 111. Returns the SMS, queued."""
    step = step or secrets.token_hex(6)
    msisdn = head.msisdn
    members = [m for m in head.n2.numbers if m != msisdn] if head.n2.state == "active" else []
    text = f"Услуга {OPTION} отключена ({reason}). Номера больше не управляют друг другом."
    sent: list[OutboundMessage] = []
    with acting.scope(by, channel):
        done = await store.commit(msisdn, n2_off(msisdn) + Change(
            mo=_once(f"n2-off:{step}:{msisdn}"), messages=(_sms(msisdn, text),), must_exist=True,
            audit=(AuditEvent("n2_off", channel, detail=f"was={head.n2.state or 'off'} numbers={len(members) + 1}"),)))
        sent += done.messages
        with contextlib.suppress(StoreUnavailable):
            await store.numbers.n2_done(msisdn)
        for member in members:
            left = await store.commit(member, n2_left(member, msisdn) + Change(
                mo=_once(f"n2-off:{step}:{member}"), messages=(_sms(member, text),),
                audit=(AuditEvent("n2_left", channel, detail=f"group={msisdn}"),)))
            sent += left.messages
    log.info("n2_off", msisdn=msisdn, members=len(members) + 1, by=by)
    return sent


async def member_changed(store: Store, msisdn: str, before: Profile, *, reason: str) -> list[OutboundMessage]:
    """SPEC N2: the conditions are checked again when a member changes. A sold number leaves its
    account (`reason` owner_change: its own fields are already cleared): an application it made is
    withdrawn, an account it headed ends, and the account it was in goes on without it if the rest
    still qualify, else ends; every member is told."""
    group = before.n2.group or (msisdn if before.n2.state else "")
    if not group:
        return []
    if group == msisdn:
        with contextlib.suppress(StoreUnavailable):
            await store.numbers.n2_done(msisdn)
        if before.n2.state != "active" or reason != "owner_change":
            return []
        members = [m for m in before.n2.numbers if m != msisdn]
        sent: list[OutboundMessage] = []
        text = f"Услуга {OPTION} отключена: номер {msisdn} сменил владельца."
        for member in members:
            left = await store.commit(member, n2_left(member, msisdn) + Change(
                messages=(_sms(member, text),), audit=(AuditEvent("n2_left", "review", detail=f"group={msisdn}"),)))
            sent += left.messages
        log.info("n2_off", msisdn=msisdn, members=len(members), by="owner_change")
        return sent
    head = await store.subscribers.profile(group)
    if head.n2.state != "active" or msisdn not in head.n2.numbers:
        return []
    rest = [m for m in head.n2.numbers if m != msisdn]
    refusal = await check_group(store, rest)
    if refusal is not None:
        return await group_off(store, head, by=group, channel="review",
                               reason=f"номер {msisdn} сменил владельца, {refusal.text}")
    done = await store.commit(group, n2_members(group, rest) + Change(
        messages=tuple(_sms(m, f"Номер {msisdn} выведен из услуги {OPTION}: он сменил владельца.") for m in rest
                       if m == group),
        audit=(AuditEvent("n2_member_left", "review", detail=f"number={msisdn} reason={reason}"),)))
    return list(done.messages)


# ---- the self-care API: the same application, state and switch-off ----------------------------------
async def api_state(platform: Platform, msisdn: str) -> Result:
    account = await account_of(platform.store, msisdn)
    members = await access.joined_numbers(platform.store, msisdn)
    return Result.done(state_text(account), **state_view(account), joined=members)


async def api_apply(platform: Platform, msisdn: str, named_raw: object) -> Result:
    """SPEC N2 "by the self-care API": as R5, `numbers` the others to join (linked ones join too)."""
    if not isinstance(named_raw, list) or len(named_raw) > MAX_NUMBERS:
        return Result.fail("bad_request", f"numbers: список номеров (не больше {MAX_NUMBERS}).", field="numbers")
    named = [parse_msisdn(n) for n in named_raw]
    if None in named:
        return Result.fail("bad_request", "numbers: каждый номер — 11 цифр, начиная с 7.", field="numbers")
    prepared = await prepare(platform.store, platform.settings, msisdn, [n for n in named if n is not None],
                             now=platform.now(), channel=Channel.API)
    if isinstance(prepared, Refusal):
        await platform.store.audit(msisdn, AuditEvent("n2_apply", Channel.API, outcome="refused", detail=prepared.code))
        code = "conflict" if prepared.code.startswith("already_") else "forbidden" \
            if prepared.code in ("corporate", "other_owner", "other_region", "other_group") else \
            "rate_limited" if prepared.code == "rate_limited" else "bad_request"
        text = prepared.text if code == "conflict" else f"Отказ: {prepared.text}"
        if code == "bad_request":
            return Result.fail(code, text, reason=prepared.code, field="numbers")
        return Result.fail(code, text, reason=prepared.code)
    await platform.store.numbers.n2_due_at(msisdn, prepared.due)  # the review's entry before the application
    applied = await platform.store.commit(msisdn, prepared.change + Change(must_exist=True))
    if applied.outcome is Outcome.LIMITED:
        busy = sender_busy(platform.settings, applied.retry_at or platform.now())
        return Result.fail("rate_limited", f"Отказ: {busy}")
    if not applied.ok:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    log.info("n2_applied", msisdn=msisdn, numbers=len(prepared.numbers), channel="api")
    return Result.done(prepared.text, state="pending", numbers=prepared.numbers)


async def api_off(platform: Platform, msisdn: str, *, by: str) -> Result:
    """R6 from the API: the account (or the pending application) ends; every member is told by SMS."""
    account = await account_of(platform.store, msisdn)
    if account.n2.state not in ("pending", "active"):
        return Result.fail("conflict", f"Услуга {OPTION} не подключена.")
    platform.dispatch(await group_off(platform.store, account, by=by, channel=Channel.API,
                                      reason=f"отключена с номера {by}"))
    return Result.done(f"Услуга {OPTION} отключена. Об этом сообщено по SMS каждому номеру.", state="off")


async def common_password(ctx: Context) -> None:
    """A new common password by SMS from 3339 for an active account: one password for every member,
    each verified a member now (one owner, both ends); every member's sessions end."""
    account = await account_of(ctx.store, ctx.msisdn)
    members = await access.joined_numbers(ctx.store, ctx.msisdn)
    if account.n2.state != "active" or not members:
        await ctx.end(f"Услуга {OPTION} не подключена: общий пароль не нужен.",
                      audit=[AuditEvent("n2_password", Channel.USSD, outcome="not_active")])
        return
    guards = d2.own(ctx.settings, d2.Kind.PASSWORD)
    refused = await d2.peek(ctx.store, ctx.msisdn, guards)
    if refused is not None:
        _, reason, retry_at = refused
        await ctx.end(d2.refusal(d2.Kind.PASSWORD, guards, reason, retry_at, ctx.clock.now()),
                      audit=[AuditEvent("n2_password", Channel.USSD, outcome="rate_limited")])
        return
    password = generate_password()
    pw_hash = await ctx.hash_password(password)
    now = ctx.clock.now()
    result = await ctx.end(
        f"Общий пароль ({len(members) + 1} номера) отправлен по SMS с 3339. Сеансы завершены.",
        change=new_password(ctx.msisdn, pw_hash, now) + Change(guards=guards),
        audit=[AuditEvent("password_issued", Channel.USSD, detail=f"via=*111*828*3# common={len(members) + 1}")],
        messages=[ctx.sms(password_reply(password, common_with=len(members)), "3339", secret=True)],
    )
    if result.refused or result.outcome != "applied":
        return
    await spread_common(ctx.store, ctx.msisdn, members, pw_hash, now, step=ctx.message.mo_id or secrets.token_hex(8),
                        channel=Channel.USSD)


# ---- the review ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Review:
    msisdn: str
    state: str  # active | rejected | skipped
    reason: str = ""


async def review_due(store: Store, settings: Settings, *, now: float | None = None, send: Sender | None = None,
                     limit: int = 100, buckets: Sequence[int] | None = None) -> list[Review]:
    """Review every N2 application due by `now` (default: the store's clock) in the index `buckets`
    (default: all; a gateway passes its share); `send` sends the SMS at once (without it they wait in
    the outbox for any gateway's recovery loop)."""
    now = store.clock.now() if now is None else now
    reviews = []
    for msisdn in await store.numbers.n2_due(now, limit, buckets):
        review = await review_application(store, msisdn, now=now, send=send)
        reviews.append(review)
    return reviews


async def review_application(store: Store, msisdn: str, *, now: float, send: Sender | None = None) -> Review:
    profile = await store.subscribers.profile(msisdn)
    if profile.n2.state != "pending":
        await store.numbers.n2_done(msisdn)
        return Review(msisdn, "skipped")
    numbers = list(profile.n2.numbers) or [msisdn]
    app_id = profile.n2.app_id
    refusal = await check_group(store, numbers)
    outgoing: list[OutboundMessage] = []
    if refusal is not None:
        text = f"Заявка на услугу {OPTION} отклонена: {refusal.text}"
        verdict = n2_reviewed(msisdn, app_id=app_id, active=False, reason=refusal.text, at=now)
        result = await store.commit(msisdn, verdict + Change(
            mo=_once(f"n2-review:{app_id}"), messages=(_sms(msisdn, text),), create_profile=True,
            audit=(AuditEvent("n2_rejected", "review", outcome="rejected", detail=f"app={app_id} {refusal.code}"),)))
        outgoing += result.messages
        review = Review(msisdn, "rejected", refusal.text)
    else:
        text = (f"Услуга {OPTION} подключена для номеров: {', '.join(numbers)}. "
                f"{'Пароль этого номера сброшен' if len(numbers) == 1 else 'Пароли этих номеров сброшены'}. "
                "Получите новый общий пароль: наберите *111*828*3#.")
        result = await store.commit(msisdn, n2_reviewed(msisdn, app_id=app_id, active=True, reason="", at=now)
                                    + Change(mo=_once(f"n2-review:{app_id}"), messages=(_sms(msisdn, text),),
                                             create_profile=True, audit=(AuditEvent(
                                                 "n2_activated", "review",
                                                 detail=f"app={app_id} numbers={len(numbers)}"),)))
        outgoing += result.messages
        for member in numbers if result.ok else ():  # joining resets every joined number's password (SPEC N2)
            notice = [] if member == msisdn else [_sms(member, f"Ваш номер объединён с номером {msisdn} "
                                                                f"({OPTION}). Пароль от Личного кабинета сброшен.")]
            joined = await store.commit(member, n2_joined(member, msisdn, profile.owner_id) + Change(
                mo=_once(f"n2-join:{app_id}:{member}"), messages=tuple(notice), create_profile=True,
                audit=(AuditEvent("password_reset", "review", detail=f"n2 join app={app_id} group={msisdn}"),)))
            outgoing += joined.messages
        review = Review(msisdn, "active")
    await store.numbers.n2_done(msisdn)
    log.info("n2_reviewed", msisdn=msisdn, state=review.state, numbers=len(numbers))
    if send is not None:
        for mt in outgoing:
            await send(mt)
    return review


def _once(step: str) -> MoMark:
    """A review's steps are applied once each, whichever gateway runs the review (and however often)."""
    return MoMark(step, MO_TTL_S)


def _sms(msisdn: str, text: str) -> OutboundMessage:
    return OutboundMessage(mt_id=secrets.token_hex(16), source=NOTIFY_FROM, destination=msisdn, text=text)


def time_hook(store: Store, settings: Settings, send: Sender | None = None) -> Callable[[float], Awaitable[object]]:
    """For the simulator's "advance time", which has already moved the clock it shares with the store
    (one clock per platform, `ussdgw.app.stack`): run the reviews now due."""

    async def advanced(seconds: float) -> object:
        reviews = await review_due(store, settings, send=send)
        return {"clock_offset": store.clock.offset, "n2_reviews": [r.state for r in reviews]}

    return advanced
