"""The outbox relay: publishes outbox rows to Kafka in id order, then deletes them.

One relay is active at a time (a session advisory lock on its own connection); the others
wait to take over. It wakes on ``NOTIFY`` and polls as a fallback, since a notification is
only a hint: it is lost if nobody listens at commit time.

Order: rows of one sync are written under that sync's row lock, so a later change of a sync
always has a larger id and commits later; reading every unpublished row in id order (never
"id > last seen") therefore keeps each sync's events in version order and skips nothing
committed out of sequence. Publishing is at-least-once: a crash between the send and the
delete resends rows with the same event ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer

from events.db import connect, is_transient
from events.kafka import idempotent_producer
from events.observability import RELAY_PUBLISH_SECONDS, RELAY_PUBLISHED
from events.processor import NOTIFY_CHANNEL
from events.settings import Settings

__all__ = ["RELAY_LOCK", "OutboxRelay"]

log = logging.getLogger("synclife.relay")

RELAY_LOCK: Final = 0x5F5C11FF


class OutboxRelay:
    """Run with ``await relay.run(stop)``; ``published`` counts rows sent since start."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer
        self._own_producer = producer is None
        self._wake = asyncio.Event()
        self.published = 0
        self.is_leader = False

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; reconnect with backoff on any transient failure."""
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._lead(stop)
                backoff = 0.2
            except Exception as exc:
                if not is_transient(exc) and not isinstance(exc, ConnectionError):
                    log.exception("relay failed; restarting")
                else:
                    log.warning("relay lost a connection (%s); retrying", type(exc).__name__)
                self.is_leader = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def _lead(self, stop: asyncio.Event) -> None:
        conn = await connect(self.settings)
        try:
            while not stop.is_set():
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)
            if stop.is_set():
                return
            self.is_leader = True
            log.info("relay is the leader")
            await conn.add_listener(NOTIFY_CHANNEL, self._notified)
            if self._producer is None:
                self._producer = idempotent_producer(self.settings)
                await self._producer.start()
            await self._drain_loop(conn, self._producer, stop)
            await self.drain(conn, self._producer)  # flush what the last batches wrote
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _drain_loop(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            self._wake.clear()
            sent = await self.drain(conn, producer)
            if sent:
                continue
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait(
                {waiter, stopper},
                timeout=self.settings.relay_poll_interval_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            waiter.cancel()
            stopper.cancel()

    async def drain(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """Publish one page of the outbox; returns how many rows went out."""
        rows = await conn.fetch(
            """SELECT id, topic, key, value, header_keys, header_values
               FROM outbox ORDER BY id LIMIT $1""",
            self.settings.relay_batch_size,
        )
        if not rows:
            return 0
        started = time.perf_counter()
        futures = []
        for r in rows:
            headers = list(
                zip(r["header_keys"], [bytes(v) for v in r["header_values"]], strict=True)
            )
            futures.append(
                await producer.send(
                    r["topic"],
                    value=bytes(r["value"]) if r["value"] is not None else None,
                    key=bytes(r["key"]) if r["key"] is not None else None,
                    headers=headers,
                )
            )
        await asyncio.gather(*futures)
        RELAY_PUBLISH_SECONDS.observe(time.perf_counter() - started)
        RELAY_PUBLISHED.inc(len(rows))
        await conn.execute(
            "DELETE FROM outbox WHERE id = ANY($1::bigint[])", [r["id"] for r in rows]
        )
        self.published += len(rows)
        return len(rows)

    async def close(self) -> None:
        if self._own_producer and self._producer is not None:
            await self._producer.stop()
            self._producer = None
