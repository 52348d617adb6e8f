"""What every handler gets and must do: one typed signature, one way to change state.

A handler reads what it needs, then calls `ctx.reply(...)` exactly once with the change to make,
the reply to send and the audit events. That one call is the atomic, exactly-once commit: a
redelivered MO finds its commit done and gets the same reply back instead of a second change.
Whatever a handler compares with "now" it reads from `ctx.clock`, the platform's one clock.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sms_codes import hash_password
from ussdgw.audit_detail import render
from ussdgw.clock import Clock
from ussdgw.costly import pool_for
from ussdgw.store import NO_CHANGE, AuditEvent, Change, CommitResult, MoMark, OutboundMessage, Profile, Store

if TYPE_CHECKING:
    from ussdgw.config import Settings


class Channel(StrEnum):
    SMS = "sms"
    USSD = "ussd"
    API = "api"


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """An MO after decoding and reassembly: who sent what to which code."""

    msisdn: str
    short_code: str
    text: str
    channel: Channel = Channel.SMS
    mo_id: str | None = None
    mo_ttl_s: int = 24 * 3600
    received_at: float = 0.0  # the platform's clock when the gateway took it
    ussd_service_op: int | None = None
    its_session_info: int | None = None
    # Nothing but the content identifies this MO (the SMSC gave no message reference), so its
    # `mo_id` is remembered only briefly: a later identical MO may be a new one.
    content_only: bool = False

    @property
    def mark(self) -> MoMark | None:
        """What makes a commit apply once per MO: its idempotency mark (none without an MO id)."""
        if self.mo_id is None:
            return None
        # An SMS known by its text alone: a repeat may be the subscriber asking again, answered like the first.
        return MoMark(self.mo_id, self.mo_ttl_s, again=self.content_only and self.channel is not Channel.USSD)

    def once(self) -> Change:
        """The mark as a change, to add to one."""
        return Change(mo=self.mark) if self.mo_id is not None else NO_CHANGE


@dataclass(slots=True)
class HandlerContext:
    message: InboundMessage
    store: Store
    settings: Settings
    clock: Clock  # the platform's one clock (the gateway's, the same as the store's)
    result: CommitResult | None = None

    @property
    def msisdn(self) -> str:
        return self.message.msisdn

    async def profile(self) -> Profile:
        return await self.store.subscribers.profile(self.msisdn)

    async def reply(
        self,
        text: str,
        *,
        change: Change = NO_CHANGE,
        audit: Sequence[AuditEvent] = (),
        secret: bool = False,
        ussd_service_op: int | None = None,
    ) -> CommitResult:
        """Commit `change` with the reply MT and the audit trail, atomically and once per MO
        (P3: a subscriber first seen gets a profile)."""
        msg = self.message
        mt = OutboundMessage(
            mt_id=uuid.uuid4().hex,
            source=msg.short_code,
            destination=msg.msisdn,
            text=text,
            ussd_service_op=ussd_service_op,
            its_session_info=msg.its_session_info if ussd_service_op is not None else None,
            secret=secret,
        )
        received = AuditEvent("mo_received", msg.channel, detail=render(to=msg.short_code))
        step = Change(mo=msg.mark, messages=(mt,), audit=(received,), create_profile=True) + change
        result = await self.store.commit(msg.msisdn, step + Change(audit=tuple(audit)) if audit else step)
        if not result.refused:
            self.result = result
        return result

    async def replayed(self) -> bool:
        """Is this MO a redelivery of one already applied? Then its result is the first one's
        (the MTs nobody is sending any more) and the handler has nothing else to do."""
        if self.message.mark is None:
            return False
        again = await self.store.replay(self.msisdn, self.message.mark)
        if again is None:
            return False
        self.result = again
        return True

    async def reply_rate_limited(self, text: str, reason: str, event: str) -> None:
        """D2: the polite "try again at ..." SMS (`handlers.d2.refusal`) instead of a secret, audited as refused."""
        await self.reply(text, audit=[AuditEvent(event, self.message.channel, outcome="rate_limited", detail=reason)])

    async def hash_password(self, password: str) -> str:
        """scrypt off the event loop, on the process's bounded pool for costly work: ~40-80 ms of CPU
        each. Raises `ussdgw.costly.Overloaded` (nothing done: the MO is deferred) when it would wait
        longer than `costly_max_wait_s`, so that a burst of them cannot make every reply late."""
        pool = pool_for(self.settings.costly_workers, self.settings.costly_max_wait_s)
        return await pool.run(hash_password, password)


Handler = Callable[[HandlerContext], Awaitable[None]]
