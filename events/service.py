"""``synclife serve``: the command consumer and the outbox relay, in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from events.db import acquire, create_pool, is_transient
from events.kafka import command_consumer
from events.processor import BatchStats, Record, apply_batch, dead_letter_one
from events.relay import OutboxRelay
from events.scheduler import Scheduler, utcnow
from events.settings import Settings

__all__ = ["Service", "serve"]

log = logging.getLogger("synclife.service")

MAX_POISON_ATTEMPTS = 3


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: Service) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Everything processed so far is committed in Postgres: commit its offsets too, so
        # the next owner does not redo it (redoing would still be harmless).
        await self.service.commit_offsets()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Service:
    """Consume commands, apply them batch by batch, relay the outbox."""

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.scheduler: Scheduler | None = None
        self.stop = asyncio.Event()
        self.totals = BatchStats()
        self.relay = OutboxRelay(settings)
        self._pending: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._pool: asyncpg.Pool | None = None

    async def commit_offsets(self) -> None:
        if not self._pending or self._consumer is None:
            return
        offsets, self._pending = self._pending, {}
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced: another member owns these partitions now and will
            # redeliver; the Postgres record of each command id makes that harmless.
            log.warning("offset commit failed after a rebalance; redelivery is deduplicated")

    async def _apply(self, pool: asyncpg.Pool, records: Sequence[Record]) -> None:
        """Apply a batch; on a persistent failure, isolate and dead-letter the poison record."""
        backoff = 0.1
        attempts = 0
        while True:
            try:
                async with acquire(pool) as conn:
                    stats = await apply_batch(conn, self.settings, records, self.clock())
            except Exception as exc:
                if is_transient(exc):
                    log.warning("transient failure (%s); retrying batch", type(exc).__name__)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                attempts += 1
                if len(records) > 1:
                    log.exception("batch of %d failed; applying one by one", len(records))
                    for record in records:
                        await self._apply(pool, [record])
                    return
                if attempts >= MAX_POISON_ATTEMPTS:
                    record = records[0]
                    log.exception(
                        "record %s[%d]@%d failed %d times; dead-lettering it",
                        record.topic,
                        record.partition,
                        record.offset,
                        attempts,
                    )
                    async with acquire(pool) as conn:
                        await dead_letter_one(
                            conn, self.settings, record, f"processing_failed: {type(exc).__name__}"
                        )
                    self.totals.dead_lettered += 1
                    return
                await asyncio.sleep(backoff)
            else:
                self._add(stats)
                return

    def _add(self, stats: BatchStats) -> None:
        for name in vars(stats):
            setattr(self.totals, name, getattr(self.totals, name) + getattr(stats, name))

    async def run(self) -> None:
        self._pool = pool = await _retry(lambda: create_pool(self.settings), self.stop)
        consumer = self._consumer = command_consumer(self.settings)
        consumer.subscribe([self.settings.commands_topic], listener=_Rebalance(self))
        await _retry(consumer.start, self.stop)
        relay_task = asyncio.create_task(self.relay.run(self.stop), name="relay")
        self.scheduler = Scheduler(self.settings, pool, self.clock)
        scheduler_task = asyncio.create_task(self.scheduler.run(self.stop), name="scheduler")
        log.info(
            "serving %s as group %s", self.settings.commands_topic, self.settings.consumer_group
        )
        try:
            while not self.stop.is_set():
                try:
                    batches = await consumer.getmany(
                        timeout_ms=200, max_records=self.settings.max_batch_records
                    )
                except KafkaError as exc:
                    log.warning("fetch failed (%s); retrying", type(exc).__name__)
                    await asyncio.sleep(0.5)
                    continue
                records = [r for tp_records in batches.values() for r in tp_records]
                if not records:
                    continue
                await self._apply(pool, records)
                for tp, tp_records in batches.items():
                    self._pending[tp] = tp_records[-1].offset + 1
                await self.commit_offsets()
        finally:
            # Graceful: the batch in flight is done and committed above; flush and leave.
            self.stop.set()
            await self.commit_offsets()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(scheduler_task, 10)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(relay_task, 10)
            await self.relay.close()
            with contextlib.suppress(Exception):
                await consumer.stop()
            await pool.close()


async def _retry(start: Any, stop: asyncio.Event) -> Any:
    backoff = 0.2
    while True:
        try:
            return await start()
        except Exception as exc:
            if stop.is_set() or not (is_transient(exc) or isinstance(exc, KafkaError)):
                raise
            log.warning("waiting for a dependency (%s)", type(exc).__name__)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    service = Service(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()
