"""`ussdgw`: run the platform, or one part of it, or act as a phone against a running simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import structlog

from ussdgw import logs
from ussdgw.config import Settings, load_settings

log = structlog.get_logger("ussdgw.cli")
DEFAULT_SIM_URL = "http://127.0.0.1:8080"


def _parse_hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ussdgw", description=__doc__)
    parser.add_argument("--config", help="TOML settings file (default: ./ussdgw.toml if present)")
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="Redis + SMSC simulator + gateway + HTTP, on defaults")
    up.add_argument("--sim-http-port", type=int)
    up.add_argument("--smpp-port", type=int, dest="sim_port")

    gw = sub.add_parser("gateway", help="the gateway alone, bound to any SMSC")
    gw.add_argument("--smsc", type=_parse_hostport, help="HOST:PORT of the SMSC")
    gw.add_argument("--system-id")
    gw.add_argument("--password")
    gw.add_argument("--system-type")
    gw.add_argument("--binds", type=int)
    gw.add_argument("--api-port", type=int, help="self-care API port (0: any free one; several gateways per host)")

    smsc = sub.add_parser("smsc", help="the SMSC simulator alone (SMPP server + phone HTTP API)")
    smsc.add_argument("--port", type=int, dest="sim_port")
    smsc.add_argument("--http-port", type=int, dest="sim_http_port")

    sms = sub.add_parser("sms", help="a virtual phone sends an SMS and prints the replies it gets")
    sms.add_argument("--from", dest="sender", required=True, help="the phone's MSISDN")
    sms.add_argument("--to", required=True, help="short code")
    sms.add_argument("text", nargs="*", help="message text (may be empty)")
    sms.add_argument("--api", default=os.environ.get("USSDGW_SIM_URL", DEFAULT_SIM_URL))
    sms.add_argument("--wait", type=float, default=15.0, help="seconds to wait for a reply")

    seed = sub.add_parser("seed", help="load subscribers from a YAML or JSON file")
    seed.add_argument("file")

    from simulator import terminal  # dial, scenario, load (the simulator's terminal commands)

    terminal.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(args.config)
    if args.log_level:
        settings = settings.with_overrides(log_level=args.log_level)
    logs.configure(settings.log_level, settings.log_format)
    try:
        if args.command == "up":
            return _run(_up(settings.with_overrides(sim_http_port=args.sim_http_port, sim_port=args.sim_port)))
        if args.command == "gateway":
            host, port = args.smsc if args.smsc else (None, None)
            return _run(_gateway(settings.with_overrides(
                smsc_host=host, smsc_port=port, system_id=args.system_id, password=args.password,
                system_type=args.system_type, binds=args.binds, api_port=args.api_port)))
        if args.command == "smsc":
            return _run(_smsc(settings.with_overrides(sim_port=args.sim_port, sim_http_port=args.sim_http_port)))
        if args.command == "sms":
            return send_sms(args.api, args.sender, args.to, " ".join(args.text), args.wait)
        if args.command == "seed":
            return _run(_seed(settings, Path(args.file)))
        from simulator import terminal

        if args.command in terminal.COMMANDS:
            return terminal.run(args, settings)
    except KeyboardInterrupt:
        return 130
    return 2


def _run(coro: Any) -> int:
    return int(asyncio.run(coro) or 0)


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _up(settings: Settings) -> int:
    from ussdgw.stack import Stack

    stack = Stack(settings)
    try:
        await stack.start()
        assert stack.gateway is not None
        with contextlib.suppress(TimeoutError):
            await stack.gateway.wait_bound(10)
        _print_endpoints(stack.endpoints)
        await _until_signalled()
    finally:
        print("\nstopping: unbinding, flushing, stopping Redis ...", file=sys.stderr)
        await stack.stop()
    return 0


def _print_endpoints(endpoints: dict[str, str]) -> None:
    width = max(len(k) for k in endpoints)
    print("ussdgw is up:")
    for name, where in endpoints.items():
        print(f"  {name:<{width}}  {where}")
    sim = endpoints.get("simulator", DEFAULT_SIM_URL)
    print(f"\nTry:  ussdgw sms --from 79161234567 --to 3339 ПАРОЛЬ   (simulator API {sim})")
    print("Ctrl-C stops everything.", flush=True)


async def _gateway(settings: Settings) -> int:
    from ussdgw.stack import Stack

    stack = Stack(settings)
    try:
        await stack.start(smsc=False)
        await _until_signalled()
    except OSError as exc:
        print(f"ussdgw gateway cannot start: {exc} (another gateway on this host? use --api-port 0)",
              file=sys.stderr)
        return 1
    finally:
        await stack.stop()
    return 0


async def _smsc(settings: Settings) -> int:
    from ussdgw.stack import Stack

    stack = Stack(settings)
    try:
        await stack.start(gateway=False)  # no gateway, no self-care API: no Redis either
        _print_endpoints(stack.endpoints)
        await _until_signalled()
    finally:
        await stack.stop()
    return 0


async def _seed(settings: Settings, path: Path) -> int:
    from ussdgw.seed import load_seed_file, seed_subscribers
    from ussdgw.stack import Stack

    subscribers = load_seed_file(path)
    stack = Stack(settings)
    try:
        await stack.start(smsc=False, gateway=False, api=False, store=True)
        assert stack.store is not None
        count = await seed_subscribers(stack.store, subscribers)
    finally:
        await stack.stop()
    print(f"seeded {count} subscribers from {path}")
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
