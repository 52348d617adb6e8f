"""The one open USSD dialogue per phone: `sub:{m}:ussd`, v = version (dialogue id:step), d = JSON
(`ussdgw.smpp.ussd.UssdDialogue`). A step writes it within its commit (`commit.DialogueStep`),
with a PEXPIRE at the nearer of the step's and the dialogue's deadline plus a grace, so that a
late answer is told politely that it came too late."""

from __future__ import annotations

import asyncio
from datetime import date
from typing import TYPE_CHECKING

from ussdgw.store.errors import guarded
from ussdgw.store.keys import mo_key, sub_key, ussd_key
from ussdgw.store.profile import STORED, block_day

if TYPE_CHECKING:
    from ussdgw.store.core import Store


class Dialogues:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def load(self, msisdn: str, mo_id: str | None) -> tuple[bool, bytes | None]:
        """(was this MO applied already, the open dialogue's JSON or None), in one round trip: the
        store's auto-pipeline, with the other steps' commands (every USSD step reads this first)."""
        batch = self._store.pipeline
        seen, raw = await guarded(asyncio.gather(batch.command("EXISTS", mo_key(msisdn, mo_id or "-")),
                                                 batch.command("HGET", ussd_key(msisdn), "d")))
        return bool(seen) and mo_id is not None, raw

    async def step_read(self, msisdn: str, mo_id: str | None) -> tuple[bool, bytes | None, date | None]:
        """`load`, and the number's N3 block day (the MO gate's read), in the same round trip: the
        first thing every USSD step needs to know."""
        batch = self._store.pipeline
        seen, raw, blocked = await guarded(asyncio.gather(
            batch.command("EXISTS", mo_key(msisdn, mo_id or "-")), batch.command("HGET", ussd_key(msisdn), "d"),
            batch.command("HGET", sub_key(msisdn), STORED["blocked_from"])))
        return bool(seen) and mo_id is not None, raw, block_day(blocked)

    async def ttl(self, msisdn: str) -> float | None:
        """Seconds the open dialogue has left in Redis (None when there is none)."""
        ms = int(await guarded(self._store.redis.pttl(ussd_key(msisdn))))
        return ms / 1000 if ms >= 0 else None
