"""The outbox relay: publishes outbox rows to Kafka in id order, then deletes them.

One relay is active at a time (a session advisory lock on its own connection); the others
wait to take over. It wakes on ``NOTIFY`` and polls as a fallback, since a notification is
only a hint: it is lost if nobody listens at commit time.

Order: a change of a sync is written only by a statement that read the previous change committed
(the version fence), so a later change of a sync always has a larger id and commits later; reading
every unpublished row in id order (never "id > last seen") therefore keeps each sync's events in
version order and skips nothing committed out of sequence. Publishing is at-least-once: a crash
between the send and the delete resends rows with the same event ids.

Where a read starts: not at the outbox's first id. A queue table's front is where its deleted rows
are until vacuum removes them, and a read in id order went through every one of them. Each row
records the transaction that wrote it (``xid``); a row that a snapshot does not see belongs to a
transaction at or above that snapshot's xmin (older ones had all ended). So once a read has
returned every unpublished row its snapshot saw (its page was not full), the next read only needs
``xid >= that xmin``: the rows committed since, and the few before them that committed after that
xmin. A new leader reads everything, in id order, and so does a read after a full page (a backlog:
the rows are there to be read anyway).

Pipelined: while one page is on its way to Kafka, the next is read (excluding the rows in
flight) and queued behind it, so the database read overlaps the wait for Kafka's
acknowledgement. The producer sends a partition's batches in the order they were queued,
one request at a time, so the pages still reach each partition in id order.

A row Kafka refuses for good is parked, and the rows behind it go on (events/service/parking.py,
docs/design.md). A producer whose batch failed is replaced before anything is sent again: an
idempotent producer numbers a partition's batches after the failed one, which the broker never
took, so it would refuse them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2

from events.kafka import max_request_size, started_producer, stop_producer
from events.service.db import connect
from events.service.faults import crash_point
from events.service.leader import acquire_leadership, keep_running, kept_alive
from events.service.observability import RELAY_PUBLISH_SECONDS, RELAY_PUBLISHED
from events.service.packed_headers import unpack_headers
from events.service.parking import Parking, refusal, too_large
from events.service.processor import NOTIFY_CHANNEL
from events.service.settings import Settings

__all__ = ["RELAY_LOCK", "OutboxRelay", "configure_session"]

log = logging.getLogger("synclife.relay")

RELAY_LOCK: Final = 0x5F5C11FF
FLUSH_SECONDS: Final = 5.0
PAGES_IN_FLIGHT: Final = 2  # sent and not yet acknowledged, at most
# Delete what was published ($2) and read the next page, in id order, without the rows in
# flight ($3), in one statement. The statement's snapshot still has the rows it deletes, so
# both lists are excluded, with `NOT IN (subquery)`: Postgres hashes the subquery's ids once
# (a "hashed SubPlan"), where `id <> ALL($2)` compared every row scanned with every id listed
# (up to three pages' worth each: a third of Postgres's time at full load went there). The
# statement returns its snapshot's xmin, the next horizon, on a row of its own when the page
# is empty.
_READ: Final = """
    WITH published AS (DELETE FROM outbox WHERE id = ANY($2::bigint[])){recent}
    SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint AS horizon, page.*
    FROM (VALUES (1)) AS one (x) LEFT JOIN LATERAL (
        SELECT id, topic, key, value, headers
        FROM {rows}
        WHERE id NOT IN (SELECT unnest($2::bigint[] || $3::bigint[]))
        ORDER BY id LIMIT $1
    ) AS page ON true"""
# Every row not yet read (the outbox in id order): a new leader's first read, and a backlog.
_NEXT_PAGE: Final = _READ.format(recent="", rows="outbox")
# Only the rows at or above the horizon ($4), through the xid index (see the module's
# docstring), then in id order. Both are needed for Postgres to take the index whatever it
# believes of the table: a queue's statistics say it holds a few rows (its dead ones are not
# counted), and then reading the primary key in order looks cheaper, which is the walk through
# the deleted rows this avoids; hence the rows since are gathered first (MATERIALIZED). And a
# range between two parameters ($5: the largest xid8) is estimated as narrow in the plan
# Postgres keeps for the statement, a lower bound alone as a third of the table.
_NEXT_PAGE_SINCE: Final = _READ.format(
    recent=""",
    recent AS MATERIALIZED (
        SELECT id, topic, key, value, headers
        FROM outbox
        WHERE xid BETWEEN $4::bigint::text::xid8 AND $5::bigint::text::xid8
    )""",
    rows="recent",
)
_XID8_MAX: Final = 2**63 - 1  # as a bigint: far beyond any transaction id
_PARTITIONER: Final = DefaultPartitioner()
_HASH_CACHE: Final = 10_000  # keys whose hash is remembered (then forgotten at once)


@dataclass(eq=False)
class _Page:
    """Rows queued on the producer; ``delivered`` completes once Kafka acknowledged them all."""

    ids: list[int]
    delivered: asyncio.Future[Any]
    started: float
    read: int = 0  # rows read for it, the parked ones included
    batches: list[tuple[asyncio.Future[Any], list[int]]] = field(default_factory=list)

    def acknowledged(self) -> list[int]:
        """The rows of the batches Kafka acknowledged (of a page it did not take whole)."""
        return [i for f, ids in self.batches if f.done() and _succeeded(f) for i in ids]


async def configure_session(conn: asyncpg.Connection) -> None:
    """The relay's own connection: its statements and how they are planned."""
    # Its statements only delete published rows: one lost in a Postgres crash is published
    # again (at-least-once, same ids), so they need not wait for the disk.
    await conn.execute("SET synchronous_commit = off")
    # The plan Postgres keeps for a statement is made once, and the outbox may be empty then
    # (vacuum truncates it): a sequential scan, kept while the table grows to thousands of
    # pages of deleted rows (6,300 buffers a read, seen). Every statement here has an index.
    await conn.execute("SET enable_seqscan = off")


