"""USSD dialogue steps per second and p99 step latency, through the real gateway and Redis over SMPP.

    .venv/bin/python bench/ussd.py [--gateways 1] [--phones 200] [--seconds 10] [--rate 500] [--profile FILE]

Processes, all on 127.0.0.1: a private redis-server, N gateways exactly as `ussdgw gateway` runs
them (log level warning), and this script as the SMSC: it accepts the binds and writes each
phone's USSD deliver_sm PDUs (each with its own user_message_reference, as the simulator does),
spread over every bind (any gateway takes any step: the dialogue lives in Redis).

Every phone walks the same dialogue again and again, five steps, each a real Redis load + one
atomic commit (dialogue state, MO mark, sealed reply, audit) + a submit_sm back:

    *111# (menu, op 2) -> 2 (tariffs, op 2) -> 98 (next page, op 2) -> 00 (menu, op 2) -> 1 (balance, op 17)

A step's latency runs from writing its deliver_sm to reading the gateway's submit_sm for that
phone. Printed: steps/s with every phone busy (closed loop), then p50/p99/max latency at a fixed
offered rate (open loop, default 500 steps/s), and the CPU each process used. With `--profile FILE`,
py-spy samples the first gateway in each measured phase: FILE.closed and FILE.open (collapsed stacks,
only while it holds the GIL).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulator.load import percentile  # noqa: E402
from ussdgw.redis_server import EmbeddedRedis  # noqa: E402
from ussdgw.smpp import codec  # noqa: E402
from ussdgw.smpp.pdu import Bind, BindResp, DeliverSm, DeliverSmResp, SubmitSm, SubmitSmResp, UssdOp  # noqa: E402
from ussdgw.smpp.session import RequestReceived, ResponseReceived, Role, SmppSession  # noqa: E402
from ussdgw.store import AuditEvent, Store  # noqa: E402

SCRIPT = [(UssdOp.PSSR_INDICATION, "*111#", UssdOp.USSR_REQUEST), (UssdOp.USSR_CONFIRM, "2", UssdOp.USSR_REQUEST),
          (UssdOp.USSR_CONFIRM, "98", UssdOp.USSR_REQUEST), (UssdOp.USSR_CONFIRM, "00", UssdOp.USSR_REQUEST),
          (UssdOp.USSR_CONFIRM, "1", UssdOp.PSSR_RESPONSE)]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, which: str = "both") -> float:
    """User + system (or only "user" / "system") CPU time so far of a process, from Linux /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    return {"user": user, "system": system}.get(which, user + system)


class Link:
    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.sequence = 0x10000000


class BenchSmsc:
    """Accepts binds, writes deliver_sm for the phones, hands each submit_sm to the phone waiting for it."""

    def __init__(self) -> None:
        self.links: list[Link] = []
        self.waiting: dict[str, asyncio.Future[SubmitSm]] = {}
        self.bound = asyncio.Condition()
        self.references = 0
        self.unacked: dict[int, DeliverSm] = {}
        self.redelivered = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = SmppSession(Role.SMSC)
        link = Link(writer)
        try:
            while data := await reader.read(262144):
                for event in session.receive_data(data):
                    if isinstance(event, ResponseReceived) and isinstance(event.pdu, DeliverSmResp):
                        sent = self.unacked.pop(event.pdu.sequence, None)
                        if sent is not None and event.pdu.status != 0:  # as an SMSC does: again, a bit later
                            self.redelivered += 1
                            asyncio.get_running_loop().call_later(0.05, self._send, sent)
                        continue
                    if not isinstance(event, RequestReceived):
                        continue
                    pdu = event.pdu
                    if isinstance(pdu, SubmitSm):
                        session.respond(pdu, SubmitSmResp(message_id=secrets.token_hex(6)))
                        future = self.waiting.pop(pdu.destination_addr, None)
                        if future is not None and not future.done():
                            future.set_result(pdu)
                    elif isinstance(pdu, Bind):
                        session.respond(pdu, BindResp(mode=pdu.mode, system_id="bench-smsc"))
                        self.links.append(link)
                        async with self.bound:
                            self.bound.notify_all()
                writer.write(session.data_to_send())
        except ConnectionError:
            pass
        finally:
            if link in self.links:
                self.links.remove(link)

    def _send(self, pdu: DeliverSm) -> None:
        link = random.choice(self.links)
        link.sequence += 1
        self.unacked[link.sequence] = pdu
        link.writer.write(codec.encode(dataclasses.replace(pdu, sequence=link.sequence)))

    async def step(self, msisdn: str, op: int, text: str) -> tuple[float, SubmitSm]:
        self.references = self.references % 0xFFFF + 1
        pdu = DeliverSm(service_type="USSD", source_addr_ton=1, source_addr_npi=1, source_addr=msisdn,
                        destination_addr="*111#", short_message=text.encode("ascii"), ussd_service_op=op,
                        user_message_reference=self.references)
        future: asyncio.Future[SubmitSm] = asyncio.get_running_loop().create_future()
        self.waiting[msisdn] = future
        started = time.perf_counter()
        self._send(pdu)
        submit = await asyncio.wait_for(future, 10)
        return time.perf_counter() - started, submit


