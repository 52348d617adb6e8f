"""Every server closes what only holds it: idle, slow and unbound connections after their deadline;
past its connection limit it refuses in its own protocol's words; out of file descriptors it logs
and goes on serving. Real sockets on loopback, deadlines of a fraction of a second."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support.smpp_peer import RawClient
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.smpp.pdu import Bind, BindResp, Status

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 0.5
SERVERS = ("selfcare", "simulator")


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(http_idle_timeout_s=DEADLINE, http_body_timeout_s=DEADLINE,
                                   sim_bind_timeout_s=DEADLINE, sim_smtp_timeout_s=DEADLINE)


def address(stack: Stack, server: str) -> tuple[str, int]:
    parts = urlsplit(stack.endpoints[server])
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def closed_after(reader: asyncio.StreamReader, limit: float = 5.0) -> tuple[bytes, float]:
    """Everything the server still sends, and how long until it closed the connection."""
    started = time.perf_counter()
    async with asyncio.timeout(limit):
        data = await reader.read(-1)
    return data, time.perf_counter() - started


@contextlib.asynccontextmanager
async def connection(host: str, port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        yield reader, writer
    finally:
        writer.close()


def health(server: str) -> bytes:
    path = "/api/v1/health" if server == "selfcare" else "/api/health"
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()


# ---- HTTP ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("server", SERVERS)
async def test_a_connection_that_sends_nothing_is_closed_after_the_idle_deadline(stack: Stack, server: str) -> None:
    async with connection(*address(stack, server)) as (reader, _):
        data, after = await closed_after(reader)
    assert data == b"" and DEADLINE * 0.8 < after < DEADLINE + 1.5


@pytest.mark.parametrize("server", SERVERS)
async def test_a_request_head_sent_slowly_is_cut_at_the_deadline_from_connecting(stack: Stack, server: str) -> None:
    """Bytes that keep coming do not buy time: the whole head is due `DEADLINE` after connecting."""
    head = health(server)
    async with connection(*address(stack, server)) as (reader, writer):
        started = time.perf_counter()
        writer.write(head[:5])
        await asyncio.sleep(DEADLINE * 0.6)  # the client dawdles (what is tested, not a wait for an event)
        writer.write(head[5:12])
        data, _ = await closed_after(reader)
    assert data == b"" and time.perf_counter() - started < DEADLINE + 1.5


@pytest.mark.parametrize("server", SERVERS)
async def test_a_kept_alive_connection_is_closed_idle_or_half_way_through_its_next_head(stack: Stack,
                                                                                      server: str) -> None:
    async with connection(*address(stack, server)) as (reader, writer):
        writer.write(health(server))
        status = await reader.readline()
        assert status.startswith(b"HTTP/1.1 200"), status
        writer.write(health(server)[:10])  # the next request, half sent
        data, after = await closed_after(reader)
    assert after < DEADLINE + 1.5 and b"HTTP/1.1" not in data  # no answer to the half-sent request


async def test_a_body_that_does_not_arrive_gets_408_naming_it(stack: Stack) -> None:
    host, port = address(stack, "selfcare")
    async with connection(host, port) as (reader, writer):
        writer.write(b"POST /api/v1/sessions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"msisdn\": ")
        data, after = await closed_after(reader)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408") and b'"field": "body"' in body and after < 2 * DEADLINE + 1.5


@pytest.mark.parametrize("server", SERVERS)
async def test_past_the_connection_limit_the_next_gets_503_and_the_server_still_serves(settings: Settings,
                                                                                     server: str) -> None:
    stack = Stack(settings.with_overrides(http_max_connections=3, http_idle_timeout_s=30.0))
    await stack.start(gateway=server == "selfcare")
    try:
        host, port = address(stack, server)
        held = [await asyncio.open_connection(host, port) for _ in range(3)]
        gate = stack.gates[server]
        async with asyncio.timeout(5):
            await gate.wait(lambda g: g.open == 3)  # the server has taken all three (accepting is its own turn)
        async with connection(host, port) as (reader, writer):
            writer.write(health(server))
            data, _ = await closed_after(reader)
        assert data.startswith(b"HTTP/1.1 503") and b'"error": "unavailable"' in data and gate.refused == 1
        for _, writer in held:
            writer.close()
        async with asyncio.timeout(5):
            await gate.wait(lambda g: g.open == 0)
        async with connection(host, port) as (reader, writer):
            writer.write(health(server))
            assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    finally:
        await stack.stop()


# ---- SMPP ---------------------------------------------------------------------------------------
async def test_a_connection_that_does_not_bind_in_time_is_closed(stack: Stack) -> None:
    assert stack.smsc is not None
    async with connection("127.0.0.1", stack.smsc.port) as (reader, _):
        data, after = await closed_after(reader)
    assert data == b"" and after < DEADLINE + 1.5


async def test_a_wrong_bind_does_not_buy_time_either(stack: Stack) -> None:
    assert stack.smsc is not None
    client = await RawClient.connect("127.0.0.1", stack.smsc.port)
    client.send(Bind(system_id="ussdgw", password="wrong"))
    refused = await client.read_until(BindResp)
    assert refused.status == Status.RINVPASWD
    data, after = await closed_after(client.reader)
    assert data == b"" and after < DEADLINE + 1.5


async def test_past_the_esme_limit_a_bind_gets_throttled_and_the_connection_closes(settings: Settings) -> None:
    stack = Stack(settings.with_overrides(sim_max_connections=1))  # the gateway's bind takes the one
    await stack.start()
    try:
        assert stack.smsc is not None and stack.gateway is not None
        await stack.gateway.wait_bound(5)
        client = await RawClient.connect("127.0.0.1", stack.smsc.port)
        client.send(Bind(system_id="ussdgw", password="ussdgw1"))
        answer = await client.read_until(BindResp)
        assert answer.status == Status.RTHROTTLED
        data, _ = await closed_after(client.reader)
        assert data == b"" and stack.smsc.refused_connections == 1
        assert len(stack.smsc.connections) == 1  # the gateway's, still bound
    finally:
        await stack.stop()


# ---- SMTP ---------------------------------------------------------------------------------------
async def test_the_smtp_sink_drops_a_silent_session_and_refuses_past_its_limit(settings: Settings) -> None:
    stack = Stack(settings.with_overrides(sim_smtp_max_connections=1))
    await stack.start(gateway=False)
    try:
        assert stack.post_office is not None
        port = stack.post_office.port
        async with connection("127.0.0.1", port) as (first, _):
            assert (await first.readline()).startswith(b"220")
            async with connection("127.0.0.1", port) as (second, _):
                refused, _ = await closed_after(second)
            assert refused.startswith(b"421") and stack.post_office.gate.refused == 1
            rest, after = await closed_after(first)  # silent: aiosmtpd's timeout ends it
        assert after < DEADLINE + 1.5 and (rest == b"" or rest.startswith(b"421"))
    finally:
        await stack.stop()


# ---- out of file descriptors ----------------------------------------------------------------------
CHILD = r"""
import asyncio, logging, resource, sys
from aiohttp import web
from simulator.smsc import Smsc
from ussdgw.connections import ConnectionLimits
from ussdgw.web import serve

