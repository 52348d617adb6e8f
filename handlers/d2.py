"""SPEC D2, the one resend policy: which counters a secret sent by SMS spends, and how a refusal reads.

A subscriber's own request for a code (`own`) spends two counters on her number:

- `d2:<kind>`: the cool-down of that kind of code (`secret_cooldown_s`): a resend of *that* code
  waits, a code of another kind does not (PER to 232 right after ПАРОЛЬ to 3339 is answered);
- `d2:own`: her hourly cap (`secret_per_hour`), spent only by what she asks for herself.

An SMS someone else causes (`caused`: a gift code, the notice that N2 joined a number to another's
account) spends, on the recipient's number, the cool-down
of that kind and an hourly cap of its own (`d2:others:<kind>`, `d2:others`: `d2_from_others_per_hour`)
and, on the sender's number, `d2:caused` (`d2_caused_per_hour`). Neither touches the recipient's
own counters: nobody can stop a subscriber getting her password by sending her gifts.

The counting itself runs in Redis, inside the step that sends (`rate_check` in
`ussdgw/store/lua/prelude.lua`): a counter is a `RateGuard` on the number's slot. A refusal names
what was refused and when to ask again (`refusal`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from sms_codes import format_retry_reply
from ussdgw.store import RateGuard

if TYPE_CHECKING:
    from ussdgw.config import Settings
    from ussdgw.store import Store

NO_HOURLY_CAP = 1_000_000
"""The per-hour bound of a cool-down counter: the hourly cap is another counter's."""


class Kind(StrEnum):
    """Kinds of secret sent by SMS, each with its own cool-down."""

    PASSWORD = "password"  # ПАРОЛЬ to 3339, логин to 7888, *111#, the web, recovery, support, N2
    ARCHIVE_CODE = "archive_code"  # PER / ON to 232
    GIFT_CODE = "gift_code"  # M6, caused by the sender
    N2_NOTICE = "n2_notice"  # "your number joins ...'s account", caused by the N2 applicant


WHAT = {Kind.PASSWORD: "Пароль", Kind.ARCHIVE_CODE: "Код архива SMS", Kind.GIFT_CODE: "Код подарка",
        Kind.N2_NOTICE: "Уведомление об объединении номеров"}


def own(settings: Settings, kind: Kind) -> tuple[RateGuard, ...]:
    """What the subscriber's own request for a code of `kind` spends on her number."""
    return (RateGuard(f"d2:{kind}", settings.secret_cooldown_s, NO_HOURLY_CAP),
            RateGuard("d2:own", 0, settings.secret_per_hour))


def to_recipient(settings: Settings, kind: Kind) -> tuple[RateGuard, ...]:
    """What an SMS of `kind` another subscriber causes spends on the recipient's number."""
    return (RateGuard(f"d2:others:{kind}", settings.secret_cooldown_s, NO_HOURLY_CAP),
            RateGuard("d2:others", 0, settings.d2_from_others_per_hour))


def by_sender(settings: Settings) -> tuple[RateGuard, ...]:
    """What causing an SMS to somebody else spends on the sender's number."""
    return (RateGuard("d2:caused", 0, settings.d2_caused_per_hour),)


async def peek(store: Store, msisdn: str, guards: tuple[RateGuard, ...]) -> tuple[RateGuard, str, float] | None:
    """Would any of `guards` refuse now? The one that frees last (its guard, reason, retry_at); a cheap
    read before costly work: the step that sends decides for real."""
    refusals = []
    for guard in guards:
        refused = await store.rate_peek(msisdn, guard)
        if refused is not None:
            refusals.append((guard, refused[0], refused[1]))
    return max(refusals, key=lambda r: r[2], default=None)


def refusal(kind: Kind, guards: tuple[RateGuard, ...], reason: str, retry_at: float, now: float) -> str:
    """The reply to a refused request for a code of `kind`: what, and when to ask again (one UCS2 SMS).

    `reason` tells the counter apart: a cool-down is the kind's own, an hourly cap the other one."""
    capped = next((g for g in guards if g.per_hour < NO_HOURLY_CAP), guards[-1])
    return format_retry_reply(reason, retry_at, capped.per_hour, now, what=WHAT[kind])
