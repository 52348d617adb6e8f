"""The self-care HTTP API (aiohttp): thin JSON in and out around the business functions in
`handlers.account`, `handlers.numbers`, `handlers.money` and `handlers.archives`.

The contract is `gateway/openapi.yaml` (OpenAPI 3.1); the tests validate every request and
response against it. Success: `{"message": <Russian text>, "data": {...}}`. Failure:
`{"error": <code>, "message": <Russian text>, "details": {...}}` with the status of
`handlers.operations.STATUS_BY_CODE`; a refusal has changed nothing. A request whose password hash
the platform's costly-work pool refuses (`ussdgw.costly.Overloaded`: a sign-in storm) gets 503 `busy`
with Retry-After, before any attempt is counted (`handlers.account`).

Auth: `POST /api/v1/sessions` (MSISDN + password) or `POST /api/v1/sessions/network` (P6 header,
trusted networks only) give a bearer token; `{msisdn}` in `/api/v1/accounts/{msisdn}/...` is `me`
or a number the session may act on, as `handlers.access` decides for the route's act (view, manage,
owner, self): its own, one linked with that number's password (N1), one joined with it (N2).
Admin routes want `Authorization: Bearer <admin token>`. The same server serves the cabinet page at
`/` (`gateway/cabinet.py`), which uses nothing but this API.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import math
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from gateway import cabinet
from gateway.observe import READINESS_KEY, count_signin_refusal, count_store_unavailable
from handlers import account, archives, money, number_management, numbers
from handlers.access import Act, Denied, authorize
from handlers.account import Session
from handlers.base import Channel
from handlers.catalogue import catalogue
from handlers.operations import Result, valid_msisdn
from handlers.ports import Platform
from ussdgw.audit_detail import parse as parse_detail
from ussdgw.config import Settings
from ussdgw.costly import Overloaded
from ussdgw.inputs import parse_whole_number
from ussdgw.logs import bound_context, get_logger
from ussdgw.private_files import read_or_create_secret
from ussdgw.store import StoreUnavailable, acting
from ussdgw.tasks import Tasks
from ussdgw.web import BadInput, BodySchema, body_timeout, client_address, networks, read_json_object

log = get_logger("ussdgw.http_api")

PLATFORM_KEY = web.AppKey("platform", Platform)
REQUEST_ID_HEADER = "X-Request-Id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
ADMIN_TOKEN_KEY = web.AppKey("admin_token", str)
SESSION_KEY = web.RequestKey("selfcare_session", Session)
RETRY_AT_KEY = web.ResponseKey("retry_at", float)  # a refusal's retry_at, for the Retry-After header
MAX_BODY = 16 * 1024
API = "/api/v1"
OPENAPI = Path(__file__).with_name("openapi.yaml")
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,64}")
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,256}")  # RFC 6750 b64token, bounded

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_response(data: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """JSON with Cyrillic as is (readable in curl), UTF-8."""
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False)


def ensure_admin_token(settings: Settings) -> str:
    """The configured admin token, or one kept in state_dir/admin.token (mode 0600)."""
    if settings.admin_token.get_secret_value():
        return settings.admin_token.get_secret_value()
    return read_or_create_secret(Path(settings.state_dir) / "admin.token", secrets.token_urlsafe(24))


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}


def _reply(result: Result, status: int = 200) -> web.Response:
    if result.ok:
        return _json_response({"message": result.text, "data": dict(result.data)}, status=status)
    details = dict(result.data)
    if result.retry_at is not None:
        details["retry_at"] = result.retry_at
    response = _json_response({"error": result.code, "message": result.text, "details": details},
                              status=result.status)
    if result.retry_at:
        response[RETRY_AT_KEY] = result.retry_at
    return response


async def _retry_after(request: web.Request, response: web.StreamResponse) -> None:
    """Retry-After of a refusal, counted on the platform's clock (`Platform.clock`), not the host's."""
    retry_at = response.get(RETRY_AT_KEY)
    if retry_at is not None:
        response.headers["Retry-After"] = str(max(1, int(retry_at - request.app[PLATFORM_KEY].now())))


def _error_response(status: int, code: str, message: str, details: dict[str, Any] | None = None, *,
                    headers: dict[str, str] | None = None) -> web.Response:
    return _json_response({"error": code, "message": message, "details": details or {}}, status=status,
                          headers=headers)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure as JSON; one canonical line per request (no bodies, no tokens).

    Every line logged while the request is handled carries its method, route and request id (the
    caller's `X-Request-Id` if it is a plain token, else a new one, echoed in the response).
    """
    started = time.perf_counter()
    request_id = _request_id(request)
    status = 500  # unless a response comes back (a cancelled request has none)
    with bound_context(request_id=request_id, method=request.method, route=_route_name(request)):
        try:
            with acting.scope():  # P10: a request acting on another number says who did it (`_account`)
                response = await _handle(request, handler)
            status = response.status
            if not response.prepared:
                response.headers[REQUEST_ID_HEADER] = request_id
            return response
        finally:
            session = request.get(SESSION_KEY)
            log.info("api_request", status=status, msisdn=session.msisdn if session is not None else None,
                     ms=round((time.perf_counter() - started) * 1000, 1))


