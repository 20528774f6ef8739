"""The relay's batching: one record batch per partition, rows in id order, the partition that
``producer.send`` would have chosen (the default murmur2 partitioner)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import pytest
from aiokafka import errors
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from events.service import parking
from events.service import relay as relay_module
from events.service.packed_headers import pack_headers, unpack_headers
from events.service.parking import REASONS, refusal, too_large
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
    sent = await relay._send(producer, rows)  # type: ignore[arg-type]
    assert len(sent) == len(producer.sent)
    ids_of = {r["value"]: r["id"] for r in rows}
    for (_, ids), (_, _, batch) in zip(sent, producer.sent, strict=True):
        assert ids == [ids_of[value] for _, value, _ in batch.rows]  # each batch's row ids
    by_tp: dict[tuple[str, int], list[bytes | None]] = {}
    for topic, partition, batch in producer.sent:
        by_tp.setdefault((topic, partition), []).extend(value for _, value, _ in batch.rows)
    values_sent = sorted(v for values in by_tp.values() for v in values if v is not None)
    assert values_sent == sorted(r["value"] for r in rows)  # every row once
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


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (errors.MessageSizeTooLargeError(), "too_large"),
        (errors.RecordTooLargeError(), "too_large"),
        (errors.RecordListTooLargeError(), "too_large"),
        (errors.UnknownTopicOrPartitionError(), "unknown_topic"),
        (errors.InvalidTopicError(), "invalid_topic"),
        (errors.TopicAuthorizationFailedError("t"), "topic_authorization"),
        (errors.CorruptRecordException(), "corrupt_record"),
        (errors.InvalidTimestampError(), "invalid_timestamp"),
        (errors.UnsupportedForMessageFormatError(), "unsupported_format"),
        (errors.PolicyViolationError(), "policy_violation"),
        # Transient, or about the producer rather than a record: the relay starts over.
        (errors.KafkaConnectionError(), None),
        (errors.KafkaTimeoutError(), None),
        (errors.RequestTimedOutError(), None),
        (errors.NotLeaderForPartitionError(), None),
        (errors.LeaderNotAvailableError(), None),
        (errors.NotEnoughReplicasError(), None),
        (errors.OutOfOrderSequenceNumber(), None),
        (errors.ProducerClosed(), None),
        (errors.ProducerFenced(), None),
        (errors.ClusterAuthorizationFailedError(), None),
        (errors.UnknownError(), None),
        (errors.KafkaError(), None),
        (RuntimeError("x"), None),
    ],
)
def test_which_errors_refuse_a_row_for_good(error: BaseException, reason: str | None) -> None:
    assert refusal(error) == reason
    assert reason is None or reason in REASONS


def test_too_large_is_the_producers_own_request_size_check() -> None:
    limit = 10_000
    headers = pack_headers([("ce_id", b"x" * 40)])
    fits = {"key": b"sync_1", "value": b"v" * 9_000, "headers": headers}
    assert not too_large(fits, limit)
    # aiokafka's ``send`` refuses a record whose estimated size exceeds max_request_size.
    exact = DefaultRecordBatchBuilder.estimate_size_in_bytes(
        b"sync_1", b"v" * 9_000, unpack_headers(headers)
    )
    over = {**fits, "value": b"v" * (9_000 + limit - exact + 1)}
    assert too_large(over, limit)
    at = {**fits, "value": b"v" * (9_000 + limit - exact)}
    assert not too_large(at, limit)


LIFECYCLE = "events"


def _row(i: int, topic: str, key: str, value: bytes) -> dict[str, Any]:
    return {
        "id": i,
        "topic": topic,
        "key": key.encode(),
        "value": value,
        "headers": pack_headers([("ce_id", f"id{i}".encode())]),
    }


class _Outbox2:
    """The outbox as the relay's reads see it: each read deletes the published ids ($2) and
    returns the front rows in id order, without the ones in flight ($3)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = {r["id"]: r for r in rows}
        self.parked: dict[int, tuple[dict[str, Any], str]] = {}

    async def fetch(self, query: str, size: int, published: list[int], flying: list[int], *_: Any):  # type: ignore[no-untyped-def]
        for i in published:
            self.rows.pop(i, None)
        skip = set(published) | set(flying)
        page = [r for i, r in sorted(self.rows.items()) if i not in skip][:size]
        return [{**r, "horizon": 1} for r in page] or [{"horizon": 1, "id": None}]

    async def park(self, _: Any, refused: list[tuple[int, str]], held: list[int]) -> set[int]:
        moved = set()
        for i, why in refused:
            self.parked[i] = (self.rows.pop(i), why)
            moved.add(i)
        for i in held:
            row = self.rows[i]
            if any(
                (r["topic"], r["key"]) == (row["topic"], row["key"])
                for r, _ in self.parked.values()
            ):
                self.parked[i] = (self.rows.pop(i), "held")
                moved.add(i)
        return moved

    async def state(self, _: Any, topic: str) -> tuple[int, set[bytes]]:
        return len(self.parked), {r["key"] for r, _ in self.parked.values() if r["topic"] == topic}


