"""What both HTTP servers (the self-care API and the simulator's) share, so that nothing a client
sends reaches a 500 and no client holds a server: one reader of JSON bodies, one check of declared
fields, one Host check, and `serve` (connection limits and deadlines, `ussdgw.connections`).

The readers raise `BadInput` (status, the field it concerns, a message); each server turns it into
its own error body. A body is read only as `application/json` in UTF-8 (415 otherwise), within a
size (413) and a deadline (408), no deeper than `MAX_DEPTH` (before `json` recurses into it), with
no NaN/Infinity and no lone surrogates (which no encoder downstream could write).
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import http_exceptions, web
from aiohttp.web_protocol import RequestHandler

from ussdgw.connections import ConnectionLimits, Gate, GuardedProtocol
from ussdgw.logs import get_logger

log = get_logger("ussdgw.web")

BROWSER_DIR = Path(__file__).parent / "browser"
"""Scripts both web pages load (the cabinet's and the web phone's), each served by its page's server at
`/static/<name>` next to the page's own script: one source, two applications."""
BROWSER_SCRIPTS = ("dom.js",)

MAX_DEPTH = 16
"""JSON nesting deeper than this is refused unread; no request of ours nests past 3."""

MAX_STRING = 256
"""A string field longer than this is refused unless its declaration allows more."""

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str, "object": dict, "array": list, "boolean": bool, "number": (int, float), "integer": int}


class BadInput(Exception):
    """A request refused before any work: `status` (400, 408, 413, 415), the `field` it concerns
    ("body", "Content-Type", a field name), and a message for the client."""

    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(message)
        self.status, self.field, self.message = status, field, message


def json_depth(text: str) -> int:
    """How deep the arrays and objects of `text` nest (strings skipped); linear, no recursion."""
    depth = deepest = 0
    for bracket in _NOT_BRACKETS.sub("", _STRINGS.sub('""', text)):
        depth += 1 if bracket in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """`raw` as a JSON object, or `BadInput(400, "body", ...)`."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(400, "body", "the body is not UTF-8") from None
    if json_depth(text) > MAX_DEPTH:
        raise BadInput(400, "body", f"JSON nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(text, parse_constant=_no_constants)
    except (ValueError, RecursionError):
        raise BadInput(400, "body", "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadInput(400, "body", "the body must be a JSON object")
    for name, value in data.items():
        if _has_surrogate(name) or _has_surrogate(value):
            raise BadInput(400, name if not _has_surrogate(name) else "body", "a string is not valid Unicode")
    return data


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return _SURROGATE.search(value) is not None
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_surrogate(v) for v in value)
    return False


def check_content_type(request: web.BaseRequest) -> None:
    """Only `application/json`, in UTF-8 if a charset is named (415 otherwise)."""
    if request.content_type != "application/json":
        raise BadInput(415, "Content-Type", "the body must be application/json")
    charset = (request.charset or "utf-8").lower()
    if charset not in ("utf-8", "utf8"):
        raise BadInput(415, "Content-Type", "the body must be UTF-8 (charset=utf-8)")


async def read_json_object(request: web.BaseRequest, *, max_bytes: int, timeout_s: float,
                           optional: bool = False) -> dict[str, Any]:
    """The request's body as a JSON object. `optional`: no body at all gives {}."""
    if optional and not request.body_exists:
        return {}
    check_content_type(request)
    if request.content_length is not None and request.content_length > max_bytes:
        raise BadInput(413, "body", f"the body is larger than {max_bytes} bytes")
    try:
        async with asyncio.timeout(timeout_s):
            raw = await request.content.read(max_bytes + 1)
            while len(raw) <= max_bytes and not request.content.at_eof():
                more = await request.content.read(max_bytes + 1 - len(raw))
                if not more:
                    break
                raw += more
    except TimeoutError:
        raise BadInput(408, "body", f"the body did not arrive within {timeout_s:g} s") from None
    if len(raw) > max_bytes:
        raise BadInput(413, "body", f"the body is larger than {max_bytes} bytes")
    return parse_json_object(raw)


