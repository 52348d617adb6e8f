"""Fault injection: are replies ever stranded, swallowed or doubled when a part of the platform fails?

    .venv/bin/python bench/faults.py [--short] [--faults gateway-kill,link-cut,...] [--json]

Processes, all on 127.0.0.1, all started here and all SIGKILLed when this script ends (and by the
kernel if it dies first: PR_SET_PDEATHSIG):

    phones --HTTP--> ussdgw smsc --SMPP--> TCP proxy (here) --SMPP--> ussdgw gateway x2 --> redis-server
                     (simulator)                 ^ cuts the link                              ^ SIGKILL / SIGTERM

A steady load of MOs, each from a fresh phone (seeded with `ussdgw seed`: 500 ₽, tariff «Базовый»),
through the simulator's HTTP API, as testers drive it: `ПАРОЛЬ` to 3339 (a password by SMS), `*100#`
(the balance) and `*111*2*3*1#` (a switch to «Тарифище», which costs 100 ₽: the load moves money).
While it runs, one fault per scenario:

    gateway-kill   SIGKILL one gateway process; start it again after the outage
    link-cut       the proxy cuts every SMPP connection and refuses new ones for the outage
    redis-kill     SIGKILL redis-server (append-only file, fsync every second); start it again
    redis-stop     SIGTERM redis-server (a clean stop); start it again
    smsc-restart   SIGTERM the simulator (it delivers what it owes, then keeps its queue and phones
                   in `sim_state_file`); start it again

After the load, a recovery window: until every MO is settled, every phone has its reply and the
outbox is empty, or the window ends. Then the figures, from the phones (the simulator) and from
Redis (audit trail, MO marks, outboxes, balances):

    offered      MOs the simulator accepted (HTTP 2xx); `refused` the ones it could not (it was down)
    acked        MOs the gateway acknowledged (ESME_ROK), as the phone's outbox shows
    applied      MOs committed: phones with an `mo_received` audit entry (each commit writes one)
    applied 2x   phones with two or more (each phone sends one MO: that is a double application)
    replies      phones with 0 / 1 / more than 1 reply in their inbox
    late         phones whose reply came later than the MT lease plus 5 s after their MO was offered,
                 or after the fault's end for an MO offered before it
    stranded     MTs still queued in Redis outboxes after the window; `index` the MT recovery index's
                 entries still there for these phones (a sent MT leaves none)
    resent       MTs the gateways submitted again not knowing whether the SMSC had taken the first
                 copy, from their logs: `lost` after a submit_sm whose answer never came (a link cut,
                 a timeout), `reclaimed` a dead gateway's MT (it may have been submitted, unrecorded).
                 SMPP cannot tell; each is a doubled reply if the SMSC had the first copy
    throttled    MOs a gateway answered ESME_RTHROTTLED because their password hash would have
                 waited too long for its pool (the SMSC delivered them again later), from the logs
    money        the phones' balances before -> after, and what they should be (100 ₽ per switch)
    recovery s   from the fault until the part is back (restarted, reconnected) and every MO offered
                 during the fault, and the first one after it, has its reply (- : some never came)

Figures are printed as measured. The exit status is 1 when any MO was lost or applied twice,
any reply is missing, late or doubled (but a double the lost answers explain, as the SMPP link
allows), an MT is stranded or money does not add up.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ussdgw import logs  # noqa: E402
from ussdgw.redis_server import EmbeddedRedis, die_with_parent  # noqa: E402
from ussdgw.store.keys import INDEX_BUCKETS, audit_key, mt_due_key, outbox_key, sub_key  # noqa: E402
from ussdgw.store.model import audit_entry  # noqa: E402
from ussdgw.store.profile import STORED  # noqa: E402

SYSTEM_ID, PASSWORD = "ussdgw", "ussdgw1"
BALANCE_KOP = 50_000
SWITCH_KOP = 10_000  # «Тарифище»: handlers/catalogue.yaml
KINDS = (  # (kind, how: sms TO:TEXT or a USSD string), one phone each, in this rotation
    ("sms", "3339:ПАРОЛЬ"), ("ussd", "*100#"), ("pay", "*111*2*3*1#"), ("ussd", "*100#"), ("sms", "3339:ПАРОЛЬ"),
    ("pay", "*111*2*3*1#"), ("ussd", "*100#"), ("sms", "3339:ПАРОЛЬ"), ("ussd", "*100#"), ("pay", "*111*2*3*1#"),
)
READY_LINE = "Ctrl-C stops everything."


@dataclass(frozen=True)
class Plan:
    rate: float = 30.0  # MOs per second, all kinds together
    load_s: float = 12.0  # how long the load runs
    fault_at_s: float = 3.0  # when the fault is injected, after the load started
    outage_s: float = 3.0  # how long the part stays down (or the link cut)
    window_s: float = 30.0  # after the load: how long to wait for everything to settle
    gateways: int = 2
    mt_lease_s: float = 15.0  # how long before a dead gateway's MTs go to another (the setting's default)
    log_level: str = "warning"  # of the processes (their logs: --keep DIR, DIR/logs/)

    @classmethod
    def short(cls) -> Plan:
        return cls(rate=20.0, load_s=8.0, fault_at_s=1.5, outage_s=1.5, window_s=15.0, mt_lease_s=2.0)


# ---- child processes -------------------------------------------------------------------------------
class Child:
    """One `ussdgw` process: its output in a log file, ready once it printed its endpoints."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name, self.args, self.env = name, args, env
        self.log_path = logs / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None
        self._log: TextIO | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 30.0) -> None:
        self._log = self._open_log()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ussdgw.app", *self.args, env=self.env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=self._log, preexec_fn=die_with_parent(), cwd=ROOT,
        )
        ready = asyncio.Event()
        self._reader = asyncio.create_task(self._read(self.process, self._log, ready))
        waits = {asyncio.create_task(self.process.wait()), asyncio.create_task(ready.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        if not ready.is_set():
            await self.kill()
            raise RuntimeError(f"{self.name} did not start (see {self.log_path}): {self.tail()}")

    def _open_log(self) -> TextIO:
        log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (closed in `_closed`)
        log.write(f"---- start {time.strftime('%H:%M:%S')}\n")
        log.flush()
        return log

    @staticmethod
    async def _read(process: asyncio.subprocess.Process, log: TextIO, ready: asyncio.Event) -> None:
        assert process.stdout is not None
        async for raw in process.stdout:
            line = raw.decode(errors="replace")
            log.write(line)
            log.flush()
            if line.strip() == READY_LINE:
                ready.set()

    def tail(self, lines: int = 5) -> str:
        with contextlib.suppress(OSError):
            return " | ".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        return ""

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def signal(self, sig: signal.Signals, timeout: float = 15.0) -> None:
        """Send `sig` and wait for the process to end (SIGKILL if it takes longer than `timeout`)."""
        process = self.process
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                await asyncio.wait_for(process.wait(), timeout)
            except TimeoutError:
                process.kill()
                await process.wait()
        await self._closed()

    async def kill(self) -> None:
        await self.signal(signal.SIGKILL)

    async def _closed(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
            self._reader = None
        if self._log is not None:
            self._log.close()
            self._log = None
        self.process = None


# ---- the link between the SMSC and the gateways ----------------------------------------------------------
class Proxy:
    """A TCP proxy that can cut every connection through it at once and refuse new ones for a while."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._refuse_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
        if time.monotonic() < self._refuse_until:
            down_w.transport.abort()
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:  # the SMSC is down: so is this connection
            down_w.transport.abort()
            return
        pair = (down_w, up_w)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(down_r, up_w), self._pipe(up_r, down_w))
        finally:
            self._pairs.discard(pair)
            for writer in pair:
                writer.close()  # what is still buffered goes out first

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Bytes one way until the sender closes (passed on as a half-close, after every byte it
        sent) or resets (passed on as a reset), as a TCP link would."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            writer.transport.abort()
            return
        with contextlib.suppress(OSError):
            if writer.can_write_eof():
                writer.write_eof()

    def cut(self, refuse_s: float) -> int:
        """Abort every connection through the proxy; refuse new ones for `refuse_s`. Returns how many."""
        self._refuse_until = time.monotonic() + refuse_s
        pairs = list(self._pairs)
        for pair in pairs:
            for writer in pair:
                writer.transport.abort()
        return len(pairs)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut(0)


# ---- the platform ----------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Platform:
    """Redis, the simulator, the proxy and the gateways, with a method per fault and its healing."""

    def __init__(self, plan: Plan, workdir: Path) -> None:
        self.plan = plan
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # The thread that starts redis-server must outlive it (PR_SET_PDEATHSIG): one for the whole run.
        self._redis_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="redis")
        self.redis = EmbeddedRedis(workdir / "redis", persistent=True)
        self.smpp_port, self.http_port = free_port(), free_port()
        self.sim_url = f"http://127.0.0.1:{self.http_port}"
        self.proxy = Proxy(self.smpp_port)
        self.smsc: Child | None = None
        self.gateways: list[Child] = []
        self.http: aiohttp.ClientSession | None = None
        self.db: aioredis.Redis | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("USSDGW_") and k != "REDIS_URL"}
        self.env = {**env, "USSDGW_LOG_LEVEL": plan.log_level, "USSDGW_LOG_FORMAT": "json", "PYTHONUNBUFFERED": "1"}

    async def __aenter__(self) -> Platform:
        try:
            await self.start_redis()
            smsc_env = {**self.env, "USSDGW_STATE_DIR": str(self.workdir / "smsc"), "USSDGW_SIM_RETRY_MAX_S": "1",
                        "USSDGW_SIM_STATE_FILE": str(self.workdir / "smsc-state.json")}
            self.smsc = Child("smsc", ["smsc", "--port", str(self.smpp_port), "--http-port", str(self.http_port)],
                              smsc_env, self.logs)
            await self.smsc.start()
            await self.proxy.start()
            gw_env = {**self.env, "REDIS_URL": self.redis.url, "USSDGW_SECRET_KEY": secrets.token_hex(32),
                      "USSDGW_MT_LEASE_S": str(self.plan.mt_lease_s), "USSDGW_SECRET_COOLDOWN_S": "0",
                      "USSDGW_SECRET_PER_HOUR": "100000", "USSDGW_RECONNECT_MAX_S": "1", "USSDGW_API_PORT": "0"}
            for i in range(self.plan.gateways):
                env = {**gw_env, "USSDGW_STATE_DIR": str(self.workdir / f"gateway-{i + 1}")}
                self.gateways.append(Child(f"gateway-{i + 1}", [
                    "gateway", "--smsc", f"127.0.0.1:{self.proxy.port}", "--system-id", SYSTEM_ID,
                    "--password", PASSWORD], env, self.logs))
            await asyncio.gather(*(gw.start() for gw in self.gateways))
            self.http = aiohttp.ClientSession(self.sim_url, timeout=aiohttp.ClientTimeout(total=10))
            self.db = aioredis.Redis.from_url(self.redis.url)
            await self.wait_healthy()
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Everything started here ends here: SIGKILL, no waiting for anyone's goodbyes."""
        for child in [*self.gateways, *([self.smsc] if self.smsc else [])]:
            with contextlib.suppress(Exception):
                await child.kill()
        await self.proxy.stop()
        if self.http is not None:
            await self.http.close()
        if self.db is not None:
            await self.db.aclose()
        await self._redis_signal(signal.SIGKILL)
        self._redis_thread.shutdown(wait=True)

    # ---- Redis ----------------------------------------------------------------------------------------
    async def start_redis(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._redis_thread, self.redis.start)

    async def _redis_signal(self, sig: signal.Signals) -> None:
        process = self.redis.process
        if process is None:
            return
        process.send_signal(sig)
        await asyncio.get_running_loop().run_in_executor(self._redis_thread, process.wait)
        self.redis.process = None

    async def kill_redis(self) -> None:
        await self._redis_signal(signal.SIGKILL)

    async def stop_redis(self) -> None:
        await self._redis_signal(signal.SIGTERM)

    # ---- the others ------------------------------------------------------------------------------------
    async def kill_gateway(self) -> None:
        await self.gateways[0].kill()

    async def start_gateway(self) -> None:
        await self.gateways[0].start()

    async def cut_link(self) -> None:
        self.proxy.cut(self.plan.outage_s)

    async def link_back(self) -> None:
        """The proxy takes connections again by itself when the outage is over."""

    async def stop_smsc(self) -> None:
        assert self.smsc is not None
        await self.smsc.signal(signal.SIGTERM)

    async def start_smsc(self) -> None:
        assert self.smsc is not None
        await self.smsc.start()

    async def binds(self) -> int:
        assert self.http is not None
        try:
            async with self.http.get("/api/health") as response:
                health = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return -1
        return sum(1 for b in health["binds"] if b["state"] == "BOUND_TRX")

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Every gateway bound to the simulator through the proxy; Redis answering."""
        assert self.db is not None
        async with asyncio.timeout(timeout):
            # Other processes get there in their own time: there is no event here to wait on.
            while await self.binds() < self.plan.gateways:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            while True:
                with contextlib.suppress(Exception):
                    if await self.db.ping():
                        return
                await asyncio.sleep(0.1)

    async def seed(self, msisdns: list[str]) -> None:
        path = self.workdir / "subscribers.json"
        path.write_text(json.dumps([{"msisdn": m, "balance": BALANCE_KOP / 100, "tariff": "basic"} for m in msisdns]))
        seed = Child("seed", ["seed", str(path)], {**self.env, "REDIS_URL": self.redis.url,
                                                  "USSDGW_STATE_DIR": str(self.workdir / "seed")}, self.logs)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ussdgw.app", *seed.args, env=seed.env, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, preexec_fn=die_with_parent(), cwd=ROOT)
        _, err = await process.communicate()
        if process.returncode != 0:
            raise RuntimeError(f"ussdgw seed failed: {err.decode(errors='replace')[-500:]}")


# ---- the faults ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fault:
    name: str
    what: str
    inject: Callable[[Platform], Awaitable[None]]
    heal: Callable[[Platform], Awaitable[None]]


FAULTS = {f.name: f for f in (
    Fault("gateway-kill", "SIGKILL a gateway", Platform.kill_gateway, Platform.start_gateway),
    Fault("link-cut", "cut the SMPP link", Platform.cut_link, Platform.link_back),
    Fault("redis-kill", "SIGKILL redis-server", Platform.kill_redis, Platform.start_redis),
    Fault("redis-stop", "SIGTERM redis-server", Platform.stop_redis, Platform.start_redis),
    Fault("smsc-restart", "restart the SMSC", Platform.stop_smsc, Platform.start_smsc),
)}


# ---- one scenario ---------------------------------------------------------------------------------------------
@dataclass
class Offer:
    msisdn: str
    kind: str
    at: float  # wall time, as the simulator's inbox stamps its messages
    accepted: bool = False
    error: str = ""


@dataclass
class Result:
    fault: str
    what: str
    offered: int = 0
    refused: int = 0
    acked: int = 0
    rejected: int = 0
    applied: int = 0
    applied_twice: int = 0
    replies: dict[str, int] = field(default_factory=lambda: {"0": 0, "1": 0, ">1": 0})
    late: int = 0
    stranded: int = 0
    index_left: int = 0
    resent_lost: int = 0
    resent_reclaimed: int = 0
    throttled: int = 0
    money_before: int = 0
    money_after: int = 0
    money_expected: int = 0
    recovery_s: float | None = None
    settled_s: float = 0.0  # how long the recovery window took
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.offered - self.acked

    @property
    def ok(self) -> bool:
        return (self.lost == 0 and self.applied == self.offered and self.applied_twice == 0
                and self.replies["0"] == 0 and self.replies[">1"] <= self.resent_lost and self.late == 0
                and self.stranded == 0
                and self.money_after == self.money_expected)


class Scenario:
    def __init__(self, platform: Platform, fault: Fault, phones: list[str]) -> None:
        self.platform, self.fault, self.phones = platform, fault, phones
        self.plan = platform.plan
        self.offers: list[Offer] = []
        self._requests: set[asyncio.Task[None]] = set()
        # where each gateway's log stood when the scenario began: its resends are counted after it
        self._log_marks = {gw.log_path: _size(gw.log_path) for gw in platform.gateways}

    async def _offer(self, msisdn: str, kind: str, how: str) -> None:
        http = self.platform.http
        assert http is not None
        offer = Offer(msisdn, kind, time.time())
        self.offers.append(offer)
        if kind == "sms":
            to, _, text = how.partition(":")
            path, body = f"/api/phones/{msisdn}/sms", {"to": to, "text": text}
        else:
            path, body = f"/api/phones/{msisdn}/ussd/dial", {"code": how}
        try:
            async with http.post(path, json=body) as response:
                offer.accepted = response.status in (200, 202)
                if not offer.accepted:
                    offer.error = f"HTTP {response.status}: {(await response.text())[:100]}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            offer.error = type(exc).__name__

    async def run(self) -> Result:
        result = Result(self.fault.name, self.fault.what)
        db = self.platform.db
        assert db is not None
        result.money_before = sum(await self._balances())
        loop = asyncio.get_running_loop()
        started = loop.time()
        fault = asyncio.create_task(self._fault(started))
        for i, msisdn in enumerate(self.phones):  # open loop: each MO on schedule, whatever happens
            delay = started + i / self.plan.rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            kind, how = KINDS[i % len(KINDS)]
            task = asyncio.create_task(self._offer(msisdn, kind, how))
            self._requests.add(task)
            task.add_done_callback(self._requests.discard)
        fault_at, healed_at = await fault
        if self._requests:
            await asyncio.wait(set(self._requests))
        load_end = loop.time()
        await self.platform.wait_healthy()
        accepted = [o for o in self.offers if o.accepted]
        await self._settle(accepted, load_end)
        result.settled_s = round(loop.time() - load_end, 1)
        await self._count(result, accepted, fault_at, healed_at)
        return result

    async def _fault(self, started: float) -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        await asyncio.sleep(max(0.0, started + self.plan.fault_at_s - loop.time()))
        fault_at = time.time()
        await self.fault.inject(self.platform)
        await asyncio.sleep(self.plan.outage_s)
        await self.fault.heal(self.platform)
        return fault_at, time.time()

    async def _settle(self, accepted: list[Offer], load_end: float) -> None:
        """Wait (polling the other processes) until every accepted MO is settled, answered and
        nothing is left in the outboxes, or the window ends."""
        loop = asyncio.get_running_loop()
        wanted = {o.msisdn for o in accepted}
        while loop.time() < load_end + self.plan.window_s:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                phones = await self._phones()
                done = all(p.get("outbox_pending", 1) == 0 and p.get("inbox_count", 0) >= 1
                           for m, p in phones.items() if m in wanted) and wanted <= set(phones)
                if done and await self._stranded() == 0:
                    return
            await asyncio.sleep(0.25)

    async def _phones(self) -> dict[str, dict[str, Any]]:
        http = self.platform.http
        assert http is not None
        async with http.get("/api/phones") as response:
            return {p["msisdn"]: p for p in (await response.json())["phones"]}

    async def _balances(self) -> list[int]:
        db = self.platform.db
        assert db is not None
        async with db.pipeline(transaction=False) as pipe:
            for msisdn in self.phones:
                pipe.hget(sub_key(msisdn), STORED["balance_kop"])
            return [int(v or 0) for v in await pipe.execute()]

    async def _stranded(self) -> int:
        db = self.platform.db
        assert db is not None
        async with db.pipeline(transaction=False) as pipe:
            for msisdn in self.phones:
                pipe.hlen(outbox_key(msisdn))
            return sum(int(n) for n in await pipe.execute())

    def _resends(self) -> tuple[int, int, int]:
        """(submits resent after a lost answer, dead gateways' MTs reclaimed, MOs throttled for a busy
        hashing pool) logged since the start."""
        counts = {"submit_resent": 0, "mt_reclaimed": 0, "mo_deferred": 0}
        for path, mark in self._log_marks.items():
            with contextlib.suppress(OSError), open(path, encoding="utf-8", errors="replace") as log:
                log.seek(mark)
                for line in log:
                    if '"submit_resent"' not in line and '"mt_reclaimed"' not in line and '"busy"' not in line:
                        continue
                    with contextlib.suppress(ValueError):
                        entry = json.loads(line)
                        event = entry.get("event")
                        if event in counts and (event != "mo_deferred" or entry.get("reason") == "busy"):
                            counts[event] += 1
        return counts["submit_resent"], counts["mt_reclaimed"], counts["mo_deferred"]

    async def _count(self, result: Result, accepted: list[Offer], fault_at: float, healed_at: float) -> None:
        db, http = self.platform.db, self.platform.http
        assert db is not None and http is not None
        result.offered = len(accepted)
        result.refused = len(self.offers) - len(accepted)
        errors = sorted({o.error for o in self.offers if o.error})
        if errors:
            result.notes.append(f"refused by the simulator: {', '.join(errors)[:120]}")
        first_reply: dict[str, float] = {}
        sem = asyncio.Semaphore(32)

        async def phone_state(msisdn: str) -> dict[str, Any]:
            async with sem, http.get(f"/api/phones/{msisdn}/state") as response:
                data: dict[str, Any] = await response.json()
                return data

        states = await asyncio.gather(*(phone_state(o.msisdn) for o in accepted))
        odd: dict[str, list[str]] = {"no reply": [], "doubled reply": [], "late reply": []}
        for offer, state in zip(accepted, states, strict=True):
            if len(state["inbox"]) != 1:
                odd["no reply" if not state["inbox"] else "doubled reply"].append(f"{offer.msisdn} ({offer.kind})")
            outbox = state["outbox"]
            result.acked += sum(1 for e in outbox if e["state"] == "accepted")
            result.rejected += sum(1 for e in outbox if e["state"] == "rejected")
            inbox = state["inbox"]
            result.replies["0" if not inbox else "1" if len(inbox) == 1 else ">1"] += 1
            if inbox:
                first_reply[offer.msisdn] = min(m["received_at"] for m in inbox)
                if first_reply[offer.msisdn] > max(offer.at, healed_at) + self.plan.mt_lease_s + 5.0:
                    result.late += 1
                    odd["late reply"].append(f"{offer.msisdn} ({offer.kind})")
        async with db.pipeline(transaction=False) as pipe:
            for offer in accepted:
                pipe.lrange(audit_key(offer.msisdn), 0, -1)
            trails = [[audit_entry(raw) for raw in trail] for trail in await pipe.execute()]
        switched = 0
        for trail in trails:
            received = sum(1 for entry in trail if entry.get("event") == "mo_received")
            result.applied += received >= 1
            result.applied_twice += received >= 2
            switched += sum(1 for entry in trail if entry.get("event") == "tariff_switched")
        result.stranded = await self._stranded()
        mine = set(self.phones)
        for bucket in range(INDEX_BUCKETS):
            members = await db.zrange(mt_due_key(bucket), 0, -1)
            result.index_left += sum(1 for m in members if m.decode().partition("|")[0] in mine)
        result.resent_lost, result.resent_reclaimed, result.throttled = self._resends()
        result.money_after = sum(await self._balances())
        result.money_expected = result.money_before - SWITCH_KOP * switched
        # Recovered: every MO offered during the fault answered, and the first one offered after it too.
        watched = [o for o in accepted if fault_at - 1.0 <= o.at <= healed_at]
        watched += [o for o in accepted if o.at > healed_at][:1]
        if all(o.msisdn in first_reply for o in watched):
            result.recovery_s = round(max([healed_at, *(first_reply[o.msisdn] for o in watched)]) - fault_at, 2)
        if result.rejected:
            result.notes.append(f"{result.rejected} MOs refused by the gateway with an error status")
        for what, phones in odd.items():
            if phones:
                more = f" and {len(phones) - 6} more" if len(phones) > 6 else ""
                result.notes.append(f"{what}: {', '.join(phones[:6])}{more}")


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# ---- the run ----------------------------------------------------------------------------------------------------
def phones_for(scenario: int, count: int) -> list[str]:
    return [str(79_600_000_000 + scenario * 100_000 + i) for i in range(count)]


async def run_faults(plan: Plan, faults: list[str], *, workdir: Path | None = None,
                     progress: Callable[[str], None] | None = None) -> list[Result]:
    """Start the platform, run one scenario per fault, stop everything; the results in order."""
    say = progress or (lambda _: None)
    with contextlib.ExitStack() as cleanup:
        if workdir is None:
            workdir = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="ussdgw-faults-")))
        count = max(1, int(plan.rate * plan.load_s))
        phones = {name: phones_for(i, count) for i, name in enumerate(faults)}
        results: list[Result] = []
        say(f"starting redis-server, the simulator, a proxy and {plan.gateways} gateways in {workdir}")
        async with Platform(plan, workdir) as platform:
            await platform.seed([m for group in phones.values() for m in group])
            for name in faults:
                say(f"{name}: {count} MOs at {plan.rate:g}/s, {FAULTS[name].what} at {plan.fault_at_s:g} s "
                    f"for {plan.outage_s:g} s")
                result = await Scenario(platform, FAULTS[name], phones[name]).run()
                say(f"{name}: {'ok' if result.ok else 'FAILED'} (settled {result.settled_s:g} s after the load)")
                results.append(result)
        return results


def render(results: list[Result], plan: Plan, out: TextIO = sys.stdout) -> None:
    headers = ["fault", "offered", "refused", "acked", "applied", "applied 2x", "replies 0/1/>1", "late",
               "stranded", "index", "resent lost/reclaimed", "throttled", "money before -> after (expected)",
               "recovery s", "verdict"]
    rows = []
    for r in results:
        money = f"{r.money_before / 100:,.0f} -> {r.money_after / 100:,.0f} ({r.money_expected / 100:,.0f}) ₽"
        rows.append([r.fault, str(r.offered), str(r.refused), str(r.acked), str(r.applied), str(r.applied_twice),
                     f"{r.replies['0']}/{r.replies['1']}/{r.replies['>1']}", str(r.late), str(r.stranded),
                     str(r.index_left), f"{r.resent_lost}/{r.resent_reclaimed}", str(r.throttled), money,
                     "-" if r.recovery_s is None else f"{r.recovery_s:g}", "ok" if r.ok else "FAIL"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    print(f"load {plan.rate:g} MO/s for {plan.load_s:g} s (ПАРОЛЬ, *100#, *111*2*3*1# = 100 ₽), fault at "
          f"{plan.fault_at_s:g} s for {plan.outage_s:g} s, {plan.gateways} gateways, mt_lease_s {plan.mt_lease_s:g}, "
          f"window {plan.window_s:g} s", file=out)
    print("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), file=out)
    for row in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))),
              file=out)
    for r in results:
        for note in r.notes:
            print(f"  {r.fault}: {note}", file=out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--short", action="store_true", help="each scenario in about 20 s (the test suite's size)")
    parser.add_argument("--faults", default=",".join(FAULTS), help=f"comma-separated, of {', '.join(FAULTS)}")
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float, dest="load_s", help="how long the load runs in each scenario")
    parser.add_argument("--json", action="store_true", help="the results as JSON lines after the table")
    parser.add_argument("--keep", type=Path, help="a folder to keep the processes' logs in")
    parser.add_argument("--log-level", help="of the gateways and the simulator (default warning)")
    parser.add_argument("--lease", type=float, dest="mt_lease_s",
                        help="the gateways' mt_lease_s (default 15 s, the setting's default; --short: 2 s)")
    args = parser.parse_args(argv)
    plan = Plan.short() if args.short else Plan()
    overrides = {k: v for k, v in (("rate", args.rate), ("load_s", args.load_s), ("log_level", args.log_level),
                                          ("mt_lease_s", args.mt_lease_s))
                 if v is not None}
    plan = Plan(**{**asdict(plan), **overrides})
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        parser.error(f"unknown faults {unknown}: choose from {', '.join(FAULTS)}")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    logs.configure("warning")
    results = asyncio.run(run_faults(plan, faults, workdir=args.keep,
                                     progress=lambda line: print(line, file=sys.stderr, flush=True)))
    render(results, plan)
    if args.json:
        for r in results:
            print(json.dumps({**asdict(r), "lost": r.lost, "ok": r.ok}, ensure_ascii=False))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
