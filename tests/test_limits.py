"""D2 resend policy: cool-down, hourly cap and the reply texts (sms_codes.limits)."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sms_codes.limits import HOUR_S, OPERATOR_TZ, Decision, SecretSendPolicy, decide, format_retry_reply

POLICY = SecretSendPolicy()  # 60 s cool-down, 5 per hour
# 2024-06-01 14:00:00 Moscow time (UTC+3).
T0 = datetime(2024, 6, 1, 14, 0, 0, tzinfo=OPERATOR_TZ).timestamp()


def test_first_request_is_allowed() -> None:
    assert decide(POLICY, None, [], T0) == Decision(allowed=True)


def test_second_request_within_cooldown_is_refused_until_it_ends() -> None:
    d = decide(POLICY, T0, [T0], T0 + 15)
    assert not d.allowed
    assert d.reason == "cooldown"
    assert d.retry_at == T0 + 60


def test_request_exactly_at_end_of_cooldown_is_allowed() -> None:
    assert decide(POLICY, T0, [T0], T0 + 60).allowed


def test_cooldown_uses_newest_timestamp_when_last_sent_is_not_given() -> None:
    d = decide(POLICY, None, [T0 - 600, T0 - 10], T0)
    assert d.reason == "cooldown"
    assert d.retry_at == T0 + 50


def test_sixth_request_in_an_hour_is_refused_until_the_oldest_leaves_the_window() -> None:
    sent = [T0, T0 + 600, T0 + 1200, T0 + 1800, T0 + 2400]
    d = decide(POLICY, sent[-1], sent, T0 + 3000)
    assert not d.allowed
    assert d.reason == "hourly_cap"
    assert d.retry_at == T0 + HOUR_S
    assert d.per_hour == 5


def test_request_is_allowed_once_the_oldest_send_is_an_hour_old() -> None:
    sent = [T0, T0 + 600, T0 + 1200, T0 + 1800, T0 + 2400]
    assert decide(POLICY, sent[-1], sent, T0 + HOUR_S).allowed


def test_sends_older_than_an_hour_are_ignored_so_trimming_is_optional() -> None:
    old = [T0 - HOUR_S - i for i in range(50)]
    assert decide(POLICY, None, old, T0).allowed


def test_timestamps_may_come_in_any_order() -> None:
    sent = [T0 + 2400, T0, T0 + 1800, T0 + 600, T0 + 1200]
    assert decide(POLICY, None, sent, T0 + 3000).retry_at == T0 + HOUR_S


def test_when_both_limits_apply_the_later_one_is_reported() -> None:
    sent = [T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40]
    d = decide(POLICY, T0 + 40, sent, T0 + 50)
    assert d.reason == "hourly_cap"
    assert d.retry_at == T0 + HOUR_S


@pytest.mark.parametrize("kwargs", [{"cooldown_s": -1}, {"per_hour": 0}])
def test_nonsense_policy_is_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        SecretSendPolicy(**kwargs)


timestamps = st.floats(min_value=1.7e9, max_value=1.7e9 + 3 * HOUR_S, allow_nan=False)


@given(
    st.lists(timestamps, max_size=12),
    timestamps,
    st.integers(min_value=0, max_value=600),
    st.integers(min_value=1, max_value=6),
)
def test_asking_again_at_retry_at_is_always_allowed(
    sent: list[float], now: float, cooldown_s: int, per_hour: int
) -> None:
    policy = SecretSendPolicy(cooldown_s=cooldown_s, per_hour=per_hour)
    sent = [t for t in sent if t <= now]
    d = decide(policy, None, sent, now)
    if d.allowed:
        assert d.retry_at is None and d.reason is None
        return
    assert d.retry_at is not None and d.retry_at > now
    assert decide(policy, None, sent, d.retry_at).allowed


# --- replies ----------------------------------------------------------------------


def test_cooldown_reply_says_how_many_seconds_to_wait() -> None:
    d = decide(POLICY, T0, [T0], T0 + 15)
    assert format_retry_reply(d, T0 + 15) == "Код уже отправлен. Повторный запрос возможен через 45 с."


def test_cooldown_reply_rounds_partial_seconds_up() -> None:
    d = decide(POLICY, T0, [T0], T0 + 59.2)
    assert format_retry_reply(d, T0 + 59.2).endswith("через 1 с.")


def test_long_cooldown_reply_is_in_minutes() -> None:
    policy = SecretSendPolicy(cooldown_s=300)
    d = decide(policy, T0, [T0], T0 + 10)
    assert format_retry_reply(d, T0 + 10).endswith("через 5 мин.")


def test_hourly_cap_reply_gives_moscow_clock_time_rounded_up() -> None:
    sent = [T0 + 290.5, T0 + 600, T0 + 1200, T0 + 1800, T0 + 2400]
    d = decide(POLICY, None, sent, T0 + 3000)
    assert format_retry_reply(d, T0 + 3000) == (
        "Превышен лимит запросов: не более 5 в час. Попробуйте после 15:05."
    )


def test_replies_fit_one_ucs2_sms_segment() -> None:
    cooldown = decide(POLICY, T0, [T0], T0 + 1)
    cap = decide(POLICY, None, [T0] * 5, T0 + 3000)
    for d in (cooldown, cap):
        assert len(format_retry_reply(d, T0 + 3000 if d is cap else T0 + 1)) <= 70


def test_allowed_decision_has_no_retry_reply() -> None:
    with pytest.raises(ValueError):
        format_retry_reply(Decision(allowed=True), T0)
