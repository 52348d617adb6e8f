"""structlog set-up: one event per thing that happened, MSISDNs masked, secrets and bodies dropped.

Readable lines on a terminal, JSON lines otherwise (orjson when installed: the gateway logs
several lines per MO). Context is bound per unit of work with `bind_context`/`unbind_context`
or `bound_context(mo_id=..., msisdn=mask_msisdn(...))`: every line logged while an MO or an API
request is handled carries it, and each ends with one canonical line (`mo_handled`,
`api_request`) that has the whole story. The context is one variable holding a dict: binding
three keys is one `set` (structlog.contextvars makes three), and a line merges one dict instead
of walking a copy of the whole context.

MSISDNs are masked everywhere: exactly under the keys that hold one, and as any 10-15 digit run
standing alone (between non-alphanumerics) in any other string, an id like `mo-79161234567-1-1`
or an exception's text included.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator, MutableMapping
from contextvars import ContextVar, Token
from typing import Any

import structlog

try:
    import orjson
except ImportError:  # pragma: no cover - a dependency; the standard library is the fallback
    orjson = None  # type: ignore[assignment]

MSISDN_KEYS = frozenset({"msisdn", "source_addr", "destination_addr", "to", "sender", "recipient", "phone"})
SECRET_KEYS = frozenset({"password", "text", "short_message", "code", "pw_hash", "secret_key", "token"})
# 10 to 15 digits not part of a longer word (a hex digest's digits run into its letters): kept are
# the first four and the last four, as mask_msisdn does.
_DIGIT_RUN = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{2,7}(\d{4})(?![0-9A-Za-z])")


_BOUND: ContextVar[dict[str, Any]] = ContextVar("ussdgw_log_context", default={})  # noqa: B039 - never mutated


def bind_context(**values: Any) -> Token[dict[str, Any]]:
    """Add `values` to the context of every line logged from here on in this task; `unbind_context` undoes it."""
    return _BOUND.set({**_BOUND.get(), **values})


def unbind_context(token: Token[dict[str, Any]]) -> None:
    """Back to the context as it was before the `bind_context` that gave `token`."""
    _BOUND.reset(token)


@contextlib.contextmanager
def bound_context(**values: Any) -> Iterator[None]:
    """`values` in the context of every line logged inside the block."""
    token = bind_context(**values)
    try:
        yield
    finally:
        _BOUND.reset(token)


def merge_bound(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """The processor: the bound context into the event (a key the call itself gives wins)."""
    context = _BOUND.get()
    if context:
        for key, value in context.items():
            event.setdefault(key, value)
    return event


def mask_msisdn(value: str) -> str:
    """79161234567 -> 7916***4567: enough to tell numbers apart in a log, not enough to dial."""
    if len(value) <= 6 or not value.isdigit():
        return mask_digits(value)
    return f"{value[:4]}***{value[-4:]}"


def mask_digits(value: str) -> str:
    """Every MSISDN-looking digit run in a text masked: `mo-79161234567-1` -> `mo-7916***4567-1`."""
    # Checked cheapest first: too short for a run, no digit at all, one word of ASCII letters and
    # digits (a hex id: a run inside it does not stand alone), a value masked before (event names,
    # short codes, binds, masked numbers: lines repeat them). Only then the regex, and the
    # substitution (a template expanded per call, several times the cost) only when it matched.
    if len(value) < 10 or value.isalpha():
        return value
    masked = _MASKED.get(value)
    if masked is not None:
        return masked
    if value.isascii() and value.isalnum() and not value.isdigit():
        return value
    masked = value if _DIGIT_RUN.search(value) is None else _DIGIT_RUN.sub(_keep_ends, value)
    if len(value) <= _MASKED_LONGEST:
        if len(_MASKED) >= _MASKED_MOST:
            _MASKED.clear()
        _MASKED[value] = masked
    return masked


# Short values already masked, by their text as given: a bounded memo, emptied when full.
_MASKED: dict[str, str] = {}
_MASKED_MOST = 4096
_MASKED_LONGEST = 64


def _keep_ends(match: re.Match[str]) -> str:
    return f"{match[1]}***{match[2]}"


def _masked(value: Any) -> Any:
    if type(value) is str:
        return mask_digits(value)
    if isinstance(value, int | float | bool | None):
        return value
    if isinstance(value, list | tuple):
        return type(value)(_masked(item) for item in value)
    if isinstance(value, dict):
        return {k: "[redacted]" if k in SECRET_KEYS else _masked(v) for k, v in value.items()}
    return value


# Keys whose values the logging set-up writes itself: nothing of a subscriber's in them.
_OURS = frozenset({"level", "timestamp", "logger"})


# What `redact` does under each key it knows; any other key's value is searched for digit runs.
_KEEP, _SECRET, _NUMBER = 0, 1, 2
_KEY_RULE = {**dict.fromkeys(_OURS, _KEEP), **dict.fromkeys(SECRET_KEYS, _SECRET),
             **dict.fromkeys(MSISDN_KEYS, _NUMBER)}
# Values with nothing inside to mask.
_SCALARS = frozenset({int, float, bool, type(None)})


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Secrets out, MSISDNs masked: under their keys, and inside any other value."""
    for key, value in event.items():
        rule = _KEY_RULE.get(key)
        if rule is None:
            if type(value) is str:
                if len(value) >= 10:
                    event[key] = mask_digits(value)
            elif type(value) not in _SCALARS:
                event[key] = _masked(value)
        elif rule == _SECRET:
            event[key] = "[redacted]"
        elif rule == _NUMBER:
            if isinstance(value, str):
                event[key] = mask_msisdn(value)
            elif type(value) is int and value > 999_999:
                event[key] = mask_msisdn(str(value))
            else:
                event[key] = _masked(value)
    return event


