"""Money and services (SPEC M1-M6): balance, top-up, tariffs, services, call detail, bonus gifts.

Every function is a plain async function over the store, so the HTTP API and the USSD menu call
the same code: `await switch_tariff(store, msisdn, "smart", channel=Channel.USSD)`. Each returns a
`Result`; a refusal has changed nothing (the check and the write are one Lua script).

M1: what only reads or gives (balance, lists, top-up, switching a service off, call detail, gifts
of points) works at any balance; what costs (a tariff switch, connecting a service) needs a
positive balance at least as large as the price, and says so when refused.

Profile fields used here: balance_kop, bonus_points, tariff, corporate, `svc:<id>` (a connected
service, value = when), autopay_amount_kop / autopay_threshold_kop (Автоплатёж settings).
"""

from __future__ import annotations

import calendar
import csv
import io
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any

import structlog

from handlers.base import Channel
from handlers.catalogue import Service, catalogue, rub
from handlers.ports import CallRecord, MailError
from handlers.selfcare import (
    Env,
    Result,
    api_audit,
    bad_msisdn,
    new_mt,
    parse_amount_kop,
    parse_points,
    unknown_subscriber,
    valid_msisdn,
)
from sms_codes import OPERATOR_TZ, CodePurpose, code_digest, generate_code
from ussdgw.store import (
    Applied,
    Check,
    Plan,
    RateGuard,
    Store,
    blacklist_key,
    gifts_key,
    holds_index_add,
    holds_index_due,
    holds_index_remove,
    holds_key,
    linked_key,
    locator_allow_key,
    ops_key,
    sc_apply,
    sc_attempt,
    sc_hash,
    sc_members,
    sub_key,
)

log = structlog.get_logger("ussdgw.handlers.money")

POINTS_PER_KOP = 1000  # one bonus point for every 10 ₽ paid in
AUTOPAY_MIN_KOP = 10_000
AUTOPAY_MAX_KOP = 500_000


def _paid_checks(msisdn: str, price_kop: int) -> list[Check]:
    """M1: a paid operation needs a positive balance that covers the price."""
    checks = [Check("gt", sub_key(msisdn), "balance_kop", 0, "insufficient_funds")]
    if price_kop > 0:
        checks.append(Check("gte", sub_key(msisdn), "balance_kop", price_kop, "insufficient_funds"))
    return checks


def _no_money(balance_kop: int, price_kop: int, what: str) -> Result:
    need = f" Стоимость: {rub(price_kop)}." if price_kop else ""
    return Result.fail(
        "insufficient_funds",
        f"{what} — платная операция, нужен положительный баланс.{need} Ваш баланс: {rub(balance_kop)}. "
        "Пополните счёт и повторите.",
        balance_kop=balance_kop, price_kop=price_kop,
    )


def enabled_services(profile: Mapping[str, str]) -> list[str]:
    return sorted(k.removeprefix("svc:") for k in profile if k.startswith("svc:"))


# ---- M2: balance and top-up ------------------------------------------------------------------
async def balance(store: Store, msisdn: str, *, channel: Channel | str = Channel.API) -> Result:
    """M2: the balance, bonus points and tariff. Free, at any balance (M1)."""
    profile = await store.subscriber(msisdn)
    kop = int(profile.get("balance_kop", "0"))
    points = int(profile.get("bonus_points", "0"))
    tariff = catalogue().tariff(profile.get("tariff", ""))
    text = f"Баланс: {rub(kop)}. Бонусные баллы: {points}."
    if tariff:
        text += f" Тариф: {tariff.name}."
    return Result.done(text, msisdn=msisdn, balance_kop=kop, bonus_points=points,
                       tariff=profile.get("tariff", ""), tariff_name=tariff.name if tariff else "")


async def top_up(store: Store, msisdn: str, amount: object, *, channel: Channel | str = Channel.API,
                 payment_id: str | None = None) -> Result:
    """M2: pay `amount` kopecks in (from a card); one bonus point per 10 ₽. Idempotent by `payment_id`."""
    amount_kop = parse_amount_kop(amount)
    if isinstance(amount_kop, Result):
        return amount_kop
    points = amount_kop // POINTS_PER_KOP
    plan = Plan(
        hincr=[(sub_key(msisdn), "balance_kop", amount_kop)] + ([(sub_key(msisdn), "bonus_points", points)]
                                                               if points else []),
        audit=[api_audit("top_up", channel, detail=f"amount_kop={amount_kop} points={points}")],
        refusal=api_audit("top_up", channel, detail=f"amount_kop={amount_kop}"),
    )
    if payment_id:
        plan.checks.append(Check("absent", ops_key(msisdn), f"pay:{payment_id}", "", "conflict"))
        plan.hset.append((ops_key(msisdn), f"pay:{payment_id}", amount_kop))
    applied = await sc_apply(store, msisdn, plan)
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", "Этот платёж уже зачислен.", payment_id=payment_id)
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    log.info("top_up", msisdn=msisdn, amount_kop=amount_kop, channel=str(channel))
    return Result.done(f"Счёт пополнен на {rub(amount_kop)}. Баланс: {rub(applied.balance_kop)}.",
                       balance_kop=applied.balance_kop, amount_kop=amount_kop, bonus_points_added=points)


