"""A service process stops scanning what it started with and collects its young objects
less often."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from events.service.runtime import YOUNG_THRESHOLD, tune_gc


@pytest.fixture
def _restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("_restored")
def test_tune_gc_freezes_the_startup_objects_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    tune_gc()
    assert gc.get_freeze_count() > 1000  # every module, class and settings object
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD > 700
    # What is created afterwards is still collected: a cycle is freed by a collection.
    cycle: list[object] = []
    cycle.append(cycle)
    gc.collect()
    del cycle
    assert gc.collect() >= 1


@pytest.mark.usefixtures("_restored")
def test_a_batchs_live_objects_do_not_start_a_young_collection() -> None:
    """Two batches in flight hold 20,000 to 40,000 container objects at their peak; under
    the threshold, holding them (and freeing them) runs no collection."""
    tune_gc()
    collections: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        held = [{"n": i} for i in range(60_000)]
        del held
    finally:
        gc.callbacks.remove(count)
    assert collections == []
