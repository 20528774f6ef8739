"""Waiting for command results on Postgres, one waiter per gateway process.

The processor stores each command's result in ``processed_commands`` in the transaction that
applies it, and that transaction NOTIFYs ``synclife_outbox`` at commit. A gateway does not read
the results topic (N gateways would each read every result): it LISTENs on a connection of its
own, and on each wake-up, or every ``gateway_poll_interval_ms`` while requests wait (NOTIFY is
only a wake-up: never replayed, lost while the connection is down), it asks for the results of
its own pending command ids only, in one statement, on the listening connection itself (no
pool to wait for, no request's statement to wait behind; the pool while it is down). Round
trips per waited result are counted (``synclife_gateway_result_queries_total`` over
``synclife_gateway_results_total``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import asyncpg
from prometheus_client import Counter

from events.service.db import acquire, connect
from events.service.processor.sql import NOTIFY_CHANNEL
from events.service.settings import Settings

__all__ = ["RESULTS", "RESULT_QUERIES", "Stored", "Waiter"]

log = logging.getLogger("synclife.gateway.waiter")

RESULT_QUERIES: Final = Counter(
    "synclife_gateway_result_queries_total",
    "Statements the gateway's waiter ran to find the results its requests wait for.",
)
RESULTS: Final = Counter(
    "synclife_gateway_results_total",
    "Results the gateway waited for, by how the wait ended (found, timeout).",
    ["ended"],
)
_WAKEUPS: Final = Counter(
    "synclife_gateway_wakeups_total", "NOTIFY wake-ups the gateway's waiter received."
)
_RECONNECT_SECONDS: Final = 1.0
#: A look-up on the listening connection that takes longer ends it (then a new one is made).
_LOOKUP_SECONDS: Final = 10.0

_PENDING_RESULTS: Final = """
    SELECT command_id, outcome, result::text AS result
    FROM processed_commands WHERE command_id = ANY($1::text[])"""


@dataclass(frozen=True, slots=True)
class Stored:
    """A command's stored result: its outcome and the ``CommandResult`` JSON."""

    command_id: str
    outcome: str
    result: str


class Waiter:
    """Futures of command ids, resolved from ``processed_commands``."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        self.settings = settings
        self.pool = pool
        self.queries = 0
        self.found = 0
        self._pending: dict[str, list[asyncio.Future[Stored]]] = {}
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listening(self) -> bool:
        conn = self._listener
        return conn is not None and not conn.is_closed()

    async def start(self) -> None:
        await self._listen()  # the first connection must work: a clear error at start-up
        self._tasks = [
            asyncio.create_task(self._resolve_loop(), name="gateway-waiter"),
            asyncio.create_task(self._keep_listening(), name="gateway-listener"),
        ]

    async def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._close_listener()
        for futures in self._pending.values():
            for future in futures:
                if not future.done():
                    future.cancel()
        self._pending.clear()

    async def wait(self, command_id: str, timeout: float) -> Stored | None:
        """The result of ``command_id`` (registered with ``expect`` before it was published),
        or None when it has not come within ``timeout`` seconds."""
        future = self.expect(command_id)
        try:
            return await self.result([future], timeout)
        finally:
            self.forget(command_id, future)

    def expect(self, command_id: str) -> asyncio.Future[Stored]:
        """Register interest in ``command_id`` (before publishing it: a result committed
        after this is found)."""
        future: asyncio.Future[Stored] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(command_id, []).append(future)
        return future

    async def result(self, futures: list[asyncio.Future[Stored]], timeout: float) -> Stored | None:
        """The first of ``futures`` resolved within ``timeout`` seconds, else None."""
        done, _ = await asyncio.wait(futures, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for future in done:
            if not future.cancelled():
                RESULTS.labels("found").inc()
                return future.result()
        RESULTS.labels("timeout").inc()
        return None

    def forget(self, command_id: str, future: asyncio.Future[Stored]) -> None:
        futures = self._pending.get(command_id)
        if futures is not None:
            with contextlib.suppress(ValueError):
                futures.remove(future)
            if not futures:
                del self._pending[command_id]
        if not future.done():
            future.cancel()

    async def _resolve_loop(self) -> None:
        interval = self.settings.gateway_poll_interval_ms / 1000
        while not self._stop.is_set():
            # A NOTIFY (a commit) wakes it at once; else it looks every interval while
            # requests wait (a NOTIFY lost while the listener was down is covered so).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            self._wake.clear()
            if self._stop.is_set() or not self._pending:
                continue
            try:
                rows = await self._fetch(list(self._pending))
            except Exception as exc:  # noqa: BLE001 - Postgres away: the next pass retries
                log.warning("looking for results failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(interval)
                continue
            self._resolve(rows)

    async def _fetch(self, command_ids: list[str]) -> Sequence[asyncpg.Record]:
        self.queries += 1
        RESULT_QUERIES.inc()
        listener = self._listener
        if listener is not None and not listener.is_closed():
            try:
                found: Sequence[asyncpg.Record] = await listener.fetch(
                    _PENDING_RESULTS, command_ids, timeout=_LOOKUP_SECONDS
                )
            except Exception:
                listener.terminate()  # a wedged or broken listener: _keep_listening renews it
                raise
            return found
        async with acquire(self.pool) as conn:
            rows: Sequence[asyncpg.Record] = await conn.fetch(_PENDING_RESULTS, command_ids)
        return rows

    def _resolve(self, rows: Sequence[asyncpg.Record]) -> None:
        for row in rows:
            stored = Stored(row["command_id"], row["outcome"], row["result"])
            for future in self._pending.pop(stored.command_id, []):
                if not future.done():
                    self.found += 1
                    future.set_result(stored)

    def _notified(self, *_: Any) -> None:
        _WAKEUPS.inc()
        if self._pending:
            self._wake.set()

    async def _listen(self) -> None:
        conn = await connect(self.settings)
        try:
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
        except BaseException:
            await conn.close()
            raise
        self._listener = conn
        self._wake.set()  # anything committed while no one listened

    async def _close_listener(self) -> None:
        conn, self._listener = self._listener, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def _keep_listening(self) -> None:
        """Reconnect the listening connection when it is lost; polling covers the gap."""
        while not self._stop.is_set():
            await asyncio.sleep(_RECONNECT_SECONDS)
            if self.listening:
                continue
            await self._close_listener()
            try:
                await self._listen()
            except Exception as exc:  # noqa: BLE001 - Postgres away: try again later
                log.warning("LISTEN failed (%s); polling meanwhile", type(exc).__name__)
