"""The costly-work pool: at most `workers` tasks at once, and a task that would wait longer than
`max_wait_s` refused at once (nothing run), so a burst cannot build an unbounded backlog."""

from __future__ import annotations

import asyncio
import threading

import pytest

from ussdgw.costly import CostlyPool, Overloaded, pool_for


def blocker(gate: threading.Event) -> str:
    gate.wait(10)
    return "done"


async def test_a_task_that_would_wait_too_long_is_refused_and_runs_once_the_backlog_drained() -> None:
    pool = CostlyPool(workers=1, max_wait_s=0.05)
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


async def test_tasks_within_the_wait_limit_queue_for_the_workers_and_the_next_one_is_refused() -> None:
    pool = CostlyPool(workers=2, max_wait_s=1.0)
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


async def test_a_failing_task_frees_its_place_and_its_error_reaches_the_caller() -> None:
    pool = CostlyPool(workers=1, max_wait_s=0.0)

    def broken() -> None:
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        await pool.run(broken)
    assert pool.pending == 0
    assert await pool.run(len, "abc") == 3


def test_one_pool_per_process_and_limits_and_no_pool_without_a_worker() -> None:
    assert pool_for(1, 2.0) is pool_for(1, 2.0)
    assert pool_for(0, 2.0).workers >= 1
    with pytest.raises(ValueError, match="at least 1"):
        CostlyPool(workers=0, max_wait_s=1.0)
