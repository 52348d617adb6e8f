"""Nothing lost, nothing applied twice: a gateway dying mid-flight, Redis going away, bad binds."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog

from gateway.esme import BindRefused, EsmeClient
from gateway.service import Gateway
from handlers.registry import build_router
from sms_codes import verify_password
from tests.support.platform import extract_password, send_and_wait
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.redis_server import EmbeddedRedis
from ussdgw.smpp.pdu import DataSm, DeliverSm, Status
from ussdgw.store.connect import connect


async def kill(gateway: Gateway) -> None:
    await gateway.abort()


async def test_gateway_killed_after_commit_gets_the_mo_again_and_applies_it_exactly_once(stack: Stack) -> None:
    assert stack.gateway is not None and stack.smsc is not None and stack.store is not None
    first = stack.gateway
    committed = asyncio.Event()

    async def die_after_commit(pdu: DeliverSm | DataSm) -> int:
        await Gateway.on_deliver(first, pdu)  # the change is now durable in Redis ...
        committed.set()
        await asyncio.Event().wait()  # ... and the deliver_sm_resp never leaves
        return Status.ROK

    for client in first.clients:
        client.on_deliver = die_after_commit
    first.send = _never_sends  # type: ignore[method-assign]
    [mo] = stack.smsc.submit_mo("79161234567", "3339", "ПАРОЛЬ")
    await asyncio.wait_for(committed.wait(), 10)
    await kill(first)
    assert not mo.delivered.is_set()

    replacement = Gateway(stack.settings, stack.store, build_router())
    stack.gateway = replacement
    after = stack.smsc.phones.last_seq
    await replacement.start()
    await asyncio.wait_for(mo.delivered.wait(), 10)
    [reply] = await stack.smsc.phones.wait_inbox("79161234567", after, 10)

    assert mo.attempts >= 2
    trail = await stack.store.audit_trail("79161234567")
    assert [e["event"] for e in trail].count("password_issued") == 1
    profile = await stack.store.subscribers.fields("79161234567")
    assert verify_password(extract_password(reply.text), profile["pw_hash"])


async def _never_sends(*_: object) -> bool:
    await asyncio.Event().wait()
    return False


async def test_redis_down_answers_rx_t_appn_then_the_retry_succeeds_once_redis_is_back(
    settings: Settings, tmp_path: Path
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "own-redis", persistent=False)
    own_redis.start()
    stack = Stack(settings.with_overrides(redis_url=own_redis.url))
    await stack.start()
    try:
        assert stack.gateway is not None and stack.smsc is not None and stack.store is not None
        await stack.gateway.wait_bound(5)
        stack.smsc.retry_min_s = stack.smsc.retry_max_s = 0.2
        own_redis.stop()

        [mo] = stack.smsc.submit_mo("79161234567", "3339", "ПАРОЛЬ")
        assert await asyncio.wait_for(mo.outcomes.get(), 15) == Status.RX_T_APPN
        assert not mo.delivered.is_set()

        own_redis.start()
        after = stack.smsc.phones.last_seq
        await asyncio.wait_for(mo.delivered.wait(), 20)
        [reply] = await stack.smsc.phones.wait_inbox("79161234567", after, 10)
        profile = await stack.store.subscribers.fields("79161234567")
        assert verify_password(extract_password(reply.text), profile["pw_hash"])
        trail = await stack.store.audit_trail("79161234567")
        assert [e["event"] for e in trail].count("password_issued") == 1
    finally:
        await stack.stop()
        own_redis.stop()


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [("ussdgw", "wrong", Status.RINVPASWD), ("stranger", "ussdgw1", Status.RINVSYSID)],
)
async def test_bind_with_wrong_credentials_is_refused(stack: Stack, system_id: str, password: str, status: int) -> None:
    assert stack.smsc is not None

    async def unused(_: DeliverSm | DataSm) -> int:
        return Status.ROK

    client = EsmeClient("127.0.0.1", stack.smsc.port, system_id, password, unused)
    with pytest.raises(BindRefused) as refused:
        await client._serve_once()
    assert refused.value.status == status


async def test_no_plain_password_reaches_redis_or_any_log_line(stack: Stack, redis_url: str) -> None:
    with structlog.testing.capture_logs() as captured:
        [reply] = await send_and_wait(stack, "79161234567", "3339", "ПАРОЛЬ")
        await send_and_wait(stack, "79161234567", "7888", "LOGIN")
    password = extract_password(reply.text)
    assert captured, "the flow logged nothing at all"
    assert password not in repr(captured)

    client = connect(redis_url)
    needle = password.encode()
    async for key in client.scan_iter():
        kind = (await client.type(key)).decode()
        if kind == "string":
            blobs = [await client.get(key) or b""]
        elif kind == "hash":
            blobs = [v for kv in (await client.hgetall(key)).items() for v in kv]
        elif kind == "zset":
            blobs = await client.zrange(key, 0, -1)
        elif kind == "list":
            blobs = await client.lrange(key, 0, -1)
        else:
            blobs = [str(await client.dump(key)).encode()]
        assert not any(needle in blob for blob in blobs), key
    await client.aclose()


async def test_rendered_log_lines_mask_msisdns_and_carry_no_secret(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    from ussdgw import logs

    logs.configure("debug", "json", cache=False)
    try:
        [reply] = await send_and_wait(stack, "79161234567", "3339", "ПАРОЛЬ")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "mo_handled" in [json.loads(line)["event"] for line in err.splitlines() if line.startswith("{")]
    assert "7916***4567" in err
    assert "79161234567" not in err
    assert extract_password(reply.text) not in err
