"""Commands issued while Redis is busy with the previous batch leave together, as one batch.

A busy gateway has hundreds of MOs in flight, each awaiting its own script; sent one by one, every
call costs a pooled connection, a write and a read, and redis-py's machinery around them. Here
they go over connections of their own: the first command of an idle moment leaves at the end of
the loop turn; whatever is issued while a batch is out waits and leaves as the next batch (the
more load, the bigger the batches). Each command stays what it was (a script is atomic on its
own; a pipeline is not a transaction and none is needed), and each caller gets its own result or
its own error. redis-py has no auto-pipelining across tasks, hence this module.

On one server there is one lane (its connections, its queue). On a Redis Cluster there is a lane
per primary: each command goes to the primary that serves its key's slot (redis-py's slot map,
`RedisCluster.nodes_manager`), so a batch per primary leaves at once. What a node answers for one
command is handled for that command alone:

    MOVED        the slot lives elsewhere now: the slot map is corrected and the command re-queued
    ASK          the slot is being migrated: `ASKING` and the command go to the target, once
    TRYAGAIN     the keys are mid-migration: the command is re-queued after a short pause
    CLUSTERDOWN  the cluster is failing over: the same, and the slot map is read again
    NOSCRIPT     the node does not know the script: SCRIPT LOAD on that node, then the call again

With `wait_replicas` set, a batch holding a durable command (a commit) ends with `WAIT n timeout`:
those commands are answered only once n replicas have every write sent before them on that
connection; fewer in time is `StoreUnavailable` (the change may be lost if the primary fails now).

A command still redirected or refused after `MAX_ATTEMPTS` fails with `StoreUnavailable`, as does
every command of a batch whose node could not be reached or did not answer in time: that node's
batch only, the other primaries' batches are not touched. After a failed batch the slot map is
read again (a failover moves the slots to a replica), at most once per `REFRESH_PAUSE_S`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from ussdgw.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from ussdgw.store.scripts import Script

MAX_ATTEMPTS = 8  # redirections and refusals one command may meet before the store is "unavailable"
RETRY_PAUSE_S = 0.05  # TRYAGAIN / CLUSTERDOWN: the first pause, doubled on each further refusal
REFRESH_PAUSE_S = 0.5  # the slot map is read again at most this often after a failed batch
ASKING = b"*1\r\n$6\r\nASKING\r\n"


def pack(args: tuple[Any, ...]) -> bytes:
    """One command in RESP, packed by hiredis (redis-py's own packer cost a sixth of the gateway's
    CPU). str, bytes, int and float go as they are; str and int subclasses (StrEnum, IntEnum),
    bytearray and memoryview as their plain values, as redis-py sends them; anything else (None,
    bool, objects) is the caller's TypeError."""
    try:
        packed: bytes = hiredis.pack_command(args)
    except TypeError:
        packed = hiredis.pack_command(tuple(_plain(arg) for arg in args))
    return packed


def _plain(arg: Any) -> Any:
    if isinstance(arg, bool) or arg is None:
        raise TypeError(f"cannot send {type(arg).__name__} to Redis")
    if isinstance(arg, str):
        return str.__str__(arg)
    if isinstance(arg, int):
        return int(arg)
    if isinstance(arg, float):
        return float(arg)
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg)
    raise TypeError(f"cannot send {type(arg).__name__} to Redis")


@dataclass(slots=True)
class _Queued:
    args: tuple[Any, ...]
    packed: bytes
    future: asyncio.Future[Any]
    script: Script | None = None  # an EVALSHA: reloaded and run again once on NOSCRIPT
    reloaded: bool = False
    slot: int | None = None  # on a cluster: the slot of its key (its EVALSHA's, for a SCRIPT LOAD)
    ask: str | None = None  # "host:port" an ASK redirection sent it to, for this one try
    attempts: int = 0
    durable: bool = False  # with `AutoPipeline.wait_replicas`: answered once that many replicas have it

    @property
    def wire(self) -> bytes:
        return ASKING + self.packed if self.ask else self.packed