# ---- M3: tariffs -----------------------------------------------------------------------------
async def list_tariffs(store: Store, msisdn: str) -> Result:
    """M3: every tariff with its description and price, and which one is current."""
    profile = await store.subscriber(msisdn)
    current = profile.get("tariff", "")
    corporate = profile.get("corporate", "0") == "1"
    tariffs = [{**t.to_dict(), "current": t.id == current, "available": corporate or not t.corporate_only}
               for t in catalogue().tariffs]
    names = "; ".join(f"{t.name} — {rub(t.monthly_fee_kop)}/мес" for t in catalogue().tariffs)
    return Result.done(f"Тарифы: {names}.", current=current, tariffs=tariffs)


async def switch_tariff(store: Store, msisdn: str, tariff_id: str, *, channel: Channel | str = Channel.API) -> Result:
    """M3 "Перейти на этот тариф": at once; the switch price is charged (M1: positive balance needed)."""
    tariff = catalogue().tariff(tariff_id) if isinstance(tariff_id, str) else None
    if tariff is None:
        ids = ", ".join(t.id for t in catalogue().tariffs)
        return Result.fail("not_found", f"Тариф «{tariff_id}» не найден. Доступные тарифы: {ids}.")
    profile = await store.subscriber(msisdn)
    if not profile:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    current = profile.get("tariff", "")
    if current == tariff.id:
        return Result.fail("conflict", f"Вы уже на тарифе «{tariff.name}».", tariff=tariff.id)
    if tariff.corporate_only and profile.get("corporate", "0") != "1":
        return Result.fail("corporate", f"Тариф «{tariff.name}» доступен только корпоративным клиентам.")
    key = sub_key(msisdn)
    applied = await sc_apply(store, msisdn, Plan(
        checks=[Check("eq", key, "tariff", current, "conflict"), *_paid_checks(msisdn, tariff.switch_price_kop)],
        hset=[(key, "tariff", tariff.id), (key, "tariff_since", int(store.clock.now()))],
        hincr=[(key, "balance_kop", -tariff.switch_price_kop)] if tariff.switch_price_kop else [],
        audit=[api_audit("tariff_switched", channel,
                         detail=f"from={current} to={tariff.id} price_kop={tariff.switch_price_kop}")],
        refusal=api_audit("tariff_switch", channel, detail=f"to={tariff.id}"),
    ))
    if not applied.ok:
        return _refusal(applied, profile, tariff.switch_price_kop, "Смена тарифа")
    log.info("tariff_switched", msisdn=msisdn, tariff=tariff.id, channel=str(channel))
    paid = f" Списано {rub(tariff.switch_price_kop)}." if tariff.switch_price_kop else ""
    return Result.done(f"Тариф изменён на «{tariff.name}».{paid} Баланс: {rub(applied.balance_kop)}.",
                       tariff=tariff.id, balance_kop=applied.balance_kop, autopaid_kop=applied.autopaid_kop)


def _refusal(applied: Applied, profile: Mapping[str, str], price_kop: int, what: str) -> Result:
    if applied.code == "insufficient_funds":
        return _no_money(int(profile.get("balance_kop", "0")), price_kop, what)
    if applied.code == "not_found":
        return Result.fail("unknown_subscriber", "Абонент не найден.")
    return Result.fail("conflict", "Данные изменились, пока выполнялась операция. Повторите запрос.")


# ---- M4: services ----------------------------------------------------------------------------
async def list_services(store: Store, msisdn: str) -> Result:
    """M4: every service with its price and whether it is connected."""
    profile = await store.subscriber(msisdn)
    on = set(enabled_services(profile))
    services: list[dict[str, Any]] = []
    for s in catalogue().services:
        entry: dict[str, Any] = {**s.to_dict(), "enabled": s.id in on}
        if s.id == "autopay" and s.id in on:
            entry["params"] = {"amount_kop": int(profile.get("autopay_amount_kop", "0")),
                               "threshold_kop": int(profile.get("autopay_threshold_kop", "0"))}
        services.append(entry)
    names = ", ".join(s.name for s in catalogue().services if s.id in on) or "нет"
    return Result.done(f"Подключённые услуги: {names}.", services=services)


