"""The bench's work in the service's Postgres, around the phases: settling and vacuuming
before one, checking its outcomes after, and removing all a run created at the end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

from events.devtools.bench.errors import Echo
from events.service.db import connect
from events.service.settings import Settings

__all__ = ["not_applied", "postgres_version", "quiesce", "remove_run", "vacuum"]

_VACUUMED: Final = ("syncs", "sync_timers", "outbox", "processed_commands", "sync_history")


async def not_applied(settings: Settings, id_patterns: list[str]) -> int:
    """Commands whose ids match these ``LIKE`` patterns and whose outcome was not
    ``applied`` (should be none)."""
    conn = await connect(settings)
    try:
        count = await conn.fetchval(
            """SELECT count(*) FROM processed_commands
               WHERE command_id LIKE ANY($1::text[]) AND outcome <> 'applied'""",
            id_patterns,
        )
    finally:
        await conn.close()
    return int(count)


async def vacuum(settings: Settings) -> None:
    """Vacuum the service's tables before measuring: what creating the syncs (or an earlier
    run) left for autovacuum is not done during, and charged to, the phases measured."""
    conn = await connect(settings)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {', '.join(_VACUUMED)}")
    finally:
        await conn.close()


async def quiesce(settings: Settings, org_id: str, check: Callable[[], None], echo: Echo) -> None:
    """Wait until no sync of the bench's organization is due and the outbox is drained (at
    most 5 min), calling ``check`` (the serve still runs) each time."""
    conn = await connect(settings)
    try:
        deadline = time.monotonic() + 300
        next_note = time.monotonic() + 10
        while True:
            check()
            due = await conn.fetchval(
                """SELECT count(*) FROM syncs WHERE internal_id = $1
                     AND status IN ('PENDING', 'ACTIVE') AND lock_expires_at IS NULL
                     AND next_sync_at <= now()""",
                org_id,
            )
            backlog = await conn.fetchval("SELECT count(*) FROM outbox")
            if not due and not backlog:
                return
            if time.monotonic() > next_note:
                echo(f"  settling: {due} syncs due, {backlog} outbox rows")
                next_note = time.monotonic() + 10
            if time.monotonic() > deadline:
                echo("  not settled after 5 min; going on")
                return
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def remove_run(settings: Settings, run_id: str, org_id: str, schema: str) -> None:
    """Delete what run ``run_id`` left in Postgres: the pgbench ``schema``, its outbox rows,
    dead letters, processed commands and history, and its organization's jobs, syncs, the
    gateway's records of its keys' requests, keys, namespaces and the organization itself
    (when ``org_id`` is set)."""
    conn = await connect(settings)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        # Whatever a crashed serve left for another relay would recreate the topics.
        await conn.execute("DELETE FROM outbox WHERE topic LIKE $1", f"bench.{run_id}.%")
        await conn.execute(
            "DELETE FROM dead_letters WHERE source_topic LIKE $1", f"bench.{run_id}.%"
        )
        await conn.execute(
            "DELETE FROM processed_commands WHERE command_id LIKE $1", f"bench-{run_id}-%"
        )
        await conn.execute(
            "DELETE FROM sync_history WHERE sync_config_id LIKE $1", f"sync_bench{run_id}x%"
        )
        if org_id:
            # The gateway's request records (--http) by the run's keys, then the run's rows.
            await conn.execute(
                """DELETE FROM gateway_requests
                   WHERE key_id IN (SELECT key_id FROM api_keys WHERE internal_id = $1)""",
                org_id,
            )
            for table in ("sync_jobs", "syncs", "api_keys", "namespaces", "organizations"):
                await conn.execute(
                    f"DELETE FROM {table} WHERE internal_id = $1",  # noqa: S608
                    org_id,
                )
    finally:
        await conn.close()


async def postgres_version(settings: Settings) -> str:
    """``SHOW server_version``."""
    conn = await connect(settings)
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()
