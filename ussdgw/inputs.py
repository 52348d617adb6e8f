"""One parser for what people and peers type: MSISDNs, phone addresses, whole numbers, digit codes.

Used by the self-care API, the USSD menus, the SMS handlers and the simulator alike, so a rule is
written once. Only ASCII digits count: `str.isdigit()` is true for `²`, `٣` or fullwidth `１`,
which `int()` then rejects or reads as another number. Every input is bounded in length before it
is looked at, so a 5,000-digit "number" costs nothing and answers like any other bad one.
"""

from __future__ import annotations

import re

MAX_INPUT_CHARS = 32
"""Longer than any MSISDN, amount or code written with spaces: anything longer is refused unread."""

_ASCII_DIGITS = re.compile(r"[0-9]+")
_MSISDN_SEPARATORS = re.compile(r"[ ()\-]")
_ADDRESS = re.compile(r"\+?[0-9]{5,15}")


def ascii_digits(value: object, *, max_digits: int = MAX_INPUT_CHARS) -> str | None:
    """`value` as a string of ASCII digits (surrounding blanks dropped), else None."""
    if not isinstance(value, str) or len(value) > MAX_INPUT_CHARS + max_digits:
        return None
    text = value.strip()
    if not 0 < len(text) <= max_digits or not _ASCII_DIGITS.fullmatch(text):
        return None
    return text


def parse_msisdn(value: object) -> str | None:
    """A subscriber's number in the operator's form: '79161234567', '+7 916 123-45-67' and
    '8 (916) 123-45-67' give '79161234567'; anything else gives None."""
    if not isinstance(value, str) or len(value) > MAX_INPUT_CHARS:
        return None
    text = _MSISDN_SEPARATORS.sub("", value.strip())
    if text.startswith("+7"):
        text = text[1:]
    elif len(text) == 11 and text.startswith("8"):
        text = "7" + text[1:]
    if len(text) != 11 or not text.startswith("7") or not _ASCII_DIGITS.fullmatch(text):
        return None
    return text


def parse_address(value: object) -> str | None:
    """A phone's address as an SMPP peer may give it (5 to 15 ASCII digits, an optional '+'),
    without the '+'; anything else (a short code is not a phone) gives None."""
    if not isinstance(value, str) or len(value) > 16 or not _ADDRESS.fullmatch(value):
        return None
    return value.removeprefix("+")


def parse_whole_number(value: object, *, minimum: int = 0, maximum: int) -> int | None:
    """An int from JSON, or ASCII digits from a USSD answer or a form, within [minimum, maximum];
    None for anything else (a bool, a float, Unicode digits, a sign, too many digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        number = value
    else:
        digits = ascii_digits(value, max_digits=len(str(maximum)))
        if digits is None:
            return None
        number = int(digits)
    return number if minimum <= number <= maximum else None
