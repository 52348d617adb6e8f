"""Background work with one owner and a stop that really ends it.

Every long-lived task of the platform (MT recovery, N2 reviews, hold recovery, a link's runner, the
simulator's deliveries) is started through a `TaskGroup`-like owner here and stopped by it.

Why not a bare `task.cancel()`: on Python 3.11, `asyncio.wait_for` (which redis-py uses whenever
`socket_timeout` is set) can swallow a cancellation that lands in the same loop turn as its result
(CPython gh-86296). A loop cancelled once may then run for ever, and whoever awaits it hangs. So:

- periodic loops wait on a stop *event* between rounds, and check it, so they end even when a
  cancellation is lost;
- `stop_task` cancels again and again until the task has really finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import types
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ussdgw.logs import get_logger

log = get_logger("ussdgw.tasks")

RECANCEL_S = 0.2


async def stop_task(task: asyncio.Task[Any], *, recancel_s: float = RECANCEL_S) -> None:
    """Cancel `task` until it has ended (a swallowed cancel is simply repeated); never raises its error.

    A cancel of the caller itself still propagates, after `task` has been told to stop.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=recancel_s)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("task_failed", task=task.get_name(), error=repr(exc))


async def stop_tasks(tasks: list[asyncio.Task[Any]] | set[asyncio.Task[Any]], *,
                     recancel_s: float = RECANCEL_S) -> None:
    """`stop_task` for many at once (each is cancelled, then all are awaited together)."""
    pending = [t for t in tasks if not t.done()]
    while pending:
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=recancel_s)
        pending = [t for t in pending if not t.done()]
    for task in tasks:
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("task_failed", task=task.get_name(), error=repr(exc))


class Tasks:
    """The owner of a set of tasks: `spawn` them, `stop` ends every one (after an optional grace period).

    Finished tasks leave the set by themselves; an exception a task ended with is logged, not lost.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()
        self._periodic: list[Periodic] = []

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def spawn(self, work: Awaitable[Any], *, name: str | None = None) -> asyncio.Task[Any]:
        if self._stopping.is_set():
            if isinstance(work, Coroutine):
                work.close()
            raise RuntimeError(f"{self.name}: stopping, no new tasks")
        # A coroutine (the common case: a task per MO, per MT) goes straight to the loop.
        task = (asyncio.get_running_loop().create_task(work) if type(work) is types.CoroutineType
                else asyncio.ensure_future(work))
        if name is not None:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def every(self, interval_s: float, body: Callable[[], Awaitable[object]], *, name: str,
              quiet: tuple[type[BaseException], ...] = ()) -> asyncio.Task[Any]:
        """Run `body` every `interval_s` until `stop` (see `Periodic`)."""
        periodic = Periodic(name, interval_s, body, quiet=quiet)
        self._periodic.append(periodic)
        return self.spawn(periodic.run(), name=name)

    async def wait(self, timeout: float) -> None:
        """Let the running tasks finish on their own for up to `timeout` seconds."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def stop(self, grace_s: float = 0.0) -> None:
        """Refuse new tasks, let the running ones finish for `grace_s`, then cancel until all have ended."""
        self._stopping.set()
        for periodic in self._periodic:
            periodic.stop_event.set()
        if grace_s > 0:
            await self.wait(grace_s)
        await stop_tasks(set(self._tasks))

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("task_failed", owner=self.name, task=task.get_name(), error=repr(exc))


class Periodic:
    """A loop that runs `body` every `interval_s` and ends when its stop event is set.

    It waits for the event (not `asyncio.sleep`), so it ends at once on stop and also when a
    cancellation was swallowed by the body. Exceptions in `quiet` (e.g. the store being away) skip a
    round silently; any other is logged and the loop goes on.
    """

    def __init__(self, name: str, interval_s: float, body: Callable[[], Awaitable[object]], *,
                 quiet: tuple[type[BaseException], ...] = ()) -> None:
        self.name = name
        self.interval_s = interval_s
        self.body = body
        self.quiet = quiet
        self.stop_event = asyncio.Event()
        self.rounds = 0

    async def run(self) -> None:
        while not self.stop_event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self.stop_event.wait()
            if self.stop_event.is_set():
                return
            try:
                await self.body()
            except self.quiet:
                pass
            except Exception:
                log.exception("periodic_failed", task=self.name)
            self.rounds += 1
