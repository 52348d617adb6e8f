"""Attempts at a secret counted in memory, per client and overall, before anything is looked up.

A sign-in, a recovery or a password request from one client address (or from all of them
together) past its sliding window is refused at once, by the process that got it, with no Redis
key read or written: what stops a spray across many numbers. (The per-number limits are the
store's: D2 in `ussdgw/store/lua`, P4 in the sign-in step.) No I/O; times are the caller's.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque

__all__ = ["SlidingWindow", "client_key"]


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