class _Lane:
    """One server's connections and queue: the batching of the module docstring, for one node."""

    def __init__(self, pipeline: AutoPipeline, name: str, make_connection: Callable[[], Any],
                 connections: int) -> None:
        self.name = name
        self._pipeline = pipeline
        self._idle = [make_connection() for _ in range(connections)]
        self._all = list(self._idle)
        self._queue: list[_Queued] = []
        self.sending: set[asyncio.Task[None]] = set()
        self._scheduled = False

    def add(self, queued: _Queued) -> None:
        self._queue.append(queued)
        if self._idle and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if not self._idle or not self._queue:
            return
        batch, self._queue = self._queue, []
        conn = self._idle.pop()
        task = asyncio.ensure_future(self._run(conn, batch))
        self.sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, conn))

    def _sent(self, task: asyncio.Task[None], conn: Any) -> None:
        self.sending.discard(task)
        self._idle.append(conn)
        self._flush()  # what piled up meanwhile leaves now, as one batch

    async def _run(self, conn: Any, batch: list[_Queued]) -> None:
        results: list[Any] = []
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._pipeline.timeout_s):
                if not conn.is_connected:
                    await conn.connect()
                wait = self._pipeline.wait_command if any(q.durable for q in batch) else None
                await conn.send_packed_command(b"".join(q.wire for q in batch) + (wait or b""), False)
                for queued in batch:
                    results.append(await self._reply(conn, queued))
                if wait:  # WAIT: how many replicas have every write sent on this connection so far
                    self._pipeline.replicated(batch, results, int(await conn.read_response(disconnect_on_error=False)))
            elapsed = time.perf_counter() - started
        except Exception as exc:  # the batch as a whole failed: this node away, or too slow
            await conn.disconnect(nowait=True)
            self._pipeline.batch_failed(self.name, batch, StoreUnavailable(f"{self.name}: {exc or type(exc).__name__}"))
            return
        except BaseException:  # cancelled mid-batch (shutdown): no caller may wait forever
            await conn.disconnect(nowait=True)
            _fail(batch, StoreUnavailable("batch cancelled"))
            raise
        self._pipeline.batch_done(len(batch), elapsed)
        await self._pipeline.settle(batch, results)

    @staticmethod
    async def _reply(conn: Any, queued: _Queued) -> Any:
        if queued.ask:  # ASKING's own +OK (or its error, which the command's reply repeats)
            with contextlib.suppress(redis.exceptions.ResponseError):
                await conn.read_response(disconnect_on_error=False)
        try:
            return await conn.read_response(disconnect_on_error=False)
        except redis.exceptions.ResponseError as exc:  # this command's error, not the batch's
            return exc

    async def close(self, timeout_s: float) -> None:
        if self.sending:
            await asyncio.wait(self.sending, timeout=timeout_s)
        for conn in self._all:
            await conn.disconnect()