async def _handle(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        response = _error_response(exc.status, exc.code, exc.message, exc.details)
        if isinstance(exc.details.get("retry_at"), float):
            response[RETRY_AT_KEY] = exc.details["retry_at"]
        return response
    except BadInput as exc:
        code = {408: "timeout", 413: "too_large", 415: "unsupported_media_type"}.get(exc.status, "bad_request")
        return _error_response(exc.status, code, _bad_input_text(exc), {"field": exc.field})
    except web.HTTPException as exc:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(exc.status, "bad_request")
        text = {404: "Нет такого адреса API.", 405: "Метод не поддерживается.",
                413: "Слишком большой запрос."}.get(exc.status, exc.reason)
        return _error_response(exc.status, code, text)
    except StoreUnavailable:
        count_store_unavailable(request)
        return _error_response(503, "unavailable", "Сервис временно недоступен. Повторите через минуту.")
    except Overloaded as exc:
        return _busy(exc)
    except Exception:
        log.exception("api_failed")
        return _error_response(500, "internal", "Внутренняя ошибка. Мы уже разбираемся.")


def _busy(exc: Overloaded) -> web.Response:
    """503 for a request the costly pool refused: nothing was counted or changed; come back once the
    hashes ahead of it are done (Retry-After, at least 1 s)."""
    wait = max(1, math.ceil(exc.expected_wait_s))
    text = f"Сервис сейчас перегружен. Повторите через {wait} с; ничего не изменено."
    return _error_response(503, "busy", text, {"reason": "costly_work_overloaded", "retry_after_s": wait},
                           headers={"Retry-After": str(wait)})


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER, "")
    return given if _REQUEST_ID.fullmatch(given) else secrets.token_hex(8)


def _bad_input_text(exc: BadInput) -> str:
    if exc.status == 415:
        return "Тело запроса — JSON (Content-Type: application/json; charset=utf-8)."
    if exc.status == 413:
        return "Слишком большой запрос."
    if exc.status == 408:
        return "Тело запроса не пришло вовремя."
    if exc.field == "body":
        return "Тело запроса должно быть JSON-объектом в UTF-8."
    return f"Поле {exc.field}: неверное значение ({exc.message})."


def _route_name(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@functools.cache
def body_schemas() -> Mapping[tuple[str, str], BodySchema]:
    """(method, route) -> the fields its body declares in gateway/openapi.yaml: the contract checks
    what comes in, before any business function sees it."""
    document = yaml.safe_load(OPENAPI.read_text(encoding="utf-8"))
    schemas = {}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {}) if isinstance(operation, dict) else {}
            if "application/json" in content:
                schemas[(method.upper(), API + path)] = BodySchema.from_openapi(content["application/json"]["schema"])
    return schemas


async def _body(request: web.Request, *, optional: bool = False) -> dict[str, Any]:
    """The JSON body, its declared fields checked (`BadInput` names the field that is wrong)."""
    data = await read_json_object(request, max_bytes=MAX_BODY, timeout_s=body_timeout(request), optional=optional)
    schema = body_schemas().get((request.method, _route_name(request)))
    if schema is not None:
        schema.check(data)
    return data


