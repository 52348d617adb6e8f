"""MO->MT round trips through the real gateway and Redis, driven over SMPP: `./dev bench`.

Three processes, all on 127.0.0.1: a private redis-server, the gateway exactly as
`ussdgw gateway` runs it (logging at info to a file), and the load generator (`bench/loadgen.py`,
a minimal SMSC that writes pre-built PDUs). Each MO goes to a short code with no keyword route,
so the gateway decodes it, routes it, commits the help reply (subscriber, MO mark, sealed MT,
audit) to Redis in one script, answers `deliver_sm_resp`, submits the MT and records its fate.

First, in the same invocation, the same load generator drives the reference: a bare echo ESME
on the platform's own SMPP code (`bench/echo.py`: no Redis, no logic, one MT per MO), closed loop
only. The gateway's closed-loop figure is printed as a ratio to it.

Printed: throughput with a fixed number of MOs outstanding (closed loop), latency p50/p99/max at
a fixed rate (open loop, default 1,000/s), the CPU each process used in each phase, the gateway's
CPU microseconds per MO split by what it was spent on (py-spy samples of the closed phase, taken
without pausing the gateway; see `SPLIT`), and the codec rates on this machine: smpplib's own
parse/generate as the reference, and the platform's codec.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import timeit
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ussdgw.redis_server import EmbeddedRedis  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, which: str = "both") -> float:
    """User + system (or only "user" / "system") CPU time so far of a process and of every process
    under it (a `--workers` supervisor's gateways), from Linux /proc."""
    total = 0.0
    for one in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
        total += {"user": user, "system": system}.get(which, user + system)
    return total


def descendants(pid: int) -> list[int]:
    """Every live process under `pid` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def codec_rates(seconds: float = 1.0) -> dict[str, float]:
    """Operations per second of smpplib's codec (the reference) and of ours, on this machine."""
    from smpplib import smpp

    from ussdgw.smpp import codec
    from ussdgw.smpp.pdu import DeliverSm, SubmitSm

    mo = codec.encode(DeliverSm(sequence=7, source_addr_ton=1, source_addr_npi=1, source_addr="79161234567",
                                destination_addr="5555", short_message=b"HELLO", user_message_reference=42))
    mo_plain = codec.encode(DeliverSm(sequence=7, source_addr_ton=1, source_addr_npi=1, source_addr="79161234567",
                                      destination_addr="5555", short_message=b"HELLO"))
    mt = SubmitSm(source_addr="5555", dest_addr_ton=1, dest_addr_npi=1, destination_addr="79161234567",
                  esm_class=0x40, registered_delivery=1, data_coding=8, short_message=bytes(140), sequence=9)

    class _Seq:
        sequence = 0

        def next_sequence(self) -> int:
            return 1

    client = _Seq()

    def smpplib_parse() -> object:
        return smpp.parse_pdu(mo_plain, client=client)

    def smpplib_generate() -> bytes:
        pdu = smpp.make_pdu("submit_sm", client=client, source_addr="5555", dest_addr_ton=1, dest_addr_npi=1,
                            destination_addr="79161234567", esm_class=0x40, registered_delivery=1, data_coding=8,
                            short_message=bytes(140))
        return bytes(pdu.generate())

    rates = {}
    for name, fn in (
        ("smpplib deliver_sm parse", smpplib_parse),
        ("smpplib submit_sm make+generate", smpplib_generate),
        ("ussdgw deliver_sm decode", lambda: codec.decode(mo)),
        ("ussdgw submit_sm encode", lambda: codec.encode(mt)),
    ):
        timer = timeit.Timer(fn)
        n, _ = timer.autorange()
        best = min(timer.repeat(repeat=3, number=max(n, int(n * seconds / 0.2))))
        rates[name] = max(n, int(n * seconds / 0.2)) / best
    return rates


# What the gateway's CPU is spent on, from the stacks py-spy samples. A stack under a receipt's
# handling counts as "receipts" whole (its Redis commands and log line included); any other is
# given to the first of these its frames (from the innermost outwards) names; the rest is the
# event loop itself: tasks, callbacks, socket reads and writes.
RECEIPT_FRAMES = ("Gateway.on_receipts", "Gateway._record_receipts", "EsmeClient._deliver_receipts")
SPLIT: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("logging", ("structlog/", "ussdgw/logs.py", "logging/")),
    ("Redis", ("ussdgw/store/pipeline.py", "ussdgw/store/scripts.py", "ussdgw/store/core.py",
               "ussdgw/store/commit.py", "redis/", "hiredis")),
    ("encode+send", ("encode (ussdgw/smpp/codec.py", "ussdgw/smpp/text.py", "Gateway._submit_pdus",
                     "SmppLink.flush", "SmppSession.send ", "SmppSession.respond", "EsmeClient.submit",
                     "SmppLink.call", "SmppLink.request", "Gateway._send ", "Gateway.send ")),
    ("decode", ("SmppSession.receive_data", "decode (ussdgw/smpp/codec.py")),
    ("route+handler", ("handlers/", "ussd_menus/", "sms_codes/", "gateway/", "ussdgw/store/", "prometheus_client/",
                       "ussdgw/audit_detail.py")),
)
SPLIT_ORDER = ("decode", "route+handler", "Redis", "encode+send", "receipts", "logging", "event loop")


