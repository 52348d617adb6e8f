"""Settings: built-in defaults, then a TOML file, then environment variables, then command-line flags.

`Settings(...)` is a plain typed value (defaults plus what the caller passes: tests, the stack);
only `load_settings` reads the outside world, through pydantic-settings, for every command.

- **Environment**: the field names upper-cased with a `USSDGW_` prefix (`USSDGW_SMSC_PORT=2776`);
  `REDIS_URL` is honoured as is (below `USSDGW_REDIS_URL`). Maps are `key:value,key:value`.
- **File**: `ussdgw.toml` in the working directory, or the one `USSDGW_CONFIG` / `--config` names.
  Flat names (`smsc_port = 2776`) or sections (`[smsc]` `port = 2776`, see `SECTIONS`).
- **Errors** name where the bad value came from (`USSDGW_WINDOW='abc': ...`) and never echo a secret.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict

from ussdgw.private_files import read_or_create_secret
from ussdgw.redis_url import parse_redis_url

ENV_PREFIX = "USSDGW_"
CONFIG_ENV = "USSDGW_CONFIG"
DEFAULT_CONFIG_FILE = "ussdgw.toml"

Port = Annotated[int, Field(ge=0, le=65535)]  # 0: any free port
Seconds = Annotated[float, Field(ge=0)]
Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
# "key:value,key:value" in the environment (NoDecode: not JSON), a table in TOML, a dict in code.
StrMap = Annotated[dict[str, str], NoDecode]
SecretMap = Annotated[dict[str, SecretStr], NoDecode]


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


class SettingsError(ValueError):
    """A setting that cannot be used, in one line that says where it came from and what it must be."""


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    # Redis: a URL (redis://, rediss://, unix://, or redis+cluster://host:port[,host:port...] for the
    # seed nodes of a Redis Cluster), or empty to run a private redis-server with its data under state_dir.
    redis_url: str = ""
    # Without redis_url: the private Redis is a local 3-primary, 3-replica cluster (`up --redis-cluster`).
    redis_cluster: bool = False
    # Durability: before a change is acknowledged (ESME_ROK, a 2xx), wait until this many replicas
    # have it (Redis WAIT), at most redis_wait_timeout_ms; fewer is "store unavailable" and the step
    # is retried. 0: acknowledge once the primary has it (replication is asynchronous).
    redis_wait_replicas: Count = 0
    redis_wait_timeout_ms: Positive = 200
    state_dir: str = ".state"
    # Hex key (16, 24 or 32 bytes) sealing queued MTs and keying short-lived code hashes;
    # generated into state_dir if empty. Gateways on several hosts sharing one Redis must share it:
    # a gateway whose key cannot open what the others sealed refuses to start.
    secret_key: SecretStr = SecretStr("")
    # The SMSC the gateway binds to.
    smsc_host: str = "127.0.0.1"
    smsc_port: Port = 2775
    system_id: str = "ussdgw"
    password: SecretStr = SecretStr("ussdgw1")
    system_type: str = ""
    binds: Positive = 1
    window: Positive = 64
    enquire_link_s: Seconds = 30.0
    response_timeout_s: Seconds = 10.0
    reconnect_max_s: Seconds = 30.0
    mt_rate_per_s: Annotated[float, Field(ge=0)] = 0.0  # 0: no limit
    mt_lease_s: Seconds = 15.0
    # How long an MO is remembered to drop the SMSC's redeliveries of it (one whose ESME_ROK it
    # missed): at least as long as the SMSC goes on redelivering one; a repeat after it is a new MO.
    # Its message reference (a handset's 8 bits wrap every 256 messages; a restarted SMSC may start
    # again at 1) tells repeats apart only within it, so keep it well short of that.
    mo_dedup_window_s: Seconds = 300.0
    # Costly work (a password's scrypt, of an MO or of a self-care API request) runs on
    # `costly_workers` threads per gateway process (0: half its CPUs, at least one); one that would
    # wait longer than `costly_max_wait_s` for them is not started: its MO is answered ESME_RTHROTTLED
    # and the SMSC delivers it again later, an API request gets 503 with Retry-After, with nothing
    # counted (`ussdgw/costly.py`). Cheap MOs and requests never wait behind it.
    costly_workers: Count = 0
    costly_max_wait_s: Seconds = 2.0
    # D2 (`handlers/d2.py`): a code of one kind (password, archive code) at most once per cool-down,
    # and at most `secret_per_hour` a subscriber asks for herself per hour; SMS others cause (a gift
    # code, an N2 joining notice) at most `d2_from_others_per_hour` to one recipient and `d2_caused_per_hour` from one
    # sender.
    secret_cooldown_s: Count = 20
    secret_per_hour: Count = 5
    d2_from_others_per_hour: Positive = 5
    d2_caused_per_hour: Positive = 10
    # The SMSC simulator and its HTTP API / web phone; `sim_url` is where the CLI's phone commands
    # (`sms`, `dial`) find a running one (empty: sim_host and sim_http_port).
    sim_host: str = "127.0.0.1"
    sim_port: Port = 2775
    sim_http_port: Port = 8080
    sim_url: str = ""
    # The platform's self-care API (".../api/v1") for the web phone's subscriber panel; in one
    # process with the platform it is found by itself. The platform must trust the simulator's
    # address (`api_trusted_networks`): the panel signs in by MSISDN header, as the network does.
    sim_selfcare_url: str = ""
    sim_accounts: SecretMap = Field(default_factory=lambda: {"ussdgw": SecretStr("ussdgw1")})
    # How long the SMSC holds an MT for a phone that is off before it expires (SPEC D1).
    sim_validity_s: Seconds = 600.0
    # The simulator's SMSC: a delivery receipt leaves `sim_receipt_delay_s` after its submit_sm_resp;
    # intermediate notifications (comma-separated message states, e.g. "ENROUTE,ACCEPTED"; none by
    # default) go to an ESME whose registered_delivery asks for them; an MO or receipt the ESME did
    # not take is tried again with a backoff up to `sim_retry_max_s`; a phone gives up on a USSD
    # dialogue the network has not closed after `sim_ussd_timeout_s` (the network's dialogue timeout).
    # With `sim_state_file`, a stop writes what the SMSC still owes its ESMEs and its phones there,
    # and the next start reads them back and delivers again (a restart forgets nothing it owed).
    sim_receipt_delay_s: Seconds = 0.005
    sim_intermediate_states: str = ""
    sim_retry_max_s: Seconds = 10.0
    sim_ussd_timeout_s: Seconds = 180.0
    sim_state_file: str = ""
    # The SMSC takes at most `sim_max_connections` ESMEs at once (the next bind gets ESME_RTHROTTLED)
    # and closes a connection not bound within `sim_bind_timeout_s`; its SMTP sink takes at most
    # `sim_smtp_max_connections` (421 beyond) and drops a session silent for `sim_smtp_timeout_s`.
    sim_max_connections: Positive = 64
    sim_max_phones: Positive = 100_000  # phones the simulator makes at most (POST, MOs, MTs to new numbers)
    sim_bind_timeout_s: Seconds = 10.0
    sim_smtp_max_connections: Positive = 64
    sim_smtp_timeout_s: Seconds = 30.0
    # Both HTTP servers (self-care API, simulator): at most `http_max_connections` at once (503
    # beyond); a connection must send a whole request head within `http_idle_timeout_s` of
    # connecting, and is closed after as long idle between requests; a body must arrive within
    # `http_body_timeout_s` (408).
    http_max_connections: Positive = 512
    http_idle_timeout_s: Seconds = 15.0
    http_body_timeout_s: Seconds = 10.0
    # The platform's own HTTP API (self-care).
    api_host: str = "127.0.0.1"
    api_port: Port = 8081
    # Self-care API: a session ends after `session_idle_s` without activity (P5); sign-in locks
    # after `signin_max_failures` wrong passwords in a row (P4) and takes at most `signin_per_hour`
    # attempts per MSISDN and password (a new SMS password starts afresh). Every attempt at a secret
    # (sign-in, recovery, the password asked to link a number or change an owner, a password by SMS
    # from the web) counts first in a sliding window of `api_attempts_window_s`: at most
    # `api_client_attempts` per client address and `api_attempts_overall` for all clients of one API
    # process, refused before anything about a number is read. Header enrichment (P6) is believed
    # only from `api_trusted_networks` (comma-separated CIDRs, none by default) and reads
    # `api_msisdn_header`; a client's address is the connection's, or, when that is one of
    # `api_trusted_proxies` (comma-separated CIDRs, none by default), the nearest address in its
    # X-Forwarded-For that is not one of them (a client cannot choose its address by sending one);
    # the admin API (P9) wants `admin_token` as a bearer token (generated into state_dir when empty);
    # a bonus gift's SMS code is valid for `gift_code_ttl_s` (M6); the MMS
    # archive stays open `mms_archive_ttl_s` (A2, 72 h); holds older than `hold_recovery_s` are
    # finished by recovery.
    session_idle_s: Positive = 1200
    signin_max_failures: Positive = 3
    signin_per_hour: Positive = 20
    api_client_attempts: Positive = 20
    api_attempts_overall: Positive = 1200
    api_attempts_window_s: Seconds = 60.0
    api_trusted_networks: str = ""
    api_trusted_proxies: str = ""
    api_msisdn_header: str = "X-MSISDN"
    admin_token: SecretStr = SecretStr("")
    gift_code_ttl_s: Positive = 1800
    mms_archive_ttl_s: Positive = 72 * 3600
    sms_archive_code_ttl_s: Positive = 600
    hold_recovery_s: Seconds = 60.0
    # E-mail (P8, M5, D3): the SMTP server the platform sends through (port 0: the simulator's sink
    # running in the same process), and the simulator's SMTP sink (port 0: any free port).
    smtp_host: str = "127.0.0.1"
    smtp_port: Port = 0
    smtp_timeout_s: Seconds = 10.0
    mail_from: str = "lk@selfcare.example"
    sim_smtp_port: Port = 0
    # Logs: "auto" is readable lines on a terminal and JSON lines otherwise.
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["auto", "console", "json"] = "auto"
    # USSD: how long a dialogue waits for one answer and in all (PROTOCOL.md: ~30-60 s and ~180 s);
    # service codes served by external HTTP apps ("500:http://host/ussd,...") with their timeout and
    # the networkCode they are told; when an N2 application is reviewed (SPEC: within 24 h;
    # `handlers.number_management.review_due` runs due reviews, tests fast-forward).
    ussd_step_timeout_s: Seconds = 60.0
    ussd_dialogue_timeout_s: Seconds = 180.0
    ussd_http_apps: StrMap = Field(default_factory=dict)
    ussd_http_timeout_s: Seconds = 3.0
    ussd_network_code: str = "25001"
    n2_review_delay_s: Seconds = 3600.0

    _key: bytes | None = PrivateAttr(default=None)

    @field_validator("sim_accounts", "ussd_http_apps", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        """`500:http://host/ussd,600:...` (the environment's spelling of a map; JSON too) into a dict."""
        if isinstance(value, str) and value.lstrip().startswith("{"):
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"expected a JSON object or key:value pairs separated by commas ({exc})") from None
        if isinstance(value, str):
            pairs = [pair.split(":", 1) for pair in value.split(",") if pair.strip()]
            if any(len(pair) != 2 for pair in pairs):
                raise ValueError("expected key:value pairs separated by commas")
            return {key.strip(): item.strip() for key, item in pairs}
        return value

    @field_validator("api_trusted_proxies")
    @classmethod
    def _cidrs(cls, value: str) -> str:
        for cidr in filter(None, (c.strip() for c in value.split(","))):
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"{cidr!r} is not an address or a network (CIDR)") from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _redis_target(cls, value: str) -> str:
        if value:
            parse_redis_url(value)  # its ValueError says which form is expected, without the password
        return value

    @field_validator("secret_key")
    @classmethod
    def _hex_key(cls, value: SecretStr) -> SecretStr:
        raw = value.get_secret_value()
        if raw:
            try:
                size = len(bytes.fromhex(raw))
            except ValueError:
                size = -1
            if size not in (16, 24, 32):
                raise ValueError("expected 32, 48 or 64 hex digits (a 16, 24 or 32 byte key)")
        return value

    def __repr_args__(self) -> Any:
        """Secrets show as stars (SecretStr); so does a password inside the Redis URL."""
        for name, value in super().__repr_args__():
            yield name, (_URL_PASSWORD.sub(r"\1***@", value) if name == "redis_url" and value else value)

    def with_overrides(self, **overrides: Any) -> Settings:
        """A copy with these fields changed (None: keep), validated like the original."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        if not clean:
            return self
        values = {name: getattr(self, name) for name in self.model_fields_set}
        try:
            copy = type(self).model_validate({**values, **clean})
        except ValidationError as exc:
            raise SettingsError(describe_errors(exc, {}, clean)) from None
        if self._key is not None and copy.secret_key == self.secret_key and copy.state_dir == self.state_dir:
            copy._key = self._key
        return copy

    def secret_key_bytes(self) -> bytes:
        """The configured key, or one kept in the state folder so restarts can read queued MTs.

        Read once per settings object: the gift and archive paths ask for it on every request.
        """
        if self._key is None:
            raw = self.secret_key.get_secret_value()
            self._key = bytes.fromhex(raw or read_or_create_secret(Path(self.state_dir) / "secret.key",
                                                                   secrets.token_hex(32)))
        return self._key

    def to_environment(self) -> dict[str, str]:
        """What was set, as `USSDGW_*` variables: a child process (a load's gateways) loads the same settings."""
        env = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, dict):
                value = ",".join(f"{k}:{v.get_secret_value() if isinstance(v, SecretStr) else v}"
                                 for k, v in value.items())
            env[f"{ENV_PREFIX}{name.upper()}"] = str(value)
        return env

    def sim_credentials(self) -> dict[str, str]:
        """The simulator's ESME accounts as system_id -> password, for the SMSC to check binds."""
        return {system_id: password.get_secret_value() for system_id, password in self.sim_accounts.items()}



