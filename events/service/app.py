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
from typing import Any, Final, Literal

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from events.errors import TransientError
from events.kafka import start_client
from events.service.bulk.worker import BulkWorker
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
    log_context,
)
from events.service.processor import BatchStats, Record, apply_batch, dead_letter_one
from events.service.relay import OutboxRelay
from events.service.retention import Retention
from events.service.retry import Backoff, Retrying
from events.service.runtime import tune_gc
from events.service.scheduler import SYSTEM_CLOCK, Clock, Scheduler, time_offset
from events.service.settings import Settings

__all__ = ["Service", "serve"]

log = logging.getLogger("synclife.service")

# SIGTERM to exit, at most (each step is bounded so that an unavailable Kafka or Postgres
# cannot hold the process): what is not finished is redelivered or left in the outbox.
SHUTDOWN_SECONDS = 15.0
BACKLOG_INTERVAL_SECONDS = 5.0

# The budgets of a batch's retries (``_attempt``); once one is spent the batch is applied in
# halves, and a single record is dead-lettered. Conflicts: retried twice at once, then with
# backoff, 20 retries in all. Timeouts (a statement cancelled by ``statement_timeout``, a lock
# not granted): tried twice. Other errors: a single record is tried 3 times, a batch is split
# at once. Postgres out of reach spends none of these: it is waited for until SIGTERM.
MAX_CONFLICT_RETRIES = 20
IMMEDIATE_CONFLICT_RETRIES = 2
MAX_TIMEOUT_ATTEMPTS = 2
MAX_POISON_ATTEMPTS = 3
BUDGETS: Final[dict[str, Backoff]] = {
    "conflict": Backoff(
        base=0.05, cap=2.0, attempts=MAX_CONFLICT_RETRIES + 1, immediate=IMMEDIATE_CONFLICT_RETRIES
    ),
    "timeout": Backoff(base=0.1, cap=2.0, attempts=MAX_TIMEOUT_ATTEMPTS),
    "error": Backoff(base=0.1, cap=2.0, attempts=MAX_POISON_ATTEMPTS),
}
SPLIT_AT_ONCE: Final = Backoff(attempts=1)
OUTAGE_BACKOFF: Final = Backoff(base=0.1, cap=5.0)  # until Postgres answers, or SIGTERM
START_BACKOFF: Final = Backoff(base=0.2, cap=5.0)  # start-up: until it answers, or SIGTERM
PROBE_SECONDS = 5.0  # before a timed-out batch is split: does Postgres answer SELECT 1?
_TIMEOUTS: Final = (
    asyncpg.exceptions.QueryCanceledError,
    asyncpg.exceptions.LockNotAvailableError,
    TimeoutError,  # the driver's command_timeout
)


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
        self.bulk: BulkWorker | None = None
        self.retention = Retention(settings, clock)
        self.health: HealthServer | None = None
        self._http = http
        self._schedule = schedule
        self._pool: asyncpg.Pool | None = None
        self._degraded: str | None = None  # why the last batch is being retried, if it is
        self._background_stop = asyncio.Event()  # set once the consumer loop is done

    async def _apply(self, pool: asyncpg.Pool, records: Sequence[Record]) -> bool:
        """Apply a batch, retried within bounds; split one that keeps failing into halves,
        down to single records, and dead-letter a single record that still fails.

        False if the service is stopping before the batch is applied: the batch is left
        uncommitted (its offsets too) for the next owner, so that SIGTERM is not unbounded.
        """
        # The batch's own log lines carry where it starts (its partition when it has one).
        partitions = {r.partition for r in records}
        where = {"partition": records[0].partition} if len(partitions) == 1 else {}
        with log_context(**where, offset=records[0].offset):
            return await self._apply_bounded(pool, records)

    async def _apply_bounded(self, pool: asyncpg.Pool, records: Sequence[Record]) -> bool:
        failure = await self._attempt(pool, records)
        if failure is None:
            return True
        if isinstance(failure, _Stopped):
            return False
        if len(records) > 1:
            # Halves, in order: the records of a partition still apply in offset order.
            log.warning(
                "batch of %d keeps failing (%s); applying it in halves",
                len(records),
                _name(failure),
            )
            half = len(records) // 2
            return await self._apply(pool, records[:half]) and await self._apply(
                pool, records[half:]
            )
        return await self._poison(pool, records[0], failure)

    async def _attempt(
        self, pool: asyncpg.Pool, records: Sequence[Record]
    ) -> BaseException | _Stopped | None:
        """Apply ``records`` in one transaction: None once applied, the last error once its
        budget is spent, ``_Stopped`` if the service stops first.

        Postgres out of reach is waited for (until SIGTERM) and spends no budget: it is not
        the batch's fault. A conflict, a timeout (a statement cancelled, a lock not granted)
        or another error spends its own budget (``BUDGETS``).
        """
        outage = Retrying(OUTAGE_BACKOFF, self.stop)
        budgets = {kind: Retrying(backoff, self.stop) for kind, backoff in BUDGETS.items()}
        if len(records) > 1:
            # A batch that fails otherwise, or times out, is split at once: a timeout retried at
            # every level of the split would hold the lane for minutes per slow command (past
            # the consumer's max.poll.interval, and the next owner would start over).
            budgets["error"] = Retrying(SPLIT_AT_ONCE, self.stop)
            budgets["timeout"] = Retrying(SPLIT_AT_ONCE, self.stop)
        while True:
            started = time.perf_counter()
            try:
                async with acquire(pool) as conn:
                    stats = await apply_batch(
                        conn, self.settings, records, time_offset(self.settings, self.clock)
                    )
            except Exception as exc:
                kind = _kind(exc)
                if kind == "conflict":
                    # A concurrent writer won a race (the scheduler changed a sync the batch
                    # read, or two owners of a partition during a rebalance): re-reading
                    # resolves it, at once the first times. Endless conflicts would be a bug.
                    BATCH_CONFLICTS.inc()
                if kind == "outage" or (kind == "timeout" and not await _answers(pool)):
                    # Postgres is away (or too slow even for SELECT 1): wait for it.
                    self._degraded = f"retrying a batch: {_name(exc)}"
                    log.warning("Postgres unavailable (%s); retrying batch", _name(exc))
                    if not await outage.wait():
                        log.warning("stopping: batch left for redelivery (%s)", _name(exc))
                        return _Stopped()
                    continue
                outage.reset()
                budget = budgets[kind]
                if kind != "error" or len(records) == 1:
                    self._degraded = f"retrying a batch: {_name(exc)}"
                if kind == "error":
                    log.exception("batch of %d failed", len(records))
                elif budget.failures >= IMMEDIATE_CONFLICT_RETRIES or kind != "conflict":
                    log.warning("%s (%s); retrying batch", kind, _name(exc))
                if await budget.wait():
                    continue
                if budget.stopped:
                    log.warning("stopping: batch left for redelivery (%s)", _name(exc))
                    return _Stopped()
                return exc
            else:
                self._degraded = None
                APPLY_SECONDS.observe(time.perf_counter() - started)
                self._count(stats)
                return None

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
            if self._committer is not None:  # a rebalance may have cancelled it: no error
                await asyncio.wait([self._committer])

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

    async def _poison(self, pool: asyncpg.Pool, record: Record, exc: BaseException) -> bool:
        """Dead-letter a record that failed within all its retries (the processor writes its
        result); False if stopping while Postgres is away (the record is redelivered)."""
        with log_context(partition=record.partition, offset=record.offset):
            return await self._dead_letter(pool, record, exc)

    async def _dead_letter(self, pool: asyncpg.Pool, record: Record, exc: BaseException) -> bool:
        log.error(
            "record %s[%d]@%d keeps failing (%s); dead-lettering it",
            record.topic,
            record.partition,
            record.offset,
            _name(exc),
        )
        reason = f"processing_failed: {_name(exc)}"
        outage = Retrying(OUTAGE_BACKOFF, self.stop)
        while True:
            try:
                async with acquire(pool) as conn:
                    await dead_letter_one(conn, self.settings, record, reason)
            except Exception as failure:
                if not is_transient(failure):
                    raise  # a bug: the lane stops, and the record is redelivered
                log.warning("dead-lettering failed (%s); retrying", _name(failure))
                if not await outage.wait():
                    return False
            else:
                break
        self._degraded = None
        self.totals.dead_lettered += 1
        DEAD_LETTERS.inc()
        return True

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
        self.bulk = BulkWorker(self.settings, pool, self.clock)
        if self._schedule:
            tasks.append(asyncio.create_task(self.scheduler.run(background), name="scheduler"))
            tasks.append(asyncio.create_task(self.bulk.run(background), name="bulk"))
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
    """Stopped (SIGTERM) while waiting for a dependency, or before a batch was applied."""