class _Kafka(_Producer):
    """A broker whose topics take records of at most ``limit`` bytes (a larger one fails its
    whole batch), and a producer: if idempotent, after a failed batch every later one fails too
    (its sequence numbers count the one the broker never took)."""

    def __init__(
        self, limit: int, published: list[tuple[str, int, bytes]], idempotent: bool = True
    ) -> None:
        super().__init__(room=100)
        self.limit = limit
        self.published = published
        self.idempotent = idempotent
        self.poisoned = False
        self.stopped = False

    async def stop(self) -> None:
        self.stopped = True

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.poisoned:
            future.set_exception(errors.OutOfOrderSequenceNumber())
        elif any(len(value or b"") > self.limit for _, value, _ in batch.rows):
            self.poisoned = self.idempotent
            future.set_exception(errors.MessageSizeTooLargeError())
        else:
            self.published.extend((topic, partition, value or b"") for _, value, _ in batch.rows)
            future.set_result(None)
        return future


async def test_a_refused_batch_parks_its_row_and_the_rows_behind_it_go_on_once(
    monkeypatch: Any,
) -> None:
    """A batch refused for good names no row: the relay replaces the producer, sends the rows
    one at a time (without idempotence, so that a refused one does not fail the next), parks
    the refused ones, and everything else is published exactly once. A later lifecycle event
    of a refused event's sync is parked behind it (no version gap)."""
    rows = [
        _row(1, "results", "sync_a", b"r1"),
        _row(2, LIFECYCLE, "sync_b", b"b-v1"),
        _row(3, LIFECYCLE, "sync_a", b"a-v1"),
        _row(4, "results", "sync_c", b"x" * 500),  # too large for the topic: refused
        _row(5, LIFECYCLE, "sync_b", b"b-v2"),
        _row(6, LIFECYCLE, "sync_d", b"d-v1-" + b"x" * 500),  # refused: holds sync_d
        _row(7, LIFECYCLE, "sync_d", b"d-v2"),
        _row(8, "results", "sync_d", b"r8"),  # a result of sync_d: not held
        _row(9, LIFECYCLE, "sync_a", b"a-v2"),
    ]
    outbox = _Outbox2(rows)
    monkeypatch.setattr(parking, "park", outbox.park)
    monkeypatch.setattr(parking, "parked_state", outbox.state)
    published: list[tuple[str, int, bytes]] = []
    producers = [_Kafka(100, published)]
    relay = OutboxRelay(Settings(lifecycle_topic=LIFECYCLE, relay_poll_interval_seconds=0.05))

    async def fresh() -> _Kafka:
        if relay._poisoned or not producers:
            relay._poisoned = False
            producers.append(_Kafka(100, published))
        return producers[-1]

    probes: list[_Kafka] = []

    async def probe(settings: Settings, **options: Any) -> _Kafka:
        assert options == {"enable_idempotence": False}
        probes.append(_Kafka(100, published, idempotent=False))
        return probes[-1]

    monkeypatch.setattr(relay, "_fresh_producer", fresh)
    monkeypatch.setattr(relay_module, "started_producer", probe)
    stop = asyncio.Event()
    loop = asyncio.create_task(relay._drain_loop(outbox, producers[0], stop))  # type: ignore[arg-type]
    for _ in range(500):
        await asyncio.sleep(0.01)
        if not outbox.rows and len(outbox.parked) == 3:
            break
    stop.set()
    await asyncio.wait_for(loop, 5)

    values = [value for _, _, value in published]
    assert sorted(values) == sorted([b"r1", b"b-v1", b"a-v1", b"b-v2", b"r8", b"a-v2"])
    assert {i: why for i, (_, why) in outbox.parked.items()} == {
        4: "too_large",
        6: "too_large",
        7: "held",
    }
    assert not outbox.rows
    # A producer that had a batch fail refuses every later batch (OutOfOrderSequenceNumber, a
    # transient error that would have stopped the loop): it was replaced before sending on.
    assert [p.poisoned for p in producers] == [True, False]
    assert [p.stopped for p in probes] == [True]
    # Per sync and topic, in id order.
    for key in (b"b-v", b"a-v"):
        assert [v for v in values if v.startswith(key)] == sorted(
            v for v in values if v.startswith(key)
        )


