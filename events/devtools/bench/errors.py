"""How the bench reports trouble and progress: its error, its progress lines, and retrying
the setup steps that a restart of Kafka or Postgres interrupts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import asyncpg
from aiokafka.errors import KafkaError

from events.devtools import stack
from events.errors import SynclifeError
from events.service.db import is_transient

__all__ = ["SETUP_WITHIN", "BenchError", "Echo", "retry"]

T = TypeVar("T")
Echo = Callable[[str], None]

SETUP_WITHIN: Final = 180.0  # seconds to wait for Kafka/Postgres during setup (a restart)


class BenchError(SynclifeError):
    """The benchmark could not run or a phase did not finish."""


async def retry(what: str, make: Callable[[], Awaitable[T]], echo: Echo) -> T:
    """Setup steps survive a Kafka or Postgres restart: retry for up to ``SETUP_WITHIN``."""
    deadline = time.monotonic() + SETUP_WITHIN
    delay = 0.5
    while True:
        try:
            return await make()
        except (KafkaError, OSError, SynclifeError, asyncpg.PostgresError) as exc:
            transient = isinstance(exc, KafkaError | OSError) or is_transient(exc)
            if not transient and not isinstance(exc, stack.StackError):
                raise
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: still failing after {SETUP_WITHIN:.0f}s: {exc}") from exc
            echo(f"  {what}: {type(exc).__name__}; retrying in {delay:.1f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
