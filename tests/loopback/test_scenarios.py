"""The shipped scenarios pass; a broken one fails with a readable report; bad files are refused."""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from simulator.scenario import ScenarioError, junit_xml, load_scenario, report_lines, run_scenarios
from ussdgw.app import cli
from ussdgw.app.cli import main
from ussdgw.app.platforms import PrivatePlatform
from ussdgw.config import Settings

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
BROKEN = Path(__file__).parents[1] / "scenarios" / "broken_on_purpose.yaml"
# Every SPEC ID the platform serves through a phone (SMS or USSD), as registered in handlers/registry.py.
PHONE_CHANNEL_IDS = {"R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9", "N2", "A1", "A2", "D1", "D2"}


def base_settings(redis_url: str, tmp_path: Path) -> Settings:
    """The platform's defaults, on this test's Redis: scenarios bring their own overrides."""
    return Settings(redis_url=redis_url, state_dir=str(tmp_path), secret_key=secrets.token_hex(32))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
async def test_shipped_scenario_passes(path: Path, redis_url: str, tmp_path: Path) -> None:
    [result] = await run_scenarios([load_scenario(path)], PrivatePlatform(base_settings(redis_url, tmp_path)))
    assert result.ok, "\n".join(report_lines(result))


def test_the_shipped_scenarios_cover_every_spec_id_served_through_a_phone() -> None:
    covered = {spec for path in SHIPPED for spec in load_scenario(path).spec}
    assert covered >= PHONE_CHANNEL_IDS, sorted(PHONE_CHANNEL_IDS - covered)


async def test_a_broken_scenario_fails_with_a_report_naming_the_step_the_expectation_and_what_arrived(
        redis_url: str, tmp_path: Path) -> None:
    [result] = await run_scenarios([load_scenario(BROKEN)], PrivatePlatform(base_settings(redis_url, tmp_path)))
    assert not result.ok
    assert result.failure is not None and result.failure.step.index == 2
    report = "\n".join(report_lines(result))
    assert report.startswith("FAIL  Сломанный сценарий (нарочно)")
    assert "✗  2. ожидаю на 79161234567: SMS от 3339 /Ваш код: \\d{4}/" in report
    assert "the phone got: от 3339 DELIVERED: 'Пароль для входа в Личный кабинет:" in report
    assert "·  3. 79161234567 набирает *100#  (не выполнен)" in report  # later steps are listed, not run

    suite = ET.fromstring(junit_xml([result]))
    assert suite.get("failures") == "1"
    failure = suite.find("./testsuite/testcase/failure")
    assert failure is not None and failure.get("message", "").startswith("step 2: expected SMS от 3339")


def test_the_cli_runs_scenarios_on_a_private_platform_and_writes_junit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.logs, "configure", lambda *a, **k: None)  # keep the test run's own logging
    junit = tmp_path / "out.xml"
    code = main(["scenario", str(ROOT / "scenarios" / "r9_help.yaml"), str(BROKEN), "--junit", str(junit)])
    out = capsys.readouterr().out
    assert code == 1
    assert "1 passed, 1 failed" in out and "FAIL Сломанный сценарий (нарочно)" in out
    cases = ET.parse(junit).getroot().findall("./testsuite/testcase")
    assert [c.find("failure") is None for c in cases] == [True, False]


@pytest.mark.parametrize(("text", "error"), [
    ("name: x\nsteps: []\n", "steps must be a non-empty list"),
    ("name: x\nsteps:\n  - jump: {to: 1}\n", "step 1: unknown step 'jump'"),
    ("name: x\nsteps:\n  - sms: {text: hi}\n", "step 1 (sms): sms needs to:"),
    ("name: x\nsteps:\n  - dial: '100'\n", "step 1 (dial): not a USSD string: '100'"),
    ("name: x\nsteps:\n  - sms: {to: '3339'}\n  - expect: {sms: {state: LOST}}\n", "step 2 (expect): state is one of"),
    ("name: x\nsteps:\n  - expect: {sms: {text: '(('}}\n", "step 1 (expect): text is not a regular expression"),
    ("name: x\nsteps:\n  - advance_time: soon\n", "step 1 (advance_time): not a duration: 'soon'"),
    ("name: x\nsettings: {colour: red}\nsteps:\n  - sleep: 1\n", "unknown settings ['colour']"),
    ("name: x\nsteps:\n  - set_phone: {power: sideways}\n", "step 1 (set_phone): power is on, off or airplane"),
])
def test_a_bad_scenario_file_is_refused_naming_the_file_and_the_step(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(caught.value).startswith(str(path)) and error in str(caught.value)
