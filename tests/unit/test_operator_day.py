"""`today`, asked once per MO, keeps the bounds of the day it last computed: whatever order the
instants come in (a test clock jumps back and forth), it is the operator's calendar day."""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from handlers.access import today
from sms_codes import OPERATOR_TZ

INSTANTS = st.floats(min_value=0, max_value=4e9, allow_nan=False)


@given(st.lists(INSTANTS, min_size=1, max_size=20))
def test_any_sequence_of_instants_gets_the_operators_day(instants: list[float]) -> None:
    for now in instants:
        assert today(now) == datetime.fromtimestamp(now, OPERATOR_TZ).date()


def test_the_day_turns_at_the_operators_midnight() -> None:
    midnight = datetime(2026, 11, 30, tzinfo=OPERATOR_TZ).timestamp()
    assert today(midnight - 86_400 / 2).isoformat() == "2026-11-29"
    assert today(midnight - 1e-3).isoformat() == "2026-11-29"
    assert today(midnight).isoformat() == "2026-11-30"
    assert today(midnight - 1e-3).isoformat() == "2026-11-29"