class Phone:
    def __init__(self, msisdn: str) -> None:
        self.msisdn = msisdn
        self.position = 0
        self.busy = False


async def take_step(smsc: BenchSmsc, phone: Phone, latencies: list[float], errors: list[str]) -> None:
    op, text, expected = SCRIPT[phone.position]
    phone.busy = True
    try:
        latency, submit = await smsc.step(phone.msisdn, op, text)
    except TimeoutError:
        errors.append(f"{phone.msisdn}: no reply to {text!r}")
        phone.position = 0
        return
    finally:
        phone.busy = False
    latencies.append(latency)
    if submit.ussd_service_op != expected:
        errors.append(f"{phone.msisdn}: {text!r} got op {submit.ussd_service_op}, expected {expected}")
        phone.position = 0
        return
    phone.position = (phone.position + 1) % len(SCRIPT)


async def closed_loop(smsc: BenchSmsc, phones: list[Phone], seconds: float) -> tuple[int, list[float], list[str]]:
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.perf_counter() + seconds

    async def walk(phone: Phone) -> None:
        while time.perf_counter() < deadline:
            await take_step(smsc, phone, latencies, errors)

    await asyncio.gather(*(walk(p) for p in phones))
    return len(latencies), latencies, errors


async def open_loop(smsc: BenchSmsc, phones: list[Phone], rate: float, seconds: float) -> tuple[
        int, list[float], list[str], int]:
    latencies: list[float] = []
    errors: list[str] = []
    tasks: set[asyncio.Task[None]] = set()
    skipped = 0
    interval = 1 / rate
    start = time.perf_counter()
    n = 0
    while (due := start + n * interval) < start + seconds:
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        idle = next((p for p in phones if not p.busy), None)
        if idle is None:
            skipped += 1
        else:
            idle.busy = True
            task = asyncio.create_task(take_step(smsc, idle, latencies, errors))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        phones.append(phones.pop(0))  # round robin over the phones
        n += 1
    await asyncio.gather(*tasks)
    return n, latencies, errors, skipped


def start_gateway(env: dict[str, str], port: int, log_path: Path, level: str = "info") -> subprocess.Popen[bytes]:
    """One gateway process as `ussdgw gateway` runs it, bound to the bench SMSC, logging to `log_path`."""
    with open(log_path, "w") as log_file:
        return subprocess.Popen([sys.executable, "-m", "ussdgw.app", "--log-level", level, "gateway",
                                 "--smsc", f"127.0.0.1:{port}"], env=env, cwd=log_path.parent, stderr=log_file)


