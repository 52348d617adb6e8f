"""The simulator's terminal commands, wired into `ussdgw` by `add_commands`:

    ussdgw dial --from MSISDN '*111#' [--answers 1,2,1]   a USSD dialogue, screen by screen
    ussdgw scenario FILE... [--junit out.xml] [--api URL] regression scenarios with a report
    ussdgw load --phones N --rate R --mix sms:70,ussd:30 --duration S [--report FILE.html]
                                                          load through the simulator
"""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.panel import Panel
from rich.text import Text

DEFAULT_SIM_URL = "http://127.0.0.1:8080"
COMMANDS = frozenset({"dial", "scenario", "load"})


def add_commands(sub: Any) -> None:
    dial = sub.add_parser("dial", help="a virtual phone dials a USSD string; answer each screen (or --answers)")
    dial.add_argument("--from", dest="sender", required=True, help="the phone's MSISDN")
    dial.add_argument("code", help="USSD string, e.g. '*111#' (quote it: # starts a shell comment)")
    dial.add_argument("--answers", help="comma-separated answers for scripts, e.g. 1,2,1")
    dial.add_argument("--api", help=f"the simulator (default: USSDGW_SIM_URL, else the configured "
                                    f"sim_host and sim_http_port, else {DEFAULT_SIM_URL})")
    dial.add_argument("--wait", type=float, default=15.0, help="seconds to wait for each network screen")

    scenario = sub.add_parser("scenario", help="run YAML scenarios against the platform; pass/fail report")
    scenario.add_argument("files", nargs="+", type=Path, help="scenario files (or folders of *.yaml)")
    scenario.add_argument("--junit", type=Path, help="write JUnit XML here (for CI)")
    scenario.add_argument("--api", help="a running simulator to use (default: start a private platform "
                                        "per scenario, with its settings and fresh data)")

    load = sub.add_parser("load", help="drive the platform through the SMSC simulator; throughput and latency")
    load.add_argument("--phones", type=int, default=1000, help="virtual phones (each has one request in flight)")
    load.add_argument("--rate", type=float, default=1000.0, help="requests offered per second, all phones together")
    load.add_argument("--mix", default="sms:70,ussd:30", help="share of SMS and USSD requests, e.g. sms:70,ussd:30")
    load.add_argument("--duration", type=float, default=10.0, help="seconds of load")
    load.add_argument("--sms", default="3339:HELP", help="CODE:TEXT each SMS sends (default: a help request, R9)")
    load.add_argument("--ussd", default="*100#", help="USSD string each dial sends (default *100#, balance)")
    load.add_argument("--gateways", type=int, default=1, help="gateway processes to start (0: wait for one "
                                                              "to bind to --port)")
    load.add_argument("--port", type=int, default=0, help="SMPP port of the load's SMSC (default: any free one)")
    load.add_argument("--json", action="store_true", help="print the result as one JSON line too")
    load.add_argument("--report", type=Path, metavar="FILE.html",
                      help="write an HTML report: throughput over time and the latency distribution, plotted, "
                           "next to the figures (needs matplotlib: pip install 'ussdgw[report]')")


def run(args: argparse.Namespace, *, private_platform: Callable[[], AbstractAsyncContextManager[Any]],
        load_target: Callable[[argparse.Namespace, Console], AbstractAsyncContextManager[Any]]) -> int:
    """Run a terminal command; the composition root passes the private platforms that `scenario`
    (without --api) and `load` start, so this package never builds the platform itself."""
    if args.command == "dial":
        return dial_command(args.api or DEFAULT_SIM_URL, args.sender, args.code, args.answers, args.wait)
    if args.command == "scenario":
        from simulator.scenario import RunningSimulator

        platform = RunningSimulator(args.api) if args.api else private_platform()
        return scenario_command(args.files, args.junit, platform, running=args.api is not None)
    if args.command == "load":
        from simulator.load import load_command

        return load_command(args, load_target)
    raise ValueError(args.command)


# ---- dial ------------------------------------------------------------------------------------
class SimulatorUnreachable(Exception):
    pass


