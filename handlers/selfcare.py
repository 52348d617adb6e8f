"""What every self-care business function shares: its result, its environment, input checks.

The functions in `account`, `numbers`, `money` and `archives` are plain async functions: the HTTP
API (`gateway/selfcare_api.py`), the SMS handlers and the USSD menu all call the same ones. A
refusal is a `Result` with `ok=False`, a machine `code` and a Russian `text` for the subscriber;
it has changed nothing. Codes map to HTTP statuses in `STATUS_BY_CODE`.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from handlers.base import Channel
from handlers.ports import Billing, Mailer, MtSender, Network
from sms_codes import SlidingWindow, client_key
from ussdgw import russian
from ussdgw.clock import Clock
from ussdgw.inputs import parse_msisdn, parse_whole_number
from ussdgw.store import AuditEvent, OutboundMessage, Store
from ussdgw.tasks import Tasks

if TYPE_CHECKING:
    from ussdgw.config import Settings

log = structlog.get_logger("ussdgw.handlers.selfcare")

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


@dataclass(slots=True, init=False)
class Env:
    """What the operations that send SMS or e-mail, or keep sessions, need beyond the store.

    `billing` and `network` are the operator's (the simulated carrier's under `ussdgw up`): without
    them call detail and Локатор answer "unavailable".
    `send_mt` hands a queued MT to a live gateway at once (without one, any gateway's recovery loop
    sends it when its lease runs out). `clock` is the platform's one clock (default: the store's):
    P5 and expiry tests fast-forward it instead of waiting.
    """

    store: Store
    settings: Settings
    send_mt: MtSender | None
    mailer: Mailer | None
    billing: Billing | None
    network: Network | None
    clock: Clock
    _sends: Tasks
    _attempts: SlidingWindow

    def __init__(self, store: Store, settings: Settings, send_mt: MtSender | None = None,
                 mailer: Mailer | None = None, clock: Clock | None = None, *,
                 billing: Billing | None = None, network: Network | None = None) -> None:
        self.store, self.settings, self.send_mt, self.mailer = store, settings, send_mt, mailer
        self.billing, self.network = billing, network
        self.clock = clock or store.clock
        if self.clock is not store.clock:
            raise ValueError("the self-care environment and its store must share one clock")
        self._sends = Tasks("selfcare-sends")
        self._attempts = SlidingWindow()

    def now(self) -> float:
        return self.clock.now()

    def attempt(self, client: str | None) -> Result | None:
        """Count one attempt at a secret from `client` (its address): None, or the 429 refusal when
        that client, or all clients together, used up the window (settings `api_client_attempts`,
        `api_attempts_overall`, `api_attempts_window_s`). Nothing is read or written in Redis."""
        s = self.settings
        now = self.now()
        retry_at = self._attempts.take(client_key(client), now, limit=s.api_client_attempts,
                                       overall=s.api_attempts_overall, window_s=s.api_attempts_window_s)
        if retry_at is None:
            return None
        wait = max(1, math.ceil(retry_at - now))
        return Result.fail("rate_limited", f"Слишком много попыток. Повторите через {wait} с.", retry_at=retry_at)

    def dispatch(self, messages: tuple[OutboundMessage, ...] | list[OutboundMessage]) -> None:
        """Send MTs that were committed to the outbox, without waiting for the SMSC."""
        if self.send_mt is None:
            return
        for mt in messages:
            if self._sends.stopping:  # queued and leased in Redis: a gateway sends it later
                return
            self._sends.spawn(self.send_mt(mt), name="selfcare-mt")

    async def drain(self, grace_s: float = 5.0) -> None:
        """Let the MTs being sent finish for `grace_s`, then end them (each stays queued in Redis)."""
        await self._sends.stop(grace_s=grace_s)


def new_mt(destination: str, text: str, *, secret: bool = False, source: str = SELFCARE_SENDER) -> OutboundMessage:
    return OutboundMessage(mt_id=uuid.uuid4().hex, source=source, destination=destination, text=text, secret=secret)


def valid_msisdn(value: object) -> str | None:
    """'79161234567', '+7 916 123-45-67' or '89161234567' -> '79161234567'; anything else -> None."""
    return parse_msisdn(value)


def bad_msisdn(value: object, field_name: str = "msisdn") -> Result:
    """A refusal of a number that is not one; the value is not echoed (it may be anything at all)."""
    return Result.fail("bad_request", "Номер должен состоять из 11 цифр и начинаться с 7, например 79161234567.",
                       field=field_name)


def parse_amount_kop(value: object, *, field_name: str = "amount_kop", maximum: int = MAX_AMOUNT_KOP) -> int | Result:
    """A positive whole number of kopecks (int, or a string of digits from USSD), else a refusal."""
    parsed = parse_whole_number(value, maximum=10**12)
    if parsed is None:
        return Result.fail("bad_request", "Сумма должна быть целым числом копеек.", field=field_name)
    value = parsed
    if value <= 0:
        return Result.fail("bad_request", "Сумма должна быть больше нуля.", field=field_name)
    if value > maximum:
        return Result.fail("bad_request", f"Сумма не может быть больше {maximum // 100} ₽.", field=field_name)
    return value


def parse_points(value: object, *, field_name: str = "points") -> int | Result:
    parsed = parse_whole_number(value, maximum=10**12)
    if parsed is None:
        return Result.fail("bad_request", "Количество баллов должно быть целым числом.", field=field_name)
    value = parsed
    if value <= 0:
        return Result.fail("bad_request", "Количество баллов должно быть больше нуля.", field=field_name)
    if value > 1_000_000:
        return Result.fail("bad_request", "Слишком много баллов за один раз.", field=field_name)
    return value


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

