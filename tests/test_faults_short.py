"""The fault-injection suite (`bench/faults.py`), short: real processes (the simulator, two gateways,
redis-server), a proxy that cuts the link, a steady load of MOs through the simulator's HTTP API, and
two faults: a gateway SIGKILLed, Redis SIGKILLed. Nothing may be lost or applied twice, and money
must add up; a reply doubled or stranded is a known gateway bug (see the xfail's reason)."""

from __future__ import annotations

import asyncio

import pytest

from bench.faults import Plan, Result, render, run_faults

PLAN = Plan(rate=15.0, load_s=3.0, fault_at_s=1.0, outage_s=1.0, window_s=10.0, mt_lease_s=1.5)
FAULTS = ["gateway-kill", "redis-kill"]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> list[Result]:
    found = asyncio.run(run_faults(PLAN, FAULTS, workdir=tmp_path_factory.mktemp("faults")))
    render(found, PLAN)  # in the captured output of a failing test: the whole table
    return found


def test_every_mo_is_acknowledged_and_applied_exactly_once_and_money_adds_up(results: list[Result]) -> None:
    assert [r.fault for r in results] == FAULTS
    for r in results:
        assert r.offered > 0 and r.refused == 0, r
        assert (r.lost, r.rejected) == (0, 0), r
        assert (r.applied, r.applied_twice) == (r.offered, 0), r
        assert r.money_after == r.money_expected < r.money_before, r
        assert r.recovery_s is not None and r.recovery_s < PLAN.window_s, r


@pytest.mark.xfail(strict=False, reason=(
    "gateway bug: when Redis fails while an MT is being submitted, Gateway.send logs "
    "mt_done_unrecorded and leaves the submitted MT in the outbox; its lease runs out and a "
    "gateway sends it again (a doubled reply, see bench/faults.py redis-kill). Also: a send "
    "waiting for a bind longer than mt_lease_s races the recovery of the same MT (link-cut)."))
def test_every_phone_gets_exactly_one_reply_and_nothing_is_stranded(results: list[Result]) -> None:
    for r in results:
        assert r.replies == {"0": 0, "1": r.offered, ">1": 0}, (r.fault, r.replies, r.notes)
        assert r.stranded == 0, r