def _autopay_params(params: Mapping[str, Any] | None) -> dict[str, int] | Result:
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
    return {"autopay_amount_kop": amount, "autopay_threshold_kop": threshold}


def _service(service_id: object) -> Service | Result:
    service = catalogue().service(service_id) if isinstance(service_id, str) else None
    if service is None:
        ids = ", ".join(s.id for s in catalogue().services)
        return Result.fail("not_found", f"Услуга «{service_id}» не найдена. Доступные услуги: {ids}.")
    return service


async def service_on(store: Store, msisdn: str, service_id: str, *, channel: Channel | str = Channel.API,
                     params: Mapping[str, Any] | None = None) -> Result:
    """M4: connect a service (paid: positive balance needed, M1). Автоплатёж takes
    params {amount_kop, threshold_kop}: when a debit leaves the balance at or below the threshold,
    the amount is paid in from the card at once."""
    service = _service(service_id)
    if isinstance(service, Result):
        return service
    extra: dict[str, int] = {}
    if service.id == "autopay":
        parsed = _autopay_params(params)
        if isinstance(parsed, Result):
            return parsed
        extra = parsed
    profile = await store.subscriber(msisdn)
    if not profile:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    key = sub_key(msisdn)
    price = service.connect_price_kop
    applied = await sc_apply(store, msisdn, Plan(
        checks=[Check("absent", key, f"svc:{service.id}", "", "conflict"), *_paid_checks(msisdn, price)],
        hset=[(key, f"svc:{service.id}", int(store.clock.now())), *((key, k, v) for k, v in extra.items())],
        hincr=[(key, "balance_kop", -price)] if price else [],
        audit=[api_audit("service_on", channel, detail=f"service={service.id} price_kop={price}")],
        refusal=api_audit("service_on", channel, detail=f"service={service.id}"),
    ))
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", f"Услуга «{service.name}» уже подключена.", service=service.id)
        return _refusal(applied, profile, price, f"Подключение услуги «{service.name}»")
    log.info("service_on", msisdn=msisdn, service=service.id, channel=str(channel))
    return Result.done(f"Услуга «{service.name}» подключена.", service=service.id, enabled=True,
                       balance_kop=applied.balance_kop)


async def service_off(store: Store, msisdn: str, service_id: str, *, channel: Channel | str = Channel.API) -> Result:
    """M4: switch a service off. Free, at any balance."""
    service = _service(service_id)
    if isinstance(service, Result):
        return service
    key = sub_key(msisdn)
    fields = [f"svc:{service.id}"]
    if service.id == "autopay":
        fields += ["autopay_amount_kop", "autopay_threshold_kop"]
    applied = await sc_apply(store, msisdn, Plan(
        checks=[Check("exists", key, f"svc:{service.id}", "", "conflict")],
        hdel=[(key, f) for f in fields],
        audit=[api_audit("service_off", channel, detail=f"service={service.id}")],
        refusal=api_audit("service_off", channel, detail=f"service={service.id}"),
    ))
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", f"Услуга «{service.name}» не подключена.", service=service.id)
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    log.info("service_off", msisdn=msisdn, service=service.id, channel=str(channel))
    return Result.done(f"Услуга «{service.name}» отключена.", service=service.id, enabled=False)


async def charge(store: Store, msisdn: str, amount: object, *, reason: str = "usage",
                 channel: Channel | str = "billing") -> Result:
    """Billing takes money for usage (calls, monthly fees); the balance may go negative.
    This is what Автоплатёж reacts to."""
    amount_kop = parse_amount_kop(amount)
    if isinstance(amount_kop, Result):
        return amount_kop
    applied = await sc_apply(store, msisdn, Plan(
        hincr=[(sub_key(msisdn), "balance_kop", -amount_kop)],
        audit=[api_audit("charged", channel, detail=f"amount_kop={amount_kop} reason={reason[:40]}")],
    ))
    if not applied.ok:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    return Result.done(f"Списано {rub(amount_kop)}. Баланс: {rub(applied.balance_kop)}.",
                       balance_kop=applied.balance_kop, autopaid_kop=applied.autopaid_kop)


def _op_id() -> str:
    return uuid.uuid4().hex[:16]


