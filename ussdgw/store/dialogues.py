"""The one open USSD dialogue per phone: `sub:{m}:ussd`, v = version (dialogue id:step), d = JSON
(`ussdgw.smpp.ussd.UssdDialogue`). A step writes it within its commit (`commit.DialogueStep`),
with a PEXPIRE at the nearer of the step's and the dialogue's deadline plus a grace, so that a
late answer is told politely that it came too late."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from ussdgw.store.errors import guarded
from ussdgw.store.keys import mo_key, sub_key, ussd_key
from ussdgw.store.profile import STORED, block_day

if TYPE_CHECKING:
    from ussdgw.store.core import Store


_BLOCKED_FROM = STORED["blocked_from"].encode()


@dataclass(frozen=True, slots=True)
class StepRead:
    """What a USSD step reads first (`Dialogues.step_read`), as Redis returned it."""

    applied: bool  # the MO was applied already (a redelivery)
    dialogue: bytes | None  # the open dialogue's JSON
    profile: list[bytes]  # the subscriber's hash, flat: field, value, ... (`Profile.from_stored`)

    @property
    def blocked_from(self) -> date | None:
        """The N3 block day in the profile read (the MO gate's question)."""
        raw = self.profile
        for i in range(0, len(raw) - 1, 2):
            if raw[i] == _BLOCKED_FROM:
                return block_day(raw[i + 1])
        return None


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

    async def step_read(self, msisdn: str, mo_id: str | None) -> StepRead:
        """`load`, and the subscriber's profile hash (the MO gate's block day is in it, and most
        menus show a part of it), in one script call (`lua/ussd_read.lua`): what every USSD step
        reads first. One call, not three commands: a step's read is one future, one reply."""
        seen, raw, profile = await guarded(self._store.scripts.submit(
            "ussd_read", [mo_key(msisdn, mo_id or "-"), ussd_key(msisdn), sub_key(msisdn)], ()))
        if isinstance(profile, dict):  # a map when the connection speaks RESP3
            profile = [item for pair in profile.items() for item in pair]
        return StepRead(bool(seen) and mo_id is not None, raw, profile)

    async def ttl(self, msisdn: str) -> float | None:
        """Seconds the open dialogue has left in Redis (None when there is none)."""
        ms = int(await guarded(self._store.redis.pttl(ussd_key(msisdn))))
        return ms / 1000 if ms >= 0 else None
