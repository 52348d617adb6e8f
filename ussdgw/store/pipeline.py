"""Commands issued while Redis is busy with the previous batch leave together, as one batch.

A busy gateway has hundreds of MOs in flight, each awaiting its own script; sent one by one, every
call costs a pooled connection, a write and a read, and redis-py's machinery around them. Here
they go over connections of their own: the first command of an idle moment leaves at the end of
the loop turn; whatever is issued while a batch is out waits and leaves as the next batch (the
more load, the bigger the batches). Each command stays what it was (a script is atomic on its
own; a pipeline is not a transaction and none is needed), and each caller gets its own result or
its own error. A script Redis has forgotten (NOSCRIPT, after a restart or SCRIPT FLUSH) is loaded
again and run in the next batch. A batch that fails as a whole (Redis away) fails each of its
callers with `StoreUnavailable`, and the next batch connects afresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import hiredis
import redis.asyncio as aioredis
import redis.exceptions

from ussdgw.store.errors import StoreUnavailable

if TYPE_CHECKING:
    from ussdgw.store.scripts import Script


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


class AutoPipeline:
    """Batches every command issued while a batch is out into the next one (module docstring)."""

    def __init__(self, redis_client: aioredis.Redis, timeout_s: float = 5.0, connections: int = 2) -> None:
        pool = redis_client.connection_pool
        # Connections of its own, no per-reply socket timeout (a timer per reply): a batch has one
        # deadline. Two, so that the gateway prepares the next batch while Redis runs the last one.
        self._idle = [pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})
                      for _ in range(connections)]
        self._all = list(self._idle)
        self.timeout_s = timeout_s
        self._queue: list[_Queued] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._scheduled = False
        self.batches = 0  # how many round trips so far (for tests and the benchmark)
        # Told the size and duration of every batch that went through (the metrics hang here).
        self.on_batch: Callable[[int, float], None] | None = None

    async def close(self) -> None:
        if self._sending:
            await asyncio.wait(self._sending, timeout=self.timeout_s)
        for conn in self._all:
            await conn.disconnect()

    def evalsha(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> asyncio.Future[Any]:
        """Run `script` by its SHA in the next batch."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return self._add(_Queued(command, pack(command), asyncio.get_running_loop().create_future(), script))

    def command(self, *args: Any) -> asyncio.Future[Any]:
        """Any other Redis command in the next batch; the reply as Redis sent it (RESP2, bytes)."""
        return self._add(_Queued(args, pack(args), asyncio.get_running_loop().create_future()))

    def _add(self, queued: _Queued) -> asyncio.Future[Any]:
        self._queue.append(queued)
        if self._idle and not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return queued.future

    def _flush(self) -> None:
        self._scheduled = False
        if not self._idle or not self._queue:
            return
        batch, self._queue = self._queue, []
        conn = self._idle.pop()
        task = asyncio.ensure_future(self._run(conn, batch))
        self._sending.add(task)
        task.add_done_callback(lambda done: self._sent(done, conn))

    def _sent(self, task: asyncio.Task[None], conn: Any) -> None:
        self._sending.discard(task)
        self._idle.append(conn)
        self._flush()  # what piled up meanwhile leaves now, as one batch

    async def _run(self, conn: Any, batch: list[_Queued]) -> None:
        results: list[Any] = []
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if not conn.is_connected:
                    await conn.connect()
                await conn.send_packed_command(b"".join(q.packed for q in batch), False)
                for _ in batch:
                    try:
                        results.append(await conn.read_response(disconnect_on_error=False))
                    except redis.exceptions.ResponseError as exc:  # this command's error, not the batch's
                        results.append(exc)
            self.batches += 1
            elapsed = time.perf_counter() - started
        except Exception as exc:  # the batch as a whole failed: Redis away, or too slow
            await conn.disconnect(nowait=True)
            self._fail(batch, StoreUnavailable(str(exc) or type(exc).__name__))
            return
        except BaseException:  # cancelled mid-batch (shutdown): no caller may wait forever
            await conn.disconnect(nowait=True)
            self._fail(batch, StoreUnavailable("batch cancelled"))
            raise
        if self.on_batch is not None:
            with contextlib.suppress(Exception):  # a metrics hook never fails commands Redis has run
                self.on_batch(len(batch), elapsed)
        reloading: set[str] = set()  # one SCRIPT LOAD per script, however many of its calls failed
        for queued, result in zip(batch, results, strict=True):
            if queued.future.done():
                continue
            if isinstance(result, redis.exceptions.NoScriptError) and queued.script and not queued.reloaded:
                self._reload(queued, load=queued.script.sha not in reloading)
                reloading.add(queued.script.sha)
            elif isinstance(result, Exception):
                queued.future.set_exception(result)
            else:
                queued.future.set_result(result)

    def _reload(self, queued: _Queued, *, load: bool) -> None:
        """SCRIPT LOAD, then the same EVALSHA, both in the next batch (in that order, on one connection)."""
        assert queued.script is not None
        if load:
            command = ("SCRIPT", "LOAD", queued.script.source)
            loaded = self._add(_Queued(command, pack(command), asyncio.get_running_loop().create_future()))
            loaded.add_done_callback(_consume)
        queued.reloaded = True
        self._add(queued)

    @staticmethod
    def _fail(batch: list[_Queued], failure: StoreUnavailable) -> None:
        for queued in batch:
            if not queued.future.done():
                queued.future.set_exception(failure)


def _consume(future: asyncio.Future[Any]) -> None:
    """The SCRIPT LOAD's own outcome: its EVALSHA reports any failure to the caller."""
    if not future.cancelled():
        future.exception()
