"""`ussdgw dial`: a USSD dialogue in the terminal against the running simulator, scripted or typed."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator

from rich.console import Console

from simulator.terminal import dial_command
from ussdgw.app.stack import Stack
from ussdgw.smpp.ussd import DialogueState
from ussdgw.store import AuditEvent

PHONE = "79161234567"


async def seeded(stack: Stack, balance_kop: int = 70000) -> str:
    assert stack.store is not None
    await stack.store.subscribers.put(PHONE, {"owner_id": "p-1", "region": "77", "corporate": 0,
                                             "balance_kop": balance_kop, "tariff": "basic"},
                                     AuditEvent("seeded", "admin"))
    return stack.endpoints["simulator"]


async def dial(api: str, code: str, answers: str | None = None, typed: Iterator[str] | None = None) -> tuple[int, str]:
    out = io.StringIO()
    console = Console(file=out, width=100, color_system=None)
    read = (lambda: next(typed)) if typed is not None else None
    code_ = await asyncio.to_thread(dial_command, api, PHONE, code, answers, 10.0, console, read)
    return code_, out.getvalue()


async def test_scripted_answers_walk_the_menu_to_the_balance(stack: Stack) -> None:
    code, out = await dial(await seeded(stack), "*111#", answers="1")
    assert code == 0
    assert "Мой МТС" in out and "1 Баланс" in out and "ждёт ответа" in out
    assert "Ваш баланс: 700\u00a0₽." in out and "сеанс завершён" in out


async def test_typed_answers_are_sent_and_an_empty_one_cancels_the_dialogue(stack: Stack) -> None:
    api = await seeded(stack)
    code, out = await dial(api, "*111#", typed=iter(["2", ""]))
    assert code == 0
    assert "Ваш тариф: Базовый" in out and "сеанс отменён" in out
    assert stack.smsc is not None and stack.smsc.phones.get(PHONE).ussd.state is DialogueState.IDLE


async def test_answers_left_over_or_missing_make_a_script_fail(stack: Stack) -> None:
    api = await seeded(stack)
    code, out = await dial(api, "*100#", answers="1")
    assert code == 1 and "не использованы ответы: 1" in out
    code, out = await dial(api, "*111#", answers="")
    assert code == 1 and "ответы закончились" in out


async def test_a_malformed_string_is_refused_before_anything_is_sent(stack: Stack) -> None:
    api = await seeded(stack)
    code, out = await dial(api, "111", answers="1")
    assert code == 2 and "not a USSD string" in out
    assert stack.smsc is not None and not stack.smsc.phones.get(PHONE).outbox


def test_an_unreachable_simulator_is_a_clear_error() -> None:
    out = io.StringIO()
    code = dial_command("http://127.0.0.1:9", PHONE, "*100#", None, 1.0, Console(file=out, width=200))
    assert code == 2 and "cannot reach the simulator" in out.getvalue()
