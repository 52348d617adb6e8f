"""`ussdgw`: run the platform, or one part of it, or act as a phone against a running simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ussdgw import __version__, logs
from ussdgw.config import CONFIG_ENV, Settings, SettingsError, load_settings
from ussdgw.logs import get_logger
from ussdgw.redis_server import RedisServerError
from ussdgw.store import SealingKeyMismatch, StoreUnavailable

if TYPE_CHECKING:
    from ussdgw.app.stack import Stack

log = get_logger("ussdgw.app.cli")
DEFAULT_SIM_URL = "http://127.0.0.1:8080"


def _port(value: str) -> int:
    if not value.isdigit() or int(value) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535 (0: any free one), got {value!r}")
    return int(value)


def _count(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 256:
        raise argparse.ArgumentTypeError(f"expected a number 1-256, got {value!r}")
    return int(value)


def _parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host, _port(port)


def build_parser() -> argparse.ArgumentParser:
    """Options whose `dest` is a settings field name are settings flags: they win over the file and
    the environment (`load_settings`)."""
    parser = argparse.ArgumentParser(prog="ussdgw", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", help=f"TOML settings file (default: ${CONFIG_ENV}, else ./ussdgw.toml if present)")
    parser.add_argument("--log-level", default=None, type=str.lower,
                        choices=["debug", "info", "warning", "error", "critical"])
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Redis + SMSC simulator + gateway + HTTP, on defaults")
    up.add_argument("--sim-http-port", type=_port)
    up.add_argument("--smpp-port", type=_port, dest="sim_port")
    up.add_argument("--gateways", type=_count, default=1,
                    help="gateway processes (this one's and N-1 more under it, sharing its Redis; one per core)")
    up.add_argument("--redis-cluster", action="store_const", const=True, default=None,
                    help="without REDIS_URL: a private 3-primary, 3-replica Redis Cluster instead of one redis-server")

    gw = sub.add_parser("gateway", help="the gateway alone, bound to any SMSC")
    gw.add_argument("--smsc", type=_parse_hostport, help="HOST:PORT of the SMSC")
    gw.add_argument("--system-id")
    gw.add_argument("--password")
    gw.add_argument("--system-type")
    gw.add_argument("--binds", type=int)
    gw.add_argument("--api-port", type=_port, help="self-care API port (0: any free one; several gateways per host)")
    gw.add_argument("--workers", type=_count, default=1,
                    help="gateway processes under this one, sharing Redis, each with its own binds (one per core); "
                         "worker I serves its API and metrics on api-port + I - 1")
    gw.add_argument("--worker", type=_count, default=0, help=argparse.SUPPRESS)  # which one this process is

    smsc = sub.add_parser("smsc", help="the SMSC simulator alone (SMPP server + phone HTTP API)")
    smsc.add_argument("--port", type=_port, dest="sim_port")
    smsc.add_argument("--http-port", type=_port, dest="sim_http_port")

    sms = sub.add_parser("sms", help="a virtual phone sends an SMS and prints the replies it gets")
    sms.add_argument("--from", dest="sender", required=True, help="the phone's MSISDN")
    sms.add_argument("--to", required=True, help="short code")
    sms.add_argument("text", nargs="*", help="message text (may be empty)")
    sms.add_argument("--api", help=f"the simulator (default: USSDGW_SIM_URL, else the configured "
                                   f"sim_host and sim_http_port, else {DEFAULT_SIM_URL})")
    sms.add_argument("--wait", type=float, default=15.0, help="seconds to wait for a reply")

    seed = sub.add_parser("seed", help="load subscribers from a YAML, JSON or JSON Lines file; "
                                       "run again after an interruption to go on where it stopped")
    seed.add_argument("file")
    seed.add_argument("--workers", type=int, help="processes hashing code words (default: one per core)")
    seed.add_argument("--batch", type=int, default=1000, help="subscribers written per round trip")
    seed.add_argument("--again", action="store_true",
                      help="import the file once more, although it was imported before")

    sub.add_parser("reindex", help="rebuild the recovery indexes (queued MTs, holds, N2 reviews) from the data")

    from simulator import terminal  # dial, scenario, load (the simulator's terminal commands)

    terminal.add_commands(sub)
    return parser


def settings_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The command's options that are settings (None: not given), by field name."""
    flags = {name: value for name, value in vars(args).items() if name in Settings.model_fields}
    if getattr(args, "smsc", None):
        flags["smsc_host"], flags["smsc_port"] = args.smsc
    return flags


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args.config, **settings_flags(args))
    except SettingsError as exc:  # one line, no traceback: what is wrong and where it was set
        print(f"ussdgw: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command == "up":
            return _run(_up(settings, args.gateways, _global_options(args)))
        if args.command == "gateway" and args.workers > 1:
            return _run(_gateway_workers(settings, argv, args.workers))
        if args.command == "gateway":
            if args.worker > 1 and settings.api_port:  # each worker's API and metrics on a port of its own
                settings = settings.with_overrides(api_port=settings.api_port + args.worker - 1)
            return _run(_gateway(settings))
        if args.command == "smsc":
            return _run(_smsc(settings))
        if args.command in ("sms", "dial") and args.api is None:
            args.api = simulator_url(settings)
        if args.command == "sms":
            return send_sms(args.api, args.sender, args.to, " ".join(args.text), args.wait)
        if args.command == "seed":
            return _run(_seed(settings, Path(args.file), workers=args.workers, batch=args.batch, again=args.again))
        if args.command == "reindex":
            return _run(_reindex(settings))
        from simulator import terminal

        if args.command in terminal.COMMANDS:
            from ussdgw.app.platforms import LoadPlatform, PrivatePlatform

            if "log_level" not in settings.model_fields_set:  # the report is the output: logs only when
                logs.configure("error", settings.log_format)  # something breaks, unless a level was set
            return terminal.run(args, private_platform=lambda: PrivatePlatform(settings),
                                load_target=LoadPlatform.for_command(settings))
    except KeyboardInterrupt:
        return 130
    return 2


def _run(coro: Any) -> int:
    return int(asyncio.run(coro) or 0)


def simulator_url(settings: Settings) -> str:
    """Where a running simulator's phone API is: `sim_url` (USSDGW_SIM_URL), else sim_host and sim_http_port."""
    if settings.sim_url:
        return settings.sim_url.rstrip("/")
    if not settings.sim_http_port:  # 0: any free port, which only the running platform knows
        return DEFAULT_SIM_URL
    host = settings.sim_host if settings.sim_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{settings.sim_http_port}"


# ---- the long-running commands: up, gateway, smsc ---------------------------------------------
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def _stop_signals(what: str) -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT or SIGTERM, which asks for an orderly stop.

    From that first signal on, both signals are back to the system default for good: a second one
    ends the process at once, by the kernel, whatever the stop is waiting for (the embedded
    redis-server follows: PR_SET_PDEATHSIG). Without a signal, leaving the block puts back the
    handlers that were there before.
    """
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    installed: list[signal.Signals] = []

    def uninstall() -> None:
        while installed:
            loop.remove_signal_handler(installed.pop())

    def first(sig: signal.Signals) -> None:
        uninstall()
        for each in STOP_SIGNALS:
            signal.signal(each, signal.SIG_DFL)
        print(f"\n{sig.name}: stopping {what} ... (Ctrl-C again quits at once)", file=sys.stderr, flush=True)
        stopping.set()

    for sig in STOP_SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / thread
            loop.add_signal_handler(sig, first, sig)
            installed.append(sig)
    try:
        yield stopping
    finally:
        if installed:  # no signal came: as it was
            uninstall()
            for sig, handler in before.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


async def _unless(stopping: asyncio.Event, work: Awaitable[None]) -> bool:
    """Run `work` to its end, or until `stopping` is set (then cancel it); True if it ended by itself."""
    task = asyncio.ensure_future(work)
    waiter = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait((task, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait((task,))
    if task.cancelled():
        return False
    task.result()  # its exception, if any
    return True


SERVING_GC_THRESHOLD = 20_000  # allocations between two young-generation collections while serving


def _serving_gc() -> None:
    """Once everything has started, what exists (modules, routes, menus, settings) is taken out of
    the collector's sight (`gc.freeze`), and the young generation is collected every 20,000
    allocations instead of 700. A gateway makes a few hundred short-lived containers per MO, nearly
    all freed by reference counting before any collection: at the default threshold a collection
    ran every few MOs, walking the same live objects again (about 4 % of the gateway's CPU)."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    gc.set_threshold(max(young, SERVING_GC_THRESHOLD), middle, old)


async def _serve(stack: Stack, name: str, what: str, start: Callable[[], Awaitable[None]], hint: str = "",
                 first_stop: Callable[[], Awaitable[None]] | None = None) -> int:
    """Start (a signal cancels a start half way), run until SIGINT/SIGTERM, then stop everything
    (`first_stop` before the stack: what runs on top of it)."""
    with _stop_signals(what) as stopping:
        try:
            if await _unless(stopping, start()):
                _serving_gc()
                await stopping.wait()
        except (OSError, RedisServerError) as exc:  # a port taken, an address not available, no Redis
            print(f"ussdgw {name} cannot start: {exc}{hint}", file=sys.stderr)
            return 1
        except (SealingKeyMismatch, StoreUnavailable) as exc:  # another host's key; Redis away
            print(f"ussdgw {name} cannot start: {exc}", file=sys.stderr)
            return 1
        finally:
            if first_stop is not None:
                await first_stop()
            await stack.stop()
    return 0


def _global_options(args: argparse.Namespace) -> list[str]:
    """The options before the command that a worker process must be given too."""
    return [*(["--config", args.config] if args.config else []),
            *(["--log-level", args.log_level] if args.log_level else [])]


async def _up(settings: Settings, gateways: int = 1, options: Sequence[str] = ()) -> int:
    from ussdgw.app.stack import Stack
    from ussdgw.app.workers import Workers

    stack = Stack(settings)
    workers: Workers | None = None

    async def start() -> None:
        nonlocal workers
        await stack.start()
        await _wait_bound(stack)
        if gateways > 1:  # more gateway processes beside this one's, on its SMSC and its Redis
            s = stack.settings
            command = [sys.executable, "-m", "ussdgw.app", *options, "gateway", "--smsc",
                       f"{s.smsc_host}:{s.smsc_port}"]
            env = {**os.environ, **s.with_overrides(redis_url=stack.endpoints["redis"]).to_environment()}
            workers = Workers(lambda index: [*command, "--worker", str(index)], gateways - 1, first=2, env=env)
            workers.start()
            stack.endpoints["gateways"] = f"{gateways} processes: this one and {gateways - 1} under it"
        _print_endpoints(stack.endpoints)

    async def stop_workers() -> None:
        if workers is not None:
            await workers.stop()

    return await _serve(stack, "up", "everything: unbinding, flushing, stopping Redis", start, first_stop=stop_workers)


async def _wait_bound(stack: Stack, timeout: float = 10.0) -> None:
    assert stack.gateway is not None
    try:
        await stack.gateway.wait_bound(timeout)
    except TimeoutError:
        settings = stack.gateway.settings
        stack.endpoints["gateway"] = f"not bound to {settings.smsc_host}:{settings.smsc_port} yet (retrying)"


def _print_endpoints(endpoints: dict[str, str], title: str = "ussdgw is up", *, hint: bool = True) -> None:
    width = max(len(k) for k in endpoints)
    print(f"{title}:")
    for name, where in endpoints.items():
        print(f"  {name:<{width}}  {where}")
    if hint:
        sim = endpoints.get("simulator", DEFAULT_SIM_URL)
        print(f"\nTry:  ussdgw sms --from 79161234567 --to 3339 ПАРОЛЬ   (simulator API {sim})")
    print("Ctrl-C stops everything.", flush=True)


async def _gateway(settings: Settings) -> int:
    from ussdgw.app.stack import Stack

    stack = Stack(settings)

    async def start() -> None:
        await stack.start(smsc=False)
        await _wait_bound(stack)
        _print_endpoints(stack.endpoints, "ussdgw gateway is up", hint=False)

    return await _serve(stack, "gateway", "the gateway: unbinding, flushing", start,
                        " (another gateway on this host? use --api-port 0)")


async def _gateway_workers(settings: Settings, argv: Sequence[str], count: int) -> int:
    """`gateway --workers N`: this process supervises N gateway processes (`ussdgw.app.workers`)."""
    from ussdgw.app.workers import Workers, worker_command
    from ussdgw.redis_server import EmbeddedCluster, EmbeddedRedis

    env = dict(os.environ)
    redis: EmbeddedRedis | EmbeddedCluster | None = None  # what this process started (and stops last)
    with _stop_signals(f"{count} gateway workers: each unbinding, flushing") as stopping:
        try:
            if not settings.redis_url:  # one private Redis (or cluster) for all, started here before any worker
                cluster = EmbeddedCluster(f"{settings.state_dir}/redis-cluster")
                running = await asyncio.to_thread(cluster.serving)
                if running:
                    env["REDIS_URL"] = running
                elif settings.redis_cluster:
                    cluster.start()  # from the loop's thread: it lives as long as this process
                    redis = cluster
                    env["REDIS_URL"] = cluster.url
                else:
                    embedded = EmbeddedRedis(f"{settings.state_dir}/redis")
                    if not await asyncio.to_thread(embedded.serving):
                        embedded.start()
                        redis = embedded
                    env["REDIS_URL"] = embedded.url
            settings.secret_key_bytes()  # made here once (if it is to be made), not raced by the workers
        except (OSError, RedisServerError) as exc:
            print(f"ussdgw gateway cannot start: {exc}", file=sys.stderr)
            return 1
        workers = Workers(lambda index: [sys.executable, "-m", "ussdgw.app", *worker_command(argv, index)], count,
                          env=env)
        workers.start()
        print(f"ussdgw gateway: {count} worker processes under this supervisor (pid {os.getpid()}), "
              f"each prints where it is bound; a worker that dies is started again.", flush=True)
        try:
            await stopping.wait()
        finally:
            await workers.stop()
            if redis is not None:
                await asyncio.to_thread(redis.stop)
    return 0


async def _smsc(settings: Settings) -> int:
    from ussdgw.app.stack import Stack

    stack = Stack(settings)

    async def start() -> None:
        await stack.start(gateway=False)  # no gateway, no self-care API: no Redis either
        _print_endpoints(stack.endpoints, "ussdgw smsc is up")

    return await _serve(stack, "smsc", "the SMSC simulator: unbinding its ESMEs", start)


async def _seed(settings: Settings, path: Path, *, workers: int | None, batch: int, again: bool) -> int:
    """The bulk import (`ussdgw.app.seed`): a progress bar on a terminal; Ctrl-C stops it after the
    batch in flight, and the same command goes on from there."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ussdgw.app.seed import Importer, SeedError, survey
    from ussdgw.app.stack import Stack

    try:
        found = await asyncio.to_thread(survey, path)
    except (SeedError, OSError) as exc:
        print(f"ussdgw seed: {exc}", file=sys.stderr)
        return 2
    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=console, disable=not console.is_terminal, transient=True)
    tasks = {"written": bar.add_task("subscribers", total=found.total)}
    if found.to_hash:
        tasks["hashed"] = bar.add_task("code words hashed", total=found.to_hash)
    stack = Stack(settings)
    with _stop_signals("the import after the batch in flight") as stopping, bar:
        try:
            await stack.start(smsc=False, gateway=False, api=False, store=True)
            assert stack.store is not None
            importer = Importer(stack.store, path, workers=workers, batch=batch, again=again, stopping=stopping,
                                progress=lambda what, n: bar.advance(tasks[what], n))
            if not again:
                bar.advance(tasks["written"], await stack.store.subscribers.imported(found.tag))
            report = await importer.run(found)
        finally:
            await stack.stop()
    log.info(
        "seed_done", total=report.total, before=report.before, done=report.done, written=report.written,
        seconds=round(report.seconds, 3), per_second=round(report.written / report.seconds) if report.seconds else 0)
    if not report.complete:
        print(f"interrupted: {report.done} of {report.total} subscribers from {path} are in; "
              f"the same command goes on from there")
        return 130
    earlier = f" ({report.before} of them before an interruption)" if report.before else ""
    print(f"seeded {report.total} subscribers from {path}{earlier}")
    return 0


async def _reindex(settings: Settings) -> int:
    """Scan every subscriber's keys and write the recovery entries they call for (after a restore
    from a backup, an upgrade from the global indexes, or a doubt)."""
    from ussdgw.app.stack import Stack
    from ussdgw.store.core import lease_now

    stack = Stack(settings)
    try:
        await stack.start(smsc=False, gateway=False, api=False, store=True)
        assert stack.store is not None
        counts = await stack.store.indexes.rebuild(stack.store.clock.now(), lease_now())
    finally:
        await stack.stop()
    print(f"reindexed: {counts['mts']} queued MTs, {counts['holds']} open holds, {counts['n2']} N2 applications")
    return 0


def _http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def send_sms(api: str, sender: str, to: str, text: str, wait: float) -> int:
    """Send one MO through the simulator, then print the replies from `to` as they arrive."""
    try:
        queued = _http("POST", f"{api}/api/phones/{sender}/sms", {"to": to, "text": text})
    except urllib.error.URLError as exc:
        print(f"cannot reach the simulator at {api}: {exc.reason}. Is `ussdgw up` running?", file=sys.stderr)
        return 2
    after = int(queued["inbox_seq"])
    print(f"→ {to}: {text}")
    deadline = time.monotonic() + wait
    got = 0
    while time.monotonic() < deadline:
        remaining = deadline - time.monotonic()
        window = min(remaining, 1.5) if got else remaining
        result = _http("GET", f"{api}/api/phones/{sender}/inbox?after={after}&wait={window:.1f}", timeout=window + 10)
        messages = [m for m in result["messages"] if m["sender"] == to]
        after = max([after, *(m["seq"] for m in result["messages"])])
        for message in messages:
            print(f"← {message['sender']}: {message['text']}")
            got += 1
        if got and not messages:
            break
    if not got:
        print(f"no reply from {to} within {wait:.0f} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
