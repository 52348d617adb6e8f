"""Wall-clock time that tests and the simulator can move forward (never back).

One clock type for the whole platform: USSD dialogue timeouts, N2 reviews and the simulator's
held MTs all read it, so "advance time" in a scenario moves every one of them together.
"""

from __future__ import annotations

import time

import structlog

log = structlog.get_logger("ussdgw.clock")


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def now(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time only moves forward")
        self.offset += seconds
        log.info("clock_advanced", seconds=seconds, offset=self.offset)

    def reset(self) -> None:
        self.offset = 0.0
