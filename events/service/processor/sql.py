"""The statements of a batch: the one read of everything it needs, and the one write of
everything it decided."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import pydantic_core

from events.auth import hash_key
from events.envelope import DERIVED_PREFIX, RawCommand, Undecodable
from events.service.processor.decisions import Batch, Record
from events.service.processor.rows import Writes, timer_of
from events.service.tenancy import ApiKey, match_namespaces
from statemachine import SyncConfiguration

NOTIFY_CHANNEL: Final = "synclife_outbox"

_to_json = pydantic_core.to_json


# Everything a batch reads, in one statement and one snapshot, without locks: the presented
# keys, the namespaces their organizations have by the names asked for (a superset, matched in
# Python), the syncs, and which commands are done. What the batch decided from it is checked
# when it writes: each updated sync must still be at the version read (the version fence), a
# new sync's id and a processed command's id must still be free (unique keys). When two
# processes briefly own a partition (a rebalance, a zombie waking up), both may decide the same
# commands; the second write collides on the processed-command key or the fence, is rolled
# back, and the batch is retried (a conflict), reading the first one's results this time.
# Nothing is applied twice. The last row is the database's time: every process decides on the
# same clock (leases, timers, key expiry, updated_at), whatever its own clock says.
_LOAD: Final = """
    WITH k AS (
        SELECT key_id, internal_id, key_hash, scopes, namespaces, expires_at, revoked_at,
               user_id
        FROM api_keys WHERE key_hash = ANY($1::bytea[])
    ), s AS (
        SELECT sync_config_id, data FROM syncs WHERE sync_config_id = ANY($3::text[])
    )
    SELECT 'k' AS kind, key_id AS id, internal_id AS owner, user_id AS name, key_hash,
           scopes, namespaces, expires_at, revoked_at, NULL::text AS doc
    FROM k
    UNION ALL
    SELECT 'n', namespace_id, internal_id, name, NULL, NULL, NULL, NULL, NULL, NULL
    FROM namespaces
    WHERE internal_id IN (SELECT internal_id FROM k)
      AND (namespace_id = ANY($2::text[]) OR name = ANY($2::text[]))
    UNION ALL
    SELECT 's', sync_config_id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, data::text FROM s
    UNION ALL
    SELECT 'p', command_id, key_id, NULL, NULL, NULL, NULL, NULL, NULL, result
    FROM processed_commands WHERE command_id = ANY($4::text[])
    UNION ALL
    SELECT 'c', NULL, NULL, NULL, NULL, NULL, NULL, clock_timestamp(), NULL, NULL"""


def database_time(rows: Sequence[asyncpg.Record]) -> datetime:
    """The database's time, from the row ``_LOAD`` always returns for it."""
    for r in rows:
        if r["kind"] == "c":
            value: datetime = r["expires_at"]
            return value
    raise RuntimeError("the load returned no time")  # the statement always returns it


def settings_offset(batch: Batch) -> timedelta:
    return timedelta(seconds=batch.settings.clock_offset_seconds)


async def load(
    conn: asyncpg.Connection,
    batch: Batch,
    decoded: list[tuple[Record, RawCommand | Undecodable]],
    offset: timedelta | None = None,
) -> set[tuple[int, int]]:
    """Read everything the batch needs; returns the offsets newly dead-lettered.

    Sets the batch's time: the database's clock (``clock_timestamp()``, after the statement's
    snapshot was taken, so later than every change it read) plus ``offset`` (by default the
    setting ``clock_offset_seconds``)."""
    bad = [(r, d) for r, d in decoded if isinstance(d, Undecodable)]
    fresh: set[tuple[int, int]] = set()
    if bad:
        rows = await conn.fetch(
            """INSERT INTO dead_letters (source_topic, source_partition, source_offset, reason)
               SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::text[])
               ON CONFLICT DO NOTHING RETURNING source_partition, source_offset""",
            [r.topic for r, _ in bad],
            [r.partition for r, _ in bad],
            [r.offset for r, _ in bad],
            [d.reason for _, d in bad],
        )
        fresh = {(row["source_partition"], row["source_offset"]) for row in rows}

    commands = [d for _, d in decoded if isinstance(d, RawCommand)]
    by_hash = {hash_key(t): t for t in (batch.token(c.authorization) for c in commands) if t}
    sync_ids = sorted({c.sync_config_id for c in commands})
    # Only a decodable command's id can be a replay: an undecodable message is answered under
    # the id derived from its offset, whatever its ce_id says.
    command_ids = sorted({c.command_id for c in commands})
    refs = sorted({c.namespace for c in commands if c.namespace is not None})
    rows = await conn.fetch(_LOAD, list(by_hash), refs, sync_ids, command_ids)
    batch.now = database_time(rows) + (offset if offset is not None else settings_offset(batch))
    namespace_rows = _read(batch, rows, by_hash)
    wanted = set()
    for c in commands:
        token = batch.token(c.authorization)
        key = batch.keys.get(token) if token else None
        if key is not None and c.namespace is not None:
            wanted.add((key.internal_id, c.namespace))
    batch.namespaces = match_namespaces(namespace_rows, wanted)
    return fresh


