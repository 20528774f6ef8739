"""The scheduler: requests runs that are due and takes back expired leases.

One scheduler is active across all ``serve`` processes: it holds a session advisory lock on a
connection of its own. If its process dies the connection closes, the lock is released, and
another process's scheduler takes over at its next attempt (every ``scheduler_interval``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

import asyncpg

from events.service.db import acquire, connect
from events.service.leader import acquire_leadership, keep_running
from events.service.observability import SYSTEM_CHANGES
from events.service.processor import BatchStats, apply_system
from events.service.settings import Settings

__all__ = ["SCHEDULER_LOCK", "Scheduler"]

log = logging.getLogger("synclife.scheduler")

SCHEDULER_LOCK: Final = 0x5F5C1200


def utcnow() -> datetime:
    return datetime.now(UTC)


class Scheduler:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.is_leader = False
        self.system_changes = 0
        self.passes = 0

    async def tick(self) -> BatchStats:
        """One pass: everything due now, in pages, until nothing is left."""
        total = BatchStats()
        while True:
            async with acquire(self.pool) as conn:
                stats = await apply_system(
                    conn, self.settings, self.clock(), self.settings.scheduler_batch_size
                )
            total.add(stats)
            for event_type, n in stats.event_types.items():
                SYSTEM_CHANGES.labels(event_type).inc(n)
            if stats.records < self.settings.scheduler_batch_size:
                self.passes += 1
                return total

    async def run(self, stop: asyncio.Event) -> None:
        await keep_running("scheduler", self._lead, stop, log, self._step_down)

    def _step_down(self) -> None:
        self.is_leader = False

    async def _lead(self, stop: asyncio.Event) -> None:
        # A leader's session: Postgres ends it if this process stops talking (SIGSTOP), which
        # releases the lock and lets another process's scheduler take over.
        conn = await connect(self.settings, leader="scheduler")
        try:
            if not await acquire_leadership(
                conn, SCHEDULER_LOCK, stop, self.settings.scheduler_interval_seconds
            ):
                return
            self.is_leader = True
            log.info("scheduler is the leader")
            while not stop.is_set():
                # Still connected, so still the lock holder; a lost connection raises here.
                await conn.fetchval("SELECT 1")
                stats = await self.tick()
                self.system_changes += stats.events
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.scheduler_interval_seconds)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