def _json(data: Mapping[str, Any]) -> str:
    return json.dumps(dict(data), ensure_ascii=False, separators=(",", ":"))


# ---- holds: money or points taken now for a step in another subscriber's slot ---------------
async def place_hold(store: Store, payer: str, op: str, *, field: str, amount: int, purpose: str, to: str,
                     channel: Channel | str, paid: bool, event: str) -> Applied:
    """Take `amount` of `field` from `payer` into a hold `op` (one script: checked, taken, recorded)."""
    key = sub_key(payer)
    checks = [Check("absent", holds_key(payer), f"{op}:state", "", "conflict")]
    if paid:
        checks += _paid_checks(payer, amount)
    else:
        checks.append(Check("gte", key, field, amount, "insufficient_funds"))
    now = store.clock.now()
    applied = await sc_apply(store, payer, Plan(
        checks=checks,
        hincr=[(key, field, -amount)],
        hset=[(holds_key(payer), op, _json({"purpose": purpose, "to": to, "field": field, "amount": amount})),
              (holds_key(payer), f"{op}:state", "held"), (holds_key(payer), f"{op}:at", f"{now:.3f}")],
        audit=[api_audit(event, channel, detail=f"op={op} {field}={amount} to={to}")],
        refusal=api_audit(event, channel, detail=f"{field}={amount} to={to}"),
    ))
    if applied.ok:
        await holds_index_add(store, payer, op, now)
    return applied


async def settle_hold(store: Store, payer: str, op: str, outcome: str, *, channel: Channel | str = "system") -> bool:
    """Finish hold `op`: `captured` (the other step happened) or `refunded` (it never will). Once only."""
    holds = await sc_hash(store, holds_key(payer))
    if op not in holds:
        return False
    record = json.loads(holds[op])
    plan = Plan(
        checks=[Check("eq", holds_key(payer), f"{op}:state", "held", "conflict")],
        hset=[(holds_key(payer), f"{op}:state", outcome)],
        audit=[api_audit(f"hold_{outcome}", channel, detail=f"op={op} {record['field']}={record['amount']}")],
    )
    if outcome == "refunded":
        plan.hincr.append((sub_key(payer), record["field"], int(record["amount"])))
    applied = await sc_apply(store, payer, plan)
    await holds_index_remove(store, payer, op)
    log.info("hold_settled", msisdn=payer, op=op, outcome=outcome, done=applied.ok)
    return applied.ok


# ---- M6: bonus points gift ------------------------------------------------------------------
GIFT_CODE_DIGITS = 6


def gift_sms(sender: str, points: int, code: str, ttl_s: int) -> str:
    """One UCS2 segment (70 characters) for any gift: a one-part SMS cannot be mixed up with another."""
    return f"{sender} дарит {points} {points_word(points)}. Код: {code}. Введите в ЛК за {max(1, ttl_s // 60)} мин"


def points_word(n: int) -> str:
    """1 балл, 2 балла, 5 баллов, 11 баллов, 21 балл."""
    if n % 10 == 1 and n % 100 != 11:
        return "балл"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "балла"
    return "баллов"


async def gift_points(env: Env, sender: str, recipient_raw: object, points_raw: object,
                      *, channel: Channel | str = Channel.API) -> Result:
    """M6: the sender's points go into a hold, the recipient gets an SMS code; the points reach the
    recipient only when the code is entered (`accept_gift`), else they return to the sender."""
    recipient = valid_msisdn(recipient_raw)
    if recipient is None:
        return bad_msisdn(recipient_raw)
    if recipient == sender:
        return Result.fail("bad_request", "Нельзя подарить баллы самому себе.", field="to")
    points = parse_points(points_raw)
    if isinstance(points, Result):
        return points
    if not await env.store.subscriber(recipient):
        return unknown_subscriber(recipient)
    guard = env.secret_guard()
    busy = await env.store.rate_peek(recipient, guard)
    if busy is not None:
        return Result.fail("rate_limited", "Получателю недавно отправлялся код. Повторите подарок позже.",
                           retry_at=busy[1])
    tid = _op_id()
    held = await place_hold(env.store, sender, tid, field="bonus_points", amount=points, purpose="gift",
                            to=recipient, channel=channel, paid=False, event="gift_sent")
    if not held.ok:
        have = int((await env.store.subscriber(sender)).get("bonus_points", "0"))
        return Result.fail("insufficient_funds", f"Недостаточно бонусных баллов: у вас {have}, "
                           f"а подарок — {points}.", bonus_points=have)
    code = generate_code(GIFT_CODE_DIGITS)
    digest = code_digest(env.settings.secret_key_bytes(), CodePurpose.BONUS_GIFT, recipient, code)
    ttl = env.settings.gift_code_ttl_s
    gifts = gifts_key(recipient)
    expires = env.now() + ttl
    mt = new_mt(recipient, gift_sms(sender, points, code, ttl), secret=True)
    offered = await sc_apply(env.store, recipient, Plan(
        checks=[Check("absent", gifts, f"{tid}:state", "", "conflict")],
        guards=[guard],
        hset=[(gifts, tid, _json({"from": sender, "amount": points, "digest": digest})),
              (gifts, f"{tid}:state", "offered"), (gifts, f"{tid}:expires", f"{expires:.3f}"),
              (gifts, f"code:{digest}", tid)],
        messages=[mt],
        audit=[api_audit("gift_offered", channel, detail=f"op={tid} points={points} from={sender}")],
    ))
    if not offered.ok:
        await _void_gift(env.store, recipient, tid)
        await settle_hold(env.store, sender, tid, "refunded", channel=channel)
        return Result.fail("rate_limited", "Получателю недавно отправлялся код. Баллы возвращены, повторите позже.",
                           retry_at=offered.retry_at)
    env.dispatch([mt])
    log.info("gift_offered", msisdn=sender, recipient=recipient, points=points)
    return Result.done(f"Код подтверждения отправлен на номер {recipient}. Баллы ({points}) будут зачислены "
                       "после ввода кода получателем.", gift_id=tid, points=points, to=recipient,
                       expires_at=expires)


