"""Every route of the self-care API (as gateway/openapi.yaml lists them) and of the simulator's HTTP
API, driven with hostile input over a real socket: wrong types, huge and Unicode-digit numbers,
deep JSON, invalid UTF-8, wrong media types and charsets, huge bodies, garbage bearer tokens and
Host headers. Nothing reachable from outside answers 5xx; a refusal is JSON, and a refusal of one
field names that field (`details.field` in the self-care API, `field` in the simulator's)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
import yaml

from gateway.http_api import ensure_admin_token
from handlers import account
from tests.support.hostile import (
    HOSTILE_BODIES,
    HOSTILE_HOSTS,
    HOSTILE_TOKENS,
    HOSTILE_VALUES,
    UNPARSEABLE_TOKENS,
    Answer,
    Raw,
    send,
)
from tests.support.selfcare_helpers import IVAN, IVAN2, MARIA, SPEC_PATH, Api
from ussdgw.app.stack import Stack
from ussdgw.config import Settings

PATH_SAMPLES = {"msisdn": "me", "service_id": "autopay", "number": IVAN2, "other": IVAN2, "holder": IVAN2,
                "requester": MARIA, "target": MARIA, "child": IVAN2}
BODY_SAMPLES: dict[str, Any] = {
    "msisdn": MARIA, "password": "ab12345cd", "code_word": "ромашка", "delivery": "sms", "passport": "4612 654321",
    "contract": "D-2022-0107", "amount_kop": 100, "reason": "usage", "tariff_id": "basic", "params": {},
    "merchant": "shop", "from": "2020-01-01", "to": MARIA, "points": 1, "code": "123456",
    "new_owner_msisdn": MARIA, "old_password": "ab12345cd", "new_password": "Abc123xyz",
    "new_password_repeat": "Abc123xyz", "email": "ivan@example.com", "numbers": [IVAN2],
}
QUERY_SAMPLES = {"count": "10", "from": "2020-01-01", "to": "2020-01-02"}
HOSTILE_PATH_VALUES = ["７９１６１２３４５６７", "%FF%FE", "9" * 3000, "..%2F..", "%00", "me%0Aevil", "-1"]
HOSTILE_QUERY_VALUES = ["١٠", "１０", "9" * 5000, "-1", "1e9", "nan", "%FF", "", "2024-13-45", "２０２４-01-01"]


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    document = yaml.safe_load(SPEC_PATH.read_text(encoding="utf-8"))
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in {"get", "put", "post", "delete", "patch"}:
                yield method.upper(), path, operation


def body_fields(operation: dict[str, Any]) -> list[str]:
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    return list(schema.get("properties", {}))


def query_fields(operation: dict[str, Any]) -> list[str]:
    return [p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"]


def concrete(path: str, **override: str) -> str:
    """The route with its parameters filled in (an override as a browser would send it: percent-encoded)."""
    return "/api/v1" + re.sub(r"\{(\w+)\}", lambda m: quote(override[m.group(1)], safe="%")
                              if m.group(1) in override else PATH_SAMPLES[m.group(1)], path)


RELATED = {("new_password", "new_password_repeat")}  # a new password and its repetition are refused together


class Checks:
    """The cases of one test, sent `CONCURRENCY` at a time; every answer checked, the failures
    gathered so that one run lists them all."""

    CONCURRENCY = 32

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cases: list[tuple[Raw, str | None, bool]] = []

    def add(self, request: Raw, *, field: str | None = None, app_reached: bool = True) -> None:
        self.cases.append((request, field, app_reached))

    async def run(self) -> int:
        gate = asyncio.Semaphore(self.CONCURRENCY)

        async def one(request: Raw) -> Answer:
            async with gate:
                return await send(self.host, self.port, request)

        answers = await asyncio.gather(*(one(request) for request, _, _ in self.cases))
        failures = []
        for answer, (_, field, app_reached) in zip(answers, self.cases, strict=True):
            try:
                _check(answer, field=field, app_reached=app_reached)
            except AssertionError as exc:
                failures.append(str(exc)[:400])
        assert not failures, f"{len(failures)} of {len(answers)}:\n" + "\n".join(failures[:40])
        return len(answers)


def _check(answer: Answer, *, field: str | None = None, app_reached: bool = True) -> None:
    """Below 500; JSON whenever the application answered; a 400 for one field names it."""
    assert answer.status < 500, (answer.request, answer.status, answer.body[:300])
    if not app_reached:
        return
    assert answer.is_json, (answer.request, answer.status, answer.headers, answer.body[:300])
    body = answer.json()
    assert answer.status < 400 or (isinstance(body, dict) and "error" in body), (answer.request, body)
    if field is not None and answer.status == 400:
        named = str(body.get("details", {}).get("field", body.get("field")))
        assert named == field or named.startswith(field + ".") or (field, named) in RELATED, (answer.request, field,
                                                                                             body)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """These cases test input, not load, yet go 32 at a time, many of them a password hash: the
    costly pool takes them all here (its refusals under a storm have their own test_costly_api)."""
    return settings.with_overrides(costly_workers=Checks.CONCURRENCY // 4, costly_max_wait_s=60.0)


@pytest.fixture
async def auth(stack: Stack, api: Api) -> dict[str, str]:
    """Tokens by kind: a session of Ivan's (one per route, so that signing out ends only its own) and the admin."""
    return {"admin": ensure_admin_token(stack.settings)}


async def session_token(stack: Stack) -> str:
    assert stack.platform is not None
    return (await account._open_session(stack.platform, IVAN, "password")).token


