"""P5 sessions: `session:<sha256 of the token>` -> JSON, expiring after the idle timeout."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ussdgw.store.errors import guarded
from ussdgw.store.keys import session_key

if TYPE_CHECKING:
    from ussdgw.store.core import Store


class Sessions:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def put(self, token: str, data: Mapping[str, Any], ttl_s: int) -> None:
        await guarded(self._store.redis.set(session_key(token), json.dumps(dict(data)), ex=max(1, ttl_s)))

    async def get(self, token: str) -> dict[str, Any] | None:
        raw = await guarded(self._store.redis.get(session_key(token)))
        return json.loads(raw) if raw else None

    async def delete(self, token: str) -> bool:
        return bool(await guarded(self._store.redis.delete(session_key(token))))
