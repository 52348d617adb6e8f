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

from handlers import access, number_management
from handlers.account import check_owner_identity, check_password
from handlers.base import Channel
from handlers.catalogue import rub
from handlers.money import new_op_id, place_hold, settle_hold
from handlers.operations import Result, api_audit, bad_msisdn, unknown_subscriber, valid_msisdn
from handlers.ports import Platform
from sms_codes import OPERATOR_TZ
from ussdgw import russian
from ussdgw.audit_detail import render
from ussdgw.logs import get_logger
from ussdgw.store import Asset, Change, Profile, Store, grants
from ussdgw.store import numbers as sets
from ussdgw.store.grants import Grants
from ussdgw.store.money import op_marked
from ussdgw.store.profile import blocked, failures_reset, owner_changed, unblocked

log = get_logger("ussdgw.handlers.numbers")

OWNER_CHANGE_FEE_KOP = 34_000
MAX_LINKED = 20
MAX_BLOCK_AHEAD_DAYS = 365


async def may_act_on(store: Store, actor: str, target: str) -> bool:
    """Whether `actor` may act on `target` at all (`handlers.access`, the one model)."""
    return await access.grant_of(store, actor, target) is not None


async def joined_numbers(store: Store, msisdn: str) -> list[str]:
    return await access.joined_numbers(store, msisdn)


# ---- N1 ------------------------------------------------------------------------------------
async def link_number(platform: Platform, msisdn: str, other_raw: object, password: object,
                      *, channel: Channel | str = Channel.API) -> Result:
    """`other` into `msisdn`'s «Мои номера» with `other`'s password: the granting end in `other`'s
    slot first (guarded by the password just checked), then `msisdn`'s end (`ussdgw.store.grants`)."""
    other = valid_msisdn(other_raw)
    if other is None:
        return bad_msisdn(other_raw)
    if other == msisdn:
        return Result.fail("bad_request", "Это ваш собственный номер.", field="msisdn")
    if not isinstance(password, str) or not 1 <= len(password) <= 64:
        return Result.fail("bad_request", f"Укажите пароль номера {other} от его Личного кабинета.", field="password")
    if await Grants(platform.store).holds(msisdn, other):
        return Result.fail("conflict", f"Номер {other} уже в «Моих номерах».")
    # An unknown number and a wrong password answer alike (`check_password`): linking is no probe.
    checked = await check_password(platform, other, password, channel=channel, purpose="link_number")
    if not checked.ok:
        if checked.code == "wrong_password":
            return Result.fail("wrong_password", f"Неверный номер или пароль номера {other}. Номер не добавлен.")
        return checked
    if other in await platform.store.numbers.linked(msisdn):  # a dead end of an earlier grant: given anew below
        holder_end = Change()
    elif len(await platform.store.numbers.linked(msisdn)) >= MAX_LINKED:
        return Result.fail("conflict", f"В «Моих номерах» не больше {MAX_LINKED} номеров.")
    else:
        holder_end = sets.linked(msisdn, other, limit=MAX_LINKED)
    given = await platform.store.commit(other, grants.granted(other, msisdn, checked.data["pw_hash"])
                                   + failures_reset(other) + Change(
        must_exist=True, audit=(api_audit("linked_by", channel, detail=f"account={msisdn}"),)))
    if not given.ok:
        return Result.fail("conflict", f"Пароль номера {other} только что изменился. Номер не добавлен.")
    applied = await platform.store.commit(msisdn, holder_end + Change(
        must_exist=True, audit=(api_audit("number_linked", channel, detail=f"number={other}"),),
        refusal=api_audit("number_link", channel, detail=f"number={other}")))
    if not applied.ok:  # raced with another link: the lone granting end is taken back
        await platform.store.commit(other, grants.withdrawn(other, msisdn))
        if applied.code == "too_many":
            return Result.fail("conflict", f"В «Моих номерах» не больше {MAX_LINKED} номеров.")
        return Result.fail("conflict", f"Номер {other} уже в «Моих номерах».")
    log.info("number_linked", msisdn=msisdn, phone=other)
    return Result.done(f"Номер {other} добавлен в «Мои номера».", msisdn=other)


