"""Sign-in and the password around it (SPEC P1, P4-P9) for the self-care API.

- `sign_in`: MSISDN + password. The P1 checksum (`sms_codes.precheck`) turns a malformed password
  away before scrypt runs; either way a wrong password counts towards the P4 lock (3 in a row),
  which only a new password by SMS (R1/R2), recovery (P8) or a support reset (P9) lifts.
  Every refusal reads the same and costs the same scrypt (a dummy hash for a number without
  one), so answers and timing tell nobody which numbers exist. Attempts are counted per client
  address and overall first (`Platform.attempt`, in memory: a spray is refused before any Redis
  key is touched), then per number and password (`signin_per_hour`, started afresh by a new
  password, so a stranger's attempts never outlive the victim's next SMS password).
- Sessions (P5): a random token (`secrets`), kept in Redis under its SHA-256 with a TTL; a request
  more than `session_idle_s` after the last one finds the session ended; `sign_out` ends it at once.
- `sign_in_by_header` (P6): the operator's network puts the MSISDN in a header; believed only when
  the request comes from a configured network.
- `change_password` (P7), `recover_by_code_word` (P8, by SMS or e-mail), `support_reset` (P9).
- `request_password_by_sms`: the cabinet's «Получить пароль по SMS» — R1 from the web: a new
  password from 3339 under the same D2 guard (cool-down, hourly cap) as ПАРОЛЬ to 3339.

Passwords are hashed and checked only with `sms_codes`, on the platform's costly-work pool
(`Platform.costly`, shared with the SMS and USSD channels), so a storm of sign-ins cannot starve their
replies. A request the pool refuses raises `ussdgw.costly.Overloaded` (the API answers 503 with
Retry-After) before anything is counted or changed: its place in the pool is taken (`reserved`)
before the attempt is counted, so a refused try never counts towards a client's window, a number's
hourly cap or its P4 lock. No password, code word or token reaches a log line or the audit trail.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import ipaddress
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from handlers import access, d2
from handlers.base import Channel
from handlers.operations import (
    SELFCARE_SENDER,
    Result,
    api_audit,
    bad_msisdn,
    new_mt,
    unknown_subscriber,
    valid_msisdn,
)
from handlers.password import SESSIONS_ENDED, password_reply, spread_common
from handlers.ports import MailError, Platform
from sms_codes import (
    NewPasswordError,
    PasswordMismatchError,
    check_new_password,
    format_retry_reply,
    generate_password,
    hash_password,
    precheck,
    verify_password,
)
from ussdgw.logs import get_logger
from ussdgw.store import Change, Outcome, RateGuard
from ussdgw.store.profile import (
    code_word_set,
    email_set,
    new_password,
    password_changed,
    signed_in,
    signed_in_by_network,
)

log = get_logger("ussdgw.handlers.account")

MAX_SECRET_LENGTH = 64
NEW_PASSWORD_HINT = "Получите новый пароль: отправьте ПАРОЛЬ на 3339."


@dataclass(frozen=True, slots=True)
class Session:
    msisdn: str
    via: str
    created_at: float
    token: str


async def _verify(platform: Platform, password: str, stored: str) -> bool:
    try:
        return await platform.costly.run(verify_password, password, stored)
    except ValueError:
        log.error("stored_hash_malformed")
        return False


@contextlib.contextmanager
def _place_for(platform: Platform, password: str) -> Iterator[None]:
    """The costly pool's place for this password's scrypt, taken before anything is counted
    (`Overloaded` at once); none for a password that fails the P1 checksum: no scrypt runs for it."""
    if not precheck(password):
        yield
        return
    with platform.costly.reserved():
        yield


def _secret_arg(value: object, what: str, field_name: str) -> str | Result:
    if not isinstance(value, str) or not value or len(value) > MAX_SECRET_LENGTH:
        return Result.fail("bad_request", f"Укажите {what} (от 1 до {MAX_SECRET_LENGTH} символов).", field=field_name)
    return value


# ---- P1/P4: sign-in with a password ----------------------------------------------------------
WRONG_TEXT = ("Неверный номер или пароль. После 3 неверных паролей подряд вход блокируется до нового пароля "
              f"по SMS. {NEW_PASSWORD_HINT}")
"""One answer for an unknown number, a number without a password, a wrong password and a wrong
one on a locked number: nobody learns from it which numbers exist or have a password."""


@functools.cache
def _dummy_hash() -> str:
    """A hash no password matches, with the parameters real ones have: verified for a number with
    no hash, so that every refusal costs the same scrypt."""
    return hash_password(secrets.token_urlsafe(16))


def generation(pw_hash: str) -> str:
    """A short name for one password of a number: per-number counters are kept under it, so a new
    password (a new SMS) starts them afresh whatever a stranger filled."""
    return hashlib.sha256(pw_hash.encode()).hexdigest()[:12] if pw_hash else "none"


async def _matches(platform: Platform, secret: str, stored: str) -> bool:
    """scrypt against `stored`, or against a dummy when there is none (same cost, never a match)."""
    if not stored:
        await _verify(platform, secret, await platform.costly.run(_dummy_hash))
        return False
    return await _verify(platform, secret, stored)


async def check_password(platform: Platform, msisdn: str, password: str, *, channel: Channel | str,
                         purpose: str, per_hour: int | None = None) -> Result:
    """Is `password` the one of `msisdn`? A wrong one counts towards the P4 lock. Every refusal is
    the same `wrong_password` (WRONG_TEXT) after the same work, whether the number is unknown, has
    no password, or the password is wrong; only the right password on a locked number learns that
    it is locked. `per_hour`: also cap the attempts on this number's current password (429).
    Used by sign-in, P7 (old password), N1 and N4 (the other number's password). `Overloaded`
    (the costly pool is full) comes before the attempt is counted."""
    with _place_for(platform, password):
        return await _check_password(platform, msisdn, password, channel=channel, purpose=purpose, per_hour=per_hour)


async def _check_password(platform: Platform, msisdn: str, password: str, *, channel: Channel | str,
                          purpose: str, per_hour: int | None) -> Result:
    profile = await platform.store.subscribers.profile(msisdn)
    stored = profile.pw_hash
    if stored and per_hour is not None:
        refused = await platform.store.attempt(msisdn, RateGuard(f"{purpose}:{generation(stored)}", 0, per_hour))
        if refused is not None:
            reason, retry_at = refused
            await platform.store.audit(msisdn, api_audit(purpose, channel, "rate_limited"))
            text = format_retry_reply(reason, retry_at, per_hour, platform.now()).replace(
                "Код уже отправлен. Повторный запрос", "Слишком много попыток входа. Следующая попытка")
            return Result.fail("rate_limited", text, retry_at=retry_at)
    # P1: a password whose checksum fails is wrong without running scrypt (the same for any number).
    shaped = precheck(password)
    right = shaped and await _matches(platform, password, stored)
    if right and profile.locked:
        await platform.store.audit(msisdn, api_audit(purpose, channel, "locked"))
        return Result.fail("locked", f"Вход заблокирован после 3 неверных паролей подряд. {NEW_PASSWORD_HINT}")
    if right:
        return Result.done("Пароль верный.", pw_hash=stored)
    if stored:
        counted = await platform.store.subscribers.wrong_password(
            msisdn, stored, platform.settings.signin_max_failures,
            api_audit(purpose, channel, "wrong_password", "checksum" if not shaped else "hash"))
        log.info("wrong_password", msisdn=msisdn, purpose=purpose, counted=counted is not None)
    return Result.fail("wrong_password", WRONG_TEXT)


async def _open_session(platform: Platform, msisdn: str, via: str) -> Session:
    token = secrets.token_urlsafe(32)
    now = platform.now()
    epoch = (await platform.store.subscribers.profile(msisdn)).auth_epoch
    await platform.store.sessions.put(token, {"msisdn": msisdn, "via": via, "created_at": now, "last_seen": now,
                                         "epoch": epoch}, platform.settings.session_idle_s)
    return Session(msisdn, via, now, token)


def _signed_in(session: Session, platform: Platform) -> Result:
    return Result.done("Вы вошли в Личный кабинет.", token=session.token, msisdn=session.msisdn, via=session.via,
                       idle_timeout_s=platform.settings.session_idle_s)


async def sign_in(platform: Platform, msisdn_raw: object, password_raw: object,
                  *, channel: Channel | str = Channel.API, client: str | None = None) -> Result:
    """P1, P4, P5: MSISDN + password -> a session token. `client` (its address) is counted first
    (`Platform.attempt`): a spray is refused before anything about a number is read or written.
    Before that the costly pool takes the hash's place (`Overloaded`: nothing counted)."""
    msisdn = valid_msisdn(msisdn_raw)
    if msisdn is None:
        return bad_msisdn(msisdn_raw)
    password = _secret_arg(password_raw, "пароль", "password")
    if isinstance(password, Result):
        return password
    with _place_for(platform, password):
        limited = platform.attempt(client)
        if limited is not None:
            return limited
        checked = await check_password(platform, msisdn, password, channel=channel, purpose="signin",
                                       per_hour=platform.settings.signin_per_hour)
    if not checked.ok:
        return checked
    if await access.is_blocked(platform.store, msisdn, platform.now()):
        await platform.store.audit(msisdn, api_audit("signin", channel, "blocked", detail="via=password"))
        return blocked_refusal()
    applied = await platform.store.commit(msisdn, signed_in(msisdn, checked.data["pw_hash"], platform.now()) + Change(
        must_exist=True, audit=(api_audit("signin", channel, detail="via=password"),)))
    if not applied.ok:
        return Result.fail("wrong_password", "Пароль только что изменился. Войдите с новым паролем.")
    session = await _open_session(platform, msisdn, "password")
    log.info("signed_in", msisdn=msisdn, via="password")
    return _signed_in(session, platform)


def trusted(platform: Platform, client_ip: str | None) -> bool:
    if not client_ip:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    for cidr in filter(None, (c.strip() for c in platform.settings.api_trusted_networks.split(","))):
        try:
            if address in ipaddress.ip_network(cidr, strict=False):
                return True
        except ValueError:
            log.warning("trusted_network_malformed", cidr=cidr)
    return False


async def sign_in_by_header(platform: Platform, header_value: object, client_ip: str | None,
                            *, channel: Channel | str = Channel.API) -> Result:
    """P6: inside the operator's network the MSISDN comes in a header; no password needed."""
    if not trusted(platform, client_ip):
        return Result.fail("not_trusted_network", "Вход по номеру без пароля работает только в сети оператора "
                           "(мобильный интернет). Войдите с паролем.")
    msisdn = valid_msisdn(header_value)
    if msisdn is None:
        return bad_msisdn(header_value)
    if await access.is_blocked(platform.store, msisdn, platform.now()):
        await platform.store.audit(msisdn, api_audit("signin", channel, "blocked", detail="via=network"))
        return blocked_refusal()
    await platform.store.commit(msisdn, signed_in_by_network(msisdn, platform.now()) + Change(
        audit=(api_audit("signin", channel, detail="via=network"),)))
    session = await _open_session(platform, msisdn, "network")
    log.info("signed_in", msisdn=msisdn, via="network")
    return _signed_in(session, platform)


# ---- P5: sessions ----------------------------------------------------------------------------
async def authenticate(platform: Platform, token: str | None) -> Session | Result:
    """The session of `token`, its idle timer restarted; or why there is none."""
    if not token:
        return Result.fail("unauthorized", "Требуется вход: передайте токен сессии в заголовке "
                           "Authorization: Bearer <token>.")
    sessions = platform.store.sessions
    data = await sessions.get(token)
    now = platform.now()
    if data is None or now - float(data.get("last_seen", 0)) > platform.settings.session_idle_s:
        if data is not None:
            await sessions.delete(token)
            await platform.store.audit(str(data["msisdn"]), api_audit("session_expired", Channel.API, "expired"))
        return Result.fail("session_expired", "Сессия завершена: 20 минут без активности или выход. Войдите снова.")
    profile = await platform.store.subscribers.profile(str(data["msisdn"]))
    if profile.auth_epoch != data.get("epoch", "0"):  # a new password or owner since (P7-P9, R1, R2, N2, N4)
        await sessions.delete(token)
        return Result.fail("session_expired", "Сессия завершена: пароль номера сменился или номер переоформлен. "
                           "Войдите снова.")
    if access.blocked_on(profile.blocked_from, now):  # N3: nobody is signed in as a blocked number
        await sessions.delete(token)
        await platform.store.audit(profile.msisdn, api_audit("session_ended", Channel.API, "blocked"))
        return blocked_refusal()
    data["last_seen"] = now
    await sessions.put(token, data, platform.settings.session_idle_s)
    return Session(str(data["msisdn"]), str(data.get("via", "")), float(data.get("created_at", now)), token)


async def sign_out(platform: Platform, session: Session) -> Result:
    """P5 "Выход": the session ends at once."""
    await platform.store.sessions.delete(session.token)
    await platform.store.audit(session.msisdn, api_audit("signout", Channel.API))
    log.info("signed_out", msisdn=session.msisdn)
    return Result.done("Вы вышли из Личного кабинета.")


# ---- P7: change password ---------------------------------------------------------------------
def blocked_refusal() -> Result:
    return Result.fail("blocked", access.BLOCKED_TEXT)


async def change_password(platform: Platform, msisdn: str, old: object, new: object, repeat: object,
                          *, channel: Channel | str = Channel.API, session: Session | None = None) -> Result:
    """P7: old password, the new one twice; at least 6 characters with upper- and lower-case
    letters and digits. Any refusal changes nothing. Every other session of the number ends;
    `session`, the one that asked, goes on under the new password."""
    old_pw = _secret_arg(old, "старый пароль", "old_password")
    if isinstance(old_pw, Result):
        return old_pw
    new_pw, repeat_pw = new if isinstance(new, str) else "", repeat if isinstance(repeat, str) else ""
    try:
        check_new_password(old_pw, new_pw, repeat_pw)
    except NewPasswordError as exc:
        code = "password_mismatch" if isinstance(exc, PasswordMismatchError) else "weak_password"
        await platform.store.audit(msisdn, api_audit("password_change", channel, code))
        return Result.fail(code, exc.reply,
                           field="new_password_repeat" if code == "password_mismatch" else "new_password")
    with platform.costly.reserved():  # both hashes in one place: the second is never refused after the first
        checked = await check_password(platform, msisdn, old_pw, channel=channel, purpose="password_change")
        if not checked.ok:
            if checked.code == "wrong_password":
                return Result.fail("wrong_password", "Старый пароль неверен. Пароль не изменён.")
            return checked
        new_hash = await platform.costly.run(hash_password, new_pw)
    changed = password_changed(msisdn, checked.data["pw_hash"], new_hash, platform.now())
    applied = await platform.store.commit(msisdn, changed + Change(
        must_exist=True, audit=(api_audit("password_changed", channel),)))
    if not applied.ok:
        return Result.fail("conflict", "Пароль только что изменился другим способом. Пароль не изменён.")
    if session is not None:
        await _renew(platform, session)
    log.info("password_changed", msisdn=msisdn)
    return Result.done("Пароль изменён. Другие сеансы Личного кабинета этого номера завершены.")


async def _renew(platform: Platform, session: Session) -> None:
    """The session that changed the password carries the number's new epoch: it alone goes on."""
    data = await platform.store.sessions.get(session.token)
    if data is not None:
        data["epoch"] = (await platform.store.subscribers.profile(session.msisdn)).auth_epoch
        await platform.store.sessions.put(session.token, data, platform.settings.session_idle_s)


# ---- P8 / P9: a new password sent out -------------------------------------------------------
async def _issue_new_password(platform: Platform, msisdn: str, *, delivery: str, email: str, event: str,
                              channel: Channel | str) -> Result:
    """Generate, store and deliver a new P1 password (by SMS through the outbox, or by e-mail first:
    a mail the server refuses (D3) leaves the old password in force). Every session of the number
    ends; a member of an N2 account gets the common password, set on every member."""
    if delivery == "sms" and await access.is_blocked(platform.store, msisdn, platform.now()):
        await platform.store.audit(msisdn, api_audit(event, channel, "blocked"))
        return Result.fail("blocked", "Номер заблокирован: SMS на него не доставляются. Сначала снимите блокировку.")
    guards = d2.own(platform.settings, d2.Kind.PASSWORD)
    peeked = await d2.peek(platform.store, msisdn, guards)
    if peeked is not None:
        _, reason, retry_at = peeked
        await platform.store.audit(msisdn, api_audit(event, channel, "rate_limited", reason))
        return Result.fail("rate_limited", d2.refusal(d2.Kind.PASSWORD, guards, reason, retry_at, platform.now()),
                           retry_at=retry_at)
    members = await access.joined_numbers(platform.store, msisdn)
    password = generate_password()
    pw_hash = await platform.costly.run(hash_password, password)
    if delivery == "email":
        if platform.mailer is None:
            return Result.fail("unavailable", "Отправка e-mail сейчас недоступна. Выберите SMS.")
        try:
            body = (password_reply(password, common_with=len(members))
                    + "\n\nЕсли вы не запрашивали пароль, обратитесь в поддержку.")
            await platform.mailer.send(email, "Новый пароль от Личного кабинета", body)
        except MailError as exc:
            await platform.store.audit(msisdn, api_audit("email_failed", channel, exc.kind, f"smtp={exc.smtp_code}"))
            log.warning("email_failed", msisdn=msisdn, smtp_code=exc.smtp_code, kind=exc.kind)
            return Result.fail("mail_failed", f"Письмо не доставлено: {exc.reply}. Пароль не изменён.",
                               smtp_code=exc.smtp_code)
    messages = (new_mt(msisdn, password_reply(password, common_with=len(members)), secret=True),) \
        if delivery == "sms" else ()
    applied = await platform.store.commit(msisdn, new_password(msisdn, pw_hash, platform.now()) + Change(
        must_exist=True, guards=guards, messages=messages,
        audit=(api_audit(event, channel, detail=f"delivery={delivery}"),)))
    if applied.outcome is Outcome.LIMITED:
        text = d2.refusal(d2.Kind.PASSWORD, guards, applied.code, applied.retry_at or platform.now(), platform.now())
        return Result.fail("rate_limited", text, retry_at=applied.retry_at)
    if not applied.ok:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    platform.dispatch(messages)
    if members and applied.outcome is Outcome.APPLIED:
        await spread_common(platform.store, msisdn, members, pw_hash, platform.now(), step=secrets.token_hex(8),
                            channel=str(channel))
    log.info(event, msisdn=msisdn, delivery=delivery)
    where = "по SMS" if delivery == "sms" else "на e-mail"
    common = f" Это общий пароль услуги «Управление номерами» для {len(members) + 1} номеров." if members else ""
    return Result.done(f"Новый пароль отправлен {where}.{common} {SESSIONS_ENDED}", delivery=delivery)


RECOVERY_REFUSED = ("Номер или кодовое слово неверны. Пароль не изменён. Если кодовое слово не задано, "
                    "получите пароль по SMS: ПАРОЛЬ на 3339.")


async def recover_by_code_word(platform: Platform, msisdn_raw: object, code_word_raw: object, delivery: object,
                               *, channel: Channel | str = Channel.API, client: str | None = None) -> Result:
    """P8: MSISDN + code word -> a new password by SMS or e-mail, as chosen. The client is counted
    before anything is looked up; an unknown number, one without a code word and a wrong code word
    get the same answer after the same scrypt. The costly pool's place is taken first, for both
    hashes (the code word's, the new password's): `Overloaded` comes before anything is counted."""
    msisdn = valid_msisdn(msisdn_raw)
    if msisdn is None:
        return bad_msisdn(msisdn_raw)
    code_word = _secret_arg(code_word_raw, "кодовое слово", "code_word")
    if isinstance(code_word, Result):
        return code_word
    if delivery not in ("sms", "email"):
        return Result.fail("bad_request", "Способ доставки: sms или email.", field="delivery")
    with platform.costly.reserved():
        return await _recover(platform, msisdn, code_word, str(delivery), channel=channel, client=client)


async def _recover(platform: Platform, msisdn: str, code_word: str, delivery: str, *, channel: Channel | str,
                   client: str | None) -> Result:
    limited = platform.attempt(client)
    if limited is not None:
        return limited
    profile = await platform.store.subscribers.profile(msisdn)
    stored = profile.code_word_hash
    if stored:
        guard = RateGuard(f"recovery:{generation(profile.pw_hash)}", 0, platform.settings.signin_per_hour)
        refused = await platform.store.attempt(msisdn, guard)
        if refused is not None:
            return Result.fail("rate_limited", "Слишком много попыток восстановления. Попробуйте позже.",
                               retry_at=refused[1])
    if not await _matches(platform, code_word.strip().casefold(), stored):
        if stored:
            await platform.store.audit(msisdn, api_audit("password_recovery", channel, "wrong_code_word"))
            log.info("wrong_code_word", msisdn=msisdn)
        return Result.fail("wrong_code_word", RECOVERY_REFUSED)
    email = profile.email
    if delivery == "email" and not email:
        return Result.fail("bad_request", "E-mail для номера не указан. Выберите доставку по SMS.", field="delivery")
    return await _issue_new_password(platform, msisdn, delivery=delivery, email=email,
                                     event="password_recovered", channel=channel)


async def request_password_by_sms(platform: Platform, msisdn_raw: object, *, channel: Channel | str = Channel.API,
                                  client: str | None = None) -> Result:
    """R1 from the cabinet's sign-in page: a new password by SMS from 3339, as ПАРОЛЬ to 3339 gives.

    The same D2 guard ("secret": one cool-down and one hourly cap per MSISDN, shared with the SMS,
    USSD and recovery ways), the same SMS text; it unlocks a P4 lock the same way. The client is
    counted first; a number the platform does not know gets the same answer and no SMS (nobody
    pumps SMS to made-up numbers through the web form, nor learns which numbers exist)."""
    msisdn = valid_msisdn(msisdn_raw)
    if msisdn is None:
        return bad_msisdn(msisdn_raw)
    with platform.costly.reserved():  # `Overloaded` before the client is counted
        limited = platform.attempt(client)
        if limited is not None:
            return limited
        sent = Result.done(f"Пароль отправлен по SMS с номера {SELFCARE_SENDER} на {msisdn}.", delivery="sms")
        if not (await platform.store.subscribers.profile(msisdn)).exists:
            return sent
        issued = await _issue_new_password(platform, msisdn, delivery="sms", email="", event="password_issued",
                                           channel=channel)
    return issued if not issued.ok and issued.code != "blocked" else sent  # a block is not told to anybody


def _norm(value: str) -> str:
    return "".join(value.split()).casefold()


async def check_owner_identity(platform: Platform, msisdn_raw: object, passport: object, contract: object, *,
                               event: str, operator: str, unchanged: str) -> tuple[str, Result | None]:
    """Support's check that the caller owns the number: passport data and contract number as on
    file (blanks and case ignored), never the SIM. The MSISDN, and the refusal when it fails (a
    wrong identity is audited as `event`; `unchanged` says what was therefore not done)."""
    msisdn = valid_msisdn(msisdn_raw)
    if msisdn is None:
        return "", bad_msisdn(msisdn_raw)
    for name, value in (("passport", passport), ("contract", contract)):
        if not isinstance(value, str) or not value.strip():
            return msisdn, Result.fail("bad_request", "Укажите паспортные данные и номер договора.", field=name)
    assert isinstance(passport, str) and isinstance(contract, str)
    profile = await platform.store.subscribers.profile(msisdn)
    if not profile.exists:
        return msisdn, unknown_subscriber(msisdn)
    if _norm(passport) != _norm(profile.passport) or _norm(contract) != _norm(profile.contract):
        await platform.store.audit(msisdn, api_audit(event, "admin", "wrong_identity", f"operator={operator}"))
        return msisdn, Result.fail("wrong_identity", f"Паспортные данные или номер договора не совпадают. {unchanged}")
    return msisdn, None


async def support_reset(platform: Platform, msisdn_raw: object, passport: object, contract: object,
                        *, operator: str = "admin") -> Result:
    """P9: support resets a password after checking passport data and contract number; SMS delivery."""
    msisdn, refusal = await check_owner_identity(platform, msisdn_raw, passport, contract, event="support_reset",
                                                 operator=operator, unchanged="Пароль не изменён.")
    if refusal is not None:
        return refusal
    return await _issue_new_password(platform, msisdn, delivery="sms", email="", event="password_reset",
                                     channel="admin")


# ---- P8's factors, set by the owner (a new owner sets her own after N4) --------------------------
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}")


