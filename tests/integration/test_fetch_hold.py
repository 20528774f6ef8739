"""``FetchHold`` on a real consumer and broker: aiokafka builds each fetch request from the
values it sets, so a fetch built while held waits at the broker (here for ``HOLD_MS``: one
small record is far below ``FETCH_HOLD_BYTES``), and one built once freed answers with the
first record again."""

from __future__ import annotations

import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from events.kafka import kafka_options
from events.service.consumer import FetchHold
from events.service.settings import Settings
from tests.helpers.live import with_own_topics

#: The hold this test sets: long enough to tell a held fetch from a free one on a busy machine
#: (the service's own, ``FETCH_HOLD_MS``, is 1 ms).
HOLD_MS = 50

pytestmark = pytest.mark.stack


async def _next(consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[bytes, float]:
    """The next record's value, and when it was handed over (monotonic)."""
    batches = await consumer.getmany(tp, timeout_ms=10_000, max_records=1)
    [record] = batches[tp]
    return record.value, time.monotonic()


async def test_a_held_fetch_waits_at_the_broker_and_a_freed_one_answers_at_once(
    settings: Settings,
) -> None:
    # Topics of this test's own: nothing else reads or writes them.
    own = await with_own_topics(settings, topic_partitions=1)
    tp = TopicPartition(own.lifecycle_topic, 0)
    consumer = AIOKafkaConsumer(**kafka_options(settings), enable_auto_commit=False)
    producer = AIOKafkaProducer(**kafka_options(settings), linger_ms=0)
    await consumer.start()
    await producer.start()
    try:
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        hold = FetchHold(consumer, HOLD_MS)
        hold.set(True)
        run = b"-" + own.lifecycle_topic.encode()

        # The fetch in flight was built before the hold: it answers with the first record.
        # The next one is built held.
        await producer.send_and_wait(tp.topic, b"a" + run, partition=tp.partition)
        value, first = await _next(consumer, tp)
        assert value == b"a" + run
        await producer.send_and_wait(tp.topic, b"b" + run, partition=tp.partition)
        value, second = await _next(consumer, tp)
        assert value == b"b" + run
        # Held: the broker answered no sooner than HOLD_MS after the request came.
        assert (second - first) * 1000 >= HOLD_MS * 0.8

        hold.set(False)
        # The held fetch in flight answers within HOLD_MS; the ones after it are free.
        await producer.send_and_wait(tp.topic, b"c" + run, partition=tp.partition)
        value, _ = await _next(consumer, tp)
        assert value == b"c" + run
        free = []
        for n in range(10):
            sent = time.monotonic()
            await producer.send_and_wait(tp.topic, b"d%d" % n + run, partition=tp.partition)
            value, got = await _next(consumer, tp)
            assert value == b"d%d" % n + run
            free.append(got - sent)
        # Not held: one of them came sooner after its send than a held fetch can answer.
        assert min(free) * 1000 < HOLD_MS
    finally:
        await producer.stop()
        await consumer.stop()
