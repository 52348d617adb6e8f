"""USSD dialogues for handlers: the gateway's one entry point, which gives each MO its context and dialogue step.

`handle_ussd` takes every USSD MO (PROTOCOL.md "USSD over SMPP"):

- a dial (ussd_service_op 1, or 0) parses the string (TS 22.030), finds the route by the longest
  registered prefix (`*111*828*1#` -> `111*828`, the rest `1` are the app's `args`), replaces
  whatever dialogue the phone had open, and runs the route's handler;
- an answer (18) loads the phone's dialogue from Redis (any gateway process may get any step),
  refuses it politely when it came too late, and runs the handler of the dialogue's service;
- a release from the network (0x81, 16, 17, or the end-of-session bit) drops the dialogue;
- anything else ends the dialogue with a clear message. Never silence, never a crash.

Each MO gets the one request `Context` (`handlers.base`) with the dialogue step as its `ussd`
part. A handler shows a screen with `await ctx.show(text)` (USSR request: the phone shows it and
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
import functools
from dataclasses import dataclass
from typing import Any

from handlers.base import PAGES, Channel, Context, InboundMessage, StepConflict, UssdStep
from handlers.ports import Platform
from handlers.routing import Router, UssdRoute
from ussdgw.config import Settings
from ussdgw.logs import get_logger
from ussdgw.smpp.ussd import (
    DialogueExpired,
    MalformedUssdString,
    MoKind,
    Timeouts,
    UssdDialogue,
    classify_op,
    parse_ussd_string,
)
from ussdgw.store import AuditEvent, Change, CommitResult, DialogueStep, Outcome
from ussdgw.store.dialogues import StepRead

log = get_logger("ussdgw.handlers.ussd")

CONTENT_ONLY_DIAL_TTL_S = 30  # a dial identified by its text alone is deduplicated this long
MAX_CONFLICT_RETRIES = 3

NO_DIALOGUE = "Сеанс USSD уже завершён. Наберите запрос ещё раз, например *111#."
UNSUPPORTED = "Этот тип USSD-запроса не поддерживается. Наберите *111# для меню."


def timeouts_of(settings: Settings) -> Timeouts:
    return _timeouts(settings.ussd_step_timeout_s, settings.ussd_dialogue_timeout_s)


@functools.lru_cache(maxsize=16)
def _timeouts(step_s: float, dialogue_s: float) -> Timeouts:
    """One `Timeouts` per configuration, not one per step."""
    return Timeouts(step_s=step_s, dialogue_s=dialogue_s)


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


async def handle_ussd(message: InboundMessage, platform: Platform, router: Router, *,
                      first: StepRead | None = None) -> UssdOutcome:
    """Handle one USSD MO from start to commit; the caller sends `result.messages`.

    `first`: what `Dialogues.step_read` gave the caller just now (the first try uses it, a retry
    reads again)."""
    for _ in range(MAX_CONFLICT_RETRIES):
        try:
            return await _handle_once(message, platform, router, first)
        except StepConflict:
            log.info("ussd_step_conflict", msisdn=message.msisdn)
            first = None
    raise RuntimeError("USSD dialogue kept changing under this step")


def content_only(message: InboundMessage) -> bool:
    """Nothing but the text identifies this MO (no user_message_reference, no its_session_info)."""
    return message.content_only and message.its_session_info is None


async def _handle_once(message: InboundMessage, platform: Platform, router: Router,
                       first: StepRead | None) -> UssdOutcome:
    store, settings = platform.store, platform.settings
    msisdn = message.msisdn
    kind = classify_op(message.ussd_service_op, message.its_session_info)
    if content_only(message) and kind is MoKind.DIAL:  # the same string dialled again later is a new dial
        message = dataclasses.replace(message, mo_ttl_s=CONTENT_ONLY_DIAL_TTL_S)
    applied, raw = (first.applied, first.dialogue) if first is not None else await store.dialogues.load(
        msisdn, message.mo_id)
    stored_profile = first.profile if first is not None else None
    open_dialogue = UssdDialogue.from_json(raw) if raw is not None else None
    if content_only(message) and kind is MoKind.ANSWER and open_dialogue is not None:
        # "2" answered on two screens is two answers: the step tells them apart (the commit still
        # refuses the same answer twice at the same step)
        message = dataclasses.replace(message, mo_id=f"{message.mo_id}:{open_dialogue.version}")
        applied = False
    if applied:  # a redelivered MO: the same reply again, nothing changes
        result = await store.commit(msisdn, message.once() + Change(create_profile=True))
        return UssdOutcome("ussd.duplicate", result)
    now = platform.now()
    timeouts = timeouts_of(settings)

    def make(dialogue: UssdDialogue, **extra: Any) -> Context:
        return Context(platform, message, ussd=UssdStep(dialogue, timeouts, **extra), stored_profile=stored_profile)

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
        # The step's canonical line (the gateway's `mo_handled`) names the handler; the metrics count the start.
        log.debug("ussd_dialogue_started", msisdn=msisdn, service=route.service_code)
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


def _done(ctx: Context) -> CommitResult:
    if ctx.result is None:
        raise RuntimeError(f"USSD handler for *{ctx.ussd_step().dialogue.service_code}# answered nothing")
    return ctx.result
