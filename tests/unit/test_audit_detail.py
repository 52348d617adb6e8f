"""An audit entry's `detail` as the trail stores it: exact strings for the shapes the gateway writes on
every MO, MT and receipt, the same string from the whole-line check as from the value-by-value
writer for any fields, and `parse` giving the values back."""

from __future__ import annotations

from enum import Enum, IntEnum

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ussdgw.audit_detail import MAX_VALUE, _render_each, clean, parse, render


class Flavour(Enum):
    SWEET = "sweet"


class Level(IntEnum):
    HIGH = 3


@pytest.mark.parametrize("fields, detail", [
    ({"to": "5555"}, "to=5555"),
    ({"mt": "31365fa57548b5d25c62e695", "from": "5555", "parts": 2, "status": "ROK"},
     "mt=31365fa57548b5d25c62e695 from=5555 parts=2 status=ROK"),
    ({"mt": "mt-1", "state": "DELIVERED", "err": None}, "mt=mt-1 state=DELIVERED"),
    ({"mt": "mt-1", "state": "UNDELIVERABLE", "err": "0x00b"}, "mt=mt-1 state=UNDELIVERABLE err=0x00b"),
    ({"mt": "ab12", "state": "DELIVERED", "err": ""}, 'mt=ab12 state=DELIVERED err=""'),  # a receipt without error
    ({"delta": -5, "big": 10**130}, f"delta=-5 big={str(10**130)[:MAX_VALUE]}…"),
    ({"amount_kop": 1500, "merchant": "Shop x=1 by=admin"}, 'amount_kop=1500 merchant="Shop x=1 by=admin"'),
    ({"merchant": "Пятёрочка"}, "merchant=Пятёрочка"),  # printable: bare, whatever the script
    ({"merchant": "evil\u202etxt"}, 'merchant="evil\\u202etxt"'),
    ({"note": 'say "hi"'}, 'note="say \\"hi\\""'),
    ({"path": "a\\b"}, 'path="a\\\\b"'),
    ({"empty": "", "next": "x"}, 'empty="" next=x'),
    ({"next": "x", "empty": ""}, 'next=x empty=""'),
    ({"tab": "a\tb"}, 'tab="a\\tb"'),
    ({"flavour": Flavour.SWEET, "level": Level.HIGH, "ok": True, "ratio": 0.5},
     f"flavour={Flavour.SWEET!s} level={Level.HIGH!s} ok=True ratio=0.5"),
    ({"long": "x" * (MAX_VALUE + 5)}, f"long={'x' * MAX_VALUE}…"),
    ({"a": "x" * 60, "b": "y" * 70}, f"a={'x' * 60} b={'y' * 70}"),  # over MAX_VALUE as a line, each value under it
    ({}, ""),
    ({"only": None}, ""),
])
def test_the_details_the_trail_stores(fields: dict[str, object], detail: str) -> None:
    assert render(**fields) == _render_each(fields) == detail
    assert clean(detail) == detail
    assert parse(detail) == {key: str(value)[:MAX_VALUE] + ("…" if len(str(value)) > MAX_VALUE else "")
                             for key, value in fields.items() if value is not None}


_keys = st.sampled_from(["mt", "from", "to", "state", "err", "parts", "a b", "k=v", 'q"', "x\\y", "", "é"])
_values = (st.none() | st.integers(-10**6, 10**6) | st.integers() | st.booleans() | st.text(max_size=MAX_VALUE + 4)
           | st.text(st.sampled_from(list('ab =\\"-_:\t\u202eé')), max_size=12)
           | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=6))
def test_the_whole_line_check_writes_what_the_value_by_value_writer_writes(fields: dict[str, object]) -> None:
    assert render(**fields) == _render_each(fields)