@dataclass(frozen=True, slots=True)
class Field:
    """One declared field of a body: its JSON type (None: any scalar), whether it must be there,
    its longest string, its allowed values."""

    name: str
    type: str | None = None
    required: bool = False
    max_length: int = MAX_STRING
    enum: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class BodySchema:
    fields: tuple[Field, ...] = field(default_factory=tuple)

    @classmethod
    def from_openapi(cls, schema: Mapping[str, Any]) -> BodySchema:
        """The top-level fields of an OpenAPI object schema (type, required, maxLength, enum)."""
        required = set(schema.get("required", ()))
        return cls(tuple(
            Field(name, spec.get("type"), name in required, int(spec.get("maxLength", MAX_STRING)),
                  tuple(spec.get("enum", ())))
            for name, spec in schema.get("properties", {}).items()))

    def check(self, body: Mapping[str, Any]) -> None:
        """Each declared field of `body` is of its type, within its length, one of its values;
        `BadInput(400, name, ...)` for the first that is not."""
        for f in self.fields:
            if f.name not in body:
                if f.required:
                    raise BadInput(400, f.name, f"{f.name} is required")
                continue
            value = body[f.name]
            check_value(f, value)


def check_value(f: Field, value: Any) -> None:
    if f.type is None:
        if isinstance(value, dict | list):
            raise BadInput(400, f.name, f"{f.name} must be a string or a number")
        return
    expected = _JSON_TYPES.get(f.type, object)
    if not isinstance(value, expected) or (f.type in ("integer", "number") and isinstance(value, bool)):
        raise BadInput(400, f.name, f"{f.name} must be of type {f.type}")
    if isinstance(value, str):
        if len(value) > f.max_length:
            raise BadInput(400, f.name, f"{f.name} is longer than {f.max_length} characters")
        if _CONTROL.search(value):
            raise BadInput(400, f.name, f"{f.name} contains control characters")
    if f.enum and value not in f.enum:
        raise BadInput(400, f.name, f"{f.name} must be one of {list(f.enum)}")


# ---- Host ----------------------------------------------------------------------------------------
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def host_allowed(host_header: str | None, allowed: Iterable[str]) -> bool:
    """Is the Host header (port dropped) a loopback name or address, or one of `allowed`?

    What a page from another site cannot do: a DNS-rebound name still arrives here as that name."""
    if not host_header:
        return False
    host = host_header.strip()
    if host.startswith("["):
        if "]" not in host:
            return False
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    host = host.rstrip(".").lower()
    if host in LOOPBACK_NAMES or host in {a.lower() for a in allowed if a}:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# ---- who the client is -------------------------------------------------------------------------
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MAX_FORWARDED_HOPS = 16
"""X-Forwarded-For hops looked at, from the nearest; a longer chain is cut (no proxy chain is that long)."""


@functools.lru_cache(maxsize=16)
def networks(text: str) -> tuple[Network, ...]:
    """Comma-separated addresses or CIDRs (the settings check them when they are loaded)."""
    return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in text.split(",") if c.strip())


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:port
        text = text[1:text.index("]")]
    elif text.count(":") == 1:  # 192.0.2.1:port
        text = text.split(":")[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def client_address(peer: str | None, forwarded_for: Iterable[str], proxies: tuple[Network, ...]) -> str | None:
    """The client's address: the connection's (`peer`), unless that is one of `proxies`; then the
    nearest X-Forwarded-For hop that is not a proxy (each proxy appends the address it was reached
    from, so what lies further left is the client's word: believed only through proxies). A hop
    that is not an address stops the walk at the last address known."""
    found = _address(peer) if peer else None
    if found is None or not any(found in n for n in proxies):
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    address = str(found)
    for hop in reversed(hops[-MAX_FORWARDED_HOPS:]):
        parsed = _address(hop)
        if parsed is None:
            return address
        address = str(parsed)
        if not any(parsed in n for n in proxies):
            return address
    return address


CONNECTION_LIMITS_KEY = web.AppKey("connection_limits", ConnectionLimits)
"""The limits an app is served with (its readers take `body_timeout_s` from here)."""


def body_timeout(request: web.BaseRequest, default: float = 10.0) -> float:
    limits = request.app.get(CONNECTION_LIMITS_KEY) if isinstance(request, web.Request) else None
    return limits.body_timeout_s if limits is not None else default


# ---- serving with connection limits ------------------------------------------------------------
_BUSY_BODY = json.dumps({"error": "unavailable", "message": "Сервер перегружен: слишком много соединений. "
                         "Повторите через секунду.", "details": {}}, ensure_ascii=False).encode()
HTTP_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
             b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
             + _BUSY_BODY)
"""What a connection over the server's limit gets before it is closed (written before its request is read)."""


Refusal = Callable[[int, str], bytes]
"""A server's JSON error body for a request refused before its application saw it: (status, what
was at fault: "request line", "headers" or "body")."""


