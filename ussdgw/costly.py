"""Admission control for costly CPU work (a password's scrypt), so that it can never starve replies.

An scrypt hash costs ~40-80 ms of CPU; a burst of `ПАРОЛЬ` (the SMSC redelivering what a fault held
back) or of sign-ins to the self-care API would otherwise pile up hashes without bound in the default
thread pool, each competing with the event loop that answers the cheap MOs, and every reply behind
them comes late. Here hashes run on at most `workers` threads of their own, and a task whose expected
wait (tasks ahead of it × the recent duration of one / workers) exceeds `max_wait_s` is refused at
once with `Overloaded`, before any change: the gateway answers its MO ESME_RTHROTTLED (the SMSC
delivers it again after its backoff, and by then the backlog has drained), the API answers 503 with
Retry-After. Cheap MOs and requests never touch the pool.

A request that counts something before its hash (an attempt at a password) takes its place first
(`reserved`): a refusal then comes before anything is counted, and the hash it runs later in that
place is never refused half way.

One pool per platform (`handlers.ports.Platform` makes it from the settings and the composition root
stops it after every part that submits to it): CPU is the process's, not a bind's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any, TypeVar

__all__ = ["CostlyPool", "Overloaded", "default_workers"]

T = TypeVar("T")
SMOOTHING = 0.2  # weight of the newest duration in the running mean (a few tasks follow a change in load)
UNMEASURED_PER_WORKER = 4  # before any task has been timed, at most this many wait per worker


class _Place:
    """A place taken in one pool, while its block runs (a task spawned inside that outlives the
    block finds it closed and asks for a place of its own)."""

    __slots__ = ("open", "pool")

    def __init__(self, pool: CostlyPool) -> None:
        self.pool, self.open = pool, True


_held: ContextVar[_Place | None] = ContextVar("costly_place_held", default=None)


class Overloaded(Exception):
    """The costly work was refused, not started: nothing was done, the caller may try again later."""

    def __init__(self, expected_wait_s: float) -> None:
        super().__init__(f"costly work would wait ~{expected_wait_s:.2f} s")
        self.expected_wait_s = expected_wait_s


def _timed(fn: Callable[..., T], args: tuple[Any, ...]) -> tuple[T, float]:
    """Run `fn` in the worker thread; its result and its own duration (not the wait before it)."""
    started = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - started


class CostlyPool:
    """At most `workers` tasks at once; a task that would wait longer than `max_wait_s` is refused."""

    def __init__(self, workers: int, max_wait_s: float) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, not {workers}")
        self.workers = workers
        self.max_wait_s = max_wait_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="costly")
        self.pending = 0  # running, waiting for a worker, or holding a place (`reserved`)
        self.mean_s = 0.0  # running mean of one task's duration; 0 until one was timed
        self.refused = 0
        self.stopped = False

    def expected_wait_s(self) -> float:
        """How long a task admitted now would wait for a worker (the tasks ahead of it, spread)."""
        ahead = max(0, self.pending - self.workers + 1)
        return ahead * self.mean_s / self.workers

    def admits(self) -> bool:
        if self.stopped:
            return False
        if self.pending < self.workers:  # a worker is free
            return True
        if self.mean_s == 0.0:
            return self.pending < self.workers * UNMEASURED_PER_WORKER
        return self.expected_wait_s() <= self.max_wait_s

    @contextlib.contextmanager
    def reserved(self) -> Iterator[None]:
        """Take a place now for the costly work this task does inside the block, or `Overloaded`
        at once (nothing inside has run). `run` inside the block uses the place (never refused);
        nested blocks, and tasks the block awaits, share it."""
        held = _held.get()
        if held is not None and held.pool is self and held.open:
            yield
            return
        if not self.admits():
            self.refused += 1
            raise Overloaded(self.expected_wait_s())
        self.pending += 1
        place = _Place(self)
        token = _held.set(place)
        try:
            yield
        finally:
            place.open = False
            _held.reset(token)
            self.pending -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on a worker thread, or `Overloaded` at once when its wait would be too long
        (in a `reserved` block: in the place already taken, never refused)."""
        with self.reserved():
            if self.stopped:  # stopped while the place was held: the work is refused, not lost
                raise Overloaded(self.expected_wait_s())
            loop = asyncio.get_running_loop()
            result, took = await loop.run_in_executor(self._executor, _timed, fn, args)
        self.mean_s = took if self.mean_s == 0.0 else self.mean_s + SMOOTHING * (took - self.mean_s)
        return result

    async def stop(self) -> None:
        """Refuse new work, let the tasks admitted finish (a bounded wait: `max_wait_s` at most, plus
        one task), end the worker threads. Called after everything that submits has stopped; safe
        to call twice."""
        self.stopped = True
        await asyncio.to_thread(self._executor.shutdown, wait=True)


def default_workers() -> int:
    """Half the CPUs this process may use, at least one: the event loop keeps a core for replies."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)
