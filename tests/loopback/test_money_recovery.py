"""Cross-subscriber steps finished after a crash: no point or kopeck created or lost (M6, N4)."""

from __future__ import annotations

import pytest

from handlers.money import accept_gift, gift_points, place_hold, recover_holds
from handlers.selfcare import Env, Result
from simulator.cdr import SimulatedCarrier
from ussdgw.config import Settings
from ussdgw.store import Asset, AuditEvent, Store
from ussdgw.store.money import gift_offered

A, B = "79161234567", "79261112233"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(hold_recovery_s=0)


@pytest.fixture
async def env(settings: Settings, store: Store) -> Env:
    for msisdn in (A, B):
        await store.subscribers.put(msisdn, {"owner_id": f"p-{msisdn}", "balance_kop": 10000, "bonus_points": 100},
                                    AuditEvent("seeded", "admin"))
    return Env(store, settings, billing=SimulatedCarrier(), network=SimulatedCarrier())


async def points(env: Env) -> tuple[int, int]:
    a, b = await env.store.subscribers.fields(A), await env.store.subscribers.fields(B)
    return int(a["bonus_points"]), int(b["bonus_points"])


async def test_a_hold_whose_offer_never_happened_is_refunded_and_can_never_be_offered(env: Env) -> None:
    held = await place_hold(env.store, A, "op1", asset=Asset.POINTS, amount=40, purpose="gift", to=B,
                            channel="api", paid=False, event="gift_sent")
    assert held.ok and await points(env) == (60, 100)  # the process dies here
    counts = await recover_holds(env, older_than_s=0)
    assert counts["refunded"] == 1 and await points(env) == (100, 100)
    late_offer = await env.store.commit(B, gift_offered(B, "op1", sender=A, points=40, digest="d", expires=env.now()))
    assert late_offer.code == "conflict"
    assert (await recover_holds(env, older_than_s=0))["refunded"] == 0  # twice changes nothing


async def test_an_accepted_gift_whose_hold_was_left_open_is_captured_not_refunded(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[str] = []

    async def keep(mt: object) -> None:
        sent.append(getattr(mt, "text", ""))

    env.send_mt = keep
    result = await gift_points(env, A, B, 30)
    assert result.ok
    await env.drain()
    code = sent[0].split("Код: ")[1][:6]

    async def crash(*_: object, **__: object) -> bool:
        raise ConnectionError("the process died before the capture")

    with monkeypatch.context() as patched:
        patched.setattr("handlers.money.settle_hold", crash)
        with pytest.raises(ConnectionError):
            await accept_gift(env, B, code)
    assert await points(env) == (70, 130)
    holds = await env.store.money.holds(A)
    assert holds[result.data["gift_id"]].state == "held"
    counts = await recover_holds(env, older_than_s=0)
    assert counts == {"captured": 1, "refunded": 0, "pending": 0}
    assert await points(env) == (70, 130)


async def test_an_unanswered_gift_is_returned_to_the_sender_once_its_code_expires(env: Env) -> None:
    result = await gift_points(env, A, B, 25)
    assert isinstance(result, Result) and result.ok
    assert (await recover_holds(env, older_than_s=0))["pending"] == 1  # still waiting for the code
    env.clock.advance(float(result.data["expires_at"]) + 1 - env.now())
    assert (await recover_holds(env, older_than_s=0))["refunded"] == 1
    assert await points(env) == (100, 100)
