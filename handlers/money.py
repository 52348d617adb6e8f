"""Money and services (SPEC M1-M6): balance, top-up, tariffs, services, call detail, bonus gifts.

Every function is a plain async function over the store, so the HTTP API and the USSD menu call
the same code: `await switch_tariff(store, msisdn, "smart", channel=Channel.USSD)`. Each returns a
`Result`; a refusal has changed nothing (the check and the write are one Lua script).

M1: what only reads or gives (balance, lists, top-up, switching a service off, call detail, gifts
of points) works at any balance; what costs (a tariff switch, connecting a service) needs a
positive balance at least as large as the price, and says so when refused.

The store writes the fields (`ussdgw.store.money`: `credit`, `debit`, `tariff_switched`,
`service_on`, holds and gifts); Автоплатёж is decided there too, in Python, on the profile read
just before the commit (`Store.update` decides again if the balance moved meanwhile).
"""

from __future__ import annotations

import calendar
import csv
import io
import math
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

from handlers import d2
from handlers.base import Channel
from handlers.catalogue import Service, catalogue, rub
from handlers.operations import (
    Result,
    api_audit,
    bad_msisdn,
    fmt_time,
    new_mt,
    parse_amount_kop,
    parse_points,
    unknown_subscriber,
    valid_msisdn,
)
from handlers.ports import CallRecord, MailError, Platform
from sms_codes import OPERATOR_TZ, CodePurpose, code_digest, generate_code
from ussdgw import russian
from ussdgw.audit_detail import render
from ussdgw.inputs import ascii_digits
from ussdgw.logs import get_logger
from ussdgw.store import Asset, Autopay, Change, CommitResult, Gift, Outcome, Profile, RateGuard, Store
from ussdgw.store import money as ledger
from ussdgw.store import numbers as sets
from ussdgw.store.grants import Grants

log = get_logger("ussdgw.handlers.money")

POINTS_PER_KOP = 1000  # one bonus point for every 10 ₽ paid in
AUTOPAY_MIN_KOP = 10_000
AUTOPAY_MAX_KOP = 500_000


def _no_money(balance_kop: int, price_kop: int, what: str) -> Result:
    if balance_kop > 0 and price_kop:
        why = f"на счёте не хватает {rub(price_kop - balance_kop)}. Стоимость: {rub(price_kop)}."
    else:
        why = "нужен положительный баланс." + (f" Стоимость: {rub(price_kop)}." if price_kop else "")
    return Result.fail(
        "insufficient_funds",
        f"{what} — платная операция, {why} Ваш баланс: {rub(balance_kop)}. Пополните счёт и повторите.",
        balance_kop=balance_kop, price_kop=price_kop,
    )


def enabled_services(profile: Profile) -> list[str]:
    return sorted(profile.services)


def _balance(result: CommitResult) -> int:
    return result.profile.balance_kop if result.profile is not None else 0


# ---- M2: balance and top-up ------------------------------------------------------------------
async def balance(platform: Platform, msisdn: str, *, channel: Channel | str = Channel.API) -> Result:
    """M2: the balance, bonus points and tariff. Free, at any balance (M1)."""
    profile = await platform.store.subscribers.profile(msisdn)
    kop, points = profile.balance_kop, profile.bonus_points
    tariff = catalogue().tariff(profile.tariff)
    text = f"Баланс: {rub(kop)}. Бонусные баллы: {points}."
    if tariff:
        text += f" Тариф: {tariff.name}."
    return Result.done(text, msisdn=msisdn, balance_kop=kop, bonus_points=points,
                       tariff=profile.tariff, tariff_name=tariff.name if tariff else "")


async def top_up(platform: Platform, msisdn: str, amount: object, *, channel: Channel | str = Channel.API,
                 payment_id: str | None = None) -> Result:
    """M2: pay `amount` kopecks in (from a card); one bonus point per 10 ₽. Idempotent by `payment_id`."""
    amount_kop = parse_amount_kop(amount)
    if isinstance(amount_kop, Result):
        return amount_kop
    points = amount_kop // POINTS_PER_KOP
    change = ledger.credit(msisdn, amount_kop, points) + Change(
        must_exist=True, audit=(api_audit("top_up", channel, detail=f"amount_kop={amount_kop} points={points}"),),
        refusal=api_audit("top_up", channel, detail=f"amount_kop={amount_kop}"))
    if payment_id:
        change = ledger.payment_once(msisdn, payment_id, amount_kop) + change
    applied = await platform.store.commit(msisdn, change)
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", "Этот платёж уже зачислен.", payment_id=payment_id)
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    log.info("top_up", msisdn=msisdn, amount_kop=amount_kop, channel=str(channel))
    return Result.done(f"Счёт пополнен на {rub(amount_kop)}. Баланс: {rub(_balance(applied))}.",
                       balance_kop=_balance(applied), amount_kop=amount_kop, bonus_points_added=points)


