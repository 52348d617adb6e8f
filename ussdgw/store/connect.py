"""The Redis client for a `REDIS_URL`: one server (redis-py's `Redis`) or a Redis Cluster (its
`RedisCluster`, found from the URL's seed nodes), and a probe that asks every primary.

Both clients take the same typed calls (`hgetall`, `zadd`, a pipeline of one slot's keys, ...), so
the store's reads do not care which it has; its hot path goes through `AutoPipeline`, which routes
by slot itself. `flush` empties what a test or a private scenario owns, on every primary.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from ussdgw.redis_url import parse_redis_url

RedisClient = aioredis.Redis | RedisCluster

SOCKET_TIMEOUT_S = 5
CONNECT_TIMEOUT_S = 2
MAX_CONNECTIONS = 256  # per server (per node on a cluster)


def connect(url: str) -> RedisClient:
    """A client for `url` (`ussdgw.redis_url` says which forms); nothing is connected yet."""
    target = parse_redis_url(url)
    if not target.cluster:
        # A blocking pool: a burst of concurrent requests waits for a free connection instead of
        # failing with "Too many connections" (redis-py's default pool holds 100 and then raises).
        pool = aioredis.BlockingConnectionPool.from_url(
            url, socket_timeout=SOCKET_TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S,
            health_check_interval=30, max_connections=MAX_CONNECTIONS, timeout=SOCKET_TIMEOUT_S,
        )
        return aioredis.Redis.from_pool(pool)
    options: dict[str, Any] = {}
    if target.tls:
        options["ssl"] = True
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
        username=target.username, password=target.password, socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=CONNECT_TIMEOUT_S, max_connections=MAX_CONNECTIONS,
        # A few quick tries (redis-py's default is 10, up to 1 s apart): during a failover a request
        # is answered "unavailable" within a second and retried by its sender, not held for seconds.
        retry=Retry(ExponentialWithJitterBackoff(base=0.02, cap=0.25), retries=3), **options,
    )


async def primaries(client: RedisClient) -> list[str]:
    """The primaries as "host:port" ("redis" for one server), the slot map read first if need be."""
    if isinstance(client, aioredis.Redis):
        return ["redis"]
    await client.initialize()
    return sorted(node.name for node in client.get_primaries())


async def flush(client: RedisClient) -> None:
    """FLUSHALL on every primary (tests and private scenario platforms own their data)."""
    if isinstance(client, aioredis.Redis):
        await client.flushall()
    else:
        await client.flushall(target_nodes=RedisCluster.PRIMARIES)


class Probe:
    """PING every primary over connections of its own with short timeouts: the store's pool may
    be busy or waiting out its own 5-second timeouts, and a probe must answer quickly either way."""

    def __init__(self, client: RedisClient, timeout_s: float) -> None:
        self._client = client
        self.timeout_s = timeout_s
        self._conns: dict[str, Any] = {}
        self._lock = asyncio.Lock()

    async def check(self) -> dict[str, str]:
        """Node -> "ok" or what is wrong with it. On a cluster a node that fails makes the slot map
        be read again and the primaries asked once more (a failover names new ones)."""
        async with self._lock:  # one probe at a time on its connections
            answers = await self._ping_all()
            if isinstance(self._client, RedisCluster) and any(a != "ok" for a in answers.values()):
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout_s * 2):
                        await self._client.nodes_manager.initialize()
                answers = await self._ping_all()
            return answers

    async def _ping_all(self) -> dict[str, str]:
        if isinstance(self._client, aioredis.Redis):
            return {"redis": await self._ping("redis")}
        if not self._client.nodes_manager.slots_cache:
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    await self._client.initialize()
            except Exception as exc:
                return {"cluster": f"no slot map from the seed nodes: {type(exc).__name__}: {str(exc)[:160]}"}
        names = sorted(node.name for node in self._client.get_primaries())
        return dict(zip(names, await asyncio.gather(*(self._ping(name) for name in names)), strict=True))

    def _connection(self, name: str) -> Any:
        conn = self._conns.get(name)
        if conn is None:
            short = {"socket_timeout": self.timeout_s, "socket_connect_timeout": self.timeout_s}
            if isinstance(self._client, aioredis.Redis):
                pool = self._client.connection_pool
                conn = pool.connection_class(**{**pool.connection_kwargs, **short, "health_check_interval": 0})
            else:
                node = self._client.nodes_manager.nodes_cache[name]
                conn = node.connection_class(**{**node.connection_kwargs, **short})
            self._conns[name] = conn
        return conn

    async def _ping(self, name: str) -> str:
        conn = self._connection(name)
        try:
            async with asyncio.timeout(self.timeout_s * 2):  # connect + PING, each within timeout_s
                await conn.send_command("PING")
                reply = await conn.read_response()
        except TimeoutError:
            await conn.disconnect(nowait=True)
            return f"no answer to PING within {self.timeout_s:g} s"
        except Exception as exc:  # refused, reset, a protocol error: say which
            await conn.disconnect(nowait=True)
            return f"unreachable: {type(exc).__name__}: {str(exc)[:160]}"
        return "ok" if reply in (b"PONG", "PONG", True) else f"unexpected answer to PING: {reply!r}"[:200]

    async def close(self) -> None:
        for conn in self._conns.values():
            await conn.disconnect()
