"""Retention: processed command ids past the dedupe window, and old history rows, deleted.

``processed_commands`` is the idempotency record: a command id found there is answered with its
stored result instead of being applied again. The contract promises that for the dedupe window
(``dedupe_window_days``, 7 by default); after it, an id may be forgotten, and a redelivery of it
is processed as a new command. ``sync_history`` keeps one row per version of every sync; rows
older than ``history_retention_days`` are deleted (0 keeps them all).

One process deletes, the leader (a session advisory lock, as the relay and the scheduler), every
``retention_interval_seconds``. It deletes in batches of ``retention_batch_size`` rows, oldest
first, each its own short statement that finds its rows through an index (migration 0009) and
locks nothing but the rows it deletes, which nothing else reads or writes any more. A processed
command is never deleted while its result may still be waiting in the outbox: while the outbox
holds a row written by its transaction or an earlier one (both tables record the writing
transaction's id, ``xid``), or while a row as old as it is parked (``outbox_parked``) or back
from the parking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

import asyncpg

from events.service.db import connect
from events.service.leader import (
    acquire_leadership,
    keep_running,
    keepalive_seconds,
    prove_leadership,
)
from events.service.scheduler import SYSTEM_CLOCK, Clock, time_offset
from events.service.settings import Settings

__all__ = ["RETENTION_LOCK", "Retention", "RetentionPass"]

log = logging.getLogger("synclife.retention")

RETENTION_LOCK: Final = 0x5F5C1210

# Each batch: the oldest rows before the cutoff (the database's clock plus $1: the service's time
# offset less the retention), found in the index, deleted by their ctid (the
# inner select and the delete share one snapshot, and these rows are never updated). A
# processed command is kept while the outbox holds a row of its transaction or an earlier one
# (``min(xid)``: one step of the outbox's xid index), and while a row written when it was
# processed or before is parked, or was put back from the parking (it keeps its ``created_at``
# but not its ``xid``): both on the database's clock, as ``processed_at``. Only parked results
# ($3, the results topic) count: a parked dead letter or event holds no stored result, and
# must not stop the cleaning of every id processed after it.
_PROCESSED: Final = """
    DELETE FROM processed_commands
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM processed_commands
        WHERE processed_at < now() + $1::interval
          AND xid < COALESCE((SELECT min(xid) FROM outbox), pg_current_xact_id())
          AND processed_at < COALESCE(
              LEAST((SELECT min(created_at) FROM outbox_parked WHERE topic = $3),
                    (SELECT min(created_at) FROM outbox WHERE attempts > 0 AND topic = $3)),
              'infinity')
        ORDER BY processed_at
        LIMIT $2))"""
_HISTORY: Final = """
    DELETE FROM sync_history
    WHERE ctid = ANY(ARRAY(
        SELECT ctid FROM sync_history
        WHERE occurred_at < now() + $1::interval
        ORDER BY occurred_at
        LIMIT $2))"""


@dataclass
class RetentionPass:
    """What one pass deleted: the rows of each statement, per table."""

    processed: list[int] = field(default_factory=list)
    history: list[int] = field(default_factory=list)

    @property
    def deleted(self) -> int:
        return sum(self.processed) + sum(self.history)


class Retention:
    def __init__(self, settings: Settings, clock: Clock = SYSTEM_CLOCK) -> None:
        self.settings = settings
        self.clock = clock
        self.is_leader = False
        self.passes = 0

    async def tick(
        self, conn: asyncpg.Connection, stop: asyncio.Event | None = None
    ) -> RetentionPass:
        """One pass on ``conn``: every row past its cutoff, a batch per statement, until a
        batch finds fewer rows than it may take (or ``stop`` is set)."""
        offset = time_offset(self.settings, self.clock)
        done = RetentionPass()
        dedupe = timedelta(days=self.settings.dedupe_window_days)
        await self._batches(
            conn, _PROCESSED, offset - dedupe, done.processed, stop, self.settings.results_topic
        )
        if self.settings.history_retention_days > 0:
            kept = timedelta(days=self.settings.history_retention_days)
            await self._batches(conn, _HISTORY, offset - kept, done.history, stop)
        self.passes += 1
        return done

    async def _batches(
        self,
        conn: asyncpg.Connection,
        sql: str,
        cutoff: timedelta,
        counts: list[int],
        stop: asyncio.Event | None,
        *more: object,
    ) -> None:
        size = self.settings.retention_batch_size
        while stop is None or not stop.is_set():
            status = await conn.execute(sql, cutoff, size, *more)
            deleted = int(status.rpartition(" ")[2])
            counts.append(deleted)
            if deleted < size:
                return

    async def run(self, stop: asyncio.Event) -> None:
        await keep_running("retention", self._lead, stop, log, self._step_down)

    def _step_down(self) -> None:
        self.is_leader = False

    async def _lead(self, stop: asyncio.Event) -> None:
        # The batches run on the leader's own session: a session Postgres ended (and so a lock
        # another process may hold now) fails the next statement instead of deleting on.
        conn = await connect(self.settings, leader="retention")
        try:
            interval = self.settings.retention_interval_seconds
            if not await acquire_leadership(
                conn, RETENTION_LOCK, stop, min(interval, keepalive_seconds())
            ):
                return
            self.is_leader = True
            log.info("retention is the leader")
            loop = asyncio.get_running_loop()
            while not stop.is_set():
                await prove_leadership(conn)
                done = await self.tick(conn, stop)
                if done.deleted:
                    log.info(
                        "retention deleted %d processed command ids and %d history rows",
                        sum(done.processed),
                        sum(done.history),
                    )
                next_pass = loop.time() + interval
                while not stop.is_set() and (left := next_pass - loop.time()) > 0:
                    # Spoken on often enough that Postgres does not end the session as idle.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), min(left, keepalive_seconds()))
                    await prove_leadership(conn)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
