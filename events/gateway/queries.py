"""The read routes' statements: Postgres only, always scoped to the key's organization
(``internal_id``) and namespace; a sync in another bucket than the path, or archived, is not
found. Each route is one statement (plus a count when ``include_total`` asks for it)."""

from __future__ import annotations

from typing import Final

__all__ = [
    "COUNT_JOBS",
    "COUNT_SYNCS",
    "HISTORY",
    "JOB",
    "JOBS",
    "LIST_SYNCS",
    "METRICS",
    "ONE_SYNC",
    "STALE",
]

#: A sync of the caller's, in the path's bucket, not archived ($1 id, $2 org, $3 namespace,
#: $4 bucket).
_MINE: Final = """
    sync_config_id = $1 AND internal_id = $2 AND namespace_id = $3
    AND bucket_id = $4 AND NOT archived"""

ONE_SYNC: Final = f"SELECT data::text AS data FROM syncs WHERE {_MINE}"  # noqa: S608 - constant

#: Whether the sync in ``data`` is stale at ``$now`` (``metrics.of``'s rule): continuous,
#: active, and no progress since its last sync for longer than max(2 x polling interval,
#: 120 s). A sync that never synced is not stale (no last sync to be stale against).
STALE: Final = """(
    status = 'ACTIVE'
    AND coalesce(data->>'sync_mode', 'continuous') = 'continuous'
    AND (data->>'last_sync_at') IS NOT NULL
    AND extract(epoch FROM {now} - (data->>'last_sync_at')::timestamptz)
        > greatest(2 * coalesce((data->>'polling_interval_seconds')::int, 300), 120))"""

# The filters of both lists (a null parameter filters nothing): $1 org, $2 namespace,
# $3 bucket, $4 connection, $5 status, $6 is_active, $7 provider, $8 paused, $9 is_stale,
# $10 the clock offset (time is the database's clock plus it). ``is_active`` and ``paused``
# are read from the status column: a document has them exactly when its status is ACTIVE,
# SUSPENDED (the model refuses any other), and a column costs nothing to read where a field
# of the document (json) is parsed out of it, about 7 us a row.
_FILTERS: Final = f"""
    internal_id = $1 AND namespace_id = $2 AND NOT archived
    AND ($3::text IS NULL OR bucket_id = $3)
    AND ($4::text IS NULL OR data->>'connection_id' = $4)
    AND ($5::text IS NULL OR status = $5)
    AND ($6::boolean IS NULL OR (status = 'ACTIVE') = $6)
    AND ($7::text IS NULL OR data->>'provider' = $7)
    AND ($8::boolean IS NULL OR (status = 'SUSPENDED') = $8)
    AND ($9::boolean IS NULL OR {STALE.format(now="(clock_timestamp() + $10::interval)")} = $9)"""

#: A page, newest first, after the keyset cursor ($11 created_at, $12 id) if any, then
#: $13 rows from $14.
LIST_SYNCS: Final = f"""
    SELECT data::text AS data, created_at AS created, sync_config_id
    FROM syncs
    WHERE {_FILTERS}
      AND ($11::timestamptz IS NULL
           OR (created_at, sync_config_id) < ($11::timestamptz, $12::text))
    ORDER BY created_at DESC, sync_config_id DESC
    LIMIT $13 OFFSET $14"""  # noqa: S608 - built from constants only

COUNT_SYNCS: Final = f"SELECT count(*) FROM syncs WHERE {_FILTERS}"  # noqa: S608 - constants

_JOB_COLUMNS: Final = """
    sync_job_id, sync_config_id, internal_id, namespace_id, status, phase, trigger, full_sync,
    files_synced, files_failed, started_at, completed_at, updated_at, error, current_cursor,
    metadata, created_at"""

#: A sync's jobs, newest first: ``found`` (the sync is the caller's) and the page as a JSON
#: array ($5 status, $6/$7 the keyset cursor, $8 rows from $9).
JOBS: Final = f"""
    WITH s AS (SELECT 1 FROM syncs WHERE {_MINE}),
    j AS (
        SELECT {_JOB_COLUMNS} FROM sync_jobs
        WHERE sync_config_id = $1 AND internal_id = $2 AND namespace_id = $3
          AND EXISTS (SELECT 1 FROM s)
          AND ($5::text IS NULL OR status = $5)
          AND ($6::timestamptz IS NULL
               OR (created_at, sync_job_id) < ($6::timestamptz, $7::text))
        ORDER BY created_at DESC, sync_job_id DESC
        LIMIT $8 OFFSET $9
    )
    SELECT EXISTS (SELECT 1 FROM s) AS found,
           (SELECT coalesce(json_agg(row_to_json(j) ORDER BY j.created_at DESC,
                                     j.sync_job_id DESC), '[]'::json)
            FROM j)::text AS jobs"""  # noqa: S608 - built from constants only

COUNT_JOBS: Final = """
    SELECT count(*) FROM sync_jobs
    WHERE sync_config_id = $1 AND internal_id = $2 AND namespace_id = $3
      AND ($4::text IS NULL OR status = $4)"""

#: One job of the caller's sync ($5 the job id).
JOB: Final = f"""
    SELECT row_to_json(j)::text AS job FROM (
        SELECT {_JOB_COLUMNS} FROM sync_jobs
        WHERE sync_job_id = $5 AND sync_config_id = $1 AND internal_id = $2
          AND namespace_id = $3 AND EXISTS (SELECT 1 FROM syncs WHERE {_MINE})
    ) AS j"""  # noqa: S608 - built from constants only

#: The sync, its newest job and the time ($5: the clock offset).
METRICS: Final = f"""
    SELECT s.data::text AS data, clock_timestamp() + $5::interval AS now,
           (SELECT row_to_json(j)::text FROM (
                SELECT {_JOB_COLUMNS} FROM sync_jobs
                WHERE sync_config_id = s.sync_config_id
                ORDER BY created_at DESC, sync_job_id DESC LIMIT 1) AS j) AS last_job
    FROM syncs s WHERE {_MINE}"""  # noqa: S608 - built from constants only

#: A sync's timeline, oldest first, only for the caller's sync.
HISTORY: Final = f"""
    SELECT EXISTS (SELECT 1 FROM syncs WHERE {_MINE}) AS found,
           (SELECT coalesce(json_agg(row_to_json(h) ORDER BY h.version), '[]'::json) FROM (
                SELECT version, event_type, from_status, to_status, trigger, command_id,
                       actor, reason, occurred_at
                FROM sync_history WHERE sync_config_id = $1
                  AND EXISTS (SELECT 1 FROM syncs WHERE {_MINE})
                ORDER BY version) AS h)::text AS history"""  # noqa: S608 - constants