def _bearer(request: web.Request) -> str | None:
    """The bearer token, if the header holds one that could be ours (printable ASCII, bounded)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and _TOKEN.fullmatch(token) else None


def _path_msisdn(request: web.Request, name: str) -> str:
    """A number in the path (`{child}`, `{number}`, ...), or a 400 naming that parameter."""
    value = valid_msisdn(request.match_info[name])
    if value is None:
        raise ApiError(400, "bad_request", f"{name} в адресе: 11 цифр, начиная с 7.", {"field": name})
    return value


async def _session(request: web.Request) -> Session:
    platform = request.app[PLATFORM_KEY]
    found = await account.authenticate(platform, _bearer(request))
    if isinstance(found, Result):
        raise ApiError(found.status, found.code, found.text)
    request[SESSION_KEY] = found
    return found


async def _account(request: web.Request, act: Act = Act.VIEW) -> tuple[Platform, Session, str]:
    """The session and the number it acts on (`me`, or another), if the access model lets the
    session's number do `act` on it (`handlers.access.authorize`, the one check)."""
    platform = request.app[PLATFORM_KEY]
    session = await _session(request)
    raw = request.match_info["msisdn"]
    target = session.msisdn if raw == "me" else valid_msisdn(raw)
    if target is None:
        raise ApiError(400, "bad_request", "Номер в адресе: me или 11 цифр, начиная с 7.", {"field": "msisdn"})
    granted = await authorize(platform.store, session.msisdn, target, act)
    if isinstance(granted, Denied):
        raise ApiError(403, granted.code, granted.text)
    acting.act_as(session.msisdn, f"{Channel.API}:{granted.origin}")
    return platform, session, target


def client(request: web.Request) -> str | None:
    """The client's address: the connection's, or behind `api_trusted_proxies` the one they forward."""
    proxies = request.app[PLATFORM_KEY].settings.api_trusted_proxies
    if not proxies:
        return request.remote
    return client_address(request.remote, request.headers.getall("X-Forwarded-For", []), networks(proxies))


def _count_attempt(request: web.Request) -> None:
    """An attempt at someone's password counts against the client's window (`Platform.attempt`)."""
    refused = request.app[PLATFORM_KEY].attempt(client(request))
    if refused is not None:
        raise ApiError(refused.status, refused.code, refused.text, {"retry_at": refused.retry_at})


def _admin(request: web.Request) -> None:
    token = _bearer(request)
    if token is None:
        raise ApiError(401, "unauthorized", "Нужен токен администратора: Authorization: Bearer <token>.")
    if not hmac.compare_digest(token.encode(), request.app[ADMIN_TOKEN_KEY].encode()):
        raise ApiError(403, "forbidden", "Неверный токен администратора.")


def _operation(act: Act, operation: Callable[..., Awaitable[Result]], *fields: str, path: str | None = None,
               attempt: bool = False) -> Handler:
    """A route that runs one operation on the number in its address, if the session may do `act` on
    it: `operation(platform, number, <each body field named>, <the number in the path named>)`,
    answered as its `Result`. `attempt`: the request tries someone's password (`_count_attempt`)."""

    async def route(request: web.Request) -> web.Response:
        platform, _, target = await _account(request, act)
        body = await _body(request) if fields else {}
        extra = [_path_msisdn(request, path)] if path is not None else []
        if not attempt:
            return _reply(await operation(platform, target, *(body.get(name) for name in fields), *extra))
        with platform.costly.reserved():  # refused (503) before the attempt is counted
            _count_attempt(request)
            return _reply(await operation(platform, target, *(body.get(name) for name in fields), *extra))

    return route


