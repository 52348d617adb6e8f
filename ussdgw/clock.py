"""Business time: wall-clock epoch seconds that tests and the simulator can move forward
(and a tester reset to real time, `reset`).

One `Clock` per running platform, and no module-level one: the composition root
(`ussdgw.app.stack.Stack.clock`) or a test creates it and hands the same instance to every part that
compares something with "now": the store (D2 limits, audit times), the gateway and its handlers
(USSD dialogue deadlines, password issue times, archive expiries, tariff and hold timestamps, N2
reviews), the self-care API (`handlers.ports.Platform`: sessions, codes, gifts) and the simulator
(held MTs, receipts, inbox and mailbox times). So "advance time" in the simulator moves what the
platform reads when they run in one process, and a test that fast-forwards leaves nothing behind.

Not business time, and so not this clock:

- timeouts and deadlines of I/O (binds, responses, waits): `time.monotonic()` / the loop's time;
- Redis TTLs: Redis's own time;
- MT leases (`ussdgw.store`): real wall time, shared by every gateway process; a fast-forwarded
  test must not make an MT in flight look abandoned.
"""

from __future__ import annotations

import time

from ussdgw.logs import get_logger

log = get_logger("ussdgw.clock")


class Clock:
    """`now()` is the real time plus how far this clock was fast-forwarded with `advance()`."""

    __slots__ = ("_offset",)

    def __init__(self) -> None:
        self._offset = 0.0

    @property
    def offset(self) -> float:
        """Seconds this clock is ahead of the real time."""
        return self._offset

    def now(self) -> float:
        return time.time() + self._offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self._offset += seconds
        log.info("clock_advanced", seconds=seconds, offset=self._offset)

    def reset(self) -> None:
        """Back to real time: a tester's fresh start between experiments in the simulator. What was
        stamped while the clock ran ahead keeps its times (a cool-down then simply lasts longer)."""
        log.info("clock_reset", offset=self._offset)
        self._offset = 0.0

    def __repr__(self) -> str:
        return f"Clock(offset={self._offset:g})"
