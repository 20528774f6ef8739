"""One leader across every ``serve`` process: a session advisory lock on a connection of its own.

The relay and the scheduler each hold one. If the leader's process dies or stops (SIGSTOP), its
session ends (``idle_session_timeout`` on leader connections), Postgres releases the lock, and
another process takes over at its next attempt.

A leader that is merely busy must not lose its session that way: while it works (a scheduler
page on a pooled connection, the relay waiting for Kafka), ``kept_alive`` speaks on the session
every ``keepalive_seconds()`` (a third of the idle timeout); if that statement fails, the
session (and so the lock) is gone, and the work is cancelled (``LeadershipLost``). Before each
unit of work the leader proves it still leads with a statement on the session
(``prove_leadership``; the relay's reads are themselves statements on it). The statements of
the keep-alive and of the work take turns on the session (``db.LeaderConnection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from events.errors import TransientError
from events.service import db
from events.service.db import is_transient
from events.service.retry import Backoff, Retrying

__all__ = [
    "LeadershipLost",
    "acquire_leadership",
    "keep_running",
    "keepalive_seconds",
    "kept_alive",
    "prove_leadership",
]

#: Between two tries of a leader's work after a failure.
LEADER_BACKOFF = Backoff(base=0.2, cap=5.0)


class LeadershipLost(TransientError):
    """The leader's session ended (its lock with it): another process may lead now."""


def keepalive_seconds() -> float:
    """How often a working leader speaks on its session: a third of the idle timeout."""
    return db.LEADER_IDLE_TIMEOUT_SECONDS / 3


async def prove_leadership(conn: asyncpg.Connection) -> None:
    """A statement on the leader's session: it answers only while the session, and so its
    session advisory lock, lives. Raises ``LeadershipLost`` otherwise."""
    try:
        await asyncio.wait_for(conn.fetchval("SELECT 1"), keepalive_seconds())
    except Exception as exc:
        raise LeadershipLost(f"the leader's session is gone ({type(exc).__name__})") from exc


@contextlib.asynccontextmanager
async def kept_alive(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """While the block runs, a statement on ``conn`` every ``keepalive_seconds()``, so that
    Postgres never ends the session as idle while the leader works elsewhere. If one fails,
    the block is cancelled and raises ``LeadershipLost``: the leader stops working."""
    task = asyncio.current_task()
    assert task is not None  # noqa: S101 - always called from a task
    lost: list[BaseException] = []

    async def speak() -> None:
        every = keepalive_seconds()
        while True:
            await asyncio.sleep(every)
            if isinstance(conn, db.LeaderConnection) and conn.busy:
                continue  # a statement of the work is running: the session is not idle
            try:
                await prove_leadership(conn)
            except LeadershipLost as exc:
                lost.append(exc)
                task.cancel()
                return

    speaker = asyncio.create_task(speak(), name="leader-keepalive")
    try:
        yield
    except asyncio.CancelledError:
        if lost and task.uncancel() == 0:
            raise lost[0] from None
        raise
    else:
        if lost:  # the work finished as the session went: it may not have been the leader's
            task.uncancel()
            raise lost[0]
    finally:
        speaker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await speaker


async def keep_running(
    name: str,
    attempt: Callable[[asyncio.Event], Awaitable[None]],
    stop: asyncio.Event,
    log: logging.Logger,
    on_failure: Callable[[], None] = lambda: None,
) -> None:
    """Run ``attempt(stop)`` until ``stop`` is set, again after each failure, with jittered
    backoff (0.2 s doubling to 5 s; no limit: a leader's work is never given up)."""
    retrying = Retrying(LEADER_BACKOFF, stop)
    while not stop.is_set():
        try:
            await attempt(stop)
            retrying.reset()
        except Exception as exc:
            if is_transient(exc) or isinstance(exc, ConnectionError):
                log.warning("%s lost a connection (%s); retrying", name, type(exc).__name__)
            else:
                log.exception("%s failed; restarting", name)
            on_failure()
            await retrying.wait()


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
