"""The latency baseline: a bare aiokafka produce-then-consume round trip on the same broker, at
the same rate, in the same run as synclife's latency phases.

Records shaped like the paced commands (same key, body and headers, ids of their own) go to
a scratch topic of the run (``bench.<run>.baseline``, as many partitions as synclife's
topics) through the bench's paced producer itself (so with its settings: acks=all,
idempotence, no linger), and a consumer reads that topic from its end with the same options
as the one that reads synclife's events. Each record's latency runs from its scheduled send
time to the consumer seeing it: what any Kafka client in between would add at least, so
synclife's latency minus this one is what synclife adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from events.devtools.bench.observers import latency_figures, wait_done
from events.devtools.loadgen import Command, TopicReader, send_paced
from events.envelope import header
from events.kafka import kafka_options
from events.service.settings import Settings

__all__ = ["Echoes", "create_scratch_topic", "kafka_baseline", "warm_up"]


async def create_scratch_topic(settings: Settings, name: str) -> None:
    """``name`` with ``topic_partitions`` partitions (replication 1), if it does not exist."""
    admin = AIOKafkaAdminClient(
        **kafka_options(settings, client_id=f"{settings.client_id}-admin"),
    )
    await admin.start()
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            await admin.create_topics(
                [NewTopic(name, settings.topic_partitions, 1)], timeout_ms=30_000
            )
    finally:
        await admin.close()


async def warm_up(producer: AIOKafkaProducer, topic: str, command: Command) -> None:
    """One record sent and acknowledged before measuring: the producer has the new topic's
    metadata and connections, so the first measured record pays for neither."""
    await producer.send_and_wait(topic, key=command.key, value=command.value)


class Echoes:
    """The baseline's records seen back on the scratch topic, matched by their ``ce_id``: each
    one's latency from its scheduled send (wall clock). ``done`` once ``count`` are seen."""

    def __init__(self, settings: Settings, topic: str, count: int) -> None:
        self.count = count
        self.due_at: dict[str, float] = {}
        self.late: list[float] = []
        self.latency: list[float] = []
        self.done = asyncio.Event()
        self.reader = TopicReader(
            topic,
            self._handle,
            {
                # The options of the consumer that reads synclife's events (StatusChanges).
                **kafka_options(settings, client_id=f"{settings.client_id}-baseline"),
                "fetch_max_wait_ms": 100,
                "max_partition_fetch_bytes": 4 * 1024 * 1024,
            },
            at_end=True,
            clock=time.time,
        )

    def sent(self, command: Command, due: float) -> None:
        self.due_at[command.command_id] = due
        self.late.append((time.time() - due) * 1000)

    def _handle(self, records: list[Any], now: float) -> None:
        for r in records:
            ce_id = header(r.headers, "ce_id")
            due = self.due_at.pop(ce_id.decode(), None) if ce_id is not None else None
            if due is not None:
                self.latency.append((now - due) * 1000)
        if len(self.latency) >= self.count:
            self.done.set()


async def kafka_baseline(
    settings: Settings,
    producer: AIOKafkaProducer,
    topic: str,
    records: list[Command],
    rate: float,
    check: Callable[[], None],
) -> dict[str, float]:
    """Publish ``records`` to ``topic`` at ``rate``; each one's time from its scheduled send
    to a consumer at the topic's end seeing it."""
    echoes = Echoes(settings, topic, len(records))
    await echoes.reader.start()
    try:
        offered = await send_paced(producer, topic, records, rate, echoes.sent)
        await wait_done(
            echoes.done, len(records), lambda: f"baseline: {len(echoes.latency)} seen", check
        )
    finally:
        await echoes.reader.stop()
    return {
        "commands": len(records),
        "offered_rate": offered,
        **latency_figures(echoes.latency, echoes.late),
    }