async def test_the_self_care_api_answers_every_hostile_request_below_500_naming_the_field(
        stack: Stack, auth: dict[str, str]) -> None:
    parts = urlsplit(stack.endpoints["selfcare"])
    cases = Checks(parts.hostname or "127.0.0.1", parts.port or 80)
    json_type = [("Content-Type", "application/json")]
    for method, path, operation in operations():
        admin = any("admin" in s for s in operation.get("security", []))
        token = auth["admin"] if admin else await session_token(stack)
        headers = [("Authorization", f"Bearer {token}"), *json_type]
        paths = {"msisdn": IVAN} if admin else {}
        target = concrete(path, **paths)
        if (query := query_fields(operation)):
            target += "?" + "&".join(f"{q}={QUERY_SAMPLES[q]}" for q in query)
        fields = body_fields(operation)
        valid = {f: BODY_SAMPLES[f] for f in fields}
        for name in fields:
            for value in HOSTILE_VALUES:
                cases.add(Raw(method, target, headers, json.dumps({**valid, name: value}).encode()), field=name)
            missing = {k: v for k, v in valid.items() if k != name}
            cases.add(Raw(method, target, headers, json.dumps(missing).encode()), field=name)
        if fields or method in {"POST", "PUT", "PATCH"}:
            for _label, raw, content_type in HOSTILE_BODIES:
                typed = [("Content-Type", content_type)] if content_type else []
                cases.add(Raw(method, target, [headers[0], *typed], raw))
        body = json.dumps(valid).encode()
        for header in HOSTILE_TOKENS:
            cases.add(Raw(method, target, [(b"Authorization", header), *json_type], body))
        for header in UNPARSEABLE_TOKENS:  # refused by the HTTP parser, in the API's JSON all the same
            cases.add(Raw(method, target, [(b"Authorization", header), *json_type], body), field="headers")
        for host_header in HOSTILE_HOSTS:
            cases.add(Raw(method, target, headers, body, host=host_header), app_reached=False)
        for param in re.findall(r"\{(\w+)\}", path):
            for value in HOSTILE_PATH_VALUES:
                cases.add(Raw(method, concrete(path, **{**paths, param: value}), headers, body), field=param)
        for name in query:
            for value in HOSTILE_QUERY_VALUES:
                params = {**QUERY_SAMPLES, name: value}
                q = "&".join(f"{k}={quote(v, safe='%')}" for k, v in params.items() if k in query)
                cases.add(Raw(method, concrete(path, **paths) + "?" + q, headers[:1], b""), field=name)
    assert await cases.run() > 2000


SIM_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/api/phones"): {"msisdn": "79161234567"},
    ("PATCH", "/api/phones/{msisdn}"): {"power": "on", "inbox_full": False, "unknown_number": False,
                                        "blocked_senders": []},
    ("POST", "/api/phones/{msisdn}/sms"): {"to": "3339", "text": "HELP"},
    ("POST", "/api/phones/{msisdn}/ussd/dial"): {"code": "*100#", "wait": 0},
    ("POST", "/api/phones/{msisdn}/ussd/answer"): {"text": "1", "wait": 0},
    ("POST", "/api/phones/{msisdn}/ussd/cancel"): {},
    ("POST", "/api/clock/advance"): {"seconds": 1},
    ("POST", "/api/clock/reset"): {},
    ("PATCH", "/api/mail/{address}"): {"state": "ok"},
}
SIM_QUERIES = {"/api/phones/{msisdn}/inbox": ("after", "wait"), "/api/phones/{msisdn}/state": ("version", "wait"),
               "/api/phones/{msisdn}/ussd": ("version", "wait"), "/api/mail/{address}": ("after", "wait")}
SIM_PATH_SAMPLES = {"msisdn": "79161234567", "address": "ivan@example.com"}


async def test_the_simulator_api_answers_every_hostile_request_below_500_naming_the_field(stack: Stack) -> None:
    from simulator.http import create_app

    assert stack.smsc is not None
    parts = urlsplit(stack.endpoints["simulator"])
    cases = Checks(parts.hostname or "127.0.0.1", parts.port or 80)
    routes = sorted({(r.method, r.resource.canonical) for r in create_app(stack.smsc).router.routes()
                     if r.resource is not None and r.method != "HEAD" and r.resource.canonical.startswith("/api")}
                    | {("GET", "/api/mail"), ("GET", "/api/mail/{address}"), ("PATCH", "/api/mail/{address}")})
    json_type = [("Content-Type", "application/json")]
    for method, path in routes:
        target = re.sub(r"\{(\w+)\}", lambda m: SIM_PATH_SAMPLES[m.group(1)], path)
        if method in {"POST", "PATCH", "PUT"}:
            valid = SIM_BODIES[(method, path)]
            for name in valid:
                for value in HOSTILE_VALUES:
                    cases.add(Raw(method, target, json_type, json.dumps({**valid, name: value}).encode()), field=name)
            for _label, raw, content_type in HOSTILE_BODIES:
                cases.add(Raw(method, target, [("Content-Type", content_type)] if content_type else [], raw))
        for param in re.findall(r"\{(\w+)\}", path):
            for value in HOSTILE_PATH_VALUES:
                cases.add(Raw(method, re.sub(r"\{" + param + r"\}", quote(value, safe="%"), path), json_type, b"{}"))
        if path.endswith("/events"):
            continue  # a stream that stays open: its parameters are the phone's, checked above
        for name in ("after", "wait", "version", "msisdn"):
            for value in HOSTILE_QUERY_VALUES:
                cases.add(Raw(method, f"{target}?{name}={quote(value, safe='%')}", [], b""),
                          field=name if name in SIM_QUERIES.get(path, ()) else None)
    assert await cases.run() > 500