def api_refusal(status: int, part: str) -> bytes:
    """The self-care API's error body (`{"error", "message", "details": {"field"}}`)."""
    code = {414: "too_large", 431: "too_large"}.get(status, "bad_request")
    text = {414: "Слишком длинный адрес запроса.", 431: "Слишком большие заголовки запроса."}.get(
        status, f"Запрос не разобран: ошибка в {_PARTS_RU.get(part, 'запросе')}.")
    return json.dumps({"error": code, "message": text, "details": {"field": part}}, ensure_ascii=False).encode()


_PARTS_RU = {"request line": "строке запроса", "headers": "заголовках", "body": "теле запроса"}


def _fault(exc: BaseException | None, status: int) -> tuple[int, str]:
    """(status, part) for what aiohttp's parser refused."""
    if isinstance(exc, http_exceptions.LineTooLong):  # its first argument: the start of the line
        first = exc.args[0] if exc.args else b""
        start = first.encode() if isinstance(first, str) else bytes(first) if isinstance(first, bytes | bytearray) \
            else b""
        return (414, "request line") if start.startswith((b"/", b"*", b"http:", b"https:")) else (431, "headers")
    if isinstance(exc, http_exceptions.BadStatusLine | http_exceptions.InvalidURLError):
        return status, "request line"
    if isinstance(exc, http_exceptions.PayloadEncodingError) or "chunk" in str(exc).lower():
        return status, "body"
    return status, "headers"


def _json_errors(refusal: Refusal) -> type[RequestHandler]:
    """aiohttp's connection handler, with the errors it answers itself (a request head it cannot
    parse, a broken chunked body) in the server's JSON instead of plain text, and logged as one
    line: a stranger's junk is no traceback. A 500 from here would be a bug: logged in full."""

    class JsonErrors(RequestHandler):
        __slots__ = ()

        def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                         message: str | None = None) -> web.StreamResponse:
            if status >= 500:
                super().handle_error(request, status, exc, message)  # logs it; the body is ours
                status, part = 500, "request"
            else:
                status, part = _fault(exc, status)
                log.info("http_request_unparsed", status=status, part=part, reason=type(exc).__name__,
                         peer=request.remote)
            if request.writer.output_size > 0:
                raise ConnectionError("a response is on its way already: no room for the error")
            response = web.Response(status=status, body=refusal(status, part), content_type="application/json",
                                    charset="utf-8")
            response.force_close()
            return response

    return JsonErrors


class _GuardedSite(web.TCPSite):
    """A TCP site whose connections pass a `Gate` and must send their first request head in time,
    and whose unparseable requests get the server's JSON."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, *, gate: Gate, head_timeout_s: float,
                 refusal: Refusal) -> None:
        super().__init__(runner, host, port)
        self.gate, self.head_timeout_s = gate, head_timeout_s
        self.handler_class = _json_errors(refusal)

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner (what TCPSite.start does first)
        server = self._runner.server
        assert server is not None
        gate, head_timeout_s, handler_class = self.gate, self.head_timeout_s, self.handler_class

        def handler() -> RequestHandler:
            made = server()
            made.__class__ = handler_class  # the same slots: only `handle_error` differs
            return made

        def guarded() -> GuardedProtocol:
            return GuardedProtocol(handler, gate, refusal=HTTP_BUSY, head_end=b"\r\n\r\n",
                                   head_timeout_s=head_timeout_s)

        self._server = await asyncio.get_running_loop().create_server(guarded, self._host, self._port,
                                                                       backlog=self._backlog)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


async def serve(app: web.Application, host: str, port: int, limits: ConnectionLimits, *, name: str,
                shutdown_timeout: float = 60.0, refusal: Refusal = api_refusal) -> tuple[web.AppRunner, str, Gate]:
    """Serve `app` on host:port within `limits`: at most `max_connections` (the next gets 503),
    the first request head within `idle_timeout_s` of connecting, and (aiohttp's keep-alive) no
    connection idle or part-way through a later head for longer. Returns the runner (its `cleanup`
    stops serving), the URL, and the gate (for its counts)."""
    # lingering_time: how long aiohttp still reads a body the handler did not (a 408's) before closing
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout,
                           keepalive_timeout=limits.idle_timeout_s, lingering_time=limits.body_timeout_s)
    await runner.setup()
    gate = Gate(name, limits.max_connections)
    site = _GuardedSite(runner, host, port, gate=gate, head_timeout_s=limits.idle_timeout_s, refusal=refusal)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[-1]
    return runner, f"http://{bound[0]}:{bound[1]}", gate
