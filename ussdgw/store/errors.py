"""The store's one error for callers: Redis away.

    StoreUnavailable    Redis could not be reached or did not answer in time; nothing can be said
                        about the step, so it is retried as a whole (the gateway answers the SMSC
                        ESME_RX_T_APPN, the API 503). Every step is idempotent or refused on retry.

A Lua error or a wrong-type reply is a bug, not an outage: it surfaces as redis-py's ResponseError.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import redis.exceptions


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer; the operation may be retried as a whole."""


async def guarded(awaitable: Awaitable[Any]) -> Any:
    """`awaitable`'s result, with Redis being away turned into `StoreUnavailable`.

    Typed Any on purpose: redis-py types replies as unions over `decode_responses`; this store
    never decodes in the client, so what comes back is bytes (and lists and dicts of bytes)."""
    try:
        return await awaitable
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
        raise StoreUnavailable(str(exc)) from exc
