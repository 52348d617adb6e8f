"""Flow control on the gateway's binds, over real SMPP: throttling and full queues slow it down but
lose nothing, the window and the MT rate hold, unanswered requests time out and are retried,
several binds share the load, and a SIGTERM ends every bind with unbind."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from gateway.esme import EsmeClient
from simulator.smsc import Smsc
from tests.support.platform import send_and_wait
from tests.support.smpp_peer import ScriptedSmsc, SubmitHook
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


def _parts(count: int) -> list[SubmitSm]:
    return [SubmitSm(source_addr="3339", dest_addr_ton=1, dest_addr_npi=1, destination_addr="79161234567",
                     short_message=f"part {i}".encode()) for i in range(count)]


@contextlib.asynccontextmanager
async def three_parts_submitted(on_submit: SubmitHook, *, window: int,
                                ) -> AsyncIterator[tuple[ScriptedSmsc, EsmeClient, list[SubmitSmResp]]]:
    """The three parts of one MT through a bound client with this `window` to an SMSC answering
    with `on_submit`: the SMSC, the client (still bound inside the block) and the parts' results."""
    smsc = ScriptedSmsc(on_submit)
    host, port = await smsc.start()
    client = EsmeClient(host, port, "esme", "pw", _no_mo, window=window)
    runner = asyncio.create_task(client.run())
    try:
        await asyncio.wait_for(client.bound.wait(), 5)
        yield smsc, client, await asyncio.wait_for(client.submit_all(_parts(3)), 10)
    finally:
        await client.stop()
        runner.cancel()
        await smsc.stop()


async def test_the_parts_of_one_mt_are_outstanding_together_and_a_throttled_part_goes_again_alone() -> None:
    arrived = 0
    all_in = asyncio.Event()

    async def together(smsc: ScriptedSmsc, _: SmppSession, pdu: SubmitSm) -> Pdu:
        nonlocal arrived
        arrived += 1
        if arrived >= 3:
            all_in.set()
        await all_in.wait()  # sent one after the other, the second part would never come: a timeout
        if pdu.short_message == b"part 1" and arrived <= 3:
            return SubmitSmResp(status=Status.RTHROTTLED)
        return SubmitSmResp(message_id=smsc.next_message_id())

    async with three_parts_submitted(together, window=8) as (smsc, client, results):
        assert [r.status for r in results] == [Status.ROK] * 3
        assert len({r.message_id for r in results}) == 3
        assert [p.short_message for p in smsc.submits] == [b"part 0", b"part 1", b"part 2", b"part 1"]
        assert client._conn is not None and client._conn.window.in_use == 0
        assert not client._conn.session.outstanding


async def test_parts_that_do_not_fit_the_window_go_one_by_one_and_a_refused_part_ends_the_mt() -> None:
    outstanding = most = 0

    async def refuse_second(smsc: ScriptedSmsc, _: SmppSession, pdu: SubmitSm) -> Pdu:
        nonlocal outstanding, most
        outstanding += 1
        most = max(most, outstanding)
        await asyncio.sleep(0.01)
        outstanding -= 1
        if pdu.short_message == b"part 1":
            return SubmitSmResp(status=Status.RINVDSTADR)
        return SubmitSmResp(message_id=smsc.next_message_id())

    async with three_parts_submitted(refuse_second, window=2) as (smsc, client, results):
        assert [r.status for r in results] == [Status.ROK, Status.RINVDSTADR]  # the third is not sent
        assert most == 1 and len(smsc.submits) == 2
        assert client._conn is not None and client._conn.window.in_use == 0


async def test_parts_written_together_are_not_written_when_the_lease_is_gone() -> None:
    smsc = ScriptedSmsc()
    host, port = await smsc.start()
    client = EsmeClient(host, port, "esme", "pw", _no_mo)
    runner = asyncio.create_task(client.run())

    async def lease_lost() -> bool:
        return False

    try:
        await asyncio.wait_for(client.bound.wait(), 5)
        results = await asyncio.wait_for(client.submit_all(_parts(2), proceed=lease_lost), 10)
        assert [r.status for r in results] == [Status.RMSGQFUL]
        await asyncio.sleep(0.05)
        assert smsc.submits == []
        assert client._conn is not None and client._conn.window.in_use == 0
    finally:
        await client.stop()
        runner.cancel()
        await smsc.stop()
