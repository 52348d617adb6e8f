"""USSD apps over HTTP, in the convention most USSD developers know (Africa's Talking).

For each step the gateway POSTs a form to the app's URL:

    sessionId    the dialogue's id (the same for every step of one dialogue)
    serviceCode  the dialled code, e.g. *500#
    phoneNumber  the subscriber, +E.164 (+79161234567)
    networkCode  MCC+MNC of the operator (settings.ussd_network_code)
    text         the subscriber's inputs so far joined by `*` ("" at the dial, then "1", "1*2", ...);
                 extras in the dialled string count as inputs: *500*1# starts with text "1"

and the app answers plain text: `CON <screen>` (show and wait) or `END <screen>` (show and close).
An app that answers too slowly (`ussd_http_timeout_s`), with an HTTP error, or with anything else
ends the dialogue with a clear message; the failure is audited and logged, never shown raw.
Routes come from settings: `ussd_http_apps = {"500": "http://127.0.0.1:8090/ussd"}`.
"""

from __future__ import annotations

import aiohttp

from handlers.base import Channel, Context, Handler
from ussdgw.logs import get_logger
from ussdgw.store import AuditEvent

log = get_logger("ussdgw.handlers.ussd_http_app")

APP_FAILED = "Сервис временно недоступен. Попробуйте позже."
APP_ENDED = "Сеанс завершён."


class AppFailed(Exception):
    """The app did not answer in the convention (timeout, HTTP error, garbage)."""


def parse_app_reply(body: str) -> tuple[bool, str]:
    """(close, text) from `CON text` / `END text`; raises `AppFailed` for anything else."""
    stripped = body.strip()
    head, _, text = stripped.partition(" ")
    if head == "END":
        return True, text.strip() or APP_ENDED
    if head == "CON" and text.strip():
        return False, text.strip()
    raise AppFailed(f"reply is not 'CON <text>' or 'END <text>' ({len(body)} characters)")


def http_app_handler(url: str) -> Handler:
    """A route handler that runs the dialogue on the app at `url`."""

    async def http_app(ctx: Context) -> None:
        ussd = ctx.ussd_step()
        dialogue = ussd.dialogue
        inputs: list[str] = dialogue.data.setdefault("inputs", [])
        if ussd.is_dial:
            inputs[:] = list(ussd.args)
        else:
            inputs.append((ussd.answer or "").strip())
        form = {
            "sessionId": dialogue.dialogue_id, "serviceCode": f"*{dialogue.service_code}#",
            "phoneNumber": f"+{ctx.msisdn}", "networkCode": ctx.settings.ussd_network_code, "text": "*".join(inputs),
        }
        try:
            timeout = aiohttp.ClientTimeout(total=ctx.settings.ussd_http_timeout_s)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.post(url, data=form) as resp:
                if resp.status != 200:
                    raise AppFailed(f"HTTP {resp.status}")
                body = await resp.text()
            close, text = parse_app_reply(body)
        except (AppFailed, aiohttp.ClientError, TimeoutError, UnicodeDecodeError) as exc:
            reason = str(exc) or type(exc).__name__
            log.warning("ussd_app_failed", msisdn=ctx.msisdn, service=dialogue.service_code, reason=reason)
            await ctx.end(APP_FAILED, audit=[AuditEvent("ussd_app_failed", Channel.USSD, outcome="failed",
                                                         detail=f"service={dialogue.service_code} {reason}")])
            return
        event = AuditEvent("ussd_app_step", Channel.USSD, detail=f"service={dialogue.service_code} "
                                                                 f"{'end' if close else 'con'} step={len(inputs)}")
        if close:
            await ctx.end(text, audit=[event])
        else:
            await ctx.show(text, audit=[event])

    http_app.__qualname__ = f"ussd_http_app[{url}]"
    return http_app