def profiler(args: argparse.Namespace, pid: int, phase: str) -> subprocess.Popen[bytes] | None:
    """py-spy sampling `pid` for one phase into `<--profile>.<phase>` (None without --profile)."""
    if not args.profile:
        return None
    py_spy = Path(sys.executable).parent / "py-spy"
    return subprocess.Popen([str(py_spy), "record", "--pid", str(pid), "--duration", str(int(args.seconds)),
                             "--format", "raw", "--rate", "250", "--gil", "--nonblocking",
                             "--output", str(Path(f"{args.profile}.{phase}").absolute())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def pct(values: list[float], q: float) -> float:
    """Milliseconds at the `q`-th fraction of `values` (seconds)."""
    return percentile(values, q * 100) * 1000


async def main(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="ussdgw-bench-ussd-"))
    redis = EmbeddedRedis(work / "redis", persistent=False)
    await asyncio.to_thread(redis.start)
    smsc = BenchSmsc()
    server = await asyncio.start_server(smsc.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    key = secrets.token_hex(32)
    store = Store.from_url(redis.url, bytes.fromhex(key))
    phones = [Phone(f"7916{n:07d}") for n in range(args.phones)]
    for phone in phones:
        await store.subscribers.put(phone.msisdn, {"balance_kop": 25000, "tariff": "smart", "owner_id": phone.msisdn,
                                                  "region": "77"}, AuditEvent("seeded", "bench"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "REDIS_URL": redis.url, "USSDGW_SECRET_KEY": key,
           "USSDGW_STATE_DIR": str(work), "USSDGW_WINDOW": "256", "USSDGW_LOG_FORMAT": "json",
           "USSDGW_API_PORT": "0"}  # several gateways on one host: each its own self-care port
    gateways = [start_gateway(env, port, work / f"gateway-{i}.log", args.log_level) for i in range(args.gateways)]
    try:
        async with smsc.bound:
            await asyncio.wait_for(smsc.bound.wait_for(lambda: len(smsc.links) >= args.gateways), 30)
        print(f"ussd bench: {args.gateways} gateway process(es) at log level {args.log_level}, {args.phones} phones, "
              f"Redis {redis.url}")
        print(f"dialogue: {' -> '.join(t for _, t, _ in SCRIPT)} (5 steps, then again)")
        await closed_loop(smsc, phones, args.warmup)
        pids = {**{f"gateway{i + 1}": g.pid for i, g in enumerate(gateways)}, "redis": redis.process.pid,  # type: ignore[union-attr]
                "bench(smsc)": os.getpid()}

        before = {k: cpu_seconds(p) for k, p in pids.items()}
        sampler = profiler(args, gateways[0].pid, "closed")
        started = time.perf_counter()
        steps, latencies, errors = await closed_loop(smsc, phones, args.seconds)
        elapsed = time.perf_counter() - started
        cpu = {k: (cpu_seconds(p) - before[k]) / elapsed for k, p in pids.items()}
        if sampler is not None:
            await asyncio.to_thread(sampler.wait, 60)
        print(f"closed loop, {args.phones} phones busy: {steps / elapsed:,.0f} steps/s over {elapsed:.1f} s "
              f"(p50 {pct(latencies, 0.5):.2f} ms, p99 {pct(latencies, 0.99):.2f} ms), errors {len(errors)}, "
              f"redelivered {smsc.redelivered}")
        print("  CPU (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        gateways_cpu = sum(v for k, v in cpu.items() if k.startswith("gateway"))
        if steps:
            print(f"  gateway CPU per step: {gateways_cpu / (steps / elapsed) * 1e6:,.0f} µs")

        for phone in phones:
            phone.position = 0
        before = {k: cpu_seconds(p) for k, p in pids.items()}
        kernel_before = sum(cpu_seconds(g.pid, "system") for g in gateways)
        sampler = profiler(args, gateways[0].pid, "open")
        started = time.perf_counter()
        _, latencies, errors2, skipped = await open_loop(smsc, phones, args.rate, args.seconds)
        elapsed = time.perf_counter() - started
        cpu = {k: (cpu_seconds(p) - before[k]) / elapsed for k, p in pids.items()}
        if sampler is not None:
            await asyncio.to_thread(sampler.wait, 60)
        kernel = sum(cpu_seconds(g.pid, "system") for g in gateways) - kernel_before
        print(f"open loop at {args.rate:,.0f} steps/s: {len(latencies):,} steps in {elapsed:.1f} s, "
              f"p50 {pct(latencies, 0.5):.2f} ms, p99 {pct(latencies, 0.99):.2f} ms, "
              f"max {pct(latencies, 1.0):.2f} ms, mean {statistics.mean(latencies or [0]) * 1000:.2f} ms; "
              f"no idle phone {skipped} times, errors {len(errors2)}, redelivered {smsc.redelivered}")
        print("  CPU (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
        gateways_cpu = sum(v for k, v in cpu.items() if k.startswith("gateway"))
        if latencies:
            print(f"  gateway CPU per step: {gateways_cpu / (len(latencies) / elapsed) * 1e6:,.0f} µs "
                  f"(of it kernel {kernel / len(latencies) * 1e6:,.0f} µs)")
        for line in (errors + errors2)[:5]:
            print("  error:", line)
        return 0 if not errors and not errors2 else 1
    finally:
        for g in gateways:
            g.terminate()
        for g in gateways:
            try:
                g.wait(10)
            except subprocess.TimeoutExpired:
                g.kill()
        server.close()
        await store.close()
        await asyncio.to_thread(redis.stop)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateways", type=int, default=1, help="gateway processes bound to the bench SMSC")
    p.add_argument("--phones", type=int, default=32, help="phones walking the dialogue at once (closed loop)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each measured phase")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=500.0, help="offered steps/s in the open-loop phase")
    p.add_argument("--log-level", default="info", help="the gateways' log level (info: one line per step)")
    p.add_argument("--profile", metavar="FILE",
                   help="sample the first gateway with py-spy in each phase into FILE.closed and FILE.open")
    return p.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse())))
