"""USSD dialogues for handlers: the gateway's one entry point, and the context USSD apps get.

`handle_ussd` takes every USSD MO (PROTOCOL.md "USSD over SMPP"):

- a dial (ussd_service_op 1, or 0) parses the string (TS 22.030), finds the route by the longest
  registered prefix (`*111*828*1#` -> `111*828`, the rest `1` are the app's `args`), replaces
  whatever dialogue the phone had open, and runs the route's handler;
- an answer (18) loads the phone's dialogue from Redis (any gateway process may get any step),
  refuses it politely when it came too late, and runs the handler of the dialogue's service;
- a release from the network (0x81, 16, 17, or the end-of-session bit) drops the dialogue;
- anything else ends the dialogue with a clear message. Never silence, never a crash.

A handler shows a screen with `await ctx.show(text)` (USSR request: the phone shows it and
waits) or closes with `await ctx.end(text)` (PSSR response), exactly once per MO. Either call is
one atomic commit (`Store.commit` with a `DialogueStep`): the subscriber change, the reply, any
extra MTs (an SMS from 3339), the audit trail, the MO's idempotency mark and the dialogue state.
A redelivered MO gets the same reply again and changes nothing.

Time: dialogue deadlines and N2 review times read the context's `clock`: the gateway's, which the
composition root (`ussdgw.app.stack.Stack`) shares with the store and the simulator, so that tests and
the simulator's "advance time" fast-forward it. There is no module-level clock.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from handlers.base import Channel, HandlerContext, InboundMessage
from handlers.routing import Router, UssdRoute
from ussd_menus.engine import paginate
from ussdgw.clock import Clock
from ussdgw.config import Settings
from ussdgw.smpp.pdu import UssdOp
from ussdgw.smpp.ussd import (
    DialogueExpired,
    MalformedUssdString,
    MoKind,
    Timeouts,
    UssdDialogue,
    UssdString,
    classify_op,
    fits_one_message,
    parse_ussd_string,
    reply_session_info,
    ussd_length,
)
from ussdgw.store import (
    NO_CHANGE,
    AuditEvent,
    Change,
    CommitResult,
    DialogueStep,
    OutboundMessage,
    Outcome,
    Profile,
    Store,
)

log = structlog.get_logger("ussdgw.handlers.ussd")

LATE_GRACE_S = 60.0  # the dialogue outlives its deadline this long, to tell a late answer why
CONTENT_ONLY_DIAL_TTL_S = 30  # a dial identified by its text alone is deduplicated this long
MAX_CONFLICT_RETRIES = 3

NO_DIALOGUE = "Сеанс USSD уже завершён. Наберите запрос ещё раз, например *111#."
PAGES = "_pages"  # dialogue data: the rest of a closing text too long for one screen
UNSUPPORTED = "Этот тип USSD-запроса не поддерживается. Наберите *111# для меню."


class StepConflict(Exception):
    """Another step of the same dialogue was committed first; the MO is handled again from the top."""


@dataclass(slots=True)
class UssdContext(HandlerContext):
    """What a USSD handler gets: the dialogue, the dialled extras or the answer, show/end."""

    dialogue: UssdDialogue = field(default_factory=lambda: UssdDialogue("", "", 0.0))
    args: tuple[str, ...] = ()  # on a dial: the parts after the route's prefix (`*111*828*1#` -> ('1',))
    answer: str | None = None  # on an answer: what the subscriber typed
    dialled: UssdString | None = None
    expect: str | None = None  # the dialogue version this step was computed from
    timeouts: Timeouts = field(default_factory=Timeouts)
    read_profile: Profile | None = None  # read once per step; actions that change it go through `money`

    @property
    def is_dial(self) -> bool:
        return self.answer is None

    async def profile(self) -> Profile:
        """The profile, read once per step (menus ask for it for several parts of one screen)."""
        if self.read_profile is None:
            self.read_profile = await self.store.subscribers.profile(self.msisdn)
        return self.read_profile

    @property
    def menu_state(self) -> dict[str, Any]:
        """The application's own state, saved with the dialogue at every step."""
        return self.dialogue.data

    async def show(self, text: str, *, change: Change = NO_CHANGE, audit: Sequence[AuditEvent] = (),
                   messages: Sequence[OutboundMessage] = ()) -> CommitResult:
        """Show `text` and wait for the subscriber's answer (USSR request)."""
        return await self._step(text, close=False, change=change, audit=audit, messages=messages)

    async def end(self, text: str, *, change: Change = NO_CHANGE, audit: Sequence[AuditEvent] = (),
                  messages: Sequence[OutboundMessage] = ()) -> CommitResult:
        """Show `text` and close the dialogue (PSSR response)."""
        return await self._step(text, close=True, change=change, audit=audit, messages=messages)

    async def reply(self, text: str, *, change: Change = NO_CHANGE, audit: Sequence[AuditEvent] = (),
                    secret: bool = False, ussd_service_op: int | None = None) -> CommitResult:
        """A plain handler's one reply, over USSD: the text closes the dialogue."""
        return await self.end(text, change=change, audit=audit)

    def sms(self, text: str, source: str, *, secret: bool = False) -> OutboundMessage:
        """An SMS to this subscriber, to send along with the next show/end (e.g. a password from 3339)."""
        return OutboundMessage(mt_id=uuid.uuid4().hex, source=source, destination=self.msisdn, text=text,
                               secret=secret)

    async def _step(self, text: str, *, close: bool, change: Change, audit: Sequence[AuditEvent],
                    messages: Sequence[OutboundMessage]) -> CommitResult:
        if self.result is not None:
            raise RuntimeError("a USSD handler answers once per MO")
        dialogue = self.dialogue
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
            mt_id=uuid.uuid4().hex, source=self.message.short_code, destination=self.msisdn, text=text,
            ussd_service_op=op, its_session_info=reply_session_info(self.message.its_session_info, end=close),
        )
        events = [_received(self), *audit]
        if close:
            events.append(AuditEvent("ussd_dialogue_closed", Channel.USSD, detail=f"service={dialogue.service_code}"))
        ttl = dialogue.deadline(self.timeouts) - now + LATE_GRACE_S
        step = DialogueStep(None if close else dialogue.to_json(), dialogue.version, ttl, expect=self.expect)
        result = await self.store.commit(self.msisdn, self.message.once() + change + Change(
            messages=(reply, *messages), audit=tuple(events), dialogue=step, create_profile=True))
        if result.outcome is Outcome.CONFLICT:
            raise StepConflict(dialogue.version)
        if result.refused:
            dialogue.state, dialogue.step_at, dialogue.data = before
            return result
        self.result = result
        return result


