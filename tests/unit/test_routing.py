"""The router's keyword matching as a pure table: spellings, look-alike letters, ambiguity refused."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.routing import AmbiguousKeywords, Router, SmsRoute, skeleton


async def _handler(ctx: Any) -> None:  # the router only compares handlers by identity
    return None


async def _other(ctx: Any) -> None:
    return None


async def _help(ctx: Any) -> None:
    return None


def router() -> Router:
    return Router([SmsRoute("3339", frozenset({"ПАРОЛЬ", "PAROL"}), _handler, "password"),
                   SmsRoute("232", frozenset({"PER", "ON"}), _other, "archive"),
                   SmsRoute("1234", None, _other, "any text")], [], _help)


@pytest.mark.parametrize(("code", "text", "expected"), [
    ("3339", "ПАРОЛЬ", _handler),
    ("3339", "П\u0041РОЛЬ", _handler),          # Latin A inside a Cyrillic word
    ("3339", "\u0420AROL", _handler),           # Cyrillic Р starting a Latin word
    ("232", "\u0420\u0415R", _other),           # РЕR: Cyrillic Р, Е and a Latin R
    ("232", "\u041eN", _other),                 # ОN with a Cyrillic О
    ("232", "\u043e\u043d", _help),             # «он» in lower-case Cyrillic: н is not a Latin n
    ("3339", "ПАРОЛЬX", _help),                 # a different word stays different
    ("1234", "ПAРОЛЬ", _other),                 # a code that takes any text takes this one too
    ("5555", "PER", _help),
])
def test_look_alike_letters_find_the_keyword_and_nothing_else(code: str, text: str, expected: Any) -> None:
    assert router().route_sms(code, text).handler is expected


def test_two_keywords_that_only_look_alike_cannot_share_a_short_code() -> None:
    with pytest.raises(AmbiguousKeywords, match="looks like"):
        Router([SmsRoute("232", frozenset({"PER"}), _handler, "archive"),
                SmsRoute("232", frozenset({"\u0420\u0415R"}), _other, "something else")], [], _help)


def test_the_skeleton_maps_only_cyrillic_look_alikes() -> None:
    assert skeleton("пароль") == "пapoль"
    assert skeleton("per") == "per"


def test_only_routes_that_do_nothing_but_their_one_commit_check_the_block_inside_it() -> None:
    """N3 inside the reply's commit is for handlers with nothing before it: the help, the MMS
    archive; never the password (its hash is costly work done before the commit)."""
    from handlers.registry import build_router

    registry = build_router()
    assert registry.route_sms("5555", "HELLO").one_commit
    assert registry.route_sms("1234", "").one_commit
    assert not registry.route_sms("3339", "ПАРОЛЬ").one_commit
    assert not registry.route_sms("232", "PER").one_commit
    assert router().route_sms("1234", "x").one_commit is False  # the default
