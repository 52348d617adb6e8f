"""Scenarios: regression tests that testers write in YAML and run with `ussdgw scenario FILE...`.

A scenario drives virtual phones through the simulator's HTTP API, exactly as a tester would by
hand, and checks what the phones see:

    name: R1 - пароль по SMS на 3339
    spec: [R1, P1]
    phone: "79161234567"            # the phone steps use unless they name another (from: / phone:)
    settings:                        # only when the runner starts the platform itself
      secret_cooldown_s: 20
    subscribers:                     # seeded then (same fields as demo/subscribers.yaml)
      - {msisdn: "79161234567", balance: 250.50}
    steps:
      - sms: {to: "3339", text: "ПАРОЛЬ"}
      - expect:
          sms: {from: "3339", text: "Личный кабинет: [a-z0-9]{8,10}", state: DELIVERED}
          within: 10                 # seconds (default 10)
      - dial: "*100#"                # or {code: "*100#", from: "7916..."}
      - expect: {ussd: {text: "Ваш баланс", state: closed}}
      - answer: "1"                  # the answer to an open USSD menu
      - cancel:                      # close the USSD popup (ends an open dialogue)
      - set_phone: {power: "off"}    # off | airplane | on; inbox_full, unknown_number, blocked_senders
      - advance_time: 10m            # fast-forward the clock: held MTs expire, D2 cool-downs end,
                                     # N2 reviews run (the platform's clock too, in one process)
      - expect: {no_sms: {from: "3339"}, within: 1}   # nothing arrives (waits the whole `within`)
      - sleep: 2                     # real time (a platform in another process keeps its own clock)

`expect: sms` takes, in order, the next SMS addressed to the phone after the previous ones it
matched (one still held, ENROUTE, is matched again by the next expectation): `from` and `text`
(a regular expression, searched; `.` matches line breaks too; a space in it matches the
non-breaking space Russian texts keep between a number and its unit) select it, `state` (DELIVERED,
ENROUTE, EXPIRED, UNDELIVERABLE) and `reason` (absent, expired, inbox_full, anti_spam,
unknown_number) are waited for. `expect: ussd` checks the phone's USSD screen (`state`: waiting
or closed). A file is checked when it is loaded; a mistake names the file and the step.

The runner starts a private platform per scenario (fresh Redis data, the scenario's settings),
or uses a running one (`--api http://127.0.0.1:8080`, the simulator's address). It prints one
line per step and a summary, and writes JUnit XML for CI.
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

from simulator.phones import REASONS
from ussdgw.inputs import parse_address
from ussdgw.smpp.ussd import is_ussd_string

STEP_KINDS = ("sms", "dial", "answer", "cancel", "expect", "set_phone", "advance_time", "sleep")
SMS_STATES = ("DELIVERED", "ENROUTE", "EXPIRED", "UNDELIVERABLE")
FINAL_STATES = frozenset({"DELIVERED", "EXPIRED", "UNDELIVERABLE"})
USSD_STATES = ("waiting", "closed", "sent", "idle")
DEFAULT_WITHIN_S = 10.0
USSD_WAIT_S = 10.0
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


class ScenarioError(ValueError):
    """A scenario file that cannot be run: the message names the file and the step."""


class StepFailed(AssertionError):
    """A step whose expectation was not met (or that the simulator refused)."""


def parse_duration(value: Any) -> float:
    """Seconds from 30, 2.5, "90s", "10m", "24h", "1d"."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (like 30, 90s, 10m, 24h)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