logging.basicConfig(stream=sys.stderr, level=logging.ERROR)
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

async def main():
    app = web.Application()
    app.router.add_get("/ok", lambda request: web.json_response({"ok": True}))
    runner, url, gate = await serve(app, "127.0.0.1", 0, ConnectionLimits(max_connections=1000, idle_timeout_s=60),
                                    name="emfile")
    smsc = Smsc({"esme": "pw"}, max_connections=1000, bind_timeout_s=60)
    _, smpp_port = await smsc.start("127.0.0.1", 0)
    print("PORTS", url.rsplit(":", 1)[1], smpp_port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_running_out_of_file_descriptors_logs_and_keeps_serving(tmp_path: Path) -> None:
    """A server with 64 descriptors gets 150 connections: accept fails with EMFILE, asyncio logs it
    and retries; once the clients go, both the HTTP server and the SMSC answer again."""
    errors = tmp_path / "stderr"
    with errors.open("wb") as stderr:  # a file, not a pipe: a pipe nobody reads would stall the child's logging
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", CHILD, stdout=subprocess.PIPE,
                                                     stderr=stderr, cwd=ROOT, env={**os.environ, "PYTHONPATH": "."})
    try:
        assert child.stdout is not None
        async with asyncio.timeout(20):
            while not (line := await child.stdout.readline()).startswith(b"PORTS"):
                assert line, "the child ended before it listened"
        http_port, smpp_port = (int(p) for p in line.split()[1:])
        flood = []
        for _ in range(150):
            try:
                flood.append(await asyncio.wait_for(asyncio.open_connection("127.0.0.1", http_port), 1))
            except TimeoutError:  # the accept queue is full too: enough
                break
            except OSError:
                pass
        assert child.returncode is None  # out of descriptors, and alive
        for _, writer in flood:
            writer.close()
        # asyncio retries accepting every second, working through the queue of closed connections:
        # one request waits its turn there (a probe given up and made again would queue at the back).
        async with asyncio.timeout(30):
            while True:
                try:
                    async with connection("127.0.0.1", http_port) as (reader, writer):
                        writer.write(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
                        status = await reader.readline()
                    if status.startswith(b"HTTP/1.1 200"):
                        break
                except OSError:
                    pass
                await asyncio.sleep(0.2)
        client = await RawClient.connect("127.0.0.1", smpp_port)
        client.send(Bind(system_id="esme", password="pw"))
        assert (await client.read_until(BindResp, timeout=10)).status == Status.ROK
        await client.close()
        assert child.returncode is None
    finally:
        child.kill()
        await child.communicate()
    err = errors.read_bytes()
    assert b"out of system resource" in err or b"Too many open files" in err, err[-2000:]