async def test_rows_refused_before_sending_are_parked_at_once(monkeypatch: Any) -> None:
    """An unknown topic (its lookup failed past aiokafka's bound) and a row larger than a
    request may be are parked without being sent; a later event of the sync waits behind."""
    big = b"x" * (4 * 1024 + 1)
    rows = [
        _row(1, "gone", "sync_a", b"g1"),
        _row(2, LIFECYCLE, "sync_b", big),
        _row(3, LIFECYCLE, "sync_b", b"b-v2"),
        _row(4, LIFECYCLE, "sync_c", b"c-v1"),
        _row(5, "gone", "sync_c", b"g2"),
    ]
    outbox = _Outbox2(rows)
    monkeypatch.setattr(parking, "park", outbox.park)
    monkeypatch.setattr(parking, "parked_state", outbox.state)

    class _NoSuchTopic(_Producer):
        async def partitions_for(self, topic: str) -> set[int]:
            if topic == "gone":
                raise errors.UnknownTopicOrPartitionError()
            return set(range(6))

    producer = _NoSuchTopic(room=100)
    relay = OutboxRelay(Settings(lifecycle_topic=LIFECYCLE, max_message_bytes=1024))
    page = await relay._send_page(outbox, producer, ())  # type: ignore[arg-type]
    assert page is not None
    assert page.ids == [4] and page.read == 5
    assert {i: why for i, (_, why) in outbox.parked.items()} == {
        1: "unknown_topic",
        2: "too_large",
        3: "held",
        5: "unknown_topic",
    }
    assert [value for _, _, b in producer.sent for _, value, _ in b.rows] == [b"c-v1"]


async def test_a_screened_page_goes_to_the_same_partitions_as_an_unscreened_one() -> None:
    """After ``_screen`` the topics' partitions and the keys' hashes are known and ``_send``
    looks them up without a coroutine per row: the same batches as a relay that knew nothing,
    also once the hash cache was emptied; a keyless row goes out too (to a random partition, as
    ``producer.send`` would)."""
    rows: list[Any] = _rows(60)

    async def batches(relay: OutboxRelay, page: list[Any]) -> list[tuple[str, int, list[Any]]]:
        producer = _Producer(room=5)
        await relay._send(producer, page)
        return [(topic, partition, b.rows) for topic, partition, b in producer.sent]

    fresh = await batches(OutboxRelay(Settings()), rows)
    relay = OutboxRelay(Settings())
    for _ in range(2):  # the second time, every key's hash is cached
        assert await relay._screen(None, _Producer(room=5), rows) == rows  # type: ignore[arg-type]
        assert await batches(relay, rows) == fresh
    relay._hashes.clear()
    assert await batches(relay, rows) == fresh
    keyless = [{**rows[0], "key": None}]
    ((_, partition, sent),) = await batches(relay, keyless)
    assert partition in range(6) and [value for _, value, _ in sent] == [rows[0]["value"]]


async def test_a_keys_cached_hash_gives_each_topic_its_own_default_partition() -> None:
    """A key's hash is remembered for every topic (a result and an event share their sync's
    key): with topics of different partition counts, each row still goes to the partition the
    default partitioner chooses for its topic, whether the key was hashed for another topic
    first or not, and after the cache was emptied."""
    counts = {"events": 6, "results": 4}

    class _Uneven(_Producer):
        async def partitions_for(self, topic: str) -> set[int]:
            return set(range(counts[topic]))

    # An empty key is a key: hashed like any other, never sent to a random partition.
    rows: list[Any] = [*_rows(60), *({**r, "key": b""} for r in _rows(4))]
    default = DefaultPartitioner()
    relay = OutboxRelay(Settings())

    async def check() -> None:
        producer = _Uneven(room=100)
        await relay._send(producer, rows)
        for topic, partition, batch in producer.sent:
            every = list(range(counts[topic]))
            assert {default(key, every, every) for key, _, _ in batch.rows} == {partition}
        sent = sorted(value or b"" for _, _, b in producer.sent for _, value, _ in b.rows)
        assert sent == sorted(r["value"] for r in rows)

    for _ in range(2):  # the second time, every key's hash is cached
        await relay._screen(None, _Uneven(room=100), rows)  # type: ignore[arg-type]
        await check()
    assert len(relay._hashes) == 8  # one per key (the empty one too), not per topic
    relay._hashes.clear()
    await check()


async def test_a_row_between_half_a_request_and_a_request_is_sent() -> None:
    """The screening's first check lets rows of at most half a request through unmeasured;
    a larger one is measured as the producer would, and sent when it fits."""
    relay = OutboxRelay(Settings(lifecycle_topic=LIFECYCLE, max_message_bytes=1024))
    limit = 4 * 1024
    fits = _row(1, LIFECYCLE, "sync_a", b"x" * (limit // 2 + 100))
    assert not too_large(fits, limit)
    page: list[Any] = [fits]
    assert await relay._screen(None, _Producer(room=100), page) == page  # type: ignore[arg-type]