@dataclass(frozen=True, slots=True)
class Step:
    index: int  # 1-based, as a tester counts
    kind: str
    args: dict[str, Any]
    phone: str

    def describe(self) -> str:
        a = self.args
        if self.kind == "sms":
            return f"{self.phone} → {a['to']}: {a['text']!r}"
        if self.kind == "dial":
            return f"{self.phone} набирает {a['code']}"
        if self.kind == "answer":
            return f"{self.phone} отвечает {a['text']!r}"
        if self.kind == "cancel":
            return f"{self.phone} закрывает USSD"
        if self.kind == "set_phone":
            return f"{self.phone}: " + ", ".join(f"{k}={v}" for k, v in a.items())
        if self.kind in ("advance_time", "sleep"):
            return f"{self.kind} {a['seconds']:g} s"
        if "sms" in a:
            want = a["sms"]
            parts = [f"SMS от {want.get('from', 'кого угодно')}"]
            if "text" in want:
                parts.append(f"/{want['text']}/")
            if "state" in want:
                parts.append(want["state"])
            if "reason" in want:
                parts.append(want["reason"])
            return f"ожидаю на {self.phone}: " + " ".join(parts)
        if "ussd" in a:
            want = a["ussd"]
            return f"ожидаю USSD на {self.phone}: " + " ".join(
                str(x) for x in (f"/{want['text']}/" if "text" in want else "", want.get("state", "")) if x)
        return f"ожидаю: на {self.phone} нет SMS от {a['no_sms'].get('from', 'кого угодно')} {a['within']:g} s"


@dataclass(slots=True)
class Scenario:
    name: str
    path: Path
    steps: list[Step]
    spec: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    subscribers: list[dict[str, Any]] = field(default_factory=list)
    description: str = ""


# ---- loading ---------------------------------------------------------------------------------
def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"{path}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a mapping with name and steps")
    unknown = set(data) - {"name", "description", "spec", "phone", "settings", "subscribers", "steps"}
    if unknown:
        raise ScenarioError(f"{path}: unknown keys {sorted(unknown)}")
    default_phone = str(data.get("phone", "79161234567"))
    if parse_address(default_phone) != default_phone:
        raise ScenarioError(f"{path}: phone must be 5-15 digits")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list) or not raw_steps:
        raise ScenarioError(f"{path}: steps must be a non-empty list")
    steps = [_step(path, i + 1, raw, default_phone) for i, raw in enumerate(raw_steps)]
    settings = data.get("settings") or {}
    if not isinstance(settings, dict):
        raise ScenarioError(f"{path}: settings must be a mapping")
    _check_settings(path, settings)
    subscribers = data.get("subscribers") or []
    if not isinstance(subscribers, list) or not all(isinstance(s, dict) and "msisdn" in s for s in subscribers):
        raise ScenarioError(f"{path}: subscribers must be a list of mappings with an msisdn")
    spec = data.get("spec") or []
    if isinstance(spec, str):
        spec = [spec]
    return Scenario(str(data.get("name") or path.stem), path, steps, [str(s) for s in spec], settings,
                    [{**s, "msisdn": str(s["msisdn"])} for s in subscribers], str(data.get("description", "")))


def _check_settings(path: Path, settings: dict[str, Any]) -> None:
    from ussdgw.config import Settings, SettingsError

    unknown = set(settings) - set(Settings.model_fields)
    if unknown:
        raise ScenarioError(f"{path}: unknown settings {sorted(unknown)}")
    try:  # typed as any other settings: a wrong value fails when the file is read, not half way through
        Settings().with_overrides(**settings)
    except SettingsError as exc:
        raise ScenarioError(f"{path}: {exc}") from None


def _step(path: Path, index: int, raw: Any, default_phone: str) -> Step:
    where = f"{path}: step {index}"
    if not isinstance(raw, dict) or not raw:
        raise ScenarioError(f"{where}: a step is one of {', '.join(STEP_KINDS)} (a mapping with one key)")
    kind = next(iter(raw))
    if kind not in STEP_KINDS:
        raise ScenarioError(f"{where}: unknown step {kind!r}; expected one of {', '.join(STEP_KINDS)}")
    if len(raw) != 1:
        raise ScenarioError(f"{where}: one step per list item (found {sorted(raw)})")
    value = raw[kind]
    try:
        args, phone = _args(kind, value, default_phone)
    except (ValueError, TypeError, KeyError) as exc:
        raise ScenarioError(f"{where} ({kind}): {exc}") from None
    if parse_address(phone) != phone:
        raise ScenarioError(f"{where} ({kind}): phone {phone!r} must be 5-15 digits")
    return Step(index, kind, args, phone)


