"""The spine from the outside: the CLI a tester types, and several gateways sharing one Redis."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.service import Gateway
from handlers.registry import build_router
from simulator.phones import InboxMessage
from tests.support.platform import one_per_primary
from tests.support.ussd_helpers import seed
from ussdgw.app import cli
from ussdgw.app.stack import Stack
from ussdgw.config import Settings, load_settings
from ussdgw.smpp.pdu import UssdOp
from ussdgw.store import Store

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster

DEMO = Path(__file__).parents[2] / "demo" / "subscribers.yaml"


async def test_sms_command_prints_the_reply_from_3339(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    api = stack.endpoints["simulator"]
    code = await asyncio.to_thread(cli.send_sms, api, "79161234567", "3339", "ПАРОЛЬ", 10.0)
    out = capsys.readouterr().out
    assert code == 0
    assert re.search(r"← 3339: Пароль для входа в Личный кабинет: [a-z0-9]{8,10}\b", out), out


async def test_sms_command_says_clearly_when_the_simulator_is_not_running(capsys: pytest.CaptureFixture[str]) -> None:
    code = await asyncio.to_thread(cli.send_sms, "http://127.0.0.1:9", "79161234567", "3339", "ПАРОЛЬ", 1.0)
    assert code == 2
    assert "cannot reach the simulator" in capsys.readouterr().err


def test_seed_loads_the_demo_subscribers(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("USSDGW_SECRET_KEY", settings.secret_key.get_secret_value())
    monkeypatch.setenv("USSDGW_STATE_DIR", settings.state_dir)
    monkeypatch.setattr(cli.logs, "configure", lambda *a, **k: None)  # keep the test run's own logging
    assert cli.main(["seed", str(DEMO)]) == 0
    assert "seeded 4 subscribers" in capsys.readouterr().out

    async def profile() -> dict[str, str]:
        from ussdgw.store import Store

        store = Store.from_url(settings.redis_url, settings.secret_key_bytes())
        try:
            return await store.subscribers.fields("79031112233")
        finally:
            await store.close()

    seeded = asyncio.run(profile())
    assert seeded["corporate"] == "1" and seeded["balance_kop"] == "120000" and seeded["region"] == "77"
    assert "code_word" not in seeded and "ромашка" not in str(seeded)


def test_settings_come_from_file_then_environment(tmp_path: Path) -> None:
    config = tmp_path / "ussdgw.toml"
    config.write_text('smsc_port = 3000\nsystem_id = "from-file"\nwindow = 8\n')
    settings = load_settings(str(config), environ={"USSDGW_SMSC_PORT": "4000", "REDIS_URL": "redis://r:6379/0"})
    assert settings.smsc_port == 4000
    assert settings.system_id == "from-file" and settings.window == 8
    assert settings.redis_url == "redis://r:6379/0"


def test_a_misspelt_setting_in_the_file_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "ussdgw.toml"
    config.write_text("smsc_prot = 3000\n")
    with pytest.raises(ValueError, match="smsc_prot"):
        load_settings(str(config), environ={})


async def test_two_gateway_processes_on_one_redis_behave_as_one(stack: Stack) -> None:
    assert stack.smsc is not None and stack.store is not None
    second = Gateway(stack.settings, stack.store, build_router())
    await second.start()
    try:
        await second.wait_bound(5)
        assert len([c for c in stack.smsc.connections if c.session.is_bound]) == 2
        phones = [f"7916555{i:04d}" for i in range(40)]
        after = stack.smsc.phones.last_seq
        pending = [mo for msisdn in phones for mo in stack.smsc.submit_mo(msisdn, "3339", "ПАРОЛЬ")]
        await asyncio.wait_for(asyncio.gather(*(mo.delivered.wait() for mo in pending)), 45)
        for msisdn in phones:
            replies = await stack.smsc.phones.wait_inbox(msisdn, after, 10)
            assert [m.sender for m in replies] == ["3339"], msisdn
            trail = await stack.store.audit_trail(msisdn)
            assert [e["event"] for e in trail].count("password_issued") == 1
    finally:
        await second.stop()


async def test_two_gateways_each_with_its_own_store_share_dialogues_and_send_each_sms_once(
        settings: Settings, tmp_path: Path) -> None:
    """As two `ussdgw gateway` hosts: separate connections and state folders, one shared key."""
    accounts = {"gw-a": "pw-a", "gw-b": "pw-b"}
    base = settings.with_overrides(sim_accounts=accounts, system_id="gw-a", password="pw-a")
    stack = await Stack(base).start()
    second_store = Store.from_url(base.redis_url, base.secret_key_bytes(), lease_s=base.mt_lease_s, clock=stack.clock)
    second = Gateway(stack.settings.with_overrides(system_id="gw-b", password="pw-b", state_dir=str(tmp_path / "b")),
                     second_store, build_router())
    try:
        assert stack.smsc is not None and stack.gateway is not None and stack.store is not None
        await stack.gateway.wait_bound(5)
        await second.start()
        await second.wait_bound(5)
        smsc, phones = stack.smsc, stack.smsc.phones
        msisdn = "79161234567"
        await seed(stack, msisdn, balance_kop=4200)

        async def step(via: str, text: str, op: UssdOp) -> InboxMessage:
            after = phones.last_seq
            smsc.submit_mo(msisdn, "*111#", text, ussd_service_op=op, system_id=via)
            async with asyncio.timeout(10):
                while True:
                    for message in await phones.wait_inbox(msisdn, after, 10):
                        after = max(after, message.seq)
                        if message.kind == "ussd":
                            return message

        menu = await step("gw-a", "*111#", UssdOp.PSSR_INDICATION)
        tariffs = await step("gw-b", "2", UssdOp.USSR_CONFIRM)  # the dialogue gw-a opened, continued on gw-b
        back = await step("gw-a", "00", UssdOp.USSR_CONFIRM)
        balance = await step("gw-b", "1", UssdOp.USSR_CONFIRM)
        assert menu.ussd_op == UssdOp.USSR_REQUEST and tariffs.text != menu.text and back.text == menu.text
        assert balance.ussd_op == UssdOp.PSSR_RESPONSE and "42" in balance.text, balance.text
        # SMS spread over both: every phone gets its password once, and it is issued once
        spread = one_per_primary(base.redis_url) + [f"7916555{i:04d}" for i in range(17)]
        after = phones.last_seq
        pending = [mo for i, m in enumerate(spread)
                   for mo in smsc.submit_mo(m, "3339", "ПАРОЛЬ", system_id=("gw-a", "gw-b")[i % 2])]
        await asyncio.wait_for(asyncio.gather(*(mo.delivered.wait() for mo in pending)), 45)
        for m in spread:
            replies = await phones.wait_inbox(m, after, 10)
            assert [r.sender for r in replies] == ["3339"], m
            assert [e["event"] for e in await stack.store.audit_trail(m)].count("password_issued") == 1
        await asyncio.sleep(base.mt_lease_s * 2)  # past every lease: nothing is re-sent by either gateway
        assert all(len(phones.get(m).inbox) == 1 for m in spread)
    finally:
        await second.stop()
        await second_store.close()
        await stack.stop()
