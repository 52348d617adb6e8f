"""What the cabinet page needs from the API beyond what the API already had: «Получить пароль по
SMS» from the web (R1 with the D2 limits of ПАРОЛЬ to 3339), and the numbers joined by N2 in the
account view and in who may act on what."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.selfcare_helpers import IVAN, IVAN2, MARIA, Api, extract_password, seed, signed_in, wait_sms
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import AuditEvent
from ussdgw.web import BROWSER_DIR


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(secret_cooldown_s=20, secret_per_hour=3)


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    await seed(stack)
    async with aiohttp.ClientSession() as http:
        yield Api(stack.endpoints["selfcare"], http)


async def test_the_web_form_gets_a_password_from_3339_that_signs_in(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None
    after = stack.smsc.phones.last_seq
    status, body = await api.call("POST", "/password-requests", body={"msisdn": "+7 916 123-45-67"})
    assert status == 200, body
    assert body["message"] == f"Пароль отправлен по SMS с номера 3339 на {IVAN}."
    password = extract_password(await wait_sms(stack, IVAN, "3339", after))
    status, body = await api.call("POST", "/sessions", body={"msisdn": IVAN, "password": password})
    assert status == 201, body
    assert stack.store is not None
    trail = await stack.store.audit_trail(IVAN)
    issued = [e for e in trail if e["event"] == "password_issued"]
    assert issued and issued[-1]["channel"] == "api" and issued[-1]["outcome"] == "ok"


async def test_the_web_form_and_the_sms_share_one_cool_down_and_one_hourly_cap(stack: Stack, api: Api) -> None:
    assert stack.smsc is not None
    status, _ = await api.call("POST", "/password-requests", body={"msisdn": IVAN})
    assert status == 200
    status, body = await api.call("POST", "/password-requests", body={"msisdn": IVAN})
    assert status == 429 and body["error"] == "rate_limited"
    assert body["message"].startswith("Пароль уже отправлен. Повторный запрос возможен через")
    # ПАРОЛЬ to 3339 right after the web request is refused the same way (one D2 guard).
    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(IVAN, "3339", "ПАРОЛЬ")
    assert (await wait_sms(stack, IVAN, "3339", after)).startswith("Пароль уже отправлен")
    # Past the cool-down: the web and the SMS draw on one hourly cap of 3.
    stack.clock.advance(21)
    after = stack.smsc.phones.last_seq
    stack.smsc.submit_mo(IVAN, "3339", "ПАРОЛЬ")
    extract_password(await wait_sms(stack, IVAN, "3339", after))
    stack.clock.advance(21)
    status, _ = await api.call("POST", "/password-requests", body={"msisdn": IVAN})
    assert status == 200
    stack.clock.advance(21)
    status, body = await api.call("POST", "/password-requests", body={"msisdn": IVAN})
    assert status == 429 and body["message"].startswith("Лимит: не более 3\u00a0запросов в час.")


@pytest.mark.parametrize(("number", "status", "error"), [
    ("79990000000", 200, None),  # answered as a known number (no probe of who exists), but no SMS
    ("12345", 400, "bad_request"),
    (None, 400, "bad_request"),
])
async def test_an_unknown_or_malformed_number_gets_no_sms(stack: Stack, api: Api, number: str | None, status: int,
                                                         error: str | None) -> None:
    assert stack.smsc is not None
    got, body = await api.call("POST", "/password-requests", body={} if number is None else {"msisdn": number},
                               validate_request=number is not None)
    assert (got, body.get("error")) == (status, error)
    assert stack.smsc.phones.last_seq == 0


async def test_numbers_joined_by_an_active_n2_group_are_shown_and_acted_on_without_their_password(
        stack: Stack, api: Api) -> None:
    """N2: "each member acts on the others without additional sign-in"; a member sold since (N4),
    or a group not (yet) active, gives nothing."""
    assert stack.store is not None
    await stack.store.subscribers.put(IVAN, {"n2_state": "active", "n2_numbers": f"{IVAN},{IVAN2},{MARIA}",
                                            "n2_group": IVAN}, AuditEvent("seeded", "admin"))
    for member in (IVAN2, MARIA):  # MARIA: joined once, another owner's now
        await stack.store.subscribers.put(member, {"n2_group": IVAN}, AuditEvent("seeded", "admin"))
    token = await signed_in(stack, api, IVAN2)
    status, body = await api.call("GET", "/accounts/me", token=token)
    assert status == 200 and body["data"]["joined"] == [IVAN] and body["data"]["n2_state"] == "active"
    status, body = await api.call("GET", f"/accounts/{IVAN}/balance", token=token)
    assert status == 200 and body["data"]["balance_kop"] == 25000
    status, body = await api.call("GET", f"/accounts/{MARIA}/balance", token=token)
    assert status == 403 and body["error"] == "forbidden"

    await stack.store.subscribers.put(IVAN, {"n2_state": "off"}, AuditEvent("seeded", "admin"))
    status, body = await api.call("GET", "/accounts/me", token=token)
    assert body["data"]["joined"] == [] and body["data"]["n2_state"] == "off"
    status, body = await api.call("GET", f"/accounts/{IVAN}/balance", token=token)
    assert status == 403


async def test_the_cabinet_page_and_its_assets_are_served_with_their_types_caches_and_a_strict_csp(
        stack: Stack) -> None:
    base = stack.endpoints["cabinet"].removesuffix("/")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as response:
            page = await response.text()
            assert response.status == 200 and response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache" and response.headers["ETag"]
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            etag = response.headers["ETag"]
        async with http.get(f"{base}/", headers={"If-None-Match": etag}) as response:
            assert response.status == 304
        # CSP-friendly: no inline script or style, no handlers in the markup, nothing from another site.
        assert not re.search(r"<script(?![^>]*\bsrc=)", page) and "<style" not in page
        assert not re.search(r"\s(on[a-z]+|style)=", page)
        versioned = dict(re.findall(r'"/static/([a-z.]+)\?v=([0-9a-f]{16})"', page))
        assert set(versioned) == {"cabinet.css", "cabinet.js", "icon.svg"}
        types = {"cabinet.css": "text/css; charset=utf-8", "cabinet.js": "text/javascript; charset=utf-8",
                 "icon.svg": "image/svg+xml"}
        for name, version in versioned.items():
            async with http.get(f"{base}/static/{name}", params={"v": version}) as response:
                body = await response.text()
                assert response.status == 200 and response.headers["Content-Type"] == types[name]
                assert response.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", body.replace("http://www.w3.org/2000/svg", ""))
            async with http.get(f"{base}/static/{name}") as response:
                assert response.headers["Cache-Control"] == "no-cache"
        async with http.get(f"{base}/static/../http_api.py") as response:
            assert response.status == 404
        async with http.get(f"{base}/static/secret.txt") as response:
            assert response.status == 404 and (await response.json())["error"] == "not_found"


async def test_both_web_pages_load_one_shared_script_from_their_own_server(stack: Stack) -> None:
    """`el()` and its kin are written once (ussdgw/browser/dom.js): the cabinet's server and the web
    phone's each answer it next to their page's script, which imports it as "./dom.js"."""
    source = (BROWSER_DIR / "dom.js").read_bytes()
    cabinet = stack.endpoints["cabinet"].removesuffix("/")
    served = []
    async with aiohttp.ClientSession() as http:
        for base, script in ((cabinet, "cabinet.js"), (stack.endpoints["simulator"], "phone.js")):
            async with http.get(f"{base}/static/{script}") as response:
                assert response.status == 200 and 'import { el } from "./dom.js";' in await response.text()
            async with http.get(f"{base}/static/dom.js") as response:
                assert response.status == 200 and "javascript" in response.headers["Content-Type"]  # a module script
                assert response.headers["Cache-Control"] == "no-cache"
                served.append(await response.read())
    assert served == [source, source] and b"export function el(" in source
