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
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import structlog

from handlers import d2
from handlers.base import Channel, HandlerContext
from handlers.password import password_reply
from handlers.ussd import UssdContext, ussd_context
from sms_codes import generate_password
from ussdgw.config import Settings
from ussdgw.inputs import parse_msisdn
from ussdgw.store import MO_TTL_S, AuditEvent, Change, MoMark, OutboundMessage, Profile, Store, StoreUnavailable
from ussdgw.store.profile import n2_applied, n2_joined, n2_off, n2_reviewed, new_password

log = structlog.get_logger("ussdgw.handlers.number_management")

OPTION = "«Управление номерами»"
NOTIFY_FROM = "111"
MAX_NUMBERS = 10

Sender = Callable[[OutboundMessage], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Refusal:
    code: str
    text: str


async def group_of(store: Store, applicant: str, named: Sequence[str] = ()) -> list[str]:
    """The applicant first, then the named and the linked numbers, each once."""
    linked = sorted(await store.numbers.linked(applicant))
    numbers = [applicant]
    for number in [*named, *linked]:
        if number not in numbers:
            numbers.append(number)
    return numbers


async def check_group(store: Store, numbers: Sequence[str]) -> Refusal | None:
    """The N2 conditions over `numbers` (the applicant first), or the first one that fails."""
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
    return None


def short_state(profile: Profile) -> str:
    """One word or two for a menu header: не подключена, на рассмотрении, подключена, отклонена."""
    return {"pending": "заявка на рассмотрении", "active": "подключена",
            "rejected": "заявка отклонена"}.get(profile.n2.state, "не подключена")


def state_text(profile: Profile) -> str:
    state = profile.n2.state
    if state == "pending":
        return f"Заявка на {OPTION} на рассмотрении, ответ придёт по SMS."
    if state == "active":
        return f"{OPTION} подключена, номеров: {len(profile.n2.numbers)}."
    if state == "rejected":
        return f"Заявка на {OPTION} отклонена: {profile.n2.reason}"
    return f"{OPTION} не подключена. Подключить: *111*828*1#"


# ---- the USSD handler: *111*828#, *111*828*1#, *111*828*2#, *111*828*3# ------------------------------
async def number_management(ctx: HandlerContext) -> None:
    ussd = ussd_context(ctx)
    command, *rest = ussd.args or ("",)
    if command == "1":
        named = [parse_msisdn(r) for r in rest]
        if None in named:
            await ussd.end("Неверный номер. Пример: *111*828*1*79161234568#",
                           audit=[AuditEvent("n2_apply", Channel.USSD, outcome="bad_number")])
            return
        await apply(ussd, [n for n in named if n is not None])
    elif command == "2" and not rest:
        await switch_off(ussd)
    elif command == "3" and not rest:
        await common_password(ussd)
    elif command == "" and not rest:
        profile = await ctx.profile()
        await ussd.end(state_text(profile), audit=[AuditEvent("n2_state_shown", Channel.USSD)])
    else:
        await ussd.end("*111*828*1# - подключить, *111*828*2# - отключить, *111*828# - состояние.",
                       audit=[AuditEvent("n2_unknown_command", Channel.USSD, outcome="help_sent")])


async def apply(ctx: UssdContext, named: Sequence[str] = ()) -> None:
    """R5: check the rules now, then leave the application pending for review."""
    profile = await ctx.profile()
    state = profile.n2.state
    if state in ("pending", "active"):
        await ctx.end(state_text(profile), audit=[AuditEvent("n2_apply", Channel.USSD, outcome=f"already_{state}")])
        return
    numbers = await group_of(ctx.store, ctx.msisdn, named)
    refusal = await check_group(ctx.store, numbers)
    if refusal is not None:
        log.info("n2_refused", msisdn=ctx.msisdn, reason=refusal.code)
        await ctx.end(f"Отказ: {refusal.text}",
                      audit=[AuditEvent("n2_apply", Channel.USSD, outcome="refused", detail=refusal.code)])
        return
    now = ctx.clock.now()
    due = now + ctx.settings.n2_review_delay_s
    app_id = secrets.token_hex(6)
    await ctx.store.numbers.n2_due_at(ctx.msisdn, due)  # the review's entry before the application
    result = await ctx.end(
        f"Заявка на {OPTION} принята, номеров: {len(numbers)}. Ответ по SMS за 24 ч.",
        change=n2_applied(ctx.msisdn, numbers, app_id, now, due),
        audit=[AuditEvent("n2_applied", Channel.USSD, detail=f"app={app_id} numbers={len(numbers)}")],
    )
    log.info("n2_applied", msisdn=ctx.msisdn, numbers=len(numbers), outcome=result.outcome)


async def switch_off(ctx: UssdContext) -> None:
    """R6: the option off (a pending application is withdrawn). Free."""
    profile = await ctx.profile()
    if profile.n2.state not in ("pending", "active"):
        await ctx.end(f"{OPTION} не подключена.", audit=[AuditEvent("n2_off", Channel.USSD, outcome="not_active")])
        return
    await ctx.end(f"{OPTION} отключена.", change=n2_off(ctx.msisdn),
                  audit=[AuditEvent("n2_off", Channel.USSD, detail=f"was={profile.n2.state}")])
    with contextlib.suppress(StoreUnavailable):
        await ctx.store.numbers.n2_done(ctx.msisdn)
    log.info("n2_off", msisdn=ctx.msisdn)


async def common_password(ctx: UssdContext) -> None:
    """A new common password by SMS from 3339 for an active group: one password for every joined number."""
    profile = await ctx.profile()
    if profile.n2.state != "active":
        await ctx.end(f"{OPTION} не подключена: общий пароль не нужен.",
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
    members = [m for m in profile.n2.numbers if m != ctx.msisdn]
    now = ctx.clock.now()
    result = await ctx.end(
        "Новый общий пароль отправлен по SMS с номера 3339.",
        change=new_password(ctx.msisdn, pw_hash, now) + Change(guards=guards),
        audit=[AuditEvent("password_issued", Channel.USSD, detail=f"via=*111*828*3# common={len(members) + 1}")],
        messages=[ctx.sms(password_reply(password), "3339", secret=True)],
    )
    if result.refused:
        return
    for member in members:  # each in its own slot, once per MO
        await ctx.store.commit(member, new_password(member, pw_hash, now) + Change(
            mo=_once(f"n2pw:{ctx.message.mo_id}:{member}"), create_profile=True,
            audit=(AuditEvent("password_issued", Channel.USSD, detail=f"n2 common from={ctx.msisdn}"),)))
    log.info("n2_common_password", msisdn=ctx.msisdn, members=len(members) + 1)


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
        result = await store.commit(msisdn, n2_reviewed(msisdn, active=False, reason=refusal.text, at=now) + Change(
            mo=_once(f"n2-review:{app_id}"), messages=(_sms(msisdn, text),), create_profile=True,
            audit=(AuditEvent("n2_rejected", "review", outcome="rejected", detail=f"app={app_id} {refusal.code}"),)))
        outgoing += result.messages
        review = Review(msisdn, "rejected", refusal.text)
    else:
        text = (f"Услуга {OPTION} подключена для номеров: {', '.join(numbers)}. Пароли этих номеров сброшены. "
                "Получите новый общий пароль: наберите *111*828*3#.")
        result = await store.commit(msisdn, n2_reviewed(msisdn, active=True, reason="", at=now) + Change(
            mo=_once(f"n2-review:{app_id}"), messages=(_sms(msisdn, text),), create_profile=True,
            audit=(AuditEvent("n2_activated", "review", detail=f"app={app_id} numbers={len(numbers)}"),)))
        outgoing += result.messages
        for member in numbers:  # joining resets every joined number's password (SPEC N2)
            notice = [] if member == msisdn else [_sms(member, f"Ваш номер объединён с номером {msisdn} "
                                                                f"({OPTION}). Пароль от Личного кабинета сброшен.")]
            joined = await store.commit(member, n2_joined(member, msisdn) + Change(
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