async def unlink_number(platform: Platform, msisdn: str, other_raw: object, *,
                        channel: Channel | str = Channel.API) -> Result:
    """The holder gives a linked number up: the granting end goes first, then the holder's."""
    other = valid_msisdn(other_raw)
    if other is None:
        return bad_msisdn(other_raw)
    if other not in await platform.store.numbers.linked(msisdn):
        return Result.fail("not_found", f"Номера {other} нет в «Моих номерах».")
    await _revoke(platform, holder=msisdn, target=other, channel=channel, by="holder")
    return Result.done(f"Номер {other} убран из «Моих номеров».", msisdn=other)


async def revoke_link(platform: Platform, target: str, holder_raw: object, *,
                      channel: Channel | str = Channel.API) -> Result:
    """The linked number's owner takes the grant back: `holder` may no longer act on `target`."""
    holder = valid_msisdn(holder_raw)
    if holder is None:
        return bad_msisdn(holder_raw, "holder")
    if holder not in await Grants(platform.store).held_by(target):
        return Result.fail("not_found", f"Номер {holder} не управляет номером {target}.")
    await _revoke(platform, holder=holder, target=target, channel=channel, by="target")
    return Result.done(f"Номер {holder} больше не управляет номером {target}.", msisdn=holder)


async def _revoke(platform: Platform, *, holder: str, target: str, channel: Channel | str, by: str) -> None:
    await platform.store.commit(target, grants.withdrawn(target, holder) + Change(
        audit=(api_audit("link_revoked", channel, detail=render(holder=holder, by=by)),)))
    await platform.store.commit(holder, sets.unlinked(holder, target, known=False) + Change(
        audit=(api_audit("number_unlinked", channel, detail=render(number=target, by=by)),)))
    log.info("link_revoked", msisdn=target, phone=holder, by=by)


async def linked_numbers(platform: Platform, msisdn: str) -> Result:
    """The numbers `msisdn` may act on by N1 (a holder's end whose granting end is gone is not one)."""
    held = sorted(await platform.store.numbers.linked(msisdn))
    live = [n for n, ok in zip(held, await Grants(platform.store).granting_ends(msisdn, held), strict=True) if ok]
    numbers: list[dict[str, Any]] = []
    now = platform.now()
    for other, profile in zip(live, await platform.store.subscribers.profiles(*live), strict=True):
        numbers.append({"msisdn": other, "balance_kop": profile.balance_kop,
                        "tariff": profile.tariff, "state": block_state(profile, _today(now))})
    return Result.done(f"В «Моих номерах» {russian.count(len(numbers), 'номер')}.", numbers=numbers)


async def linked_to(platform: Platform, msisdn: str) -> Result:
    """Who may act on `msisdn`, and why (N1: the numbers it is linked to; N2: the joined ones),
    so that its owner sees every grant and can revoke it."""
    grantees: list[dict[str, Any]] = []
    for holder in sorted(await Grants(platform.store).held_by(msisdn)):
        complete = msisdn in await platform.store.numbers.linked(holder)
        grantees.append({"msisdn": holder, "origin": access.Origin.LINKED.value,
                         "state": "active" if complete else "incomplete"})
    for member in await access.joined_numbers(platform.store, msisdn):
        grantees.append({"msisdn": member, "origin": access.Origin.JOINED.value, "state": "active"})
    return Result.done(f"Номером управляют: {len(grantees)}.", grantees=grantees)


# ---- N3 ------------------------------------------------------------------------------------
def _today(now: float) -> date:
    return datetime.fromtimestamp(now, OPERATOR_TZ).date()


