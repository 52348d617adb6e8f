"""Numbers around a subscriber: N1 linked numbers, M4 blacklist and Локатор consents, the N2 index.

    sub:{m}:linked         set    numbers `m` may act on (their password was shown, N1)
    sub:{m}:blacklist      set    numbers this (child's) number must not reach (Родительский контроль)
    sub:{m}:locator:allow  set    numbers `m` agreed to be located by (Локатор)
    idx:n2:{b<n>}          zset   msisdn -> when its N2 application is due (`ussdgw.store.indexes`)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ussdgw.store.commit import Change, Check, CheckKind, Write, WriteOp
from ussdgw.store.errors import guarded
from ussdgw.store.keys import blacklist_key, linked_key, locator_allow_key

if TYPE_CHECKING:
    from ussdgw.store.core import Store


def linked(msisdn: str, other: str, *, limit: int) -> Change:
    """N1: `other` joins `msisdn`'s numbers: `conflict` if it is there, `too_many` at `limit`."""
    key = linked_key(msisdn)
    return Change(checks=(Check(CheckKind.NOT_MEMBER, key, value=other),
                          Check(CheckKind.SIZE_BELOW, key, value=limit, code="too_many")),
                  writes=(Write(WriteOp.SADD, key, value=other),))


def unlinked(msisdn: str, *others: str, known: bool = True) -> Change:
    """`others` leave `msisdn`'s numbers (`not_found` unless each is there, when `known`)."""
    key = linked_key(msisdn)
    checks = tuple(Check(CheckKind.MEMBER, key, value=o, code="not_found") for o in others) if known else ()
    return Change(checks=checks, writes=tuple(Write(WriteOp.SREM, key, value=o) for o in others))


def blacklisted(child: str, number: str, add: bool) -> Change:
    return Change(writes=(Write(WriteOp.SADD if add else WriteOp.SREM, blacklist_key(child), value=number),))


def locator_consent(msisdn: str, requester: str, allow: bool) -> Change:
    return Change(writes=(Write(WriteOp.SADD if allow else WriteOp.SREM, locator_allow_key(msisdn), value=requester),))


async def _members(store: Store, key: str) -> set[str]:
    return {m.decode() for m in await guarded(store.redis.smembers(key))}


class Numbers:
    """Reads of the number sets, and the N2 review index."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def linked(self, msisdn: str) -> set[str]:
        return await _members(self._store, linked_key(msisdn))

    async def blacklist(self, child: str) -> set[str]:
        return await _members(self._store, blacklist_key(child))

    async def locator_allowed(self, msisdn: str) -> set[str]:
        return await _members(self._store, locator_allow_key(msisdn))

    async def n2_due_at(self, msisdn: str, due_at: float) -> None:
        """Review `msisdn`'s N2 application at `due_at`."""
        await self._store.indexes.n2_due_at(msisdn, due_at)

    async def n2_done(self, msisdn: str) -> None:
        await self._store.indexes.n2_done(msisdn)

    async def n2_due(self, now: float, limit: int = 100, buckets: Sequence[int] | None = None) -> list[str]:
        """Applicants due by `now`, from `buckets` (default: all of them)."""
        if buckets is None:
            return await self._store.indexes.n2_due(now, limit)
        return await self._store.indexes.n2_due(now, limit, buckets)