# ---- M3: tariffs -----------------------------------------------------------------------------
async def list_tariffs(platform: Platform, msisdn: str) -> Result:
    """M3: every tariff with its description and price, and which one is current."""
    profile = await platform.store.subscribers.profile(msisdn)
    current, corporate = profile.tariff, profile.corporate
    tariffs = [{**t.to_dict(), "current": t.id == current, "available": corporate or not t.corporate_only}
               for t in catalogue().tariffs]
    names = "; ".join(f"{t.name} — {rub(t.monthly_fee_kop)}/мес" for t in catalogue().tariffs)
    return Result.done(f"Тарифы: {names}.", current=current, tariffs=tariffs)


async def switch_tariff(platform: Platform, msisdn: str, tariff_id: str, *,
                        channel: Channel | str = Channel.API) -> Result:
    """M3 "Перейти на этот тариф": at once; the switch price is charged (M1: positive balance needed)."""
    tariff = catalogue().tariff(tariff_id) if isinstance(tariff_id, str) else None
    if tariff is None:
        ids = ", ".join(t.id for t in catalogue().tariffs)
        return Result.fail("not_found", f"Тариф «{tariff_id}» не найден. Доступные тарифы: {ids}.")
    profile = await platform.store.subscribers.profile(msisdn)
    if not profile.exists:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    current = profile.tariff
    if current == tariff.id:
        return Result.fail("conflict", f"Вы уже на тарифе «{tariff.name}».", tariff=tariff.id)
    if tariff.corporate_only and not profile.corporate:
        return Result.fail("corporate", f"Тариф «{tariff.name}» доступен только корпоративным клиентам.")
    price = tariff.switch_price_kop
    switch = ledger.tariff_switched(profile, tariff.id, platform.now()) + Change(
        must_exist=True, refusal=api_audit("tariff_switch", channel, detail=f"to={tariff.id}"),
        audit=(api_audit("tariff_switched", channel, detail=f"from={current} to={tariff.id} price_kop={price}"),))
    applied = await platform.store.update(msisdn, lambda fresh: switch + ledger.debit(fresh, price))
    if not applied.ok:
        return _refusal(applied, profile, price, "Смена тарифа")
    log.info("tariff_switched", msisdn=msisdn, tariff=tariff.id, channel=str(channel))
    paid = f" Списано {rub(price)}." if price else ""
    return Result.done(f"Тариф изменён на «{tariff.name}».{paid} Баланс: {rub(_balance(applied))}.",
                       tariff=tariff.id, balance_kop=_balance(applied), autopaid_kop=applied.autopaid_kop)


def _refusal(applied: CommitResult, profile: Profile, price_kop: int, what: str) -> Result:
    if applied.code == "insufficient_funds":
        return _no_money(profile.balance_kop, price_kop, what)
    if applied.code == "not_found":
        return Result.fail("unknown_subscriber", "Абонент не найден.")
    return Result.fail("conflict", "Данные изменились, пока выполнялась операция. Повторите запрос.")


# ---- M4: services ----------------------------------------------------------------------------
async def list_services(platform: Platform, msisdn: str) -> Result:
    """M4: every service with its price and whether it is connected."""
    profile = await platform.store.subscribers.profile(msisdn)
    on = profile.services
    services: list[dict[str, Any]] = []
    for s in catalogue().services:
        entry: dict[str, Any] = {**s.to_dict(), "enabled": s.id in on}
        if s.id == "autopay" and s.id in on:
            entry["params"] = {"amount_kop": profile.autopay_amount_kop, "threshold_kop": profile.autopay_threshold_kop}
        services.append(entry)
    names = ", ".join(s.name for s in catalogue().services if s.id in on) or "нет"
    return Result.done(f"Подключённые услуги: {names}.", services=services)


def _autopay_params(params: Mapping[str, Any] | None) -> Autopay | Result:
    params = params or {}
    amount = parse_amount_kop(params.get("amount_kop"), field_name="params.amount_kop", maximum=AUTOPAY_MAX_KOP)
    if isinstance(amount, Result):
        return Result.fail("bad_request", "Для Автоплатежа укажите сумму пополнения amount_kop "
                           f"от {rub(AUTOPAY_MIN_KOP)} до {rub(AUTOPAY_MAX_KOP)}.", field="params.amount_kop")
    if amount < AUTOPAY_MIN_KOP:
        return Result.fail("bad_request", f"Сумма Автоплатежа — не меньше {rub(AUTOPAY_MIN_KOP)}.",
                           field="params.amount_kop")
    threshold = params.get("threshold_kop", 0)
    if not isinstance(threshold, int) or isinstance(threshold, bool) or not 0 <= threshold <= AUTOPAY_MAX_KOP:
        return Result.fail("bad_request", "Порог Автоплатежа threshold_kop — целое число копеек, не меньше 0.",
                           field="params.threshold_kop")
    return Autopay(amount, threshold)


