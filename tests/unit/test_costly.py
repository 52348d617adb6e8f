"""The costly-work pool: at most `workers` tasks at once, and a task that would wait longer than
`max_wait_s` refused at once (nothing run), so a burst cannot build an unbounded backlog. A place
taken ahead (`reserved`) is refused before its block runs and never half way; the platform makes
the pool from its settings and its stop ends the pool's threads."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from handlers.ports import Platform
from ussdgw.config import Settings
from ussdgw.costly import CostlyPool, Overloaded, default_workers
from ussdgw.store import Store

PoolFactory = Callable[[int, float], CostlyPool]


@pytest.fixture
async def pools() -> AsyncIterator[PoolFactory]:
    """Pools made by a test, each stopped (its threads ended) when the test is over."""
    made: list[CostlyPool] = []

    def make(workers: int, max_wait_s: float) -> CostlyPool:
        made.append(CostlyPool(workers=workers, max_wait_s=max_wait_s))
        return made[-1]

    yield make
    for pool in made:
        await pool.stop()


def costly_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("costly")]


def blocker(gate: threading.Event) -> str:
    gate.wait(10)
    return "done"


async def test_a_task_that_would_wait_too_long_is_refused_and_runs_once_the_backlog_drained(
        pools: PoolFactory) -> None:
    pool = pools(1, 0.05)
    assert await pool.run(sum, [1, 2, 3]) == 6  # timed once: the pool knows what a task costs
    pool.mean_s = 0.1  # as a hash on a busy core
    gate = threading.Event()
    running = asyncio.ensure_future(pool.run(blocker, gate))  # a free worker: admitted
    await asyncio.sleep(0)
    assert pool.pending == 1
    with pytest.raises(Overloaded) as refused:  # one ahead of it: ~0.1 s of wait, over the limit
        await pool.run(blocker, gate)
    assert refused.value.expected_wait_s == pytest.approx(0.1)
    assert pool.refused == 1 and pool.pending == 1  # the refused one never started
    gate.set()
    assert await running == "done"
    assert pool.pending == 0
    assert await pool.run(str.upper, "ok") == "OK"  # the backlog drained: admitted again


async def test_tasks_within_the_wait_limit_queue_for_the_workers_and_the_next_one_is_refused(
        pools: PoolFactory) -> None:
    pool = pools(2, 1.0)
    pool.mean_s = 0.1
    gate = threading.Event()
    admitted: list[asyncio.Future[str]] = []
    with pytest.raises(Overloaded):
        for _ in range(100):
            task = asyncio.ensure_future(pool.run(blocker, gate))
            await asyncio.sleep(0)
            if task.done():
                task.result()  # raises Overloaded: the loop ends
            admitted.append(task)
    # 2 on the workers, then 20 waiting 0.05 s ... 1.0 s each; the next would wait 1.05 s
    assert len(admitted) == 22 and pool.pending == 22
    gate.set()
    assert set(await asyncio.gather(*admitted)) == {"done"}
    assert pool.pending == 0


async def test_a_failing_task_frees_its_place_and_its_error_reaches_the_caller(pools: PoolFactory) -> None:
    pool = pools(1, 0.0)

    def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await pool.run(broken)
    assert pool.pending == 0
    assert await pool.run(len, "abc") == 3


def test_no_pool_without_a_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        CostlyPool(workers=0, max_wait_s=1.0)


async def test_a_place_taken_ahead_is_refused_before_its_block_runs_and_never_half_way(pools: PoolFactory) -> None:
    pool = pools(1, 0.0)
    pool.mean_s = 0.1  # timed before: a task waiting behind a busy worker would be over the limit
    counted: list[str] = []
    first_holds, first_may_go = asyncio.Event(), asyncio.Event()

    async def request(name: str, *, hold: bool = False) -> str:
        """One request: its place first, then its count, then its hashes."""
        with pool.reserved():
            counted.append(name)
            if hold:
                first_holds.set()
                await first_may_go.wait()
            with pool.reserved():  # nested: the same place, not a second one
                assert pool.pending == 1
            # The work in the place taken runs, though the pool is full to anyone else.
            return await pool.run(str.upper, name) + await pool.run(str.lower, "AGAIN")

    first = asyncio.create_task(request("first", hold=True))
    await first_holds.wait()
    assert pool.pending == 1
    with pytest.raises(Overloaded):  # another request meanwhile: refused before its block ran
        await request("second")
    first_may_go.set()
    assert await first == "FIRSTagain"
    assert counted == ["first"] and pool.refused == 1 and pool.pending == 0
    assert await request("third") == "THIRDagain"  # the place is free again
    assert counted == ["first", "third"] and pool.pending == 0


async def test_a_task_that_outlives_the_block_it_was_spawned_in_asks_for_a_place_of_its_own(
        pools: PoolFactory) -> None:
    pool = pools(1, 0.0)
    pool.mean_s = 0.1
    gate = threading.Event()
    block_over = asyncio.Event()

    async def hash_later() -> str:
        await block_over.wait()
        return await pool.run(str.upper, "late")

    with pool.reserved():
        outliving = asyncio.create_task(hash_later())  # spawned inside: it inherits the block's context
    busy = asyncio.ensure_future(pool.run(blocker, gate))  # the block is over; the one worker is busy
    await asyncio.sleep(0)
    block_over.set()
    with pytest.raises(Overloaded):  # not run in the closed place: refused like anybody else
        await outliving
    gate.set()
    assert await busy == "done"


async def test_a_stopped_pool_refuses_work_and_its_threads_are_gone() -> None:
    pool = CostlyPool(workers=2, max_wait_s=1.0)
    assert list(await asyncio.gather(pool.run(len, "ab"), pool.run(len, "abc"))) == [2, 3]
    assert costly_threads()
    await pool.stop()
    assert costly_threads() == []
    with pytest.raises(Overloaded):
        await pool.run(len, "late")
    await pool.stop()  # twice: no harm


async def test_the_platform_makes_its_pool_from_the_settings_and_its_stop_ends_the_threads() -> None:
    store = Store.from_url("redis://127.0.0.1:1", b"k" * 32)  # never connected: nothing here reads Redis
    settings = Settings(costly_workers=3, costly_max_wait_s=0.25)
    async with Platform(store, settings) as platform:
        assert (platform.costly.workers, platform.costly.max_wait_s) == (3, 0.25)
        assert await platform.costly.run(sum, [1, 2]) == 3
        assert costly_threads()
        async with Platform(store, settings.with_overrides(costly_workers=0)) as other:
            assert other.costly is not platform.costly  # one pool per platform, none per process
            assert other.costly.workers == default_workers() >= 1
    assert costly_threads() == []
    assert platform.costly.stopped
    with pytest.raises(Overloaded):  # whatever comes after the stop is refused, not run
        await platform.costly.run(sum, [1])
