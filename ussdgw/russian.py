"""Russian that reads right: numbers agreed with their nouns, names in the case a sentence needs,
money and clock times as a Russian reader writes them.

Agreement and cases come from pymorphy3 and its Russian dictionary rather than hand-written endings
("21 балл", "104 записи", "на Марию Смирнову"). Numbers group thousands with a non-breaking space
and stick to their unit with one, so a USSD page or an SMS part never splits "500" from "₽".
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import pymorphy3

__all__ = ["NBSP", "OPERATOR_TZ", "clock_time", "count", "date_time", "inflect_name", "money", "number",
           "plural"]

NBSP: Final = "\u00a0"
OPERATOR_TZ: Final = ZoneInfo("Europe/Moscow")  # the operator's time, shown as «МСК»
ZONE_LABEL: Final = "МСК"


_CASES: Final = {"nomn", "gent", "datv", "accs", "ablt", "loct"}


@functools.cache
def _morph() -> pymorphy3.MorphAnalyzer:
    return pymorphy3.MorphAnalyzer(lang="ru")


def _same_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


@functools.lru_cache(maxsize=4096)
def _agreed(word: str, n: int, case: str) -> str:
    readings = [p for p in _morph().parse(word) if p.tag.case == "nomn" and {"NOUN", "ADJF"} & {p.tag.POS}]
    if not readings:
        return word  # not a noun or adjective in the nominative: a complement, left as written
    reading = readings[0] if case == "nomn" else readings[0].inflect({case})
    agreed = reading.make_agree_with_number(n) if reading is not None else None
    return word if agreed is None else _same_case(word, agreed.word)


def plural(n: int, noun: str, case: str = "nomn") -> str:
    """`noun` (nominative singular, as a dictionary gives it) in the form that agrees with `n`:
    запись → 1 запись, 2 записи, 5 записей, 11 записей, 21 запись; бонусный балл → 2 бонусных
    балла. `case` is what the sentence governs: «не более» + gent → 1 запроса, 5 запросов."""
    if case not in _CASES:
        raise ValueError(f"unknown case {case!r}; one of {sorted(_CASES)}")
    n = abs(n) % 100 + (100 if abs(n) >= 100 else 0)  # only the last two digits decide
    return " ".join(_agreed(word, n, case) for word in noun.split(" "))


def number(n: int) -> str:
    """12345 → '12 345' (thousands grouped by a non-breaking space, as Russian writes them)."""
    return f"{n:,}".replace(",", NBSP)


def count(n: int, noun: str, case: str = "nomn") -> str:
    """'104 записи', '1 000 баллов': the number, a non-breaking space, the agreed noun."""
    return f"{number(n)}{NBSP}{plural(n, noun, case)}"


def money(kop: int) -> str:
    """12345 → '123,45 ₽', 3400000 → '34 000 ₽' (whole roubles show no kopecks)."""
    sign = "-" if kop < 0 else ""
    whole, rest = divmod(abs(kop), 100)
    amount = number(whole) if rest == 0 else f"{number(whole)},{rest:02d}"
    return f"{sign}{amount}{NBSP}₽"


def clock_time(ts: float) -> str:
    """'14:05 МСК': a time of day in the operator's zone, with the zone said."""
    return f"{datetime.fromtimestamp(ts, OPERATOR_TZ):%H:%M}{NBSP}{ZONE_LABEL}"


def date_time(ts: float) -> str:
    """'30.11.2026 14:05 МСК'."""
    return f"{datetime.fromtimestamp(ts, OPERATOR_TZ):%d.%m.%Y %H:%M}{NBSP}{ZONE_LABEL}"


_NAME_TAGS: Final = ("Name", "Surn", "Patr")


@functools.lru_cache(maxsize=4096)
def _inflect_word(word: str, case: str, gender: str | None) -> tuple[str, str | None]:
    """One word of a person's name in `case`, and the gender it was read with (the first name
    decides it for the surname: Смирнова is a woman's surname only next to a woman's name)."""
    candidates = [p for p in _morph().parse(word) if any(tag in p.tag for tag in _NAME_TAGS)
                  and p.tag.case == "nomn" and p.tag.number != "plur"]
    if gender is not None:
        candidates = [p for p in candidates if p.tag.gender is None or p.tag.gender == gender] or candidates
    if not candidates:
        return word, gender
    best = candidates[0]
    inflected = best.inflect({case})
    if inflected is None:
        return word, gender
    return _same_case(word, inflected.word), gender or best.tag.gender


def inflect_name(full_name: str, case: str) -> str:
    """A person's name as written, put in a grammatical case: ('Мария Смирнова', 'accs') → 'Марию
    Смирнову'. A word the dictionary does not know as a name (a company, a Latin name) stays as it is."""
    if case not in _CASES:
        raise ValueError(f"unknown case {case!r}; one of {sorted(_CASES)}")
    if case == "nomn":
        return full_name
    gender: str | None = None
    words = full_name.split()
    # the first name (Name) fixes the gender for the rest, whichever order the words come in
    for word in words:
        for parsed in _morph().parse(word):
            if "Name" in parsed.tag and parsed.tag.case == "nomn":
                gender = parsed.tag.gender
                break
        if gender is not None:
            break
    out: list[str] = []
    for word in words:
        inflected, _ = _inflect_word(word, case, gender)
        out.append(inflected)
    return " ".join(out)
