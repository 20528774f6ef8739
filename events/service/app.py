"""``synclife serve``: the command consumer, the scheduler and the outbox relay, in one process.

Shutdown (SIGTERM or SIGINT): stop fetching, finish and commit the batches in flight, commit
their offsets, then leave the consumer group while the relay flushes, and exit 0, all within
``SHUTDOWN_SECONDS`` whatever is unavailable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from events.kafka import start_client
from events.service.consumer import FetchHold, command_consumer
from events.service.db import acquire, create_pool, is_conflict, is_transient
from events.service.lanes import FINAL_COMMIT_SECONDS, Lanes, Rebalance
from events.service.observability import (
    APPLY_SECONDS,
    BATCH_CONFLICTS,
    COMMANDS,
    DEAD_LETTERS,
    OUTBOX_BACKLOG,
    OUTBOX_OLDEST_SECONDS,
    HealthServer,
)
from events.service.processor import BatchStats, Record, apply_batch, dead_letter_one
from events.service.relay import OutboxRelay
from events.service.retention import Retention
from events.service.scheduler import SYSTEM_CLOCK, Clock, Scheduler, time_offset
from events.service.settings import Settings

__all__ = ["Service", "serve"]

log = logging.getLogger("synclife.service")

MAX_POISON_ATTEMPTS = 3
# SIGTERM to exit, at most (each step is bounded so that an unavailable Kafka or Postgres
# cannot hold the process): what is not finished is redelivered or left in the outbox.
SHUTDOWN_SECONDS = 15.0
MAX_CONFLICT_RETRIES = 20
IMMEDIATE_CONFLICT_RETRIES = 2  # then with backoff
BACKLOG_INTERVAL_SECONDS = 5.0


class Service(Lanes):
    """Consume commands, apply them batch by batch, schedule runs, relay the outbox.

    The lanes (``Lanes``) fetch and batch the commands and commit their offsets; this applies
    each batch (retried, its poison record isolated), and starts and stops everything."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock = SYSTEM_CLOCK,
        *,
        http: bool = False,
        schedule: bool = True,
    ) -> None:
        super().__init__(settings)
        self.clock = clock
        self.totals = BatchStats()
        self.relay = OutboxRelay(settings)
        self.scheduler: Scheduler | None = None
        self.retention = Retention(settings, clock)
        self.health: HealthServer | None = None
        self._http = http
        self._schedule = schedule
        self._pool: asyncpg.Pool | None = None
        self._degraded: str | None = None  # why the last batch is being retried, if it is
        self._background_stop = asyncio.Event()  # set once the consumer loop is done

    async def _apply(self, pool: asyncpg.Pool, records: Sequence[Record]) -> bool:
        """Apply a batch; on a persistent failure, isolate and dead-letter the poison record.

        False if the service is stopping while Postgres is unavailable: the batch is left
        uncommitted (its offsets too) for the next owner, so that SIGTERM is not unbounded.
        """
        backoff = 0.1
        attempts = 0
        conflicts = 0
        while True:
            started = time.perf_counter()
            try:
                async with acquire(pool) as conn:
                    stats = await apply_batch(
                        conn, self.settings, records, time_offset(self.settings, self.clock)
                    )
            except Exception as exc:
                if is_conflict(exc):
                    # A concurrent writer won a race (the scheduler changed a sync the batch
                    # read, or two owners of a partition during a rebalance): re-reading
                    # resolves it, at once the first times. Endless conflicts would be a bug.
                    conflicts += 1
                    BATCH_CONFLICTS.inc()
                    if conflicts <= IMMEDIATE_CONFLICT_RETRIES:
                        continue
                if is_transient(exc) and conflicts <= MAX_CONFLICT_RETRIES:
                    if self.stop.is_set():
                        log.warning("stopping: batch left for redelivery (%s)", type(exc).__name__)
                        return False
                    self._degraded = f"retrying a batch: {type(exc).__name__}"
                    log.warning("transient failure (%s); retrying batch", type(exc).__name__)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                attempts += 1
                if len(records) > 1:
                    log.exception("batch of %d failed; applying one by one", len(records))
                    for record in records:
                        if not await self._apply(pool, [record]):
                            return False
                    return True
                if attempts >= MAX_POISON_ATTEMPTS:
                    await self._poison(pool, records[0], attempts, exc)
                    return True
                await asyncio.sleep(backoff)
            else:
                self._degraded = None
                APPLY_SECONDS.observe(time.perf_counter() - started)
                self._count(stats)
                return True

    async def _shutdown(
        self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool, tasks: list[asyncio.Task[None]]
    ) -> None:
        """Commit offsets; then leave the group while the relay flushes; close. Bounded."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SHUTDOWN_SECONDS

        def left(at_most: float = SHUTDOWN_SECONDS) -> float:
            return max(0.1, min(at_most, deadline - loop.time()))

        async def final_commit() -> None:
            await self.commit_offsets()
            if self._committer is not None:
                await self._committer

        with contextlib.suppress(Exception):
            await asyncio.wait_for(final_commit(), left(FINAL_COMMIT_SECONDS))
        self._background_stop.set()  # the relay now flushes what the last batch wrote

        async def leave_group() -> None:
            # Leaving at once hands the partitions over without waiting for the session
            # timeout; nothing uncommitted is pending.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), left())

        async def finish(task: asyncio.Task[None]) -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, left())

        await asyncio.gather(leave_group(), *(finish(t) for t in tasks))
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.relay.close(), left())
        try:
            await asyncio.wait_for(pool.close(), left())
        except Exception:  # noqa: BLE001 - a connection that does not close is cut
            pool.terminate()
        if self.health is not None:
            await self.health.stop()

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
        try:
            self._pool = pool = await _retry(lambda: create_pool(self.settings), self.stop)
        except _Stopped:  # SIGTERM while Postgres was away: nothing to finish
            if self.health is not None:
                await self.health.stop()
            return
        consumer = self._consumer = command_consumer(self.settings)
        consumer.subscribe([self.settings.commands_topic], listener=Rebalance(self))
        try:
            # A refused login (KafkaAuthError) is not retried: it fails here, at once.
            await _retry(lambda: start_client(consumer, self.settings), self.stop)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await consumer.stop()
            await pool.close()
            if self.health is not None:
                await self.health.stop()
            if isinstance(exc, _Stopped):
                return
            raise
        self._hold = FetchHold(consumer)
        # The relay, scheduler and backlog watcher stop only after the consumer loop has
        # finished its last batch and committed its offsets: the relay then publishes what
        # that batch wrote (with the loop's own `stop`, it could quit before that commit).
        background = self._background_stop
        tasks = [
            asyncio.create_task(self.relay.run(background), name="relay"),
            asyncio.create_task(self._watch_backlog(pool), name="backlog"),
            asyncio.create_task(self.retention.run(background), name="retention"),
        ]
        self.scheduler = Scheduler(self.settings, pool, self.clock)
        if self._schedule:
            tasks.append(asyncio.create_task(self.scheduler.run(background), name="scheduler"))
        log.info(
            "serving %s as group %s", self.settings.commands_topic, self.settings.consumer_group
        )
        try:
            await self._consume(consumer, pool)
        finally:
            # Graceful: the batch in flight was finished and committed above.
            self.stop.set()
            await self._shutdown(consumer, pool, tasks)
            log.info(
                "stopped: %d records, %d applied, %d events",
                self.totals.records,
                self.totals.applied,
                self.totals.events,
            )


class _Stopped(Exception):
    """Stopped (SIGTERM) while waiting for a dependency to come up."""


async def _retry(start: Any, stop: asyncio.Event) -> Any:
    backoff = 0.2
    while True:
        try:
            return await start()
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, KafkaError)):
                raise
            if stop.is_set():
                raise _Stopped from exc
            log.warning("waiting for a dependency (%s)", type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    service = Service(settings, http=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()
