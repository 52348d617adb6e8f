"""R8 `*100#` balance and R7 `*111#` the self-service menu (the menu is data: ussd_menus/selfcare.yaml).

The menu's actions call the same business functions as the self-care HTTP API (`handlers.money`:
tariffs, services; `handlers.number_management`: N2), so both channels follow one set of rules.
Self-care is free at any balance (M1); a paid switch is refused with the reason by `money`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from importlib import resources

from handlers import access, d2, money, number_management
from handlers.base import Channel, Context
from handlers.catalogue import catalogue, rub
from handlers.operations import Result
from handlers.password import password_reply
from sms_codes import generate_password
from ussd_menus.engine import ANSWERED, ActionResult, Bindings, End, Goto, Menu, load_menu
from ussdgw.inputs import parse_whole_number
from ussdgw.logs import get_logger
from ussdgw.store import AuditEvent, Change, Profile
from ussdgw.store.profile import new_password

log = get_logger("ussdgw.handlers.ussd_menu")


def balance_text(profile: Profile) -> str:
    kopecks = profile.balance_kop
    text = f"Ваш баланс: {rub(kopecks)}."
    if kopecks <= 0:
        text += " Пополните счёт: платные услуги недоступны."
    return text


async def balance(ctx: Context) -> None:
    """R8: *100# shows the balance and closes."""
    ctx.ussd_step()  # a USSD route: never reached over SMS
    profile = await ctx.profile()
    await ctx.end(balance_text(profile), audit=[AuditEvent("balance_shown", Channel.USSD)])


async def selfcare_menu(ctx: Context) -> None:
    """R7: *111# and its direct strings (*111*2#: the tariffs at once)."""
    ussd = ctx.ussd_step()
    if ussd.is_dial:
        await MENU.start(ctx, ussd.args)
    else:
        assert ussd.answer is not None
        await MENU.answer(ctx, ussd.answer)


# ---- actions ------------------------------------------------------------------------------------
def _end(result: Result, event: str, detail: str = "") -> End:
    outcome = "ok" if result.ok else result.code
    return End(result.text, {"audit": [AuditEvent(event, Channel.USSD, outcome=outcome, detail=detail)]})


