"""Reads of bulk operations from Postgres: an operation's progress and counts (``synclife bulk
show``, ``GET /v1/sync-bulk/{operation_id}``), and how many syncs a selector matches now
(``POST /v1/sync-bulk/preview``)."""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from events.service.bulk.selector import count_matches
from statemachine.commands import BulkSelector

__all__ = ["operation_view", "preview"]

_COUNTS = ("applied", "noop", "rejected")


async def operation_view(
    conn: asyncpg.Connection,
    operation_id: str,
    internal_id: str | None = None,
    namespace_id: str | None = None,
) -> dict[str, Any] | None:
    """The operation as it stands (None: unknown, or not in the tenant and namespace given).

    ``status``: ``queued`` (its command is recorded, not started), ``running``, ``completed``,
    ``undoing``, ``undone``, or ``rejected`` (refused before anything changed: ``error``).
    ``progress`` counts the items per phase as they are now; ``counts`` and ``undo_counts``
    are the final ones."""
    row = await conn.fetchrow(
        """SELECT operation_id, internal_id, namespace_id, kind, selector::text AS selector,
                  status, counts::text AS counts, undo_counts::text AS undo_counts,
                  command_id, undo_command_id, created_at, finished_at, undone_at
           FROM bulk_operations WHERE operation_id = $1""",
        operation_id,
    )
    if row is None:
        return await _not_started(conn, operation_id, internal_id, namespace_id)
    if not _visible(row, internal_id, namespace_id):
        return None
    progress: dict[str, dict[str, int]] = {}
    for item in await conn.fetch(
        """SELECT phase, coalesce(outcome, 'pending') AS outcome, count(*) AS n
           FROM bulk_items WHERE operation_id = $1 GROUP BY 1, 2""",
        operation_id,
    ):
        phase = progress.setdefault(
            item["phase"], {"matched": 0, "pending": 0, **dict.fromkeys(_COUNTS, 0)}
        )
        phase[item["outcome"]] = item["n"]
        phase["matched"] += item["n"]
    return {
        "operation_id": row["operation_id"],
        "namespace_id": row["namespace_id"],
        "kind": row["kind"],
        "status": row["status"],
        "selector": json.loads(row["selector"]),
        "counts": json.loads(row["counts"]),
        "undo_counts": json.loads(row["undo_counts"]) if row["undo_counts"] else None,
        "progress": progress,
        "command_id": row["command_id"],
        "undo_command_id": row["undo_command_id"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "undone_at": row["undone_at"],
    }


def _visible(row: asyncpg.Record, internal_id: str | None, namespace_id: str | None) -> bool:
    return (internal_id is None or row["internal_id"] == internal_id) and (
        namespace_id is None or row["namespace_id"] == namespace_id
    )


async def _not_started(
    conn: asyncpg.Connection,
    operation_id: str,
    internal_id: str | None,
    namespace_id: str | None,
) -> dict[str, Any] | None:
    """An operation whose command is recorded but not started, or was refused."""
    row = await conn.fetchrow(
        """SELECT r.internal_id, r.namespace_id, r.command_type, r.command_id,
                  r.received_at, r.done_at, p.result
           FROM bulk_requests AS r LEFT JOIN processed_commands AS p USING (command_id)
           WHERE r.operation_id = $1 AND r.command_type <> 'sync.bulk.undo'
           ORDER BY r.seq LIMIT 1""",
        operation_id,
    )
    if row is None or not _visible(row, internal_id, namespace_id):
        return None
    error = json.loads(row["result"]).get("error") if row["result"] else None
    return {
        "operation_id": operation_id,
        "namespace_id": row["namespace_id"],
        "kind": row["command_type"].rsplit(".", 1)[-1],
        "status": "rejected" if row["done_at"] is not None else "queued",
        "error": error,
        "command_id": row["command_id"],
        "created_at": row["received_at"],
    }


async def preview(
    conn: asyncpg.Connection, selector: BulkSelector, internal_id: str, namespace_id: str
) -> int:
    """How many syncs ``selector`` matches now."""
    return await count_matches(conn, selector, internal_id, namespace_id)
