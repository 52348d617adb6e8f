"""Background tasks end on stop even when a cancellation is swallowed (Python 3.11's wait_for, gh-86296)."""

from __future__ import annotations

import asyncio

import pytest

from ussdgw.tasks import Periodic, Tasks, stop_task


async def swallow_cancels(times: int, started: asyncio.Event, log: list[str]) -> None:
    """A coroutine that, like redis-py under wait_for, loses the first `times` cancellations."""
    started.set()
    lost = 0
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            lost += 1
            log.append(f"swallowed {lost}")
            if lost > times:
                raise


async def test_stop_task_recancels_until_the_task_has_ended() -> None:
    started, log = asyncio.Event(), []
    task = asyncio.create_task(swallow_cancels(2, started, log))
    await started.wait()
    async with asyncio.timeout(5):
        await stop_task(task, recancel_s=0.01)
    assert task.cancelled()
    assert log == ["swallowed 1", "swallowed 2", "swallowed 3"]


async def test_periodic_loop_whose_body_swallows_the_cancel_still_ends_on_stop() -> None:
    rounds: list[int] = []
    inside = asyncio.Event()

    async def body() -> None:
        rounds.append(1)
        inside.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            return  # the cancel is lost: the loop goes on to its next round unless it checks its stop event

    owner = Tasks("test")
    task = owner.every(0.001, body, name="swallower")
    await inside.wait()
    async with asyncio.timeout(5):
        await owner.stop()
    assert task.done()
    assert len(rounds) == 1  # stopped at the stop event, no round after the swallowed cancel
    assert len(owner) == 0


async def test_periodic_runs_rounds_and_skips_quiet_errors() -> None:
    calls = 0
    third = asyncio.Event()

    async def body() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            third.set()
        if calls % 2:
            raise ConnectionError("store away")

    periodic = Periodic("p", 0.001, body, quiet=(ConnectionError,))
    task = asyncio.create_task(periodic.run())
    async with asyncio.timeout(5):
        await third.wait()
    periodic.stop_event.set()
    async with asyncio.timeout(5):
        await task
    assert periodic.rounds >= 3


async def test_owner_refuses_new_tasks_once_stopping_and_lets_running_ones_finish() -> None:
    owner = Tasks("test")
    release = asyncio.Event()
    finished: list[str] = []

    async def work() -> None:
        await release.wait()
        finished.append("done")

    owner.spawn(work())
    stopping = asyncio.create_task(owner.stop(grace_s=5))
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="stopping"):
        owner.spawn(work())
    release.set()
    async with asyncio.timeout(5):
        await stopping
    assert finished == ["done"]  # finished within the grace period, not cancelled


async def test_gateway_stop_ends_a_recovery_loop_whose_cancel_is_swallowed(settings: object, store: object) -> None:
    """The hang that blocked CI: a loop inside a Redis call loses its one cancel; stop must still return."""
    from gateway.service import Gateway
    from handlers.registry import build_router
    from ussdgw.config import Settings
    from ussdgw.store import Store

    assert isinstance(settings, Settings) and isinstance(store, Store)
    in_redis = asyncio.Event()
    swallowed: list[str] = []

    async def reclaim(*_: object) -> list[object]:
        in_redis.set()
        await swallow_cancels(1, asyncio.Event(), swallowed)
        return []

    store.reclaim = reclaim  # type: ignore[method-assign]
    gateway = Gateway(settings.with_overrides(smsc_host="127.0.0.1", smsc_port=9, mt_lease_s=0.3),
                      store, build_router())
    await gateway.start()
    async with asyncio.timeout(5):
        await in_redis.wait()
    async with asyncio.timeout(10):
        await gateway.stop()
    assert swallowed and swallowed[0] == "swallowed 1"