# ---- loading: defaults < TOML < environment < flags ---------------------------------------------
# TOML sections for readability: `[smsc]` `port = 2776` is `smsc_port = 2776`. Each section lists its
# flat fields and the prefix its keys drop (`system_id` stays `system_id` inside `[smsc]`).
SECTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "redis": ("redis_", ("redis_url", "redis_cluster", "redis_wait_replicas", "redis_wait_timeout_ms")),
    "smsc": ("smsc_", ("smsc_host", "smsc_port", "system_id", "password", "system_type", "binds", "window",
                       "enquire_link_s", "response_timeout_s", "reconnect_max_s", "mt_rate_per_s", "mt_lease_s",
                       "mo_dedup_window_s", "costly_workers", "costly_max_wait_s")),
    "simulator": ("sim_", ("sim_host", "sim_port", "sim_http_port", "sim_url", "sim_selfcare_url", "sim_accounts",
                           "sim_validity_s", "sim_smtp_port", "sim_max_connections", "sim_max_phones",
                           "sim_bind_timeout_s", "sim_smtp_max_connections", "sim_smtp_timeout_s")),
    "http": ("http_", ("http_max_connections", "http_idle_timeout_s", "http_body_timeout_s")),
    "api": ("api_", ("api_host", "api_port", "api_trusted_networks", "api_trusted_proxies", "api_msisdn_header",
                     "admin_token",
                     "session_idle_s", "signin_max_failures", "signin_per_hour", "api_client_attempts",
                     "api_attempts_overall", "api_attempts_window_s")),
    "smtp": ("smtp_", ("smtp_host", "smtp_port", "smtp_timeout_s", "mail_from")),
    "ussd": ("ussd_", ("ussd_step_timeout_s", "ussd_dialogue_timeout_s", "ussd_http_apps", "ussd_http_timeout_s",
                       "ussd_network_code", "n2_review_delay_s")),
    "log": ("log_", ("log_level", "log_format")),
}
SECRET_FIELDS = frozenset({"secret_key", "password", "admin_token", "sim_accounts", "redis_url"})