def ussd_context(ctx: HandlerContext) -> UssdContext:
    """The USSD view of a handler's context (a USSD route's handler always gets one)."""
    if not isinstance(ctx, UssdContext):
        raise TypeError(f"a USSD handler got a {type(ctx).__name__}: route it through handle_ussd")
    return ctx


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


def _received(ctx: UssdContext) -> AuditEvent:
    kind = "dial" if ctx.is_dial else f"answer step={ctx.dialogue.step}"
    code = ctx.dialled.raw if ctx.dialled is not None else f"*{ctx.dialogue.service_code}#"
    return AuditEvent("mo_received", Channel.USSD, detail=f"{kind} code={code}")


def timeouts_of(settings: Settings) -> Timeouts:
    return Timeouts(step_s=settings.ussd_step_timeout_s, dialogue_s=settings.ussd_dialogue_timeout_s)


def find_route(router: Router, settings: Settings, path: str) -> UssdRoute | None:
    """The registered route for a dialled path, else an external HTTP app configured for its code."""
    route = router.route_ussd(path)
    if route is not None:
        return route
    code = path.split("*", 1)[0]
    url = settings.ussd_http_apps.get(code)
    if url is None:
        return None
    from handlers.ussd_http_app import http_app_handler  # the HTTP bridge is only loaded when configured

    return UssdRoute(code, http_app_handler(url), f"внешнее приложение {code}")


