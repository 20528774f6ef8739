"""The bulk worker: one leader across every ``serve`` process (a session advisory lock, as the
scheduler's) takes the unanswered bulk commands in the order received and advances the oldest
one step at a time (``apply.advance``: each step one transaction), proving before each step
that it still leads. A new leader (the last one died, or was killed mid-operation) goes on
from the last committed step: the items record which syncs are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final

import asyncpg

from events.service.bulk.apply import Step, advance, next_request
from events.service.db import acquire, connect
from events.service.leader import acquire_leadership, keep_running, kept_alive, prove_leadership
from events.service.scheduler import SYSTEM_CLOCK, Clock, time_offset
from events.service.settings import Settings

__all__ = ["BULK_LOCK", "BUSY_WAIT", "BulkWorker"]

log = logging.getLogger("synclife.bulk")

BULK_LOCK: Final = 0x5F5C1220
#: Every pending sync of a step was being written by another transaction: wait this long.
BUSY_WAIT: Final = 0.05


class BulkWorker:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        clock: Clock = SYSTEM_CLOCK,
        *,
        lock: int = BULK_LOCK,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.lock = lock
        self.is_leader = False
        self.steps = 0
        self.answered = 0

    async def step(self, leader: asyncpg.Connection | None = None) -> Step | None:
        """One step of the oldest unanswered bulk command (None: there is none)."""
        if leader is not None:
            await prove_leadership(leader)
        async with acquire(self.pool) as conn:
            request = await next_request(conn)
            if request is None:
                return None
            step = await advance(
                conn, self.settings, time_offset(self.settings, self.clock), request
            )
        self.steps += 1
        if step.done:
            self.answered += 1
        return step

    async def drain(self) -> int:
        """Every step until no bulk command is unanswered (tests); the steps taken."""
        taken = 0
        while (step := await self.step()) is not None:
            taken += 1
            if step.busy:
                await asyncio.sleep(BUSY_WAIT)
        return taken

    async def run(self, stop: asyncio.Event) -> None:
        await keep_running("bulk worker", self._lead, stop, log, self._step_down)

    def _step_down(self) -> None:
        self.is_leader = False

    async def _lead(self, stop: asyncio.Event) -> None:
        conn = await connect(self.settings, leader="bulk")
        try:
            if not await acquire_leadership(
                conn, self.lock, stop, self.settings.scheduler_interval_seconds
            ):
                return
            self.is_leader = True
            log.info("bulk worker is the leader")
            async with kept_alive(conn):
                while not stop.is_set():
                    step = await self.step(conn)
                    if step is not None and not step.busy:
                        continue  # more to do at once
                    wait = (
                        BUSY_WAIT if step is not None else self.settings.bulk_poll_interval_seconds
                    )
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), wait)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)