def split_samples(path: Path) -> dict[str, int]:
    """py-spy's raw (collapsed) stacks, counted by what they were doing (`SPLIT`)."""
    counts = dict.fromkeys(SPLIT_ORDER, 0)
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        frames = stack.split(";")
        kind = "event loop"
        if any(f.startswith(RECEIPT_FRAMES) for f in frames):
            kind = "receipts"
        else:
            for frame in reversed(frames):
                found = next((name for name, marks in SPLIT if any(m in frame for m in marks)), None)
                if found is not None:
                    kind = found
                    break
        counts[kind] += int(n)
    return counts


def read_events(stream: IO[str]) -> Any:
    for line in stream:
        line = line.strip()
        if line.startswith("{"):
            yield json.loads(line)


def run(args: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="ussdgw-bench-"))
    try:
        reference: list[dict[str, Any]] = []
        reference_cpu: dict[str, dict[str, float]] = {}
        if args.reference:
            ok, reference, reference_cpu = drive(args, work, "echo", phases="closed")
            if not ok:
                return 1
        ok, results, cpu_used = drive(args, work, "gateway", phases=args.phases)
        if not ok:
            return 1
        rates = codec_rates() if not args.no_codec else {}
        report(args, results, cpu_used, rates, reference, reference_cpu, work / "split.txt")
        return 0
    finally:
        if args.keep:
            print(f"\nwork folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def drive(args: argparse.Namespace, work: Path, target: str, phases: str) -> tuple[
        bool, list[dict[str, Any]], dict[str, dict[str, float]]]:
    """One load generator driving `target` ("gateway", with its Redis, or "echo") through `phases`:
    (the load generator ended well, its results, CPU seconds per process per phase)."""
    redis = EmbeddedRedis(work / "redis", persistent=True) if target == "gateway" else None
    if redis is not None:
        redis.start()
    procs: list[subprocess.Popen[str]] = []
    try:
        loadgen_cmd = [
            sys.executable, str(ROOT / "bench" / "loadgen.py"),
            "--binds", str(args.binds * (args.workers if redis is not None else 1)),
            "--seconds", str(args.seconds), "--rate", str(args.rate), "--inflight", str(args.inflight),
            "--phases", phases, "--warmup", str(args.warmup), "--to", args.to, "--text", args.text,
        ]
        if args.receipts:
            loadgen_cmd.append("--receipts")
        loadgen = subprocess.Popen(loadgen_cmd, stdout=subprocess.PIPE, text=True)
        procs.append(loadgen)
        assert loadgen.stdout is not None
        events = read_events(loadgen.stdout)
        port = next(events)["port"]

        if redis is None:
            gateway = subprocess.Popen([sys.executable, str(ROOT / "bench" / "echo.py"), "--smsc", f"127.0.0.1:{port}",
                                        "--binds", str(args.binds)], stdout=subprocess.DEVNULL, cwd=work)
        else:
            env = {
                **os.environ, "REDIS_URL": redis.url, "USSDGW_SECRET_KEY": secrets.token_hex(32),
                "USSDGW_STATE_DIR": str(work), "USSDGW_WINDOW": str(args.window), "USSDGW_LOG_FORMAT": "json",
                "USSDGW_API_PORT": "0",  # its HTTP server on any free port: a running `up` or bench keeps 8081
            }
            gateway_log = open(work / "gateway.log", "w")  # noqa: SIM115 - closed with the process
            gateway_cmd = [sys.executable, "-m", "ussdgw.app", "--log-level", args.log_level, "gateway",
                           "--smsc", f"127.0.0.1:{port}", "--binds", str(args.binds)]
            if args.workers > 1:  # N gateway processes under one supervisor, each with --binds binds
                gateway_cmd += ["--workers", str(args.workers)]
            if args.uvloop:  # the same CLI, on uvloop's event loop
                gateway_cmd[1:3] = ["-c", "import sys, uvloop; uvloop.install(); from ussdgw.app.cli import main; "
                                          "sys.exit(main(sys.argv[1:]))"]
            gateway = subprocess.Popen(gateway_cmd, env=env, stderr=gateway_log, cwd=work)
            gateway_log.close()  # the child has its own copy
        procs.append(gateway)  # type: ignore[arg-type]
        pids = {"gateway": gateway.pid, "loadgen": loadgen.pid}
        if redis is not None:
            assert redis.process is not None
            pids["redis"] = redis.process.pid
        results: list[dict[str, Any]] = []
        cpu_at_start: dict[str, float] = {}
        cpu_used: dict[str, dict[str, float]] = {}
        profilers: list[subprocess.Popen[bytes]] = []
        py_spy = Path(sys.executable).parent / "py-spy"
        for event in events:
            kind = event["event"]
            if kind == "phase_start":
                cpu_at_start = {name: cpu_seconds(pid) for name, pid in pids.items()}
                cpu_at_start["gateway-sys"] = cpu_seconds(gateway.pid, "system")
                sample = [str(py_spy), "record", "--pid", str(gateway.pid), "--duration", str(int(args.seconds)),
                          "--format", "raw"]
                if args.profile and not profilers:
                    profilers.append(subprocess.Popen(
                        [*sample, "--rate", "250", "--output", str(Path(args.profile).absolute()), "--gil"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                elif (target == "gateway" and event["phase"] == "closed" and args.split and py_spy.exists()
                      and not args.profile):
                    # The CPU split: sampled without pausing the gateway, idle moments left out.
                    profilers.append(subprocess.Popen(
                        [*sample, "--rate", "200", "--nonblocking", "--output", str(work / "split.txt"),
                         *(["--subprocesses"] if args.workers > 1 else [])],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            elif kind == "phase_end":
                used = {name: cpu_seconds(pid) - cpu_at_start[name] for name, pid in pids.items()}
                used["gateway-sys"] = cpu_seconds(gateway.pid, "system") - cpu_at_start["gateway-sys"]
                cpu_used[event["phase"]] = used
            elif kind == "result":
                results.append(event)
            elif kind == "done":
                break
        for profiler in profilers:
            profiler.wait(timeout=60)
        if loadgen.wait(timeout=30) != 0:
            print("the load generator failed", file=sys.stderr)
            return False, results, cpu_used
        return True, results, cpu_used
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        if redis is not None:
            redis.stop()


def report(args: argparse.Namespace, results: list[dict[str, Any]], cpu: dict[str, dict[str, float]],
           rates: dict[str, float], reference: list[dict[str, Any]], reference_cpu: dict[str, dict[str, float]],
           split_file: Path) -> None:
    cpu_name = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_name = line.split(":", 1)[1].strip()
                break
    print(f"machine: {cpu_name}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"{'uvloop' if args.uvloop else 'asyncio'} event loop")
    print(f"setup: {args.workers} gateway process(es), {args.binds} bind(s) each, window {args.window}, "
          f"receipts {'on' if args.receipts else 'off'}, "
          f"MO '{args.text}' to {args.to}, gateway log level {args.log_level}\n")
    print(f"{'phase':<8} {'MO sent':>8} {'MO->MT':>8} {'per s':>9} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
          f" {'ack p99':>8}  CPU s per s of wall: gateway (of it kernel) / redis / loadgen")
    for r in results:
        used = cpu.get(r["phase"], {})
        per_s = {n: used.get(n, 0) / r["seconds"] for n in ("gateway", "gateway-sys", "redis", "loadgen")}
        shares = (f"{per_s['gateway']:.2f} ({per_s['gateway-sys']:.2f}) / {per_s['redis']:.2f} / "
                  f"{per_s['loadgen']:.2f}")
        label = r["phase"] if r["phase"] == "closed" else f"{r['phase']}@{args.rate:g}"
        print(f"{label:<8} {r['sent']:>8} {r['completed']:>8} {r['throughput']:>9.1f} {r['p50_ms']:>8.2f}"
              f" {r['p99_ms']:>8.2f} {r['max_ms'] or 0:>8.2f} {r['ack_p99_ms']:>8.2f}  {shares}")
        if r["completed"]:
            print(f"         ({r['submits'] / r['completed']:.1f} submit_sm per MT"
                  f"{', each answered with a delivery receipt' if args.receipts else ''})")
        if r["nacked"]:
            print(f"         ({r['nacked']} MOs answered with an error status)")
        if r["completed"]:
            print(f"         gateway CPU per MO: {used.get('gateway', 0) / r['completed'] * 1e6:,.0f} µs")
    closed = next((r for r in results if r["phase"] == "closed"), None)
    echo = next((r for r in reference if r["phase"] == "closed"), None)
    if echo is not None:
        echo_cpu = reference_cpu.get("closed", {})
        per_mo = echo_cpu.get("gateway", 0) / echo["completed"] * 1e6 if echo["completed"] else 0
        print(f"\nreference, bare echo ESME on the same codec (bench/echo.py, one MT per MO, same load generator):"
              f"\n  closed   {echo['throughput']:,.1f} MO->MT per s, p50 {echo['p50_ms']:.2f} ms, p99 "
              f"{echo['p99_ms']:.2f} ms; echo CPU {echo_cpu.get('gateway', 0) / echo['seconds']:.2f} s per s, "
              f"{per_mo:,.0f} µs per MO")
        if closed is not None and echo["throughput"]:
            print(f"  gateway / echo (closed loop): {closed['throughput'] / echo['throughput']:.2f}")
    if closed is not None and closed["completed"] and split_file.exists():
        counts = split_samples(split_file)
        total = sum(counts.values())
        per_mo = cpu.get("closed", {}).get("gateway", 0) / closed["completed"] * 1e6
        if total:
            print(f"\ngateway CPU per MO in the closed phase, {per_mo:,.0f} µs, by what it was spent on "
                  f"({total} py-spy samples):")
            for name in SPLIT_ORDER:
                print(f"  {name:<14} {per_mo * counts[name] / total:>7,.0f} µs  {100 * counts[name] / total:5.1f} %")
    elif args.split and not args.profile and not (Path(sys.executable).parent / "py-spy").exists():
        print("\nno CPU split: py-spy is not installed next to this Python (`./dev bench` installs it)")
    if rates:
        print("\ncodec on this machine (one core, operations per second):")
        for name, rate in rates.items():
            print(f"  {name:<34} {rate:>10,.0f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rate", type=float, default=1000.0, help="MOs per second in the open-loop phase")
    p.add_argument("--inflight", type=int, default=64, help="MOs outstanding in the closed-loop phase")
    p.add_argument("--phases", default="closed,open")
    p.add_argument("--binds", type=int, default=1, help="binds per gateway process")
    p.add_argument("--workers", type=int, default=1,
                   help="gateway processes (`ussdgw gateway --workers N`); CPU figures are their sum")
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--to", default="5555", help="short code the MOs go to")
    p.add_argument("--text", default="HELLO")
    p.add_argument("--receipts", action=argparse.BooleanOptionalAction, default=True,
                   help="answer every MT with a delivery receipt (default on)")
    p.add_argument("--uvloop", action="store_true", help="run the gateway on uvloop")
    p.add_argument("--log-level", default="info")
    p.add_argument("--profile", metavar="FILE",
                   help="sample the gateway with py-spy during the first phase into FILE (collapsed stacks)")
    p.add_argument("--no-codec", action="store_true", help="skip the codec reference figures")
    p.add_argument("--reference", action=argparse.BooleanOptionalAction, default=True,
                   help="first drive the bare echo ESME (bench/echo.py) as the reference (default on)")
    p.add_argument("--split", action=argparse.BooleanOptionalAction, default=True,
                   help="split the gateway's CPU per MO with py-spy samples of the closed phase (default on)")
    p.add_argument("--keep", action="store_true", help="keep the work folder (gateway log, Redis data)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
