"""Settings as an operator meets them: typed values from a TOML file and the environment, one-line
errors that name the variable, secrets kept out of reprs, and defaults < file < environment < flags."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from ussdgw.app import cli
from ussdgw.config import Settings, SettingsError, load_settings
from ussdgw.redis_url import parse_redis_url

ROOT = Path(__file__).parents[2]


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "ussdgw.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_values_are_typed_whatever_their_spelling(tmp_path: Path) -> None:
    config = write(tmp_path, 'window = "8"\nresponse_timeout_s = "2.5"\n[ussd]\nhttp_apps = { "500" = "http://a/u" }\n')
    settings = load_settings(config, environ={"USSDGW_SMSC_PORT": "2776", "USSDGW_SIM_ACCOUNTS": "a:pa, b:pb",
                                              "ussdgw_log_level": "DEBUG"})
    assert settings.window == 8 and settings.response_timeout_s == 2.5 and settings.smsc_port == 2776
    assert settings.ussd_http_apps == {"500": "http://a/u"} and settings.log_level == "debug"
    assert settings.sim_credentials() == {"a": "pa", "b": "pb"}
    as_json = load_settings(environ={"USSDGW_USSD_HTTP_APPS": '{"500": "http://h:1/u,v"}'})
    assert as_json.ussd_http_apps == {"500": "http://h:1/u,v"}


def test_a_bad_environment_value_names_the_variable_and_what_it_expects() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(environ={"USSDGW_WINDOW": "abc"})
    message = str(raised.value)
    assert "USSDGW_WINDOW='abc'" in message and "integer" in message and "\n" not in message
    with pytest.raises(SettingsError, match=r"USSDGW_SMSC_PORT='70000': expected less than or equal to 65535"):
        load_settings(environ={"USSDGW_SMSC_PORT": "70000"})
    with pytest.raises(SettingsError, match=r"USSDGW_LOG_FORMAT='xml': expected 'auto', 'console' or 'json'"):
        load_settings(environ={"USSDGW_LOG_FORMAT": "xml"})


def test_a_bad_file_value_names_the_file_and_the_key(tmp_path: Path) -> None:
    config = write(tmp_path, '[smsc]\nwindow = "many"\n')
    with pytest.raises(SettingsError, match=rf"{config}: \[smsc\] window='many': expected a valid integer"):
        load_settings(config, environ={})
    with pytest.raises(SettingsError, match=r"unknown settings \[smsc\] prot"):
        load_settings(write(tmp_path, "[smsc]\nprot = 1\n"), environ={})
    with pytest.raises(SettingsError, match="smsc_port is set twice"):
        load_settings(write(tmp_path, "smsc_port = 1\n[smsc]\nport = 2\n"), environ={})
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(write(tmp_path, "window = \n"), environ={})
    with pytest.raises(SettingsError, match="cannot read the settings file"):
        load_settings(str(tmp_path / "missing.toml"), environ={})


def test_the_cli_prints_one_line_and_exits_2_without_a_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("USSDGW_")}
    result = subprocess.run([sys.executable, "-m", "ussdgw.app", "up"], cwd=tmp_path, capture_output=True,
                            text=True, env={**env, "USSDGW_WINDOW": "abc"}, timeout=30)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "ussdgw: invalid settings: USSDGW_WINDOW='abc': expected a valid integer, unable to parse string as an integer"]
    assert result.stdout == ""


def test_secrets_stay_out_of_repr_and_of_errors() -> None:
    key, token = secrets.token_hex(32), "admin-" + secrets.token_hex(8)
    settings = Settings(secret_key=key, password="bind-pw-1", admin_token=token,
                        sim_accounts={"ussdgw": "sim-pw-1"}, redis_url="redis://user:redis-pw-1@host:6379/0")
    for shown in (repr(settings), str(settings), repr(settings.with_overrides(window=2))):
        for secret in (key, "bind-pw-1", token, "sim-pw-1", "redis-pw-1"):
            assert secret not in shown
    assert "redis://user:***@host:6379/0" in repr(settings)
    assert settings.password.get_secret_value() == "bind-pw-1" and settings.secret_key_bytes() == bytes.fromhex(key)
    with pytest.raises(SettingsError) as raised:
        load_settings(environ={"USSDGW_SECRET_KEY": "not-hex-but-secret"})
    assert "USSDGW_SECRET_KEY: expected 32, 48 or 64 hex digits" in str(raised.value)
    assert "not-hex-but-secret" not in str(raised.value)


def test_precedence_defaults_then_file_then_environment_then_flags(tmp_path: Path) -> None:
    config = write(tmp_path, 'system_id = "file"\nbinds = 2\n[smsc]\nport = 3000\nwindow = 8\n')
    env = {"USSDGW_SMSC_PORT": "4000", "USSDGW_BINDS": "3"}
    settings = load_settings(config, environ=env, binds=5, system_id=None)
    assert settings.enquire_link_s == 30.0  # default
    assert settings.system_id == "file" and settings.window == 8  # file (a None flag is not given)
    assert settings.smsc_port == 4000  # environment over file
    assert settings.binds == 5  # flag over environment
    # REDIS_URL is honoured as is, below USSDGW_REDIS_URL; USSDGW_CONFIG names the file.
    assert load_settings(environ={"REDIS_URL": "redis://a"}).redis_url == "redis://a"
    both = {"REDIS_URL": "redis://a", "USSDGW_REDIS_URL": "redis://b", "USSDGW_CONFIG": config}
    assert load_settings(environ=both).redis_url == "redis://b"
    assert load_settings(environ=both).system_id == "file"


def test_a_file_in_the_working_directory_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "[api]\nport = 9999\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).api_port == 9999


def test_the_example_file_shows_the_defaults() -> None:
    assert load_settings(str(ROOT / "docs" / "ussdgw.example.toml"), environ={}) == Settings()


def test_with_overrides_keeps_what_is_none_and_checks_what_is_not() -> None:
    settings = Settings(window=8)
    assert settings.with_overrides(window=None, binds=None) is settings
    assert settings.with_overrides(binds=2).window == 8
    with pytest.raises(SettingsError, match="binds=0: expected greater than or equal to 1"):
        settings.with_overrides(binds=0)


def test_the_generated_key_is_read_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(state_dir=str(tmp_path / "state"))
    key = settings.secret_key_bytes()
    path = tmp_path / "state" / "secret.key"
    assert len(key) == 32 and path.stat().st_mode & 0o777 == 0o600
    path.unlink()  # cached: not read again
    assert settings.secret_key_bytes() == key and not path.exists()
    assert settings.with_overrides(window=2).secret_key_bytes() == key  # the same key and folder: the cache too
    assert Settings(state_dir=str(tmp_path / "state")).secret_key_bytes() != key  # a new one written
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["secret.key"]  # no temporary file left


def test_every_command_reads_the_same_settings() -> None:
    parser = cli.build_parser()
    flags = cli.settings_flags(parser.parse_args(["--log-level", "WARNING", "gateway", "--smsc", "h:2776",
                                                  "--api-port", "0", "--password", "pw"]))
    assert flags == {"log_level": "warning", "smsc_host": "h", "smsc_port": 2776, "api_port": 0, "password": "pw",
                     "system_id": None, "system_type": None, "binds": None}
    assert cli.settings_flags(parser.parse_args(["smsc", "--port", "0"])) == {
        "log_level": None, "sim_port": 0, "sim_http_port": None}
    # the phone commands find the simulator where the settings put it
    assert cli.simulator_url(load_settings(environ={"USSDGW_SIM_HTTP_PORT": "9090"})) == "http://127.0.0.1:9090"
    assert cli.simulator_url(load_settings(environ={"USSDGW_SIM_URL": "http://sim:1/"})) == "http://sim:1"


def test_a_child_process_gets_the_same_settings(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "[smsc]\nwindow = 8\n"), environ={"USSDGW_PASSWORD": "pw"},
                             sim_accounts={"a": "x", "b": "y"}, ussd_http_apps={"500": "http://h:1/u"})
    env = settings.to_environment()
    assert env["USSDGW_WINDOW"] == "8" and env["USSDGW_PASSWORD"] == "pw" and "USSDGW_SMSC_PORT" not in env
    assert load_settings(environ=env) == settings


def test_version() -> None:
    result = subprocess.run([sys.executable, "-m", "ussdgw.app", "--version"], capture_output=True, text=True,
                            timeout=30, check=True)
    assert result.stdout.startswith("ussdgw 0.")


@pytest.mark.parametrize(("url", "says"), [
    ("redis+cluster://10.0.0.1", "seed node '10.0.0.1' must be host:port"),
    ("redis+cluster://10.0.0.1:70000", "port must be a number from 1 to 65535"),
    ("redis+cluster://10.0.0.1:7000/2", "a Redis Cluster has only database 0"),
    ("redis://a:7000,b:7000", "write redis+cluster://host:port,host:port"),
    ("memcached://10.0.0.1:11211", "unknown scheme 'memcached'"),
    ("10.0.0.1:6379", "expected a URL like"),
    ("redis://:hunter2@h:6379/x", "database must be a number"),
])
def test_a_redis_url_of_no_known_form_is_refused_in_one_line_without_its_password(url: str, says: str) -> None:
    with pytest.raises(SettingsError) as refused:
        load_settings(environ={"REDIS_URL": url})
    assert str(refused.value).startswith("invalid settings: REDIS_URL: ") and says in str(refused.value)
    assert "hunter2" not in str(refused.value)


def test_cluster_and_single_server_urls_are_told_apart() -> None:
    cluster = parse_redis_url("redis+cluster://app:s3cret@10.0.0.1:7000,[::1]:7001")
    assert cluster.cluster and cluster.nodes == (("10.0.0.1", 7000), ("::1", 7001))
    assert (cluster.username, cluster.password) == ("app", "s3cret")
    assert not parse_redis_url("unix:///run/redis.sock").cluster
    assert not parse_redis_url("redis://127.0.0.1:6379/0").cluster
