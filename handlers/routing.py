"""The router's table: (short code, keyword) and USSD service codes -> handler.

Keywords are matched after normalisation (trim, case-fold, ё->е, punctuation dropped), so
`Пароль`, ` пароль!` and `PAROL` find the same route; a keyword typed with look-alike letters of
the other alphabet (`ПAРОЛЬ` with a Latin A, `РЕR` in Cyrillic, `ОN`) finds it too, through its
skeleton. What matches nothing goes to the code's help handler (R9): never silence.
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


# Cyrillic letters that look like Latin ones (in either case as typed on a phone), mapped to the
# Latin look-alike: a keyword's skeleton is the same whichever keyboard each letter came from.
_LOOK_ALIKE = str.maketrans("авекмнорстухіј", "abekmhopctyxij")


def skeleton(keyword: str) -> str:
    """A normalised keyword with every Cyrillic letter that looks like a Latin one made Latin."""
    return keyword.translate(_LOOK_ALIKE)


@dataclass(frozen=True, slots=True)
class SmsRoute:
    short_code: str
    keywords: frozenset[str] | None  # None: any text at all, the empty SMS included
    handler: Handler
    description: str
    # The handler does nothing but its one commit (no costly work, no other write, nothing sent):
    # N3 is checked inside that commit, with no read of the block before it.
    one_commit: bool = False

    def matches(self, keyword: str) -> bool:
        return self.keywords is None or keyword in self.keywords


class AmbiguousKeywords(ValueError):
    """Two routes of one short code whose keywords differ only in look-alike letters."""


@dataclass(frozen=True, slots=True)
class UssdRoute:
    service_code: str  # "111" for *111#, "111*828" for *111*828*...#
    handler: Handler
    description: str


class Router:
    def __init__(self, sms: Iterable[SmsRoute], ussd: Iterable[UssdRoute], help_handler: Handler) -> None:
        self._sms: dict[str, list[SmsRoute]] = {}
        self._skeletons: dict[tuple[str, str], SmsRoute] = {}
        for route in sms:
            normalised = frozenset(normalise_keyword(k) for k in route.keywords) if route.keywords else None
            kept = SmsRoute(route.short_code, normalised, route.handler, route.description, route.one_commit)
            self._sms.setdefault(route.short_code, []).append(kept)
            for keyword in normalised or ():
                other = self._skeletons.setdefault((route.short_code, skeleton(keyword)), kept)
                if other.handler is not kept.handler:
                    raise AmbiguousKeywords(f"{route.short_code}: {keyword!r} ({route.description}) looks like a "
                                            f"keyword of {other.description}")
        self._ussd = {route.service_code: route for route in ussd}
        # R9: what matches nothing gets the code's help, a reply and nothing else.
        self.help_route = SmsRoute("", None, help_handler, "справка", one_commit=True)

    def route_sms(self, short_code: str, text: str) -> SmsRoute:
        keyword = normalise_keyword(text)
        for route in self._sms.get(short_code, ()):
            if route.keywords is not None and keyword in route.keywords:
                return route
        look_alike = self._skeletons.get((short_code, skeleton(keyword)))
        if look_alike is not None:
            return look_alike
        for route in self._sms.get(short_code, ()):
            if route.keywords is None:
                return route
        return self.help_route

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
