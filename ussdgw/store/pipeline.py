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
from redis._parsers.base import BaseParser
from redis.asyncio.cluster import RedisCluster

from ussdgw.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from ussdgw.store.scripts import Script

MAX_ATTEMPTS = 8  # redirections and refusals one command may meet before the store is "unavailable"
RETRY_PAUSE_S = 0.05  # TRYAGAIN / CLUSTERDOWN: the first pause, doubled on each further refusal
REFRESH_PAUSE_S = 0.5  # the slot map is read again at most this often after a failed batch
ASKING = b"*1\r\n$6\r\nASKING\r\n"
_ERRORS = BaseParser  # redis-py's table of error words to exceptions


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
    moved: redis.exceptions.MovedError | None = None  # the MOVED answer, until the slot map is corrected

    @property
    def wire(self) -> bytes:
        return ASKING + self.packed if self.ask else self.packed


class _Socket(asyncio.Protocol):
    """The protocol of one opened socket: it speaks for its wire only while it is the wire's socket
    (the callbacks of a socket closed before a reconnect reach nobody)."""

    def __init__(self, wire: _Wire) -> None:
        self.wire = wire

    def data_received(self, data: bytes) -> None:
        if self.wire.socket is self:
            self.wire.received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.wire.socket is self:
            self.wire.fail(f"connection lost{f': {exc}' if exc else ''}")


