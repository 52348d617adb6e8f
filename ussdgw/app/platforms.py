"""Private platforms for the simulator's scenario and load runs: the parts started and wired here,
at the composition root, so that the simulator itself reaches the platform only over SMPP and HTTP."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable

from rich.console import Console

from simulator.phones import PhoneBook
from simulator.scenario import Scenario, ScenarioResult, StepResult, run_against
from simulator.smsc import Smsc
from ussdgw.app.seed import seed_subscribers
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.redis_server import EmbeddedRedis
from ussdgw.store import Store
from ussdgw.store.connect import connect, flush


class PrivatePlatform:
    """A private platform per scenario: its settings, its subscribers, fresh Redis data, its own clock."""

    def __init__(self, base_settings: Settings | None = None) -> None:
        self.base_settings = base_settings or Settings()
        self._redis: EmbeddedRedis | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> PrivatePlatform:
        base = self.base_settings
        self._tmp = tempfile.TemporaryDirectory(prefix="ussdgw-scenario-")
        if not base.redis_url:
            self._redis = EmbeddedRedis(self._tmp.name, persistent=False)
            await asyncio.to_thread(self._redis.start)
            base = base.with_overrides(redis_url=self._redis.url)
        # On a shared REDIS_URL, the key of the command's own settings (its state folder's), not one
        # per private folder: the MTs queued there are sealed with one key (`Store.check_sealing_key`).
        shared_key = base.secret_key_bytes().hex() if self._redis is None else None
        self.base_settings = base.with_overrides(state_dir=self._tmp.name, sim_port=0, sim_http_port=0, api_port=0,
                                                 secret_key=shared_key)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._redis is not None:
            await asyncio.to_thread(self._redis.stop)
        if self._tmp is not None:
            self._tmp.cleanup()

    async def run(self, scenario: Scenario, on_step: Callable[[StepResult], None] | None = None) -> ScenarioResult:
        settings = self.base_settings.with_overrides(**scenario.settings)
        if self._redis is not None:  # ours: every scenario starts from empty data
            client = connect(settings.redis_url)
            await flush(client)
            await client.aclose()
        stack = Stack(settings)  # its own clock: time advanced in one scenario stays there
        try:
            await stack.start()
            assert stack.gateway is not None and stack.store is not None
            await stack.gateway.wait_bound(10)
            await seed_subscribers(stack.store, scenario.subscribers)
            return await run_against(stack.endpoints["simulator"], scenario, on_step)
        except (OSError, TimeoutError) as exc:
            return ScenarioResult(scenario, error=f"the platform did not start: {exc}")
        finally:
            await stack.stop()


class LoadPlatform:
    """Private Redis (unless REDIS_URL), the simulator's SMSC in this process, `gateways` gateway
    processes bound to it (0: wait for any gateway to bind to `port`)."""

    def __init__(self, settings: Settings, gateways: int, port: int, console: Console) -> None:
        self.settings = settings
        self.gateways = gateways
        self.port = port
        self.console = console
        self.processes: list[asyncio.subprocess.Process] = []
        self.smsc: Smsc | None = None
        self._redis: EmbeddedRedis | None = None
        self._url = settings.redis_url
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @classmethod
    def for_command(cls, settings: Settings) -> Callable[[argparse.Namespace, Console], LoadPlatform]:
        """What `ussdgw load` builds from its arguments (`--gateways`, `--port`)."""
        return lambda args, console: cls(settings, args.gateways, args.port, console)

    async def __aenter__(self) -> LoadPlatform:
        self._tmp = tempfile.TemporaryDirectory(prefix="ussdgw-load-")
        url = self.settings.redis_url
        if not url:
            self._redis = EmbeddedRedis(self._tmp.name, persistent=False)
            await asyncio.to_thread(self._redis.start)
            url = self._redis.url
        self._url = url
        self.smsc = Smsc(self.settings.sim_credentials(), PhoneBook(), window=max(self.settings.window, 256),
                         validity_s=self.settings.sim_validity_s)
        host, port = await self.smsc.start("127.0.0.1", self.port)
        # The gateways run on this command's settings (file, environment, flags), with their own
        # Redis, state, key and any free API port.
        env = {**os.environ, **self.settings.with_overrides(
            redis_url=url, secret_key=self._sealing_key(), state_dir=self._tmp.name, log_level="error",
            api_port=0, window=max(self.settings.window, 256)).to_environment()}
        for _ in range(self.gateways):
            self.processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ussdgw.app", "gateway", "--smsc", f"{host}:{port}",
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wanted = max(1, self.gateways)
        if self.gateways == 0:
            self.console.print(f"waiting for a gateway to bind to {host}:{port} ...")
        async with asyncio.timeout(None if self.gateways == 0 else 30):
            # Other processes are starting up: there is no event in this one to wait on.
            while sum(1 for c in self.smsc.connections if c.session.can_deliver) < wanted:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return self

    def _sealing_key(self) -> str:
        """A fresh key for a private Redis; on a shared REDIS_URL this command's own (its state
        folder's), the one the MTs queued there are sealed with (`Store.check_sealing_key`)."""
        return self.settings.secret_key_bytes().hex() if self.settings.redis_url else secrets.token_hex(32)

    async def prepare(self, msisdns: list[str]) -> None:
        """Every load phone gets a subscriber with a balance, so *100# has something to show."""
        store = Store.from_url(self._url, self.settings.secret_key_bytes())
        try:
            await seed_subscribers(store, [{"msisdn": m, "balance": 100, "region": "77"} for m in msisdns])
        finally:
            await store.close()

    async def __aexit__(self, *exc: object) -> None:
        if self.smsc is not None:  # first: what is still queued for the gateways is dropped, not retried
            await self.smsc.stop()
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        for process in self.processes:
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._redis is not None:
            await asyncio.to_thread(self._redis.stop)
        if self._tmp is not None:
            self._tmp.cleanup()