def _mapping(value: Any, kind: str, scalar_key: str | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if scalar_key is not None and isinstance(value, str | int | float):
        return {scalar_key: str(value)}
    raise ValueError(f"{kind} takes a mapping" + (f" or a {scalar_key}" if scalar_key else ""))


def _only(args: dict[str, Any], allowed: set[str]) -> None:
    unknown = set(args) - allowed
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def _args(kind: str, value: Any, default_phone: str) -> tuple[dict[str, Any], str]:
    if kind in ("advance_time", "sleep"):
        return {"seconds": parse_duration(value)}, default_phone
    if kind == "sms":
        args = _mapping(value, kind)
        _only(args, {"to", "text", "from"})
        if "to" not in args:
            raise ValueError("sms needs to: (the short code)")
        phone = str(args.pop("from", default_phone))
        return {"to": str(args["to"]), "text": str(args.get("text", "") or "")}, phone
    if kind == "dial":
        args = _mapping(value, kind, "code")
        _only(args, {"code", "from"})
        code = str(args.get("code", ""))
        if not is_ussd_string(code):
            raise ValueError(f"not a USSD string: {code!r} (like *100#)")
        return {"code": code}, str(args.get("from", default_phone))
    if kind == "answer":
        args = _mapping(value, kind, "text")
        _only(args, {"text", "from"})
        if "text" not in args:
            raise ValueError("answer needs text:")
        return {"text": str(args["text"])}, str(args.get("from", default_phone))
    if kind == "cancel":
        args = _mapping(value, kind, "from")
        _only(args, {"from"})
        return {}, str(args.get("from", default_phone))
    if kind == "set_phone":
        args = _mapping(value, kind)
        _only(args, {"msisdn", "power", "inbox_full", "unknown_number", "blocked_senders"})
        phone = str(args.pop("msisdn", default_phone))
        if "power" in args and args["power"] not in ("on", "off", "airplane"):
            raise ValueError("power is on, off or airplane")
        for flag in ("inbox_full", "unknown_number"):
            if flag in args and not isinstance(args[flag], bool):
                raise ValueError(f"{flag} is true or false")
        if "blocked_senders" in args:
            senders = args["blocked_senders"]
            args["blocked_senders"] = [str(s) for s in (senders if isinstance(senders, list) else [senders])]
        if not args:
            raise ValueError("set_phone needs at least one setting")
        return args, phone
    # expect
    args = _mapping(value, kind)
    _only(args, {"sms", "ussd", "no_sms", "within", "phone"})
    checks = [k for k in ("sms", "ussd", "no_sms") if k in args]
    if len(checks) != 1:
        raise ValueError("expect takes exactly one of sms:, ussd:, no_sms:")
    phone = str(args.pop("phone", default_phone))
    within = parse_duration(args.pop("within", DEFAULT_WITHIN_S))
    what = checks[0]
    want = _mapping(args[what], what)
    if what in ("sms", "no_sms"):
        _only(want, {"from", "text", "state", "reason"} if what == "sms" else {"from"})
        if "from" in want:
            want["from"] = str(want["from"])
        if "state" in want and want["state"] not in SMS_STATES:
            raise ValueError(f"state is one of {', '.join(SMS_STATES)}")
        if "reason" in want and want["reason"] not in REASONS:
            raise ValueError(f"reason is one of {', '.join(REASONS)}")
    else:
        _only(want, {"text", "state"})
        if "state" in want and want["state"] not in USSD_STATES:
            raise ValueError(f"state is one of {', '.join(USSD_STATES)}")
    if "text" in want:
        try:
            re.compile(str(want["text"]))
        except re.error as exc:
            raise ValueError(f"text is not a regular expression: {exc}") from None
        want["text"] = str(want["text"])
    return {what: want, "within": within}, phone


# ---- running ---------------------------------------------------------------------------------
@dataclass(slots=True)
class StepResult:
    step: Step
    ok: bool
    seconds: float
    detail: str = ""


@dataclass(slots=True)
class ScenarioResult:
    scenario: Scenario
    steps: list[StepResult] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""  # the platform could not be started, or similar

    @property
    def ok(self) -> bool:
        return not self.error and all(s.ok for s in self.steps) and len(self.steps) == len(self.scenario.steps)

    @property
    def failure(self) -> StepResult | None:
        return next((s for s in self.steps if not s.ok), None)


class PhoneDriver:
    """The scenario's view of the simulator, over its HTTP API."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.http = session
        self.taken: dict[str, set[str]] = {}  # phone -> message ids already matched or present before

    async def call(self, method: str, path: str, body: dict[str, Any] | None = None, *,
                   timeout: float = 30.0) -> Any:
        if body is None and method != "GET":
            body = {}  # the simulator takes changes as JSON only
        async with self.http.request(method, path, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            data = await resp.json()
            if resp.status >= 400:
                raise StepFailed(f"the simulator refused: {data.get('error', resp.status)}")
            return data

    async def state(self, phone: str, version: int | None = None, wait: float = 0.0) -> dict[str, Any]:
        query = f"?version={version}&wait={wait:.3f}" if version is not None and wait > 0 else ""
        result: dict[str, Any] = await self.call("GET", f"/api/phones/{phone}/state{query}", timeout=wait + 30)
        return result

    async def start(self, phone: str) -> None:
        """Make the phone (a look never does) and remember what it already had, so expectations only
        see what comes next."""
        if phone not in self.taken:
            await self.call("POST", "/api/phones", {"msisdn": phone})
            snapshot = await self.state(phone)
            self.taken[phone] = {e["message_id"] for e in snapshot["network"]}

    async def until(self, phone: str, within: float,
                    check: Callable[[dict[str, Any]], tuple[bool, str]]) -> tuple[bool, str, dict[str, Any]]:
        """Poll the phone's state as it changes until `check` says done, or `within` runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        snapshot = await self.state(phone)
        while True:
            done, detail = check(snapshot)
            remaining = deadline - loop.time()
            if done or remaining <= 0:
                return done, detail, snapshot
            snapshot = await self.state(phone, snapshot["version"], min(remaining, 60.0))


def _text_pattern(want: dict[str, Any]) -> re.Pattern[str] | None:
    return re.compile(want["text"], re.S) if "text" in want else None


def _matches(pattern: re.Pattern[str] | None, text: str) -> bool:
    """Whether a received text matches an expectation's `text`, its non-breaking spaces read as
    spaces (Russian texts keep "250 ₽" together with one; a scenario writes a plain space)."""
    return pattern is None or bool(pattern.search(text.replace("\u00a0", " ")))


def _sms_candidates(snapshot: dict[str, Any], taken: set[str], want: dict[str, Any]) -> list[dict[str, Any]]:
    entries = [e for e in snapshot["network"] if e["kind"] == "sms" and e["message_id"] not in taken]
    entries.sort(key=lambda e: e["submitted_at"])
    sender = want.get("from")
    pattern = _text_pattern(want)
    return [e for e in entries if (sender is None or e["sender"] == sender)
            and _matches(pattern, e["text"])]


def _describe_sms(entry: dict[str, Any]) -> str:
    reason = f" ({entry['reason']})" if entry.get("reason") else ""
    text = entry["text"].replace("\n", " ")
    return f"от {entry['sender']} {entry['state']}{reason}: {text[:80]!r}"


class Runner:
    def __init__(self, driver: PhoneDriver) -> None:
        self.driver = driver

    async def run(self, scenario: Scenario, on_step: Callable[[StepResult], None] | None = None) -> ScenarioResult:
        result = ScenarioResult(scenario)
        started = time.perf_counter()
        try:  # what every phone of the scenario already had does not count
            for phone in dict.fromkeys(step.phone for step in scenario.steps):
                await self.driver.start(phone)
        except (aiohttp.ClientError, TimeoutError, StepFailed) as exc:
            result.error = f"the simulator did not answer: {type(exc).__name__} {exc}"
            return result
        for step in scenario.steps:
            t0 = time.perf_counter()
            try:
                detail = await self._step(step)
                outcome = StepResult(step, True, time.perf_counter() - t0, detail)
            except StepFailed as exc:
                outcome = StepResult(step, False, time.perf_counter() - t0, str(exc))
            except (aiohttp.ClientError, TimeoutError) as exc:
                outcome = StepResult(step, False, time.perf_counter() - t0,
                                     f"the simulator did not answer: {type(exc).__name__} {exc}")
            result.steps.append(outcome)
            if on_step is not None:
                on_step(outcome)
            if not outcome.ok:
                break
        result.seconds = time.perf_counter() - started
        return result

    async def _step(self, step: Step) -> str:
        d, a, phone = self.driver, step.args, step.phone
        if step.kind == "sms":
            await d.call("POST", f"/api/phones/{phone}/sms", {"to": a["to"], "text": a["text"]})
            return ""
        if step.kind in ("dial", "answer"):
            path = "dial" if step.kind == "dial" else "answer"
            body = {"code": a["code"]} if step.kind == "dial" else {"text": a["text"]}
            screen = await d.call("POST", f"/api/phones/{phone}/ussd/{path}", {**body, "wait": USSD_WAIT_S},
                                  timeout=USSD_WAIT_S + 30)
            if screen["state"] == "sent":
                raise StepFailed(f"no USSD answer from the network within {USSD_WAIT_S:g} s")
            return f"[{screen['state']}] {screen['text']}"
        if step.kind == "cancel":
            await d.call("POST", f"/api/phones/{phone}/ussd/cancel")
            return ""
        if step.kind == "set_phone":
            await d.call("PATCH", f"/api/phones/{phone}", a)
            return ""
        if step.kind == "advance_time":
            report = await d.call("POST", "/api/clock/advance", {"seconds": a["seconds"]})
            return f"expired {report['expired']}" + (f", hooks {report['hooks']}" if report.get("hooks") else "")
        if step.kind == "sleep":
            await asyncio.sleep(a["seconds"])
            return ""
        return await self._expect(step)

    async def _expect(self, step: Step) -> str:
        d, a, phone = self.driver, step.args, step.phone
        taken = d.taken[phone]
        if "ussd" in a:
            want = a["ussd"]
            pattern = _text_pattern(want)

            def ussd_ok(u: dict[str, Any]) -> bool:
                text_ok = _matches(pattern, u["text"])
                return text_ok and want.get("state", u["state"]) == u["state"]

            def settled(s: dict[str, Any]) -> tuple[bool, str]:  # the network has spoken: judge now
                u = s["ussd"]
                return ussd_ok(u) or u["state"] != "sent", f"[{u['state']}] {u['text']!r}"

            _, seen, snapshot = await d.until(phone, a["within"], settled)
            if not ussd_ok(snapshot["ussd"]):
                raise StepFailed(f"expected USSD {('/' + want['text'] + '/') if pattern else ''} "
                                 f"{want.get('state', '')}; the phone shows {seen}")
            return seen
        if "no_sms" in a:
            want = a["no_sms"]
            _, _, snapshot = await d.until(phone, a["within"], lambda s: (bool(_sms_candidates(s, taken, want)), ""))
            arrived = _sms_candidates(snapshot, taken, want)
            if arrived:
                raise StepFailed(f"expected no SMS, got {_describe_sms(arrived[0])}")
            return ""
        want = a["sms"]

        def sms_ok(s: dict[str, Any]) -> tuple[bool, str]:
            found = _sms_candidates(s, taken, want)
            if not found:
                return False, ""
            entry = found[0]  # stop waiting once it is as wanted, or settled otherwise
            return _as_wanted(entry, want) or entry["state"] in FINAL_STATES, _describe_sms(entry)

        _, seen, snapshot = await d.until(phone, a["within"], sms_ok)
        found = _sms_candidates(snapshot, taken, want)
        if found and _as_wanted(found[0], want):
            if found[0]["state"] in FINAL_STATES:  # a held SMS stays for the next expectation
                taken.add(found[0]["message_id"])
            return seen
        expected = step.describe().split(": ", 1)[-1]
        if found:
            raise StepFailed(f"expected {expected}; got {seen}")
        others = [e for e in snapshot["network"] if e["kind"] == "sms" and e["message_id"] not in taken]
        got = "; ".join(_describe_sms(e) for e in others[-3:]) or "nothing"
        raise StepFailed(f"expected {expected} within {a['within']:g} s; the phone got: {got}")


def _as_wanted(entry: dict[str, Any], want: dict[str, Any]) -> bool:
    return bool(want.get("state", entry["state"]) == entry["state"]
                and want.get("reason", entry["reason"]) == entry["reason"])


# ---- the platform for a run ------------------------------------------------------------------
class ScenarioPlatform(Protocol):
    """Where scenarios run: a simulator already running (`RunningSimulator`), or a private platform
    per scenario that the composition root provides (`ussdgw.app.platforms.PrivatePlatform`)."""

    async def run(self, scenario: Scenario,
                  on_step: Callable[[StepResult], None] | None = None) -> ScenarioResult: ...


class RunningSimulator:
    """Scenarios against a simulator that is already running (`--api`): its data as it is."""

    def __init__(self, api: str) -> None:
        self.api = api

    async def __aenter__(self) -> RunningSimulator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self, scenario: Scenario, on_step: Callable[[StepResult], None] | None = None) -> ScenarioResult:
        return await run_against(self.api, scenario, on_step)


