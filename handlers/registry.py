"""The explicit registry: every short code and USSD string the platform serves (SPEC R1-R9)."""

from __future__ import annotations

from handlers import number_management, ussd_menu
from handlers.archives import open_mms_archive, sms_archive_code
from handlers.base import Context
from handlers.password import issue_password
from handlers.routing import Router, SmsRoute, UssdRoute
from ussdgw.store import AuditEvent

SMS_ROUTES = [
    SmsRoute("3339", frozenset({"пароль", "parol", "password"}), issue_password,
             "ПАРОЛЬ - новый пароль для Личного кабинета"),
    SmsRoute("7888", frozenset({"логин", "login"}), issue_password, "ЛОГИН - восстановить пароль"),
    # Archives: R3 -> A1 code, R4 -> A2 open for 72 h (any text, the empty SMS included).
    SmsRoute("232", frozenset({"per", "on"}), sms_archive_code, "PER или ON - код доступа к архиву SMS"),
    SmsRoute("1234", None, open_mms_archive, "любое SMS - открыть архив MMS на 72 часа", one_commit=True),
]
# USSD: the longest registered prefix wins (`*111*828*1#` -> 111*828); handlers/ussd.py runs them.
USSD_ROUTES: list[UssdRoute] = [
    UssdRoute("100", ussd_menu.balance, "баланс"),
    UssdRoute("111", ussd_menu.selfcare_menu, "меню"),
    UssdRoute("111*828", number_management.number_management, "Управление номерами"),
]


def help_text_for(router: Router, short_code: str) -> str:
    routes = router.sms_routes(short_code)
    if routes:
        lines = "; ".join(r.description for r in routes)
        return f"Не удалось распознать запрос. На номер {short_code} можно отправить: {lines}."
    codes = ", ".join(router.short_codes())
    return f"Номер {short_code} не обслуживается. Сервисные номера: {codes}. Справка: *111#."


HELP_TEXTS_KEPT = 1024  # help texts kept per router, one per short code written to (any digits may be)


def build_router() -> Router:
    router: Router
    texts: dict[str, str] = {}  # the routes never change once built: each code's help is written once

    async def send_help(ctx: Context) -> None:
        """R9: the help reply of the code that was written to."""
        code = ctx.message.short_code
        text = texts.get(code)
        if text is None:
            text = help_text_for(router, code)
            if len(texts) < HELP_TEXTS_KEPT:
                texts[code] = text
        await ctx.reply(text, audit=[AuditEvent("unknown_request", ctx.message.channel, outcome="help_sent")])

    router = Router(SMS_ROUTES, USSD_ROUTES, send_help)
    return router
