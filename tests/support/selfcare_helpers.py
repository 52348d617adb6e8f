"""Helpers for the self-care tests: an HTTP client that checks every exchange against
gateway/openapi.yaml (openapi-core), and subscribers seeded the way `ussdgw seed` does."""

from __future__ import annotations

import asyncio
import functools
import json
import re
from datetime import date, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

from sms_codes import OPERATOR_TZ, generate_password, hash_password
from tests.support.platform import send_and_wait
from ussdgw.app.seed import seed_subscribers
from ussdgw.app.stack import Stack
from ussdgw.store import AuditEvent

SPEC_PATH = Path(__file__).resolve().parents[2] / "gateway" / "openapi.yaml"
PASSWORD = re.compile(r"Личный кабинет: (\S+)")
CODE = re.compile(r"код[^:]*: (\d{6})", re.IGNORECASE)

IVAN, IVAN2, MARIA, CORP = "79161234567", "79161234568", "79261112233", "79031112233"
PEOPLE: list[dict[str, Any]] = [
    {"msisdn": IVAN, "owner": {"id": "p-1001", "name": "Иван Петров", "passport": "4510 123456",
                               "contract": "D-2021-0001"}, "region": "77", "balance": 250, "tariff": "smart",
     "code_word": "сирень", "email": "ivan@example.com"},
    {"msisdn": IVAN2, "owner": {"id": "p-1001", "name": "Иван Петров", "passport": "4510 123456",
                                "contract": "D-2021-0002"}, "region": "77", "balance": 15.5, "tariff": "basic",
     "email": "ivan@example.com"},
    {"msisdn": MARIA, "owner": {"id": "p-2002", "name": "Мария Смирнова", "passport": "4612 654321",
                                "contract": "D-2022-0107"}, "region": "50", "balance": 0, "tariff": "basic",
     "code_word": "ромашка", "email": "maria@example.com"},
    {"msisdn": CORP, "owner": {"id": "c-3003", "name": "ООО Ромашка", "contract": "K-2020-0042"}, "region": "77",
     "corporate": True, "balance": 1200, "tariff": "business", "email": "it@romashka.example"},
]


@functools.cache
def spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


class Api:
    """The self-care API of a running stack; every request and response is checked against the spec."""

    def __init__(self, base: str, http: aiohttp.ClientSession) -> None:
        parts = urlsplit(base)
        self.host = f"{parts.scheme}://{parts.netloc}"
        self.prefix = parts.path.rstrip("/")
        self.http = http

    async def call(self, method: str, path: str, *, body: Any = None, token: str | None = None,
                   headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                   raw: bytes | None = None, validate_request: bool = True) -> tuple[int, dict[str, Any]]:
        status, payload, _ = await self.exchange(method, path, body=body, token=token, headers=headers,
                                                 params=params, raw=raw, validate_request=validate_request)
        return status, payload

    async def exchange(self, method: str, path: str, *, body: Any = None, token: str | None = None,
                       headers: dict[str, str] | None = None, params: dict[str, str] | None = None,
                       raw: bytes | None = None, validate_request: bool = True,
                       ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """`call`, with the response's headers too."""
        sent_headers = dict(headers or {})
        if token is not None:
            sent_headers["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            sent_headers.setdefault("Content-Type", "application/json")
        url = f"{self.host}{self.prefix}{path}"
        async with self.http.request(method, url, data=data, headers=sent_headers, params=params) as response:
            payload = await response.read()
            status = response.status
            received = dict(response.headers)
            content_type = response.headers.get("Content-Type", "").split(";")[0]
        request = MockRequest(self.host, method.lower(), f"{self.prefix}{path}", args=params or {},
                              headers=sent_headers, data=data)
        if validate_request:
            spec().validate_request(request)
        spec().validate_response(request, MockResponse(payload, status_code=status, content_type=content_type,
                                                        headers=received))
        return status, json.loads(payload), received


def operator_today(stack: Stack) -> date:
    """Today where the operator is (Moscow), on the platform's clock: what N3 block dates and call
    detail periods are checked against (the host's `date.today()` is yesterday there after 21:00 UTC)."""
    return datetime.fromtimestamp(stack.clock.now(), OPERATOR_TZ).date()


async def seed(stack: Stack, people: list[dict[str, Any]] | None = None) -> None:
    assert stack.store is not None
    await seed_subscribers(stack.store, people or PEOPLE)


async def seed_with_passwords(stack: Stack, msisdns: list[str]) -> dict[str, str]:
    """Subscribers with passwords the test knows, hashed here (not on the platform's costly pool),
    without an SMS: for tests that must not wait on the gateway."""
    assert stack.store is not None
    passwords = {m: generate_password() for m in msisdns}
    hashes = await asyncio.gather(*(asyncio.to_thread(hash_password, p) for p in passwords.values()))
    for (msisdn, _), pw_hash in zip(passwords.items(), hashes, strict=True):
        await stack.store.subscribers.put(msisdn, {"owner_id": f"p-{msisdn}", "region": "77", "pw_hash": pw_hash},
                                          AuditEvent("seeded", "admin"))
    return passwords


def extract_password(text: str) -> str:
    match = PASSWORD.search(text)
    assert match, text
    return match.group(1)


def extract_code(text: str) -> str:
    match = CODE.search(text)
    assert match, text
    return match.group(1)


async def sms_password(stack: Stack, msisdn: str) -> str:
    [reply] = await send_and_wait(stack, msisdn, "3339", "ПАРОЛЬ")
    return extract_password(reply.text)


async def signed_in(stack: Stack, api: Api, msisdn: str) -> str:
    """A password by SMS (R1) over the real channel, then a session with it; returns the token."""
    password = await sms_password(stack, msisdn)
    status, body = await api.call("POST", "/sessions", body={"msisdn": msisdn, "password": password})
    assert status == 201, body
    token: str = body["data"]["token"]
    return token


async def wait_sms(stack: Stack, msisdn: str, sender: str, after: int, timeout: float = 10) -> str:
    """The next SMS from `sender` in the phone's inbox after seq `after`."""
    assert stack.smsc is not None
    phones = stack.smsc.phones
    while True:
        fresh = await phones.wait_inbox(msisdn, after, timeout)
        assert fresh, f"no SMS for {msisdn} within {timeout} s"
        for message in fresh:
            after = max(after, message.seq)
            if message.sender == sender:
                return message.text