class _FromEnvironment(Settings, BaseSettings):
    """The settings' fields as pydantic-settings finds them in the environment (names case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, case_sensitive=False, extra="ignore")


def load_settings(config_file: str | None = None, environ: Mapping[str, str] | None = None,
                  **flags: Any) -> Settings:
    """Settings for a command: defaults < TOML file < `REDIS_URL` < `USSDGW_*` < flags (None: not given).

    Raises SettingsError naming the variable, file key or flag of a value that does not fit.
    """
    env = os.environ if environ is None else environ
    layers: list[tuple[dict[str, Any], Mapping[str, str]]] = []  # lowest first: values, where each came from
    path = config_file or env.get(CONFIG_ENV) or (DEFAULT_CONFIG_FILE if Path(DEFAULT_CONFIG_FILE).exists() else None)
    if path:
        layers.append(_read_toml(Path(path)))
    if env.get("REDIS_URL"):
        layers.append(({"redis_url": env["REDIS_URL"]}, {"redis_url": "REDIS_URL"}))
    from_env = _environment(env)
    layers.append((from_env, {name: f"{ENV_PREFIX}{name.upper()}" for name in from_env}))
    given = {name: value for name, value in flags.items() if value is not None}
    layers.append((given, {name: f"--{name.replace('_', '-')}" for name in given}))

    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for layer, where in layers:
        values.update(layer)
        origin.update(where)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(describe_errors(exc, origin, values)) from None


def _environment(env: Mapping[str, str]) -> dict[str, Any]:
    source = EnvSettingsSource(_FromEnvironment)
    source.env_vars = {name.lower(): value for name, value in env.items()}  # this mapping (tests pass their own)
    return {name: value for name, value in source().items() if name in Settings.model_fields}


def _read_toml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The file's settings by flat field name, sections unfolded; unknown names are an error."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the settings file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    unknown: list[str] = []
    for key, value in data.items():
        if key in SECTIONS and isinstance(value, dict):
            prefix, fields = SECTIONS[key]
            by_key = {name.removeprefix(prefix): name for name in fields}
            for inner, item in value.items():
                name = by_key.get(inner)
                if name is None:
                    unknown.append(f"[{key}] {inner}")
                elif name in values:
                    raise SettingsError(f"{path}: {name} is set twice ({origin[name]} and [{key}] {inner})")
                else:
                    values[name], origin[name] = item, f"{path}: [{key}] {inner}"
        elif key in Settings.model_fields:
            if key in values:
                raise SettingsError(f"{path}: {key} is set twice ({origin[key]} and {key})")
            values[key], origin[key] = value, f"{path}: {key}"
        else:
            unknown.append(key)
    if unknown:
        raise SettingsError(f"{path}: unknown settings {', '.join(unknown)}")
    return values, origin


def describe_errors(exc: ValidationError, origin: Mapping[str, str], values: Mapping[str, Any]) -> str:
    """One line for all of a validation's errors: where each value came from, what it must be."""
    parts = []
    for error in exc.errors(include_url=False):
        name = str(error["loc"][0]) if error["loc"] else ""
        where = origin.get(name, name)
        hidden = name in SECRET_FIELDS or name not in values
        shown = where if hidden else f"{where}={_short(values[name])!r}"
        parts.append(f"{shown}: {_expected(error['msg'])}")
    return "invalid settings: " + "; ".join(parts)


def _short(value: Any) -> Any:
    return value[:40] + "…" if isinstance(value, str) and len(value) > 40 else value


def _expected(message: str) -> str:
    """pydantic's message, with 'Input should be' read as what the value must be."""
    if message == "Extra inputs are not permitted":
        return "no such setting"
    message = re.sub(r"^Value error, ", "", message)
    return re.sub(r"^Input should be", "expected", message)
