"""The relay's batching: one record batch per partition, rows in id order, the partition that
``producer.send`` would have chosen (the default murmur2 partitioner)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from aiokafka.partitioner import DefaultPartitioner

from events.envelope import pack_headers
from events.service.relay import _NEXT_PAGE, _NEXT_PAGE_SINCE, OutboxRelay, _Page
from events.service.settings import Settings


class _Batch:
    def __init__(self, room: int) -> None:
        self.rows: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.room = room
        self.closed = False

    def append(
        self, *, key: bytes | None, value: bytes | None, timestamp: None, headers: Any
    ) -> object | None:
        if self.closed or len(self.rows) >= self.room:
            self.closed = True
            return None
        self.rows.append((key, value, headers))
        return object()

    def close(self) -> None:
        self.closed = True


class _Producer:
    def __init__(self, room: int) -> None:
        self.room = room
        self.sent: list[tuple[str, int, _Batch]] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return set(range(6))

    def create_batch(self) -> _Batch:
        return _Batch(self.room)

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        assert batch.closed, "a batch goes out closed: complete, no linger"
        self.sent.append((topic, partition, batch))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future


def _rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "horizon": 1,
            "id": i,
            "topic": "events" if i % 3 else "results",
            "key": f"sync_{i % 7}".encode(),
            "value": f"v{i}".encode(),
            "headers": pack_headers([("ce_id", f"id{i}".encode()), ("ce_type", b"t\x00\xff")]),
        }
        for i in range(1, count + 1)
    ]


async def test_batches_keep_each_partitions_order_and_the_default_partition() -> None:
    relay = OutboxRelay(Settings())
    producer = _Producer(room=4)  # small batches: a partition's rows span several
    rows = _rows(60)
    futures = await relay._send(producer, rows)  # type: ignore[arg-type]
    assert len(futures) == len(producer.sent)
    by_tp: dict[tuple[str, int], list[bytes | None]] = {}
    for topic, partition, batch in producer.sent:
        by_tp.setdefault((topic, partition), []).extend(value for _, value, _ in batch.rows)
    sent = sorted(v for values in by_tp.values() for v in values if v is not None)
    assert sent == sorted(r["value"] for r in rows)  # every row once
    default = DefaultPartitioner()
    for (topic, partition), values in by_tp.items():
        expected = [
            r["value"]
            for r in rows
            if r["topic"] == topic
            and default(r["key"], list(range(6)), list(range(6))) == partition
        ]
        assert values == expected  # the default partition, in id order
    source = {r["value"]: r for r in rows}
    for _, _, batch in producer.sent:
        for key, value, headers in batch.rows:
            assert value is not None
            row = source[value]
            assert key == row["key"]
            packed = [("ce_id", row["value"].replace(b"v", b"id")), ("ce_type", b"t\x00\xff")]
            assert headers == packed


class _Outbox:
    """A connection whose outbox always has one more row: every read returns a page."""

    def __init__(self) -> None:
        self.reads = 0

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        self.reads += 1
        return _rows(self.reads)[-1:]


class _SlowProducer(_Producer):
    """Kafka that has not acknowledged anything yet: every delivery stays pending."""

    def __init__(self) -> None:
        super().__init__(room=100)
        self.pending: list[asyncio.Future[None]] = []

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append(future)
        return future


async def test_with_pages_in_flight_a_notify_waits_for_kafka_instead_of_spinning(
    monkeypatch: Any,
) -> None:
    relay = OutboxRelay(Settings(relay_poll_interval_seconds=5))
    conn, producer = _Outbox(), _SlowProducer()
    waits = 0
    real_wait = asyncio.wait

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal waits
        waits += 1
        return await real_wait(*args, **kwargs)

    monkeypatch.setattr(asyncio, "wait", counted)
    stop = asyncio.Event()
    loop = asyncio.create_task(relay._drain_loop(conn, producer, stop))  # type: ignore[arg-type]
    for _ in range(20):  # commits keep notifying while two pages wait for Kafka
        relay._notified()
        await asyncio.sleep(0.005)
    assert conn.reads == 2  # two pages in flight, no third read before an acknowledgement
    assert waits <= 25  # one wait per notify at most: not a busy loop

    producer.pending[0].set_result(None)  # the first page is acknowledged: room for a read
    for _ in range(100):
        await asyncio.sleep(0.001)
        if conn.reads == 3:
            break
    assert conn.reads == 3
    assert relay.published == 1
    stop.set()
    for future in producer.pending:
        if not future.done():
            future.set_result(None)
    await asyncio.wait_for(loop, 5)


class _Pages:
    """A connection that answers each read with the next of ``pages`` and records the reads."""

    def __init__(self, pages: list[list[dict[str, Any]]]) -> None:
        self.pages = pages
        self.reads: list[tuple[str, tuple[Any, ...]]] = []

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        self.reads.append((query, args))
        return self.pages.pop(0)


async def test_a_read_starts_at_the_last_horizon_unless_its_page_was_full() -> None:
    relay = OutboxRelay(Settings(relay_batch_size=2))
    full = [{**r, "horizon": 5} for r in _rows(2)]
    partial = [{**_rows(3)[2], "horizon": 9}]
    empty = [{"horizon": 12, "id": None}]
    conn = _Pages([full, partial, empty, full, empty])
    producer = _Producer(room=100)
    for _ in range(5):
        await relay._send_page(conn, producer, ())  # type: ignore[arg-type]
    queries = [query for query, _ in conn.reads]
    horizons = [args[3] if len(args) > 3 else None for _, args in conn.reads]
    # A new leader reads everything; after a full page, everything again (a backlog); after
    # a page that was not full, or empty, only what is at or above that read's xmin.
    assert queries == [_NEXT_PAGE, _NEXT_PAGE, _NEXT_PAGE_SINCE, _NEXT_PAGE_SINCE, _NEXT_PAGE]
    assert horizons == [None, None, 9, 12, None]
    assert relay.horizon == 12


async def test_a_page_not_sent_by_the_way_out_makes_the_flush_read_everything_again() -> None:
    relay = OutboxRelay(Settings())
    loop = asyncio.get_running_loop()
    sent, refused = loop.create_future(), loop.create_future()
    sent.set_result(None)
    refused.set_exception(RuntimeError("not acknowledged"))
    relay._horizon = 42
    await relay._settle(deque([_Page([1], sent, 0.0)]))
    assert relay.horizon == 42  # acknowledged: its rows are deleted next, nothing to read again
    await relay._settle(deque([_Page([2], sent, 0.0), _Page([3], refused, 0.0)]))
    # Row 3 may be below the horizon (reads after it left it out as in flight): read it again.
    assert relay.horizon == 0