# ---- public ---------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    """The gateway's readiness (Redis and the SMPP binds) where the composition root installed it
    (`gateway.observe`), else whether the store answers."""
    readiness = request.app.get(READINESS_KEY)
    if readiness is None:
        ok = await request.app[PLATFORM_KEY].store.ping()
        return _json_response({"status": "ok" if ok else "degraded"}, status=200 if ok else 503)
    report = await readiness.check()
    return _json_response({"status": "ok" if report.ready else "degraded", "checks": report.checks},
                          status=200 if report.ready else 503)


async def get_catalogue(request: web.Request) -> web.Response:
    cat = catalogue()
    return _json_response({"message": "Тарифы и услуги.", "data": {
        "tariffs": [t.to_dict() for t in cat.tariffs], "services": [s.to_dict() for s in cat.services]}})


async def sign_in(request: web.Request) -> web.Response:
    try:
        body = await _body(request)
        result = await account.sign_in(request.app[PLATFORM_KEY], body.get("msisdn"), body.get("password"),
                                       client=client(request))
    except (BadInput, ApiError) as exc:
        count_signin_refusal(request, "bad_request" if exc.status == 400 else str(exc.status))
        raise
    except Overloaded:
        count_signin_refusal(request, "busy")
        raise
    if not result.ok:
        count_signin_refusal(request, result.code)
    return _reply(result, 201)


async def sign_in_network(request: web.Request) -> web.Response:
    platform = request.app[PLATFORM_KEY]
    header = request.headers.get(platform.settings.api_msisdn_header)
    if header is None:
        count_signin_refusal(request, "bad_request")
        raise ApiError(400, "bad_request", f"Нет заголовка {platform.settings.api_msisdn_header} с номером.")
    result = await account.sign_in_by_header(platform, header, client(request))
    if not result.ok:
        count_signin_refusal(request, result.code)
    return _reply(result, 201)


async def current_session(request: web.Request) -> web.Response:
    session = await _session(request)
    return _json_response({"message": "Сессия активна.", "data": account.session_view(session)})


async def sign_out(request: web.Request) -> web.Response:
    session = await _session(request)
    return _reply(await account.sign_out(request.app[PLATFORM_KEY], session))


async def recover(request: web.Request) -> web.Response:
    body = await _body(request)
    return _reply(await account.recover_by_code_word(request.app[PLATFORM_KEY], body.get("msisdn"),
                                                     body.get("code_word"), body.get("delivery", "sms"),
                                                     client=client(request)))


async def request_password(request: web.Request) -> web.Response:
    """«Получить пароль по SMS» (R1 from the web): the password comes from 3339, D2 limits as the SMS."""
    body = await _body(request)
    return _reply(await account.request_password_by_sms(request.app[PLATFORM_KEY], body.get("msisdn"),
                                                        client=client(request)))


# ---- admin ----------------------------------------------------------------------------------
async def admin_reset(request: web.Request) -> web.Response:
    _admin(request)
    body = await _body(request)
    return _reply(await account.support_reset(request.app[PLATFORM_KEY], body.get("msisdn"), body.get("passport"),
                                              body.get("contract")))


async def admin_unblock(request: web.Request) -> web.Response:
    """N3 by support: the block is lifted after the owner's passport and contract are checked."""
    _admin(request)
    body = await _body(request)
    return _reply(await numbers.support_unblock(request.app[PLATFORM_KEY], body.get("msisdn"), body.get("passport"),
                                                body.get("contract")))


async def admin_charge(request: web.Request) -> web.Response:
    _admin(request)
    body = await _body(request)
    msisdn = valid_msisdn(body.get("msisdn"))
    if msisdn is None:
        raise ApiError(400, "bad_request", "Номер: 11 цифр, начиная с 7.", {"field": "msisdn"})
    reason = body.get("reason", "usage")
    return _reply(await money.charge(request.app[PLATFORM_KEY], msisdn, body.get("amount_kop"),
                                     reason=reason if isinstance(reason, str) else "usage"))


async def admin_audit(request: web.Request) -> web.Response:
    _admin(request)
    msisdn = _path_msisdn(request, "msisdn")
    return _audit_response(await request.app[PLATFORM_KEY].store.audit_trail(msisdn, count=_count(request)))


async def admin_recover(request: web.Request) -> web.Response:
    _admin(request)
    counts = await money.recover_holds(request.app[PLATFORM_KEY], older_than_s=0)
    return _json_response({"message": "Незавершённые операции обработаны.", "data": counts})


# ---- account --------------------------------------------------------------------------------
def _count(request: web.Request) -> int:
    count = parse_whole_number(request.query.get("count", "100"), minimum=1, maximum=1000)
    if count is None:
        raise ApiError(400, "bad_request", "count — целое число от 1 до 1000.", {"field": "count"})
    return count