def unknown_code_text(router: Router, dialled: str) -> str:
    codes = ", ".join(f"*{r.service_code}# {r.description}" for r in router.ussd_routes() if "*" not in r.service_code)
    return f"Запрос {dialled} не обслуживается. Доступно: {codes}."[:200]


@dataclass(frozen=True, slots=True)
class UssdOutcome:
    handler: str
    result: CommitResult


async def handle_ussd(message: InboundMessage, store: Store, settings: Settings, router: Router,
                      clock: Clock | None = None, *, first: tuple[bool, bytes | None] | None = None) -> UssdOutcome:
    """Handle one USSD MO from start to commit; the caller sends `result.messages`.

    `clock` is the platform's (default: the store's, which the composition root makes the same);
    `first`: what `Dialogues.load` gave the caller just now (the first try uses it, a retry reads again)."""
    for _ in range(MAX_CONFLICT_RETRIES):
        try:
            return await _handle_once(message, store, settings, router, clock or store.clock, first)
        except StepConflict:
            log.info("ussd_step_conflict", msisdn=message.msisdn)
            first = None
    raise RuntimeError("USSD dialogue kept changing under this step")


def content_only(message: InboundMessage) -> bool:
    """Nothing but the text identifies this MO (no user_message_reference, no its_session_info)."""
    return message.content_only and message.its_session_info is None


