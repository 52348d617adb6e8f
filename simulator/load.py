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
import json
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape
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


def percentile(values: Sequence[float], q: float, *, ordered: bool = False) -> float:
    """The `q`-th percentile (0-100) by nearest rank; NaN for no values. The benchmarks use it too."""
    if not values:
        return float("nan")
    ranked = values if ordered else sorted(values)
    rank = math.ceil(q / 100 * len(ranked))
    return ranked[min(len(ranked), max(rank, 1)) - 1]


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
            "p50_ms": round(percentile(lat, 50, ordered=True) * 1000, 2),
            "p90_ms": round(percentile(lat, 90, ordered=True) * 1000, 2),
            "p99_ms": round(percentile(lat, 99, ordered=True) * 1000, 2),
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
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
        # Per second of the run: requests offered and replies counted (for the report's throughput plot).
        self.started_at = time.perf_counter()
        self.offered_per_s: list[int] = []
        self.completed_per_s: list[int] = []
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
        now = time.perf_counter()
        latency = now - request.started
        if latency > REQUEST_TIMEOUT_S:
            stats.lost += 1  # too late to count, as a subscriber would have given up
        else:
            stats.completed += 1
            stats.latencies.append(latency)
            _count_at(self.completed_per_s, now - self.started_at)
        self.idle.append(event.msisdn)

    def _offer(self) -> None:
        kind = self.random.choices(self._kinds, self._weights)[0] if len(self._kinds) > 1 else self._kinds[0]
        if not self.idle:
            self.not_offered += 1
            return
        msisdn = self.idle.popleft()
        self.stats[kind].offered += 1
        now = time.perf_counter()
        self.in_flight[msisdn] = Request(kind, now)
        _count_at(self.offered_per_s, now - self.started_at)
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
        self.started_at = time.perf_counter()
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
            "timeline": self.timeline(),
        }

    def timeline(self) -> dict[str, list[int]]:
        """Requests offered and completed in each second of the run (second 0 first)."""
        seconds = max(len(self.offered_per_s), len(self.completed_per_s))
        return {"offered_per_s": self.offered_per_s + [0] * (seconds - len(self.offered_per_s)),
                "completed_per_s": self.completed_per_s + [0] * (seconds - len(self.completed_per_s))}

    def latencies(self) -> dict[str, list[float]]:
        """Every completed request's latency in seconds, by kind."""
        return {kind: list(stats.latencies) for kind, stats in self.stats.items()}


def _count_at(series: list[int], elapsed: float) -> None:
    """One more in the second `elapsed` falls in."""
    second = max(0, int(elapsed))
    if second >= len(series):
        series.extend([0] * (second + 1 - len(series)))
    series[second] += 1


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


class LoadTarget(Protocol):
    """The SMSC the load's phones use, with the platform's gateways bound to it (the composition
    root provides one: `ussdgw.app.platforms.LoadPlatform`)."""

    smsc: Smsc | None

    async def prepare(self, msisdns: list[str]) -> None:
        """Give every load phone a subscriber (a balance for *100#) before the load starts."""


async def run_load(target: AbstractAsyncContextManager[LoadTarget], *, phones: int, rate: float,
                   mix: dict[str, float], duration: float, sms: tuple[str, str], ussd: str,
                   console: Console | None = None, show_progress: bool = True,
                   report: Path | None = None) -> dict[str, Any]:
    """Run the load; with `report`, write the HTML report there once the platform has stopped."""
    console = console or Console(stderr=True)
    async with target as platform:
        assert platform.smsc is not None
        generator = LoadGenerator(platform.smsc, phones=phones, rate=rate, mix=mix, sms=sms, ussd=ussd)
        await platform.prepare(generator.msisdns)
        if not show_progress:
            offering = await generator.run(duration)
        else:
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
    result = generator.result(offering)
    if report is not None:
        from simulator.report import write_report

        write_report(report, result, generator.latencies())
    return result


def _fast_loop_factory() -> Any:
    """uvloop's event loop when it is installed (about twice the PDUs per second), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def load_command(args: argparse.Namespace,
                 make_target: Callable[[argparse.Namespace, Console], AbstractAsyncContextManager[LoadTarget]]) -> int:
    """`ussdgw load`: `make_target` builds the platform under load from the command's arguments."""
    console = Console(stderr=True, highlight=False)
    try:
        mix = parse_mix(args.mix)
        code, _, text = args.sms.partition(":")
        if not code:
            raise LoadError("--sms: expected CODE:TEXT, e.g. 3339:HELP")
        if args.duration <= 0:
            raise LoadError("--duration must be positive")
        report = getattr(args, "report", None)
        if report is not None:
            from simulator.report import require_plotting

            require_plotting()  # before minutes of load, not after
        with asyncio.Runner(loop_factory=_fast_loop_factory()) as runner:
            result = runner.run(run_load(make_target(args, console), phones=args.phones, rate=args.rate, mix=mix,
                                         duration=args.duration, sms=(code, text), ussd=args.ussd,
                                         console=console, report=report))
    except LoadError as exc:
        console.print(f"[red]{escape(str(exc))}[/]")
        return 2
    except TimeoutError:
        console.print("[red]the gateway did not bind to the load's SMSC within 30 s[/]")
        return 1
    _report(Console(highlight=False), result)
    if report is not None:
        console.print(f"report: {report}")
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    return 0 if result["all"]["lost"] == 0 else 1
