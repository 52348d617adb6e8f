"""Numbers (SPEC N1, N3, N4): linked numbers, block from a date, change of owner.

- N1 «Мои номера»: a subscriber adds another subscriber's number by showing that number's
  self-care password (a wrong one counts towards that number's P4 lock). From then on the
  subscriber may act on it through the API (`may_act_on`).
  Numbers joined by an active N2 group («Управление номерами») are acted on the same way.
- N3: block the number from a chosen date (today or later); unblock at any time.
- N4: change of owner. 340 ₽ from the new owner's balance (the new owner is named by one of their
  numbers and consents with its password); the old owner may have no debt (the number's balance is
  not negative); one person cannot be both sides; the balance passes to the new owner, not refunded.
  The fee is a hold on the payer's number, the change an idempotent step on the number itself, then
  the hold is captured (or refunded if the change was refused): no step spans two slots.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime, timedelta
from typing import Any

import structlog

from handlers.account import check_password
from handlers.base import Channel
from handlers.catalogue import rub
from handlers.money import new_op_id, place_hold, settle_hold
from handlers.selfcare import Env, Result, api_audit, bad_msisdn, unknown_subscriber, valid_msisdn
from sms_codes import OPERATOR_TZ
from ussdgw import russian
from ussdgw.store import Asset, Change, Profile, Store
from ussdgw.store import numbers as sets
from ussdgw.store.money import op_marked
from ussdgw.store.profile import blocked, failures_reset, owner_changed, unblocked

log = structlog.get_logger("ussdgw.handlers.numbers")

OWNER_CHANGE_FEE_KOP = 34_000
MAX_LINKED = 20
MAX_BLOCK_AHEAD_DAYS = 365


async def may_act_on(store: Store, actor: str, target: str) -> bool:
    """An MSISDN acts on its own account, on one it linked with that number's password (N1), or on
    a number joined with it by an active «Управление номерами» (N2: "without additional sign-in")."""
    if actor == target or target in await store.numbers.linked(actor):
        return True
    return target in await joined_numbers(store, actor)


async def joined_numbers(store: Store, msisdn: str) -> list[str]:
    """The other numbers of `msisdn`'s active N2 group that still belong to its owner (a number sold
    since (N4) is no longer one of them), in the group's order; [] outside an active group."""
    profile = await store.subscribers.profile(msisdn)
    group = profile.n2.group
    if not group:
        return []
    head = profile if group == msisdn else await store.subscribers.profile(group)
    members = head.n2.numbers
    owner = profile.owner_id
    if head.n2.state != "active" or msisdn not in members or not owner:
        return []
    others = [m for m in members if m != msisdn]
    profiles = await store.subscribers.profiles(*others)
    return [m for m, p in zip(others, profiles, strict=True) if p.owner_id == owner and p.n2.group == group]


# ---- N1 ------------------------------------------------------------------------------------
async def link_number(env: Env, msisdn: str, other_raw: object, password: object,
                      *, channel: Channel | str = Channel.API) -> Result:
    other = valid_msisdn(other_raw)
    if other is None:
        return bad_msisdn(other_raw)
    if other == msisdn:
        return Result.fail("bad_request", "Это ваш собственный номер.", field="msisdn")
    if not isinstance(password, str) or not 1 <= len(password) <= 64:
        return Result.fail("bad_request", f"Укажите пароль номера {other} от его Личного кабинета.", field="password")
    if other in await env.store.numbers.linked(msisdn):
        return Result.fail("conflict", f"Номер {other} уже в «Моих номерах».")
    # An unknown number and a wrong password answer alike (`check_password`): linking is no probe.
    checked = await check_password(env, other, password, channel=channel, purpose="link_number")
    if not checked.ok:
        if checked.code == "wrong_password":
            return Result.fail("wrong_password", f"Неверный номер или пароль номера {other}. Номер не добавлен.")
        return checked
    applied = await env.store.commit(msisdn, sets.linked(msisdn, other, limit=MAX_LINKED) + Change(
        must_exist=True, audit=(api_audit("number_linked", channel, detail=f"number={other}"),),
        refusal=api_audit("number_link", channel, detail=f"number={other}")))
    if not applied.ok:
        if applied.code == "too_many":
            return Result.fail("conflict", f"В «Моих номерах» не больше {MAX_LINKED} номеров.")
        return Result.fail("conflict", f"Номер {other} уже в «Моих номерах».")
    await env.store.commit(other, failures_reset(other) + Change(
        must_exist=True, audit=(api_audit("linked_by", channel, detail=f"account={msisdn}"),)))
    log.info("number_linked", msisdn=msisdn, phone=other)
    return Result.done(f"Номер {other} добавлен в «Мои номера».", msisdn=other)


