"""Flow control on the gateway's binds, over real SMPP: throttling and full queues slow it down but
lose nothing, the window and the MT rate hold, unanswered requests time out and are retried,
several binds share the load, and a SIGTERM ends every bind with unbind."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from gateway.esme import EsmeClient
from simulator.smsc import Smsc
from tests.support.platform import send_and_wait
from tests.support.smpp_peer import ScriptedSmsc
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.smpp.pdu import DataSm, DeliverSm, Pdu, Status, SubmitSm, SubmitSmResp
from ussdgw.smpp.session import SmppSession

MT = SubmitSm(source_addr="3339", dest_addr_ton=1, dest_addr_npi=1, destination_addr="79161234567",
              short_message=b"hello")


async def _no_mo(_: DeliverSm | DataSm) -> int:
    return Status.ROK


def resent(client: EsmeClient, reason: str) -> float:
    """How many MTs `client` submitted again not knowing whether the SMSC had the first copy."""
    value = client.metrics.registry.get_sample_value("ussdgw_mt_resent_total", {"reason": reason})
    return value or 0.0


async def test_throttled_and_queue_full_answers_are_retried_until_the_mt_is_delivered(stack: Stack) -> None:
    assert stack.smsc is not None and stack.gateway is not None
    stack.smsc.refuse_submits.extend([Status.RTHROTTLED, Status.RMSGQFUL, Status.RTHROTTLED])
    [reply] = await send_and_wait(stack, "79161234567", "5555", "hello")
    assert "3339" in reply.text
    assert stack.smsc.submit_refusals == {Status.RTHROTTLED: 2, Status.RMSGQFUL: 1}
    # a refusal is an answer: the SMSC did not take that try, so the resend is no possible double
    assert resent(stack.gateway.clients[0], "answer_lost") == 0


async def test_an_smsc_rate_limit_throttles_the_gateway_and_still_every_reply_arrives(settings: Settings) -> None:
    stack = Stack(settings)
    await stack.start()
    try:
        assert stack.smsc is not None and stack.gateway is not None
        await stack.gateway.wait_bound(5)
        for conn in stack.smsc.connections:
            conn.submit_rate.rate, conn.submit_rate.burst = 40.0, 4.0
        msisdns = [f"7916000{i:04d}" for i in range(12)]
        replies = await asyncio.gather(*(send_and_wait(stack, m, "5555", "hello", timeout=20) for m in msisdns))
        assert all(len(r) == 1 and "3339" in r[0].text for r in replies)
        assert stack.smsc.submit_refusals.get(Status.RTHROTTLED, 0) > 0
    finally:
        await stack.stop()


async def test_the_mt_rate_limit_per_bind_spaces_submits_evenly() -> None:
    smsc = ScriptedSmsc()
    host, port = await smsc.start()
    client = EsmeClient(host, port, "esme", "pw", _no_mo, rate_per_s=50.0)
    runner = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.bound.wait(), 5)
        started = time.monotonic()
        results = await asyncio.gather(*(client.submit(MT) for _ in range(11)))
        elapsed = time.monotonic() - started
        assert all(r.status == Status.ROK for r in results)
        assert elapsed >= 10 / 50 * 0.95  # 11 submits at 50/s: 10 gaps of 20 ms
    finally:
        await client.stop()
        runner.cancel()
        await smsc.stop()


async def test_the_window_caps_outstanding_submits() -> None:
    outstanding = 0
    most = 0
    gate = asyncio.Event()

    async def hold(smsc: ScriptedSmsc, _: SmppSession, __: SubmitSm) -> Pdu:
        nonlocal outstanding, most
        outstanding += 1
        most = max(most, outstanding)
        if outstanding >= 3:
            gate.set()
        await gate.wait()
        outstanding -= 1
        return SubmitSmResp(message_id=smsc.next_message_id())

    smsc = ScriptedSmsc(hold)
    host, port = await smsc.start()
    client = EsmeClient(host, port, "esme", "pw", _no_mo, window=3)
    runner = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.bound.wait(), 5)
        results = await asyncio.wait_for(asyncio.gather(*(client.submit(MT) for _ in range(10))), 10)
        assert all(r.status == Status.ROK for r in results)
        assert most == 3
        assert len(smsc.submits) == 10
    finally:
        await client.stop()
        runner.cancel()
        await smsc.stop()


async def test_an_unanswered_submit_times_out_and_is_sent_again_without_leaking_state() -> None:
    async def ignore_first(smsc: ScriptedSmsc, _: SmppSession, __: SubmitSm) -> Pdu | None:
        return None if len(smsc.submits) == 1 else SubmitSmResp(message_id=smsc.next_message_id())

    smsc = ScriptedSmsc(ignore_first)
    host, port = await smsc.start()
    client = EsmeClient(host, port, "esme", "pw", _no_mo, response_timeout_s=0.3)
    runner = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.bound.wait(), 5)
        resp = await asyncio.wait_for(client.submit(MT), 10)
        assert resp.status == Status.ROK and resp.message_id == "msg0001"
        assert len(smsc.submits) == 2
        assert client._conn is not None and not client._conn.session.outstanding  # the one table of requests
        # the first try may have been taken: the resend is counted as a possible second copy
        assert resent(client, "answer_lost") == 1
    finally:
        await client.stop()
        runner.cancel()
        await smsc.stop()


async def test_several_binds_share_the_mts(settings: Settings) -> None:
    stack = Stack(settings.with_overrides(binds=3))
    await stack.start()
    try:
        assert stack.smsc is not None and stack.gateway is not None
        await stack.gateway.wait_bound(5)
        assert len([c for c in stack.smsc.connections if c.session.is_bound]) == 3
        await asyncio.gather(*(send_and_wait(stack, f"7916100{i:04d}", "5555", "hi") for i in range(9)))
        used = [c.submits for c in stack.smsc.connections]
        assert sum(1 for n in used if n) == 3, used
    finally:
        await stack.stop()


async def test_sigterm_makes_the_gateway_unbind_every_bind_before_it_exits(settings: Settings, tmp_path: Path) -> None:
    smsc = Smsc({"ussdgw": "ussdgw1"}, enquire_link_s=0)
    await smsc.start("127.0.0.1", 0)
    env = {**os.environ, "REDIS_URL": settings.redis_url, "USSDGW_SECRET_KEY": settings.secret_key.get_secret_value(),
           "USSDGW_STATE_DIR": str(tmp_path), "USSDGW_BINDS": "2", "USSDGW_API_PORT": "0"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ussdgw.app", "gateway", "--smsc", f"127.0.0.1:{smsc.port}", env=env,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(45):
            while len([c for c in smsc.connections if c.session.is_bound]) < 2:
                smsc._bound_changed.clear()
                await smsc._bound_changed.wait()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert smsc.unbinds == ["ussdgw", "ussdgw"]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await smsc.stop()


async def test_a_submit_waiting_for_a_bind_gives_up_when_the_client_stops() -> None:
    client = EsmeClient("127.0.0.1", 9, "esme", "pw", _no_mo)  # never connects: nothing listens there
    waiting = asyncio.create_task(client.submit(MT))
    await asyncio.sleep(0)  # let it start waiting for the bind
    await client.stop()
    resp = await asyncio.wait_for(waiting, 5)
    assert resp.status == Status.RMSGQFUL  # "not sent": the caller keeps the MT queued
