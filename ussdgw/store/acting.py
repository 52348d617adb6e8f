"""P10: who acted, when it is not the subscriber the audit entry is about.

A session of one number managing another (N1, N2), or one member's act reaching the others of an
N2 account, runs inside `scope()` with `act_as(actor, channel)` said once; every audit entry the
store then writes for another subscriber records `actor=<number> actor_channel=<channel>` in its
detail (`attributed`, applied by the commit engine and `Store.audit`), so the trail of the number
acted on says who did it and how. An entry about the actor's own number stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace

from ussdgw.audit_detail import render
from ussdgw.store.model import AuditEvent


@dataclass(frozen=True, slots=True)
class Actor:
    msisdn: str
    channel: str


_ACTOR: ContextVar[Actor | None] = ContextVar("ussdgw_actor", default=None)


@contextmanager
def scope(actor: str | None = None, channel: str = "") -> Iterator[None]:
    """Everything audited inside is attributed to `actor` (none: until `act_as` names one)."""
    token = _ACTOR.set(Actor(actor, channel) if actor else None)
    try:
        yield
    finally:
        _ACTOR.reset(token)


def act_as(actor: str, channel: str) -> None:
    """Name the actor of the current `scope` (a request that has just found its session)."""
    _ACTOR.set(Actor(actor, channel))


def attributed(subject: str, event: AuditEvent) -> AuditEvent:
    """`event` as audited on `subject`'s trail: with the actor when somebody else acts."""
    actor = _ACTOR.get()
    if actor is None or actor.msisdn == subject:
        return event
    by = render(actor=actor.msisdn, actor_channel=actor.channel)
    return replace(event, detail=f"{event.detail} {by}" if event.detail else by)
