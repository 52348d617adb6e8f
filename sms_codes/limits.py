"""D2 refusals in words: what the subscriber is told when a resend is refused. No I/O.

The policy itself (a cool-down per kind of code and a sliding hourly cap per MSISDN) runs in
Redis, inside the step that sends the code, so that the check and the count are one atomic step:
`rate_check` in `ussdgw/store/lua/prelude.lua`, tested in `tests/loopback/test_store_rate_policy.py`. It
refuses with a reason (`cooldown` or `hourly_cap`) and the time from which asking again works;
this module turns those into the reply.
"""

from __future__ import annotations

import math
from typing import Final

from ussdgw import russian
from ussdgw.russian import OPERATOR_TZ

__all__ = ["HOUR_S", "OPERATOR_TZ", "format_retry_reply"]

HOUR_S: Final = 3600


def _wait_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} с"
    return f"{math.ceil(seconds / 60)} мин"


def format_retry_reply(reason: str, retry_at: float, per_hour: int, now: float, *, what: str = "Код") -> str:
    """The SMS text for a refused send (fits one 70-character UCS2 segment): `what` was sent already
    and how long to wait after a `cooldown`, or from what Moscow time after the `hourly_cap` of
    `per_hour`.

    The clock time is rounded up to the minute, so "после 14:05" is never too early."""
    if reason == "hourly_cap":
        retry_minute = math.ceil(retry_at / 60) * 60
        clock = russian.clock_time(retry_minute)
        return f"Лимит: не более {russian.count(per_hour, 'запрос', 'gent')} в час. Повторите после {clock}."
    wait = max(1, math.ceil(retry_at - now))
    return f"{what} уже отправлен. Повторный запрос возможен через {_wait_text(wait)}."