def _service(service_id: object) -> Service | Result:
    service = catalogue().service(service_id) if isinstance(service_id, str) else None
    if service is None:
        ids = ", ".join(s.id for s in catalogue().services)
        return Result.fail("not_found", f"Услуга «{service_id}» не найдена. Доступные услуги: {ids}.")
    return service


async def service_on(platform: Platform, msisdn: str, service_id: str, *, channel: Channel | str = Channel.API,
                     params: Mapping[str, Any] | None = None) -> Result:
    """M4: connect a service (paid: positive balance needed, M1). Автоплатёж takes
    params {amount_kop, threshold_kop}: when a debit leaves the balance at or below the threshold,
    the amount is paid in from the card at once."""
    service = _service(service_id)
    if isinstance(service, Result):
        return service
    autopay: Autopay | None = None
    if service.id == "autopay":
        parsed = _autopay_params(params)
        if isinstance(parsed, Result):
            return parsed
        autopay = parsed
    profile = await platform.store.subscribers.profile(msisdn)
    if not profile.exists:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    price = service.connect_price_kop
    connect = ledger.service_on(msisdn, service.id, platform.now(), autopay) + Change(
        must_exist=True, refusal=api_audit("service_on", channel, detail=f"service={service.id}"),
        audit=(api_audit("service_on", channel, detail=f"service={service.id} price_kop={price}"),))
    applied = await platform.store.update(msisdn, lambda fresh: connect + ledger.debit(fresh, price))
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", f"Услуга «{service.name}» уже подключена.", service=service.id)
        return _refusal(applied, profile, price, f"Подключение услуги «{service.name}»")
    log.info("service_on", msisdn=msisdn, service=service.id, channel=str(channel))
    return Result.done(f"Услуга «{service.name}» подключена.", service=service.id, enabled=True,
                       balance_kop=_balance(applied))


async def service_off(platform: Platform, msisdn: str, service_id: str, *,
                      channel: Channel | str = Channel.API) -> Result:
    """M4: switch a service off. Free, at any balance."""
    service = _service(service_id)
    if isinstance(service, Result):
        return service
    applied = await platform.store.commit(msisdn, ledger.service_off(msisdn, service.id) + Change(
        must_exist=True, audit=(api_audit("service_off", channel, detail=f"service={service.id}"),),
        refusal=api_audit("service_off", channel, detail=f"service={service.id}")))
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", f"Услуга «{service.name}» не подключена.", service=service.id)
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    log.info("service_off", msisdn=msisdn, service=service.id, channel=str(channel))
    return Result.done(f"Услуга «{service.name}» отключена.", service=service.id, enabled=False)


async def charge(platform: Platform, msisdn: str, amount: object, *, reason: str = "usage",
                 channel: Channel | str = "billing") -> Result:
    """Billing takes money for usage (calls, monthly fees); the balance may go negative.
    This is what Автоплатёж reacts to."""
    amount_kop = parse_amount_kop(amount)
    if isinstance(amount_kop, Result):
        return amount_kop
    charged = Change(must_exist=True,
                     audit=(api_audit("charged", channel, detail=render(amount_kop=amount_kop, reason=reason)),))
    applied = await platform.store.update(msisdn, lambda fresh: charged + ledger.debit(fresh, amount_kop, pay=False))
    if not applied.ok:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    return Result.done(f"Списано {rub(amount_kop)}. Баланс: {rub(_balance(applied))}.",
                       balance_kop=_balance(applied), autopaid_kop=applied.autopaid_kop)


def new_op_id() -> str:
    """An operation id for a step across two slots (a hold and what it pays for)."""
    return uuid.uuid4().hex[:16]


