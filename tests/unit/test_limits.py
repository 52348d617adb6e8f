"""D2 refusals in words (sms_codes.limits). The policy that decides them runs in Redis:
tests/loopback/test_store_rate_policy.py."""

from __future__ import annotations

from datetime import datetime

from sms_codes.limits import OPERATOR_TZ, format_retry_reply

# 2024-06-01 14:00:00 Moscow time (UTC+3).
T0 = datetime(2024, 6, 1, 14, 0, 0, tzinfo=OPERATOR_TZ).timestamp()


def test_cooldown_reply_says_how_many_seconds_to_wait() -> None:
    reply = format_retry_reply("cooldown", T0 + 60, 5, T0 + 15)
    assert reply == "Код уже отправлен. Повторный запрос возможен через 45 с."


def test_cooldown_reply_rounds_partial_seconds_up() -> None:
    assert format_retry_reply("cooldown", T0 + 60, 5, T0 + 59.2).endswith("через 1 с.")


def test_long_cooldown_reply_is_in_minutes() -> None:
    assert format_retry_reply("cooldown", T0 + 300, 5, T0 + 10).endswith("через 5 мин.")


def test_hourly_cap_reply_gives_moscow_clock_time_rounded_up() -> None:
    assert format_retry_reply("hourly_cap", T0 + 290.5 + 3600, 5, T0 + 3000) == (
        "Лимит: не более 5\u00a0запросов в час. Повторите после 15:05\u00a0МСК."
    )


def test_replies_fit_one_ucs2_sms_segment() -> None:
    cooldown = format_retry_reply("cooldown", T0 + 60, 5, T0 + 1)
    cap = format_retry_reply("hourly_cap", T0 + 3600, 5, T0 + 3000)
    assert len(cooldown) <= 70 and len(cap) <= 70