def _http(method: str, url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except urllib.error.URLError as exc:
        raise SimulatorUnreachable(str(exc.reason)) from None


def _screen(console: Console, dialogue: dict[str, Any]) -> None:
    state = dialogue["state"]
    subtitle = {"waiting": "ждёт ответа", "closed": "сеанс завершён"}.get(state, state)
    console.print(Panel(Text(dialogue["text"] or "(пусто)"), title=dialogue.get("sender") or dialogue["service"],
                        subtitle=subtitle, border_style="green" if state == "waiting" else "blue", expand=False))


def dial_command(api: str, msisdn: str, code: str, answers: str | None, wait: float,
                 console: Console | None = None, read: Any = None) -> int:
    """Dial, show each screen, answer from --answers, stdin or the keyboard; 0 once the network closes."""
    console = console or Console(highlight=False, soft_wrap=True)
    scripted = [a.strip() for a in answers.split(",")] if answers is not None else None
    ask = read or (lambda: console.input("[bold]Ответ[/] (пусто — отмена): "))
    base = f"{api}/api/phones/{msisdn}/ussd"
    try:
        status, dialogue = _http("POST", f"{base}/dial", {"code": code, "wait": wait}, timeout=wait + 30)
        if status != 200:
            console.print(Text(str(dialogue.get("error", status)), style="red"))
            return 2
        console.print(Text(f"→ {code}", style="dim"))
        while True:
            if dialogue["state"] == "sent":
                console.print(f"[red]сеть не ответила за {wait:g} с[/]")
                _http("POST", f"{base}/cancel")
                return 1
            _screen(console, dialogue)
            if dialogue["state"] != "waiting":
                if scripted:
                    console.print(f"[yellow]сеанс закрыт, не использованы ответы: {','.join(scripted)}[/]")
                    return 1
                return 0
            if scripted is not None:
                if not scripted:
                    console.print("[yellow]ответы закончились: сеанс отменён[/]")
                    _http("POST", f"{base}/cancel")
                    return 1
                reply = scripted.pop(0)
                console.print(Text(f"→ {reply}", style="dim"))
            else:
                try:
                    reply = ask().strip()
                except (EOFError, KeyboardInterrupt):
                    reply = ""
                if not reply:
                    _http("POST", f"{base}/cancel")
                    console.print("[dim]сеанс отменён[/]")
                    return 0
            status, dialogue = _http("POST", f"{base}/answer", {"text": reply, "wait": wait}, timeout=wait + 30)
            if status != 200:
                console.print(Text(str(dialogue.get("error", status)), style="red"))
                return 1
    except SimulatorUnreachable as exc:
        console.print(f"[red]cannot reach the simulator at {api}: {exc}. Is `ussdgw up` running?[/]")
        return 2


# ---- scenario --------------------------------------------------------------------------------
def _scenario_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.glob("*.yaml")) + sorted(path.glob("*.yml")) if path.is_dir() else [path])
    return files


def scenario_command(paths: list[Path], junit: Path | None, platform: AbstractAsyncContextManager[Any], *,
                     running: bool = False, console: Console | None = None) -> int:
    from simulator.scenario import ScenarioError, ScenarioResult, StepResult, junit_xml, load_scenario, run_scenarios

    console = console or Console(highlight=False, soft_wrap=True)
    try:
        scenarios = [load_scenario(p) for p in _scenario_files(paths)]
    except ScenarioError as exc:
        console.print(Text(str(exc), style="red"))
        return 2
    if not scenarios:
        console.print("[red]no scenario files[/]")
        return 2

    def started(s: Any) -> None:
        console.print(Text.assemble((s.name, "bold"), (f"  {', '.join(s.spec)} · {s.path}", "dim")))
        if running and (s.settings or s.subscribers):
            console.print(Text("  note: settings and subscribers of the scenario are not applied to a running "
                               "platform (--api); seed with `ussdgw seed`", style="yellow"))

    def step(r: StepResult) -> None:
        mark = ("✓", "green") if r.ok else ("✗", "red")
        console.print(Text.assemble("  ", mark, f" {r.step.index:>2}. {r.step.describe()} ",
                                    (f"({r.seconds:.2f} s)", "dim")))
        if not r.ok:
            console.print(Text(f"       {r.detail}", style="red"))
        elif r.detail and r.step.kind in ("dial", "answer", "advance_time"):
            console.print(Text("       " + r.detail.replace("\n", " ⏎ "), style="dim"))

    def done(r: ScenarioResult) -> None:
        if r.error:
            console.print(Text(f"  ✗ {r.error}", style="red"))
        verdict = "[green]PASS[/]" if r.ok else "[red]FAIL[/]"
        console.print(f"  {verdict} [dim]{r.seconds:.2f} s[/]\n")

    results = asyncio.run(run_scenarios(scenarios, platform, on_step=step, on_start=started, on_done=done))
    failed = [r for r in results if not r.ok]
    colour = "red" if failed else "green"
    console.print(f"[{colour}]{len(results) - len(failed)} passed, {len(failed)} failed[/] "
                  f"[dim]({sum(r.seconds for r in results):.1f} s)[/]")
    for r in failed:
        where = r.failure
        console.print(Text(f"  FAIL {r.scenario.name} ({r.scenario.path})"
                           + (f": step {where.step.index}: {where.detail}" if where else f": {r.error}"), style="red"))
    if junit is not None:
        junit.write_text(junit_xml(results), encoding="utf-8")
        console.print(f"[dim]JUnit XML: {junit}[/]")
    return 1 if failed else 0

