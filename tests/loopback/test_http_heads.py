"""Requests that are not HTTP, or not HTTP enough for the parser: a garbage or TLS request line,
a broken header, a header or URL too long, a bad Content-Length, a broken chunked body. Both HTTP
servers (the self-care API and the simulator's) answer each with their own JSON 4xx naming the
part at fault, close the connection, log one line without a traceback, and go on serving."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from ussdgw.app.stack import Stack

HEAD = b"Host: 127.0.0.1\r\n"
CASES: list[tuple[str, bytes, int, str]] = [
    ("garbage", b"GARBAGE\r\n\r\n", 400, "request line"),
    ("tls hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40, 400, "request line"),
    ("HTTP/9.9", b"GET / HTTP/9.9\r\n" + HEAD + b"\r\n", 400, "request line"),
    ("NUL in the target", b"GET /\x00 HTTP/1.1\r\n" + HEAD + b"\r\n", 400, "request line"),
    ("URL of 10 kB", b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\n" + HEAD + b"\r\n", 414, "request line"),
    ("header without a colon", b"GET / HTTP/1.1\r\n" + HEAD + b"Bad Header Line\r\n\r\n", 400, "headers"),
    ("header of 10 kB", b"GET / HTTP/1.1\r\n" + HEAD + b"X-A: " + b"a" * 10_000 + b"\r\n\r\n", 431, "headers"),
    ("control bytes in a header", b"GET / HTTP/1.1\r\n" + HEAD + b"Authorization: Bearer \x7f\x01\r\n\r\n", 400,
     "headers"),
    ("Content-Length abc", b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Length: abc\r\n\r\n", 400, "headers"),
    ("broken chunk", b"POST /x HTTP/1.1\r\n" + HEAD + b"Content-Type: application/json\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400, "body"),
]


async def exchange(stack: Stack, server: str, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(stack.endpoints[server])
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(5):
            data = await reader.read(-1)  # the server closes the connection after the answer
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body


@pytest.mark.parametrize("server", ["selfcare", "simulator"])
@pytest.mark.parametrize(("name", "raw", "status", "part"), CASES, ids=[c[0] for c in CASES])
async def test_an_unparseable_request_gets_json_naming_the_part(stack: Stack, server: str, name: str, raw: bytes,
                                                                 status: int, part: str) -> None:
    with capture_logs() as logged:
        got, headers, body = await exchange(stack, server, raw)
    assert got == status, (name, body)
    assert headers["content-type"].startswith("application/json"), headers
    answer = json.loads(body)
    named = answer["details"]["field"] if server == "selfcare" else answer["field"]
    assert named == part and answer["error"], answer
    refused = [e for e in logged if e["event"] == "http_request_unparsed"]
    assert [(e["status"], e["part"]) for e in refused] == [(status, part)]
    assert not any("exc_info" in e or e.get("log_level") == "error" for e in logged), logged
    health = "/api/v1/health" if server == "selfcare" else "/api/health"
    ok, _, _ = await exchange(stack, server, f"GET {health} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                              .encode())
    assert ok == 200
