"""The simulator makes at most `sim_max_phones` phones, whichever way one is asked for: a POST gets
429 naming the msisdn, an MO from a new number is refused as `MoRefused`, and an MT the network
addresses to a new number is undeliverable (unknown subscriber) instead of making a phone. The
phones it has keep working."""

from __future__ import annotations

import uuid

import aiohttp
import pytest

from simulator.smsc import MoRefused
from tests.support.platform import eventually, send_and_wait
from ussdgw.app.stack import Stack
from ussdgw.config import Settings
from ussdgw.store import OutboundMessage

CAP = 3


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(sim_max_phones=CAP)


async def test_phones_past_the_cap_are_refused_on_every_path_and_the_others_go_on(stack: Stack) -> None:
    assert stack.smsc is not None and stack.gateway is not None and stack.store is not None
    url = stack.endpoints["simulator"] + "/api/phones"
    async with aiohttp.ClientSession() as http:
        made = []
        for i in range(CAP + 2):
            async with http.post(url, json={"msisdn": f"7916000000{i}"}) as response:
                made.append((response.status, await response.json()))
        assert [status for status, _ in made] == [201] * CAP + [429, 429]
        assert made[-1][1]["field"] == "msisdn" and "maximum of 3 phones" in made[-1][1]["error"]
        async with http.post(url, json={"msisdn": "79160000000"}) as response:  # one it has: still there
            assert response.status == 200
    assert len(stack.smsc.phones.phones) == CAP

    with pytest.raises(MoRefused) as refused:
        stack.smsc.submit_mo("79169999999", "3339", "ПАРОЛЬ")
    assert refused.value.field == "msisdn"

    stranger = "79168888888"
    await stack.gateway.send(OutboundMessage(uuid.uuid4().hex, "3339", stranger, "Код: 123456"))

    async def undeliverable() -> None:  # its receipt comes back on its own
        assert stack.store is not None and "UNDELIVERABLE" in (await stack.store.mt_states(stranger)).values()

    await eventually(undeliverable)
    assert stack.smsc.phones.find(stranger) is None and len(stack.smsc.phones.phones) == CAP

    [reply] = await send_and_wait(stack, "79160000001", "3339", "ПАРОЛЬ")
    assert "Пароль" in reply.text
