"""The simulator's HTTP API: what the CLI, the web phone, scenarios and test scripts drive phones with.

    GET  /                                         the web phone (simulator/web/)
    GET  /api/health
    GET  /metrics                                  Prometheus text format: MOs delivered/retried, MT fates, binds
    GET  /api/services                             the short codes and USSD strings the platform serves
    GET  /api/phones                               every phone and its settings
    POST /api/phones                               {"msisdn": "79161234567"} -> a new phone (or the one there)
    GET  /api/phones/{msisdn}                      one phone's settings (faults, counts)
    PATCH /api/phones/{msisdn}                     faults: {"power": "off"|"airplane"|"on", "inbox_full": true,
                                                   "unknown_number": true, "blocked_senders": ["3339"]}
    GET  /api/phones/{msisdn}/state?version=N&wait=S  everything at once: settings, inbox, network log,
                                                   outbox, USSD dialogue, PDU log (after a change past N)
    GET  /api/phones/{msisdn}/events               the same, then every change, as server-sent events
    POST /api/phones/{msisdn}/sms                  {"to": "3339", "text": "ПАРОЛЬ"} -> queued MO ids; to another
                                                   subscriber ("+79261234567"): phone to phone, not the platform
    GET  /api/phones/{msisdn}/inbox?after=N&wait=S  inbox entries after seq N, waiting up to S s
    DELETE /api/phones/{msisdn}/inbox              empty the inbox
    GET  /api/phones/{msisdn}/network              every MT addressed to the phone with its fate
    GET  /api/phones/{msisdn}/outbox               every MO the phone sent, with its state
    GET  /api/phones/{msisdn}/pdus                 the PDUs exchanged for this phone (each with every field)
    GET  /api/phones/{msisdn}/subscriber           its account on the platform, through the self-care API
                                                   (`sim_selfcare_url`; 404 when the simulator has none)
    GET  /api/phones/{msisdn}/ussd?version=N&wait=S  the USSD dialogue (waiting for a change after N)
    POST /api/phones/{msisdn}/ussd/dial            {"code": "*100#", "wait": 10} -> the dialogue once the
                                                   network answered (state "waiting" or "closed")
    POST /api/phones/{msisdn}/ussd/answer          {"text": "1", "wait": 10}
    POST /api/phones/{msisdn}/ussd/cancel          close the popup; ends an open dialogue towards the network
    GET  /api/clock                                {"now": ..., "offset": ...}: the simulator's time
    POST /api/clock/advance                        {"seconds": 3600}: fast-forward held MTs and time hooks
    POST /api/clock/reset                          the simulator's clock back to real time
    GET  /api/mts?msisdn=...                       the SMSC's record of every MT (state, error, receipt asked)

Bad input gets a 400 with {"error": "...", "field": "...", "code": "..."} (`code` for a screen to word it in
its own language) and changes nothing: that includes what no SMPP PDU could carry (an address over 20
characters, a USSD string that is not one, an answer over one USSD message), refused before it
reaches the encoder. A USSD move the dialogue or the phone does not allow now (answering when
nothing was asked, dialling from a phone that is off) gets a 409. A phone gives up on a dialogue the network left
open past `sim_ussd_timeout_s`, and on a request the network refused: its USSD state then shows
"closed" with the reason, never "sent" for ever.
A body is JSON only (`ussdgw.web`: 415 for another media type or charset, 413 past `MAX_BODY`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from simulator.handset import Handsets
from simulator.phones import Phone, PhoneBookFull, PhoneOffline, Power, UssdDialogue, UssdError
from simulator.selfcare_link import SelfcareLink, SelfcareRefused
from simulator.smsc import MoRefused, Smsc
from ussdgw.inputs import parse_address, parse_whole_number
from ussdgw.metrics import CONTENT_TYPE, exposition
from ussdgw.smpp.ussd import MalformedUssdString
from ussdgw.web import BROWSER_DIR, BROWSER_SCRIPTS, BadInput, body_timeout, host_allowed, read_json_object

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
SMSC_KEY = web.AppKey("smsc", Smsc)
HANDSETS_KEY = web.AppKey("handsets", Handsets)
SERVICES_KEY = web.AppKey("services", dict)
CLOSING_KEY = web.AppKey("closing", asyncio.Event)
ALLOWED_HOSTS_KEY = web.AppKey("allowed_hosts", tuple[str, ...])
SELFCARE_KEY = web.AppKey("selfcare", SelfcareLink)
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
WEB_DIR = Path(__file__).parent / "web"
MAX_BLOCKED = 100
MAX_USSD = 182  # characters of one USSD string (GSM 7-bit, 160 octets)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
SHORT_CODE = re.compile(r"^[0-9*#+]{1,20}\Z")  # an SMPP address: 20 octets at most
MAX_TEXT = 1600
MAX_WAIT_S = 60.0
MAX_BODY = 64 * 1024
SSE_IDLE_CHECK_S = 10.0


def _body(message: str, field: str | None, code: str | None) -> dict[str, str]:
    body = {"error": message}
    if field is not None:
        body["field"] = field
    if code is not None:
        body["code"] = code
    return body


class BadRequest(web.HTTPBadRequest):
    """A 400 with {"error", "field", "code"}: `code` names the refusal for a screen that words it
    in its own language (the web phone's Russian texts), `field` the input it concerns."""

    def __init__(self, message: str, field: str | None = None, code: str | None = None) -> None:
        super().__init__(text=json.dumps(_body(message, field, code), ensure_ascii=False),
                         content_type="application/json")


def refusal(status: int, part: str) -> bytes:
    """The simulator's error body for a request its server could not even parse (`ussdgw.web.serve`)."""
    reason = {414: "request line too long", 431: "request headers too large"}.get(status, f"malformed {part}")
    return _dumps({"error": f"unparseable request: {reason}", "field": part}).encode()


def _error(status: int, message: str, field: str | None = None, code: str | None = None) -> web.Response:
    return web.json_response(_body(message, field, code), status=status, dumps=_dumps)


@web.middleware
async def same_machine(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Only for clients on this machine that mean this server: the Host must be a loopback name or
    address, or the configured host (a page from another site that rebinds its own name to
    127.0.0.1 still sends that name: 421); a state-changing request must say it is JSON (a form
    or `text/plain` POST, which any page may send across sites without asking, gets 415)."""
    allowed: tuple[str, ...] = request.app[ALLOWED_HOSTS_KEY]
    if not host_allowed(request.headers.get("Host"), allowed):
        return _error(421, "this simulator answers only to localhost, 127.0.0.1, [::1] or its configured host",
                      "Host")
    if request.method in STATE_CHANGING and request.content_type != "application/json":
        return _error(415, "a request that changes something must be Content-Type: application/json",
                      "Content-Type")
    return await handler(request)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as JSON: bad bodies (`BadInput`) and aiohttp's own (404, 405, 413)."""
    try:
        return await handler(request)
    except BadInput as exc:
        return _error(exc.status, exc.message, exc.field)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        return _error(exc.status, exc.reason)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def _ok(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=_dumps)


def _msisdn_of(value: Any) -> str:
    address = parse_address(value)
    if address is None:
        raise BadRequest("msisdn must be 5-15 digits", "msisdn")
    return address


def _msisdn(request: web.Request) -> str:
    return _msisdn_of(request.match_info["msisdn"])


def _phone(request: web.Request) -> Phone:
    """The phone of the path; only a POST makes one (`create_phone`, an SMS, a dial), never a look."""
    msisdn = _msisdn(request)
    phone = request.app[SMSC_KEY].phones.find(msisdn)
    if phone is None:
        raise web.HTTPNotFound(text=_dumps({"error": f"no phone {msisdn}: POST /api/phones makes one",
                                            "field": "msisdn"}), content_type="application/json")
    return phone


async def _json(request: web.Request) -> dict[str, Any]:
    return await read_json_object(request, max_bytes=MAX_BODY, timeout_s=body_timeout(request), optional=True)


def _number(value: Any, name: str, *, default: float, low: float = 0.0, high: float = MAX_WAIT_S) -> float:
    """A JSON number, or a decimal string from a query, within [low, high]."""
    if value is None:
        return default
    try:
        if isinstance(value, bool) or not isinstance(value, int | float | str) or len(str(value)) > 32:
            raise ValueError(name)
        number = float(value)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name} must be a number", name) from None
    if not low <= number <= high:  # NaN is in no range
        raise BadRequest(f"{name} must be between {low:g} and {high:g}", name)
    return number


def _counter(request: web.Request, name: str, default: int) -> int:
    """A sequence number or version from the query: ASCII digits, or -1."""
    raw = request.query.get(name)
    if raw is None:
        return default
    value = -1 if raw == "-1" else parse_whole_number(raw, maximum=2**53)
    if value is None:
        raise BadRequest(f"{name} must be a whole number", name)
    return value


async def health(request: web.Request) -> web.Response:
    smsc = request.app[SMSC_KEY]
    binds = [{"system_id": c.session.system_id, "state": c.session.state.name} for c in smsc.connections]
    return _ok({"status": "ok", "smpp_port": smsc.port, "binds": binds,
                "selfcare": bool(request.app[SELFCARE_KEY].base_url)})


async def metrics(request: web.Request) -> web.Response:
    """The simulator's own counters in Prometheus' text format (MOs delivered and retried, MT fates, binds)."""
    body = exposition(request.app[SMSC_KEY].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def services(request: web.Request) -> web.Response:
    return _ok(request.app[SERVICES_KEY])


async def list_phones(request: web.Request) -> web.Response:
    phones = request.app[SMSC_KEY].phones.phones.values()
    return _ok({"phones": [p.settings() for p in phones]})


async def create_phone(request: web.Request) -> web.Response:
    msisdn = _msisdn_of((await _json(request)).get("msisdn"))
    phones = request.app[SMSC_KEY].phones
    existed = msisdn in phones.phones
    try:
        made = phones.get(msisdn)
    except PhoneBookFull as exc:
        return _error(429, f"{exc}: no more can be made", "msisdn")
    return _ok(made.settings(), status=200 if existed else 201)


async def get_phone(request: web.Request) -> web.Response:
    return _ok(_phone(request).settings())


async def patch_phone(request: web.Request) -> web.Response:
    msisdn = _phone(request).msisdn
    body = await _json(request)
    unknown = set(body) - {"power", "inbox_full", "unknown_number", "blocked_senders"}
    if unknown:
        raise BadRequest(f"unknown settings {sorted(unknown)}", sorted(unknown)[0])
    power = None
    if "power" in body:
        try:
            power = Power(body["power"])
        except (ValueError, TypeError):
            raise BadRequest(f"power must be one of {[p.value for p in Power]}", "power") from None
    for flag in ("inbox_full", "unknown_number"):
        if flag in body and not isinstance(body[flag], bool):
            raise BadRequest(f"{flag} must be true or false", flag)
    senders = body.get("blocked_senders")
    if senders is not None and (not isinstance(senders, list) or len(senders) > MAX_BLOCKED
                                or not all(isinstance(s, str) and SHORT_CODE.match(s) for s in senders)):
        raise BadRequest(f"blocked_senders must be a list of at most {MAX_BLOCKED} short codes or numbers",
                         "blocked_senders")
    phone = request.app[SMSC_KEY].phones.set_faults(
        msisdn, power=power, inbox_full=body.get("inbox_full"), unknown_number=body.get("unknown_number"),
        blocked_senders=set(senders) if senders is not None else None,
    )
    return _ok(phone.settings())


async def state(request: web.Request) -> web.Response:
    """The snapshot; with ?version=N&wait=S, once the phone changed after version N (a long poll)."""
    msisdn = _phone(request).msisdn
    phones = request.app[SMSC_KEY].phones
    wait = _number(request.query.get("wait"), "wait", default=0.0)
    version = _counter(request, "version", -1)
    if wait > 0 and version >= 0:
        await phones.wait_phone(msisdn, version, wait)
    return _ok(phones.snapshot(msisdn))


async def events(request: web.Request) -> web.StreamResponse:
    """A snapshot, then every change of the phone, until the viewer leaves or the server stops.
    A viewer too slow to keep up is disconnected; EventSource reconnects and gets a fresh snapshot."""
    msisdn = _phone(request).msisdn
    phones = request.app[SMSC_KEY].phones
    closing = request.app[CLOSING_KEY]
    async with sse_response(request) as sse:
        with phones.subscribe(msisdn) as feed, contextlib.suppress(ConnectionResetError):  # the viewer left
            await sse.send(_dumps(phones.snapshot(msisdn)), event="snapshot")
            while sse.is_connected() and not feed.overflowed and not closing.is_set():
                try:
                    event = await asyncio.wait_for(feed.queue.get(), SSE_IDLE_CHECK_S)
                except TimeoutError:
                    continue
                if event.kind == "bye":
                    break
                await sse.send(_dumps(event.data), event=event.kind)
    return sse


async def send_sms(request: web.Request) -> web.Response:
    msisdn = _msisdn(request)
    body = await _json(request)
    to, text = body.get("to"), body.get("text", "")
    if not isinstance(to, str) or not SHORT_CODE.match(to):
        raise BadRequest("to must be a short code or number", "to")
    if not isinstance(text, str) or len(text) > MAX_TEXT or _SURROGATE.search(text):
        raise BadRequest(f"text must be a string of at most {MAX_TEXT} characters", "text")
    handsets = request.app[HANDSETS_KEY]
    after = handsets.phones.last_seq
    try:
        entry = handsets.send_sms(msisdn, to, text)
    except MoRefused as exc:
        raise BadRequest(str(exc), exc.field, exc.code) from None
    return _ok({"mo_ids": entry.mo_ids, "outbox_id": entry.id, "inbox_seq": after}, status=202)


async def inbox(request: web.Request) -> web.Response:
    msisdn = _phone(request).msisdn
    after = _counter(request, "after", 0)
    wait = _number(request.query.get("wait"), "wait", default=0.0)
    phones = request.app[SMSC_KEY].phones
    messages = await phones.wait_inbox(msisdn, after, wait) if wait > 0 else [
        m for m in phones.get(msisdn).inbox if m.seq > after]
    return _ok({"messages": [m.to_dict() for m in messages], "last_seq": phones.last_seq})


async def clear_inbox(request: web.Request) -> web.Response:
    return _ok({"removed": request.app[SMSC_KEY].phones.clear_inbox(_phone(request).msisdn)})


async def network(request: web.Request) -> web.Response:
    return _ok({"mts": [e.to_dict() for e in _phone(request).network]})


async def outbox(request: web.Request) -> web.Response:
    return _ok({"sent": [o.to_dict() for o in _phone(request).outbox]})


async def pdus(request: web.Request) -> web.Response:
    msisdn = _phone(request).msisdn
    entries = request.app[SMSC_KEY].phones.pdu_entries(msisdn)
    return _ok({"pdus": entries})


async def _dialogue_after(request: web.Request, msisdn: str, dialogue: UssdDialogue, version: int,
                          wait: float) -> web.Response:
    if wait > 0:
        dialogue = await request.app[HANDSETS_KEY].wait_ussd(msisdn, version, wait)
    return _ok(dialogue.to_dict())


async def ussd_get(request: web.Request) -> web.Response:
    phone = _phone(request)
    msisdn = phone.msisdn
    version = _counter(request, "version", -1)
    wait = _number(request.query.get("wait"), "wait", default=0.0)
    dialogue = phone.ussd
    if wait > 0 and version >= 0:
        dialogue = await request.app[HANDSETS_KEY].wait_ussd(msisdn, version, wait)
    return _ok(dialogue.to_dict())


async def ussd_dial(request: web.Request) -> web.Response:
    msisdn = _msisdn(request)
    body = await _json(request)
    code, wait = body.get("code"), _number(body.get("wait"), "wait", default=0.0)
    if not isinstance(code, str) or len(code) > MAX_USSD:
        raise BadRequest(f"code must be a USSD string like *100# of at most {MAX_USSD} characters", "code",
                         "ussd_too_long" if isinstance(code, str) else "bad_code")
    handsets = request.app[HANDSETS_KEY]
    try:
        dialogue = handsets.dial(msisdn, code)
    except PhoneOffline as exc:
        return _error(409, str(exc), "code", f"phone_{exc.why}")
    except MalformedUssdString as exc:
        raise BadRequest(str(exc), "code", "malformed_ussd") from None
    except UssdError as exc:
        return _error(409, str(exc), "code", "ussd_busy")
    except MoRefused as exc:
        raise BadRequest(str(exc), exc.field, exc.code) from None
    return await _dialogue_after(request, msisdn, dialogue, dialogue.version, wait)


async def ussd_answer(request: web.Request) -> web.Response:
    msisdn = _phone(request).msisdn
    body = await _json(request)
    text, wait = body.get("text"), _number(body.get("wait"), "wait", default=0.0)
    if not isinstance(text, str) or len(text) > MAX_USSD:
        raise BadRequest(f"text must be a string of at most {MAX_USSD} characters", "text")
    handsets = request.app[HANDSETS_KEY]
    try:
        dialogue = handsets.answer(msisdn, text)
    except MoRefused as exc:
        raise BadRequest(str(exc), "text", "ussd_answer_too_long") from None
    except UssdError as exc:
        return _error(409, str(exc), None, "nothing_asked")
    return await _dialogue_after(request, msisdn, dialogue, dialogue.version, wait)


async def ussd_cancel(request: web.Request) -> web.Response:
    return _ok(request.app[HANDSETS_KEY].cancel(_phone(request).msisdn).to_dict())


async def subscriber(request: web.Request) -> web.Response:
    """The phone's subscriber as the platform's self-care API shows it (the web phone's panel)."""
    msisdn = _phone(request).msisdn
    link = request.app[SELFCARE_KEY]
    if not link.base_url:
        return _error(404, "the simulator does not know the platform's self-care API (sim_selfcare_url)",
                      None, "no_selfcare")
    try:
        return _ok(await link.account(msisdn))
    except SelfcareRefused as exc:
        return _error(exc.status, exc.text, None, "selfcare")


async def advance_clock(request: web.Request) -> web.Response:
    body = await _json(request)
    seconds = _number(body.get("seconds"), "seconds", default=-1.0, low=0.0, high=366 * 24 * 3600.0)
    if seconds < 0:
        raise BadRequest("seconds is required", "seconds")
    return _ok(await request.app[HANDSETS_KEY].advance_time(seconds))


async def reset_clock(request: web.Request) -> web.Response:
    phones = request.app[SMSC_KEY].phones
    phones.reset_clock()
    return _ok({"offset": phones.clock.offset, "now": phones.clock.now()})


async def clock(request: web.Request) -> web.Response:
    now = request.app[SMSC_KEY].phones.clock
    return _ok({"offset": now.offset, "now": now.now()})


async def mts(request: web.Request) -> web.Response:
    msisdn = request.query.get("msisdn")
    records = request.app[SMSC_KEY].mt_records.values()
    return _ok({"mts": [
        {"message_id": r.message_id, "source": r.source, "destination": r.destination, "state": r.state.name,
         "error": r.error, "submitted_at": r.submitted_at, "done_at": r.done_at,
         "registered_delivery": r.registered_delivery}
        for r in records if msisdn is None or r.destination == msisdn
    ]})


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def browser_script(request: web.Request) -> web.FileResponse:
    """A script the web phone shares with the cabinet's page (`ussdgw/browser/`), one source for both."""
    name = request.path.rsplit("/", 1)[1]
    return web.FileResponse(BROWSER_DIR / name, headers={"Cache-Control": "no-cache"})


async def _say_goodbye(app: web.Application) -> None:
    """Let event streams end at once on shutdown, so that stopping never waits for a browser."""
    app[CLOSING_KEY].set()
    app[SMSC_KEY].phones.close_feeds()


async def _close_handsets(app: web.Application) -> None:
    await app[HANDSETS_KEY].close()
    await app[SELFCARE_KEY].close()


def create_app(smsc: Smsc, *, handsets: Handsets | None = None,
               service_list: dict[str, Any] | None = None, allowed_hosts: tuple[str, ...] = (),
               selfcare: SelfcareLink | None = None) -> web.Application:
    """The simulator's HTTP API. `allowed_hosts`: Host names it answers to besides loopback ones
    (the host it was configured to listen on); `selfcare`: the platform's self-care API, for the
    subscriber panel (its `base_url` may be set once the platform is listening)."""
    app = web.Application(middlewares=[json_errors, same_machine], client_max_size=MAX_BODY)
    app[ALLOWED_HOSTS_KEY] = tuple(h for h in allowed_hosts if h)
    app[SMSC_KEY] = smsc
    app[HANDSETS_KEY] = handsets or Handsets(smsc)
    app[SERVICES_KEY] = service_list or {"sms": [], "ussd": []}
    app[SELFCARE_KEY] = selfcare or SelfcareLink()
    app[CLOSING_KEY] = asyncio.Event()
    app.on_shutdown.append(_say_goodbye)
    app.on_cleanup.append(_close_handsets)
    r = app.router
    r.add_get("/", index)
    for name in BROWSER_SCRIPTS:  # the scripts the cabinet's page loads too, from the core (one source)
        r.add_get(f"/static/{name}", browser_script)
    r.add_static("/static", WEB_DIR, append_version=True)
    r.add_get("/api/health", health)
    r.add_get("/metrics", metrics)
    r.add_get("/api/services", services)
    r.add_get("/api/phones", list_phones)
    r.add_post("/api/phones", create_phone)
    r.add_get("/api/phones/{msisdn}", get_phone)
    r.add_patch("/api/phones/{msisdn}", patch_phone)
    r.add_get("/api/phones/{msisdn}/state", state)
    r.add_get("/api/phones/{msisdn}/events", events)
    r.add_post("/api/phones/{msisdn}/sms", send_sms)
    r.add_get("/api/phones/{msisdn}/inbox", inbox)
    r.add_delete("/api/phones/{msisdn}/inbox", clear_inbox)
    r.add_get("/api/phones/{msisdn}/network", network)
    r.add_get("/api/phones/{msisdn}/outbox", outbox)
    r.add_get("/api/phones/{msisdn}/pdus", pdus)
    r.add_get("/api/phones/{msisdn}/subscriber", subscriber)
    r.add_get("/api/phones/{msisdn}/ussd", ussd_get)
    r.add_post("/api/phones/{msisdn}/ussd/dial", ussd_dial)
    r.add_post("/api/phones/{msisdn}/ussd/answer", ussd_answer)
    r.add_post("/api/phones/{msisdn}/ussd/cancel", ussd_cancel)
    r.add_get("/api/clock", clock)
    r.add_post("/api/clock/advance", advance_clock)
    r.add_post("/api/clock/reset", reset_clock)
    r.add_get("/api/mts", mts)
    return app
