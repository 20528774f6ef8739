"""A bulk selector as SQL over ``syncs``, within one organization and namespace.

Every field given must match: ``bucket_id`` and ``status`` in their columns (the bucket's is
indexed), ``connection_id`` and ``provider`` in the stored document, ``metadata`` as
containment (each pair present with that value). Archived syncs are never matched (they are
gone for reads).
"""

from __future__ import annotations

import json
from typing import Any, Final

import asyncpg

from statemachine.commands import BulkSelector

__all__ = ["count_matches", "match", "where"]

_DOCUMENT_FIELDS: Final = ("connection_id", "provider")


def where(selector: BulkSelector, internal_id: str, namespace_id: str) -> tuple[str, list[Any]]:
    """The ``WHERE`` condition of ``selector`` over ``syncs`` and its arguments ($1, $2, ...)."""
    args: list[Any] = [internal_id, namespace_id]
    parts = ["internal_id = $1", "namespace_id = $2", "NOT archived"]
    if selector.bucket_id is not None:
        args.append(selector.bucket_id)
        parts.append(f"bucket_id = ${len(args)}")
    for name in _DOCUMENT_FIELDS:
        value = getattr(selector, name)
        if value is not None:
            args.append(str(value))
            parts.append(f"data->>'{name}' = ${len(args)}")
    if selector.status is not None:
        args.append(selector.status.value)
        parts.append(f"status = ${len(args)}")
    if selector.metadata:
        args.append(json.dumps(selector.metadata))
        parts.append(f"(data->'metadata')::jsonb @> ${len(args)}::jsonb")
    return " AND ".join(parts), args


async def match(
    conn: asyncpg.Connection,
    selector: BulkSelector,
    internal_id: str,
    namespace_id: str,
    limit: int,
) -> list[str]:
    """The ids of the syncs ``selector`` matches, in id order, at most ``limit``."""
    condition, args = where(selector, internal_id, namespace_id)
    rows = await conn.fetch(
        f"SELECT sync_config_id FROM syncs WHERE {condition} "  # noqa: S608 - no input in it
        f"ORDER BY sync_config_id LIMIT ${len(args) + 1}",
        *args,
        limit,
    )
    return [r["sync_config_id"] for r in rows]


async def count_matches(
    conn: asyncpg.Connection, selector: BulkSelector, internal_id: str, namespace_id: str
) -> int:
    """How many syncs ``selector`` matches now."""
    condition, args = where(selector, internal_id, namespace_id)
    n: int = await conn.fetchval(
        f"SELECT count(*) FROM syncs WHERE {condition}",  # noqa: S608 - no input in it
        *args,
    )
    return n