async def run_against(api: str, scenario: Scenario,
                      on_step: Callable[[StepResult], None] | None = None) -> ScenarioResult:
    """Run one scenario against the simulator's HTTP API at `api`."""
    async with aiohttp.ClientSession(api) as session:
        return await Runner(PhoneDriver(session)).run(scenario, on_step)


async def run_scenarios(scenarios: Sequence[Scenario], platform: AbstractAsyncContextManager[ScenarioPlatform], *,
                        on_step: Callable[[StepResult], None] | None = None,
                        on_start: Callable[[Scenario], None] | None = None,
                        on_done: Callable[[ScenarioResult], None] | None = None) -> list[ScenarioResult]:
    results = []
    async with platform as where:
        for scenario in scenarios:
            if on_start is not None:
                on_start(scenario)
            result = await where.run(scenario, on_step)
            results.append(result)
            if on_done is not None:
                on_done(result)
    return results


# ---- reports ---------------------------------------------------------------------------------
def report_lines(result: ScenarioResult) -> list[str]:
    """A plain-text report: one line per step, the failure in full."""
    s = result.scenario
    head = f"{'PASS' if result.ok else 'FAIL'}  {s.name}  [{', '.join(s.spec)}]  ({s.path}, {result.seconds:.2f} s)"
    lines = [head]
    if result.error:
        lines.append(f"   ✗ {result.error}")
    for r in result.steps:
        mark = "✓" if r.ok else "✗"
        lines.append(f"   {mark} {r.step.index:>2}. {r.step.describe()}  ({r.seconds:.2f} s)")
        if not r.ok:
            lines.append(f"        {r.detail}")
    skipped = s.steps[len(result.steps):]
    for step in skipped if not result.ok else ():
        lines.append(f"   · {step.index:>2}. {step.describe()}  (не выполнен)")
    return lines