# ---- holds: money or points taken now for a step in another subscriber's slot ---------------
async def place_hold(store: Store, payer: str, op: str, *, asset: Asset, amount: int, purpose: str, to: str,
                     channel: Channel | str, paid: bool, event: str,
                     guards: tuple[RateGuard, ...] = ()) -> CommitResult:
    """Take `amount` of `asset` from `payer` into a hold `op` (one script: checked, taken, recorded,
    and `guards` (D2 counters on the payer's number) passed and counted)."""
    now = store.clock.now()
    audited = Change(must_exist=True, audit=(api_audit(event, channel, detail=f"op={op} {asset}={amount} to={to}"),),
                     refusal=api_audit(event, channel, detail=f"{asset}={amount} to={to}"), guards=guards)
    # The recovery record first: a crash right after the hold still finds it (a refused hold
    # leaves an entry that the recovery drops).
    await store.money.index_hold(payer, op, now)
    applied = await store.update(payer, lambda fresh: audited + ledger.hold_placed(
        fresh, op, asset=asset, amount=amount, purpose=purpose, to=to, at=now, pay=paid))
    if not applied.ok:
        await store.money.unindex_hold(payer, op)
    return applied


async def settle_hold(store: Store, payer: str, op: str, outcome: str, *, channel: Channel | str = "system") -> bool:
    """Finish hold `op`: `captured` (the other step happened) or `refunded` (it never will). Once only."""
    hold = await store.money.hold(payer, op)
    if hold is None:
        return False
    applied = await store.commit(payer, ledger.hold_settled(payer, hold, outcome) + Change(
        must_exist=True, audit=(api_audit(f"hold_{outcome}", channel, detail=f"op={op} {hold.asset}={hold.amount}"),)))
    await store.money.unindex_hold(payer, op)
    log.info("hold_settled", msisdn=payer, op=op, outcome=outcome, done=applied.ok)
    return applied.ok


# ---- M6: bonus points gift ------------------------------------------------------------------
GIFT_CODE_DIGITS = 6
HOLD_PLACING_S = 30.0  # a hold's entry younger than this with no hold yet may be one being placed


def gift_sms(sender: str, points: int, code: str, ttl_s: int) -> str:
    """One UCS2 segment (70 characters) for any gift: a one-part SMS cannot be mixed up with another."""
    return f"{sender} дарит {russian.count(points, 'балл')}. Код: {code}. Введите в ЛК за {max(1, ttl_s // 60)} мин"


async def gift_points(platform: Platform, sender: str, recipient_raw: object, points_raw: object,
                      *, channel: Channel | str = Channel.API) -> Result:
    """M6: the sender's points go into a hold, the recipient gets an SMS code; the points reach the
    recipient only when the code is entered (`accept_gift`), else they return to the sender."""
    recipient = valid_msisdn(recipient_raw)
    if recipient is None:
        return bad_msisdn(recipient_raw, "to")
    if recipient == sender:
        return Result.fail("bad_request", "Нельзя подарить баллы самому себе.", field="to")
    points = parse_points(points_raw)
    if isinstance(points, Result):
        return points
    if not (await platform.store.subscribers.profile(recipient)).exists:
        return unknown_subscriber(recipient)
    # D2: the code is an SMS the sender causes: the recipient's budget for such SMS and the sender's,
    # never the recipient's own (`handlers.d2`).
    received, caused = d2.to_recipient(platform.settings, d2.Kind.GIFT_CODE), d2.by_sender(platform.settings)
    busy = await d2.peek(platform.store, sender, caused)
    if busy is not None:
        return Result.fail("rate_limited", f"Вы отправили слишком много подарков: не более "
                           f"{caused[0].per_hour} в час. Повторите после {fmt_time(busy[2])}.", retry_at=busy[2])
    busy = await d2.peek(platform.store, recipient, received)
    if busy is not None:
        return Result.fail("rate_limited", _recipient_busy(busy[1], busy[2], platform.now()), retry_at=busy[2])
    tid = new_op_id()
    held = await place_hold(platform.store, sender, tid, asset=Asset.POINTS, amount=points, purpose="gift",
                            to=recipient, channel=channel, paid=False, event="gift_sent", guards=caused)
    if held.outcome is Outcome.LIMITED:
        return Result.fail("rate_limited", f"Вы отправили слишком много подарков: не более "
                           f"{caused[0].per_hour} в час. Повторите позже.", retry_at=held.retry_at)
    if not held.ok:
        have = (await platform.store.subscribers.profile(sender)).bonus_points
        return Result.fail("insufficient_funds", f"Недостаточно бонусных баллов: у вас {russian.count(have, 'балл')}, "
                           f"а подарок — {russian.count(points, 'балл')}.", bonus_points=have)
    code = generate_code(GIFT_CODE_DIGITS)
    digest = code_digest(platform.settings.secret_key_bytes(), CodePurpose.BONUS_GIFT, recipient, code)
    ttl = platform.settings.gift_code_ttl_s
    expires = platform.now() + ttl
    mt = new_mt(recipient, gift_sms(sender, points, code, ttl), secret=True)
    offered = await platform.store.commit(recipient, ledger.gift_offered(
        recipient, tid, sender=sender, points=points, digest=digest, expires=expires) + Change(
        must_exist=True, guards=received, messages=(mt,),
        audit=(api_audit("gift_offered", channel, detail=f"op={tid} points={points} from={sender}"),)))
    if not offered.ok:
        await _void_gift(platform.store, recipient, tid)
        await settle_hold(platform.store, sender, tid, "refunded", channel=channel)
        now = platform.now()
        return Result.fail("rate_limited", _recipient_busy(offered.code, offered.retry_at or now, now)
                           + " Баллы возвращены.", retry_at=offered.retry_at)
    platform.dispatch([mt])
    log.info("gift_offered", msisdn=sender, recipient=recipient, points=points)
    return Result.done(f"Код подтверждения отправлен на номер {recipient}. Баллы ({points}) будут зачислены "
                       "после ввода кода получателем.", gift_id=tid, points=points, to=recipient,
                       expires_at=expires)


