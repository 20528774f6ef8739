"""The scheduler: requests runs that are due, takes back expired leases and ends timed
pauses (the holds whose ``until`` passed, released as one versioned change per sync, actor
``system``, trigger ``pause_expired``; the sync resumes when no hold is left).

Each is a sync's timer (``processor.rows.timer_of``: the earliest of its holds' ``until``, its
lease's expiry, its next poll): a pass decides every sync whose timer is due on its locked
row, so a change is made once, and a pass after a restart finds it done.

One scheduler is active across all ``serve`` processes: it holds a session advisory lock on a
connection of its own. If its process dies the connection closes, the lock is released, and
another process's scheduler takes over at its next attempt (every ``scheduler_interval``).

Time is the database's: a pass compares the timers with the time of its own statement
(``processor.apply_system``), never with this process's clock. A pass is bounded (pages of
``scheduler_batch_size`` rows, for at most ``PASS_SECONDS``), and the leader proves it still
holds the lock (a statement on its session) before each page, while a keep-alive speaks on
that session during the page (events/service/leader.py). A row that cannot be decided is
skipped, counted and logged, and looked at again later; the others proceed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Final, Protocol

import asyncpg
from prometheus_client import Counter

from events.service.db import acquire, connect
from events.service.leader import acquire_leadership, keep_running, kept_alive, prove_leadership
from events.service.observability import SYSTEM_CHANGES
from events.service.processor import BatchStats, apply_system
from events.service.settings import Settings

__all__ = [
    "PASS_SECONDS",
    "SCHEDULER_LOCK",
    "SCHEDULER_PASSES",
    "SCHEDULER_ROWS_SKIPPED",
    "SYSTEM_CLOCK",
    "Clock",
    "Scheduler",
    "time_offset",
    "utcnow",
]

log = logging.getLogger("synclife.scheduler")

SCHEDULER_LOCK: Final = 0x5F5C1200
#: A pass stops taking pages after this long; the next one follows at once.
PASS_SECONDS: Final = 2.0
#: Rows of a pass that could not be decided, logged at most this many times per pass, with at
#: most ``MAX_LOGGED_CHARS`` of the stored id and of the error.
MAX_LOGGED_ROWS: Final = 5
MAX_LOGGED_CHARS: Final = 200

SCHEDULER_PASSES: Final = Counter(
    "synclife_scheduler_passes_total", "Complete scheduler passes (nothing due was left)."
)
SCHEDULER_ROWS_SKIPPED: Final = Counter(
    "synclife_scheduler_rows_skipped_total",
    "Syncs a scheduler pass could not decide (stored data that does not validate, a failing "
    "decision): skipped, their timer pushed back; the other syncs proceed.",
)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock(Protocol):
    """The service's time: the database's clock plus ``offset`` (with the setting
    ``clock_offset_seconds``). Tests move ``offset``; nothing decides on ``__call__``, this
    process's own clock plus the offset."""

    @property
    def offset(self) -> timedelta: ...

    def __call__(self) -> datetime: ...


class _SystemClock:
    offset: Final = timedelta(0)

    def __call__(self) -> datetime:
        return utcnow()


SYSTEM_CLOCK: Final[Clock] = _SystemClock()


def time_offset(settings: Settings, clock: Clock) -> timedelta:
    """What is added to the database's clock: the setting plus the clock's offset, now."""
    return timedelta(seconds=settings.clock_offset_seconds) + clock.offset


class Scheduler:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        clock: Clock = SYSTEM_CLOCK,
        *,
        lock: int = SCHEDULER_LOCK,
    ) -> None:
        self.settings = settings
        self.lock = lock  # the advisory lock its leader holds
        self.pool = pool
        self.clock = clock
        self.is_leader = False
        self.system_changes = 0
        self.passes = 0
        self.skipped = 0

    async def tick(self, leader: asyncpg.Connection | None = None) -> BatchStats:
        """One pass: everything due now, in pages, until nothing is left or ``PASS_SECONDS``
        passed. With ``leader`` (the leader's session), leadership is proven before each page.
        ``passes`` counts the passes that found nothing more to do."""
        total = BatchStats()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PASS_SECONDS
        logged = 0

        def skip(sync_config_id: str, exc: BaseException) -> None:
            nonlocal logged
            self.skipped += 1
            SCHEDULER_ROWS_SKIPPED.inc()
            logged += 1
            if logged <= MAX_LOGGED_ROWS:
                log.warning(
                    "scheduler skipped sync %s (%s: %s)",
                    sync_config_id[:MAX_LOGGED_CHARS],
                    type(exc).__name__,
                    str(exc)[:MAX_LOGGED_CHARS],
                )

        while True:
            if leader is not None:
                await prove_leadership(leader)
            async with acquire(self.pool) as conn:
                stats = await apply_system(
                    conn,
                    self.settings,
                    time_offset(self.settings, self.clock),
                    self.settings.scheduler_batch_size,
                    skip,
                )
            total.add(stats)
            for event_type, n in stats.event_types.items():
                SYSTEM_CHANGES.labels(event_type).inc(n)
            if stats.records < self.settings.scheduler_batch_size:
                self.passes += 1
                SCHEDULER_PASSES.inc()
                break
            if loop.time() >= deadline:
                break
        if logged > MAX_LOGGED_ROWS:
            log.warning("scheduler skipped %d syncs in this pass", logged)
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
                conn, self.lock, stop, self.settings.scheduler_interval_seconds
            ):
                return
            self.is_leader = True
            log.info("scheduler is the leader")
            # The keep-alive speaks on the session while a page runs on a pooled connection,
            # so Postgres never ends it as idle; if it fails, the page is cancelled.
            async with kept_alive(conn):
                while not stop.is_set():
                    passes = self.passes
                    stats = await self.tick(conn)
                    self.system_changes += stats.events
                    if self.passes == passes:
                        continue  # cut short by PASS_SECONDS: more is due
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(
                            stop.wait(), self.settings.scheduler_interval_seconds
                        )
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
