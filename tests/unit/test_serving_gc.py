"""A serving process tunes the garbage collector once it has started (`ussdgw.app.cli._serving_gc`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from ussdgw.app.cli import SERVING_GC_THRESHOLD, _serving_gc


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_what_exists_at_start_is_frozen_and_young_collections_are_rarer(collector_restored: None) -> None:
    before = gc.get_threshold()
    _serving_gc()
    assert gc.get_freeze_count() > 0  # the modules, routes and settings of the start are out of its sight
    assert gc.get_threshold() == (max(before[0], SERVING_GC_THRESHOLD), before[1], before[2])
    assert gc.isenabled()  # cycles made while serving are still collected
