"""Logs as an operator follows them: one MO's or one API request's lines tied together by the bound
context, one canonical line each, no MSISDN in clear anywhere (ids and tracebacks included)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from tests.support.platform import extract_password, send_and_wait
from tests.support.selfcare_helpers import IVAN, Api, sms_password
from tests.support.ussd_helpers import dial
from ussdgw import logs
from ussdgw.app.stack import Stack

PHONE = "79161234567"
CLEAR_MSISDN = re.compile(r"(?<!\d)7\d{10}(?!\d)")


@pytest.fixture
def rendered(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    """Logs rendered as the gateway renders them in production (JSON lines); call it for the lines so far."""
    logs.configure("debug", "json", cache=False)

    def lines() -> list[dict[str, Any]]:
        text = capsys.readouterr().err
        found = CLEAR_MSISDN.findall(text)
        assert not found, f"an MSISDN in clear in a rendered line: {found}"
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    try:
        yield lines
    finally:
        structlog.reset_defaults()


def test_msisdns_are_masked_inside_ids_and_tracebacks(rendered: Any) -> None:
    log = structlog.get_logger("test")
    log.info("deliver_retry", mo_id=f"mo-{PHONE}-1-1", attempt=2)
    log.info("n2", mo_id=f"n2pw:3f2a9c:{PHONE}", members=[PHONE, "+79161234568"], to="3339", msisdn=int(PHONE))
    try:
        raise KeyError(f"no subscriber {PHONE}")
    except KeyError:
        log.exception("failed")
    retry, n2, failed = rendered()
    assert retry["mo_id"] == "mo-7916***4567-1-1"
    assert n2["mo_id"] == "n2pw:3f2a9c:7916***4567" and n2["members"] == ["7916***4567", "+7916***4568"]
    assert n2["to"] == "3339" and n2["msisdn"] == "7916***4567"
    assert "no subscriber 7916***4567" in failed["exception"]


def test_a_hex_id_keeps_its_digits(rendered: Any) -> None:
    structlog.get_logger("test").info("mt_sent", mt_id="1234567890ab5f3e", message_id="12345678901234567890123")
    [line] = rendered()
    assert line["mt_id"] == "1234567890ab5f3e" and line["message_id"] == "12345678901234567890123"


async def test_one_mo_is_followed_by_its_context_to_one_canonical_line(stack: Stack, rendered: Any) -> None:
    [reply] = await send_and_wait(stack, PHONE, "3339", "ПАРОЛЬ")
    lines = rendered()
    [handled] = [line for line in lines if line["event"] == "mo_handled"]
    assert handled["msisdn"] == "7916***4567" and handled["channel"] == "sms" and handled["bind"] == "bind-1"
    assert handled["to"] == "3339" and handled["handler"] and handled["status"] == "ROK" and handled["ms"] >= 0
    mo_id = handled["mo_id"]
    [issued] = [line for line in lines if line["event"] == "password_issued"]  # logged by the handler
    assert issued["mo_id"] == mo_id and issued["bind"] == "bind-1"
    assert extract_password(reply.text) not in json.dumps(lines, ensure_ascii=False)


async def test_each_ussd_step_has_its_canonical_line(stack: Stack, rendered: Any) -> None:
    assert stack.handsets is not None
    await dial(stack, PHONE, "*100#")
    [handled] = [line for line in rendered() if line["event"] == "mo_handled"]
    assert handled["channel"] == "ussd" and handled["ussd_op"] == 1 and handled["msisdn"] == "7916***4567"


async def test_an_api_request_is_one_canonical_line_with_its_request_id(stack: Stack, api: Api,
                                                                        rendered: Any) -> None:
    password = await sms_password(stack, IVAN)
    rendered()  # the seeding's and the SMS's lines
    status, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password},
                                  headers={"X-Request-Id": "req-42"})
    assert status == 201
    lines = rendered()
    [request] = [line for line in lines if line["event"] == "api_request"]
    assert request["request_id"] == "req-42" and request["method"] == "POST" and request["status"] == 201
    assert request["route"].endswith("/sessions") and request["ms"] >= 0
    [inside] = [line for line in lines if line["event"] == "signed_in"]  # logged by the business function
    assert inside["request_id"] == "req-42" and inside["route"] == request["route"]
    assert password not in json.dumps(lines) and body["data"]["token"] not in json.dumps(lines)


async def test_an_api_request_without_an_id_gets_one_back(stack: Stack, api: Api) -> None:
    async with api.http.get(f"{stack.endpoints['selfcare']}/tariffs") as response:
        request_id = response.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{16}", request_id)


def test_a_terminal_gets_readable_lines(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "console", cache=False)
    try:
        structlog.get_logger("test").info("mo_handled", msisdn=PHONE, handler="issue_password")
    finally:
        structlog.reset_defaults()
    [line] = capsys.readouterr().err.splitlines()
    assert not line.startswith("{") and "mo_handled" in line and "msisdn=7916***4567" in line


def test_json_lines_are_rendered_by_orjson() -> None:
    pytest.importorskip("orjson")
    renderer = logs.json_renderer()
    line = renderer(None, "info", {"event": "mo_handled", "text": "Пароль", "at": object.__new__(object)})
    assert line.startswith('{"event":"mo_handled","text":"Пароль"')  # compact, UTF-8 as is
