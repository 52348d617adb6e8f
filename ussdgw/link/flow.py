"""Flow control shared by both ends of an SMPP link (asyncio): the window of outstanding requests,
and a token bucket for "at most N per second" (an SMSC's throttling, an ESME's rate limit)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque


class Window:
    """At most `size` requests outstanding; the others wait in FIFO order.

    Not `asyncio.Semaphore`: in Python 3.11 its `acquire` scans every waiter (`locked()`), which
    turns a queue of thousands of waiting MTs into quadratic CPU exactly when the gateway is busiest.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting for a slot now (for the metrics; a cancelled one may linger until handed over)."""
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits (no coroutine: the common case, kept cheap)."""
        if self.in_use < self.size and not self._waiters:
            self.in_use += 1
            return True
        return False

    def try_acquire_many(self, count: int) -> bool:
        """Take `count` slots at once if they are free and nobody waits (all or none)."""
        if self.in_use + count <= self.size and not self._waiters:
            self.in_use += count
            return True
        return False

    async def __aenter__(self) -> None:
        if self.try_acquire():
            return
        await self.acquire()

    async def acquire(self) -> None:
        """Wait for a slot, in FIFO order."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the slot is handed over by __aexit__ (in_use already counts it)
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # a slot was handed to us just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the slot back: to the first waiter, or to the pool."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.in_use -= 1

    def release_many(self, count: int) -> None:
        for _ in range(count):
            self.release()


class TokenBucket:
    """`rate` per second on average, bursts up to `burst`; rate 0 means no limit."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self.burst
        self._at = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one (False: over the rate)."""
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
