"""Exponential backoff with jitter: the one rule for how long to wait before trying again
(reconnecting a link, resending what an SMSC throttled, redelivering what an ESME refused)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delays from `min_s` doubling up to `max_s`; each spread by ±`jitter` (a fraction) so that
    many clients knocked off together do not come back in step."""

    __slots__ = ("_delay", "_random", "jitter", "max_s", "min_s")

    def __init__(self, min_s: float, max_s: float, *, jitter: float = 0.2,
                 rng: Callable[[], float] = random.random) -> None:
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter {jitter} is not a fraction below 1")
        self.min_s, self.max_s, self.jitter = min_s, max_s, jitter
        self._delay = min_s
        self._random = rng

    @property
    def current(self) -> float:
        """The delay (before jitter) the next `next()` is based on."""
        return self._delay

    def next(self) -> float:
        """The delay to wait now; the one after it is twice as long (up to `max_s`)."""
        delay = self._delay
        if self.jitter:
            delay *= 1 - self.jitter + 2 * self.jitter * self._random()
        self._delay = min(self._delay * 2, self.max_s)
        return delay

    def at_least(self, seconds: float) -> None:
        """Wait no less than `seconds` next time (e.g. after a refused bind)."""
        self._delay = max(self._delay, seconds)

    def reset(self) -> None:
        """It worked: start again from `min_s`."""
        self._delay = self.min_s
