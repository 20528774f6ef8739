"""The bench's count of how its max-throughput phase's commands were coalesced: the
``sync.status_changed`` events published after the mark, on the real broker, per distinct
sync and batch time."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaProducer

from events.devtools.bench.observers import SyncWrites
from events.kafka import kafka_options
from events.service.settings import Settings
from tests.helpers.live import with_own_topics

pytestmark = pytest.mark.stack


async def _publish(
    producer: AIOKafkaProducer, topic: str, events: list[tuple[str, str, str]]
) -> None:
    for kind, subject, time in events:
        headers = [
            ("ce_type", kind.encode()),
            ("ce_subject", subject.encode()),
            ("ce_time", time.encode()),
        ]
        await producer.send_and_wait(topic, b"{}", key=subject.encode(), headers=headers)


async def test_commands_per_write_counts_the_events_after_the_mark_per_sync_and_time(
    settings: Settings,
) -> None:
    own = await with_own_topics(settings)
    topic = own.lifecycle_topic
    producer = AIOKafkaProducer(**kafka_options(own))
    await producer.start()
    try:
        # Before the mark: not the phase's.
        await _publish(producer, topic, [("sync.status_changed", "s0", "t0")] * 4)
        writes = SyncWrites(own)
        await writes.mark()
        await _publish(
            producer,
            topic,
            [
                # One batch applied three commands to s1: one row written.
                ("sync.status_changed", "s1", "t1"),
                ("sync.status_changed", "s1", "t1"),
                ("sync.status_changed", "s1", "t1"),
                ("sync.status_changed", "s2", "t1"),
                ("sync.status_changed", "s1", "t2"),  # a later batch
                ("sync.run_requested", "s3", "t1"),  # not a status change: not counted
            ],
        )
        assert await writes.count() == pytest.approx(5 / 3)
    finally:
        await producer.stop()