def _recipient_busy(reason: str, retry_at: float, now: float) -> str:
    if reason == "cooldown":
        return (f"Получателю только что отправлен код подарка. Повторите через {max(1, math.ceil(retry_at - now))} с.")
    return f"Получателю уже отправлено много кодов подарков. Повторите после {fmt_time(retry_at)}."


async def _void_gift(store: Store, recipient: str, tid: str) -> None:
    """Mark a gift that was never offered as void, so that no late offer can follow the refund."""
    await store.commit(recipient, ledger.gift_void(recipient, tid))


async def _expire_gift(store: Store, recipient: str, gift: Gift, now: float) -> bool:
    applied = await store.commit(recipient, ledger.gift_expired(recipient, gift, now) + Change(
        must_exist=True, audit=(api_audit("gift_expired", "system", detail=f"op={gift.tid}"),)))
    return applied.ok


async def accept_gift(platform: Platform, recipient: str, code_raw: object, *,
                      channel: Channel | str = Channel.API) -> Result:
    """M6: the recipient enters the SMS code; the points are credited once, the sender's hold captured."""
    code = ascii_digits(code_raw, max_digits=GIFT_CODE_DIGITS)
    if code is None or len(code) != GIFT_CODE_DIGITS:
        return Result.fail("bad_request", f"Код подтверждения — {GIFT_CODE_DIGITS} цифр из SMS.", field="code")
    wrong_codes = RateGuard("gift_code_wrong", 0, 10)  # 10 wrong codes an hour: no brute force of 6 digits
    limited = await platform.store.rate_peek(recipient, wrong_codes)
    if limited is not None:
        return Result.fail("rate_limited", "Слишком много неверных кодов. Попробуйте позже.", retry_at=limited[1])
    digest = code_digest(platform.settings.secret_key_bytes(), CodePurpose.BONUS_GIFT, recipient, code)
    gift = await platform.store.money.gift_by_code(recipient, digest)
    if gift is None:
        await platform.store.attempt(recipient, wrong_codes)
        await platform.store.audit(recipient, api_audit("gift_accept", channel, "wrong_code"))
        return Result.fail("wrong_code", "Неверный код подтверждения. Баллы не зачислены.")
    sender, points, tid = gift.sender, gift.points, gift.tid
    now = platform.now()
    applied = await platform.store.commit(recipient, ledger.gift_accepted(recipient, gift, now) + Change(
        must_exist=True, audit=(api_audit("gift_accepted", channel, detail=f"op={tid} points={points} from={sender}"),),
        refusal=api_audit("gift_accept", channel, detail=f"op={tid}")))
    if not applied.ok:
        if applied.code == "expired" and await _expire_gift(platform.store, recipient, gift, now):
            await settle_hold(platform.store, sender, tid, "refunded")
        if applied.code == "expired":
            return Result.fail("expired", "Срок действия кода истёк. Баллы возвращены отправителю.")
        return Result.fail("conflict", "Этот подарок уже получен или отменён.")
    await settle_hold(platform.store, sender, tid, "captured", channel=channel)
    log.info("gift_accepted", msisdn=recipient, sender=sender, points=points)
    return Result.done(f"Подарок зачислен: {russian.count(points, 'балл')} от {sender}.", points=points, gift_id=tid,
                       **{"from": sender})


async def pending_gifts(platform: Platform, msisdn: str) -> Result:
    """Gifts sent and received that are still waiting for their code."""
    incoming = await platform.store.money.gifts(msisdn)
    holds = await platform.store.money.holds(msisdn)
    received = [{"gift_id": g.tid, "from": g.sender, "points": g.points, "state": g.state, "expires_at": g.expires_at}
                for g in incoming.values()]
    sent = [{"gift_id": h.op, "to": h.to, "points": h.amount, "state": h.state}
            for h in holds.values() if h.purpose == "gift"]
    return Result.done(f"Подарков в ожидании: {sum(g['state'] == 'offered' for g in received)}.",
                       received=received, sent=sent)


