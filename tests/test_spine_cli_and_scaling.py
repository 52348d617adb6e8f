"""The spine from the outside: the CLI a tester types, and several gateways sharing one Redis."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from gateway.service import Gateway
from handlers.registry import build_router
from ussdgw.app import cli
from ussdgw.app.stack import Stack
from ussdgw.config import Settings, load_settings

pytestmark = pytest.mark.redis_both  # each test on a single Redis and on a cluster

DEMO = Path(__file__).parent.parent / "demo" / "subscribers.yaml"


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