class _CurrentStderr:
    """Writes to whatever sys.stderr is now: cached loggers outlive a replaced stream (tests, daemons)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def _orjson_dumps(value: Any, default: Callable[[Any], Any] | None = None, **_: Any) -> str:
    assert orjson is not None
    return orjson.dumps(value, default=default, option=orjson.OPT_NON_STR_KEYS).decode()


def json_renderer() -> structlog.processors.JSONRenderer:
    """structlog's JSON renderer, serialised by orjson when it is installed (several times faster)."""
    if orjson is not None:
        return structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    return structlog.processors.JSONRenderer(serializer=json.dumps, ensure_ascii=False)


_FORMAT_EXC = structlog.processors.format_exc_info
_LEVEL_OF = {"exception": "error", "warn": "warning"}


class _UtcStamp:
    """The instant as structlog's `TimeStamper(fmt="iso", utc=True)` writes it
    (`2026-12-01T02:15:03.590232Z`, no fraction on a whole second), from the system clock as it
    reads it (microseconds, rounded down), with the date and time of day formatted once a second.
    The second and its text are swapped as one tuple: a thread logging meanwhile sees both or neither."""

    __slots__ = ("second",)

    def __init__(self) -> None:
        self.second: tuple[int, str] = (-1, "")

    def __call__(self) -> str:
        second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        known, prefix = self.second
        if second != known:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self.second = (second, prefix)
        return f"{prefix}.{micro:06d}Z" if micro else f"{prefix}Z"


_utc_stamp = _UtcStamp()


def json_line(logger: Any, method_name: str, event: MutableMapping[str, Any]) -> str:
    """The whole JSON set-up in one processor (bound context, level, UTC instant, traceback,
    redaction, orjson): one call per line instead of six, the gateway writes one per MO."""
    context = _BOUND.get()
    if context:
        for key, value in context.items():
            event.setdefault(key, value)
    event["level"] = _LEVEL_OF.get(method_name, method_name)
    event["timestamp"] = _utc_stamp()
    if "exc_info" in event:
        _FORMAT_EXC(logger, method_name, event)  # before redact: a traceback's text is masked too
    redact(logger, method_name, event)
    return _render_json(logger, method_name, event)  # type: ignore[return-value]


_render_json = json_renderer()


def wants_console(fmt: str = "auto") -> bool:
    """Readable lines for a person at a terminal; JSON lines for files, pipes and collectors."""
    return fmt == "console" or (fmt == "auto" and sys.stderr.isatty())


def configure(level: str = "info", fmt: str = "auto", *, cache: bool = True) -> None:
    """`fmt`: "auto" (console on a terminal, else JSON), "console" or "json"."""
    global _cache_loggers
    _cache_loggers = cache
    console = wants_console(fmt)
    processors: list[Any] = [
        merge_bound,
        structlog.processors.add_log_level,
        # a person reads the local time of day; a collector gets the full instant in UTC
        structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False),
        structlog.processors.format_exc_info,  # before redact: a traceback's text is masked too
        redact,
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()),
    ] if console else [json_line]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One write of the line and its newline, then a flush (print writes them apart).
        logger_factory=structlog.WriteLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
    for logger in _module_loggers:  # each points at the logger this configuration makes
        logger.point()


_cache_loggers = False  # whether `configure` lets loggers keep the logger they looked up
_module_loggers: list[Logger] = []  # every `get_logger` logger: a module's, living as long as it


class Logger:
    """A module's logger (`get_logger`). structlog's lazy proxy looks its bound logger up again on
    every call, through a failed attribute lookup: 1-2 µs more than the logger itself, a dropped
    debug line included, several times per MO. Here each method is the configured logger's own,
    pointed again by every `configure`; without caching (the tests' set-up, so that structlog's
    `capture_logs` sees every line) each call asks structlog, as the proxy does."""

    __slots__ = ("bind", "debug", "error", "exception", "info", "name", "warning")
    bind: Callable[..., Any]
    debug: Callable[..., Any]
    info: Callable[..., Any]
    warning: Callable[..., Any]
    error: Callable[..., Any]
    exception: Callable[..., Any]

    def __init__(self, name: str) -> None:
        self.name = name
        self.point()

    def point(self) -> None:
        """Methods of the logger the present configuration makes (a fresh proxy's: one that cached
        its logger would keep it through a new configuration)."""
        proxy = structlog.get_logger(self.name)
        if _cache_loggers:
            logger = proxy.bind()
            self.bind, self.debug, self.info = logger.bind, logger.debug, logger.info
            self.warning, self.error, self.exception = logger.warning, logger.error, logger.exception
        else:
            self.bind, self.debug, self.info = proxy.bind, _asking(proxy, "debug"), _asking(proxy, "info")
            self.warning, self.error = _asking(proxy, "warning"), _asking(proxy, "error")
            self.exception = _asking(proxy, "exception")


def _asking(proxy: Any, method: str) -> Callable[..., Any]:
    def call(event: str, *args: Any, **values: Any) -> Any:
        return getattr(proxy, method)(event, *args, **values)
    return call


def get_logger(name: str) -> Logger:
    """The logger of module `name` (`Logger`): what `structlog.get_logger` gives, at less cost per line."""
    logger = Logger(name)
    _module_loggers.append(logger)
    return logger
