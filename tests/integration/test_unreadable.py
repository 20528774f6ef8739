"""A record the Kafka client cannot read (a header name that is not UTF-8: aiokafka's record
reader raises UnicodeDecodeError out of ``getmany``) is dead-lettered and rejected under the id
derived from its offset; the records before it are processed, as are those of later batches
(the records after it in its own batch cannot be read by the client either, and are
dead-lettered the same way), its partition goes on, and a restarted service does not stall on
it."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import AsyncGenerator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.record.util import calc_crc32c

from events.client import new_sync_id
from events.envelope import derived_id
from events.service.app import Service
from events.service.settings import Settings
from statemachine import ErrorCode, Outcome
from tests.helpers.live import Seen, new_tenant, running, watch, with_own_topics
from tests.helpers.messages import CREATE, Headers, envelope, rejected, result_for

pytestmark = pytest.mark.stack

BAD_NAME = b"\xff\xfe\xfd\xfc"
PLACEHOLDER = b"zzzz"


async def unreadable_batch(
    producer: AIOKafkaProducer, topic: str, partition: int, records: list[tuple[str, Headers]]
) -> int:
    """Write one record batch of creates to ``partition``, where a record whose sync id is
    ``""`` carries the header name ``BAD_NAME`` instead; returns the batch's first offset.

    aiokafka encodes header names itself, so the batch is built with a placeholder name, which
    is then replaced in the built bytes, and the batch's CRC-32C (over the bytes from the
    attributes on, stored big-endian at byte 17) written again."""
    batch = producer.create_batch()
    for sync_id, headers in records:
        value = json.dumps(CREATE).encode() if sync_id else b"{}"
        extra = [] if sync_id else [(PLACEHOLDER.decode(), b"v")]
        written = batch.append(
            timestamp=None, key=sync_id.encode() or None, value=value, headers=headers + extra
        )
        assert written is not None
    buf = batch._build()
    assert buf.count(PLACEHOLDER) == 1
    at = buf.index(PLACEHOLDER)
    buf[at : at + len(PLACEHOLDER)] = BAD_NAME
    struct.pack_into(">I", buf, 17, calc_crc32c(bytes(buf[21:])))
    sent = await (await producer.send_batch(batch, topic, partition=partition))
    return int(sent.offset)


async def seen_on(settings: Settings, topic: str) -> AsyncGenerator[Seen, None]:
    feed = watch(settings, topic)
    try:
        yield await anext(feed)
    finally:  # close the watch too: its consumer stops now, not when collected
        await feed.aclose()  # type: ignore[attr-defined]


async def test_a_record_with_a_header_name_not_utf8_is_dead_lettered_and_the_lane_goes_on(
    settings: Settings,
) -> None:
    own = await with_own_topics(settings, topic_partitions=3, apply_concurrency=2)
    tenant = await new_tenant(own)
    topic = own.commands_topic
    first, before, trailing, later, one, two = (new_sync_id() for _ in range(6))
    ids = {s: str(uuid.uuid4()) for s in (first, before, trailing, later, one, two)}

    def command(sync_id: str) -> tuple[str, Headers]:
        return sync_id, envelope(ids[sync_id], "sync.create", sync_id, tenant=tenant)

    producer = AIOKafkaProducer(bootstrap_servers=own.kafka_bootstrap_servers)
    await producer.start()
    try:
        # Partition 0: a command, then one batch of [command, unreadable, command], then one
        # more command (a batch of its own); partitions 1 and 2 a command each (the fetch that
        # fails may have read them already). All written before the service starts: its first
        # fetch fails.
        await producer.send_and_wait(
            topic, json.dumps(CREATE).encode(), first.encode(), 0, headers=command(first)[1]
        )
        base = await unreadable_batch(
            producer,
            topic,
            0,
            [
                command(before),
                ("", envelope(str(uuid.uuid4()), "sync.create", None)),
                command(trailing),
            ],
        )
        bad = base + 1
        await producer.send_and_wait(
            topic, json.dumps(CREATE).encode(), later.encode(), 0, headers=command(later)[1]
        )
        for partition, sync_id in ((1, one), (2, two)):
            await producer.send_and_wait(
                topic,
                json.dumps(CREATE).encode(),
                sync_id.encode(),
                partition,
                headers=command(sync_id)[1],
            )
    finally:
        await producer.stop()

    # What a plain consumer sees: the client raises on that record (the bug being guarded).
    probe = AIOKafkaConsumer(bootstrap_servers=own.kafka_bootstrap_servers)
    await probe.start()
    try:
        tp = TopicPartition(topic, 0)
        probe.assign([tp])
        probe.seek(tp, bad)
        with pytest.raises(UnicodeDecodeError):
            await probe.getmany(tp, timeout_ms=10_000)
    finally:
        await probe.stop()

    results_feed, dlq_feed = seen_on(own, own.results_topic), seen_on(own, own.dlq_topic)
    results, dlq = await anext(results_feed), await anext(dlq_feed)
    try:
        async with running(Service(own, schedule=False)):
            for sync_id in (first, before, later, one, two):
                result = await result_for(results, sync_id, ids[sync_id])
                assert result.outcome is Outcome.APPLIED, result
            for offset in (bad, bad + 1):  # the unreadable record, the one after it in its batch
                own_id = derived_id(topic, 0, offset)
                answer = rejected(
                    await result_for(results, own_id, own_id), ErrorCode.VALIDATION_ERROR
                )
                assert answer.error is not None and "not UTF-8" in answer.error.message
            await dlq.wait("", 2)
            # Keyless, so each on a partition of its own choosing: in no order between them.
            assert sorted(int(h["dlq_source_offset"]) for h, _ in dlq.by_key[""]) == [
                bad,
                bad + 1,
            ]
            for headers, value in dlq.by_key[""]:
                assert headers["dlq_reason"] == b"headers_not_utf8"
                assert headers["dlq_source_topic"] == topic.encode()
                assert headers["dlq_source_partition"] == b"0"
                assert not value
            assert results.results(trailing) == []

        # Restarted: the partition is not stuck behind the record; a new command is applied,
        # and the unreadable record is neither dead-lettered nor answered again.
        restart = new_sync_id()
        ids[restart] = str(uuid.uuid4())
        async with running(Service(own, schedule=False)):
            producer = AIOKafkaProducer(bootstrap_servers=own.kafka_bootstrap_servers)
            await producer.start()
            try:
                await producer.send_and_wait(
                    topic,
                    json.dumps(CREATE).encode(),
                    restart.encode(),
                    0,
                    headers=command(restart)[1],
                )
            finally:
                await producer.stop()
            result = await result_for(results, restart, ids[restart])
            assert result.outcome is Outcome.APPLIED
        assert len(dlq.by_key[""]) == 2
        assert len(results.results(derived_id(topic, 0, bad))) == 1
    finally:
        await results_feed.aclose()
        await dlq_feed.aclose()