async def recover_holds(platform: Platform, *, older_than_s: float | None = None) -> dict[str, int]:
    """Finish holds a crash (or an unanswered gift) left open: capture what the other side applied,
    refund what it never will. Safe to run anywhere, any number of times."""
    age = platform.settings.hold_recovery_s if older_than_s is None else older_than_s
    counts = {"captured": 0, "refunded": 0, "pending": 0}
    now = platform.now()
    for payer, op, placed_at in await platform.store.money.holds_due(now - age):
        hold = await platform.store.money.hold(payer, op)
        if hold is None and placed_at > now - HOLD_PLACING_S:
            continue  # its entry is written before the hold: the hold may be landing right now
        if hold is None or hold.state != "held":
            await platform.store.money.unindex_hold(payer, op)
            continue
        outcome: str | None
        if hold.purpose == "gift":
            outcome = await _gift_outcome(platform.store, hold.to, op, now)
        else:
            outcome = await _op_outcome(platform.store, hold.to, op)
        if outcome is None:
            counts["pending"] += 1
            continue
        if await settle_hold(platform.store, payer, op, outcome, channel="recovery"):
            counts[outcome] += 1
    if counts["captured"] or counts["refunded"]:
        log.info("holds_recovered", **counts)
    return counts


async def _gift_outcome(store: Store, recipient: str, tid: str, now: float) -> str | None:
    state = await store.money.gift_state(recipient, tid)
    if state is None:
        await _void_gift(store, recipient, tid)
        state = await store.money.gift_state(recipient, tid)
    if state == "offered":
        gift = (await store.money.gifts(recipient)).get(tid)
        if gift is not None and await _expire_gift(store, recipient, gift, now):
            state = "expired"
    return {"accepted": "captured", "void": "refunded", "expired": "refunded"}.get(state or "")


async def _op_outcome(store: Store, target: str, op: str) -> str | None:
    await store.commit(target, ledger.op_marked(target, op, "void"))
    return {"applied": "captured", "void": "refunded"}.get(await store.money.op_state(target, op) or "")


# ---- M5: call detail ------------------------------------------------------------------------
DETAIL_MONTHS = 6


def _parse_day(value: object, name: str) -> date | Result:
    if not isinstance(value, str):
        return Result.fail("bad_request", f"Поле {name}: дата в формате ГГГГ-ММ-ДД.", field=name)
    try:
        return date.fromisoformat(value)
    except ValueError:
        return Result.fail("bad_request", f"Поле {name}: дата в формате ГГГГ-ММ-ДД.", field=name)


