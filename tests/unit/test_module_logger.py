"""A module's logger (`ussdgw.logs.get_logger`) keeps its bound logger only while `configure` lets
loggers cache, looks again after every `configure`, and writes what structlog's proxy would."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

from ussdgw import logs

PHONE = "79161234567"


@pytest.fixture(autouse=True)
def structlog_restored() -> Iterator[None]:
    yield
    logs.configure("debug", "json", cache=False)
    structlog.reset_defaults()


def lines(err: str) -> list[dict[str, object]]:
    return [json.loads(text) for text in err.splitlines() if text.strip()]


def test_a_cached_logger_writes_masked_lines_at_its_level_and_follows_a_new_configuration(
        capsys: pytest.CaptureFixture[str]) -> None:
    log = logs.get_logger("ussdgw.test")
    logs.configure("info", "json", cache=True)
    log.debug("dropped", msisdn=PHONE)
    log.info("mo_handled", msisdn=PHONE, to="5555")
    written = lines(capsys.readouterr().err)
    assert [w["event"] for w in written] == ["mo_handled"]
    assert written[0]["msisdn"] == "7916***4567" and written[0]["to"] == "5555"

    logs.configure("debug", "json", cache=True)  # the same module logger, a new level
    log.debug("now_kept", msisdn=PHONE)
    written = lines(capsys.readouterr().err)
    assert [(w["event"], w["level"], w["msisdn"]) for w in written] == [("now_kept", "debug", "7916***4567")]


def test_bound_context_and_bind_reach_the_line(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("info", "json", cache=True)
    log = logs.get_logger("ussdgw.test").bind(bind="bind-1")
    with logs.bound_context(mo_id="mo-1"):
        log.warning("link_down", error="reset")
    (written,) = lines(capsys.readouterr().err)
    assert (written["bind"], written["mo_id"], written["level"]) == ("bind-1", "mo-1", "warning")


def test_without_caching_every_line_asks_structlog_so_captured_logs_see_them() -> None:
    log = logs.get_logger("ussdgw.test")
    logs.configure("debug", "json", cache=False)
    with capture_logs() as captured:
        log.info("first", n=1)
        log.error("second", n=2)
    assert [(c["event"], c["log_level"]) for c in captured] == [("first", "info"), ("second", "error")]