async def unlink_number(env: Env, msisdn: str, other_raw: object, *, channel: Channel | str = Channel.API) -> Result:
    other = valid_msisdn(other_raw)
    if other is None:
        return bad_msisdn(other_raw)
    applied = await env.store.commit(msisdn, sets.unlinked(msisdn, other) + Change(
        must_exist=True, audit=(api_audit("number_unlinked", channel, detail=f"number={other}"),)))
    if not applied.ok:
        return Result.fail("not_found", f"Номера {other} нет в «Моих номерах».")
    return Result.done(f"Номер {other} убран из «Моих номеров».", msisdn=other)


async def linked_numbers(store: Store, msisdn: str) -> Result:
    numbers: list[dict[str, Any]] = []
    today = _today(store.clock.now())
    for other in sorted(await store.numbers.linked(msisdn)):
        profile = await store.subscribers.profile(other)
        numbers.append({"msisdn": other, "balance_kop": profile.balance_kop,
                        "tariff": profile.tariff, "state": block_state(profile, today)})
    return Result.done(f"В «Моих номерах» {russian.count(len(numbers), 'номер')}.", numbers=numbers)


# ---- N3 ------------------------------------------------------------------------------------
def _today(now: float) -> date:
    return datetime.fromtimestamp(now, OPERATOR_TZ).date()


def block_state(profile: Profile, today: date) -> str:
    """active | scheduled (a block from a later date) | blocked."""
    since = profile.blocked_from
    if since is None:
        return "active"
    return "blocked" if since <= today else "scheduled"


async def block_number(env: Env, msisdn: str, from_raw: object, *, channel: Channel | str = Channel.API) -> Result:
    """N3: the SIM becomes unusable from `from` (YYYY-MM-DD, today or later)."""
    today = _today(env.now())
    try:
        since = date.fromisoformat(from_raw) if isinstance(from_raw, str) else None
    except ValueError:
        since = None
    if since is None:
        return Result.fail("bad_request", "Дата блокировки — в формате ГГГГ-ММ-ДД.", field="from")
    if since < today:
        return Result.fail("bad_request", "Дата блокировки не может быть в прошлом.", field="from")
    if since > today + timedelta(days=MAX_BLOCK_AHEAD_DAYS):
        return Result.fail("bad_request", "Блокировку можно назначить не дальше чем на год вперёд.", field="from")
    applied = await env.store.commit(msisdn, blocked(msisdn, since) + Change(
        must_exist=True, audit=(api_audit("number_blocked", channel, detail=f"from={since.isoformat()}"),),
        refusal=api_audit("number_block", channel, detail=f"from={since.isoformat()}")))
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", "Номер уже заблокирован или блокировка назначена. Сначала снимите её.")
        return unknown_subscriber(msisdn)
    state = "blocked" if since == today else "scheduled"
    text = "Номер заблокирован." if state == "blocked" else f"Номер будет заблокирован с {since:%d.%m.%Y}."
    return Result.done(text, state=state, blocked_from=since.isoformat())


async def unblock_number(env: Env, msisdn: str, *, channel: Channel | str = Channel.API) -> Result:
    applied = await env.store.commit(msisdn, unblocked(msisdn) + Change(
        must_exist=True, audit=(api_audit("number_unblocked", channel),)))
    if not applied.ok:
        return Result.fail("conflict", "Номер не заблокирован.") if applied.code == "conflict" \
            else unknown_subscriber(msisdn)
    return Result.done("Номер разблокирован.", state="active")


async def number_state(env: Env, msisdn: str) -> Result:
    profile = await env.store.subscribers.profile(msisdn)
    state = block_state(profile, _today(env.now()))
    return Result.done({"active": "Номер активен.", "scheduled": "Блокировка назначена.",
                        "blocked": "Номер заблокирован."}[state], state=state,
                       blocked_from=profile.blocked_from.isoformat() if profile.blocked_from else None)


# ---- N4 ------------------------------------------------------------------------------------
def _person(profile: Profile) -> tuple[str, str]:
    return profile.owner_id, "".join(profile.passport.split())


