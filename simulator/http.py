"""The simulator's HTTP API: what the CLI, the web phone and test scripts drive phones with.

    GET  /api/health
    GET  /api/phones                              every phone and its settings
    GET  /api/phones/{msisdn}                     one phone's settings
    PATCH /api/phones/{msisdn}                    {"power": "off", "inbox_full": true, ...}
    POST /api/phones/{msisdn}/sms                 {"to": "3339", "text": "ПАРОЛЬ"} -> queued MO ids
    GET  /api/phones/{msisdn}/inbox?after=N&wait=S  inbox entries after seq N, waiting up to S s
    GET  /api/phones/{msisdn}/pdus                the PDUs exchanged for this phone
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from simulator.phones import Power
from simulator.smsc import Smsc

SMSC_KEY = web.AppKey("smsc", Smsc)
MSISDN = re.compile(r"^\+?\d{5,15}$")
SHORT_CODE = re.compile(r"^[\d*#+]{1,21}$")
MAX_TEXT = 1600


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _msisdn(request: web.Request) -> str:
    msisdn = request.match_info["msisdn"].lstrip("+")
    if not MSISDN.match(msisdn):
        raise web.HTTPBadRequest(text='{"error": "msisdn must be 5-15 digits"}', content_type="application/json")
    return msisdn


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "body must be JSON"}', content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text='{"error": "body must be a JSON object"}', content_type="application/json")
    return body


async def health(request: web.Request) -> web.Response:
    smsc = request.app[SMSC_KEY]
    binds = [{"system_id": c.session.system_id, "state": c.session.state.name} for c in smsc.connections]
    return web.json_response({"status": "ok", "smpp_port": smsc.port, "binds": binds})


async def list_phones(request: web.Request) -> web.Response:
    phones = request.app[SMSC_KEY].phones.phones.values()
    return web.json_response({"phones": [p.settings() for p in phones]})


async def get_phone(request: web.Request) -> web.Response:
    return web.json_response(request.app[SMSC_KEY].phones.get(_msisdn(request)).settings())


async def patch_phone(request: web.Request) -> web.Response:
    msisdn = _msisdn(request)
    body = await _json(request)
    phones = request.app[SMSC_KEY].phones
    phone = phones.get(msisdn)
    if "power" in body:
        try:
            power = Power(body["power"])
        except ValueError:
            return _error(400, f"power must be one of {[p.value for p in Power]}")
        phones.set_power(msisdn, power)
    for flag in ("inbox_full", "unknown_number"):
        if flag in body:
            if not isinstance(body[flag], bool):
                return _error(400, f"{flag} must be true or false")
            setattr(phone, flag, body[flag])
    if "blocked_senders" in body:
        senders = body["blocked_senders"]
        if not isinstance(senders, list) or not all(isinstance(s, str) for s in senders):
            return _error(400, "blocked_senders must be a list of strings")
        phone.blocked_senders = set(senders)
    await phones.notify()
    return web.json_response(phone.settings())


async def send_sms(request: web.Request) -> web.Response:
    msisdn = _msisdn(request)
    body = await _json(request)
    to, text = body.get("to"), body.get("text", "")
    if not isinstance(to, str) or not SHORT_CODE.match(to):
        return _error(400, "to must be a short code or number")
    if not isinstance(text, str) or len(text) > MAX_TEXT:
        return _error(400, f"text must be a string of at most {MAX_TEXT} characters")
    smsc = request.app[SMSC_KEY]
    queued = smsc.submit_mo(msisdn, to, text)
    return web.json_response({"mo_ids": [m.mo_id for m in queued], "inbox_seq": smsc.phones.last_seq}, status=202)


async def inbox(request: web.Request) -> web.Response:
    msisdn = _msisdn(request)
    try:
        after = int(request.query.get("after", "0"))
        wait = min(float(request.query.get("wait", "0")), 60.0)
    except ValueError:
        return _error(400, "after and wait must be numbers")
    phones = request.app[SMSC_KEY].phones
    messages = await phones.wait_inbox(msisdn, after, wait) if wait > 0 else [
        m for m in phones.get(msisdn).inbox if m.seq > after]
    return web.json_response({"messages": [m.to_dict() for m in messages], "last_seq": phones.last_seq})


async def pdus(request: web.Request) -> web.Response:
    msisdn = _msisdn(request)
    entries = list(request.app[SMSC_KEY].phones.pdu_log.get(msisdn, ()))
    return web.json_response({"pdus": entries})


def create_app(smsc: Smsc) -> web.Application:
    app = web.Application()
    app[SMSC_KEY] = smsc
    app.router.add_get("/api/health", health)
    app.router.add_get("/api/phones", list_phones)
    app.router.add_get("/api/phones/{msisdn}", get_phone)
    app.router.add_patch("/api/phones/{msisdn}", patch_phone)
    app.router.add_post("/api/phones/{msisdn}/sms", send_sms)
    app.router.add_get("/api/phones/{msisdn}/inbox", inbox)
    app.router.add_get("/api/phones/{msisdn}/pdus", pdus)
    return app