async def _void_gift(store: Store, recipient: str, tid: str) -> None:
    """Mark a gift that was never offered as void, so that no late offer can follow the refund."""
    await sc_apply(store, recipient, Plan(
        must_exist=False, checks=[Check("absent", gifts_key(recipient), f"{tid}:state", "", "conflict")],
        hset=[(gifts_key(recipient), f"{tid}:state", "void")],
    ))


async def _expire_gift(store: Store, recipient: str, tid: str, now: float) -> bool:
    gifts = await sc_hash(store, gifts_key(recipient))
    record = json.loads(gifts.get(tid, "{}"))
    applied = await sc_apply(store, recipient, Plan(
        checks=[Check("eq", gifts_key(recipient), f"{tid}:state", "offered", "conflict"),
                Check("lte", gifts_key(recipient), f"{tid}:expires", f"{now:.3f}", "conflict")],
        hset=[(gifts_key(recipient), f"{tid}:state", "expired")],
        hdel=[(gifts_key(recipient), f"code:{record.get('digest', '')}")],
        audit=[api_audit("gift_expired", "system", detail=f"op={tid}")],
    ))
    return applied.ok


async def accept_gift(env: Env, recipient: str, code_raw: object, *, channel: Channel | str = Channel.API) -> Result:
    """M6: the recipient enters the SMS code; the points are credited once, the sender's hold captured."""
    if not isinstance(code_raw, str) or not code_raw.strip().isdigit() or len(code_raw.strip()) != GIFT_CODE_DIGITS:
        return Result.fail("bad_request", f"Код подтверждения — {GIFT_CODE_DIGITS} цифр из SMS.", field="code")
    wrong_codes = RateGuard("gift_code_wrong", 0, 10)  # 10 wrong codes an hour: no brute force of 6 digits
    limited = await env.store.rate_peek(recipient, wrong_codes)
    if limited is not None:
        return Result.fail("rate_limited", "Слишком много неверных кодов. Попробуйте позже.", retry_at=limited[1])
    digest = code_digest(env.settings.secret_key_bytes(), CodePurpose.BONUS_GIFT, recipient, code_raw.strip())
    gifts = await sc_hash(env.store, gifts_key(recipient))
    tid = gifts.get(f"code:{digest}")
    if tid is None or tid not in gifts:
        await sc_attempt(env.store, recipient, wrong_codes)
        await env.store.audit(recipient, api_audit("gift_accept", channel, "wrong_code"))
        return Result.fail("wrong_code", "Неверный код подтверждения. Баллы не зачислены.")
    record = json.loads(gifts[tid])
    sender, points = str(record["from"]), int(record["amount"])
    now = env.now()
    key = gifts_key(recipient)
    applied = await sc_apply(env.store, recipient, Plan(
        checks=[Check("eq", key, f"{tid}:state", "offered", "conflict"),
                Check("gte", key, f"{tid}:expires", f"{now:.3f}", "expired")],
        hincr=[(sub_key(recipient), "bonus_points", points)],
        hset=[(key, f"{tid}:state", "accepted")],
        hdel=[(key, f"code:{digest}")],
        audit=[api_audit("gift_accepted", channel, detail=f"op={tid} points={points} from={sender}")],
        refusal=api_audit("gift_accept", channel, detail=f"op={tid}"),
    ))
    if not applied.ok:
        if applied.code == "expired" and await _expire_gift(env.store, recipient, tid, now):
            await settle_hold(env.store, sender, tid, "refunded")
        if applied.code == "expired":
            return Result.fail("expired", "Срок действия кода истёк. Баллы возвращены отправителю.")
        return Result.fail("conflict", "Этот подарок уже получен или отменён.")
    await settle_hold(env.store, sender, tid, "captured", channel=channel)
    log.info("gift_accepted", msisdn=recipient, sender=sender, points=points)
    return Result.done(f"Зачислено {points} {points_word(points)} от {sender}.", points=points, gift_id=tid,
                       **{"from": sender})


