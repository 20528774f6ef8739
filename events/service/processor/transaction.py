"""Apply one batch of consumed commands atomically: one read, one write.

For a batch: decode every record; read, in one statement, what is already known (processed
command ids, keys, namespaces, the syncs; undecodable records are first recorded as dead
letters), decide each command in offset order against the in-memory state, then write, in one
statement (its own transaction), the changed syncs (fenced on the version read), their
history, the processed command ids with their results, and the outbox rows. The caller commits
Kafka offsets only after this commits: a redelivered command finds its recorded result and
changes nothing.

This module holds the transactions (a batch, a scheduler pass, a poison record's dead letter);
the decisions are in ``decisions``, the read and the write in ``sql``, the serialization in
``rows``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg

from events.envelope import RawCommand, Undecodable, decode_command
from events.service.bulk.requests import write_requests
from events.service.faults import crash_point
from events.service.observability import log_context
from events.service.processor.decisions import Batch, BatchStats, Record
from events.service.processor.rows import timer_of
from events.service.processor.sql import (
    load,
    load_sender,
    write,
)
from events.service.settings import Settings
from statemachine import ErrorCode, SyncConfiguration, decide
from statemachine.commands import SystemTrigger
from statemachine.errors import bounded
from statemachine.runs import system_command

# ``write`` too: the batch calls it by this module's name, which the fence tests replace.
__all__ = ["UnreadableRecord", "apply_batch", "apply_system", "dead_letter_one", "write"]

log = logging.getLogger("synclife.processor")

#: A sync the scheduler could not decide is looked at again after this long, not every pass.
SKIPPED_ROW_RETRY: Final = timedelta(minutes=1)


@dataclass(slots=True)
class UnreadableRecord:
    """A record of the commands topic the Kafka client could not read: only where it is is
    known. It is dead-lettered empty and rejected under the id derived from its offset, as
    undecodable messages are.

    aiokafka's record reader decodes every header name as UTF-8 and raises on one that is not;
    it decodes each record of a record batch up to the one asked for, so the records after
    such a record in its batch cannot be read either (those of later batches can)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None
    headers: Sequence[tuple[str, bytes]] = ()


#: What an ``UnreadableRecord`` decodes to.
HEADERS_NOT_UTF8: Final = Undecodable(
    reason="headers_not_utf8",
    code=ErrorCode.VALIDATION_ERROR,
    message=(
        "the message's header names, or those of a message before it in its record batch, "
        "are not UTF-8 text: nothing of it could be read"
    ),
    command_id=None,
    sync_config_id=None,
)


def decode(record: Record, max_bytes: int) -> RawCommand | Undecodable:
    """``decode_command`` of a consumed record (never raises)."""
    if isinstance(record, UnreadableRecord):
        return HEADERS_NOT_UTF8
    return decode_command(record.key, record.value, record.headers, max_bytes)


async def apply_batch(
    conn: asyncpg.Connection,
    settings: Settings,
    records: Sequence[Record],
    offset: timedelta | None = None,
) -> BatchStats:
    """Decide and persist ``records`` (in their order) atomically on ``conn``, at the time of
    the database's clock plus ``offset`` (by default the setting ``clock_offset_seconds``),
    read by the batch's load statement.

    Two round trips: one read, one write. The write is one statement, so its own (implicit)
    transaction; it fails as a whole with a serialization failure (a conflict: the caller
    reads again and retries) if a sync it updates is no longer at the version read. A batch
    holding undecodable records records them as dead letters first, in an explicit
    transaction with the write, so that the dead letters and their messages commit together.
    """
    batch = Batch(settings, datetime.now(UTC))  # its time is the database's: see load
    decoded = [(r, decode(r, settings.max_message_bytes)) for r in records]
    batch.stats.records = len(records)
    if any(isinstance(item, Undecodable) for _, item in decoded):
        async with conn.transaction():
            await _decide_and_write(conn, batch, decoded, offset)
    else:
        await _decide_and_write(conn, batch, decoded, offset)
    return batch.stats


async def _decide_and_write(
    conn: asyncpg.Connection,
    batch: Batch,
    decoded: list[tuple[Record, RawCommand | Undecodable]],
    offset: timedelta | None,
) -> None:
    fresh = await load(conn, batch, decoded, offset)
    for record, item in decoded:
        with log_context(
            command_id=bounded(item.command_id) if item.command_id else None,
            sync_config_id=bounded(item.sync_config_id) if item.sync_config_id else None,
            partition=record.partition,
            offset=record.offset,
        ):
            if isinstance(item, Undecodable):
                batch.undecodable(record, item, (record.partition, record.offset) in fresh)
            else:
                batch.command(record, item)
    crash_point("apply.before_commit")  # decided, nothing committed
    if batch.writes.bulk_requests and not conn.is_in_transaction():
        async with conn.transaction():  # the bulk requests commit with the batch
            await write(conn, batch.writes)
            await write_requests(conn, batch.writes)
        return
    await write(conn, batch.writes)
    await write_requests(conn, batch.writes)