class OutboxRelay:
    """Run with ``await relay.run(stop)``; ``published`` counts rows sent since start."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer | None = None) -> None:
        self.settings = settings
        self._producer = producer
        self._own_producer = producer is None
        self._wake = asyncio.Event()
        self.published = 0
        self.is_leader = False
        self._partitions: dict[str, list[int]] = {}
        self._published_ids: list[int] = []  # acknowledged by Kafka, not yet deleted
        self._hashes: dict[bytes, int] = {}  # a key's hash, for every topic (``_partition``)
        # Every unpublished row not in flight has an xid at or above it (module docstring).
        self._horizon = 0
        self._poisoned = False  # a batch of the producer failed: replace it before sending
        self._parking = Parking(settings.lifecycle_topic, log)

    @property
    def horizon(self) -> int:
        """The transaction id the next read starts from (0: the whole outbox)."""
        return self._horizon

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; reconnect with backoff on any transient failure."""
        await keep_running("relay", self._lead, stop, log, self._step_down)

    def _step_down(self) -> None:
        self.is_leader = False

    async def _lead(self, stop: asyncio.Event) -> None:
        # A leader's session: Postgres ends it if this process stops talking (SIGSTOP), which
        # releases the lock, so a zombie cannot keep the outbox from draining.
        conn = await connect(self.settings, leader="relay")
        try:
            if not await acquire_leadership(conn, RELAY_LOCK, stop):
                return
            self.is_leader = True
            log.info("relay is the leader")
            # Each read is a statement on the leader's session (it fails once the session is
            # gone); while the relay waits for Kafka, the keep-alive speaks on it, so Postgres
            # never ends it as idle and lets a second relay lead while this one still sends.
            async with kept_alive(conn):
                await configure_session(conn)
                self._horizon = 0  # a new term: what the last one read is not known for sure
                await conn.add_listener(NOTIFY_CHANNEL, self._notified)
                await self._parking.refresh(conn)
                await self._drain_loop(conn, await self._fresh_producer(), stop)
                await self._flush(conn, await self._fresh_producer())
                await self._delete_published(conn)
        finally:
            self.is_leader = False
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _drain_loop(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, stop: asyncio.Event
    ) -> None:
        pages: deque[_Page] = deque()
        # Read when there may be new rows: at the start, after a NOTIFY (a commit since the
        # last read began), after a full page, and every poll interval (a notification is
        # lost if nobody listened at commit time). The rows Kafka acknowledged meanwhile are
        # deleted by that read: no statement of its own.
        read = True
        try:
            while not stop.is_set():
                while pages and pages[0].delivered.done():
                    first = pages.popleft()
                    try:
                        self._delivered(first)  # raises if Kafka refused it
                    except Exception as exc:
                        self._partly_delivered(first)
                        await self._settle(pages)  # what was acknowledged is deleted
                        pages.clear()
                        if refusal(exc) is None:
                            raise  # transient: a new term, with a new producer
                        producer = await self._isolate(conn, first, exc)
                        read = True
                if read and len(pages) < PAGES_IN_FLIGHT:
                    self._wake.clear()
                    page = await self._send_page(conn, producer, pages)
                    full = page is not None and page.read >= self.settings.relay_batch_size
                    if page is not None:
                        pages.append(page)
                    read = full or self._wake.is_set()
                    if read:
                        continue
                # Wait for new rows (when there is room for a page), for the oldest page to
                # be acknowledged, or for stop.
                waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
                if len(pages) < PAGES_IN_FLIGHT:
                    waits.add(asyncio.ensure_future(self._wake.wait()))
                try:
                    done, _ = await asyncio.wait(
                        {*waits, *([pages[0].delivered] if pages else [])},
                        timeout=self.settings.relay_poll_interval_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    for waiter in waits:
                        waiter.cancel()
                read = read or not done or self._wake.is_set()
                if not done and self._parking.due():
                    await self._parking.refresh(conn)  # idle: count again (retries, other relays)
        finally:
            await self._settle(pages)

    async def _settle(self, pages: deque[_Page]) -> None:
        """On the way out, wait (bounded) for the pages in flight: those acknowledged are
        deleted (on the next read or by ``_delete_published``), the others resent later."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.gather(*(p.delivered for p in pages), return_exceptions=True),
                FLUSH_SECONDS,
            )
        for page in pages:
            if page.delivered.done() and _succeeded(page.delivered):
                self._delivered(page)
                continue
            self._partly_delivered(page)
            page.delivered.cancel()
            # Not sent: its rows may be below the horizon (later reads left them out as in
            # flight), so the flush that follows reads the whole outbox again.
            self._horizon = 0
            self._poisoned = True

    async def _flush(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> None:
        """On the way out, publish what the last batches wrote: every page, not only the
        first, for at most ``FLUSH_SECONDS`` (what is left waits for the next leader)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FLUSH_SECONDS
        while loop.time() < deadline:
            try:
                sent = await asyncio.wait_for(self.drain(conn, producer), deadline - loop.time())
            except TimeoutError:
                return
            if not sent:
                return

    async def drain(self, conn: asyncpg.Connection, producer: AIOKafkaProducer) -> int:
        """Publish one page of the outbox and wait for Kafka; returns how many rows went out."""
        page = await self._send_page(conn, producer, ())
        if page is None:
            return 0
        await page.delivered
        self._delivered(page)
        return len(page.ids)

    async def _send_page(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, in_flight: Iterable[_Page]
    ) -> _Page | None:
        """Read the next page of the outbox and queue it on the producer, or None if empty.

        The rows of the pages acknowledged since the last read are deleted by the statement
        that reads this page: one round trip, and the page excludes them (its snapshot still
        has them), as it excludes the rows in flight. A read that finds nothing new has
        deleted them too."""
        published, self._published_ids = self._published_ids, []
        size = self.settings.relay_batch_size
        flying = [i for page in in_flight for i in page.ids]
        try:
            if self._horizon:
                rows = await conn.fetch(
                    _NEXT_PAGE_SINCE, size, published, flying, self._horizon, _XID8_MAX
                )
            else:
                rows = await conn.fetch(_NEXT_PAGE, size, published, flying)
        except BaseException:
            self._published_ids = published  # not deleted: the next read deletes them
            raise
        empty = rows[0]["id"] is None  # the statement's one row, with the horizon alone
        # Not full: every unpublished row this snapshot saw is in the page, in flight or
        # deleted, so the next read can start at its xmin. Full: a backlog, read in id order.
        self._horizon = rows[0]["horizon"] if empty or len(rows) < size else 0
        if empty:
            return None
        started = time.perf_counter()
        sendable = await self._screen(conn, producer, rows)
        try:
            sent = await self._send(producer, sendable)
        except BaseException:
            self._poisoned = True  # some of its batches may be queued: not this producer again
            raise
        delivered = asyncio.gather(*(f for f, _ in sent))
        return _Page([r["id"] for r in sendable], delivered, started, len(rows), sent)

    def _delivered(self, page: _Page) -> None:
        """Kafka acknowledged ``page`` (or raise why not): its rows are deleted next."""
        try:
            page.delivered.result()
        except BaseException:
            self._poisoned = True
            raise
        if not page.ids:
            return  # every row of it was parked
        crash_point("relay.after_send")  # published, not deleted yet: resent, same ids
        RELAY_PUBLISH_SECONDS.observe(time.perf_counter() - page.started)
        RELAY_PUBLISHED.inc(len(page.ids))
        self._published_ids.extend(page.ids)
        self.published += len(page.ids)

    def _partly_delivered(self, page: _Page) -> None:
        """Of a page Kafka did not take whole, the batches it acknowledged: deleted next."""
        ids = page.acknowledged()
        RELAY_PUBLISHED.inc(len(ids))
        self._published_ids.extend(ids)
        self.published += len(ids)

    async def _delete_published(self, conn: asyncpg.Connection) -> None:
        """Delete the last pages' rows now (on the way out), not with the next read."""
        if self._published_ids:
            await conn.execute(
                "DELETE FROM outbox WHERE id = ANY($1::bigint[])", self._published_ids
            )
            self._published_ids = []

    async def _screen(
        self, conn: asyncpg.Connection, producer: AIOKafkaProducer, rows: list[asyncpg.Record]
    ) -> list[asyncpg.Record]:
        """The rows of a page to send; parked now: those held behind a parked row, and those
        Kafka would refuse for good (their topic's lookup did, or too large for a request)."""
        self._partitions.clear()  # read again per page: a topic may have grown
        sendable: list[asyncpg.Record] = []
        refused: list[tuple[asyncpg.Record, str]] = []
        held: list[asyncpg.Record] = []
        topics: dict[str, str | None] = {}  # each topic's refusal, None if it has none
        limit = max_request_size(self.settings)
        holding = self._parking.held  # empty unless a sync's event is parked
        for r in rows:
            if holding and self._parking.holds(r):
                held.append(r)
                continue
            topic = r["topic"]
            if topic not in topics:
                try:
                    await self._partition(producer, topic, None)
                    topics[topic] = None
                except Exception as exc:
                    if (reason := refusal(exc)) is None:
                        raise
                    topics[topic] = reason
            why = topics[topic] or ("too_large" if too_large(r, limit) else None)
            if why is None:
                sendable.append(r)
            else:
                refused.append((r, why))
                self._parking.refused(r)
        if refused or held:
            await self._parking.park(conn, refused, held)
            self._horizon = 0  # a held row may stay (its hold was retried): read it again
        return sendable

    async def _isolate(
        self, conn: asyncpg.Connection, failed: _Page, exc: BaseException
    ) -> AIOKafkaProducer:
        """Kafka refused a batch of ``failed`` for good, naming no row: send the front rows up
        to the page's last one at a time and park each one refused. Returns a new producer to
        go on with. The rows go one by one through a producer without idempotence, so that a
        refused one does not fail the ones after it."""
        acknowledged = set(failed.acknowledged())
        through = max(i for i in failed.ids if i not in acknowledged)
        log.warning(
            "Kafka refused a batch for good (%s): sending up to %d rows one at a time",
            type(exc).__name__,
            len(failed.ids) - len(acknowledged),
        )
        producer = await self._fresh_producer()
        probe = await started_producer(self.settings, enable_idempotence=False)
        size = self.settings.relay_batch_size
        try:
            while True:
                published, self._published_ids = self._published_ids, []
                try:
                    rows = await conn.fetch(_NEXT_PAGE, size, published, [])
                except BaseException:
                    self._published_ids = published
                    raise
                self._horizon = 0  # the next read starts from the front again
                page = [r for r in rows if r["id"] is not None and r["id"] <= through]
                for r in await self._screen(conn, producer, page):
                    if self._parking.holds(r):  # an earlier event of its sync was just refused
                        await self._parking.park(conn, [], [r])
                        continue
                    started = time.perf_counter()
                    try:
                        delivered = asyncio.gather(*(f for f, _ in await self._send(probe, [r])))
                        await delivered
                    except Exception as error:
                        if (why := refusal(error)) is None:
                            raise
                        self._parking.refused(r)
                        await self._parking.park(conn, [(r, why)], [])
                        continue
                    self._delivered(_Page([r["id"]], delivered, started))
                if len(page) < len(rows) or len(rows) < size or rows[0]["id"] is None:
                    return producer  # past the failed page, or the whole outbox was read
        finally:
            await stop_producer(probe, FLUSH_SECONDS)

    async def _fresh_producer(self) -> AIOKafkaProducer:
        """The producer to send with: a new one if the last one had a batch fail (that one is
        stopped, what it still holds failing). One given to the relay from outside is kept."""
        if self._poisoned and self._producer is not None and self._own_producer:
            old, self._producer = self._producer, None
            log.warning("relay replaces its Kafka producer after a failed batch")
            await stop_producer(old, FLUSH_SECONDS)
        self._poisoned = False
        if self._producer is None:
            self._producer = await started_producer(self.settings)
        return self._producer

    async def _send(
        self, producer: AIOKafkaProducer, rows: list[asyncpg.Record]
    ) -> list[tuple[asyncio.Future[Any], list[int]]]:
        """Queue ``rows`` (in id order) as one record batch per partition, or more when full:
        the partition ``producer.send`` would choose, in order within each partition, one
        delivery future per batch (not per row). Returns each batch's future and row ids."""
        batches: dict[tuple[str, int], tuple[Any, list[int]]] = {}
        sent: list[tuple[asyncio.Future[Any], list[int]]] = []
        known = self._partitions
        for r in rows:
            topic, key = r["topic"], r["key"]
            partitions = known.get(topic)  # ``_screen`` looked the page's topics up
            if partitions is not None and key is not None:
                partition = partitions[self._hash(key) % len(partitions)]
            else:
                partition = await self._partition(producer, topic, key)
            tp = (topic, partition)
            headers = unpack_headers(r["headers"])
            batch, ids = batches.get(tp) or batches.setdefault(tp, (producer.create_batch(), []))
            if batch.append(key=key, value=r["value"], timestamp=None, headers=headers) is None:
                # Full (and closed): send it, after the partition's earlier batches; next one.
                sent.append((await producer.send_batch(batch, topic, partition=partition), ids))
                batch, ids = batches[tp] = (producer.create_batch(), [])
                batch.append(key=key, value=r["value"], timestamp=None, headers=headers)
            ids.append(r["id"])
        for (topic, partition), (batch, ids) in batches.items():
            batch.close()  # complete: goes out at once instead of lingering (linger_ms)
            sent.append((await producer.send_batch(batch, topic, partition=partition), ids))
        return sent

    async def _partition(self, producer: AIOKafkaProducer, topic: str, key: bytes | None) -> int:
        partitions = self._partitions.get(topic)
        if partitions is None:
            partitions = self._partitions[topic] = sorted(await producer.partitions_for(topic))
        if key is None:
            return int(_PARTITIONER(None, partitions, partitions))
        return partitions[self._hash(key) % len(partitions)]

    def _hash(self, key: bytes) -> int:
        """``DefaultPartitioner``'s hash of ``key``, before a topic's modulo. Remembered for
        every topic: a command's result and its events share their sync's key."""
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= _HASH_CACHE:
                self._hashes.clear()
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed

    async def close(self) -> None:
        if self._own_producer and self._producer is not None:
            await self._producer.stop()
            self._producer = None


def _succeeded(future: asyncio.Future[Any]) -> bool:
    """A done future that has a result: neither cancelled nor failed."""
    return not future.cancelled() and future.exception() is None
