"""What the handlers need from the world outside the store, as small interfaces (ports), and
`Platform`, the one object that carries them with the store, the settings and the clock.

The composition root (`ussdgw.app`) plugs in the implementations: an SMTP mailer, the gateway's
MT sender, and, in the simulated carrier, its billing and network. Handlers import none of them,
so the production path carries no simulator code and tests can pass their own.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

from handlers.operations import Result
from sms_codes import SlidingWindow, client_key
from ussdgw.clock import Clock
from ussdgw.costly import CostlyPool, default_workers
from ussdgw.store import OutboundMessage, Store
from ussdgw.tasks import Tasks

if TYPE_CHECKING:
    from ussdgw.config import Settings

MtSender = Callable[[OutboundMessage], Awaitable[object]]
"""Hands an MT that is already queued in the outbox to a live gateway, without waiting for the SMSC."""


class Mailer(Protocol):
    async def send(self, to: str, subject: str, body: str,
                   attachments: tuple[tuple[str, str, bytes], ...] = ()) -> None:
        """Send one message; raises `MailError` when the server does not accept it."""


class MailError(Exception):
    """The message was not accepted. `smtp_code` is the server's code (0 if it was unreachable)."""

    def __init__(self, smtp_code: int, server_text: str) -> None:
        super().__init__(f"SMTP {smtp_code}: {server_text}")
        self.smtp_code = smtp_code
        self.server_text = server_text

    @property
    def kind(self) -> str:
        if self.smtp_code in (452, 552):
            return "mailbox_full"
        if self.smtp_code in (550, 551, 553):
            return "unknown_address"
        if self.smtp_code == 0:
            return "server_unreachable"
        return "refused"

    @property
    def reply(self) -> str:
        return {
            "mailbox_full": "почтовый ящик получателя переполнен",
            "unknown_address": "такого адреса e-mail не существует",
            "server_unreachable": "почтовый сервер недоступен, попробуйте позже",
        }.get(self.kind, f"почтовый сервер отказал (код {self.smtp_code})")


class CallRecord(Protocol):
    """One line of call detail (M5), as the operator's billing keeps it."""

    @property
    def at(self) -> str: ...  # ISO time, operator time zone
    @property
    def kind(self) -> str: ...  # call | sms | internet
    @property
    def direction(self) -> str: ...  # out | in
    @property
    def peer(self) -> str: ...
    @property
    def duration_s(self) -> int: ...
    @property
    def volume_kb(self) -> int: ...
    @property
    def cost_kop(self) -> int: ...


class Billing(Protocol):
    """The operator's billing: what a number did (M5)."""

    def call_records(self, msisdn: str, start: date, end: date) -> Sequence[CallRecord]:
        """Every record from `start` to `end`, both included, oldest first."""
        ...


class Network(Protocol):
    """The operator's network: where a handset is (Локатор)."""

    def locate(self, msisdn: str, region: str) -> dict[str, Any]:
        """Latitude, longitude, accuracy in metres and region of the handset."""
        ...


@dataclass(slots=True, init=False)
class Platform:
    """The platform as the handlers see it: the store, the settings, the one clock and the ports.

    The composition root builds one and every channel's requests share it: the gateway's SMS and
    USSD contexts (`handlers.base.Context`) and the HTTP API. Operations take it with the number
    they act on.

    `billing` and `network` are the operator's (the simulated carrier's under `ussdgw up`): without
    them call detail and Локатор answer "unavailable".
    `send_mt` hands a queued MT to a live gateway at once (without one, any gateway's recovery loop
    sends it when its lease runs out). `clock` is the platform's one clock (default: the store's):
    P5 and expiry tests fast-forward it instead of waiting.
    `costly` is the bounded pool for password hashes (`ussdgw.costly`, settings `costly_workers`,
    `costly_max_wait_s`), one per platform and shared by every channel, so that sign-ins to the API
    cannot starve SMS and USSD replies: whoever built the platform stops it (`stop`) after the parts
    that submit to it, or uses the platform as `async with Platform(...)`.
    """

    store: Store
    settings: Settings
    send_mt: MtSender | None
    mailer: Mailer | None
    billing: Billing | None
    network: Network | None
    clock: Clock
    costly: CostlyPool
    _sends: Tasks
    _attempts: SlidingWindow

    def __init__(self, store: Store, settings: Settings, send_mt: MtSender | None = None,
                 mailer: Mailer | None = None, clock: Clock | None = None, *,
                 billing: Billing | None = None, network: Network | None = None) -> None:
        self.store, self.settings, self.send_mt, self.mailer = store, settings, send_mt, mailer
        self.billing, self.network = billing, network
        self.clock = clock or store.clock
        if self.clock is not store.clock:
            raise ValueError("the platform and their store must share one clock")
        self.costly = CostlyPool(settings.costly_workers or default_workers(), settings.costly_max_wait_s)
        self._sends = Tasks("platform-sends")
        self._attempts = SlidingWindow()

    async def __aenter__(self) -> Platform:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """End the costly pool's threads (the tasks admitted finish first). Last, after the gateway
        and the HTTP API that submit to it have stopped: whatever comes later is refused."""
        await self.costly.stop()

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
            self._sends.spawn(self.send_mt(mt), name="platform-mt")

    async def drain(self, grace_s: float = 5.0) -> None:
        """Let the MTs being sent finish for `grace_s`, then end them (each stays queued in Redis)."""
        await self._sends.stop(grace_s=grace_s)
