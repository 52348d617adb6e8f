"""R3/A1 and R4/A2 over the real channel: SMS through the simulator and SMPP, then the self-care API."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.platform import send_and_wait
from tests.support.selfcare_helpers import IVAN, Api, extract_code, signed_in
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import mms_archive_key
from ussdgw.store.connect import connect


async def test_per_to_232_sends_a_code_that_opens_the_sms_archive_once(stack: Stack, api: Api) -> None:
    [reply] = await send_and_wait(stack, IVAN, "232", "PER")
    assert reply.sender == "232"
    code = extract_code(reply.text)
    token = await signed_in(stack, api, IVAN)
    status, body = await api.call("POST", "/accounts/me/sms-archive", token=token, body={"code": code})
    assert status == 200, body
    assert any(e["event"] == "mo_received" and e["peer"] == "232" for e in body["data"]["entries"])
    status, body = await api.call("POST", "/accounts/me/sms-archive", token=token, body={"code": code})
    assert status == 403 and body["error"] == "wrong_code"


async def test_on_works_too_and_a_wrong_or_malformed_code_opens_nothing(stack: Stack, api: Api) -> None:
    [reply] = await send_and_wait(stack, IVAN, "232", "on")
    code = extract_code(reply.text)
    token = await signed_in(stack, api, IVAN)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    status, body = await api.call("POST", "/accounts/me/sms-archive", token=token, body={"code": wrong})
    assert status == 403 and "entries" not in body["details"]
    status, _ = await api.call("POST", "/accounts/me/sms-archive", token=token, body={"code": "12ab"})
    assert status == 400
    assert (await api.call("POST", "/accounts/me/sms-archive", token=token, body={"code": code}))[0] == 200


async def test_an_unknown_keyword_to_232_gets_its_help(stack: Stack) -> None:
    [reply] = await send_and_wait(stack, IVAN, "232", "АРХИВ")
    assert reply.sender == "232" and reply.text.startswith("Не удалось распознать") and "PER" in reply.text


class TestResendLimits:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.with_overrides(secret_cooldown_s=60)

    async def test_a_second_code_within_the_cool_down_is_refused_with_when_to_retry(self, stack: Stack) -> None:
        assert stack.store is not None
        [first] = await send_and_wait(stack, IVAN, "232", "PER")
        digest = (await stack.store.subscribers.fields(IVAN))["sms_archive_digest"]
        [second] = await send_and_wait(stack, IVAN, "232", "ON")
        assert "Повторный запрос возможен через" in second.text
        assert extract_code(first.text)
        assert (await stack.store.subscribers.fields(IVAN))["sms_archive_digest"] == digest


async def test_any_sms_to_1234_opens_the_mms_archive_for_72_hours(stack: Stack, api: Api, redis_url: str) -> None:
    [reply] = await send_and_wait(stack, IVAN, "1234", "")  # the empty SMS too
    assert reply.sender == "1234" and "72 часа" in reply.text
    client = connect(redis_url)
    ttl = await client.ttl(mms_archive_key(IVAN))
    await client.aclose()
    assert 72 * 3600 - 60 <= ttl <= 72 * 3600
    token = await signed_in(stack, api, IVAN)
    _, body = await api.call("GET", "/accounts/me/mms-archive", token=token)
    assert body["data"]["open"] is True
    assert stack.platform is not None
    stack.platform.settings = stack.platform.settings.with_overrides(session_idle_s=80 * 3600)
    stack.clock.advance(72 * 3600 + 1)
    _, body = await api.call("GET", "/accounts/me/mms-archive", token=token)
    assert body["data"]["open"] is False


class TestArchiveClosesByItself:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.with_overrides(mms_archive_ttl_s=1)

    async def test_the_open_archive_key_expires_in_redis_without_anyone_closing_it(self, stack: Stack,
                                                                                  redis_url: str) -> None:
        client = connect(redis_url)
        await client.config_set("notify-keyspace-events", "Ex")
        pubsub = client.pubsub()
        await pubsub.subscribe("__keyevent@0__:expired")
        await send_and_wait(stack, "79161230077", "1234", "MMS")
        assert await client.exists(mms_archive_key("79161230077"))
        async with asyncio.timeout(10):
            async for message in pubsub.listen():
                if message["type"] == "message" and message["data"] == mms_archive_key("79161230077").encode():
                    break
        assert not await client.exists(mms_archive_key("79161230077"))
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
