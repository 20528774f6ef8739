"""Outbox rows that Kafka refuses for good, parked so that the rows behind them go on.

The relay (``events.service.relay``) parks a row when Kafka refused it for a reason that
retrying will not change (``refusal``): the row moves to ``outbox_parked`` (migration 0008) in
the transaction that deletes it from the outbox. Lifecycle events carry gap-free versions, so
a parked lifecycle event holds its sync's later events on that topic: they are parked behind
it (reason ``held``) until a retry puts them all back. ``synclife outbox parked`` lists the
parked rows (``parked``), ``synclife outbox retry`` puts them back (``retry``) under their own
ids, so that the relay publishes them in their order.

Parking and retrying take one transaction-level advisory lock (``PARK_LOCK``): a row is parked
as held only while a row it waits behind is still parked, as that lock's holder sees it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final

import asyncpg
from aiokafka import errors
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from events.service.observability import OUTBOX_PARKED, RELAY_PARKED
from events.service.packed_headers import unpack_headers

__all__ = [
    "HELD",
    "PARK_LOCK",
    "Parking",
    "park",
    "parked",
    "parked_state",
    "refusal",
    "report",
    "retry",
    "too_large",
]

PARK_LOCK: Final = 0x5F5C1100
HELD: Final = "held"  # the reason of a row parked behind an earlier one of its sync
LOG_LINES: Final = 5  # rows named in the log per parking (then how many more)
REFRESH_SECONDS: Final = 10.0  # when idle, how often the relay counts the parked rows again

# Errors of aiokafka that refuse one record (or its topic) for good: sending it again, by this
# producer or another, fails the same way. Everything else (a broker away, no leader, a timeout,
# a fenced or poisoned producer) is transient: the relay starts over, with a new producer.
# UnknownTopicOrPartitionError is retriable for aiokafka, which retries it until its bound
# (``request_timeout_ms``) when looking a topic up; past that bound it is taken as final.
_REFUSALS: Final[tuple[tuple[type[BaseException], str], ...]] = (
    (errors.MessageSizeTooLargeError, "too_large"),
    (errors.RecordTooLargeError, "too_large"),
    (errors.RecordListTooLargeError, "too_large"),
    (errors.UnknownTopicOrPartitionError, "unknown_topic"),
    (errors.InvalidTopicError, "invalid_topic"),
    (errors.TopicAuthorizationFailedError, "topic_authorization"),
    (errors.CorruptRecordException, "corrupt_record"),
    (errors.InvalidTimestampError, "invalid_timestamp"),
    (errors.UnsupportedForMessageFormatError, "unsupported_format"),
    (errors.PolicyViolationError, "policy_violation"),
)
REASONS: Final = frozenset(reason for _, reason in _REFUSALS) | {HELD}


def refusal(exc: BaseException) -> str | None:
    """Why Kafka refuses a record for good (a short reason, the metric's label), or None when
    ``exc`` is transient or not about one record."""
    for kind, reason in _REFUSALS:
        if isinstance(exc, kind):
            return reason
    return None


def too_large(row: Any, limit: int) -> bool:
    """An outbox row larger than a request of the producer may be: aiokafka's own check of
    ``send``, which ``send_batch`` does not make (the broker would refuse the batch)."""
    key, value, headers = row["key"], row["value"], row["headers"]
    if len(key or b"") + len(value or b"") + len(headers) <= limit // 2:
        return False  # the common case, without unpacking the headers
    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, unpack_headers(headers))
    return bool(size > limit)


def report(parked: list[tuple[Any, str]], log: logging.Logger) -> None:
    """Count rows just parked (row, reason) by reason, and log the first few: id, reason,
    topic, key (at most 200 characters each) and size, never the value or the headers."""
    parked = sorted(parked, key=lambda p: int(p[0]["id"]))
    for n, (r, why) in enumerate(parked):
        RELAY_PARKED.labels(why).inc()
        if n < LOG_LINES:
            log.warning(
                "parked outbox row %d (%s): topic %s, key %s, %d bytes",
                r["id"],
                why,
                _shown(r["topic"].encode()),
                _shown(r["key"]),
                len(r["value"] or b"") + len(r["headers"]),
            )
    if len(parked) > LOG_LINES:
        log.warning("parked %d more outbox rows", len(parked) - LOG_LINES)


def _shown(text: bytes | None) -> str:
    return "-" if text is None else text.decode(errors="replace")[:200]


# Move the outbox rows $1 to outbox_parked with their reasons $2. A row whose reason is `held`
# moves only while a row of its topic and key is parked (the earliest is its `held_by`); run
# the refused rows first, then the held ones, in one transaction that holds PARK_LOCK.
_PARK: Final = """
    WITH chosen AS (
        SELECT o.id, p.reason,
               CASE WHEN p.reason = 'held' THEN (
                   SELECT min(q.id) FROM outbox_parked q WHERE q.topic = o.topic AND q.key = o.key
               ) END AS held_by
        FROM unnest($1::bigint[], $2::text[]) AS p (id, reason)
        JOIN outbox o ON o.id = p.id
    ), moved AS (
        DELETE FROM outbox o USING chosen c
        WHERE o.id = c.id AND (c.reason <> 'held' OR c.held_by IS NOT NULL)
        RETURNING o.id, o.topic, o.key, o.value, o.headers, o.created_at, o.attempts,
                  c.reason, c.held_by
    )
    INSERT INTO outbox_parked
        (id, topic, key, value, headers, created_at, reason, held_by, attempts)
    SELECT id, topic, key, value, headers, created_at, reason, held_by, attempts + 1 FROM moved
    RETURNING id"""

# What the relay keeps in mind: how many rows are parked, and the keys whose later rows on
# the topic $1 (the lifecycle topic) are held.
_STATE: Final = """
    SELECT (SELECT count(*) FROM outbox_parked) AS parked,
           ARRAY(SELECT DISTINCT key FROM outbox_parked WHERE topic = $1 AND key IS NOT NULL)
               AS held"""


async def park(
    conn: asyncpg.Connection, refused: Sequence[tuple[int, str]], held: Iterable[int]
) -> set[int]:
    """Park ``refused`` rows (id, reason), then the ``held`` rows whose hold still stands, in
    one transaction. Returns the ids moved: a held row not among them stays in the outbox."""
    moved: set[int] = set()
    held = list(held)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARK_LOCK)
        for ids, reasons in (
            ([i for i, _ in refused], [r for _, r in refused]),
            (held, [HELD] * len(held)),
        ):
            if ids:
                moved.update(r["id"] for r in await conn.fetch(_PARK, ids, reasons))
    return moved


async def parked_state(conn: asyncpg.Connection, lifecycle_topic: str) -> tuple[int, set[bytes]]:
    """How many rows are parked, and the keys whose later lifecycle events are held."""
    row = await conn.fetchrow(_STATE, lifecycle_topic)
    assert row is not None  # noqa: S101 - one row, always
    return int(row["parked"]), {bytes(k) for k in row["held"]}


class Parking:
    """What the relay knows of the parked rows: how many (the gauge) and the syncs whose
    lifecycle events (on ``lifecycle_topic``) wait behind a parked one."""

    def __init__(self, lifecycle_topic: str, log: logging.Logger) -> None:
        self.lifecycle_topic = lifecycle_topic
        self.held: set[bytes] = set()
        self.log = log
        self._counted = 0.0

    def holds(self, row: Any) -> bool:
        """A lifecycle event of a sync whose earlier event is parked: it waits behind it."""
        return bool(row["topic"] == self.lifecycle_topic and row["key"] in self.held)

    def refused(self, row: Any) -> None:
        """``row`` is refused for good: its sync's later lifecycle events wait behind it."""
        if row["topic"] == self.lifecycle_topic and row["key"] is not None:
            self.held.add(row["key"])

    def due(self) -> bool:
        return time.monotonic() - self._counted > REFRESH_SECONDS

    async def refresh(self, conn: asyncpg.Connection) -> None:
        """Count the parked rows (the gauge) and learn which syncs' events are held."""
        count, self.held = await parked_state(conn, self.lifecycle_topic)
        OUTBOX_PARKED.set(count)
        self._counted = time.monotonic()

    async def park(
        self, conn: asyncpg.Connection, refused: list[tuple[Any, str]], held: list[Any]
    ) -> None:
        """Park ``refused`` (row, reason) and ``held`` rows, count and log them. A held row
        whose hold was retried meanwhile stays in the outbox: the relay reads it again."""
        moved = await park(conn, [(r["id"], why) for r, why in refused], [r["id"] for r in held])
        report(
            [(r, why) for r, why in refused if r["id"] in moved]
            + [(r, HELD) for r in held if r["id"] in moved],
            self.log,
        )
        await self.refresh(conn)


async def parked(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """Every parked row in id order, as ``synclife outbox parked`` shows it: id, topic, key
    (at most 200 characters each), size, reason, held_by, parked_at, attempts; never the
    value or the headers."""
    rows = await conn.fetch(
        """SELECT id, topic, key, coalesce(octet_length(value), 0) + octet_length(headers)
                  AS size, reason, held_by, parked_at, attempts
           FROM outbox_parked ORDER BY id"""
    )
    return [
        {
            **r,
            "topic": _shown(r["topic"].encode()),
            "key": _shown(r["key"]),
            "parked_at": r["parked_at"].isoformat(),
        }
        for r in rows
    ]


async def retry(conn: asyncpg.Connection, ids: Sequence[int], everything: bool) -> list[int]:
    """Put parked rows back in the outbox under their own ids (so in their order), with every
    other parked row of the same topic and key, and wake the relay. Returns the ids put back."""
    from events.service.processor import NOTIFY_CHANNEL

    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARK_LOCK)
        rows = await conn.fetch(
            """WITH chosen AS (
                   SELECT DISTINCT topic, key FROM outbox_parked WHERE $2 OR id = ANY($1::bigint[])
               ), moved AS (
                   DELETE FROM outbox_parked p USING chosen c
                   WHERE p.topic = c.topic AND p.key IS NOT DISTINCT FROM c.key
                   RETURNING p.*
               )
               INSERT INTO outbox (id, topic, key, value, headers, created_at, attempts)
               SELECT id, topic, key, value, headers, created_at, attempts FROM moved
               ORDER BY id
               RETURNING id""",
            list(ids),
            everything,
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return sorted(r["id"] for r in rows)