async def pending_gifts(store: Store, msisdn: str) -> Result:
    """Gifts sent and received that are still waiting for their code."""
    incoming = await sc_hash(store, gifts_key(msisdn))
    holds = await sc_hash(store, holds_key(msisdn))
    received = [{"gift_id": k, "from": json.loads(v)["from"], "points": json.loads(v)["amount"],
                 "state": incoming.get(f"{k}:state", ""), "expires_at": float(incoming.get(f"{k}:expires", 0))}
                for k, v in incoming.items() if ":" not in k]
    sent = [{"gift_id": k, "to": json.loads(v)["to"], "points": json.loads(v)["amount"],
             "state": holds.get(f"{k}:state", "")}
            for k, v in holds.items() if ":" not in k and json.loads(v)["purpose"] == "gift"]
    return Result.done(f"Подарков в ожидании: {sum(g['state'] == 'offered' for g in received)}.",
                       received=received, sent=sent)


async def recover_holds(env: Env, *, older_than_s: float | None = None) -> dict[str, int]:
    """Finish holds a crash (or an unanswered gift) left open: capture what the other side applied,
    refund what it never will. Safe to run anywhere, any number of times."""
    age = env.settings.hold_recovery_s if older_than_s is None else older_than_s
    counts = {"captured": 0, "refunded": 0, "pending": 0}
    now = env.now()
    for payer, op in await holds_index_due(env.store, now - age):
        holds = await sc_hash(env.store, holds_key(payer))
        if holds.get(f"{op}:state") != "held":
            await holds_index_remove(env.store, payer, op)
            continue
        record = json.loads(holds[op])
        target = str(record["to"])
        outcome: str | None
        if record["purpose"] == "gift":
            outcome = await _gift_outcome(env.store, target, op, now)
        else:
            outcome = await _op_outcome(env.store, target, op)
        if outcome is None:
            counts["pending"] += 1
            continue
        if await settle_hold(env.store, payer, op, outcome, channel="recovery"):
            counts[outcome] += 1
    if counts["captured"] or counts["refunded"]:
        log.info("holds_recovered", **counts)
    return counts


async def _gift_outcome(store: Store, recipient: str, tid: str, now: float) -> str | None:
    state = (await sc_hash(store, gifts_key(recipient))).get(f"{tid}:state")
    if state is None:
        await _void_gift(store, recipient, tid)
        state = (await sc_hash(store, gifts_key(recipient))).get(f"{tid}:state")
    if state == "offered" and await _expire_gift(store, recipient, tid, now):
        state = "expired"
    return {"accepted": "captured", "void": "refunded", "expired": "refunded"}.get(state or "")


async def _op_outcome(store: Store, target: str, op: str) -> str | None:
    await sc_apply(store, target, Plan(must_exist=False,
                                       checks=[Check("absent", ops_key(target), op, "", "conflict")],
                                       hset=[(ops_key(target), op, "void")]))
    state = (await sc_hash(store, ops_key(target))).get(op)
    return {"applied": "captured", "void": "refunded"}.get(state or "")


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


def _period(env: Env, start_raw: object, end_raw: object) -> tuple[date, date] | Result:
    start, end = _parse_day(start_raw, "from"), _parse_day(end_raw, "to")
    if isinstance(start, Result):
        return start
    if isinstance(end, Result):
        return end
    today = datetime.fromtimestamp(env.now(), OPERATOR_TZ).date()
    if start > end:
        return Result.fail("bad_request", "Начало периода позже его конца.", field="from")
    if end > today:
        return Result.fail("bad_request", "Период не может заканчиваться в будущем.", field="to")
    earliest = _months_back(today, DETAIL_MONTHS)
    if start < earliest:
        return Result.fail("bad_request", f"Детализация доступна за последние {DETAIL_MONTHS} месяцев: "
                           f"не раньше {earliest.isoformat()}.", field="from", earliest=earliest.isoformat())
    return start, end


