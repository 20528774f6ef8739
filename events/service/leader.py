"""One leader across every ``serve`` process: a session advisory lock on a connection of its own.

The relay and the scheduler each hold one. If the leader's process dies or stops (SIGSTOP), its
session ends (``idle_session_timeout`` on leader connections), Postgres releases the lock, and
another process takes over at its next attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from events.service.db import is_transient

__all__ = ["acquire_leadership", "keep_running"]


async def keep_running(
    name: str,
    attempt: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    log: logging.Logger,
    on_failure: Callable[[], None] = lambda: None,
) -> None:
    """Run ``attempt(stop)`` until ``stop`` is set, again after each failure, with backoff."""
    backoff = 0.2
    while not stop.is_set():
        try:
            await attempt(stop)
            backoff = 0.2
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, ConnectionError):
                log.warning("%s lost a connection (%s); retrying", name, type(exc).__name__)
            else:
                log.exception("%s failed; restarting", name)
            on_failure()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, 5.0)


async def acquire_leadership(
    conn: asyncpg.Connection, lock_id: int, stop: asyncio.Event, every: float = 1.0
) -> bool:
    """Wait until this session holds ``lock_id`` (True), or ``stop`` is set (False)."""
    while not stop.is_set():
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", lock_id):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
    return False