def block_state(profile: Profile, today: date) -> str:
    """active | scheduled (a block from a later date) | blocked."""
    since = profile.blocked_from
    if since is None:
        return "active"
    return "blocked" if since <= today else "scheduled"


async def block_number(platform: Platform, msisdn: str, from_raw: object, *,
                       channel: Channel | str = Channel.API) -> Result:
    """N3: the SIM becomes unusable from `from` (YYYY-MM-DD, today or later)."""
    today = _today(platform.now())
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
    applied = await platform.store.commit(msisdn, blocked(msisdn, since) + Change(
        must_exist=True, audit=(api_audit("number_blocked", channel, detail=f"from={since.isoformat()}"),),
        refusal=api_audit("number_block", channel, detail=f"from={since.isoformat()}")))
    if not applied.ok:
        if applied.code == "conflict":
            return Result.fail("conflict", "Номер уже заблокирован или блокировка назначена. Сначала снимите её.")
        return unknown_subscriber(msisdn)
    state = "blocked" if since == today else "scheduled"
    text = "Номер заблокирован." if state == "blocked" else f"Номер будет заблокирован с {since:%d.%m.%Y}."
    return Result.done(text, state=state, blocked_from=since.isoformat())


async def unblock_number(platform: Platform, msisdn: str, *, actor: str | None = None,
                         channel: Channel | str = Channel.API) -> Result:
    """N3: the owner lifts the block from another way in (`actor`: a linked or joined number's
    session; None: support); never from the blocked SIM itself."""
    blocked_from = (await platform.store.subscribers.profile(msisdn)).blocked_from
    if actor == msisdn and access.blocked_on(blocked_from, platform.now()):
        return Result.fail("forbidden", "Заблокированный номер не снимает блокировку сам: войдите в кабинет "
                           "другого номера владельца или обратитесь в поддержку.")
    applied = await platform.store.commit(msisdn, unblocked(msisdn) + Change(
        must_exist=True, audit=(api_audit("number_unblocked", channel),)))
    if not applied.ok:
        return Result.fail("conflict", "Номер не заблокирован.") if applied.code == "conflict" \
            else unknown_subscriber(msisdn)
    return Result.done("Номер разблокирован.", state="active")


async def support_unblock(platform: Platform, msisdn_raw: object, passport: object, contract: object,
                          *, operator: str = "admin") -> Result:
    """N3 by support: the owner proved by passport data and contract number (as P9), never the SIM."""
    msisdn, refusal = await check_owner_identity(platform, msisdn_raw, passport, contract, event="number_unblock",
                                                 operator=operator, unchanged="Блокировка не снята.")
    if refusal is not None:
        return refusal
    return await unblock_number(platform, msisdn, channel="admin")


async def number_state(platform: Platform, msisdn: str) -> Result:
    profile = await platform.store.subscribers.profile(msisdn)
    state = block_state(profile, _today(platform.now()))
    return Result.done({"active": "Номер активен.", "scheduled": "Блокировка назначена.",
                        "blocked": "Номер заблокирован."}[state], state=state,
                       blocked_from=profile.blocked_from.isoformat() if profile.blocked_from else None)


# ---- N4 ------------------------------------------------------------------------------------
def _person(profile: Profile) -> tuple[str, str]:
    return profile.owner_id, "".join(profile.passport.split())