async def load_sender(conn: asyncpg.Connection, batch: Batch, item: RawCommand) -> None:
    """Read only the sender's key and its command id's stored result (a poison record's
    dead letter: its sync, which may be what fails, is not read)."""
    token = batch.token(item.authorization)
    hashes = {hash_key(token): token} if token else {}
    rows = await conn.fetch(_LOAD, list(hashes), [], [], [item.command_id])
    batch.now = database_time(rows) + settings_offset(batch)
    _read(batch, rows, hashes)


def _read(
    batch: Batch, rows: Sequence[asyncpg.Record], by_hash: dict[bytes, str]
) -> list[tuple[str, str, str]]:
    """Put the rows of ``_LOAD`` into ``batch``; returns the namespace rows."""
    namespace_rows: list[tuple[str, str, str]] = []
    for r in rows:
        match r["kind"]:
            case "k":
                # The key's row carries its owner in ``name``.
                key = ApiKey.from_row(r, r["id"], r["owner"], r["name"])
                batch.keys[by_hash[bytes(r["key_hash"])]] = key
            case "n":
                namespace_rows.append((r["id"], r["owner"], r["name"]))
            case "s":
                sync = SyncConfiguration.model_validate_json(r["doc"])
                batch.syncs[r["id"]] = sync
                batch.loaded_versions[r["id"]] = sync.version
                batch.loaded_timers[r["id"]] = timer_of(sync)
            case "c":
                pass  # the database's time (``database_time``)
            case _:
                batch.processed[r["id"]] = (r["owner"], r["doc"].encode())
    return namespace_rows


def _sync_columns(sync: SyncConfiguration, data: str) -> tuple[Any, ...]:
    return (
        sync.sync_config_id,
        sync.internal_id,
        sync.namespace_id,
        sync.status.value,
        sync.version,
        sync.next_sync_at,
        sync.lock_expires_at,
        data,
        sync.updated_at,
    )