def _months_back(day: date, months: int) -> date:
    month_index = day.year * 12 + day.month - 1 - months
    year, month = divmod(month_index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def _period(platform: Platform, start_raw: object, end_raw: object) -> tuple[date, date] | Result:
    start, end = _parse_day(start_raw, "from"), _parse_day(end_raw, "to")
    if isinstance(start, Result):
        return start
    if isinstance(end, Result):
        return end
    today = datetime.fromtimestamp(platform.now(), OPERATOR_TZ).date()
    if start > end:
        return Result.fail("bad_request", "Начало периода позже его конца.", field="from")
    if end > today:
        return Result.fail("bad_request", "Период не может заканчиваться в будущем.", field="to")
    earliest = _months_back(today, DETAIL_MONTHS)
    if start < earliest:
        return Result.fail("bad_request", f"Детализация доступна за последние {DETAIL_MONTHS} месяцев: "
                           f"не раньше {earliest.isoformat()}.", field="from", earliest=earliest.isoformat())
    return start, end


async def call_detail(platform: Platform, msisdn: str, start_raw: object, end_raw: object,
                      *, channel: Channel | str = Channel.API) -> Result:
    """M5: calls, SMS and data sessions for a period within the last 6 months. Free."""
    period = _period(platform, start_raw, end_raw)
    if isinstance(period, Result):
        return period
    start, end = period
    if platform.billing is None:
        return Result.fail("unavailable", "Детализация сейчас недоступна.")
    since = (await platform.store.subscribers.profile(msisdn)).owner_since
    records = [_record_dict(r) for r in _since_owner(platform.billing.call_records(msisdn, start, end), since)]
    total = sum(int(r["cost_kop"]) for r in records)
    await platform.store.audit(msisdn, api_audit("call_detail", channel, detail=f"from={start} to={end} via=online"))
    entries = russian.count(len(records), "запись")
    return Result.done(f"Детализация за {start:%d.%m.%Y}–{end:%d.%m.%Y}: {entries} на {rub(total)}.",
                       records=records, total_cost_kop=total, **{"from": start.isoformat(), "to": end.isoformat()})


async def email_call_detail(platform: Platform, msisdn: str, start_raw: object, end_raw: object,
                            *, channel: Channel | str = Channel.API) -> Result:
    """M5 by e-mail: a CSV to the subscriber's address; a refused mail is reported (D3)."""
    period = _period(platform, start_raw, end_raw)
    if isinstance(period, Result):
        return period
    start, end = period
    profile = await platform.store.subscribers.profile(msisdn)
    address = profile.email
    if not address:
        return Result.fail("bad_request", "E-mail для номера не указан.", field="email")
    if platform.mailer is None:
        return Result.fail("unavailable", "Отправка e-mail сейчас недоступна.")
    if platform.billing is None:
        return Result.fail("unavailable", "Детализация сейчас недоступна.")
    records = _since_owner(platform.billing.call_records(msisdn, start, end), profile.owner_since)
    try:
        await platform.mailer.send(address, f"Детализация {start:%d.%m.%Y}–{end:%d.%m.%Y}",
                              f"Детализация номера {msisdn} за {start:%d.%m.%Y}–{end:%d.%m.%Y} во вложении.",
                              (("detail.csv", "text/csv", _records_csv(records).encode()),))
    except MailError as exc:
        await platform.store.audit(msisdn, api_audit("email_failed", channel, exc.kind, f"smtp={exc.smtp_code}"))
        log.warning("email_failed", msisdn=msisdn, smtp_code=exc.smtp_code, kind=exc.kind)
        return Result.fail("mail_failed", f"Письмо не доставлено: {exc.reply}.", smtp_code=exc.smtp_code)
    await platform.store.audit(msisdn, api_audit("call_detail", channel, detail=f"from={start} to={end} via=email"))
    return Result.done(f"Детализация отправлена на {address}.", records=len(records))


# ---- M4: Лёгкий платёж, Локатор, Родительский контроль --------------------------------------
async def easy_payment(platform: Platform, msisdn: str, merchant: object, amount: object,
                       *, channel: Channel | str = Channel.API) -> Result:
    """Лёгкий платёж: pay a merchant from the phone's balance (needs the service and the money)."""
    amount_kop = parse_amount_kop(amount)
    if isinstance(amount_kop, Result):
        return amount_kop
    if not isinstance(merchant, str) or not 1 <= len(merchant.strip()) <= 64:
        return Result.fail("bad_request", "Укажите получателя платежа (до 64 символов).", field="merchant")
    profile = await platform.store.subscribers.profile(msisdn)
    payment = ledger.service_required(msisdn, "easy_pay") + Change(
        must_exist=True, refusal=api_audit("easy_payment", channel, detail=f"amount_kop={amount_kop}"),
        audit=(api_audit("easy_payment", channel, detail=render(amount_kop=amount_kop, merchant=merchant.strip())),))
    applied = await platform.store.update(msisdn, lambda fresh: payment + ledger.debit(fresh, amount_kop))
    if not applied.ok:
        if applied.code == "forbidden":
            return Result.fail("forbidden", "Подключите услугу «Лёгкий платёж».")
        return _refusal(applied, profile, amount_kop, "Платёж")
    return Result.done(f"Оплачено {rub(amount_kop)}. Баланс: {rub(_balance(applied))}.",
                       balance_kop=_balance(applied), autopaid_kop=applied.autopaid_kop)


async def locator_consent(platform: Platform, msisdn: str, requester_raw: object, allow: bool,
                          *, channel: Channel | str = Channel.API) -> Result:
    """Локатор: this subscriber lets `requester` see where they are (or takes it back)."""
    requester = valid_msisdn(requester_raw)
    if requester is None:
        return bad_msisdn(requester_raw, "requester")
    if requester == msisdn:
        return Result.fail("bad_request", "Согласие даётся другому абоненту, не себе.", field="msisdn")
    applied = await platform.store.commit(msisdn, sets.locator_consent(msisdn, requester, allow) + Change(
        must_exist=True,
        audit=(api_audit("locator_consent", channel, detail=f"requester={requester} allow={int(allow)}"),)))
    if not applied.ok:
        return unknown_subscriber(msisdn)
    return Result.done(f"Абоненту {requester} {'разрешено' if allow else 'запрещено'} видеть ваше местоположение.",
                       requester=requester, allowed=allow)


async def locate(platform: Platform, msisdn: str, target_raw: object, *,
                 channel: Channel | str = Channel.API) -> Result:
    """Локатор: where `target` is, only with the service on and the target's consent."""
    store = platform.store
    target = valid_msisdn(target_raw)
    if target is None:
        return bad_msisdn(target_raw, "target")
    profile = await store.subscribers.profile(msisdn)
    if not profile.has_service("locator"):
        return Result.fail("forbidden", "Подключите услугу «Локатор».")
    target_profile = await store.subscribers.profile(target)
    if not target_profile.exists:
        return unknown_subscriber(target)
    if msisdn not in await store.numbers.locator_allowed(target):
        await store.audit(msisdn, api_audit("locate", channel, "no_consent", f"target={target}"))
        return Result.fail("no_consent", f"Абонент {target} не давал согласия на определение местоположения.")
    await store.audit(target, api_audit("located", channel, detail=f"by={msisdn}"))
    await store.audit(msisdn, api_audit("locate", channel, detail=f"target={target}"))
    return Result.done(f"Абонент {target} находится в регионе {target_profile.region}.",
                       **(platform.network.locate(target, target_profile.region or "77") if platform.network else {}))


async def parental_blacklist(platform: Platform, parent: str, child_raw: object, number_raw: object, add: bool,
                             *, channel: Channel | str = Channel.API) -> Result:
    """Родительский контроль: block `number` for the child's number (which must be in the parent's
    «Мои номера», N1)."""
    child = valid_msisdn(child_raw)
    number = valid_msisdn(number_raw)
    if child is None:
        return bad_msisdn(child_raw, "child")
    if number is None:
        return bad_msisdn(number_raw, "number")
    denied = await _parental_access(platform.store, parent, child)
    if denied is not None:
        return denied
    await platform.store.commit(child, sets.blacklisted(child, number, add) + Change(
        must_exist=True,
        audit=(api_audit("parental_blacklist", channel, detail=f"number={number} add={int(add)} by={parent}"),)))
    await platform.store.audit(parent, api_audit("parental_blacklist", channel,
                                                 detail=f"child={child} number={number}"))
    return Result.done(f"Номер {number} {'добавлен в чёрный список' if add else 'убран из чёрного списка'} "
                       f"для {child}.", child=child, number=number, blocked=add)


async def parental_overview(platform: Platform, parent: str, child_raw: object) -> Result:
    """Родительский контроль: the child's balance, services and blacklist."""
    child = valid_msisdn(child_raw)
    if child is None:
        return bad_msisdn(child_raw, "child")
    denied = await _parental_access(platform.store, parent, child)
    if denied is not None:
        return denied
    profile = await platform.store.subscribers.profile(child)
    blocked = sorted(await platform.store.numbers.blacklist(child))
    kop = profile.balance_kop
    return Result.done(f"Баланс ребёнка: {rub(kop)}.", child=child, balance_kop=kop,
                       services=enabled_services(profile), blacklist=blocked, tariff=profile.tariff)


async def _parental_access(store: Store, parent: str, child: str) -> Result | None:
    if not (await store.subscribers.profile(parent)).has_service("parental"):
        return Result.fail("forbidden", "Подключите услугу «Родительский контроль».")
    if not (await store.subscribers.profile(child)).exists:
        return unknown_subscriber(child)
    if not await Grants(store).holds(parent, child):  # N1, both ends (`handlers.access`)
        return Result.fail("forbidden", f"Сначала добавьте номер {child} в «Мои номера» с его паролем.")
    return None


_RECORD_FIELDS = ("at", "kind", "direction", "peer", "duration_s", "volume_kb", "cost_kop")


def _since_owner(records: Iterable[CallRecord], owner_since: float) -> list[CallRecord]:
    """N4: the present owner sees the calls made since the number became hers, none of the previous owner's."""
    if not owner_since:
        return list(records)
    kept = []
    for record in records:
        try:
            at = datetime.fromisoformat(record.at)
        except ValueError:
            continue  # a line whose time cannot be told is not shown to somebody who may not own it
        if at.tzinfo is None:
            at = at.replace(tzinfo=OPERATOR_TZ)
        if at.timestamp() >= owner_since:
            kept.append(record)
    return kept


def _record_dict(record: CallRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _RECORD_FIELDS}


def _records_csv(records: Iterable[CallRecord]) -> str:
    """M5 by e-mail: the detail as the subscriber opens it in a spreadsheet (semicolons, Russian headers)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter=";")
    writer.writerow(["Дата и время", "Вид", "Направление", "Номер", "Длительность, с", "Объём, КБ", "Стоимость, коп"])
    for r in records:
        writer.writerow([r.at, r.kind, r.direction, r.peer, r.duration_s, r.volume_kb, r.cost_kop])
    return buffer.getvalue()
