"""One clock per platform, injected into every part; nothing module-global that a test could leave moved."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import aiohttp
import pytest

import handlers.ussd
from gateway.service import Gateway
from handlers.ports import Platform
from handlers.registry import build_router
from simulator.phones import PhoneBook
from simulator.smsc import Smsc
from tests.support.selfcare_helpers import sms_password
from tests.support.ussd_helpers import answer, dial
from ussdgw.app.stack import Stack
from ussdgw.clock import Clock
from ussdgw.config import Settings
from ussdgw.smpp.pdu import UssdOp
from ussdgw.store import Store

PACKAGES = ("ussdgw", "gateway", "handlers", "ussd_menus", "sms_codes", "simulator")
IVAN, MARIA = "79161234567", "79261112233"


def platform_modules() -> list[ModuleType]:
    modules = []
    for name in PACKAGES:
        package = importlib.import_module(name)
        modules.append(package)
        for info in pkgutil.walk_packages(package.__path__, f"{name}."):
            if not info.name.endswith(".__main__"):  # running it is the `ussdgw` command
                modules.append(importlib.import_module(info.name))
    return modules


def clocks_of(stack: Stack) -> dict[str, Clock]:
    assert stack.store and stack.gateway and stack.platform and stack.smsc and stack.post_office
    return {"store": stack.store.clock, "gateway": stack.gateway.clock, "platform": stack.platform.clock,
            "smsc": stack.smsc.clock, "phones": stack.smsc.phones.clock, "mailboxes": stack.post_office.clock}


def test_a_clock_only_moves_forward_and_by_what_it_was_told() -> None:
    clock = Clock()
    before = clock.now()
    clock.advance(3600)
    assert clock.offset == 3600 and clock.now() - before >= 3600
    with pytest.raises(ValueError):
        clock.advance(-1)
    assert clock.offset == 3600


def test_no_module_of_the_platform_holds_a_clock() -> None:
    assert not hasattr(handlers.ussd, "clock")
    held = [f"{m.__name__}.{name}" for m in platform_modules()
            for name, value in vars(m).items() if isinstance(value, Clock)]
    assert held == []


async def test_every_part_of_a_stack_reads_the_one_clock_it_was_given(settings: Settings) -> None:
    mine = Clock()
    stack = Stack(settings, clock=mine)
    await stack.start()
    try:
        assert stack.gateway is not None
        await stack.gateway.wait_bound(5)
        assert [part for part, clock in clocks_of(stack).items() if clock is not mine] == []
    finally:
        await stack.stop()


async def test_advancing_one_stack_leaves_another_stack_where_it_was(stack: Stack, settings: Settings) -> None:
    other = Stack(settings)
    await other.start()
    try:
        assert other.gateway is not None
        await other.gateway.wait_bound(5)
        assert stack.clock is not other.clock
        assert (await dial(stack, IVAN, "*111#")).ussd_op == UssdOp.USSR_REQUEST
        assert (await dial(other, MARIA, "*111#")).ussd_op == UssdOp.USSR_REQUEST
        step = stack.settings.ussd_step_timeout_s + 1
        advance = f"{stack.endpoints['simulator']}/api/clock/advance"  # the simulator's "advance time"
        async with aiohttp.ClientSession() as http, http.post(advance, json={"seconds": step}) as response:
            assert response.status == 200
        assert {c.offset for c in clocks_of(stack).values()} == {step}
        assert {c.offset for c in clocks_of(other).values()} == {0.0}
        late = await answer(stack, IVAN, "0")
        assert late.ussd_op == UssdOp.PSSR_RESPONSE and "истекло" in late.text
        in_time = await answer(other, MARIA, "0")
        assert in_time.ussd_op == UssdOp.USSR_REQUEST
    finally:
        await other.stop()


async def test_retry_after_counts_down_on_the_platform_clock(stack: Stack) -> None:
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(signin_per_hour=2, signin_max_failures=10)
    await sms_password(stack, IVAN)  # the cap is per number and password: a number with none has nothing to guess
    url = f"{stack.endpoints['selfcare']}/sessions"
    wrong = {"msisdn": IVAN, "password": "Wrong1pass"}
    async with aiohttp.ClientSession() as http:

        async def attempt() -> tuple[int, str | None]:
            async with http.post(url, json=wrong) as response:
                return response.status, response.headers.get("Retry-After")

        assert [(await attempt())[0] for _ in range(2)] == [401, 401]
        status, retry_after = await attempt()
        assert status == 429 and retry_after is not None and 3590 <= int(retry_after) <= 3600
        stack.clock.advance(1800)
        status, retry_after = await attempt()
        assert status == 429 and retry_after is not None and 1790 <= int(retry_after) <= 1800
        stack.clock.advance(1801)
        assert (await attempt())[0] == 401  # the hour has passed on the platform's clock


async def test_parts_given_different_clocks_refuse_to_be_put_together(settings: Settings, store: Store) -> None:
    with pytest.raises(ValueError, match="one clock"):
        Gateway(settings, store, build_router(), clock=Clock())
    with pytest.raises(ValueError, match="one clock"):
        Platform(store, settings, clock=Clock())
    with pytest.raises(ValueError, match="one clock"):
        Smsc({}, PhoneBook(), clock=Clock())
    assert Gateway(settings, store, build_router()).clock is store.clock
    async with Platform(store, settings) as platform:
        assert platform.clock is store.clock
