"""One parser for typed input: ASCII digits only, bounded length, the same answer on every channel."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ussdgw.inputs import ascii_digits, parse_address, parse_msisdn, parse_whole_number


@pytest.mark.parametrize("raw", ["79161234567", "+79161234567", "89161234567", "+7 916 123-45-67",
                                 " 8 (916) 123-45-67 "])
def test_the_forms_a_subscriber_writes_give_one_msisdn(raw: str) -> None:
    assert parse_msisdn(raw) == "79161234567"


@pytest.mark.parametrize("raw", ["7916123456", "791612345678", "69161234567", "+89161234567", "7916123456７",
                                 "7916123456²", "٧٩١٦١٢٣٤٥٦٧", "7" * 5000, "", 79161234567, None, "79161234567\x00"])
def test_anything_else_is_not_an_msisdn(raw: object) -> None:
    assert parse_msisdn(raw) is None


@pytest.mark.parametrize(("raw", "expected"), [
    ("1", 1), (" 42 ", 42), (7, 7), ("²", None), ("１２", None), ("-3", None), ("+3", None), ("3.0", None),
    (True, None), (3.0, None), ("9" * 5000, None), ("", None), ("0", 0),
])
def test_whole_numbers_are_ascii_digits_or_json_ints(raw: object, expected: int | None) -> None:
    assert parse_whole_number(raw, maximum=10**9) == expected


def test_bounds_are_kept() -> None:
    assert parse_whole_number("5", minimum=1, maximum=4) is None
    assert parse_whole_number(0, minimum=1, maximum=4) is None
    assert parse_whole_number("4", minimum=1, maximum=4) == 4


@pytest.mark.parametrize(("raw", "expected"), [
    ("79161234567", "79161234567"), ("+79161234567", "79161234567"), ("12345", "12345"), ("1234", None),
    ("3339#", None), ("+7 916", None), ("1" * 16, None), ("７９１６１２３", None),
])
def test_phone_addresses_as_smpp_peers_give_them(raw: str, expected: str | None) -> None:
    assert parse_address(raw) == expected


@given(st.text(max_size=64))
def test_no_text_crashes_a_parser_and_every_digit_accepted_is_ascii(text: str) -> None:
    for result in (parse_msisdn(text), parse_address(text), ascii_digits(text)):
        assert result is None or (result.isascii() and result.isdigit())
    number = parse_whole_number(text, maximum=10**6)
    assert number is None or 0 <= number <= 10**6
