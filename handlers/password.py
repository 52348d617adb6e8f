"""R1, R2, P1-P4: a new self-care password by SMS (ПАРОЛЬ to 3339, логин to 7888).

The plain password exists only in the reply MT (sealed while queued) and never in a log.
Issuing one clears the P4 lock and the wrong-password count, and ends the number's sessions.
A number joined with others in one N2 account has one password with them: a new one for any
member is the new common one, set on every member (`spread_common`), and the reply says so.
"""

from __future__ import annotations

import asyncio
import secrets

from handlers import access, d2
from handlers.base import Context
from sms_codes import generate_password
from ussdgw.logs import get_logger
from ussdgw.store import MO_TTL_S, AuditEvent, Change, MoMark, Store, acting
from ussdgw.store.profile import new_password

log = get_logger("ussdgw.handlers.password")

SESSIONS_ENDED = "Все сеансы Личного кабинета этого номера завершены."
SESSIONS_ENDED_SMS = "Прежние сеансы ЛК завершены."  # short: the SMS stays two UCS2 parts


def password_reply(password: str, *, common_with: int = 0) -> str:
    """The SMS that carries a new password; `common_with`: how many other numbers share it (N2)."""
    text = f"Пароль для входа в Личный кабинет: {password}\nЛогин - ваш номер телефона. Никому не сообщайте пароль."
    if common_with:
        text += (f"\nЭто общий пароль услуги «Управление номерами»: он изменён и для других номеров "
                 f"({common_with}).")
    return f"{text}\n{SESSIONS_ENDED_SMS}"


async def spread_common(store: Store, msisdn: str, members: list[str], pw_hash: str, now: float, *,
                        step: str, channel: str) -> None:
    """N2: `msisdn`'s new password becomes every other member's too (each in its own slot, once per
    `step`), audited on each member as `msisdn`'s act; their sessions end with it."""
    with acting.scope(msisdn, channel):
        for member in members:
            await store.commit(member, new_password(member, pw_hash, now) + Change(
                mo=MoMark(f"n2pw:{step}:{member}", MO_TTL_S), must_exist=True,
                audit=(AuditEvent("password_issued", channel, detail=f"n2 common from={msisdn}"),)))
    log.info("n2_common_password", msisdn=msisdn, members=len(members) + 1)


async def issue_password(ctx: Context) -> None:
    if await ctx.replayed():  # a redelivery: its answer again, without a password hashed for nothing
        log.info("password_redelivered", msisdn=ctx.msisdn, outcome="duplicate")
        return
    guards = d2.own(ctx.settings, d2.Kind.PASSWORD)
    # one round trip for both reads (the store batches what is asked meanwhile)
    peeked, members = await asyncio.gather(d2.peek(ctx.store, ctx.msisdn, guards),
                                           access.joined_numbers(ctx.store, ctx.msisdn))
    refused = None if peeked is None else peeked[1:]
    if refused is None:
        password = generate_password()
        pw_hash = await ctx.hash_password(password)
        now = ctx.clock.now()
        result = await ctx.reply(
            password_reply(password, common_with=len(members)),
            change=new_password(ctx.msisdn, pw_hash, now) + Change(guards=guards),
            audit=[AuditEvent("password_issued", ctx.message.channel, detail=f"via={ctx.message.short_code}"
                              + (f" common={len(members) + 1}" if members else ""))],
            secret=True,
        )
        if not result.refused:
            if members and result.outcome == "applied":
                step = ctx.message.mo_id or secrets.token_hex(8)
                await spread_common(ctx.store, ctx.msisdn, members, pw_hash, now, step=step,
                                    channel=ctx.message.channel)
            log.info("password_issued", msisdn=ctx.msisdn, outcome=result.outcome)
            return
        assert result.retry_at is not None and result.reason is not None
        refused = (result.reason, result.retry_at)
    reason, retry_at = refused
    await ctx.reply_rate_limited(d2.refusal(d2.Kind.PASSWORD, guards, reason, retry_at, ctx.clock.now()), reason,
                                 "password_refused")
    log.info("password_rate_limited", msisdn=ctx.msisdn, reason=reason)