async def apply_system(
    conn: asyncpg.Connection,
    settings: Settings,
    offset: timedelta,
    limit: int,
    skip: Callable[[str, BaseException], None] | None = None,
) -> BatchStats:
    """One scheduler pass: request due runs and reap expired leases, in one transaction.

    Time is the database's: the statement's own time plus ``offset``. The candidates are the
    syncs whose timer is due; each is checked again on the locked row (a change committed since
    this statement's snapshot may have moved it: its timer is then set right, nothing else).
    ``SKIP LOCKED``: a sync being written is left for the next pass, never waited on. A row
    that does not validate or cannot be decided is given to ``skip`` (else logged) and its
    timer is pushed back by ``SKIPPED_ROW_RETRY``; the other rows proceed.
    """
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT s.sync_config_id, s.data, statement_timestamp() + $1::interval AS now
               FROM sync_timers AS t JOIN syncs AS s USING (sync_config_id)
               WHERE t.due_at <= statement_timestamp() + $1::interval
               ORDER BY t.due_at
               LIMIT $2 FOR UPDATE OF s SKIP LOCKED""",
            offset,
            limit,
        )
        now: datetime = rows[0]["now"] if rows else datetime.now(UTC)  # unused without rows
        batch = Batch(settings, now)
        for r in rows:
            sid = r["sync_config_id"]
            try:
                _system_decision(batch, SyncConfiguration.model_validate_json(r["data"]), now)
            except Exception as exc:  # noqa: BLE001 - one row never stops the others
                batch.writes.timers[sid] = now + SKIPPED_ROW_RETRY
                if skip is not None:
                    skip(sid, exc)
                else:
                    log.warning("scheduler skipped sync %s (%s)", sid[:200], type(exc).__name__)
        batch.stats.records = len(rows)
        await write(conn, batch.writes)
    return batch.stats


def _system_decision(batch: Batch, sync: SyncConfiguration, now: datetime) -> None:
    """What the scheduler does to one due sync (locked), into ``batch``."""
    sid = sync.sync_config_id
    batch.syncs[sid] = sync
    batch.loaded_versions[sid] = sync.version
    due = timer_of(sync)
    if due is None or due > now:
        batch.writes.timers[sid] = due
        return
    batch.loaded_timers[sid] = due
    # A change committed after this statement began can be what the lock returned: never
    # stamp a change earlier than the one it follows.
    at = max(now, sync.updated_at)
    # What is due, in order: holds whose pause ended (released as one change; the sync
    # resumes when none is left), then an expired lease or a due run.
    for _ in range(2):
        if any(h.until is not None and h.until <= at for h in sync.pause_holds):
            trigger = SystemTrigger.PAUSE_EXPIRED
        elif sync.lock_expires_at is not None and sync.lock_expires_at <= at:
            trigger = SystemTrigger.LOCK_EXPIRED
        elif sync.lock_expires_at is None:
            trigger = SystemTrigger.REQUEST_RUN
        else:
            break
        decision = decide(sync, system_command(sync, trigger), at, batch.policy)
        for change in decision.changes:
            batch._persist(None, change)
        final = decision.final
        if trigger is not SystemTrigger.PAUSE_EXPIRED or final is None or final is sync:
            break
        sync = final
        due = timer_of(sync)
        if due is None or due > at:
            break


async def dead_letter_one(
    conn: asyncpg.Connection, settings: Settings, record: Record, reason: str
) -> bool:
    """Dead-letter one record whose processing keeps failing (once per offset), with its one
    result: ``rejected``, code ``internal``, under its command id when an authenticated
    sender's decodable command (recorded as processed with the sender's key: a resend gets the
    same result and no effect), else under the id derived from its offset."""
    batch = Batch(settings, datetime.now(UTC))
    item = decode(record, settings.max_message_bytes)
    async with conn.transaction():
        inserted = await conn.fetchval(
            """INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING true""",
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        if inserted:
            if isinstance(item, RawCommand):
                await load_sender(conn, batch, item)
            batch.dead_letter(record, reason)
            batch.poisoned(record, item)
            await write(conn, batch.writes)
    return bool(inserted)
