"""What every handler gets and must do: one typed signature, one context, one way to change state.

Every channel builds the same `Context` for a request: the `Platform` (store, settings,
clock, ports), the inbound message, and for USSD the dialogue step as a part (`ctx.ussd`). A
handler reads what it needs, then answers exactly once (`ctx.reply(...)`, or in a dialogue
`ctx.show`/`ctx.end`) with the change to make, the reply to send and the audit events. That one
call is the atomic, exactly-once commit: a redelivered MO finds its commit done and gets the same
reply back instead of a second change. Whatever a handler compares with "now" it reads from
`ctx.clock`, the platform's one clock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from sms_codes import hash_password
from ussd_menus.engine import paginate
from ussdgw.audit_detail import render
from ussdgw.records import record
from ussdgw.smpp.pdu import UssdOp
from ussdgw.smpp.ussd import Timeouts, UssdDialogue, UssdString, fits_one_message, reply_session_info, ussd_length
from ussdgw.store import (
    NO_CHANGE,
    AuditEvent,
    Change,
    CommitResult,
    DialogueStep,
    MoMark,
    OutboundMessage,
    Outcome,
    Profile,
    Store,
    new_mt_id,
)

if TYPE_CHECKING:
    from handlers.ports import Platform
    from ussdgw.clock import Clock
    from ussdgw.config import Settings

from ussdgw.logs import get_logger

log = get_logger("ussdgw.handlers.base")

LATE_GRACE_S = 60.0  # a dialogue outlives its deadline this long, to tell a late answer why
PAGES = "_pages"  # dialogue data: the rest of a closing text too long for one screen


class Channel(StrEnum):
    SMS = "sms"
    USSD = "ussd"
    API = "api"


@record
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
class UssdStep:
    """The USSD part of a request: the phone's dialogue and what this MO brought to it."""

    dialogue: UssdDialogue
    timeouts: Timeouts
    args: tuple[str, ...] = ()  # on a dial: the parts after the route's prefix (`*111*828*1#` -> ('1',))
    answer: str | None = None  # on an answer: what the subscriber typed
    dialled: UssdString | None = None
    expect: str | None = None  # the dialogue version this step was computed from

    @property
    def is_dial(self) -> bool:
        return self.answer is None


class StepConflict(Exception):
    """Another step of the same dialogue was committed first; the MO is handled again from the top."""


