"""Archives (SPEC R3/A1, R4/A2).

- R3: `PER` or `ON` to 232 -> a one-time code that opens the subscriber's SMS archive (A1) in the
  self-care API. A secret, so D2 applies: the cool-down and hourly cap shared with passwords.
  The code is kept only as an HMAC digest (`sms_codes.code_digest`) with its expiry.
- R4: any SMS to 1234, the empty one included -> the MMS archive is open for 72 hours (A2). The
  open state is a Redis key with that TTL: it closes by itself, nobody has to remember to.
"""

from __future__ import annotations

from handlers import d2
from handlers.base import Channel, Context
from handlers.operations import Result, api_audit, fmt_time
from handlers.ports import Platform
from sms_codes import CodePurpose, code_digest, code_matches, generate_code
from ussdgw import russian
from ussdgw.audit_detail import parse as parse_detail
from ussdgw.inputs import ascii_digits
from ussdgw.logs import get_logger
from ussdgw.store import AuditEvent, Change, RateGuard
from ussdgw.store.archives import mms_archive_opened
from ussdgw.store.profile import sms_archive_code as archive_code_set
from ussdgw.store.profile import sms_archive_opened

log = get_logger("ussdgw.handlers.archives")

ARCHIVE_CODE_DIGITS = 6
ARCHIVE_EVENTS = frozenset({"mo_received", "mt_submitted", "mt_receipt"})


def archive_code_reply(code: str, ttl_s: int) -> str:
    return f"Код доступа к архиву SMS: {code}. Действует {max(1, ttl_s // 60)} мин. Никому не сообщайте код."


async def sms_archive_code(ctx: Context) -> None:
    """R3 -> A1: a code for the SMS archive, under the D2 limits."""
    guards = d2.own(ctx.settings, d2.Kind.ARCHIVE_CODE)
    peeked = await d2.peek(ctx.store, ctx.msisdn, guards)
    refused = None if peeked is None else peeked[1:]
    if refused is None:
        code = generate_code(ARCHIVE_CODE_DIGITS)
        digest = code_digest(ctx.settings.secret_key_bytes(), CodePurpose.SMS_ARCHIVE, ctx.msisdn, code)
        ttl = ctx.settings.sms_archive_code_ttl_s
        result = await ctx.reply(
            archive_code_reply(code, ttl),
            change=archive_code_set(ctx.msisdn, digest, int(ctx.clock.now()) + ttl) + Change(guards=guards),
            audit=[AuditEvent("sms_archive_code", ctx.message.channel)],
            secret=True,
        )
        if not result.refused:
            log.info("sms_archive_code_sent", msisdn=ctx.msisdn, outcome=result.outcome)
            return
        assert result.retry_at is not None and result.reason is not None
        refused = (result.reason, result.retry_at)
    reason, retry_at = refused
    text = d2.refusal(d2.Kind.ARCHIVE_CODE, guards, reason, retry_at, ctx.clock.now())
    await ctx.reply_rate_limited(text, reason, "sms_archive_code")
    log.info("sms_archive_code_limited", msisdn=ctx.msisdn, reason=reason)


async def open_sms_archive(platform: Platform, msisdn: str, code_raw: object, *,
                           channel: Channel | str = Channel.API) -> Result:
    """A1: the code from 232 opens the archive once: the SMS sent and received, newest last
    (time, direction, short code; message bodies are not kept by the platform)."""
    code = ascii_digits(code_raw, max_digits=ARCHIVE_CODE_DIGITS)
    if code is None or len(code) != ARCHIVE_CODE_DIGITS:
        return Result.fail("bad_request", f"Код — {ARCHIVE_CODE_DIGITS} цифр из SMS с номера 232.", field="code")
    wrong_codes = RateGuard("archive_code_wrong", 0, 10)
    limited = await platform.store.rate_peek(msisdn, wrong_codes)
    if limited is not None:
        return Result.fail("rate_limited", "Слишком много неверных кодов. Попробуйте позже.", retry_at=limited[1])
    profile = await platform.store.subscribers.profile(msisdn)
    digest = profile.sms_archive_digest
    key_bytes = platform.settings.secret_key_bytes()
    if not digest or not code_matches(key_bytes, CodePurpose.SMS_ARCHIVE, msisdn, code, digest):
        await platform.store.attempt(msisdn, wrong_codes)
        await platform.store.audit(msisdn, api_audit("sms_archive_open", channel, "wrong_code"))
        return Result.fail("wrong_code", "Неверный код. Получите новый: отправьте PER на 232.")
    if profile.sms_archive_expires < platform.now():
        return Result.fail("expired", "Срок действия кода истёк. Получите новый: отправьте PER на 232.")
    applied = await platform.store.commit(msisdn, sms_archive_opened(msisdn, digest) + Change(
        must_exist=True, audit=(api_audit("sms_archive_opened", channel),)))
    if not applied.ok:
        return Result.fail("conflict", "Код уже использован. Получите новый: отправьте PER на 232.")
    entries = []
    for event in await platform.store.audit_trail(msisdn, count=500):
        if event.get("event") not in ARCHIVE_EVENTS:
            continue
        detail = parse_detail(event.get("detail", ""))
        entries.append({"at": float(event["ts"]), "event": event["event"], "channel": event.get("channel", ""),
                        "peer": detail.get("to") or detail.get("from", ""), "outcome": event.get("outcome", "")})
    return Result.done(f"Архив SMS: {russian.count(len(entries), 'запись')}.", entries=entries)


def mms_archive_reply(until: float) -> str:
    return f"Архив MMS открыт на 72 часа, до {fmt_time(until)}. Смотрите MMS в Личном кабинете."


async def open_mms_archive(ctx: Context) -> None:
    """R4 -> A2: any SMS to 1234 opens the MMS archive for 72 hours (a key with that TTL)."""
    ttl = ctx.settings.mms_archive_ttl_s
    now = ctx.clock.now()
    result = await ctx.reply(mms_archive_reply(now + ttl), change=mms_archive_opened(ctx.msisdn, now, ttl),
                             audit=[AuditEvent("mms_archive_opened", ctx.message.channel, detail=f"ttl_s={ttl}")])
    if ctx.result is not None:  # not a blocked number's (its commit wrote nothing: it gets the refusal)
        log.info("mms_archive_opened", msisdn=ctx.msisdn, outcome=result.outcome)


async def mms_archive_status(platform: Platform, msisdn: str) -> Result:
    """A2: open until `opened_at + 72 h`; the key's TTL closes it in Redis at the same moment."""
    opened_at = await platform.store.archives.mms_opened_at(msisdn)
    if opened_at is None:
        return Result.done("Архив MMS закрыт. Откройте его: любое SMS на 1234.", open=False)
    until = opened_at + platform.settings.mms_archive_ttl_s
    if platform.now() >= until:
        return Result.done("Архив MMS закрыт. Откройте его: любое SMS на 1234.", open=False)
    return Result.done(f"Архив MMS открыт до {fmt_time(until)}.", open=True, until=until)