async def change_owner(env: Env, msisdn: str, new_owner_raw: object, new_owner_password: object,
                       *, channel: Channel | str = Channel.API) -> Result:
    """N4: the number passes to the owner of `new_owner` (one of their numbers), who consents with
    that number's password and pays 340 ₽ from its balance."""
    payer = valid_msisdn(new_owner_raw)
    if payer is None:
        return bad_msisdn(new_owner_raw, "new_owner_msisdn")
    if not isinstance(new_owner_password, str) or not 1 <= len(new_owner_password) <= 64:
        return Result.fail("bad_request", "Укажите пароль номера нового владельца.", field="password")
    same_owner = Result.fail("same_owner", "Прежний и новый владелец — одно лицо: переоформление невозможно.")
    if payer == msisdn:
        return same_owner
    number = await env.store.subscribers.profile(msisdn)
    debt = number.balance_kop
    if debt < 0:
        await env.store.audit(msisdn, api_audit("owner_change", channel, "debt", f"balance_kop={debt}"))
        return Result.fail("debt", f"У номера задолженность {rub(-debt)}. Погасите её до переоформления.",
                           balance_kop=debt)
    # The new owner's consent first: until it is given, nothing about that number is told (an
    # unknown number and a wrong password answer alike, see `check_password`).
    checked = await check_password(env, payer, new_owner_password, channel=channel, purpose="owner_change_consent")
    if not checked.ok:
        if checked.code == "wrong_password":
            return Result.fail("wrong_password", f"Неверный номер или пароль нового владельца ({payer}). "
                               "Переоформление не выполнено.")
        return checked
    new = await env.store.subscribers.profile(payer)
    old_id, old_passport = _person(number)
    new_id, new_passport = _person(new)
    if old_id == new_id or (old_passport and old_passport == new_passport):
        return same_owner
    op = new_op_id()
    held = await place_hold(env.store, payer, op, asset=Asset.MONEY, amount=OWNER_CHANGE_FEE_KOP,
                            purpose="owner_change", to=msisdn, channel=channel, paid=True, event="owner_change_fee")
    if not held.ok:
        have = new.balance_kop
        return Result.fail("insufficient_funds", f"Переоформление стоит {rub(OWNER_CHANGE_FEE_KOP)}, они списываются "
                           f"с баланса нового владельца ({payer}: {rub(have)}). Пополните счёт.",
                           balance_kop=have, price_kop=OWNER_CHANGE_FEE_KOP)
    contract = f"D-{_today(env.now()).year}-{secrets.randbelow(10**6):06d}"
    old_linked = sorted(await env.store.numbers.linked(msisdn))
    applied = await env.store.commit(msisdn, (
        op_marked(msisdn, op, "applied") + owner_changed(msisdn, number, new, contract, env.now())
        + sets.unlinked(msisdn, *old_linked, known=False) + Change(
            must_exist=True, refusal=api_audit("owner_change", channel, detail=f"op={op}"),
            audit=(api_audit("owner_changed", channel, detail=f"op={op} from={old_id} to={new_id} fee_payer={payer}"),),
            read_profile=True)))
    if not applied.ok:
        await env.store.commit(msisdn, op_marked(msisdn, op, "void") + Change(must_exist=True))
        await settle_hold(env.store, payer, op, "refunded", channel=channel)
        if applied.code == "debt":
            return Result.fail("debt", "У номера появилась задолженность. Переоформление отменено, плата возвращена.")
        return Result.fail("conflict", "Владелец номера изменился. Переоформление отменено, плата возвращена.")
    await settle_hold(env.store, payer, op, "captured", channel=channel)
    log.info("owner_changed", msisdn=msisdn, phone=payer)
    balance_kop = applied.profile.balance_kop if applied.profile else 0
    new_owner = russian.inflect_name(new.owner_name, "accs") if new.owner_name else "нового владельца"
    return Result.done(f"Номер {msisdn} переоформлен на {new_owner}. "
                       f"С номера {payer} списано {rub(OWNER_CHANGE_FEE_KOP)}. Баланс номера "
                       f"{rub(balance_kop)} переходит новому владельцу и не возвращается.",
                       owner_id=new_id, contract=contract, fee_kop=OWNER_CHANGE_FEE_KOP, balance_kop=balance_kop)