def _audit_response(entries: list[dict[str, str]]) -> web.Response:
    events = [{"id": e["id"], "ts": float(e.get("ts", 0)), "event": e.get("event", ""), "channel": e.get("channel", ""),
               "outcome": e.get("outcome", ""), "detail": e.get("detail", ""),
               "fields": parse_detail(e.get("detail", ""))} for e in entries]
    return _json_response({"message": f"Событий: {len(events)}.", "data": {"events": events}})


async def get_account(request: web.Request) -> web.Response:
    platform, _, target = await _account(request)
    profile = await platform.store.subscribers.profile(target)
    state = (await numbers.number_state(platform, target)).data
    cat = catalogue()
    tariff = cat.tariff(profile.tariff)
    joined = await numbers.joined_numbers(platform.store, target)  # N2: acted on like linked numbers
    n2_state = profile.n2.state or "off"
    return _json_response({"message": "Личный кабинет.", "data": {
        "msisdn": target, "owner_name": profile.owner_name, "region": profile.region,
        "corporate": profile.corporate, "balance_kop": profile.balance_kop,
        "bonus_points": profile.bonus_points, "tariff": profile.tariff,
        "tariff_name": tariff.name if tariff else "", "services": money.enabled_services(profile),
        "email": profile.email, "state": state["state"], "blocked_from": state.get("blocked_from"),
        "code_word_set": bool(profile.code_word_hash), "n2_state": "active" if joined else n2_state,
        "joined": joined,
    }})


IDEMPOTENCY_PENDING_S = 60  # a claim whose request died unanswered frees the key after this
IDEMPOTENCY_KEEP_S = 24 * 3600  # a first answer is given again this long


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise ApiError(400, "bad_request", "Idempotency-Key: от 1 до 64 печатных символов ASCII.",
                       {"field": "Idempotency-Key"})
    return key


async def _once(request: web.Request, target: str, body: dict[str, Any],
                run: Callable[[], Awaitable[web.Response]]) -> web.Response:
    """A POST that moves money or points, made safe to retry by its `Idempotency-Key`: the same key
    with the same body gets the first answer again (status and body, nothing done twice); with
    another body, 422 naming the header; while the first is still running, 409. Without a key, `run`."""
    key = _idempotency_key(request)
    if key is None:
        return await run()
    platform = request.app[PLATFORM_KEY]
    what = json.dumps([request.method, _route_name(request), target, body], sort_keys=True, ensure_ascii=False)
    fingerprint = hashlib.sha256(what.encode()).hexdigest()
    first = await platform.store.money.idempotency_begin(target, key, fingerprint, IDEMPOTENCY_PENDING_S)
    if first is not None:
        if first.get("fp") != fingerprint:
            raise ApiError(422, "idempotency_key_reused", "Idempotency-Key уже использован для другого запроса: "
                           "для нового запроса нужен новый ключ.", {"field": "Idempotency-Key"})
        if first.get("status") is None:
            raise ApiError(409, "idempotency_in_progress", "Запрос с этим Idempotency-Key ещё выполняется. "
                           "Повторите его позже.", {"field": "Idempotency-Key"})
        log.info("idempotent_replay", msisdn=target, status=first["status"])
        return web.Response(status=int(first["status"]), text=str(first["body"]), content_type="application/json",
                            headers={"Idempotent-Replayed": "true"})
    try:
        response = await run()
    except BaseException:
        await _forget(platform, target, key)
        raise
    if response.status >= 500 or response.status == 429 or not isinstance(response.body, bytes):
        await _forget(platform, target, key)  # not an answer to keep: the retry runs it again
    else:
        await platform.store.money.idempotency_answered(target, key, fingerprint, response.status,
                                                   response.body.decode(), IDEMPOTENCY_KEEP_S)
    return response


async def _forget(platform: Platform, target: str, key: str) -> None:
    try:
        await platform.store.money.idempotency_dropped(target, key)
    except StoreUnavailable:
        log.warning("idempotency_key_left_claimed", msisdn=target, free_in_s=IDEMPOTENCY_PENDING_S)


