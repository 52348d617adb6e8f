"""The stack starts its parts in order and stops them newest first, whatever goes wrong on the way."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from simulator.mailbox import PostOffice
from simulator.smsc import Smsc
from ussdgw.app.stack import Stack
from ussdgw.config import Settings


def refused(endpoint: str) -> bool:
    """Whether nothing listens at 'smpp://host:port' or 'http://host:port[/path]' any more."""
    host, port = endpoint.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def embedded(settings: Settings) -> Settings:
    """Settings for a stack with its own redis-server in its state folder (no REDIS_URL)."""
    return settings.with_overrides(redis_url="")


async def test_a_part_failing_to_start_stops_every_part_started_before_it(embedded: Settings,
                                                                         taken_port: int) -> None:
    stack = Stack(embedded.with_overrides(api_port=taken_port))
    with pytest.raises(OSError):
        await stack.start()
    assert stack.smsc is not None and stack.gateway is not None and stack.redis is not None
    assert stack.redis.process is None, "the embedded redis-server is left running"
    assert refused(stack.endpoints["smsc"]) and refused(stack.endpoints["simulator"])
    assert all(client._stopping for client in stack.gateway.clients)
    await stack.stop()  # nothing left to stop, and no error


async def test_a_failing_stop_is_logged_and_the_others_still_run(embedded: Settings,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    original = Smsc.stop

    async def failing(self: Smsc) -> None:
        await original(self)
        raise RuntimeError("smsc stop broke")

    monkeypatch.setattr(Smsc, "stop", failing)
    stack = await Stack(embedded).start()
    assert stack.redis is not None and stack.redis.process is not None
    with capture_logs() as logged:
        await stack.stop()
    failures = [e for e in logged if e["event"] == "stop_failed"]
    assert [e["part"] for e in failures] == ["smsc"] and failures[0]["log_level"] == "error"
    assert stack.redis.process is None  # stopped after the SMSC, in spite of it
    assert refused(stack.endpoints["simulator"]) and refused(stack.endpoints["selfcare"])


async def test_a_stop_that_hangs_is_given_up_after_its_timeout(settings: Settings,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    async def hanging(self: PostOffice) -> None:
        await asyncio.Event().wait()

    original = PostOffice.stop
    monkeypatch.setattr(PostOffice, "stop", hanging)
    stack = Stack(settings, stop_timeout_s=0.2)
    await stack.start()
    assert stack.post_office is not None
    with capture_logs() as logged:
        async with asyncio.timeout(10):
            await stack.stop()
    assert [(e["event"], e["part"]) for e in logged if "part" in e] == [("stop_timed_out", "smtp")]
    assert refused(stack.endpoints["smsc"]) and refused(stack.endpoints["simulator"])
    await original(stack.post_office)


async def test_parts_stop_newest_first(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Newest first; the platform's costly pool after the gateway and the API that submit to it."""
    order: list[str] = []
    original = Stack._stop_part

    async def recording(self: Stack, part: str, stop: Any) -> None:
        order.append(part)
        await original(self, part, stop)

    monkeypatch.setattr(Stack, "_stop_part", recording)
    stack = await Stack(settings).start()
    await stack.stop()
    assert order == ["selfcare_http", "gateway", "costly_pool", "smtp", "simulator_http", "smsc", "store"]


async def test_stop_is_idempotent_even_when_called_twice_at_once(settings: Settings) -> None:
    stack = await Stack(settings).start()
    await asyncio.gather(stack.stop(), stack.stop())
    await stack.stop()
    assert refused(stack.endpoints["smsc"])


async def test_the_simulator_alone_needs_no_redis(tmp_path: Path) -> None:
    settings = Settings(redis_url="", state_dir=str(tmp_path), sim_port=0, sim_http_port=0)
    stack = await Stack(settings).start(gateway=False)
    try:
        assert stack.smsc is not None and stack.handsets is not None
        assert stack.store is None and stack.redis is None and stack.platform is None
        assert "redis" not in stack.endpoints and not (tmp_path / "redis").exists()
    finally:
        await stack.stop()


async def test_a_second_stack_on_the_same_state_folder_shares_its_redis(embedded: Settings) -> None:
    first = await Stack(embedded).start(smsc=False, gateway=False, api=False, store=True)
    try:
        assert first.redis is not None and first.store is not None
        second = await Stack(embedded).start(smsc=False, gateway=False, api=False, store=True)
        assert second.redis is None and second.store is not None
        await second.store.redis.set("shared", "yes")
        await second.stop()
        assert await first.store.redis.get("shared") == b"yes"  # and the first's server still runs
    finally:
        await first.stop()


def test_the_embedded_redis_keeps_its_data_private(tmp_path: Path) -> None:
    """Its append-only files hold names, passports and password hashes: 0700 folder, 0600 files."""
    import os
    import stat

    import redis as sync_redis

    from ussdgw.redis_server import EmbeddedRedis

    folder = tmp_path / "state" / "redis"
    old_umask = os.umask(0o022)  # a shell's usual umask would make them world-readable
    try:
        server = EmbeddedRedis(folder, persistent=True)
        server.start()
        try:
            client = sync_redis.Redis.from_url(server.url)
            client.set("sub:{79161234567}", "passport 4509 123456")
            client.close()
        finally:
            server.stop()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files, "redis wrote no append-only file"
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.stat().st_mode & 0o077} == {}


def test_processes_starting_at_once_agree_on_one_secret_and_never_read_half_of_it(tmp_path: Path) -> None:
    import concurrent.futures
    import os
    import stat

    from ussdgw.private_files import read_or_create_secret

    path = tmp_path / "state" / "secret.key"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        seen = set(pool.map(lambda i: read_or_create_secret(path, f"{i:064x}"), range(64)))
    assert len(seen) == 1 and len(next(iter(seen))) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["secret.key"]  # nothing left aside
