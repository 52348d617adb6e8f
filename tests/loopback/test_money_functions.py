"""M1-M4 business functions straight on a real Redis: what the API and the USSD menu both call."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from handlers.base import Channel
from handlers.catalogue import CatalogueError, catalogue, parse_catalogue, rub
from handlers.money import balance, charge, list_services, list_tariffs, service_off, service_on, switch_tariff, top_up
from handlers.ports import Platform
from ussdgw.config import Settings
from ussdgw.store import AuditEvent, Store

A = "79161234567"


@pytest.fixture
async def store(store: Store) -> Store:
    """The conftest's store, with subscriber A on 250\u00a0₽ and the basic tariff."""
    await store.subscribers.put(A, {"owner_id": "p-1", "balance_kop": 25000, "tariff": "basic", "corporate": 0},
                                AuditEvent("seeded", "admin"))
    return store


@pytest.fixture
async def platform(store: Store, settings: Settings) -> AsyncIterator[Platform]:
    """What the operations take: the store with the settings (and no ports: none of these sends)."""
    async with Platform(store, settings) as platform:
        yield platform


async def test_balance_is_shown_at_a_negative_balance_too(store: Store, platform: Platform) -> None:
    await store.subscribers.put(A, {"balance_kop": -1050}, AuditEvent("seeded", "admin"))
    result = await balance(platform, A, channel=Channel.USSD)
    assert result.ok and result.data["balance_kop"] == -1050
    assert "-10,50\u00a0₽" in result.text


async def test_top_up_adds_money_and_a_point_per_ten_roubles_once_per_payment_id(
    store: Store, platform: Platform
) -> None:
    first = await top_up(platform, A, 50000, payment_id="p1")
    again = await top_up(platform, A, 50000, payment_id="p1")
    profile = await store.subscribers.fields(A)
    assert first.ok and not again.ok and again.code == "conflict"
    assert profile["balance_kop"] == "75000" and profile["bonus_points"] == "50"


@pytest.mark.parametrize("amount", [-100, 0, "abc", 1.5, None, True, 10**9])
async def test_top_up_refuses_bad_amounts_and_changes_nothing(store: Store, platform: Platform, amount: object) -> None:
    result = await top_up(platform, A, amount)
    assert not result.ok and result.code == "bad_request" and result.status == 400
    assert (await store.subscribers.fields(A))["balance_kop"] == "25000"


async def test_top_up_of_an_unknown_number_is_refused_and_creates_nothing(store: Store, platform: Platform) -> None:
    result = await top_up(platform, "79990000000", 10000)
    assert result.code == "unknown_subscriber"
    assert await store.subscribers.fields("79990000000") == {}


async def test_switch_tariff_charges_the_switch_price_and_switches_at_once(store: Store, platform: Platform) -> None:
    result = await switch_tariff(platform, A, "tarifische", channel=Channel.USSD)
    profile = await store.subscribers.fields(A)
    price = catalogue().tariff("tarifische").switch_price_kop  # type: ignore[union-attr]
    assert result.ok and profile["tariff"] == "tarifische"
    assert int(profile["balance_kop"]) == 25000 - price
    assert any(e["event"] == "tariff_switched" and e["channel"] == "ussd" for e in await store.audit_trail(A))


async def test_switch_tariff_at_zero_balance_says_a_positive_balance_is_needed(
    store: Store, platform: Platform
) -> None:
    await store.subscribers.put(A, {"balance_kop": 0}, AuditEvent("seeded", "admin"))
    result = await switch_tariff(platform, A, "smart")
    assert result.code == "insufficient_funds" and "положительный баланс" in result.text
    profile = await store.subscribers.fields(A)
    assert profile["tariff"] == "basic" and profile["balance_kop"] == "0"
    assert any(e["event"] == "tariff_switch" and e["outcome"] == "insufficient_funds"
               for e in await store.audit_trail(A))


async def test_switch_to_an_unknown_or_corporate_tariff_is_refused(store: Store, platform: Platform) -> None:
    assert (await switch_tariff(platform, A, "nope")).code == "not_found"
    assert (await switch_tariff(platform, A, "business")).code == "corporate"
    assert (await switch_tariff(platform, A, "basic")).code == "conflict"
    assert (await store.subscribers.fields(A))["tariff"] == "basic"


async def test_tariff_list_marks_the_current_one(platform: Platform) -> None:
    result = await list_tariffs(platform, A)
    current = [t["id"] for t in result.data["tariffs"] if t["current"]]
    assert current == ["basic"] and len(result.data["tariffs"]) == len(catalogue().tariffs)


async def test_service_on_then_off_and_twice_is_a_clear_conflict(platform: Platform) -> None:
    assert (await service_on(platform, A, "locator")).ok
    assert (await service_on(platform, A, "locator")).code == "conflict"
    listed = {s["id"]: s["enabled"] for s in (await list_services(platform, A)).data["services"]}
    assert listed["locator"] is True and listed["parental"] is False
    assert (await service_off(platform, A, "locator")).ok
    assert (await service_off(platform, A, "locator")).code == "conflict"


async def test_service_off_works_at_a_negative_balance_but_on_does_not(store: Store, platform: Platform) -> None:
    assert (await service_on(platform, A, "easy_pay")).ok
    await store.subscribers.put(A, {"balance_kop": -500}, AuditEvent("seeded", "admin"))
    assert (await service_off(platform, A, "easy_pay")).ok
    refused = await service_on(platform, A, "easy_pay")
    assert refused.code == "insufficient_funds"
    assert "svc:easy_pay" not in await store.subscribers.fields(A)


async def test_autopay_tops_up_by_its_amount_when_a_debit_leaves_the_balance_at_the_threshold(
    store: Store, platform: Platform
) -> None:
    on = await service_on(platform, A, "autopay", params={"amount_kop": 30000, "threshold_kop": 1000})
    assert on.ok
    debit = await charge(platform, A, 24500)  # 250 ₽ - 245 ₽ = 5 ₽ <= 10 ₽
    assert debit.data["autopaid_kop"] == 30000
    assert (await store.subscribers.fields(A))["balance_kop"] == str(500 + 30000)
    assert "autopay_topup" in [e["event"] for e in await store.audit_trail(A)]


@pytest.mark.parametrize("params", [None, {}, {"amount_kop": -1}, {"amount_kop": "x"}, {"amount_kop": 100},
                                    {"amount_kop": 30000, "threshold_kop": -5}])
async def test_autopay_without_a_sane_amount_is_refused(
    store: Store, platform: Platform, params: dict[str, object] | None
) -> None:
    result = await service_on(platform, A, "autopay", params=params)
    assert result.code == "bad_request"
    assert "svc:autopay" not in await store.subscribers.fields(A)


def test_the_catalogue_has_prices_in_kopecks_and_rejects_a_broken_file() -> None:
    assert {"basic", "smart", "business"} <= {t.id for t in catalogue().tariffs}
    assert {"locator", "autopay", "easy_pay", "parental"} <= {s.id for s in catalogue().services}
    assert rub(34000) == "340\u00a0₽" and rub(1550) == "15,50\u00a0₽"
    with pytest.raises(CatalogueError):
        parse_catalogue({"tariffs": [{"id": "x", "name": "X", "description": "", "monthly_fee_kop": -1}]})
