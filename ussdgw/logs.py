"""structlog set-up: one event per thing that happened, MSISDNs masked, secrets and bodies dropped."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

MSISDN_KEYS = frozenset({"msisdn", "source_addr", "destination_addr", "to", "sender", "recipient", "phone"})
SECRET_KEYS = frozenset({"password", "text", "short_message", "code", "pw_hash", "secret_key", "token"})


def mask_msisdn(value: str) -> str:
    """79161234567 -> 7916***4567: enough to tell numbers apart in a log, not enough to dial."""
    if len(value) <= 6 or not value.isdigit():
        return value
    return f"{value[:4]}***{value[-4:]}"


def redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key in SECRET_KEYS:
            event[key] = "[redacted]"
        elif key in MSISDN_KEYS and isinstance(event[key], str):
            event[key] = mask_msisdn(event[key])
    return event


class _CurrentStderr:
    """Writes to whatever sys.stderr is now: cached loggers outlive a replaced stream (tests, daemons)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure(level: str = "info", fmt: str = "auto", *, cache: bool = True) -> None:
    renderer: Any
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=cache,
    )