async def set_code_word(platform: Platform, msisdn: str, code_word_raw: object,
                        *, channel: Channel | str = Channel.API) -> Result:
    """P8: the owner's code word (3-64 characters; compared ignoring case and outer blanks). The
    number is told by SMS, so a code word set by somebody else does not go unnoticed."""
    if not isinstance(code_word_raw, str) or not 3 <= len(code_word_raw.strip()) <= MAX_SECRET_LENGTH:
        return Result.fail("bad_request", f"Кодовое слово: от 3 до {MAX_SECRET_LENGTH} символов.", field="code_word")
    digest = await platform.costly.run(hash_password, code_word_raw.strip().casefold())
    notice = new_mt(msisdn, "Кодовое слово для восстановления пароля изменено. Если это были не вы, "
                    "обратитесь в поддержку.")
    applied = await platform.store.commit(msisdn, code_word_set(msisdn, digest, platform.now()) + Change(
        must_exist=True, messages=(notice,), audit=(api_audit("code_word_set", channel),)))
    if not applied.ok:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    platform.dispatch(applied.messages)
    log.info("code_word_set", msisdn=msisdn)
    return Result.done("Кодовое слово сохранено. По нему можно восстановить пароль.", code_word_set=True)


async def set_email(platform: Platform, msisdn: str, email_raw: object, *,
                    channel: Channel | str = Channel.API) -> Result:
    """Where the number's e-mail goes (P8 by e-mail, call detail); the number is told by SMS."""
    email = email_raw.strip() if isinstance(email_raw, str) else ""
    if len(email) > 254 or not EMAIL.fullmatch(email):
        return Result.fail("bad_request", "Укажите адрес e-mail, например name@example.com.", field="email")
    notice = new_mt(msisdn, "Адрес e-mail Личного кабинета изменён. Если это были не вы, обратитесь в поддержку.")
    applied = await platform.store.commit(msisdn, email_set(msisdn, email) + Change(
        must_exist=True, messages=(notice,), audit=(api_audit("email_set", channel),)))
    if not applied.ok:
        return Result.fail("unknown_subscriber", f"Номер {msisdn} не обслуживается оператором.")
    platform.dispatch(applied.messages)
    log.info("email_set", msisdn=msisdn)
    return Result.done(f"Адрес e-mail сохранён: {email}.", email=email)


def session_view(session: Session) -> dict[str, Any]:
    return {"msisdn": session.msisdn, "via": session.via, "created_at": session.created_at}
