"""`ussdgw load`: phones through the simulator's SMSC to a real gateway process and Redis, timed."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from simulator.load import LoadError, parse_mix, percentile
from ussdgw.app import cli
from ussdgw.app.cli import main


def test_mix_is_parsed_into_shares_and_bad_mixes_are_refused() -> None:
    assert parse_mix("sms:70,ussd:30") == {"sms": 0.7, "ussd": 0.3}
    assert parse_mix("ussd:1") == {"ussd": 1.0}
    for bad in ("sms", "mms:10", "sms:x", "sms:0,ussd:0"):
        with pytest.raises(LoadError):
            parse_mix(bad)


def test_percentiles_pick_the_nearest_rank() -> None:
    values = [float(i) for i in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)


def test_a_short_load_run_completes_every_request_and_reports_latency_per_kind(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.logs, "configure", lambda *a, **k: None)  # keep the test run's own logging
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("USSDGW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("USSDGW_SECRET_KEY", secrets.token_hex(32))
    code = main(["load", "--phones", "50", "--rate", "200", "--duration", "1.5", "--mix", "sms:50,ussd:50",
                 "--json"])
    out = capsys.readouterr().out
    result = json.loads(out.strip().splitlines()[-1])
    assert code == 0, out
    # 300 are due; one due while all 50 phones still wait for a reply (each has one request in flight,
    # as a handset does) is counted "not offered": on a machine loaded far beyond its cores replies
    # slow down and that happens, so half is required to have been offered. Every offered one completes.
    assert result["all"]["offered"] >= 150 and result["all"]["lost"] == 0
    assert result["all"]["completed"] == result["all"]["offered"]
    assert result["sms"]["completed"] > 0 and result["ussd"]["completed"] > 0
    assert 0 < result["all"]["p50_ms"] <= result["all"]["p99_ms"] <= result["all"]["max_ms"]
    assert "p99 ms" in out  # the table for people


def test_bad_arguments_are_a_clear_error(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.logs, "configure", lambda *a, **k: None)
    assert main(["load", "--mix", "sms:70,fax:30"]) == 2
    assert "--mix" in capsys.readouterr().err


def test_the_report_file_has_the_throughput_and_latency_plots_next_to_the_figures(
        redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli.logs, "configure", lambda *a, **k: None)
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("USSDGW_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("USSDGW_SECRET_KEY", secrets.token_hex(32))
    report = tmp_path / "load.html"
    code = main(["load", "--phones", "40", "--rate", "100", "--duration", "2", "--mix", "sms:50,ussd:50",
                 "--json", "--report", str(report)])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    timeline = result["timeline"]
    assert sum(timeline["offered_per_s"]) == result["all"]["offered"]
    assert sum(timeline["completed_per_s"]) == result["all"]["completed"]
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>")
    assert "<script" not in page and "<link" not in page and 'src="' not in page  # self-contained
    throughput = page.split('<figure id=throughput>')[1].split("</figure>")[0]
    latency = page.split('<figure id=latency>')[1].split("</figure>")[0]
    assert "<svg" in throughput and "requests per second" in throughput and "target rate" in throughput
    assert "<svg" in latency and "percentile" in latency and "latency, ms" in latency
    figures = page.split("<table id=figures>")[1].split("</table>")[0]
    for kind in ("sms", "ussd", "all"):
        s = result[kind]
        assert (f'<tr class="{kind}"><td>{kind}</td><td>{s["offered"]}</td><td>{s["completed"]}</td>'
                f'<td>{s["lost"]}</td>') in figures
        assert f"<td>{s['p99_ms']:g}</td>" in figures


def test_a_report_without_matplotlib_is_refused_before_the_load(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    monkeypatch.setattr(cli.logs, "configure", lambda *a, **k: None)
    real_import = builtins.__import__

    def no_matplotlib(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["load", "--report", str(tmp_path / "r.html")]) == 2
    assert "ussdgw[report]" in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