async def _retry(start: Any, stop: asyncio.Event) -> Any:
    """Start a dependency, waiting for it (jittered, capped waits) until it answers or
    SIGTERM: at start-up there is nothing else to do, and giving up would only make a
    supervisor restart the process to wait again."""
    waiting = Retrying(START_BACKOFF, stop)
    while True:
        try:
            return await start()
        except Exception as exc:
            if not (is_transient(exc) or isinstance(exc, KafkaError)):
                raise
            log.warning("waiting for a dependency (%s)", type(exc).__name__)
            if not await waiting.wait():
                raise _Stopped from exc


FailureKind = Literal["conflict", "timeout", "outage", "error"]


def _kind(exc: BaseException) -> FailureKind:
    """What a batch's failure says: a race lost (conflict), work too slow (timeout), Postgres
    out of reach (outage; ``acquire`` raises these as ``TransientError`` from the driver's
    error), or anything else (error)."""
    if is_conflict(exc):
        return "conflict"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, _TIMEOUTS):
            return "timeout"
        cause = cause.__cause__
    return "outage" if is_transient(exc) else "error"


def _name(exc: BaseException) -> str:
    """The error's type, or its cause's for one that ``acquire`` wrapped."""
    if isinstance(exc, TransientError) and exc.__cause__ is not None:
        return type(exc.__cause__).__name__
    return type(exc).__name__


async def _answers(pool: asyncpg.Pool) -> bool:
    """Does Postgres answer a trivial query quickly? (Then a timeout is the batch's own.)"""
    try:
        async with acquire(pool) as conn:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), PROBE_SECONDS)
    except Exception:  # noqa: BLE001 - any failure means: not now
        return False
    return True


async def serve(settings: Settings) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    tune_gc()
    service = Service(settings, http=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, service.stop.set)
    await service.run()
