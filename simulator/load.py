"""`ussdgw load`: load on the platform through the SMSC simulator, as many phones at once.

    ussdgw load --phones 1000 --rate 2000 --mix sms:70,ussd:30 --duration 10

Starts a private Redis (unless REDIS_URL), the SMSC simulator in this process and `--gateways`
gateway processes bound to it (or, with --gateways 0, waits for any gateway to bind to --port).
Virtual phones then send requests at `--rate` per second, open loop: a request is offered on
schedule whatever the platform does, by an idle phone (a phone has one request in flight, as a
handset does; with none idle the request counts as `not offered`). The latency of a request is
from its MO entering the SMSC to its reply reaching the phone; a request without a reply within
`timeout` counts as lost. The report gives the offered and achieved rates and the latency
percentiles, per kind and in all.

SMS requests send `--sms CODE:TEXT` (default a help request to 3339: R9, cheap and unlimited; a
password costs an scrypt hash on purpose), USSD requests dial `--ussd` (default *100#).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import secrets
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from simulator.phones import PhoneBook, PhoneEvent
from simulator.smsc import Smsc
from ussdgw.smpp.pdu import UssdOp

MSISDN_BASE = 79_500_000_000
TICK_S = 0.005
REQUEST_TIMEOUT_S = 10.0


class LoadError(ValueError):
    pass


def parse_mix(text: str) -> dict[str, float]:
    """`sms:70,ussd:30` -> {"sms": 0.7, "ussd": 0.3}."""
    shares: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.strip().partition(":")
        if name not in ("sms", "ussd") or not value:
            raise LoadError(f"--mix: expected like sms:70,ussd:30, got {text!r}")
        try:
            shares[name] = float(value)
        except ValueError:
            raise LoadError(f"--mix: {value!r} is not a number") from None
    total = sum(shares.values())
    if total <= 0 or any(v < 0 for v in shares.values()):
        raise LoadError("--mix: shares must be positive")
    return {k: v / total for k, v in shares.items()}


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    rank = math.ceil(q / 100 * len(sorted_values))  # nearest rank
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


@dataclass(slots=True)
class KindStats:
    offered: int = 0
    completed: int = 0
    lost: int = 0
    latencies: list[float] = field(default_factory=list)

    def summary(self, seconds: float) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "offered": self.offered, "completed": self.completed, "lost": self.lost,
            "per_s": round(self.completed / seconds, 1) if seconds else 0.0,
            "p50_ms": round(percentile(lat, 50) * 1000, 2), "p90_ms": round(percentile(lat, 90) * 1000, 2),
            "p99_ms": round(percentile(lat, 99) * 1000, 2), "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


@dataclass(slots=True)
class Request:
    kind: str
    started: float


class LoadGenerator:
    """Open-loop requests from virtual phones through the simulator's `Smsc`, replies timed."""

    def __init__(self, smsc: Smsc, *, phones: int, rate: float, mix: dict[str, float], sms: tuple[str, str],
                 ussd: str, seed: int = 1) -> None:
        if phones < 1 or rate <= 0:
            raise LoadError("--phones and --rate must be positive")
        self.smsc = smsc
        self.rate = rate
        self.mix = mix
        self.sms_to, self.sms_text = sms
        self.ussd = ussd
        self.ussd_to = "*" + ussd.strip("*#").split("*")[0] + "#"
        self.msisdns = [str(MSISDN_BASE + i) for i in range(phones)]
        self.idle: deque[str] = deque(self.msisdns)
        self.in_flight: dict[str, Request] = {}
        self.stats = {kind: KindStats() for kind in mix}
        self.not_offered = 0
        self.random = random.Random(seed)
        self._kinds = list(mix)
        self._weights = [mix[k] for k in self._kinds]
        book: PhoneBook = smsc.phones
        for msisdn in self.msisdns:
            phone = book.get(msisdn)
            phone.inbox_capacity = 1 << 30
        book.watchers.append(self._on_event)

    def _on_event(self, event: PhoneEvent) -> None:
        if event.kind != "inbox":
            return
        request = self.in_flight.pop(event.msisdn, None)
        phone = self.smsc.phones.phones[event.msisdn]
        phone.inbox.clear()
        phone.sent.clear()
        if request is None:
            return  # a late reply to a request already counted as lost
        stats = self.stats[request.kind]
        latency = time.perf_counter() - request.started
        if latency > REQUEST_TIMEOUT_S:
            stats.lost += 1  # too late to count, as a subscriber would have given up
        else:
            stats.completed += 1
            stats.latencies.append(latency)
        self.idle.append(event.msisdn)

    def _offer(self) -> None:
        kind = self.random.choices(self._kinds, self._weights)[0] if len(self._kinds) > 1 else self._kinds[0]
        if not self.idle:
            self.not_offered += 1
            return
        msisdn = self.idle.popleft()
        self.stats[kind].offered += 1
        self.in_flight[msisdn] = Request(kind, time.perf_counter())
        if kind == "sms":
            self.smsc.submit_mo(msisdn, self.sms_to, self.sms_text)
        else:
            self.smsc.submit_mo(msisdn, self.ussd_to, self.ussd, ussd_service_op=UssdOp.PSSR_INDICATION)

    def _expire(self, now: float) -> None:
        for msisdn, request in list(self.in_flight.items()):
            if now - request.started > REQUEST_TIMEOUT_S:
                del self.in_flight[msisdn]
                self.stats[request.kind].lost += 1
                self.idle.append(msisdn)

    async def run(self, duration: float, progress: Any = None) -> float:
        """Offer load for `duration` seconds, then wait for replies; returns the offering time."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        offered = 0
        last_expiry = started
        while True:
            now = loop.time()
            elapsed = now - started
            if elapsed >= duration:
                break
            due = int(elapsed * self.rate) - offered
            for _ in range(due):
                self._offer()
            offered += max(due, 0)
            if now - last_expiry > 1.0:
                self._expire(time.perf_counter())
                last_expiry = now
            if progress is not None:
                progress(elapsed, self)
            await asyncio.sleep(TICK_S)
        for _ in range(int(duration * self.rate) - offered):  # what the last, late tick still owed
            self._offer()
        offering = loop.time() - started
        deadline = loop.time() + REQUEST_TIMEOUT_S
        while self.in_flight and loop.time() < deadline:
            if progress is not None:
                progress(duration, self)
            await asyncio.sleep(0.05)
        self._expire(float("inf"))
        return offering

    def result(self, offering: float) -> dict[str, Any]:
        total = KindStats()
        for stats in self.stats.values():
            total.offered += stats.offered
            total.completed += stats.completed
            total.lost += stats.lost
            total.latencies.extend(stats.latencies)
        return {
            "phones": len(self.msisdns), "target_rate": self.rate, "seconds": round(offering, 2),
            "offered_per_s": round(total.offered / offering, 1) if offering else 0.0,
            "not_offered": self.not_offered,
            "all": total.summary(offering), **{k: s.summary(offering) for k, s in self.stats.items()},
        }


# ---- the platform for a load run -------------------------------------------------------------
class LoadPlatform:
    """Private Redis, the simulator's SMSC here, gateway processes bound to it."""

    def __init__(self, settings: Any, gateways: int, port: int, console: Console) -> None:
        self.settings = settings
        self.gateways = gateways
        self.port = port
        self.console = console
        self.processes: list[asyncio.subprocess.Process] = []
        self.smsc: Smsc | None = None
        self._redis: Any = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    async def __aenter__(self) -> LoadPlatform:
        from ussdgw.redis_server import EmbeddedRedis

        self._tmp = tempfile.TemporaryDirectory(prefix="ussdgw-load-")
        url = self.settings.redis_url
        if not url:
            self._redis = EmbeddedRedis(self._tmp.name, persistent=False)
            await asyncio.to_thread(self._redis.start)
            url = self._redis.url
        self.smsc = Smsc(dict(self.settings.sim_accounts), PhoneBook(), window=max(self.settings.window, 256),
                         validity_s=self.settings.sim_validity_s)
        host, port = await self.smsc.start("127.0.0.1", self.port)
        env = {**os.environ, "REDIS_URL": url, "USSDGW_SECRET_KEY": secrets.token_hex(32),
               "USSDGW_STATE_DIR": self._tmp.name, "USSDGW_LOG_LEVEL": "error", "USSDGW_API_PORT": "0",
               "USSDGW_WINDOW": str(max(self.settings.window, 256))}
        for _ in range(self.gateways):
            self.processes.append(await asyncio.create_subprocess_exec(
                sys.executable, "-m", "ussdgw.cli", "gateway", "--smsc", f"{host}:{port}",
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wanted = max(1, self.gateways)
        if self.gateways == 0:
            self.console.print(f"waiting for a gateway to bind to {host}:{port} ...")
        async with asyncio.timeout(None if self.gateways == 0 else 30):
            # Other processes are starting up: there is no event in this one to wait on.
            while sum(1 for c in self.smsc.connections if c.session.can_deliver) < wanted:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        return self

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


async def seed_phones(url: str, msisdns: list[str]) -> None:
    """Every load phone gets a profile with a balance, so *100# has something to show."""
    import redis.asyncio as aioredis

    from ussdgw.store import sub_key

    client = aioredis.Redis.from_url(url)
    try:
        async with client.pipeline(transaction=False) as pipe:
            for msisdn in msisdns:
                pipe.hset(sub_key(msisdn), mapping={"owner_id": f"p-{msisdn}", "region": "77", "corporate": 0,
                                                    "balance_kop": 10000, "tariff": "basic"})
            await pipe.execute()
    finally:
        await client.aclose()


# ---- the command -----------------------------------------------------------------------------
def _report(console: Console, result: dict[str, Any]) -> None:
    table = Table(title=f"{result['phones']} phones · target {result['target_rate']:g}/s · "
                        f"offered {result['offered_per_s']:g}/s for {result['seconds']:g} s")
    for column in ("kind", "offered", "completed", "lost", "per s", "p50 ms", "p90 ms", "p99 ms", "max ms"):
        table.add_column(column, justify="right" if column != "kind" else "left")
    for kind in ("sms", "ussd", "all"):
        if kind not in result:
            continue
        s = result[kind]
        table.add_row(kind, str(s["offered"]), str(s["completed"]), str(s["lost"]), f"{s['per_s']:g}",
                      f"{s['p50_ms']:g}", f"{s['p90_ms']:g}", f"{s['p99_ms']:g}", f"{s['max_ms']}",
                      style="bold" if kind == "all" else None)
    console.print(table)
    if result["not_offered"]:
        console.print(f"[yellow]{result['not_offered']} requests not offered: every phone was waiting for a "
                      f"reply (add --phones)[/]")


async def run_load(settings: Any, *, phones: int, rate: float, mix: dict[str, float], duration: float,
                   sms: tuple[str, str], ussd: str, gateways: int = 1, port: int = 0,
                   console: Console | None = None, show_progress: bool = True) -> dict[str, Any]:
    console = console or Console(stderr=True)
    async with LoadPlatform(settings, gateways, port, console) as platform:
        assert platform.smsc is not None
        url = settings.redis_url or (platform._redis.url if platform._redis is not None else "")
        generator = LoadGenerator(platform.smsc, phones=phones, rate=rate, mix=mix, sms=sms, ussd=ussd)
        await seed_phones(url, generator.msisdns)
        if not show_progress:
            offering = await generator.run(duration)
            return generator.result(offering)
        columns = (TextColumn("[bold]load[/]"), BarColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[status]}"))
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task("load", total=duration, status="")

            def update(elapsed: float, gen: LoadGenerator) -> None:
                done = sum(s.completed for s in gen.stats.values())
                offered = sum(s.offered for s in gen.stats.values())
                progress.update(task, completed=elapsed,
                                status=f"offered {offered} · done {done} · in flight {len(gen.in_flight)}")

            offering = await generator.run(duration, update)
        return generator.result(offering)


def _fast_loop_factory() -> Any:
    """uvloop's event loop when it is installed (about twice the PDUs per second), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def load_command(args: argparse.Namespace, settings: Any) -> int:
    console = Console(stderr=True, highlight=False)
    try:
        mix = parse_mix(args.mix)
        code, _, text = args.sms.partition(":")
        if not code:
            raise LoadError("--sms: expected CODE:TEXT, e.g. 3339:HELP")
        if args.duration <= 0:
            raise LoadError("--duration must be positive")
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            result = runner.run(run_load(settings, phones=args.phones, rate=args.rate, mix=mix,
                                         duration=args.duration, sms=(code, text), ussd=args.ussd,
                                         gateways=args.gateways, port=args.port, console=console))
    except LoadError as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    except TimeoutError:
        console.print("[red]the gateway did not bind to the load's SMSC within 30 s[/]")
        return 1
    _report(Console(highlight=False), result)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0 if result["all"]["lost"] == 0 else 1
