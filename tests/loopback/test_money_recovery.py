"""Cross-subscriber steps finished after a crash: no point or kopeck created or lost (M6, N4)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from handlers.money import accept_gift, gift_points, place_hold, recover_holds
from handlers.operations import Result
from handlers.ports import Platform
from simulator.cdr import SimulatedCarrier
from ussdgw.config import Settings
from ussdgw.store import Asset, AuditEvent, Store
from ussdgw.store.money import gift_offered

A, B = "79161234567", "79261112233"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(hold_recovery_s=0)


@pytest.fixture
async def platform(settings: Settings, store: Store) -> AsyncIterator[Platform]:
    for msisdn in (A, B):
        await store.subscribers.put(msisdn, {"owner_id": f"p-{msisdn}", "balance_kop": 10000, "bonus_points": 100},
                                    AuditEvent("seeded", "admin"))
    async with Platform(store, settings, billing=SimulatedCarrier(), network=SimulatedCarrier()) as platform:
        yield platform


async def points(platform: Platform) -> tuple[int, int]:
    a, b = await platform.store.subscribers.fields(A), await platform.store.subscribers.fields(B)
    return int(a["bonus_points"]), int(b["bonus_points"])


async def test_a_hold_whose_offer_never_happened_is_refunded_and_can_never_be_offered(platform: Platform) -> None:
    held = await place_hold(platform.store, A, "op1", asset=Asset.POINTS, amount=40, purpose="gift", to=B,
                            channel="api", paid=False, event="gift_sent")
    assert held.ok and await points(platform) == (60, 100)  # the process dies here
    counts = await recover_holds(platform, older_than_s=0)
    assert counts["refunded"] == 1 and await points(platform) == (100, 100)
    offer = gift_offered(B, "op1", sender=A, points=40, digest="d", expires=platform.now())
    late_offer = await platform.store.commit(B, offer)
    assert late_offer.code == "conflict"
    assert (await recover_holds(platform, older_than_s=0))["refunded"] == 0  # twice changes nothing


async def test_an_accepted_gift_whose_hold_was_left_open_is_captured_not_refunded(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []

    async def keep(mt: object) -> None:
        sent.append(getattr(mt, "text", ""))

    platform.send_mt = keep
    result = await gift_points(platform, A, B, 30)
    assert result.ok
    await platform.drain()
    code = sent[0].split("Код: ")[1][:6]

    async def crash(*_: object, **__: object) -> bool:
        raise ConnectionError("the process died before the capture")

    with monkeypatch.context() as patched:
        patched.setattr("handlers.money.settle_hold", crash)
        with pytest.raises(ConnectionError):
            await accept_gift(platform, B, code)
    assert await points(platform) == (70, 130)
    holds = await platform.store.money.holds(A)
    assert holds[result.data["gift_id"]].state == "held"
    counts = await recover_holds(platform, older_than_s=0)
    assert counts == {"captured": 1, "refunded": 0, "pending": 0}
    assert await points(platform) == (70, 130)


async def test_an_unanswered_gift_is_returned_to_the_sender_once_its_code_expires(platform: Platform) -> None:
    result = await gift_points(platform, A, B, 25)
    assert isinstance(result, Result) and result.ok
    assert (await recover_holds(platform, older_than_s=0))["pending"] == 1  # still waiting for the code
    platform.clock.advance(float(result.data["expires_at"]) + 1 - platform.now())
    assert (await recover_holds(platform, older_than_s=0))["refunded"] == 1
    assert await points(platform) == (100, 100)
