"""A2: the MMS archive is open while `sub:{m}:mms_archive` lives (value: when it was opened).

The key's TTL closes it in Redis by itself; nobody has to remember to. (A1's code is a profile
field: `ussdgw.store.profile.sms_archive_code`.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ussdgw.store.commit import Change, Write, WriteOp
from ussdgw.store.errors import guarded
from ussdgw.store.keys import mms_archive_key

if TYPE_CHECKING:
    from ussdgw.store.core import Store


def mms_archive_opened(msisdn: str, at: float, ttl_s: int) -> Change:
    return Change(writes=(Write(WriteOp.SETEX, mms_archive_key(msisdn), value=f"{at:.3f}", ttl_s=ttl_s),))


class Archives:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def mms_opened_at(self, msisdn: str) -> float | None:
        """When the MMS archive was opened, while it is open in Redis; else None."""
        raw = await guarded(self._store.redis.get(mms_archive_key(msisdn)))
        return float(raw) if raw is not None else None