async def post_top_up(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    body = await _body(request)
    key = _idempotency_key(request)

    async def run() -> web.Response:
        return _reply(await money.top_up(platform, target, body.get("amount_kop"), channel=Channel.API,
                                         payment_id=key))

    return await _once(request, target, body, run)


async def put_service(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    params = (await _body(request, optional=True)).get("params")  # declared: an object
    return _reply(await money.service_on(platform, target, request.match_info["service_id"], channel=Channel.API,
                                         params=params))


async def delete_service(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    return _reply(await money.service_off(platform, target, request.match_info["service_id"], channel=Channel.API))


async def post_payment(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    body = await _body(request)

    async def run() -> web.Response:
        return _reply(await money.easy_payment(platform, target, body.get("merchant"), body.get("amount_kop")))

    return await _once(request, target, body, run)


async def get_calls(request: web.Request) -> web.Response:
    platform, _, target = await _account(request)
    return _reply(await money.call_detail(platform, target, request.query.get("from"), request.query.get("to")))


async def post_gift(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    body = await _body(request)

    async def run() -> web.Response:
        return _reply(await money.gift_points(platform, target, body.get("to"), body.get("points")), 202)

    return await _once(request, target, body, run)


async def post_gift_accept(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    body = await _body(request)

    async def run() -> web.Response:
        return _reply(await money.accept_gift(platform, target, body.get("code")))

    return await _once(request, target, body, run)


async def delete_block(request: web.Request) -> web.Response:
    platform, session, target = await _account(request, Act.MANAGE)
    return _reply(await numbers.unblock_number(platform, target, actor=session.msisdn))


async def post_owner_change(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.OWNER)
    body = await _body(request)

    async def run() -> web.Response:
        return _reply(await numbers.change_owner(platform, target, body.get("new_owner_msisdn"), body.get("password")))

    with platform.costly.reserved():  # refused (503) before the attempt is counted
        _count_attempt(request)
        return await _once(request, target, body, run)


async def put_password(request: web.Request) -> web.Response:
    platform, session, target = await _account(request, Act.SELF)
    body = await _body(request)
    with platform.costly.reserved():  # refused (503) before the attempt is counted
        _count_attempt(request)
        return _reply(await account.change_password(platform, target, body.get("old_password"),
                                                    body.get("new_password"), body.get("new_password_repeat"),
                                                    session=session))


async def post_number_management(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.OWNER)
    body = await _body(request)
    return _reply(await number_management.api_apply(platform, target, body.get("numbers", [])), 202)


async def delete_number_management(request: web.Request) -> web.Response:
    platform, session, target = await _account(request, Act.OWNER)
    return _reply(await number_management.api_off(platform, target, by=session.msisdn))


async def put_locator_consent(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    return _reply(await money.locator_consent(platform, target, _path_msisdn(request, "requester"), True))


async def delete_locator_consent(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    return _reply(await money.locator_consent(platform, target, _path_msisdn(request, "requester"), False))


async def put_parental_block(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    child, number = _path_msisdn(request, "child"), _path_msisdn(request, "number")
    return _reply(await money.parental_blacklist(platform, target, child, number, True))


async def delete_parental_block(request: web.Request) -> web.Response:
    platform, _, target = await _account(request, Act.MANAGE)
    child, number = _path_msisdn(request, "child"), _path_msisdn(request, "number")
    return _reply(await money.parental_blacklist(platform, target, child, number, False))


async def get_audit(request: web.Request) -> web.Response:
    platform, _, target = await _account(request)
    return _audit_response(await platform.store.audit_trail(target, count=_count(request)))


def create_app(platform: Platform, *, admin_token: str | None = None, recovery: bool = True) -> web.Application:
    """The self-care API around `platform` (store, settings, MT sender, mailer, clock)."""
    app = web.Application(middlewares=[errors], client_max_size=MAX_BODY)
    app[PLATFORM_KEY] = platform
    app[ADMIN_TOKEN_KEY] = admin_token or ensure_admin_token(platform.settings)
    app.on_response_prepare.append(_retry_after)

    async def background(app: web.Application) -> AsyncIterator[None]:
        loops = Tasks("selfcare-loops")
        if recovery:
            loops.every(max(1.0, platform.settings.hold_recovery_s / 2), lambda: money.recover_holds(platform),
                        name="hold-recovery", quiet=(StoreUnavailable,))
        yield
        await loops.stop()
        await platform.drain()

    app.cleanup_ctx.append(background)
    cabinet.register_routes(app)  # the cabinet page at / (gateway/cabinet.py), a client of the routes below
    r = app.router
    r.add_get(f"{API}/health", health)
    r.add_get(f"{API}/catalogue", get_catalogue)
    r.add_post(f"{API}/sessions", sign_in)
    r.add_post(f"{API}/sessions/network", sign_in_network)
    r.add_get(f"{API}/sessions/current", current_session)
    r.add_delete(f"{API}/sessions/current", sign_out)
    r.add_post(f"{API}/password-recovery", recover)
    r.add_post(f"{API}/password-requests", request_password)
    r.add_post(f"{API}/admin/password-resets", admin_reset)
    r.add_post(f"{API}/admin/charges", admin_charge)
    r.add_post(f"{API}/admin/unblocks", admin_unblock)
    r.add_get(f"{API}/admin/subscribers/{{msisdn}}/audit", admin_audit)
    r.add_post(f"{API}/admin/holds/recover", admin_recover)
    acc = f"{API}/accounts/{{msisdn}}"
    r.add_get(acc, get_account)
    r.add_get(f"{acc}/balance", _operation(Act.VIEW, money.balance))
    r.add_post(f"{acc}/top-ups", post_top_up)
    r.add_get(f"{acc}/tariffs", _operation(Act.VIEW, money.list_tariffs))
    r.add_put(f"{acc}/tariff", _operation(Act.MANAGE, money.switch_tariff, "tariff_id"))
    r.add_get(f"{acc}/services", _operation(Act.VIEW, money.list_services))
    r.add_put(f"{acc}/services/{{service_id}}", put_service)
    r.add_delete(f"{acc}/services/{{service_id}}", delete_service)
    r.add_post(f"{acc}/payments", post_payment)
    r.add_get(f"{acc}/calls", get_calls)
    r.add_post(f"{acc}/calls/email", _operation(Act.VIEW, money.email_call_detail, "from", "to"))
    r.add_post(f"{acc}/gifts", post_gift)
    r.add_get(f"{acc}/gifts", _operation(Act.VIEW, money.pending_gifts))
    r.add_post(f"{acc}/gifts/accept", post_gift_accept)
    r.add_get(f"{acc}/linked", _operation(Act.VIEW, numbers.linked_numbers))
    r.add_post(f"{acc}/linked", _operation(Act.SELF, numbers.link_number, "msisdn", "password", attempt=True))
    r.add_delete(f"{acc}/linked/{{other}}", _operation(Act.MANAGE, numbers.unlink_number, path="other"))
    r.add_put(f"{acc}/block", _operation(Act.MANAGE, numbers.block_number, "from"))
    r.add_delete(f"{acc}/block", delete_block)
    r.add_post(f"{acc}/owner-change", post_owner_change)
    r.add_put(f"{acc}/password", put_password)
    r.add_put(f"{acc}/code-word", _operation(Act.OWNER, account.set_code_word, "code_word"))
    r.add_put(f"{acc}/email", _operation(Act.OWNER, account.set_email, "email"))
    r.add_get(f"{acc}/grants", _operation(Act.OWNER, numbers.linked_to))
    r.add_delete(f"{acc}/grants/{{holder}}", _operation(Act.OWNER, numbers.revoke_link, path="holder"))
    r.add_get(f"{acc}/number-management", _operation(Act.VIEW, number_management.api_state))
    r.add_post(f"{acc}/number-management", post_number_management)
    r.add_delete(f"{acc}/number-management", delete_number_management)
    r.add_put(f"{acc}/locator/consents/{{requester}}", put_locator_consent)
    r.add_delete(f"{acc}/locator/consents/{{requester}}", delete_locator_consent)
    r.add_get(f"{acc}/locator/{{target}}", _operation(Act.VIEW, money.locate, path="target"))
    r.add_get(f"{acc}/parental/{{child}}", _operation(Act.VIEW, money.parental_overview, path="child"))
    r.add_put(f"{acc}/parental/{{child}}/blacklist/{{number}}", put_parental_block)
    r.add_delete(f"{acc}/parental/{{child}}/blacklist/{{number}}", delete_parental_block)
    r.add_post(f"{acc}/sms-archive", _operation(Act.VIEW, archives.open_sms_archive, "code"))
    r.add_get(f"{acc}/mms-archive", _operation(Act.VIEW, archives.mms_archive_status))
    r.add_get(f"{acc}/audit", get_audit)
    return app
