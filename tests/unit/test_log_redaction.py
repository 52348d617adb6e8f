"""The JSON line's processor on its own: secrets out and MSISDNs masked whatever the value's shape,
the same answer for a value seen before (the memo), and the instant written as structlog writes it."""

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any

import pytest

from ussdgw import logs

PHONE = "79161234567"


def line(**event: Any) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(logs.json_line(None, "info", {"event": "test", **event}))
    return decoded


def test_secrets_are_dropped_by_key_at_any_depth() -> None:
    out = line(password="Secret1", code="4821", token="abc", pw_hash="h", secret_key="k", text="Пароль 123456",
               short_message=b"raw", params={"password": "x", "inner": [{"code": "1"}]})
    for key in ("password", "code", "token", "pw_hash", "secret_key", "text", "short_message"):
        assert out[key] == "[redacted]"
    assert out["params"] == {"password": "[redacted]", "inner": [{"code": "[redacted]"}]}
    assert "Secret1" not in json.dumps(out) and "123456" not in json.dumps(out, ensure_ascii=False)


def test_numbers_are_masked_under_their_keys_and_inside_any_value() -> None:
    out = line(msisdn=PHONE, to="5555", phone=int(PHONE), sender="+" + PHONE, mo_id=f"mo-{PHONE}-1",
               note=f"from {PHONE}, again {PHONE}", members=[PHONE, (PHONE,)], nested={"a": f"x:{PHONE}"},
               error=f"KeyError('{PHONE}')", count=5, ratio=0.5, flag=True, nothing=None)
    assert out["msisdn"] == "7916***4567" and out["to"] == "5555" and out["phone"] == "7916***4567"
    assert out["sender"] == "+7916***4567" and out["mo_id"] == "mo-7916***4567-1"
    assert out["note"] == "from 7916***4567, again 7916***4567"
    assert out["members"] == ["7916***4567", ["7916***4567"]] and out["nested"] == {"a": "x:7916***4567"}
    assert out["error"] == "KeyError('7916***4567')"
    assert (out["count"], out["ratio"], out["flag"], out["nothing"]) == (5, 0.5, True, None)
    assert PHONE not in json.dumps(out)


@pytest.mark.parametrize("value, logged", [
    ("1234567890ab5f3e", "1234567890ab5f3e"),  # a hex id: its digits run into its letters
    (PHONE, "7916***4567"),  # the whole value one number, under a key that is not a number's
    ("7" * 16, "7" * 16),  # longer than any MSISDN
    ("x" * 100 + PHONE, "x" * 100 + PHONE),  # glued to letters
    ("-" * 100 + PHONE, "-" * 100 + "7916***4567"),  # too long for the memo: masked all the same
    ("٧٩١٦١٢٣٤٥٦٧ ok", "٧٩١٦***٤٥٦٧ ok"),  # digits of another script are digits too
    ("é" + PHONE, "é7916***4567"),  # a letter outside A-Z does not shield a number
])
def test_a_value_is_masked_the_same_the_first_time_and_from_the_memo(value: str, logged: str) -> None:
    assert [line(detail=value)["detail"] for _ in range(3)] == [logged] * 3
    assert logs.mask_digits(value) == logged


def test_the_memo_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_MASKED", {})
    for n in range(logs._MASKED_MOST + 10):
        assert logs.mask_digits(f"mo-{79_000_000_000 + n}") == f"mo-7900***{n % 10_000:04d}"
    assert 0 < len(logs._MASKED) <= logs._MASKED_MOST


def test_the_context_is_merged_and_masked_and_the_call_wins() -> None:
    with logs.bound_context(msisdn=PHONE, bind="bind-1", mo_id=f"mo-{PHONE}"):
        out = line(bind="bind-2")
    assert out["msisdn"] == "7916***4567" and out["bind"] == "bind-2" and out["mo_id"] == "mo-7916***4567"
    assert list(out)[:2] == ["event", "bind"] and list(out)[-2:] == ["level", "timestamp"]


def test_the_instant_is_written_as_structlogs_iso_utc_stamper_writes_it(monkeypatch: pytest.MonkeyPatch) -> None:
    for instant in (datetime.datetime(2026, 12, 1, 2, 15, 3, 590232, tzinfo=datetime.UTC),
                    datetime.datetime(2026, 12, 1, 2, 15, 3, 0, tzinfo=datetime.UTC),  # no fraction at all
                    datetime.datetime(2026, 12, 1, 2, 15, 4, 7, tzinfo=datetime.UTC),  # the next second
                    datetime.datetime(2027, 1, 1, 0, 0, 0, 999999, tzinfo=datetime.UTC)):
        # the clock's nanoseconds are cut to microseconds, as datetime.now does
        ns = int(instant.timestamp()) * 1_000_000_000 + instant.microsecond * 1000 + 999
        monkeypatch.setattr(time, "time_ns", lambda ns=ns: ns)
        # what structlog's TimeStamper(fmt="iso", utc=True) writes for that instant
        assert logs._utc_stamp() == instant.isoformat().replace("+00:00", "Z")
    monkeypatch.undo()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z", line()["timestamp"])
    now = datetime.datetime.now(datetime.UTC)
    stamped = datetime.datetime.fromisoformat(line()["timestamp"].replace("Z", "+00:00"))
    assert abs((stamped - now).total_seconds()) < 5


def test_an_exception_line_carries_its_masked_traceback() -> None:
    try:
        raise KeyError(f"no subscriber {PHONE}")
    except KeyError:
        out = json.loads(logs.json_line(None, "exception", {"event": "failed", "exc_info": True}))
    assert out["level"] == "error" and "no subscriber 7916***4567" in out["exception"] and PHONE not in out["exception"]
