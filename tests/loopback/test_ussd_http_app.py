"""A service code routed to an external HTTP app (Africa's Talking convention): CON/END, slow, garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from handlers.ussd_http_app import AppFailed, parse_app_reply
from simulator.example_ussd_app import SEEN, create_app
from tests.support.ussd_helpers import answer, dial, events
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.smpp.pdu import UssdOp

MSISDN = "79161234567"


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}/ussd"


def misbehaving_app(never: asyncio.Event) -> web.Application:
    """*600#: answers only once `never` is set (long after the gateway gave up); *700#: garbage; *800#: HTTP 500."""

    async def slow(_: web.Request) -> web.Response:
        await never.wait()
        return web.Response(text="CON too late")

    async def garbage(_: web.Request) -> web.Response:
        return web.Response(text="<html>Internal error</html>")

    async def broken(_: web.Request) -> web.Response:
        return web.Response(status=500, text="END should not be shown")

    app = web.Application()
    app.router.add_post("/slow", slow)
    app.router.add_post("/garbage", garbage)
    app.router.add_post("/broken", broken)
    return app


@pytest.fixture
async def apps_stack(settings: Settings) -> AsyncIterator[tuple[Stack, web.Application]]:
    quiz = create_app()
    quiz_runner, quiz_url = await serve(quiz)
    release = asyncio.Event()
    bad_runner, bad_url = await serve(misbehaving_app(release))
    base = bad_url.removesuffix("/ussd")
    running = Stack(settings.with_overrides(
        ussd_http_apps={"500": quiz_url, "600": f"{base}/slow", "700": f"{base}/garbage", "800": f"{base}/broken"},
        ussd_http_timeout_s=0.3,
    ))
    await running.start()
    assert running.gateway is not None
    await running.gateway.wait_bound(5)
    yield running, quiz
    await running.stop()
    release.set()
    await bad_runner.cleanup()
    await quiz_runner.cleanup()


async def test_an_http_app_leads_the_dialogue_with_con_and_closes_it_with_end(
    apps_stack: tuple[Stack, web.Application],
) -> None:
    stack, quiz = apps_stack
    first = await dial(stack, MSISDN, "*500#")
    assert first.ussd_op == UssdOp.USSR_REQUEST and first.text == "Викторина\n1 Начать\n2 Правила"
    second = await answer(stack, MSISDN, "1")
    assert second.ussd_op == UssdOp.USSR_REQUEST and second.text.startswith("Столица России?")
    third = await answer(stack, MSISDN, "1")
    fourth = await answer(stack, MSISDN, "2")
    assert third.ussd_op == UssdOp.USSR_REQUEST
    assert fourth.ussd_op == UssdOp.PSSR_RESPONSE and fourth.text == "Верно! Все ответы правильные."
    seen = quiz[SEEN]
    assert [s["text"] for s in seen] == ["", "1", "1*1", "1*1*2"]
    assert {s["sessionId"] for s in seen} == {seen[0]["sessionId"]}
    assert seen[0]["serviceCode"] == "*500#" and seen[0]["phoneNumber"] == "+79161234567"
    assert seen[0]["networkCode"] == stack.settings.ussd_network_code


async def test_extras_in_the_dialled_string_reach_the_app_as_inputs(apps_stack: tuple[Stack, web.Application]) -> None:
    stack, quiz = apps_stack
    screen = await dial(stack, MSISDN, "*500*2#")
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and screen.text.startswith("Два вопроса")
    assert quiz[SEEN][-1]["text"] == "2"


@pytest.mark.parametrize(("code", "reason"), [("*600#", "Timeout"), ("*700#", "CON <text>"), ("*800#", "HTTP 500")])
async def test_a_slow_broken_or_garbage_app_ends_the_dialogue_with_a_clear_message(
    apps_stack: tuple[Stack, web.Application], code: str, reason: str,
) -> None:
    stack, _ = apps_stack
    screen = await dial(stack, MSISDN, code)
    assert screen.ussd_op == UssdOp.PSSR_RESPONSE and screen.text == "Сервис временно недоступен. Попробуйте позже."
    assert "ussd_app_failed" in await events(stack, MSISDN)
    assert stack.store is not None
    failure = [e for e in await stack.store.audit_trail(MSISDN) if e["event"] == "ussd_app_failed"][-1]
    assert reason in failure["detail"]


def test_app_replies_are_read_by_the_convention() -> None:
    assert parse_app_reply("CON Меню\n1 Да") == (False, "Меню\n1 Да")
    assert parse_app_reply("END Спасибо ") == (True, "Спасибо")
    assert parse_app_reply("END") == (True, "Сеанс завершён.")
    for bad in ("", "CON", "CON   ", "con Меню", "OK", "{\"text\": \"END x\"}"):
        with pytest.raises(AppFailed):
            parse_app_reply(bad)
