"""The store's errors for callers: Redis away, and a sealing key that does not fit the data.

    StoreUnavailable    Redis could not be reached or did not answer in time, or a Redis Cluster
                        still redirected or refused the command after its retries (MOVED, ASK,
                        TRYAGAIN, CLUSTERDOWN, a slot no primary serves); nothing can be said about
                        the step, so it is retried as a whole (the gateway answers the SMSC
                        ESME_RX_T_APPN, the API 503). Every step is idempotent or refused on retry.

    SealingKeyMismatch  this process's secret key cannot open what is sealed in this Redis (the
                        MTs other gateways queued): it must not start (`Store.check_sealing_key`)

A Lua error or a wrong-type reply is a bug, not an outage: it surfaces as redis-py's ResponseError.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import redis.exceptions

# What redis-py raises when Redis is away, or when a cluster's redirections and refusals outlasted
# its retries (MovedError is an AskError; MasterDownError a ClusterDownError).
OUTAGES = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError, redis.exceptions.ClusterError,
           redis.exceptions.AskError, redis.exceptions.TryAgainError)


class StoreUnavailable(Exception):
    """Redis could not be reached or did not answer; the operation may be retried as a whole."""


class SealingKeyMismatch(Exception):
    """The configured secret key is not the one the MTs queued in this Redis were sealed with."""


async def guarded(awaitable: Awaitable[Any]) -> Any:
    """`awaitable`'s result, with Redis being away turned into `StoreUnavailable`.

    Typed Any on purpose: redis-py types replies as unions over `decode_responses`; this store
    never decodes in the client, so what comes back is bytes (and lists and dicts of bytes)."""
    try:
        return await awaitable
    except OUTAGES as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
    except redis.exceptions.RedisClusterException as exc:  # no slot map, a slot not covered
        if isinstance(exc, redis.exceptions.CrossSlotTransactionError | redis.exceptions.InvalidPipelineStack):
            raise  # a bug: keys of several slots in one step
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