async def call_detail(env: Env, msisdn: str, start_raw: object, end_raw: object,
                      *, channel: Channel | str = Channel.API) -> Result:
    """M5: calls, SMS and data sessions for a period within the last 6 months. Free."""
    period = _period(env, start_raw, end_raw)
    if isinstance(period, Result):
        return period
    start, end = period
    if env.billing is None:
        return Result.fail("unavailable", "Детализация сейчас недоступна.")
    records = [_record_dict(r) for r in env.billing.call_records(msisdn, start, end)]
    total = sum(int(r["cost_kop"]) for r in records)
    await env.store.audit(msisdn, api_audit("call_detail", channel, detail=f"from={start} to={end} via=online"))
    return Result.done(f"Детализация за {start:%d.%m.%Y}–{end:%d.%m.%Y}: {len(records)} записей на {rub(total)}.",
                       records=records, total_cost_kop=total, **{"from": start.isoformat(), "to": end.isoformat()})


async def email_call_detail(env: Env, msisdn: str, start_raw: object, end_raw: object,
                            *, channel: Channel | str = Channel.API) -> Result:
    """M5 by e-mail: a CSV to the subscriber's address; a refused mail is reported (D3)."""
    period = _period(env, start_raw, end_raw)
    if isinstance(period, Result):
        return period
    start, end = period
    address = (await env.store.subscriber(msisdn)).get("email", "")
    if not address:
        return Result.fail("bad_request", "E-mail для номера не указан.", field="email")
    if env.mailer is None:
        return Result.fail("unavailable", "Отправка e-mail сейчас недоступна.")
    if env.billing is None:
        return Result.fail("unavailable", "Детализация сейчас недоступна.")
    records = env.billing.call_records(msisdn, start, end)
    try:
        await env.mailer.send(address, f"Детализация {start:%d.%m.%Y}–{end:%d.%m.%Y}",
                              f"Детализация номера {msisdn} за {start:%d.%m.%Y}–{end:%d.%m.%Y} во вложении.",
                              (("detail.csv", "text/csv", _records_csv(records).encode()),))
    except MailError as exc:
        await env.store.audit(msisdn, api_audit("email_failed", channel, exc.kind, f"smtp={exc.smtp_code}"))
        log.warning("email_failed", msisdn=msisdn, smtp_code=exc.smtp_code, kind=exc.kind)
        return Result.fail("mail_failed", f"Письмо не доставлено: {exc.reply}.", smtp_code=exc.smtp_code)
    await env.store.audit(msisdn, api_audit("call_detail", channel, detail=f"from={start} to={end} via=email"))
    return Result.done(f"Детализация отправлена на {address}.", records=len(records))


# ---- M4: Лёгкий платёж, Локатор, Родительский контроль --------------------------------------
async def easy_payment(store: Store, msisdn: str, merchant: object, amount: object,
                       *, channel: Channel | str = Channel.API) -> Result:
    """Лёгкий платёж: pay a merchant from the phone's balance (needs the service and the money)."""
    amount_kop = parse_amount_kop(amount)
    if isinstance(amount_kop, Result):
        return amount_kop
    if not isinstance(merchant, str) or not 1 <= len(merchant.strip()) <= 64:
        return Result.fail("bad_request", "Укажите получателя платежа (до 64 символов).", field="merchant")
    key = sub_key(msisdn)
    profile = await store.subscriber(msisdn)
    applied = await sc_apply(store, msisdn, Plan(
        checks=[Check("exists", key, "svc:easy_pay", "", "forbidden"), *_paid_checks(msisdn, amount_kop)],
        hincr=[(key, "balance_kop", -amount_kop)],
        audit=[api_audit("easy_payment", channel, detail=f"amount_kop={amount_kop} merchant={merchant.strip()[:64]}")],
        refusal=api_audit("easy_payment", channel, detail=f"amount_kop={amount_kop}"),
    ))
    if not applied.ok:
        if applied.code == "forbidden":
            return Result.fail("forbidden", "Подключите услугу «Лёгкий платёж».")
        return _refusal(applied, profile, amount_kop, "Платёж")
    return Result.done(f"Оплачено {rub(amount_kop)}. Баланс: {rub(applied.balance_kop)}.",
                       balance_kop=applied.balance_kop, autopaid_kop=applied.autopaid_kop)


