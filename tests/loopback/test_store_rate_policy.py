"""D2, the resend policy that runs: `rate_check` in ussdgw/store/lua/prelude.lua, inside Redis.

Send times are put in the counter's sorted set directly, then the store asks at a chosen time
(`rate_peek`, or the commit that counts). The replies' wording is tested in test_limits.py."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sms_codes import HOUR_S, OPERATOR_TZ
from tests.support.platform import StoreFactory, plain_client
from ussdgw.clock import Clock
from ussdgw.store import AuditEvent, Change, Outcome, RateGuard, Store, rate_key
from ussdgw.store.scripts import load_script

A = "79161234567"
GUARD = RateGuard("secret", cooldown_s=60, per_hour=5)
# 2024-06-01 14:00:00 Moscow time (UTC+3).
T0 = datetime(2024, 6, 1, 14, 0, 0, tzinfo=OPERATOR_TZ).timestamp()


class FrozenClock(Clock):
    """A clock that says what the test sets."""

    __slots__ = ("at",)

    def __init__(self, at: float) -> None:
        super().__init__()
        self.at = at

    def now(self) -> float:
        return self.at


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def store(store_factory: StoreFactory, clock: FrozenClock) -> Store:
    return store_factory(clock=clock)


async def sent(store: Store, *times: float, guard: RateGuard = GUARD) -> None:
    await store.redis.zadd(rate_key(A, guard.name), {f"{t!r}:{i}": t for i, t in enumerate(times)})


async def ask(store: Store, clock: FrozenClock, at: float, guard: RateGuard = GUARD) -> tuple[str, float] | None:
    clock.at = at
    return await store.rate_peek(A, guard)


async def test_first_request_is_allowed(store: Store, clock: FrozenClock) -> None:
    assert await ask(store, clock, T0) is None


async def test_second_request_within_cooldown_is_refused_until_it_ends(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0)
    assert await ask(store, clock, T0 + 15) == ("cooldown", T0 + 60)


async def test_request_exactly_at_end_of_cooldown_is_allowed(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0)
    assert await ask(store, clock, T0 + 60) is None


async def test_without_a_cooldown_a_step_that_read_the_clock_before_a_concurrent_one_is_not_refused(
        store: Store, clock: FrozenClock) -> None:
    """Two parallel steps read the clock, then land in the other order: the earlier "now" finds an
    entry newer than itself. With no cool-down that is no reason to refuse (50 parallel gifts did)."""
    free = RateGuard("caused", cooldown_s=0, per_hour=100)
    await sent(store, T0 + 0.004, guard=free)
    assert await ask(store, clock, T0, guard=free) is None
    clock.at = T0
    assert await store.attempt(A, free) is None


async def test_cooldown_runs_from_the_newest_send(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0 - 600, T0 - 10)
    assert await ask(store, clock, T0) == ("cooldown", T0 + 50)


async def test_sixth_request_in_an_hour_is_refused_until_the_oldest_leaves_the_window(
    store: Store, clock: FrozenClock,
) -> None:
    await sent(store, T0, T0 + 600, T0 + 1200, T0 + 1800, T0 + 2400)
    assert await ask(store, clock, T0 + 3000) == ("hourly_cap", T0 + HOUR_S)


async def test_request_is_allowed_once_the_oldest_send_is_an_hour_old(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0, T0 + 600, T0 + 1200, T0 + 1800, T0 + 2400)
    assert await ask(store, clock, T0 + HOUR_S) is None


async def test_sends_older_than_an_hour_are_ignored_and_dropped(store: Store, clock: FrozenClock) -> None:
    await sent(store, *(T0 - HOUR_S - i for i in range(50)))
    assert await ask(store, clock, T0) is None
    assert await store.redis.zcard(rate_key(A, GUARD.name)) == 0


async def test_sends_recorded_in_any_order_count_by_time(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0 + 2400, T0, T0 + 1800, T0 + 600, T0 + 1200)
    assert await ask(store, clock, T0 + 3000) == ("hourly_cap", T0 + HOUR_S)


async def test_when_both_limits_apply_the_later_one_is_reported(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0, T0 + 10, T0 + 20, T0 + 30, T0 + 40)
    assert await ask(store, clock, T0 + 50) == ("hourly_cap", T0 + HOUR_S)


async def test_a_lower_cap_than_the_sends_waits_for_the_one_that_makes_room(store: Store, clock: FrozenClock) -> None:
    await sent(store, T0, T0 + 600, T0 + 1200)
    assert await ask(store, clock, T0 + 1800, RateGuard("secret", 0, 2)) == ("hourly_cap", T0 + 600 + HOUR_S)


async def test_the_commit_that_sends_counts_once_and_a_refused_one_counts_nothing(
    store: Store, clock: FrozenClock,
) -> None:
    step = Change(guards=(GUARD,), audit=(AuditEvent("password_issued", "sms"),))
    assert (await store.commit(A, step)).outcome is Outcome.APPLIED
    clock.at = T0 + 1
    refused = await store.commit(A, step)
    assert (refused.outcome, refused.code, refused.retry_at) == (Outcome.LIMITED, "cooldown", T0 + 60)
    entries = await store.redis.zrange(rate_key(A, GUARD.name), 0, -1, withscores=True)
    assert [score for _, score in entries] == [T0]
    assert [e["event"] for e in await store.audit_trail(A)] == ["password_issued"]


async def test_attempts_are_counted_until_refused(store: Store, clock: FrozenClock) -> None:
    guard = RateGuard("signin", cooldown_s=0, per_hour=3)
    for i in range(3):
        clock.at = T0 + i
        assert await store.attempt(A, guard) is None
    clock.at = T0 + 10
    assert await store.attempt(A, guard) == ("hourly_cap", T0 + HOUR_S)
    assert await store.redis.zcard(rate_key(A, guard.name)) == 3


# ---- the property the subscriber relies on: the time she is told really works ----------------------
timestamps = st.floats(min_value=1.7e9, max_value=1.7e9 + 3 * HOUR_S, allow_nan=False)


@given(st.lists(timestamps, max_size=12), timestamps, st.integers(min_value=0, max_value=600),
       st.integers(min_value=1, max_value=6))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_asking_again_at_retry_at_is_always_allowed(redis_url: str, times: list[float], now: float,
                                                    cooldown_s: int, per_hour: int) -> None:
    script = load_script("rate_peek")
    client = plain_client(redis_url)
    key = rate_key(A, "property")
    try:
        client.delete(key)
        if times := [t for t in times if t <= now]:
            client.zadd(key, {f"{t!r}:{i}": t for i, t in enumerate(times)})
        refused = client.eval(script.source, 1, key, cooldown_s, per_hour, repr(now))
        if not refused:
            return
        retry_at = float(refused[1])
        assert retry_at > now
        assert client.eval(script.source, 1, key, cooldown_s, per_hour, repr(retry_at)) == []
    finally:
        client.close()