@dataclass(slots=True)
class Context:
    """One request, built the same way whichever channel brought it: the platform's `platform`,
    the `message` (who, to which code, what), and over USSD the dialogue step (`ussd`).

    A handler answers once: `reply(text)` answers on the message's own channel (an SMS from the
    code; over USSD the screen that closes the dialogue); in a dialogue `show(text)` waits for the
    subscriber's answer and `end(text)` closes. Each is one atomic commit, once per MO.
    """

    platform: Platform
    message: InboundMessage
    ussd: UssdStep | None = None
    result: CommitResult | None = None
    read_profile: Profile | None = None  # read once per request; actions that change it commit
    # The profile hash as the request's first read found it (a USSD step reads it with its dialogue):
    # `profile()` makes the Profile of it only when a handler asks.
    stored_profile: list[bytes] | None = None
    # N3 checked by the reply's own commit (`Change.unless_blocked_on`), for a handler with no side
    # effect before it: the operator's day, ISO; and, when that commit found the number blocked, its
    # block day (nothing was committed: the gateway answers with the refusal instead).
    unless_blocked_on: str = ""
    blocked_from: str | None = None

    @property
    def msisdn(self) -> str:
        return self.message.msisdn

    @property
    def channel(self) -> Channel:
        return self.message.channel

    @property
    def store(self) -> Store:
        return self.platform.store

    @property
    def settings(self) -> Settings:
        return self.platform.settings

    @property
    def clock(self) -> Clock:
        return self.platform.clock  # the platform's one clock (the gateway's, the same as the store's)

    async def profile(self) -> Profile:
        """The profile, read once per request (menus ask for it for several parts of one screen)."""
        if self.read_profile is None:
            stored = self.stored_profile
            if stored is not None:
                self.read_profile = Profile.from_flat(self.msisdn, stored)
            else:
                self.read_profile = await self.store.subscribers.profile(self.msisdn)
        return self.read_profile

    def ussd_step(self) -> UssdStep:
        """The dialogue step of a USSD request (a USSD route's handler always has one)."""
        if self.ussd is None:
            raise TypeError(f"a {self.channel} request has no USSD dialogue: route it through handle_ussd")
        return self.ussd

    @property
    def menu_state(self) -> dict[str, Any]:
        """The menu's own state, saved with the dialogue at every step."""
        return self.ussd_step().dialogue.data

    async def reply(
        self,
        text: str,
        *,
        change: Change = NO_CHANGE,
        audit: Sequence[AuditEvent] = (),
        secret: bool = False,
    ) -> CommitResult:
        """Commit `change` with the reply and the audit trail, atomically and once per MO (P3: a
        subscriber first seen gets a profile). Over USSD the reply is the closing screen."""
        if self.ussd is not None:
            return await self.end(text, change=change, audit=audit)
        msg = self.message
        mt = OutboundMessage(
            mt_id=new_mt_id(),
            source=msg.short_code,
            destination=msg.msisdn,
            text=text,
            secret=secret,
        )
        received = AuditEvent("mo_received", msg.channel, detail=render(to=msg.short_code))
        if change is NO_CHANGE:  # the common reply: one Change, the audit trail in its order
            step = Change(mo=msg.mark, messages=(mt,), audit=(received, *audit), create_profile=True,
                          unless_blocked_on=self.unless_blocked_on)
        else:
            step = Change(mo=msg.mark, messages=(mt,), audit=(received,), create_profile=True,
                          unless_blocked_on=self.unless_blocked_on) + change
            if audit:
                step += Change(audit=tuple(audit))
        result = await self.store.commit(msg.msisdn, step)
        if result.outcome is Outcome.BLOCKED:
            self.blocked_from = result.detail
        elif not result.refused:
            self.result = result
        return result

    async def show(self, text: str, *, change: Change = NO_CHANGE, audit: Sequence[AuditEvent] = (),
                   messages: Sequence[OutboundMessage] = ()) -> CommitResult:
        """Show `text` and wait for the subscriber's answer (USSR request)."""
        return await self._step(text, close=False, change=change, audit=audit, messages=messages)

    async def end(self, text: str, *, change: Change = NO_CHANGE, audit: Sequence[AuditEvent] = (),
                  messages: Sequence[OutboundMessage] = ()) -> CommitResult:
        """Show `text` and close the dialogue (PSSR response)."""
        return await self._step(text, close=True, change=change, audit=audit, messages=messages)

    def sms(self, text: str, source: str, *, secret: bool = False) -> OutboundMessage:
        """An SMS to this subscriber, to send along with the next show/end (e.g. a password from 3339)."""
        return OutboundMessage(mt_id=new_mt_id(), source=source, destination=self.msisdn, text=text,
                               secret=secret)

    async def _step(self, text: str, *, close: bool, change: Change, audit: Sequence[AuditEvent],
                    messages: Sequence[OutboundMessage]) -> CommitResult:
        ussd = self.ussd_step()
        if self.result is not None:
            raise RuntimeError("a USSD handler answers once per MO")
        dialogue = ussd.dialogue
        before = (dialogue.state, dialogue.step_at, dialogue.data)
        if close and not fits_one_message(text):  # a long last word: pages, the dialogue closes on the last
            pages = paginate(text, [], back=False, main=False, page_back=False)
            dialogue.data = {PAGES: pages[1:]}
            close, text = False, pages[0]
        now = self.clock.now()
        if close:
            dialogue.end()
        else:
            dialogue.show(now)
        text = fit_text(text, self.msisdn)
        op = UssdOp.PSSR_RESPONSE if close else UssdOp.USSR_REQUEST
        reply = OutboundMessage(
            mt_id=new_mt_id(), source=self.message.short_code, destination=self.msisdn, text=text,
            ussd_service_op=op, its_session_info=reply_session_info(self.message.its_session_info, end=close),
        )
        events = (_dialled(ussd), *audit)
        if close:
            events += (AuditEvent("ussd_dialogue_closed", Channel.USSD, detail=f"service={dialogue.service_code}"),)
        ttl = dialogue.deadline(ussd.timeouts) - now + LATE_GRACE_S
        step = DialogueStep(None if close else dialogue.to_json(), dialogue.version, ttl, expect=ussd.expect)
        if change is NO_CHANGE:  # most screens change nothing but the dialogue: one Change, built once
            whole = Change(mo=self.message.mark, messages=(reply, *messages), audit=events, dialogue=step,
                           create_profile=True)
        else:
            whole = self.message.once() + change + Change(messages=(reply, *messages), audit=events, dialogue=step,
                                                          create_profile=True)
        result = await self.store.commit(self.msisdn, whole)
        if result.outcome is Outcome.CONFLICT:
            raise StepConflict(dialogue.version)
        if result.refused:
            dialogue.state, dialogue.step_at, dialogue.data = before
            return result
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
        """scrypt off the event loop, on the platform's bounded pool for costly work: ~40-80 ms of CPU
        each. Raises `ussdgw.costly.Overloaded` (nothing done: the MO is deferred) when it would wait
        longer than `costly_max_wait_s`, so that a burst of them cannot make every reply late."""
        return await self.platform.costly.run(hash_password, password)


def fit_text(text: str, msisdn: str = "") -> str:
    """`text` as it fits one USSD message; cut with an ellipsis (and logged) when it does not."""
    if fits_one_message(text):
        return text
    _, allowed = ussd_length(text)
    cut = text
    while not fits_one_message(cut + "…"):
        cut = cut[: max(0, min(len(cut) - 1, allowed - 1))]
    log.warning("ussd_text_truncated", msisdn=msisdn, length=len(text))
    return cut + "…"


def _dialled(ussd: UssdStep) -> AuditEvent:
    kind = "dial" if ussd.is_dial else f"answer step={ussd.dialogue.step}"
    code = ussd.dialled.raw if ussd.dialled is not None else f"*{ussd.dialogue.service_code}#"
    return AuditEvent("mo_received", Channel.USSD, detail=f"{kind} code={code}")


Handler = Callable[[Context], Awaitable[None]]
