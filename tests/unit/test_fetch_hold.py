"""While the service has records to apply, the consumer's fetches wait at the broker
(``FetchHold``); idle, they answer with the first record. No I/O here: the consumer's fetcher
is a stand-in with the two values aiokafka reads for each fetch request it builds
(``tests/integration/test_fetch_hold.py`` checks on a real consumer and broker that they are
the ones that count)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from events.service.app import Service
from events.service.consumer import FETCH_HOLD_BYTES, FETCH_HOLD_MS, FetchHold
from events.service.lanes import _Lane
from events.service.settings import Settings


def _consumer(min_bytes: int = 1, max_wait_ms: int = 500) -> Any:
    return SimpleNamespace(
        _fetcher=SimpleNamespace(_fetch_min_bytes=min_bytes, _fetch_max_wait_ms=max_wait_ms)
    )


def test_held_fetches_wait_for_data_or_a_few_ms_and_freed_ones_get_their_values_back() -> None:
    consumer = _consumer(1, 500)
    hold = FetchHold(consumer)
    assert not hold.held

    hold.set(True)
    assert hold.held
    assert consumer._fetcher._fetch_min_bytes == FETCH_HOLD_BYTES
    assert consumer._fetcher._fetch_max_wait_ms == FETCH_HOLD_MS

    hold.set(False)
    assert not hold.held
    assert (consumer._fetcher._fetch_min_bytes, consumer._fetcher._fetch_max_wait_ms) == (1, 500)


def test_a_consumer_without_that_fetcher_is_left_alone() -> None:
    hold = FetchHold(SimpleNamespace())
    hold.set(True)
    assert not hold.held


def test_the_service_holds_fetches_while_a_lane_has_records_waiting_or_a_batch() -> None:
    service = Service(Settings(apply_concurrency=2), schedule=False)
    consumer = _consumer()
    service._hold = FetchHold(consumer)
    first, second = service._lanes = [_Lane(), _Lane()]

    first.queue.append(object())  # type: ignore[arg-type]
    service._hold_fetches()
    assert service._hold.held

    first.queue.clear()
    second.busy = True
    service._hold_fetches()
    assert service._hold.held
    assert consumer._fetcher._fetch_max_wait_ms == FETCH_HOLD_MS

    second.busy = False
    service._hold_fetches()
    assert not service._hold.held
    assert consumer._fetcher._fetch_max_wait_ms == 500


async def test_dropping_the_queued_records_in_a_rebalance_frees_the_fetches() -> None:
    service = Service(Settings(apply_concurrency=2), schedule=False)
    service._hold = FetchHold(_consumer())
    first, _ = service._lanes = [_Lane(), _Lane()]
    first.queue.append(object())  # type: ignore[arg-type]
    service._hold_fetches()
    assert service._hold.held

    await service.settle_lanes()  # what a revocation does: no batch was in flight
    assert not service._hold.held  # else an idle consumer would poll every FETCH_HOLD_MS