async def locator_consent(store: Store, msisdn: str, requester_raw: object, allow: bool,
                          *, channel: Channel | str = Channel.API) -> Result:
    """Локатор: this subscriber lets `requester` see where they are (or takes it back)."""
    requester = valid_msisdn(requester_raw)
    if requester is None:
        return bad_msisdn(requester_raw)
    if requester == msisdn:
        return Result.fail("bad_request", "Согласие даётся другому абоненту, не себе.", field="msisdn")
    key = locator_allow_key(msisdn)
    plan = Plan(audit=[api_audit("locator_consent", channel, detail=f"requester={requester} allow={int(allow)}")])
    (plan.sadd if allow else plan.srem).append((key, requester))
    applied = await sc_apply(store, msisdn, plan)
    if not applied.ok:
        return unknown_subscriber(msisdn)
    return Result.done(f"Абоненту {requester} {'разрешено' if allow else 'запрещено'} видеть ваше местоположение.",
                       requester=requester, allowed=allow)


async def locate(env: Env, msisdn: str, target_raw: object, *, channel: Channel | str = Channel.API) -> Result:
    """Локатор: where `target` is, only with the service on and the target's consent."""
    store = env.store
    target = valid_msisdn(target_raw)
    if target is None:
        return bad_msisdn(target_raw)
    profile = await store.subscriber(msisdn)
    if "svc:locator" not in profile:
        return Result.fail("forbidden", "Подключите услугу «Локатор».")
    target_profile = await store.subscriber(target)
    if not target_profile:
        return unknown_subscriber(target)
    if msisdn not in await sc_members(store, locator_allow_key(target)):
        await store.audit(msisdn, api_audit("locate", channel, "no_consent", f"target={target}"))
        return Result.fail("no_consent", f"Абонент {target} не давал согласия на определение местоположения.")
    await store.audit(target, api_audit("located", channel, detail=f"by={msisdn}"))
    await store.audit(msisdn, api_audit("locate", channel, detail=f"target={target}"))
    return Result.done(f"Абонент {target} находится в регионе {target_profile.get('region', '')}.",
                       **(env.network.locate(target, target_profile.get("region", "77")) if env.network else {}))


async def parental_blacklist(env: Env, parent: str, child_raw: object, number_raw: object, add: bool,
                             *, channel: Channel | str = Channel.API) -> Result:
    """Родительский контроль: block `number` for the child's number (which must be in the parent's
    «Мои номера», N1)."""
    child = valid_msisdn(child_raw)
    number = valid_msisdn(number_raw)
    if child is None:
        return bad_msisdn(child_raw)
    if number is None:
        return bad_msisdn(number_raw)
    denied = await _parental_access(env.store, parent, child)
    if denied is not None:
        return denied
    plan = Plan(audit=[api_audit("parental_blacklist", channel, detail=f"number={number} add={int(add)} by={parent}")])
    (plan.sadd if add else plan.srem).append((blacklist_key(child), number))
    await sc_apply(env.store, child, plan)
    await env.store.audit(parent, api_audit("parental_blacklist", channel, detail=f"child={child} number={number}"))
    return Result.done(f"Номер {number} {'добавлен в чёрный список' if add else 'убран из чёрного списка'} "
                       f"для {child}.", child=child, number=number, blocked=add)


async def parental_overview(env: Env, parent: str, child_raw: object) -> Result:
    """Родительский контроль: the child's balance, services and blacklist."""
    child = valid_msisdn(child_raw)
    if child is None:
        return bad_msisdn(child_raw)
    denied = await _parental_access(env.store, parent, child)
    if denied is not None:
        return denied
    profile = await env.store.subscriber(child)
    blocked = sorted(await sc_members(env.store, blacklist_key(child)))
    kop = int(profile.get("balance_kop", "0"))
    return Result.done(f"Баланс ребёнка: {rub(kop)}.", child=child, balance_kop=kop,
                       services=enabled_services(profile), blacklist=blocked, tariff=profile.get("tariff", ""))


async def _parental_access(store: Store, parent: str, child: str) -> Result | None:
    if "svc:parental" not in await store.subscriber(parent):
        return Result.fail("forbidden", "Подключите услугу «Родительский контроль».")
    if not await store.subscriber(child):
        return unknown_subscriber(child)
    if child not in await sc_members(store, linked_key(parent)):
        return Result.fail("forbidden", f"Сначала добавьте номер {child} в «Мои номера» с его паролем.")
    return None


_RECORD_FIELDS = ("at", "kind", "direction", "peer", "duration_s", "volume_kb", "cost_kop")


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
