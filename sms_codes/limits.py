"""D2 resend policy for secrets sent by SMS (passwords, codes): decisions only, no I/O.

Inputs are what one Redis sorted set per MSISDN gives: the send times (member and score
= Unix time) read with ``ZRANGEBYSCORE key (now-3600 +inf``. Older entries may be
passed as well; :func:`decide` ignores them, so trimming (``ZREMRANGEBYSCORE``) is
housekeeping, not a correctness step. ``last_sent_at`` is optional: give it if the
cool-down is tracked apart from the set, otherwise the newest timestamp is used.

The hour is a sliding window, not a fixed counter: a fixed ``INCR``/``EXPIRE`` window
lets twice the cap through across a window boundary and cannot say when the next send
becomes possible, which the reply to the subscriber needs.

A time exactly on a boundary counts as free: a send at *t* blocks until
``t + cooldown_s`` and leaves the hourly window at ``t + 3600``, so deciding again at
``retry_at`` (with nothing sent meanwhile) is always allowed.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "HOUR_S",
    "OPERATOR_TZ",
    "Decision",
    "DenyReason",
    "SecretSendPolicy",
    "SlidingWindow",
    "client_key",
    "decide",
    "format_retry_reply",
]

HOUR_S: Final = 3600
OPERATOR_TZ: Final = ZoneInfo("Europe/Moscow")

DenyReason = Literal["cooldown", "hourly_cap"]


@dataclass(frozen=True, slots=True)
class SecretSendPolicy:
    """How often one MSISDN may be sent a secret: a cool-down and an hourly cap."""

    cooldown_s: int = 60
    per_hour: int = 5

    def __post_init__(self) -> None:
        if self.cooldown_s < 0:
            raise ValueError(f"cooldown_s must be >= 0, got {self.cooldown_s}")
        if self.per_hour < 1:
            raise ValueError(f"per_hour must be >= 1, got {self.per_hour}")


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether to send now; if not, from when (Unix time) and why.

    ``per_hour`` is the cap that applied, so the reply can quote it.
    """

    allowed: bool
    retry_at: float | None = None
    reason: DenyReason | None = None
    per_hour: int | None = None


ALLOWED: Final = Decision(allowed=True)


def decide(
    policy: SecretSendPolicy,
    last_sent_at: float | None,
    sent_in_last_hour: Sequence[float],
    now: float,
) -> Decision:
    """Decide whether a secret may be sent to one MSISDN at *now*.

    When both limits apply, the one that frees later is reported, so the subscriber
    is told a time that really works.
    """
    window = sorted(t for t in sent_in_last_hour if t + HOUR_S > now)
    latest = max(window, default=None) if last_sent_at is None else max([last_sent_at, *window])

    denials: list[tuple[float, DenyReason]] = []
    if latest is not None and now < latest + policy.cooldown_s:
        denials.append((latest + policy.cooldown_s, "cooldown"))
    if len(window) >= policy.per_hour:
        # The send that must leave the window before one more fits.
        oldest_blocking = window[len(window) - policy.per_hour]
        denials.append((oldest_blocking + HOUR_S, "hourly_cap"))

    if not denials:
        return ALLOWED
    retry_at, reason = max(denials)
    return Decision(allowed=False, retry_at=retry_at, reason=reason, per_hour=policy.per_hour)


def _wait_text(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} с"
    return f"{math.ceil(seconds / 60)} мин"


def format_retry_reply(decision: Decision, now: float) -> str:
    """Return the SMS text for a refused send (fits one 70-character UCS2 segment).

    The clock time is rounded up to the minute, so "после 14:05" is never too early.
    """
    if decision.allowed or decision.retry_at is None:
        raise ValueError("an allowed decision has no retry reply")
    if decision.reason == "hourly_cap":
        retry_minute = math.ceil(decision.retry_at / 60) * 60
        clock = datetime.fromtimestamp(retry_minute, OPERATOR_TZ).strftime("%H:%M")
        return f"Превышен лимит запросов: не более {decision.per_hour} в час. Попробуйте после {clock}."
    wait = max(1, math.ceil(decision.retry_at - now))
    return f"Код уже отправлен. Повторный запрос возможен через {_wait_text(wait)}."


class SlidingWindow:
    """At most `limit` events per `window_s` for each key, and `overall` for all keys together:
    what stops one client (or many) from spraying sign-ins before any per-number state is touched.

    In memory and per process (a refusal costs no Redis key); times are the caller's (the
    platform's clock). Each key keeps at most `limit` times; at most `max_keys` keys are kept,
    the least recently seen dropped first (a client with more addresses than that still meets
    the overall limit). A refused event is not counted, so a client that keeps trying is let in
    again once its oldest event leaves the window.
    """

    def __init__(self, *, max_keys: int = 10_000) -> None:
        self.max_keys = max_keys
        self._keys: OrderedDict[str, deque[float]] = OrderedDict()
        self._all: deque[float] = deque()

    def take(self, key: str, now: float, *, limit: int, overall: int, window_s: float) -> float | None:
        """Count one event for `key` and return None, or refuse it: when the next one fits."""
        times = self._keys.get(key)
        if times is None:
            times = self._keys[key] = deque()
            while len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
        self._keys.move_to_end(key)
        refusals = [_full(times, now, limit, window_s), _full(self._all, now, overall, window_s)]
        waits = [r for r in refusals if r is not None]
        if waits:
            return max(waits)
        times.append(now)
        self._all.append(now)
        return None


def _full(times: deque[float], now: float, limit: int, window_s: float) -> float | None:
    """Drop times out of the window; if `limit` remain, when the oldest that blocks leaves it."""
    while times and times[0] <= now - window_s:
        times.popleft()
    while len(times) > limit:  # the limit was lowered meanwhile
        times.popleft()
    if len(times) >= max(limit, 0):
        return (times[len(times) - limit] if limit > 0 else now) + window_s
    return None


def client_key(address: str | None) -> str:
    """Whom a client address stands for: an IPv4 address, an IPv6 /64 (one subscriber's network
    gets a whole /64), or "unknown"."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return "unknown"
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        return str(mapped) if mapped else str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)