# Every write of a batch, in one statement: new syncs, changed syncs (fenced on the version
# read: the statement fails if one moved on), their history, the processed commands with their
# results (fenced too: a command id another writer recorded since the read fails the statement;
# an id derived from a message's offset is recorded once, its redelivery publishes the same
# result again), the keys the batch authenticated with (fenced on still being unrevoked: a
# revocation committed since the read fails the statement, and the batch is decided again),
# the outbox rows (headers packed in one text value), the timers that moved, the
# keys' last use, the jobs' rows (one per job, every effect of the batch merged; a finished
# job is never changed again), and one NOTIFY for the relay if the outbox grew. One prepared
# statement for every batch, whatever it holds. Rows of short values (an updated sync's
# columns but its document, the history, the processed commands' ids, the timers) travel as
# one JSON array of arrays each (serialized by pydantic-core: an asyncpg array costs about
# 0.35 us a value to encode, the JSON 0.08); the long values (documents, results, the outbox's
# keys, values and headers) as one bytea, each row naming its parts by offset and length
# (``_rows``). The outbox ids follow the order of the rows given.
_WRITE: Final = """
    WITH inserted AS (
        INSERT INTO syncs (sync_config_id, internal_id, namespace_id, status, version,
                           next_sync_at, lock_expires_at, data, updated_at)
        SELECT id, internal_id, namespace_id, status, version, next_sync_at,
               lock_expires_at, data::json, updated_at
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[],
                    $6::timestamptz[], $7::timestamptz[], $8::text[], $9::timestamptz[])
             AS u(id, internal_id, namespace_id, status, version, next_sync_at,
                  lock_expires_at, data, updated_at)
    ), updated AS (
        UPDATE syncs AS s SET status = u.r->>1, version = (u.r->>2)::int,
               next_sync_at = (u.r->>3)::timestamptz,
               lock_expires_at = (u.r->>4)::timestamptz,
               data = u.data::json, updated_at = (u.r->>5)::timestamptz
        FROM (SELECT r, convert_from(
                           substring($11::bytea FROM (r->>7)::int + 1 FOR (r->>8)::int), 'UTF8'
                       ) AS data
              FROM jsonb_array_elements($10::jsonb) AS r) AS u
        WHERE s.sync_config_id = u.r->>0 AND s.version = (u.r->>6)::int
        RETURNING 1
    ), history AS (
        INSERT INTO sync_history (sync_config_id, version, event_type, from_status, to_status,
                                  trigger, command_id, actor, reason, occurred_at)
        SELECT r->>0, (r->>1)::int, r->>2, r->>3, r->>4, r->>5, r->>6, r->>7, r->>8,
               (r->>9)::timestamptz
        FROM jsonb_array_elements($12::jsonb) AS r
    ), processed AS (
        INSERT INTO processed_commands (command_id, command_type, sync_config_id, key_id,
                                        outcome, result, processed_at)
        SELECT r->>0, r->>1, r->>2, r->>3, r->>4,
               convert_from(substring($11::bytea FROM (r->>6)::int + 1 FOR (r->>7)::int), 'UTF8'),
               (r->>5)::timestamptz
        FROM jsonb_array_elements($13::jsonb) AS r
        ON CONFLICT (command_id) DO NOTHING
        RETURNING command_id
    ), outbox AS (
        INSERT INTO outbox (topic, key, value, headers)
        SELECT r->>0, substring($11::bytea FROM (r->>1)::int + 1 FOR (r->>2)::int),
               substring($11::bytea FROM (r->>3)::int + 1 FOR (r->>4)::int),
               convert_from(substring($11::bytea FROM (r->>5)::int + 1 FOR (r->>6)::int), 'UTF8')
        FROM jsonb_array_elements($14::jsonb) WITH ORDINALITY AS j(r, n)
        ORDER BY n
        RETURNING 1
    ), timers AS (
        INSERT INTO sync_timers (sync_config_id, due_at)
        SELECT r->>0, (r->>1)::timestamptz FROM jsonb_array_elements($18::jsonb) AS r
        ON CONFLICT (sync_config_id) DO UPDATE SET due_at = EXCLUDED.due_at
    ), jobs AS (
        INSERT INTO sync_jobs AS j (sync_job_id, sync_config_id, internal_id, namespace_id,
                                    trigger, status, phase, full_sync, files_synced,
                                    files_failed, error, current_cursor, created_at,
                                    started_at, completed_at, updated_at)
        SELECT id, sync_config_id, internal_id, namespace_id, COALESCE(trigger, 'manual'),
               status, phase, full_sync, files_synced, files_failed, error, current_cursor,
               created_at, started_at, completed_at, updated_at
        FROM unnest($22::text[], $23::text[], $24::text[], $25::text[], $26::text[],
                    $27::text[], $28::text[], $29::boolean[], $30::bigint[], $31::bigint[],
                    $32::text[], $33::text[], $34::timestamptz[], $35::timestamptz[],
                    $36::timestamptz[], $37::timestamptz[])
             AS u(id, sync_config_id, internal_id, namespace_id, trigger, status, phase,
                  full_sync, files_synced, files_failed, error, current_cursor, created_at,
                  started_at, completed_at, updated_at)
        ON CONFLICT (sync_job_id) DO UPDATE
        SET status = EXCLUDED.status, phase = EXCLUDED.phase,
            -- a run requested again while queued (a manual trigger, a resume) names the
            -- same job: its trigger is the newest request's; a start or progress keeps it
            trigger = CASE WHEN EXCLUDED.phase = 'queued' THEN EXCLUDED.trigger
                           ELSE j.trigger END,
            full_sync = j.full_sync OR EXCLUDED.full_sync,
            files_synced = EXCLUDED.files_synced, files_failed = EXCLUDED.files_failed,
            error = EXCLUDED.error, current_cursor = EXCLUDED.current_cursor,
            started_at = COALESCE(EXCLUDED.started_at, j.started_at),
            completed_at = EXCLUDED.completed_at, updated_at = EXCLUDED.updated_at
        WHERE j.phase IS NOT NULL
    ), touched AS (
        UPDATE api_keys SET last_used_at = now()
        WHERE key_id = ANY($15::text[])
          AND (last_used_at IS NULL OR last_used_at < now() - interval '60 seconds')
    )
    SELECT synclife_version_fence($17, (SELECT count(*) FROM updated)) AS updated,
           synclife_version_fence(
               $20, (SELECT count(*) FROM processed WHERE NOT starts_with(command_id, $21))
           ) AS processed,
           synclife_version_fence(
               cardinality($19::text[]),
               (SELECT count(*) FROM api_keys
                WHERE key_id = ANY($19::text[]) AND revoked_at IS NULL)
           ) AS keys,
           (SELECT count(*) FROM (SELECT pg_notify($16, '') FROM outbox LIMIT 1) AS n)
               AS notified"""


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as ``width`` column lists (empty lists when there are no rows)."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(c) for c in zip(*rows, strict=True)]


