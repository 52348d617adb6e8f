"""Fixtures: a real redis-server started for the session, a store on it, the whole stack on free
loopback ports."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import hypothesis
import pytest
import redis

from tests.support.platform import StoreFactory, flush_cluster
from tests.support.processes import MARK, Command, marked
from tests.support.reruns import FailedAttempts
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.redis_server import EmbeddedCluster, EmbeddedRedis
from ussdgw.store import Store

# Property tests judge what a function returns, never how fast: on a machine busy with other work
# a 200 ms per-example deadline fails a correct function at random (the per-test timeout still holds).
hypothesis.settings.register_profile("ussdgw", deadline=None,
                                    suppress_health_check=[hypothesis.HealthCheck.too_slow])
hypothesis.settings.load_profile("ussdgw")

if TYPE_CHECKING:
    from tests.support.selfcare_helpers import Api


DEFAULT_BACKEND = os.environ.get("USSDGW_TEST_REDIS", "single")


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(FailedAttempts(), "failed-attempts")
    config.addinivalue_line(
        "markers", "redis_both: every test of the module that uses Redis runs on a single server and on a cluster")
    config.addinivalue_line(
        "markers", "needs_tool(missing, reason): the test needs a system tool (Kannel, node, Chromium); "
        "skipped where `missing` is true, but in CI (CI=true) that is a failure of the install step")


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in item.iter_markers("needs_tool"):
        missing = bool(marker.args[0]) if marker.args else False
        if missing:
            reason = str(marker.kwargs.get("reason", "a system tool is missing"))
            if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
                pytest.fail(f"CI must have installed this: {reason}", pytrace=False)
            pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedCluster]:
    """A 3-primary, 3-replica Redis Cluster on free loopback ports, for the session (started only
    when a test asks for it; every node stopped at the end)."""
    cluster = EmbeddedCluster(tmp_path_factory.mktemp("redis-cluster"), persistent=False)
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_backend(request: pytest.FixtureRequest) -> str:
    """"single" or "cluster": which Redis `redis_url` is. Modules marked `redis_both` run each test
    on both (`pytest_generate_tests`); USSDGW_TEST_REDIS=cluster makes the cluster everyone's default."""
    return str(getattr(request, "param", DEFAULT_BACKEND))


@pytest.fixture
def redis_url(redis_backend: str, request: pytest.FixtureRequest) -> str:
    """The URL of an empty Redis: the session's single server, or the session's cluster."""
    if redis_backend == "cluster":
        cluster: EmbeddedCluster = request.getfixturevalue("redis_cluster")
        flush_cluster(cluster.url)
        return cluster.url
    server: EmbeddedRedis = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server.url


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests of modules marked `redis_both` that use Redis run against a single server and a cluster."""
    if metafunc.definition.get_closest_marker("redis_both") and "redis_backend" in metafunc.fixturenames:
        metafunc.parametrize("redis_backend", ["single", "cluster"], indirect=True)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=redis_url, state_dir=str(tmp_path), secret_key=secrets.token_hex(32),
        sim_port=0, sim_http_port=0, api_port=0, mt_lease_s=1.0, secret_cooldown_s=0, secret_per_hour=100,
        d2_from_others_per_hour=100, d2_caused_per_hour=100,
        enquire_link_s=5.0, response_timeout_s=3.0, reconnect_max_s=0.5,
    )


@pytest.fixture
async def store_factory(settings: Settings) -> AsyncIterator[StoreFactory]:
    """Stores as the platform makes them (`Store.from_url`, the settings' key and lease), each with
    its own clock unless given one; `url` points one elsewhere (an unreachable Redis). All closed
    at the end of the test."""
    made: list[Store] = []

    def make(url: str | None = None, **overrides: Any) -> Store:
        options: dict[str, Any] = {"lease_s": settings.mt_lease_s, **overrides}
        made.append(Store.from_url(url or settings.redis_url, settings.secret_key_bytes(), **options))
        return made[-1]

    yield make
    for store in made:
        await store.close()


@pytest.fixture
def store(store_factory: StoreFactory) -> Store:
    """A store on the test's empty Redis, with the `settings`' secret key and MT lease."""
    return store_factory()


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    running = Stack(settings)
    await running.start()
    assert running.gateway is not None
    await running.gateway.wait_bound(5)
    yield running
    await running.stop()


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    """The self-care API of the `stack`, with the demo people seeded; requests checked against the spec."""
    from tests.support.selfcare_helpers import Api, seed  # they use send_and_wait from here

    await seed(stack)
    async with aiohttp.ClientSession() as http:
        yield Api(stack.endpoints["selfcare"], http)


@pytest.fixture
def ussdgw(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    """Starts `ussdgw ARGS...` with a private state folder and free ports everywhere, nothing
    inherited that points elsewhere. At the end, whatever any of them left running is killed."""
    mark = str(tmp_path)
    (tmp_path / "tmp").mkdir()
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith("USSDGW_") and k not in ("REDIS_URL", "PYTHONPATH")}
    env = {**inherited, MARK: mark, "TMPDIR": str(tmp_path / "tmp"), "PYTHONUNBUFFERED": "1",
           "USSDGW_STATE_DIR": str(tmp_path / "state"), "USSDGW_SECRET_KEY": secrets.token_hex(32),
           "USSDGW_SIM_PORT": "0", "USSDGW_SIM_HTTP_PORT": "0", "USSDGW_API_PORT": "0",
           "USSDGW_LOG_FORMAT": "json"}

    started: list[Command] = []

    def start(*args: str, **extra_env: str) -> Command:
        popen = subprocess.Popen([sys.executable, "-m", "ussdgw.app", *args], cwd=tmp_path,
                                 env={**env, **extra_env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True, encoding="utf-8", start_new_session=True)
        started.append(Command(popen, list(args), mark))
        return started[-1]

    try:
        yield start
    finally:
        for proc in marked(mark):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        for command in started:
            command.popen.wait()
            command.wait_ended()
