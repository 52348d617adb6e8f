"""Plausible call detail records (M5), standing in for the operator's billing.

Deterministic: the same MSISDN and day always give the same records (seeded from a hash of
both), so a detail asked twice, or online and then by e-mail, agrees with itself.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

OPERATOR_TZ = ZoneInfo("Europe/Moscow")  # the simulated operator bills in Moscow time
KINDS = ("call", "call", "call", "sms", "internet")
CALL_KOP_PER_MIN = 250
SMS_KOP = 200
MB_KOP = 990


@dataclass(frozen=True, slots=True)
class CallRecord:
    at: str  # ISO time, operator time zone
    kind: str  # call | sms | internet
    direction: str  # out | in
    peer: str  # the other number, or the APN for data
    duration_s: int  # seconds for calls, 0 otherwise
    volume_kb: int  # data sessions only
    cost_kop: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rng(*parts: str) -> random.Random:
    seed = hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(seed, "big"))


def records_for_day(msisdn: str, day: date) -> list[CallRecord]:
    rng = _rng(msisdn, day.isoformat())
    out: list[CallRecord] = []
    for _ in range(rng.randint(0, 9)):
        kind = rng.choice(KINDS)
        at = datetime.combine(day, time(rng.randint(7, 23), rng.randint(0, 59), rng.randint(0, 59)), OPERATOR_TZ)
        direction = rng.choice(("out", "out", "in"))
        peer = f"79{rng.randint(0, 999_999_999):09d}"
        if kind == "call":
            duration = int(rng.expovariate(1 / 150)) + 5
            cost = 0 if direction == "in" else -(-duration // 60) * CALL_KOP_PER_MIN
            out.append(CallRecord(at.isoformat(), kind, direction, peer, duration, 0, cost))
        elif kind == "sms":
            out.append(CallRecord(at.isoformat(), kind, direction, peer, 0, 0, SMS_KOP if direction == "out" else 0))
        else:
            kb = rng.randint(50, 80_000)
            out.append(CallRecord(at.isoformat(), kind, "out", "internet", 0, kb, -(-kb // 1024) * MB_KOP // 10))
    return sorted(out, key=lambda r: r.at)


def call_records(msisdn: str, start: date, end: date) -> list[CallRecord]:
    """Every record from `start` to `end`, both included, oldest first."""
    out: list[CallRecord] = []
    day = start
    while day <= end:
        out.extend(records_for_day(msisdn, day))
        day += timedelta(days=1)
    return out


def simulated_location(msisdn: str, region: str) -> dict[str, Any]:
    """Локатор: a stable position near the region's centre, with the accuracy of a cell."""
    centres = {"77": (55.7558, 37.6173), "50": (55.5000, 37.5000), "78": (59.9386, 30.3141)}
    lat, lon = centres.get(region, (55.7558, 37.6173))
    rng = _rng("where", msisdn)
    return {"lat": round(lat + rng.uniform(-0.15, 0.15), 5), "lon": round(lon + rng.uniform(-0.25, 0.25), 5),
            "accuracy_m": rng.choice((150, 300, 500, 1000)), "region": region}


class SimulatedCarrier:
    """The simulated operator's billing and network, as the platform's handlers ask for them."""

    def call_records(self, msisdn: str, start: date, end: date) -> list[CallRecord]:
        return call_records(msisdn, start, end)

    def locate(self, msisdn: str, region: str) -> dict[str, Any]:
        return simulated_location(msisdn, region)