class _Wire:
    """One connection of a lane, read by hiredis as bytes arrive: a batch's replies are parsed in the
    callback that brings them, with no task, timer or await per reply (redis-py's connection
    object only opens the socket and does the handshake: AUTH, SELECT, TLS as configured)."""

    def __init__(self, lane: _Lane, make_connection: Callable[[], Any]) -> None:
        self._lane = lane
        self.conn = make_connection()
        self.transport: asyncio.Transport | None = None
        self.socket: _Socket | None = None
        self._reader = hiredis.Reader(protocolError=redis.exceptions.InvalidResponse, replyError=_parse_error)
        self.batch: list[_Queued] = []
        self._expected = 0  # replies the batch on the wire will get (ASKINGs and a WAIT included)
        self._replies: list[Any] = []
        self.wait = False
        self.sent_at = 0.0

    async def open(self) -> None:
        """Connect (redis-py: socket, TLS, handshake), then read the socket here."""
        if self.conn.is_connected:
            await self.conn.disconnect(nowait=True)
        await self.conn.connect()
        transport = self.conn._writer.transport
        self._reader = hiredis.Reader(protocolError=redis.exceptions.InvalidResponse, replyError=_parse_error)
        self.socket = _Socket(self)
        transport.set_protocol(self.socket)
        self.transport = transport

    def send(self, batch: list[_Queued], wait: bytes | None) -> None:
        assert self.transport is not None
        self.batch, self._replies, self.wait = batch, [], wait is not None
        self._expected = len(batch) + sum(1 for q in batch if q.ask) + (1 if wait else 0)
        self.sent_at = time.monotonic()
        self.transport.write(b"".join([q.wire for q in batch]) + (wait or b""))

    def received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        replies = self._replies
        try:
            while (reply := reader.gets()) is not False:
                replies.append(reply)
        except redis.exceptions.InvalidResponse as exc:  # not RESP: this connection is beyond repair
            self.fail(f"{exc}")
            return
        if len(replies) >= self._expected and self.batch:
            batch, self.batch = self.batch, []
            self._lane.answered(self, batch, replies, self.wait)

    def fail(self, why: str) -> None:
        """The batch on the wire (if any) fails whole; the connection is closed, to be opened again."""
        batch, self.batch = self.batch, []
        transport, self.transport, self.socket = self.transport, None, None
        if transport is not None:
            transport.abort()
        self._lane.broken(self, batch, why)

    @property
    def ready(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()


class _Lane:
    """One server's connections and queue: the batching of the module docstring, for one node."""

    def __init__(self, pipeline: AutoPipeline, name: str, make_connection: Callable[[], Any],
                 connections: int) -> None:
        self.name = name
        self._pipeline = pipeline
        self._idle = [_Wire(self, make_connection) for _ in range(connections)]
        self._all = list(self._idle)
        self._queue: list[_Queued] = []
        self._opening: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self._deadline: asyncio.TimerHandle | None = None
        self._all_idle = asyncio.Event()
        self._all_idle.set()

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
        wire = self._idle.pop()
        self._all_idle.clear()
        if wire.ready:
            self._send(wire, batch)
        else:  # the first batch, or the first after a failure: connect first
            task = asyncio.ensure_future(self._open_and_send(wire, batch))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    def _send(self, wire: _Wire, batch: list[_Queued]) -> None:
        wait = self._pipeline.wait_command if any(q.durable for q in batch) else None
        try:
            wire.send(batch, wait)
        except Exception as exc:
            wire.fail(f"{exc or type(exc).__name__}")
            return
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(self._pipeline.timeout_s, self._check_deadline)

    async def _open_and_send(self, wire: _Wire, batch: list[_Queued]) -> None:
        try:
            async with asyncio.timeout(self._pipeline.timeout_s):
                await wire.open()
        except Exception as exc:
            self._pipeline.batch_failed(self.name, batch, StoreUnavailable(f"{self.name}: {exc or type(exc).__name__}"))
            self._release(wire)
            return
        except BaseException:  # cancelled (shutdown): no caller may wait forever
            _fail(batch, StoreUnavailable("batch cancelled"))
            self._release(wire)
            raise
        self._send(wire, batch)

    def _check_deadline(self) -> None:
        """One timer per lane, not one per batch: a batch out longer than `timeout_s` fails whole."""
        self._deadline = None
        now = time.monotonic()
        oldest = None
        for wire in self._all:
            if wire.batch:
                if now - wire.sent_at >= self._pipeline.timeout_s:
                    wire.fail(f"no answer in {self._pipeline.timeout_s:g} s")
                elif oldest is None or wire.sent_at < oldest:
                    oldest = wire.sent_at
        if oldest is not None:
            self._deadline = asyncio.get_running_loop().call_later(
                max(0.0, oldest + self._pipeline.timeout_s - now), self._check_deadline)

    def answered(self, wire: _Wire, batch: list[_Queued], replies: list[Any], wait: bool) -> None:
        elapsed = time.monotonic() - wire.sent_at
        results: list[Any] = []
        at = 0
        for queued in batch:
            if queued.ask:  # ASKING's own +OK (or its error, which the command's reply repeats)
                at += 1
            results.append(replies[at])
            at += 1
        if wait:  # WAIT: how many replicas have every write sent on this connection so far
            self._pipeline.replicated(batch, results, int(replies[at]))
        self._release(wire)
        self._pipeline.batch_done(len(batch), elapsed)
        self._pipeline.settle(batch, results)

    def broken(self, wire: _Wire, batch: list[_Queued], why: str) -> None:
        if batch:
            self._pipeline.batch_failed(self.name, batch, StoreUnavailable(f"{self.name}: {why}"))
            self._release(wire)

    def _release(self, wire: _Wire) -> None:
        self._idle.append(wire)
        if len(self._idle) == len(self._all):
            self._all_idle.set()
        self._flush()  # what piled up meanwhile leaves now, as one batch

    async def close(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self._all_idle.wait()
        for task in list(self._opening):
            task.cancel()
        if self._deadline is not None:
            self._deadline.cancel()
        for wire in self._all:
            transport, wire.transport, wire.socket = wire.transport, None, None
            _fail(wire.batch, StoreUnavailable("store closed"))
            wire.batch = []
            if transport is not None:
                transport.close()
            with contextlib.suppress(Exception):
                await wire.conn.disconnect(nowait=True)


class AutoPipeline:
    """Batches every command issued while a batch is out into the next one, per primary (module docstring)."""

    def __init__(self, redis_client: aioredis.Redis | RedisCluster, timeout_s: float = 5.0,
                 connections: int = 2) -> None:
        self._client = redis_client
        # redis-py's RedisCluster derives from typing Protocols: isinstance() on it costs microseconds
        # per call, once per command on the hot path, so it is asked once here.
        self._cluster: RedisCluster | None = redis_client if isinstance(redis_client, RedisCluster) else None
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
        if self._cluster is not None and keys:
            queued.slot = self._cluster.keyslot(keys[0])
        return self._add(queued)

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any one-key Redis command in the next batch (the key second, as in HSET key ...); the
        reply as Redis sent it (RESP2, bytes)."""
        queued = _Queued(args, pack(args), asyncio.get_running_loop().create_future())
        if self._cluster is not None and len(args) > 1:
            queued.slot = self._cluster.keyslot(args[1])
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
        assert self._cluster is not None
        return bool(self._cluster.nodes_manager.slots_cache)

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

    def settle(self, batch: list[_Queued], results: list[Any]) -> None:
        """Each command's own outcome: its reply, its error, or another try (module docstring)."""
        reloading: set[tuple[str, str | int | None]] = set()  # one SCRIPT LOAD per script and node
        moved: list[_Queued] = []
        for queued, result in zip(batch, results, strict=True):
            if queued.future.done():
                continue
            asked, queued.ask = queued.ask, None
            if not isinstance(result, Exception):  # the common case first: a reply
                queued.future.set_result(result)
                continue
            kind = _kind(result)
            if kind:
                self._count(kind)
            if isinstance(result, redis.exceptions.NoScriptError) and queued.script and not queued.reloaded:
                where = (queued.script.sha, asked or queued.slot)
                queued.ask = asked  # the node that said NOSCRIPT gets the script, and the call again
                self._reload(queued, load=where not in reloading)
                reloading.add(where)
            elif isinstance(result, redis.exceptions.MovedError):
                moved.append(queued)
                queued.moved = result
            elif isinstance(result, redis.exceptions.AskError):
                queued.ask = f"{result.host}:{result.port}"
                self._again(queued, f"ASK {result.slot_id} {result.node_addr}")
            elif isinstance(result, redis.exceptions.TryAgainError | redis.exceptions.ClusterDownError):
                if isinstance(result, redis.exceptions.ClusterDownError):
                    self._refresh_soon()
                self._again(queued, kind, pause=RETRY_PAUSE_S * 2 ** min(queued.attempts, 4))
            else:
                queued.future.set_exception(result)
        if moved:
            task = asyncio.ensure_future(self._moved(moved))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _moved(self, moved: list[_Queued]) -> None:
        """MOVED: the slot map corrected (redis-py's `move_slot`), then each command queued again."""
        for queued in moved:
            result, queued.moved = queued.moved, None
            assert result is not None
            if isinstance(self._client, RedisCluster):
                with contextlib.suppress(Exception):
                    await self._client.nodes_manager.move_slot(result)
            self._again(queued, f"MOVED {result.slot_id} {result.node_addr}")

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


async def replies(futures: Sequence[asyncio.Future[Any]]) -> list[Any]:
    """The replies of commands queued together, in order. The first await waits for their batch;
    by then the others are answered, and awaiting them costs nothing: a third of
    `asyncio.gather`'s cost (no gathering future, no callback per command). On a failure the
    commands not awaited yet are left answered without a warning (the caller retries the step)."""
    out = []
    for at, future in enumerate(futures):
        try:
            out.append(await future)
        except BaseException:
            for rest in futures[at + 1:]:
                rest.add_done_callback(_consume)
            raise
    return out


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


def _parse_error(message: str) -> Exception:
    """An error reply as redis-py's exception for it (MOVED, ASK, NOSCRIPT, ... by their word)."""
    error: Exception = _ERRORS.parse_error(message)  # type: ignore[no-untyped-call]
    return error


def _consume(future: asyncio.Future[Any]) -> None:
    """The SCRIPT LOAD's own outcome: its EVALSHA reports any failure to the caller."""
    if not future.cancelled():
        future.exception()