class AutoPipeline:
    """Batches every command issued while a batch is out into the next one, per primary (module docstring)."""

    def __init__(self, redis_client: aioredis.Redis | RedisCluster, timeout_s: float = 5.0,
                 connections: int = 2) -> None:
        self._client = redis_client
        self.timeout_s = timeout_s
        # Two connections per node, so that the gateway prepares the next batch while Redis runs the last.
        self._connections = connections
        self._lanes: dict[str, _Lane] = {}
        self.wait_replicas = 0  # > 0: durable commands wait for this many replicas (Redis WAIT)
        self.wait_timeout_ms = 200
        self._waiting: list[_Queued] = []  # a cluster's commands until its slot map has been read
        self._mapping: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._tasks: set[asyncio.Task[Any]] = set()
        self.batches = 0  # how many round trips so far (for tests and the benchmark)
        # What the nodes answered instead of a reply, by kind (MOVED, ASK, TRYAGAIN, CLUSTERDOWN,
        # NOSCRIPT) and how many batches failed as a whole: for tests, drills and the metrics.
        self.redirections: collections.Counter[str] = collections.Counter()
        self.on_redirect: Callable[[str], None] | None = None  # told each of them (the metrics hang here)
        # Told the size and duration of every batch that went through (the metrics hang here).
        self.on_batch: Callable[[int, float], None] | None = None
        if isinstance(redis_client, aioredis.Redis):
            pool = redis_client.connection_pool
            # No per-reply socket timeout (a timer per reply): a batch has one deadline.
            kwargs = {**pool.connection_kwargs, "socket_timeout": None}
            self._single: _Lane | None = _Lane(self, "redis", lambda: pool.connection_class(**kwargs), connections)
            self._lanes["redis"] = self._single
        else:
            self._single = None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._mapping is not None:
            self._mapping.cancel()
        for lane in list(self._lanes.values()):
            await lane.close(self.timeout_s)
        _fail(self._waiting, StoreUnavailable("store closed"))

    def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any], *,
                durable: bool = False) -> asyncio.Future[Any]:
        """Run `script` by its SHA in the next batch (on a cluster: on the primary of its first key's
        slot); `durable`: answered only once `wait_replicas` replicas have its writes."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        queued = _Queued(command, pack(command), asyncio.get_running_loop().create_future(), script,
                         durable=durable and self.wait_replicas > 0)
        if isinstance(self._client, RedisCluster) and keys:
            queued.slot = self._client.keyslot(keys[0])
        return self._add(queued)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any one-key Redis command in the next batch (the key second, as in HSET key ...); the
        reply as Redis sent it (RESP2, bytes)."""
        queued = _Queued(args, pack(args), asyncio.get_running_loop().create_future())
        if isinstance(self._client, RedisCluster) and len(args) > 1:
            queued.slot = self._client.keyslot(args[1])
        return self._add(queued)

    def _add(self, queued: _Queued) -> asyncio.Future[Any]:
        if self._single is not None:
            self._single.add(queued)
        elif self._mapped:
            self._route(queued)
        else:
            self._waiting.append(queued)
            if self._mapping is None:
                self._mapping = asyncio.ensure_future(self._map())
        return queued.future

    # ---- a cluster's routing ----------------------------------------------------------------
    @property
    def _mapped(self) -> bool:
        assert isinstance(self._client, RedisCluster)
        return bool(self._client.nodes_manager.slots_cache)

    async def _map(self) -> None:
        """Read the slot map once (redis-py's `initialize`), then route what waited for it."""
        assert isinstance(self._client, RedisCluster)
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._client.initialize()
        except Exception as exc:
            waiting, self._waiting = self._waiting, []
            _fail(waiting, StoreUnavailable(f"cluster: no slot map from the seed nodes: {exc}"))
        else:
            waiting, self._waiting = self._waiting, []
            for queued in waiting:
                self._route(queued)
        finally:
            self._mapping = None

    def _route(self, queued: _Queued) -> None:
        assert isinstance(self._client, RedisCluster)
        if queued.ask is not None:
            self._lane(queued.ask).add(queued)
            return
        manager = self._client.nodes_manager
        try:
            node = (manager.get_node_from_slot(queued.slot) if queued.slot is not None
                    else self._client.get_default_node() or manager.get_nodes_by_server_type("primary")[0])
        except (redis.exceptions.SlotNotCoveredError, IndexError) as exc:
            _fail([queued], StoreUnavailable(f"cluster: {exc or 'no primary known'}"))
            return
        self._lane(node.name).add(queued)

    def _lane(self, name: str) -> _Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = _Lane(self, name, lambda: self._node_connection(name), self._connections)
        return lane

    def _node_connection(self, name: str) -> Any:
        """A connection of the pipeline's own to node `name` ("host:port"), as redis-py would make it."""
        assert isinstance(self._client, RedisCluster)
        manager = self._client.nodes_manager
        node = manager.nodes_cache.get(name) or next(iter(manager.nodes_cache.values()))
        host, _, port = name.rpartition(":")
        kwargs = {**node.connection_kwargs, "host": host, "port": int(port), "socket_timeout": None}
        return node.connection_class(**kwargs)

    def _again(self, queued: _Queued, failure: str, *, pause: float = 0.0) -> None:
        """Queue `queued` once more (after `pause`), or fail it once it has been tried enough."""
        queued.attempts += 1
        if queued.attempts >= MAX_ATTEMPTS:
            _fail([queued], StoreUnavailable(f"cluster: {failure} after {queued.attempts} tries"))
        elif pause:
            asyncio.get_running_loop().call_later(pause, self._add, queued)
        else:
            self._add(queued)

    def _refresh_soon(self) -> None:
        """Read the slot map again in the background (at most once per REFRESH_PAUSE_S)."""
        now = time.monotonic()
        if self._single is not None or now - self._refreshed_at < REFRESH_PAUSE_S:
            return
        self._refreshed_at = now
        task = asyncio.ensure_future(self._refresh())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self) -> None:
        assert isinstance(self._client, RedisCluster)
        with contextlib.suppress(Exception):  # a cluster mid-failover may not answer yet: the next failure asks again
            async with asyncio.timeout(self.timeout_s):
                await self._client.nodes_manager.initialize()

    @property
    def wait_command(self) -> bytes:
        return pack(("WAIT", self.wait_replicas, self.wait_timeout_ms))

    def replicated(self, batch: list[_Queued], results: list[Any], replicas: int) -> None:
        """WAIT's answer for `batch`: too few replicas make each durable command's reply "unavailable"
        (its change may be lost with the primary; the caller retries, and a retried step is idempotent)."""
        if replicas >= self.wait_replicas:
            return
        for i, queued in enumerate(batch):
            if queued.durable and not isinstance(results[i], Exception):
                results[i] = StoreUnavailable(f"only {replicas} of {self.wait_replicas} replicas confirmed "
                                              f"the write within {self.wait_timeout_ms} ms")

    # ---- what the lanes report ----------------------------------------------------------------
    def batch_done(self, size: int, elapsed: float) -> None:
        self.batches += 1
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # a metrics hook never fails commands Redis has run
                self.on_batch(size, elapsed)

    def batch_failed(self, node: str, batch: list[_Queued], failure: StoreUnavailable) -> None:
        """Node `node` could not take `batch`: its callers fail (they retry the whole step), and
        on a cluster the slot map is read again, for a failover may have moved its slots."""
        self._count("batch_failed")
        _fail(batch, failure)
        self._refresh_soon()

    def _count(self, kind: str) -> None:
        self.redirections[kind] += 1
        if self.on_redirect is not None:
            with contextlib.suppress(Exception):  # a metrics hook never fails a command
                self.on_redirect(kind)

    async def settle(self, batch: list[_Queued], results: list[Any]) -> None:
        """Each command's own outcome: its reply, its error, or another try (module docstring)."""
        reloading: set[tuple[str, str | int | None]] = set()  # one SCRIPT LOAD per script and node
        for queued, result in zip(batch, results, strict=True):
            if queued.future.done():
                continue
            asked, queued.ask = queued.ask, None
            kind = _kind(result)
            if kind:
                self._count(kind)
            if isinstance(result, redis.exceptions.NoScriptError) and queued.script and not queued.reloaded:
                where = (queued.script.sha, asked or queued.slot)
                queued.ask = asked  # the node that said NOSCRIPT gets the script, and the call again
                self._reload(queued, load=where not in reloading)
                reloading.add(where)
            elif isinstance(result, redis.exceptions.MovedError):
                if isinstance(self._client, RedisCluster):
                    with contextlib.suppress(Exception):
                        await self._client.nodes_manager.move_slot(result)
                self._again(queued, f"MOVED {result.slot_id} {result.node_addr}")
            elif isinstance(result, redis.exceptions.AskError):
                queued.ask = f"{result.host}:{result.port}"
                self._again(queued, f"ASK {result.slot_id} {result.node_addr}")
            elif isinstance(result, redis.exceptions.TryAgainError | redis.exceptions.ClusterDownError):
                if isinstance(result, redis.exceptions.ClusterDownError):
                    self._refresh_soon()
                self._again(queued, kind, pause=RETRY_PAUSE_S * 2 ** min(queued.attempts, 4))
            elif isinstance(result, Exception):
                queued.future.set_exception(result)
            else:
                queued.future.set_result(result)

    def _reload(self, queued: _Queued, *, load: bool) -> None:
        """SCRIPT LOAD, then the same EVALSHA, both in the next batch of the same node (in that
        order, on one connection)."""
        assert queued.script is not None
        if load:
            command = ("SCRIPT", "LOAD", queued.script.source)
            loading = _Queued(command, pack(command), asyncio.get_running_loop().create_future(), slot=queued.slot,
                              ask=queued.ask)
            self._add(loading).add_done_callback(_consume)
        queued.reloaded = True
        self._add(queued)

    @property
    def nodes(self) -> list[str]:
        """The nodes this pipeline has sent to ("redis" for one server; "host:port" on a cluster)."""
        return list(self._lanes)


def _kind(result: Any) -> str:
    """The cluster's word for `result` when it is a redirection or a refusal ("" otherwise): redis-py's
    parser has turned "MOVED 3999 host:port" into a MovedError whose text lacks the word."""
    for kind, error in (("MOVED", redis.exceptions.MovedError), ("ASK", redis.exceptions.AskError),
                        ("TRYAGAIN", redis.exceptions.TryAgainError),
                        ("CLUSTERDOWN", redis.exceptions.ClusterDownError),
                        ("NOSCRIPT", redis.exceptions.NoScriptError)):
        if isinstance(result, error):
            return kind
    return ""


def _fail(batch: list[_Queued], failure: StoreUnavailable) -> None:
    for queued in batch:
        if not queued.future.done():
            queued.future.set_exception(failure)


def _consume(future: asyncio.Future[Any]) -> None:
    """The SCRIPT LOAD's own outcome: its EVALSHA reports any failure to the caller."""
    if not future.cancelled():
        future.exception()
