"""What every business operation shares: its `Result`, the checks of what it is given.

The operations in `account`, `numbers`, `money`, `archives` and `number_management` are plain async
functions taking the platform's `Platform` (`handlers.ports`) and the number they act on: the HTTP
API (`gateway/http_api.py`), the SMS handlers and the USSD menu all call the same ones. A refusal is
a `Result` with `ok=False`, a machine `code` and a Russian `text` for the subscriber; it has changed
nothing. Codes map to HTTP statuses in `STATUS_BY_CODE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ussdgw import russian
from ussdgw.inputs import parse_msisdn, parse_whole_number
from ussdgw.store import AuditEvent, OutboundMessage, new_mt_id

if TYPE_CHECKING:
    from handlers.base import Channel

SELFCARE_SENDER = "3339"
"""Short code that self-care SMS (passwords, codes, notices) come from."""

MAX_AMOUNT_KOP = 1_500_000  # one payment at most 15 000 ₽, as operators cap card top-ups

STATUS_BY_CODE: Mapping[str, int] = {
    "ok": 200,
    "bad_request": 400,
    "weak_password": 400,
    "password_mismatch": 400,
    "unauthorized": 401,
    "wrong_password": 401,
    "session_expired": 401,
    "insufficient_funds": 402,
    "forbidden": 403,
    "wrong_code_word": 403,
    "wrong_code": 403,
    "wrong_identity": 403,
    "no_consent": 403,
    "not_trusted_network": 403,
    "blocked": 403,
    "corporate": 403,
    "not_found": 404,
    "unknown_subscriber": 404,
    "conflict": 409,
    "debt": 409,
    "same_owner": 409,
    "expired": 410,
    "locked": 423,
    "rate_limited": 429,
    "mail_failed": 502,
    "unavailable": 503,
    "busy": 503,  # the costly-work pool (password hashes) is full: Retry-After, nothing counted or changed
}


@dataclass(frozen=True, slots=True)
class Result:
    """What a self-care operation came to: `ok`, a text for the subscriber, data for a client."""

    ok: bool
    text: str
    code: str = "ok"
    data: Mapping[str, Any] = field(default_factory=dict)
    retry_at: float | None = None

    @classmethod
    def done(cls, text: str, **data: Any) -> Result:
        return cls(True, text, "ok", data)

    @classmethod
    def fail(cls, code: str, text: str, *, retry_at: float | None = None, **data: Any) -> Result:
        return cls(False, text, code, data, retry_at)

    @property
    def status(self) -> int:
        return STATUS_BY_CODE.get(self.code, 400)


def new_mt(destination: str, text: str, *, secret: bool = False, source: str = SELFCARE_SENDER) -> OutboundMessage:
    return OutboundMessage(mt_id=new_mt_id(), source=source, destination=destination, text=text, secret=secret)


def valid_msisdn(value: object) -> str | None:
    """'79161234567', '+7 916 123-45-67' or '89161234567' -> '79161234567'; anything else -> None."""
    return parse_msisdn(value)


def bad_msisdn(value: object, field_name: str = "msisdn") -> Result:
    """A refusal of a number that is not one; the value is not echoed (it may be anything at all)."""
    return Result.fail("bad_request", "Номер должен состоять из 11 цифр и начинаться с 7, например 79161234567.",
                       field=field_name)


def parse_amount_kop(value: object, *, field_name: str = "amount_kop", maximum: int = MAX_AMOUNT_KOP) -> int | Result:
    """A positive whole number of kopecks (int, or a string of digits from USSD), else a refusal."""
    return _positive_whole(value, field_name, maximum, ("Сумма должна быть целым числом копеек.",
                                                        "Сумма должна быть больше нуля.",
                                                        f"Сумма не может быть больше {maximum // 100} ₽."))


def parse_points(value: object, *, field_name: str = "points") -> int | Result:
    """A positive whole number of bonus points, at most a million at once, else a refusal."""
    return _positive_whole(value, field_name, 1_000_000, ("Количество баллов должно быть целым числом.",
                                                          "Количество баллов должно быть больше нуля.",
                                                          "Слишком много баллов за один раз."))


def _positive_whole(value: object, field_name: str, maximum: int, refusals: tuple[str, str, str]) -> int | Result:
    """`value` as a whole number from 1 to `maximum`; else the refusal for not a number, not above
    zero or above `maximum`, naming the field."""
    parsed = parse_whole_number(value, maximum=10**12)
    if parsed is None:
        return Result.fail("bad_request", refusals[0], field=field_name)
    if parsed <= 0:
        return Result.fail("bad_request", refusals[1], field=field_name)
    if parsed > maximum:
        return Result.fail("bad_request", refusals[2], field=field_name)
    return parsed


def unknown_subscriber(msisdn: str) -> Result:
    return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.", msisdn=msisdn)


def api_audit(event: str, channel: Channel | str, outcome: str = "ok", detail: str = "") -> AuditEvent:
    return AuditEvent(event, str(channel), outcome, detail)


def refused_for(code: str) -> Result:
    """A generic text for store refusal codes not handled by the caller."""
    texts = {
        "not_found": "Абонент не найден.",
        "insufficient_funds": "Недостаточно средств на счёте. Пополните баланс.",
        "conflict": "Операция уже выполнена или состояние изменилось. Обновите страницу.",
    }
    return Result.fail(code if code in STATUS_BY_CODE else "conflict", texts.get(code, texts["conflict"]))


def fmt_time(ts: float) -> str:
    """'30.11.2026 14:05 МСК'."""
    return russian.date_time(ts)

