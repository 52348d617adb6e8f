"""N1 grants: a number linked into another's account, written as two ends, one in each slot.

    sub:{holder}:linked      set   the numbers `holder` may act on (its end)
    sub:{target}:linked_by   set   the numbers that may act on `target` (the granting end)

A grant holds only while both ends are there (`Grants.holds`). Linking writes the granting end
first (guarded by the password the holder showed: a password changed meanwhile, or an owner
change, refuses it), then the holder's end; revoking removes the granting end first. A crash
between the two writes therefore never leaves a grant that one side did not give: a lone
granting end grants nothing (it is listed to the target's owner, who may remove it), and a lone
holder's end is dead. An owner change (N4) removes both ends of every grant in its own slot.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ussdgw.store.commit import Change, Check, CheckKind, Write, WriteOp
from ussdgw.store.errors import guarded
from ussdgw.store.keys import linked_by_key, linked_key, sub_key

if TYPE_CHECKING:
    from ussdgw.store.core import Store


def granted(target: str, holder: str, pw_hash: str) -> Change:
    """`target` lets `holder` act on it, if `pw_hash` (the password just shown) is still its password."""
    return Change(checks=(Check(CheckKind.EQ, sub_key(target), "pw_hash", pw_hash, "stale"),),
                  writes=(Write(WriteOp.SADD, linked_by_key(target), value=holder),))


def withdrawn(target: str, *holders: str) -> Change:
    """The granting ends for `holders` are gone: they may no longer act on `target`."""
    return Change(writes=tuple(Write(WriteOp.SREM, linked_by_key(target), value=h) for h in holders))


def all_ended(msisdn: str, holds: set[str], held_by: set[str]) -> Change:
    """Both of `msisdn`'s ends of every grant (N4): nothing it held, nothing held on it."""
    return Change(writes=(*(Write(WriteOp.SREM, linked_key(msisdn), value=t) for t in sorted(holds)),
                          *(Write(WriteOp.SREM, linked_by_key(msisdn), value=h) for h in sorted(held_by))))


async def _members(store: Store, key: str) -> set[str]:
    return {m.decode() for m in await guarded(store.redis.smembers(key))}


class Grants:
    """Reads of both ends of the N1 grants."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def holds(self, holder: str, target: str) -> bool:
        """Both ends are there: `holder` may act on `target`."""
        command = self._store.pipeline.command
        mine, theirs = await guarded(asyncio.gather(command("SISMEMBER", linked_key(holder), target),
                                                    command("SISMEMBER", linked_by_key(target), holder)))
        return bool(mine) and bool(theirs)

    async def held_by(self, target: str) -> set[str]:
        """The granting ends on `target` (what its owner is shown and may revoke)."""
        return await _members(self._store, linked_by_key(target))

    async def held(self, holder: str) -> set[str]:
        """The holder's ends (each a grant only while its granting end is there too)."""
        return await _members(self._store, linked_key(holder))

    async def granting_ends(self, holder: str, targets: list[str]) -> list[bool]:
        """For each of `targets`, whether it still grants `holder`."""
        command = self._store.pipeline.command
        raw = await guarded(asyncio.gather(*(command("SISMEMBER", linked_by_key(t), holder) for t in targets)))
        return [bool(r) for r in raw]
