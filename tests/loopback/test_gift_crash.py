"""A gift's hold survives a crash at any point: its recovery record is written before its first
effect. A real process (`python -m tests.loopback.test_gift_crash`) sends a gift of points against
the real Redis and SIGKILLs itself right after its k-th write, for every k; after each crash every
hold still `held` has its recovery entry (none frozen), the points add up, and recovery finishes
what the crash left: the sender gets her points back, nobody gets them twice."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from handlers.money import gift_points, recover_holds
from handlers.ports import Platform
from simulator.cdr import SimulatedCarrier
from ussdgw.config import Settings
from ussdgw.store import AuditEvent, Store

GIFT = 40
SEEDED = 100


async def seed(store: Store, *msisdns: str) -> None:
    for msisdn in msisdns:
        await store.subscribers.put(msisdn, {"owner_id": f"p-{msisdn}", "balance_kop": 10000,
                                             "bonus_points": SEEDED}, AuditEvent("seeded", "admin"))


async def send_gift_and_die(url: str, key: str, sender: str, recipient: str, kill_after: int) -> int:
    """The child: a gift from `sender`, SIGKILLed right after its `kill_after`-th write (0: never);
    returns how many writes it made."""
    settings = Settings(redis_url=url, secret_key=key, secret_cooldown_s=0, d2_caused_per_hour=100,
                        d2_from_others_per_hour=100)
    store = Store.from_url(url, settings.secret_key_bytes(), lease_s=1.0)
    writes = 0

    def then_maybe_die(step: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def step_then_maybe_die(*args: Any, **kwargs: Any) -> Any:
            nonlocal writes
            result = await step(*args, **kwargs)
            writes += 1
            if writes == kill_after:
                os.kill(os.getpid(), signal.SIGKILL)  # no finally, no cleanup: as a crash
            return result
        return step_then_maybe_die

    # Every write a gift makes goes through one of these (the hold and the offer are commits).
    store.money.index_hold = then_maybe_die(store.money.index_hold)  # type: ignore[method-assign]
    store.money.unindex_hold = then_maybe_die(store.money.unindex_hold)  # type: ignore[method-assign]
    store.commit = then_maybe_die(store.commit)  # type: ignore[method-assign]
    async with Platform(store, settings, billing=SimulatedCarrier(), network=SimulatedCarrier()) as platform:
        result = await gift_points(platform, sender, recipient, GIFT)
        assert result.ok, result
        await platform.drain()
    return writes


def run_child(settings: Settings, sender: str, recipient: str, kill_after: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tests.loopback.test_gift_crash", settings.redis_url,
         settings.secret_key.get_secret_value(), sender, recipient, str(kill_after)],
        capture_output=True, text=True, timeout=30, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


async def frozen_holds(store: Store, payer: str) -> list[str]:
    """Holds still `held` that recovery can never find (no entry in the holds' index)."""
    indexed = {op for who, op, _ in await store.money.holds_due(float("inf"), limit=10_000) if who == payer}
    return [op for op, hold in (await store.money.holds(payer)).items()
            if hold.state == "held" and op not in indexed]


async def points(store: Store, *msisdns: str) -> list[int]:
    return [int((await store.subscribers.fields(m))["bonus_points"]) for m in msisdns]


async def test_a_gift_killed_after_any_of_its_writes_leaves_no_frozen_hold_and_points_exact(
        settings: Settings, store: Store) -> None:
    await seed(store, "79160000100", "79160000200")
    whole = run_child(settings, "79160000100", "79160000200", 0)
    assert whole.returncode == 0, whole.stderr[-2000:]
    writes = int(whole.stdout.split()[-1])
    assert writes >= 3  # the recovery entry, the hold, the offer (and whatever follows)
    assert await points(store, "79160000100", "79160000200") == [SEEDED - GIFT, SEEDED]

    for kill_after in range(1, writes + 1):
        sender, recipient = f"7916100{kill_after:04d}", f"7916200{kill_after:04d}"
        await seed(store, sender, recipient)
        crashed = await asyncio.to_thread(run_child, settings, sender, recipient, kill_after)
        assert crashed.returncode == -signal.SIGKILL, (kill_after, crashed.stderr[-2000:])
        assert await frozen_holds(store, sender) == [], f"a hold nobody can recover after write {kill_after}"
        held = sum(h.amount for h in (await store.money.holds(sender)).values() if h.state == "held")
        assert sum(await points(store, sender, recipient)) + held == 2 * SEEDED, kill_after

    # Recovery after the placing grace: holds whose gift was never offered come back at once; those
    # offered wait for their code, and come back once it expires (nobody entered it).
    async with Platform(store, settings, billing=SimulatedCarrier(), network=SimulatedCarrier()) as platform:
        platform.clock.advance(60)
        await recover_holds(platform, older_than_s=0)
        platform.clock.advance(settings.gift_code_ttl_s + 1)
        await recover_holds(platform, older_than_s=0)
    for kill_after in range(1, writes + 1):
        sender, recipient = f"7916100{kill_after:04d}", f"7916200{kill_after:04d}"
        assert await points(store, sender, recipient) == [SEEDED, SEEDED], kill_after
        assert all(h.state != "held" for h in (await store.money.holds(sender)).values()), kill_after
    assert [e for e in await store.money.holds_due(float("inf"), limit=10_000) if e[0].startswith("79161")] == []


if __name__ == "__main__":
    url, key, sender, recipient, kill_after = sys.argv[1:]
    print(asyncio.run(send_gift_and_die(url, key, sender, recipient, int(kill_after))))