async def act_balance(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    return End(balance_text(await ctx.profile()), {"audit": [AuditEvent("balance_shown", Channel.USSD)]})


async def act_switch_tariff(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    result = await money.switch_tariff(ctx.platform, ctx.msisdn, params["id"], channel=Channel.USSD)
    return _end(result, "ussd_tariff_switch", f"to={params['id']}")


async def act_service_on(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    if params["id"] == "autopay":
        return Goto("autopay_amount", {"id": "autopay"})
    result = await money.service_on(ctx.platform, ctx.msisdn, params["id"], channel=Channel.USSD)
    return _end(result, "ussd_service_on", f"service={params['id']}")


async def act_autopay_on(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    assert value is not None
    roubles = parse_whole_number(value, minimum=AUTOPAY_MIN_RUB, maximum=AUTOPAY_MAX_RUB)
    if roubles is None:  # the menu's validator let it through: it cannot, but never crash on it
        return End(ROUBLES_HINT)
    amount_kop = roubles * 100
    result = await money.service_on(ctx.platform, ctx.msisdn, "autopay", channel=Channel.USSD,
                                    params={"amount_kop": amount_kop, "threshold_kop": 0})
    return _end(result, "ussd_service_on", "service=autopay")


async def act_service_off(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    result = await money.service_off(ctx.platform, ctx.msisdn, params["id"], channel=Channel.USSD)
    return _end(result, "ussd_service_off", f"service={params['id']}")


async def act_new_password(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    """R1 from the menu: the password goes by SMS from 3339; the USSD screen only says so. A member
    of an N2 account gets the common one, set on every member."""
    if await access.joined_numbers(ctx.store, ctx.msisdn):
        await number_management.common_password(ctx)
        return ANSWERED
    guards = d2.own(ctx.settings, d2.Kind.PASSWORD)
    refused = await d2.peek(ctx.store, ctx.msisdn, guards)
    if refused is not None:
        _, reason, retry_at = refused
        return End(d2.refusal(d2.Kind.PASSWORD, guards, reason, retry_at, ctx.clock.now()),
                   {"audit": [AuditEvent("password_refused", Channel.USSD, outcome="rate_limited", detail=reason)]})
    password = generate_password()
    pw_hash = await ctx.hash_password(password)
    return End(
        "Новый пароль отправлен вам по SMS с номера 3339.",
        {"change": new_password(ctx.msisdn, pw_hash, ctx.clock.now()) + Change(guards=guards),
         "audit": [AuditEvent("password_issued", Channel.USSD, detail="via=*111#")],
         "messages": [ctx.sms(password_reply(password), "3339", secret=True)]},
        refused_text="Пароль недавно уже отправлялся. Попробуйте чуть позже.",
    )


async def act_n2_apply(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    await number_management.apply(ctx)
    return ANSWERED


async def act_n2_off(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    await number_management.switch_off(ctx)
    return ANSWERED


async def act_n2_password(ctx: Context, params: Mapping[str, str], value: str | None) -> ActionResult:
    await number_management.common_password(ctx)
    return ANSWERED


# ---- lists, texts, validators ---------------------------------------------------------------------
async def list_tariffs(ctx: Context, params: Mapping[str, str]) -> Sequence[tuple[str, str]]:
    return tariff_entries((await ctx.profile()).corporate)


@functools.cache
def tariff_entries(corporate: bool) -> tuple[tuple[str, str], ...]:
    """The tariffs' list lines, the same for every subscriber of a kind (the catalogue is read once)."""
    return tuple((t.id, f"{t.name} {rub(t.monthly_fee_kop)}/мес")
                 for t in catalogue().tariffs if corporate or not t.corporate_only)


async def text_current_tariff(ctx: Context, params: Mapping[str, str]) -> str:
    return current_tariff_header((await ctx.profile()).tariff)


@functools.lru_cache(maxsize=256)
def current_tariff_header(tariff_id: str) -> str:
    tariff = catalogue().tariff(tariff_id)
    return f"Ваш тариф: {tariff.name}. Тарифы:" if tariff else "Тарифы:"


async def text_tariff_card(ctx: Context, params: Mapping[str, str]) -> str:
    tariff = catalogue().tariff(params.get("id", ""))
    if tariff is None:
        return "Тариф не найден."
    price = f"переход {rub(tariff.switch_price_kop)}" if tariff.switch_price_kop else "переход бесплатно"
    return f"{tariff.name}: {tariff.description} {rub(tariff.monthly_fee_kop)}/мес, {price}."


async def list_services(ctx: Context, params: Mapping[str, str]) -> Sequence[tuple[str, str]]:
    on = set(money.enabled_services(await ctx.profile()))
    return [(s.id, f"{s.name} ({'вкл' if s.id in on else 'выкл'})") for s in catalogue().services]


async def text_service_card(ctx: Context, params: Mapping[str, str]) -> str:
    service = catalogue().service(params.get("id", ""))
    if service is None:
        return "Услуга не найдена."
    state = "подключена" if service.id in money.enabled_services(await ctx.profile()) else "не подключена"
    fee = f"{rub(service.monthly_fee_kop)}/мес" if service.monthly_fee_kop else "бесплатно"
    return f"Услуга «{service.name}» {state}. {service.description} {fee}."


async def text_numbers_card(ctx: Context, params: Mapping[str, str]) -> str:
    return f"{number_management.OPTION}: {number_management.short_state(await ctx.profile())}."


AUTOPAY_MIN_RUB, AUTOPAY_MAX_RUB = 100, 5000
ROUBLES_HINT = f"Введите сумму цифрами, от {AUTOPAY_MIN_RUB} до {AUTOPAY_MAX_RUB}."


def validate_roubles(value: str) -> str | None:
    if parse_whole_number(value, minimum=AUTOPAY_MIN_RUB, maximum=AUTOPAY_MAX_RUB) is None:
        return ROUBLES_HINT
    return None


BINDINGS = Bindings(
    actions={
        "balance": act_balance, "switch_tariff": act_switch_tariff, "service_on": act_service_on,
        "service_off": act_service_off, "autopay_on": act_autopay_on, "new_password": act_new_password,
        "n2_apply": act_n2_apply, "n2_off": act_n2_off, "n2_password": act_n2_password,
    },
    lists={"tariffs": list_tariffs, "services": list_services},
    texts={"current_tariff": text_current_tariff, "tariff_card": text_tariff_card,
           "service_card": text_service_card, "numbers_card": text_numbers_card},
    validators={"roubles": validate_roubles},
)


def _load() -> Menu:
    with resources.as_file(resources.files("ussd_menus").joinpath("selfcare.yaml")) as path:
        return load_menu(path, BINDINGS)


MENU: Menu = _load()
