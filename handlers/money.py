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

import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import structlog

from handlers.base import Channel
from handlers.catalogue import Service, catalogue, rub
from handlers.selfcare import (
    Result,
    api_audit,
    parse_amount_kop,
)
from ussdgw.store import Applied, Check, Plan, Store, ops_key, sc_apply, sub_key

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
        hset=[(key, "tariff", tariff.id), (key, "tariff_since", int(time.time()))],
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
        hset=[(key, f"svc:{service.id}", int(time.time())), *((key, k, v) for k, v in extra.items())],
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
