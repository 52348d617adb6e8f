"""The router's table: (short code, keyword) and USSD service codes -> handler.

Keywords are matched after normalisation (trim, case-fold, ё->е, punctuation dropped), so
`Пароль`, ` пароль!` and `PAROL` find the same route. What matches nothing goes to the code's
help handler (R9): never silence.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from handlers.base import Handler

_PUNCT = re.compile(r"[^\w*#]+", re.UNICODE)


def normalise_keyword(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    return _PUNCT.sub(" ", text).strip()


@dataclass(frozen=True, slots=True)
class SmsRoute:
    short_code: str
    keywords: frozenset[str] | None  # None: any text at all, the empty SMS included
    handler: Handler
    description: str

    def matches(self, keyword: str) -> bool:
        return self.keywords is None or keyword in self.keywords


@dataclass(frozen=True, slots=True)
class UssdRoute:
    service_code: str  # "111" for *111#, "111*828" for *111*828*...#
    handler: Handler
    description: str


class Router:
    def __init__(self, sms: Iterable[SmsRoute], ussd: Iterable[UssdRoute], help_handler: Handler) -> None:
        self._sms: dict[str, list[SmsRoute]] = {}
        for route in sms:
            normalised = frozenset(normalise_keyword(k) for k in route.keywords) if route.keywords else None
            self._sms.setdefault(route.short_code, []).append(
                SmsRoute(route.short_code, normalised, route.handler, route.description)
            )
        self._ussd = {route.service_code: route for route in ussd}
        self.help_handler = help_handler

    def route_sms(self, short_code: str, text: str) -> Handler:
        keyword = normalise_keyword(text)
        for route in self._sms.get(short_code, ()):
            if route.matches(keyword):
                return route.handler
        return self.help_handler

    def route_ussd(self, service_code: str) -> UssdRoute | None:
        """The longest registered prefix of `service_code` (`111*828` before `111`)."""
        parts = service_code.split("*")
        for n in range(len(parts), 0, -1):
            route = self._ussd.get("*".join(parts[:n]))
            if route is not None:
                return route
        return None

    def sms_routes(self, short_code: str | None = None) -> list[SmsRoute]:
        if short_code is None:
            return [r for routes in self._sms.values() for r in routes]
        return list(self._sms.get(short_code, ()))

    def short_codes(self) -> list[str]:
        return sorted(self._sms)

    def ussd_routes(self) -> list[UssdRoute]:
        return list(self._ussd.values())
