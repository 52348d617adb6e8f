"""What the handlers need from the world outside the store, as small interfaces (ports).

The composition root (`ussdgw.app`) plugs in the implementations: an SMTP mailer, the gateway's
MT sender, and, in the simulated carrier, its billing and network. Handlers import none of them,
so the production path carries no simulator code and tests can pass their own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import date
from typing import Any, Protocol

from ussdgw.store import OutboundMessage

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