def _json_rows(rows: Any) -> str:
    """Rows of short values as one JSON array of arrays (datetimes in RFC 3339)."""
    return _to_json(rows).decode()


def _rows(writes: Writes) -> tuple[bytes, list[Any], list[Any], list[Any]]:
    """The batch's long values (documents, results, the outbox's keys, values and headers) as
    one ``bytea``, and the updated syncs', processed commands' and outbox's rows naming their
    parts by offset and length: asyncpg encodes a 2 kB array element in about 4 us, one long
    value at about 0.7 us per 2 kB. A result is both a processed command's and an outbox
    row's: sent once."""
    parts: list[bytes] = []
    at = 0
    updated: list[Any] = []
    for sid, (prev, s) in writes.updates.items():
        data = writes.sync_json[sid].encode()
        parts.append(data)
        updated.append(
            (sid, s.status._value_, s.version, s.next_sync_at, s.lock_expires_at,
             s.updated_at, prev, at, len(data))
        )  # fmt: skip
        at += len(data)
    results: dict[int, tuple[int, int]] = {}  # id of a result -> its part (alive: no reuse)
    processed: list[Any] = []
    for command_id, kind, sync_id, key_id, outcome, result, when in writes.processed:
        data = result if type(result) is bytes else result.encode()
        parts.append(data)
        results[id(result)] = (at, len(data))
        processed.append((command_id, kind, sync_id, key_id, outcome, when, at, len(data)))
        at += len(data)
    outbox: list[Any] = []
    for topic, key, value, headers in writes.outbox:
        row: list[Any] = [topic]
        for part in (key, value):
            if part is None:
                row += (None, None)
                continue
            known = results.get(id(part))
            if known is None:
                parts.append(part)
                known = (at, len(part))
                at += len(part)
            row += known
        data = headers.encode()
        parts.append(data)
        row += (at, len(data))
        at += len(data)
        outbox.append(row)
    return b"".join(parts), updated, processed, outbox


async def write(conn: asyncpg.Connection, writes: Writes) -> None:
    """Write the batch's effects in one set-based statement."""
    inserts = _columns(
        [_sync_columns(s, writes.sync_json[sid]) for sid, s in writes.inserts.items()], 9
    )
    blob, updated, processed_rows, outbox_rows = _rows(writes)
    processed = writes.processed
    await conn.fetchrow(
        _WRITE,
        *inserts,
        _json_rows(updated),
        blob,
        _json_rows(writes.history),
        _json_rows(processed_rows),
        _json_rows(outbox_rows),
        sorted(writes.keys_used),
        NOTIFY_CHANNEL,
        len(writes.updates),
        _json_rows(list(writes.timers.items())),
        sorted(writes.live_keys),
        sum(1 for row in processed if not row[0].startswith(DERIVED_PREFIX)),
        DERIVED_PREFIX,
        *_columns(list(writes.jobs.values()), 16),
    )
