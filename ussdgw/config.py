"""Settings: built-in defaults, then a TOML file, then environment variables, then command-line flags.

Environment variables are the field names upper-cased with a `USSDGW_` prefix
(`USSDGW_SMSC_PORT=2776`); `REDIS_URL` is honoured as is. The file is `ussdgw.toml` in the
working directory, or the one `USSDGW_CONFIG` / `--config` names.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ussdgw.private_files import read_or_create_secret


@dataclass(frozen=True, slots=True)
class Settings:
    # Redis: a URL, or empty to run a private redis-server with its data under state_dir.
    redis_url: str = ""
    state_dir: str = ".state"
    # Hex key sealing queued MTs and keying short-lived code hashes; generated into state_dir if empty.
    secret_key: str = ""
    # The SMSC the gateway binds to.
    smsc_host: str = "127.0.0.1"
    smsc_port: int = 2775
    system_id: str = "ussdgw"
    password: str = "ussdgw1"
    system_type: str = ""
    binds: int = 1
    window: int = 64
    enquire_link_s: float = 30.0
    response_timeout_s: float = 10.0
    reconnect_max_s: float = 30.0
    mt_rate_per_s: float = 0.0
    mt_lease_s: float = 15.0
    # D2: a secret (password, code) per MSISDN at most once per cool-down and so many per hour.
    secret_cooldown_s: int = 20
    secret_per_hour: int = 5
    # The SMSC simulator and its HTTP API / web phone.
    sim_host: str = "127.0.0.1"
    sim_port: int = 2775
    sim_http_port: int = 8080
    sim_accounts: dict[str, str] = field(default_factory=lambda: {"ussdgw": "ussdgw1"})
    # How long the SMSC holds an MT for a phone that is off before it expires (SPEC D1).
    sim_validity_s: float = 600.0
    # The platform's own HTTP API (self-care).
    api_host: str = "127.0.0.1"
    api_port: int = 8081
    # Self-care API: a session ends after `session_idle_s` without activity (P5); sign-in
    # locks after `signin_max_failures` wrong passwords in a row (P4) and takes at most
    # `signin_per_hour` attempts per MSISDN; header enrichment (P6) is believed only from
    # `api_trusted_networks` (comma-separated CIDRs, none by default) and reads `api_msisdn_header`;
    # the admin API (P9) wants `admin_token` as a bearer token (generated into state_dir when empty);
    # a bonus gift's SMS code is valid for `gift_code_ttl_s` (M6); the MMS archive stays open
    # `mms_archive_ttl_s` (A2, 72 h); holds older than `hold_recovery_s` are finished by recovery.
    session_idle_s: int = 1200
    signin_max_failures: int = 3
    signin_per_hour: int = 20
    api_trusted_networks: str = ""
    api_msisdn_header: str = "X-MSISDN"
    admin_token: str = ""
    gift_code_ttl_s: int = 1800
    mms_archive_ttl_s: int = 72 * 3600
    sms_archive_code_ttl_s: int = 600
    hold_recovery_s: float = 60.0
    # E-mail (P8, M5, D3): the SMTP server the platform sends through (port 0: the simulator's sink
    # running in the same process), and the simulator's SMTP sink (port 0: any free port).
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 0
    smtp_timeout_s: float = 10.0
    mail_from: str = "lk@selfcare.example"
    sim_smtp_port: int = 0
    log_level: str = "info"
    log_format: str = "auto"
    # USSD: how long a dialogue waits for one answer and in all (PROTOCOL.md: ~30-60 s
    # and ~180 s); service codes served by external HTTP apps ("500:http://host/ussd,...") with
    # their timeout and the networkCode they are told; when an N2 application is reviewed (SPEC:
    # within 24 h; `handlers.number_management.review_due` runs due reviews, tests fast-forward).
    ussd_step_timeout_s: float = 60.0
    ussd_dialogue_timeout_s: float = 180.0
    ussd_http_apps: dict[str, str] = field(default_factory=dict)
    ussd_http_timeout_s: float = 3.0
    ussd_network_code: str = "25001"
    n2_review_delay_s: float = 3600.0

    def with_overrides(self, **overrides: Any) -> Settings:
        clean = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **clean)

    def secret_key_bytes(self) -> bytes:
        """The configured key, or one kept in the state folder so restarts can read queued MTs."""
        if self.secret_key:
            return bytes.fromhex(self.secret_key)
        return bytes.fromhex(read_or_create_secret(Path(self.state_dir) / "secret.key", secrets.token_hex(32)))


def _coerce(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    if kind == "int":
        return int(raw)
    if kind == "float":
        return float(raw)
    if kind.startswith("dict"):
        return dict(pair.split(":", 1) for pair in raw.split(",") if pair)
    return raw


def load_settings(config_file: str | None = None, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = config_file or env.get("USSDGW_CONFIG") or ("ussdgw.toml" if Path("ussdgw.toml").exists() else None)
    names = {f.name for f in dataclasses.fields(Settings)}
    if path:
        with open(path, "rb") as f:
            data = tomllib.load(f)
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{path}: unknown settings {sorted(unknown)}")
        values.update(data)
    for name in names:
        raw = env.get(f"USSDGW_{name.upper()}")
        if raw is not None:
            values[name] = _coerce(name, raw)
    if "REDIS_URL" in env and "USSDGW_REDIS_URL" not in env:
        values["redis_url"] = env["REDIS_URL"]
    return Settings(**values).with_overrides(**overrides)