async def change_owner(platform: Platform, msisdn: str, new_owner_raw: object, new_owner_password: object,
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
    number = await platform.store.subscribers.profile(msisdn)
    debt = number.balance_kop
    if debt < 0:
        await platform.store.audit(msisdn, api_audit("owner_change", channel, "debt", f"balance_kop={debt}"))
        return Result.fail("debt", f"У номера задолженность {rub(-debt)}. Погасите её до переоформления.",
                           balance_kop=debt)
    # The new owner's consent first: until it is given, nothing about that number is told (an
    # unknown number and a wrong password answer alike, see `check_password`).
    checked = await check_password(platform, payer, new_owner_password, channel=channel, purpose="owner_change_consent")
    if not checked.ok:
        if checked.code == "wrong_password":
            return Result.fail("wrong_password", f"Неверный номер или пароль нового владельца ({payer}). "
                               "Переоформление не выполнено.")
        return checked
    new = await platform.store.subscribers.profile(payer)
    old_id, old_passport = _person(number)
    new_id, new_passport = _person(new)
    if old_id == new_id or (old_passport and old_passport == new_passport):
        return same_owner
    op = new_op_id()
    held = await place_hold(platform.store, payer, op, asset=Asset.MONEY, amount=OWNER_CHANGE_FEE_KOP,
                            purpose="owner_change", to=msisdn, channel=channel, paid=True, event="owner_change_fee")
    if not held.ok:
        have = new.balance_kop
        return Result.fail("insufficient_funds", f"Переоформление стоит {rub(OWNER_CHANGE_FEE_KOP)}, они списываются "
                           f"с баланса нового владельца ({payer}: {rub(have)}). Пополните счёт.",
                           balance_kop=have, price_kop=OWNER_CHANGE_FEE_KOP)
    contract = f"D-{_today(platform.now()).year}-{secrets.randbelow(10**6):06d}"
    holds, held_by = await platform.store.numbers.linked(msisdn), await Grants(platform.store).held_by(msisdn)
    applied = await platform.store.commit(msisdn, (
        op_marked(msisdn, op, "applied") + owner_changed(msisdn, number, new, contract, platform.now())
        + grants.all_ended(msisdn, holds, held_by) + Change(
            must_exist=True, refusal=api_audit("owner_change", channel, detail=f"op={op}"),
            audit=(api_audit("owner_changed", channel, detail=f"op={op} from={old_id} to={new_id} fee_payer={payer}"),),
            read_profile=True)))
    if not applied.ok:
        await platform.store.commit(msisdn, op_marked(msisdn, op, "void") + Change(must_exist=True))
        await settle_hold(platform.store, payer, op, "refunded", channel=channel)
        if applied.code == "debt":
            return Result.fail("debt", "У номера появилась задолженность. Переоформление отменено, плата возвращена.")
        return Result.fail("conflict", "Владелец номера изменился. Переоформление отменено, плата возвращена.")
    await settle_hold(platform.store, payer, op, "captured", channel=channel)
    await _ended_with_old_owner(platform, msisdn, number, holds, held_by, channel)
    log.info("owner_changed", msisdn=msisdn, phone=payer)
    balance_kop = applied.profile.balance_kop if applied.profile else 0
    new_owner = russian.inflect_name(new.owner_name, "accs") if new.owner_name else "нового владельца"
    return Result.done(f"Номер {msisdn} переоформлен на {new_owner}. "
                       f"С номера {payer} списано {rub(OWNER_CHANGE_FEE_KOP)}. Баланс номера "
                       f"{rub(balance_kop)} переходит новому владельцу и не возвращается.",
                       owner_id=new_id, contract=contract, fee_kop=OWNER_CHANGE_FEE_KOP, balance_kop=balance_kop)


async def _ended_with_old_owner(platform: Platform, msisdn: str, before: Profile, holds: set[str], held_by: set[str],
                                channel: Channel | str) -> None:
    """After an owner change (already final in the number's own slot, which alone decides every
    grant): the other ends of its grants are tidied, and its N2 account is re-checked without it."""
    for holder in sorted(held_by):
        await platform.store.commit(holder, sets.unlinked(holder, msisdn, known=False) + Change(
            audit=(api_audit("number_unlinked", channel, detail=render(number=msisdn, by="owner_change")),)))
    for target in sorted(holds):
        await platform.store.commit(target, grants.withdrawn(target, msisdn) + Change(
            audit=(api_audit("link_revoked", channel, detail=render(holder=msisdn, by="owner_change")),)))
    platform.dispatch(await number_management.member_changed(platform.store, msisdn, before, reason="owner_change"))
