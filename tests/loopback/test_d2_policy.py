"""SPEC D2 as handlers/d2.py has it: a cool-down per kind of code, an hourly cap that only the
subscriber's own requests spend, and SMS that somebody else causes (gift codes) in budgets of their
own per recipient and per sender, which never stop the recipient getting her password. Over the
real stack: SMS over SMPP, Redis, the platform's clock fast-forwarded instead of waited for."""

from __future__ import annotations

import pytest

from handlers import money
from tests.support.platform import send_and_wait
from tests.support.selfcare_helpers import IVAN, IVAN2, MARIA, seed
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import AuditEvent

PASSWORD = r"Личный кабинет: [a-z0-9]{8,10}"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(secret_cooldown_s=20, secret_per_hour=3, d2_from_others_per_hour=2,
                                   d2_caused_per_hour=3)


async def text_of(stack: Stack, msisdn: str, to: str, text: str) -> str:
    [reply] = await send_and_wait(stack, msisdn, to, text)
    return reply.text


async def test_a_cool_down_is_per_kind_an_archive_code_does_not_hold_up_a_password(stack: Stack) -> None:
    assert "Код доступа к архиву SMS" in await text_of(stack, IVAN, "232", "PER")
    assert "Личный кабинет:" in await text_of(stack, IVAN, "3339", "ПАРОЛЬ")  # was: «Код уже отправлен»
    again = await text_of(stack, IVAN, "3339", "ПАРОЛЬ")
    assert again == "Пароль уже отправлен. Повторный запрос возможен через 20 с."  # names what, and when
    again = await text_of(stack, IVAN, "232", "PER")
    assert again.startswith("Код архива SMS уже отправлен. Повторный запрос возможен через")


async def test_the_hourly_cap_counts_only_what_the_subscriber_asks_for(stack: Stack) -> None:
    await seed(stack)
    for to, text in (("3339", "ПАРОЛЬ"), ("232", "PER"), ("7888", "ЛОГИН")):
        assert "Личный кабинет:" in (reply := await text_of(stack, IVAN, to, text)) or "архиву" in reply
        stack.clock.advance(21)
    refused = await text_of(stack, IVAN, "3339", "ПАРОЛЬ")
    assert refused.startswith("Лимит: не более 3\u00a0запросов в час. Повторите после ")
    assert "Личный кабинет:" in await text_of(stack, IVAN2, "3339", "ПАРОЛЬ")  # another number's own budget


async def test_gifts_to_a_subscriber_never_use_up_her_own_password(stack: Stack) -> None:
    """Before: gift codes spent the recipient's D2 budget, so her ПАРОЛЬ, *111# and support reset
    were refused for an hour. Now they spend a budget for SMS from others, kept apart."""
    assert stack.store is not None and stack.platform is not None
    await seed(stack)
    await stack.store.subscribers.put(IVAN, {"bonus_points": 100}, AuditEvent("test_setup", "admin"))
    platform = stack.platform
    sent = [await money.gift_points(platform, IVAN, MARIA, 1)]
    stack.clock.advance(21)
    sent.append(await money.gift_points(platform, IVAN, MARIA, 1))
    assert all(r.ok for r in sent)
    stack.clock.advance(21)
    third = await money.gift_points(platform, IVAN, MARIA, 1)  # the recipient's budget for others' SMS: 2 an hour
    assert third.code == "rate_limited" and "Получателю уже отправлено много кодов подарков" in third.text
    for _ in range(3):  # her own requests are untouched by all that
        assert "Личный кабинет:" in await text_of(stack, MARIA, "3339", "ПАРОЛЬ")
        stack.clock.advance(21)
    assert (await stack.store.subscribers.profile(IVAN)).bonus_points == 98  # the refused gift's point came back


async def test_a_gift_right_after_another_to_the_same_number_waits_its_cool_down(stack: Stack) -> None:
    assert stack.store is not None and stack.platform is not None
    await seed(stack)
    await stack.store.subscribers.put(IVAN, {"bonus_points": 100}, AuditEvent("test_setup", "admin"))
    assert (await money.gift_points(stack.platform, IVAN, MARIA, 1)).ok
    again = await money.gift_points(stack.platform, IVAN, MARIA, 1)
    assert again.code == "rate_limited" and again.text == "Получателю только что отправлен код подарка. " \
                                                          "Повторите через 20 с."


async def test_one_sender_causes_at_most_so_many_sms_an_hour(stack: Stack) -> None:
    assert stack.store is not None and stack.platform is not None
    await seed(stack)
    others = ["79031112233", IVAN2, MARIA, "79261112234"]
    await stack.store.subscribers.put("79261112234", {"owner_id": "p-9"}, AuditEvent("test_setup", "admin"))
    await stack.store.subscribers.put(IVAN, {"bonus_points": 100}, AuditEvent("test_setup", "admin"))
    results = [await money.gift_points(stack.platform, IVAN, other, 1) for other in others]
    assert [r.ok for r in results] == [True, True, True, False]
    assert results[3].text.startswith("Вы отправили слишком много подарков: не более 3 в час.")
    assert "Личный кабинет:" in await text_of(stack, IVAN, "3339", "ПАРОЛЬ")  # the sender's own budget is hers
