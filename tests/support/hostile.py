"""A raw HTTP/1.1 client for hostile requests: any bytes in the request line, headers and body
(what aiohttp's client refuses to send), one connection per request."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

DEEP = 5000  # nesting levels of the deep JSON bodies


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    request: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def is_json(self) -> bool:
        return self.headers.get("content-type", "").startswith("application/json")


@dataclass
class Raw:
    """One request, byte for byte."""

    method: str
    target: bytes | str
    headers: list[tuple[bytes | str, bytes | str]] = field(default_factory=list)
    body: bytes = b""
    host: bytes | str | None = None  # None: the server's address

    def encode(self, host: str, port: int) -> bytes:
        def b(value: bytes | str) -> bytes:
            return value if isinstance(value, bytes) else value.encode()

        lines = [b(self.method) + b" " + b(self.target) + b" HTTP/1.1",
                 b"Host: " + (b(self.host) if self.host is not None else f"{host}:{port}".encode()),
                 b"Connection: close", b"Content-Length: " + str(len(self.body)).encode()]
        lines += [b(k) + b": " + b(v) for k, v in self.headers]
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


async def send(host: str, port: int, request: Raw, *, timeout: float = 10.0) -> Answer:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request.encode(host, port))
        await writer.drain()
        async with asyncio.timeout(timeout):
            raw = await reader.read(-1)
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _unchunk(body)
    return Answer(status, headers, body, f"{request.method} {request.target!r}")


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2:]
    return out


HOSTILE_VALUES: list[Any] = [
    None, True, -1, 1.5, 10**30, [], {}, [1, 2], {"a": 1},
    "", " ", "\x00", "１２３４５", "٣٣٣٣٣٣", "７９１６１２３４５６７", "9" * 5000, "a" * 2000,
    "key=value other=1", "\ud800",
]
"""What a field gets instead of what it should: wrong JSON types, huge and negative numbers,
Unicode digits (fullwidth, Arabic-Indic), long strings, control characters, a lone surrogate."""

HOSTILE_BODIES: list[tuple[str, bytes, str]] = [
    ("empty", b"", "application/json"),
    ("not json", b"hello", "application/json"),
    ("invalid utf-8", b'{"msisdn": "\xff\xfe"}', "application/json"),
    ("deep array", b"[" * DEEP + b"]" * DEEP, "application/json"),
    ("deep object", b'{"a":' * DEEP + b"1" + b"}" * DEEP, "application/json"),
    ("deep unclosed", b"[" * DEEP, "application/json"),
    ("array", b"[]", "application/json"),
    ("string", b'"x"', "application/json"),
    ("null", b"null", "application/json"),
    ("NaN", b'{"amount_kop": NaN}', "application/json"),
    ("huge exponent", b'{"amount_kop": 1e999999}', "application/json"),
    ("5000-digit number", b'{"amount_kop": ' + b"9" * 5000 + b"}", "application/json"),
    ("4000-digit number", b'{"amount_kop": ' + b"9" * 4000 + b', "points": ' + b"9" * 4000 + b"}",
     "application/json"),
    ("text/plain", b'{"msisdn": "79161234567"}', "text/plain"),
    ("form", b"msisdn=79161234567", "application/x-www-form-urlencoded"),
    ("multipart", b"--x\r\n\r\n--x--", "multipart/form-data; boundary=x"),
    ("charset foo-bar", b'{"msisdn": "79161234567"}', "application/json; charset=foo-bar"),
    ("charset latin-1", '{"msisdn": "é"}'.encode("latin-1"), "application/json; charset=latin-1"),
    ("charset utf-16", '{"msisdn": "1"}'.encode("utf-16"), "application/json; charset=utf-16"),
    ("no content type", b'{"msisdn": "79161234567"}', ""),
    ("huge", b'{"x": "' + b"a" * 300_000 + b'"}', "application/json"),
]
"""Whole bodies: not JSON, JSON too deep, numbers no machine word holds, wrong media types and
charsets, no media type at all, and one far past any limit."""

HOSTILE_TOKENS: list[bytes] = [
    b"Bearer \xff\xfe\xfd", b"Bearer \xc3\x28", b"Bearer " + "токен".encode(), b"Bearer", b"Basic YWxhZGRpbjo=",
    b"Bearer " + b"a" * 4000, b"bearer  x  y", b"Bearer ../../etc",
]
"""Authorization headers: not UTF-8, not ASCII, no token, another scheme, very long, odd spacing."""

UNPARSEABLE_TOKENS: list[bytes] = [b"Bearer \x7f\x01", b"Bearer \x00"]
"""Header values that are not HTTP at all: aiohttp's parser refuses them (400) before any application,
in the server's JSON (`ussdgw.web`)."""

HOSTILE_HOSTS: list[bytes] = [b"evil.example", b"\xff\xfe", b"", b"127.0.0.1:1", b"localhost.evil.example",
                              b"[::1", b"a" * 1000]
