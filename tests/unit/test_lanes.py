"""How the apply lanes share Postgres: at a light load they take turns (one batch at a time,
so the records arriving meanwhile join the next batch), each waiting for its turn a few
milliseconds at most; a lane with many records waiting does not wait for its turn.
``Service._apply`` is replaced by a recorder: no I/O here."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import pytest
from aiokafka import TopicPartition

from events.service.app import Service
from events.service.lanes import HEAVY_LANE_FRACTION, TURN_WAIT_SECONDS, _Lane
from events.service.settings import Settings

BATCH = 2 * HEAVY_LANE_FRACTION  # max_batch_records
HEAVY = BATCH // HEAVY_LANE_FRACTION  # a lane with this many records waiting is heavy: 2


class _Record(NamedTuple):
    topic: str
    partition: int
    offset: int


class _Recorder:
    """Stands in for ``Service._apply``: each batch takes ``seconds``; counts how many are in
    flight at once and keeps each batch's size."""

    def __init__(self, seconds: float, batches: int = 2) -> None:
        self.seconds = seconds
        self.expected = batches
        self.done = asyncio.Event()  # the expected batches are applied
        self.in_flight = 0
        self.most_in_flight = 0
        self.batches: list[list[Any]] = []
        self.first_started = asyncio.Event()

    async def __call__(self, pool: Any, records: Sequence[Any]) -> bool:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        self.batches.append(list(records))
        self.first_started.set()
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.in_flight -= 1
        if len(self.batches) == self.expected and not self.in_flight:
            self.done.set()
        return True


def _service(
    apply: Callable[[Any, Sequence[Any]], Awaitable[bool]], turn_wait: float = 10.0
) -> tuple[Service, list[_Lane]]:
    """Two lanes applying through ``apply``; a light lane waits ``turn_wait`` seconds for its
    turn at most (by default longer than any batch here, so that the tests of turn-taking do
    not depend on timing)."""
    service = Service(Settings(max_batch_records=BATCH, apply_concurrency=2), schedule=False)
    service.turn_wait_seconds = turn_wait
    service._apply = apply  # type: ignore[method-assign,assignment]
    service._commit_soon = lambda: None  # type: ignore[method-assign]
    service._lanes = [_Lane(), _Lane()]
    return service, service._lanes


def _queue(lane: _Lane, partition: int, count: int, first: int = 0) -> None:
    records = (_Record("commands", partition, first + i) for i in range(count))
    lane.queue.extend(records)  # type: ignore[arg-type]  # only topic, partition, offset are read
    lane.wake.set()


async def _run(service: Service, lanes: list[_Lane], recorder: _Recorder) -> None:
    tasks = [asyncio.create_task(service._run_lane(lane, pool=None)) for lane in lanes]  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(recorder.done.wait(), 10)
    finally:
        service.stop.set()
        for lane in lanes:
            lane.wake.set()
        await asyncio.gather(*tasks)


async def test_light_lanes_apply_one_batch_at_a_time() -> None:
    recorder = _Recorder(0.05)
    service, (a, b) = _service(recorder)
    _queue(a, 0, 1)
    _queue(b, 1, 1)
    await _run(service, [a, b], recorder)
    assert recorder.most_in_flight == 1
    assert sorted(r.partition for batch in recorder.batches for r in batch) == [0, 1]


async def test_records_arriving_while_a_lane_waits_for_its_turn_join_its_batch() -> None:
    recorder = _Recorder(0.1)
    service, (a, b) = _service(recorder)
    _queue(a, 0, 1)
    tasks = asyncio.create_task(_run(service, [a, b], recorder))
    await asyncio.wait_for(recorder.first_started.wait(), 5)
    _queue(b, 1, 1)  # lane b waits for a's batch; its next record arrives meanwhile
    await asyncio.sleep(0.02)
    _queue(b, 1, 1, first=1)
    await tasks
    assert [[r.offset for r in batch] for batch in recorder.batches] == [[0], [0, 1]]
    assert recorder.most_in_flight == 1


async def test_a_light_lane_waits_for_its_turn_only_so_long() -> None:
    """A batch that takes long holds up only its own lane: the other one, light, applies its
    batch beside it once its turn wait is over, while the first is still in flight."""
    release, first, second = asyncio.Event(), asyncio.Event(), asyncio.Event()
    in_flight: list[int] = []

    async def held(pool: Any, records: Sequence[Any]) -> bool:
        in_flight.append(records[0].partition)
        (second if first.is_set() else first).set()
        await release.wait()  # a's batch, then b's, until released
        return True

    service, (a, b) = _service(held, turn_wait=TURN_WAIT_SECONDS)
    tasks = [asyncio.create_task(service._run_lane(lane, pool=None)) for lane in (a, b)]  # type: ignore[arg-type]
    try:
        _queue(a, 0, 1)
        await asyncio.wait_for(first.wait(), 5)
        _queue(b, 1, 1)
        # b's batch starts while a's is held: it did not wait for a's to end.
        await asyncio.wait_for(second.wait(), 5)
        assert in_flight == [0, 1]
        assert service._turn.locked()  # a holds the turn; b went without it
    finally:
        release.set()
        service.stop.set()
        for lane in (a, b):
            lane.wake.set()
        await asyncio.gather(*tasks)
    assert service._turn.locked() is False  # given back once, by a


async def test_heavy_lanes_apply_side_by_side() -> None:
    recorder = _Recorder(0.05)
    service, (a, b) = _service(recorder)
    _queue(a, 0, BATCH)
    _queue(b, 1, HEAVY)
    await _run(service, [a, b], recorder)
    assert recorder.most_in_flight == 2
    assert sorted(len(batch) for batch in recorder.batches) == [HEAVY, BATCH]


async def test_a_heavy_lane_does_not_wait_for_a_light_one() -> None:
    recorder = _Recorder(0.05)
    service, (a, b) = _service(recorder)
    _queue(a, 0, 1)
    _queue(b, 1, BATCH)
    await _run(service, [a, b], recorder)
    assert recorder.most_in_flight == 2


@pytest.mark.parametrize("revoked", [False, True])
async def test_a_batch_finishing_after_its_partition_was_revoked_leaves_no_offset(
    revoked: bool,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def held(pool: Any, records: Sequence[Any]) -> bool:
        started.set()
        await release.wait()
        return True

    service = Service(Settings(max_batch_records=BATCH, apply_concurrency=1), schedule=False)
    service._apply = held  # type: ignore[method-assign]
    service._commit_soon = lambda: None  # type: ignore[method-assign]
    lane = _Lane()
    service._lanes = [lane]
    _queue(lane, 0, 3)
    task = asyncio.create_task(service._run_lane(lane, pool=None))  # type: ignore[arg-type]
    await asyncio.wait_for(started.wait(), 5)
    tp = TopicPartition("commands", 0)
    if revoked:  # taken away while the batch is in flight (it may come back before it ends)
        service.revoke([tp])
    service.stop.set()
    release.set()
    await asyncio.wait_for(task, 5)
    assert service._pending == ({} if revoked else {tp: 3})
