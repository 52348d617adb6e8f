"""N2's joining notices are SMS the applicant causes to her other numbers: they spend her budget for
SMS she causes and each recipient's budget for SMS from others (D2), never anyone's own, so a run of
applications is refused with a reason and the joined numbers still get their own passwords."""

from __future__ import annotations

import pytest

from tests.support.platform import send_and_wait
from tests.support.selfcare_helpers import Api, signed_in
from tests.support.ussd_helpers import dial, events, seed
from ussdgw.app.stack import Stack
from ussdgw.config import Settings

IVAN, IVAN2, IVAN3 = "79161234567", "79161234568", "79161234569"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(d2_from_others_per_hour=2, d2_caused_per_hour=3, secret_per_hour=5)


@pytest.fixture
async def owner(stack: Stack) -> Stack:
    for number in (IVAN, IVAN2, IVAN3):
        await seed(stack, number, owner_id="p-1001", region="77")
    return stack


async def apply_and_withdraw(stack: Stack, applicant: str, *others: str) -> str:
    screen = await dial(stack, applicant, "*111*828*1" + "".join(f"*{o}" for o in others) + "#")
    if "принята" in screen.text:
        await dial(stack, applicant, "*111*828*2#")
    return screen.text


async def test_a_recipient_told_too_often_stops_further_applications_but_not_her_own_password(owner: Stack) -> None:
    assert [("принята" in await apply_and_withdraw(owner, IVAN, IVAN2)) for _ in range(2)] == [True, True]
    refused = await apply_and_withdraw(owner, IVAN, IVAN2)
    assert refused.startswith("Отказ:") and IVAN2 in refused and "Повторите после" in refused, refused
    assert "n2_apply" in await events(owner, IVAN)
    [password] = await send_and_wait(owner, IVAN2, "3339", "ПАРОЛЬ")  # her own budget is untouched
    assert "Пароль для входа" in password.text


async def test_the_applicant_meets_her_budget_for_sms_to_other_numbers(owner: Stack) -> None:
    # three notices allowed an hour: two numbers now (two notices), then one more fits, then none
    assert "принята: 3\xa0номера" in await apply_and_withdraw(owner, IVAN, IVAN2, IVAN3)
    assert "принята" in await apply_and_withdraw(owner, IVAN, IVAN3)
    refused = await apply_and_withdraw(owner, IVAN, IVAN3)
    assert refused.startswith("Отказ:") and "не более 3 SMS в час" in refused, refused
    assert "принята" in await apply_and_withdraw(owner, IVAN2, IVAN)  # another sender: a budget of her own


async def test_the_same_budgets_hold_when_applying_through_the_api(owner: Stack, api: Api) -> None:
    token = await signed_in(owner, api, IVAN)
    for _ in range(2):
        status, body = await api.call("POST", "/accounts/me/number-management", body={"numbers": [IVAN2]},
                                      token=token)
        assert status == 202, body
        status, body = await api.call("DELETE", "/accounts/me/number-management", token=token)
        assert status == 200, body
    status, body = await api.call("POST", "/accounts/me/number-management", body={"numbers": [IVAN2]}, token=token)
    assert status == 429 and body["error"] == "rate_limited" and IVAN2 in body["message"], body
    assert owner.store is not None and (await owner.store.subscribers.profile(IVAN)).n2.state == "off"