def junit_xml(results: Iterable[ScenarioResult]) -> str:
    """JUnit XML: one testsuite per scenario file, one testcase per scenario."""
    results = list(results)
    suites = ET.Element("testsuites", name="ussdgw scenarios", tests=str(len(results)),
                        failures=str(sum(not r.ok for r in results)),
                        time=f"{sum(r.seconds for r in results):.3f}")
    for result in results:
        s = result.scenario
        suite = ET.SubElement(suites, "testsuite", name=str(s.path), tests="1",
                              failures="0" if result.ok else "1", time=f"{result.seconds:.3f}")
        case = ET.SubElement(suite, "testcase", classname=s.path.stem, name=s.name, time=f"{result.seconds:.3f}")
        if s.spec:
            props = ET.SubElement(case, "properties")
            ET.SubElement(props, "property", name="spec", value=", ".join(s.spec))
        if not result.ok:
            failed = result.failure
            message = result.error or (f"step {failed.step.index}: {failed.detail}" if failed else "failed")
            failure = ET.SubElement(case, "failure", message=message, type="ScenarioFailure")
            failure.text = "\n".join(report_lines(result))
        out = ET.SubElement(case, "system-out")
        out.text = "\n".join(f"{r.step.index}. {r.step.describe()} -> {r.detail}" for r in result.steps)
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True)
