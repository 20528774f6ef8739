"""``synclife serve``: the command consumer, the scheduler and the outbox relay, in one process.

Shutdown (SIGTERM or SIGINT): stop fetching, finish and commit the batch in flight, commit its
offsets, let the relay flush, leave the consumer group, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from events.db import acquire, create_pool, is_conflict, is_transient
from events.kafka import command_consumer
from events.observability import (
    APPLY_SECONDS,
    COMMANDS,
    CONSUMER_LAG,
    DEAD_LETTERS,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_SECONDS,
    HealthServer,
)
from events.processor import BatchStats, Record, apply_batch, dead_letter_one
from events.relay import OutboxRelay
from events.scheduler import Scheduler, utcnow
from events.settings import Settings

__all__ = ["Service", "serve"]

log = logging.getLogger("synclife.service")

MAX_POISON_ATTEMPTS = 3
MAX_CONFLICT_RETRIES = 20
BACKLOG_INTERVAL_SECONDS = 5.0


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
    """Consume commands, apply them batch by batch, schedule runs, relay the outbox."""

    def __init__(
        self,
        settings: Settings,
        clock: Callable[[], datetime] = utcnow,
        *,
        http: bool = False,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.stop = asyncio.Event()
        self.totals = BatchStats()
        self.relay = OutboxRelay(settings)
        self.scheduler: Scheduler | None = None
        self.health: HealthServer | None = None
        self._http = http
        self._pending: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._pool: asyncpg.Pool | None = None
        self._degraded: str | None = None  # why the last batch is being retried, if it is

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
        except KafkaError as exc:
            # Kafka is away: the offsets are committed with the next batch, or the batch is
            # redelivered and deduplicated.
            log.warning("offset commit failed (%s); will retry", type(exc).__name__)
            for tp, offset in offsets.items():
                self._pending.setdefault(tp, offset)

    async def _apply(self, pool: asyncpg.Pool, records: Sequence[Record]) -> None:
        """Apply a batch; on a persistent failure, isolate and dead-letter the poison record."""
        backoff = 0.1
        attempts = 0
        conflicts = 0
        while True:
            started = time.perf_counter()
            try:
                async with acquire(pool) as conn:
                    stats = await apply_batch(conn, self.settings, records, self.clock())
            except Exception as exc:
                if is_conflict(exc):
                    # A concurrent writer won a race (two owners of a partition during a
                    # rebalance): re-reading resolves it. Endless conflicts would be a bug.
                    conflicts += 1
                if is_transient(exc) and conflicts <= MAX_CONFLICT_RETRIES:
                    self._degraded = f"retrying a batch: {type(exc).__name__}"
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
                    await self._poison(pool, records[0], attempts, exc)
                    return
                await asyncio.sleep(backoff)
            else:
                self._degraded = None
                APPLY_SECONDS.observe(time.perf_counter() - started)
                self._count(stats)
                return

    async def _poison(
        self, pool: asyncpg.Pool, record: Record, attempts: int, exc: BaseException
    ) -> None:
        log.error(
            "record %s[%d]@%d failed %d times (%s); dead-lettering it",
            record.topic,
            record.partition,
            record.offset,
            attempts,
            type(exc).__name__,
        )
        async with acquire(pool) as conn:
            await dead_letter_one(
                conn, self.settings, record, f"processing_failed: {type(exc).__name__}"
            )
        self.totals.dead_lettered += 1
        DEAD_LETTERS.inc()

    def _count(self, stats: BatchStats) -> None:
        self.totals.add(stats)
        for (kind, outcome), n in stats.outcomes.items():
            COMMANDS.labels(kind, outcome).inc(n)
        if stats.dead_lettered:
            DEAD_LETTERS.inc(stats.dead_lettered)

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - position))

    async def _watch_backlog(self, pool: asyncpg.Pool) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(Exception):
                async with acquire(pool) as conn:
                    row = await conn.fetchrow(
                        """SELECT count(*) AS n,
                                  coalesce(extract(epoch FROM now() - min(created_at)), 0) AS age
                           FROM outbox"""
                    )
                if row is not None:
                    OUTBOX_BACKLOG.set(row["n"])
                    OUTBOX_OLDEST_SECONDS.set(float(row["age"]))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), BACKLOG_INTERVAL_SECONDS)

    # Readiness checks: each answers (ok, detail) quickly.
    async def _postgres_ready(self) -> tuple[bool, str]:
        if self._pool is None:
            return False, "not connected yet"
        async with acquire(self._pool) as conn:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), 2)
        return (self._degraded is None, self._degraded or "ok")

    async def _kafka_ready(self) -> tuple[bool, str]:
        consumer = self._consumer
        if consumer is None:
            return False, "not started yet"
        await asyncio.wait_for(consumer._client.fetch_all_metadata(), 2)
        return True, f"{len(consumer.assignment())} partitions assigned"

    async def run(self) -> None:
        if self._http:
            self.health = HealthServer(
                self.settings.http_host,
                self.settings.http_port,
                {"postgres": self._postgres_ready, "kafka": self._kafka_ready},
            )
            await self.health.start()
            log.info("metrics and health on http://%s:%d", self.health.host, self.health.port)
        self._pool = pool = await _retry(lambda: create_pool(self.settings), self.stop)
        consumer = self._consumer = command_consumer(self.settings)
        consumer.subscribe([self.settings.commands_topic], listener=_Rebalance(self))
        await _retry(consumer.start, self.stop)
        tasks = [
            asyncio.create_task(self.relay.run(self.stop), name="relay"),
            asyncio.create_task(self._watch_backlog(pool), name="backlog"),
        ]
        self.scheduler = Scheduler(self.settings, pool, self.clock)
        tasks.append(asyncio.create_task(self.scheduler.run(self.stop), name="scheduler"))
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
                await self._update_lag(consumer)
        finally:
            # Graceful: the batch in flight was finished and committed above.
            self.stop.set()
            await self.commit_offsets()
            for task in tasks:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 10)
            await self.relay.close()
            with contextlib.suppress(Exception):
                await consumer.stop()  # leaves the group; nothing uncommitted is pending
            await pool.close()
            if self.health is not None:
                await self.health.stop()
            log.info(
                "stopped: %d records, %d applied, %d events",
                self.totals.records,
                self.totals.applied,
                self.totals.events,
            )


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
    service = Service(settings, http=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()
