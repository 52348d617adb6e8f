"""R1, R2, P1-P4: a new self-care password by SMS (ПАРОЛЬ to 3339, логин to 7888).

The plain password exists only in the reply MT (sealed while queued) and never in a log.
Issuing one clears the P4 lock and the wrong-password counter.
"""

from __future__ import annotations

import structlog

from handlers import d2
from handlers.base import HandlerContext
from sms_codes import generate_password
from ussdgw.store import AuditEvent, Change
from ussdgw.store.profile import new_password

log = structlog.get_logger("ussdgw.handlers.password")


def password_reply(password: str) -> str:
    return f"Пароль для входа в Личный кабинет: {password}\nЛогин - ваш номер телефона. Никому не сообщайте пароль."


async def issue_password(ctx: HandlerContext) -> None:
    if await ctx.replayed():  # a redelivery: its answer again, without a password hashed for nothing
        log.info("password_redelivered", msisdn=ctx.msisdn, outcome="duplicate")
        return
    guards = d2.own(ctx.settings, d2.Kind.PASSWORD)
    peeked = await d2.peek(ctx.store, ctx.msisdn, guards)
    refused = None if peeked is None else peeked[1:]
    if refused is None:
        password = generate_password()
        pw_hash = await ctx.hash_password(password)
        result = await ctx.reply(
            password_reply(password),
            change=new_password(ctx.msisdn, pw_hash, ctx.clock.now()) + Change(guards=guards),
            audit=[AuditEvent("password_issued", ctx.message.channel, detail=f"via={ctx.message.short_code}")],
            secret=True,
        )
        if not result.refused:
            log.info("password_issued", msisdn=ctx.msisdn, outcome=result.outcome)
            return
        assert result.retry_at is not None and result.reason is not None
        refused = (result.reason, result.retry_at)
    reason, retry_at = refused
    await ctx.reply_rate_limited(d2.refusal(d2.Kind.PASSWORD, guards, reason, retry_at, ctx.clock.now()), reason,
                                 "password_refused")
    log.info("password_rate_limited", msisdn=ctx.msisdn, reason=reason)
