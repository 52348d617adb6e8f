"""Sign-ins to the self-care API hash on the same costly-work pool as SMS and USSD (`Platform.costly`).
A storm of them beyond what the pool takes is answered 503 `busy` with Retry-After, never 500, and a
refused try counts nowhere: not towards the number's hourly cap, not towards its P4 lock. The same
number signs in once the storm has passed, while a try that was admitted did count. The pool is the
platform's: the stack stops it after the gateway and the API, and leaves no thread behind."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

import aiohttp
import pytest

from gateway.service import Gateway
from handlers.ports import Platform
from sms_codes import generate_password, hash_password
from tests.support.selfcare_helpers import Api, seed_with_passwords
from ussdgw.app.stack import Stack
from ussdgw.config import Settings

WARM_UP = "79165770000"
OWN = [f"7916577{i:04d}" for i in range(1, 13)]  # each signs in with its own password
ATTACKED = [f"7916578{i:04d}" for i in range(1, 13)]  # a stranger tries a wrong password on each


@pytest.fixture
async def busy_stack(settings: Settings) -> AsyncIterator[Stack]:
    """One hashing thread and no wait behind a busy one; one password try per number and hour, so a
    refused try that had counted would turn the later one away (429). The client limits stay out of
    the way (every request comes from 127.0.0.1)."""
    running = Stack(settings.with_overrides(costly_workers=1, costly_max_wait_s=0.0, signin_per_hour=1,
                                            api_client_attempts=1000, api_attempts_overall=1000))
    await running.start(smsc=False, gateway=False, api=True)
    yield running
    await running.stop()


def signin_refusals(metrics_text: str, reason: str) -> float:
    prefix = f'ussdgw_api_signin_refusals_total{{reason="{reason}"}} '
    return sum(float(line.removeprefix(prefix)) for line in metrics_text.splitlines() if line.startswith(prefix))


async def test_a_sign_in_storm_gets_503_with_retry_after_and_a_refused_try_counts_nowhere(busy_stack: Stack) -> None:
    stack = busy_stack
    assert stack.store is not None and stack.platform is not None
    passwords = await seed_with_passwords(stack, [WARM_UP, *OWN, *ATTACKED])
    async with aiohttp.ClientSession() as http:
        api = Api(stack.endpoints["selfcare"], http)
        status, body = await api.call("POST", "/sessions", body={"msisdn": WARM_UP, "password": passwords[WARM_UP]})
        assert status == 201, body  # one hash timed: the pool now knows what one costs
        assert stack.platform.costly.mean_s > 0

        tries = [(m, passwords[m]) for m in OWN] + [(m, generate_password()) for m in ATTACKED]
        answers = await asyncio.gather(*(api.exchange("POST", "/sessions", body={"msisdn": m, "password": pw})
                                         for m, pw in tries))
        by_number = {m: answer for (m, _), answer in zip(tries, answers, strict=True)}
        assert {status for status, _, _ in answers} <= {201, 401, 503}, answers  # never a 500
        refused = [m for m, (status, _, _) in by_number.items() if status == 503]
        admitted = [m for m in by_number if m not in refused]
        assert refused and admitted, answers
        for m in refused:
            _, body, headers = by_number[m]
            assert int(headers["Retry-After"]) >= 1
            assert body["error"] == "busy" and body["details"]["reason"] == "costly_work_overloaded"
            assert body["details"]["retry_after_s"] == int(headers["Retry-After"])
        for m in admitted:  # answered as without a storm: right password in, wrong one out
            assert by_number[m][0] == (201 if m in OWN else 401), by_number[m]

        # A refused try left no trace on its number: no audit entry, no failure, no lock ...
        for m in refused:
            assert [e["event"] for e in await stack.store.audit_trail(m, count=10)] == ["seeded"], m
            profile = await stack.store.subscribers.profile(m)
            assert (profile.pw_failures, profile.locked) == (0, False), m
        for m in admitted:  # ... where an admitted wrong one counted
            if m in ATTACKED:
                assert (await stack.store.subscribers.profile(m)).pw_failures == 1, m

        # Once the storm has passed, one at a time: a refused number signs in (its hourly try was
        # never used), an admitted one has used it (429).
        for m in [*refused, *admitted]:
            status, body = await api.call("POST", "/sessions", body={"msisdn": m, "password": passwords[m]})
            assert status == (201 if m in refused else 429), (m, body)

        async with http.get(stack.endpoints["selfcare"].removesuffix("/api/v1") + "/metrics") as response:
            metrics = await response.text()
        assert signin_refusals(metrics, "busy") == len(refused)


async def test_the_stack_stops_the_pool_after_the_gateway_and_the_api_and_leaves_no_thread(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, bool] = {}
    gateway_stop, platform_drain = Gateway.stop, Platform.drain

    async def stop_gateway(gateway: Gateway) -> None:
        seen["gateway"] = gateway.platform.costly.stopped
        await gateway_stop(gateway)

    async def drain_api(platform: Platform, grace_s: float = 5.0) -> None:  # the API's last step on stop
        seen["api"] = platform.costly.stopped
        await platform_drain(platform, grace_s)

    monkeypatch.setattr(Gateway, "stop", stop_gateway)
    monkeypatch.setattr(Platform, "drain", drain_api)
    stack = Stack(settings)
    await stack.start()
    assert stack.platform is not None and stack.gateway is not None
    assert stack.gateway.platform is stack.platform  # one pool for SMS, USSD and the API
    assert await stack.platform.costly.run(hash_password, "Abc123") != ""
    assert any(t.name.startswith("costly") for t in threading.enumerate())
    await stack.stop()
    assert seen == {"gateway": False, "api": False}  # both stopped while the pool still worked
    assert stack.platform.costly.stopped
    assert not any(t.name.startswith("costly") for t in threading.enumerate())