async def _handle_once(message: InboundMessage, store: Store, settings: Settings, router: Router,
                       clock: Clock, first: tuple[bool, bytes | None] | None) -> UssdOutcome:
    msisdn = message.msisdn
    kind = classify_op(message.ussd_service_op, message.its_session_info)
    if content_only(message) and kind is MoKind.DIAL:  # the same string dialled again later is a new dial
        message = dataclasses.replace(message, mo_ttl_s=CONTENT_ONLY_DIAL_TTL_S)
    applied, raw = first if first is not None else await store.dialogues.load(msisdn, message.mo_id)
    open_dialogue = UssdDialogue.from_json(raw) if raw is not None else None
    if content_only(message) and kind is MoKind.ANSWER and open_dialogue is not None:
        # "2" answered on two screens is two answers: the step tells them apart (the commit still
        # refuses the same answer twice at the same step)
        message = dataclasses.replace(message, mo_id=f"{message.mo_id}:{open_dialogue.version}")
        applied = False
    if applied:  # a redelivered MO: the same reply again, nothing changes
        result = await store.commit(msisdn, message.once() + Change(create_profile=True))
        return UssdOutcome("ussd.duplicate", result)
    now = clock.now()
    timeouts = timeouts_of(settings)

    def make(dialogue: UssdDialogue, **extra: Any) -> UssdContext:
        return UssdContext(message, store, settings, clock, dialogue=dialogue, timeouts=timeouts, **extra)

    if kind is MoKind.DIAL:
        text = message.text.strip() or message.short_code
        placeholder = UssdDialogue.dial(msisdn, "", now, message.its_session_info)
        try:
            dialled = parse_ussd_string(text)
        except MalformedUssdString as err:
            log.info("ussd_malformed", msisdn=msisdn, reason=str(err))
            ctx = make(placeholder)
            await ctx.end(err.reply, audit=[AuditEvent("ussd_malformed", Channel.USSD, outcome="refused")])
            return UssdOutcome("ussd.malformed", _done(ctx))
        route = find_route(router, settings, dialled.path)
        if route is None:
            log.info("ussd_unknown_code", msisdn=msisdn, service=dialled.service_code)
            ctx = make(placeholder, dialled=dialled)
            await ctx.end(unknown_code_text(router, dialled.raw),
                          audit=[AuditEvent("ussd_unknown_code", Channel.USSD, outcome="help_sent")])
            return UssdOutcome("ussd.unknown_code", _done(ctx))
        dialogue = UssdDialogue.dial(msisdn, route.service_code, now, message.its_session_info)
        skip = len(route.service_code.split("*")) - 1
        ctx = make(dialogue, args=dialled.parts[skip:], dialled=dialled)
        if open_dialogue is not None:
            log.info("ussd_dialogue_replaced", msisdn=msisdn, old=open_dialogue.service_code)
        log.info("ussd_dialogue_started", msisdn=msisdn, service=route.service_code)
        await route.handler(ctx)
        return UssdOutcome(route.handler.__qualname__, _done(ctx))

    if kind is MoKind.ANSWER:
        if open_dialogue is None:
            log.info("ussd_answer_without_dialogue", msisdn=msisdn)
            ctx = make(UssdDialogue.dial(msisdn, "", now), answer=message.text)
            await ctx.end(NO_DIALOGUE, audit=[AuditEvent("ussd_late_answer", Channel.USSD, outcome="no_dialogue")])
            return UssdOutcome("ussd.no_dialogue", _done(ctx))
        expect = open_dialogue.version
        try:
            open_dialogue.answer(now, timeouts, message.its_session_info)
        except DialogueExpired as err:
            log.info("ussd_dialogue_timed_out", msisdn=msisdn, service=open_dialogue.service_code, reason=str(err))
            late = UssdDialogue.dial(msisdn, open_dialogue.service_code, now)
            ctx = make(late, answer=message.text, expect=expect)
            await ctx.end(err.reply, audit=[AuditEvent("ussd_late_answer", Channel.USSD, outcome="timed_out",
                                                       detail=str(err))])
            return UssdOutcome("ussd.timed_out", _done(ctx))
        ctx = make(open_dialogue, answer=message.text, expect=expect)
        if PAGES in open_dialogue.data:  # the next page of a closing text, whatever was answered
            rest: list[str] = open_dialogue.data[PAGES]
            if len(rest) > 1:
                open_dialogue.data = {PAGES: rest[1:]}
                await ctx.show(rest[0])
            else:
                await ctx.end(rest[0])
            return UssdOutcome("ussd.pages", _done(ctx))
        route = find_route(router, settings, open_dialogue.service_code)
        if route is None:  # the service went away mid-dialogue (a reconfigured gateway)
            await ctx.end(UNSUPPORTED, audit=[AuditEvent("ussd_unknown_code", Channel.USSD, outcome="gone")])
            return UssdOutcome("ussd.gone", _done(ctx))
        await route.handler(ctx)
        return UssdOutcome(route.handler.__qualname__, _done(ctx))

    if kind is MoKind.ABORT:  # the network already closed the dialogue on the phone: nothing to show
        log.info("ussd_aborted", msisdn=msisdn, op=message.ussd_service_op, had_dialogue=open_dialogue is not None)
        result = await store.commit(msisdn, message.once() + Change(
            dialogue=DialogueStep(None, expect=open_dialogue.version if open_dialogue is not None else None),
            audit=(AuditEvent("ussd_aborted", Channel.USSD, detail=f"op={message.ussd_service_op}"),),
            create_profile=True))
        if result.outcome is Outcome.CONFLICT:
            raise StepConflict("abort")
        return UssdOutcome("ussd.abort", result)

    if kind is MoKind.NOTICE_ACK:  # the phone saw a USSN notice; the MO is marked, nothing else
        result = await store.commit(msisdn, message.once() + Change(
            audit=(AuditEvent("ussn_confirmed", Channel.USSD),), create_profile=True))
        return UssdOutcome("ussd.notice_ack", result)

    log.info("ussd_unsupported_op", msisdn=msisdn, op=message.ussd_service_op)
    ctx = make(UssdDialogue.dial(msisdn, "", now))
    await ctx.end(UNSUPPORTED, audit=[AuditEvent("ussd_unsupported", Channel.USSD, outcome="refused",
                                                 detail=f"op={message.ussd_service_op}")])
    return UssdOutcome("ussd.unsupported", _done(ctx))


def _done(ctx: UssdContext) -> CommitResult:
    if ctx.result is None:
        raise RuntimeError(f"USSD handler for *{ctx.dialogue.service_code}# answered nothing")
    return ctx.result
