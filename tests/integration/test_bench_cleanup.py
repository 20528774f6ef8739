"""The bench removes what its run left in Postgres, its jobs and gateway records included,
and nothing of another organization's."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import asyncpg
import pytest

from events.devtools.bench.database import remove_run
from events.devtools.loadgen import create_tenant
from events.devtools.stack.databases import create_database, drop_database
from events.service.db import connect
from events.service.settings import Settings

pytestmark = pytest.mark.stack


async def _rows_of(conn: asyncpg.Connection, org: str) -> dict[str, int]:
    counted = {
        "sync_jobs": "SELECT count(*) FROM sync_jobs WHERE internal_id = $1",
        "gateway_requests": """SELECT count(*) FROM gateway_requests WHERE key_id IN
                               (SELECT key_id FROM api_keys WHERE internal_id = $1)""",
        "api_keys": "SELECT count(*) FROM api_keys WHERE internal_id = $1",
        "organizations": "SELECT count(*) FROM organizations WHERE internal_id = $1",
    }
    return {name: await conn.fetchval(sql, org) for name, sql in counted.items()}


async def _leave_rows(conn: asyncpg.Connection, org: str, run: str) -> None:
    key_id = await conn.fetchval("SELECT key_id FROM api_keys WHERE internal_id = $1", org)
    now = datetime.now(UTC)
    await conn.execute(
        """INSERT INTO sync_jobs (sync_job_id, sync_config_id, internal_id, namespace_id,
                                  trigger, status, created_at, updated_at)
           VALUES ($1, $2, $3, 'ns', 'scheduled', 'running', $4, $4)""",
        f"job_{run}",
        f"sync_bench{run}x0000001",
        org,
        now,
    )
    await conn.execute(
        """INSERT INTO gateway_requests (command_id, key_id, method, path, body_sha256,
                                         sync_config_id)
           VALUES ($1, $2, 'POST', '/v1/x', '\\x00', 'sync_x')""",
        f"cmd-{run}",
        key_id,
    )


async def test_remove_run_deletes_its_jobs_and_gateway_records_and_no_one_elses(
    settings: Settings,
) -> None:
    conn = await connect(settings)
    try:
        run, other_run = secrets.token_hex(4), secrets.token_hex(4)
        org, _ = await create_tenant(conn, f"bench-{run}", f"ns-{run}")
        other, _ = await create_tenant(conn, f"other-{other_run}", f"ns-{other_run}")
        await _leave_rows(conn, org, run)
        await _leave_rows(conn, other, other_run)
        expected = {"sync_jobs": 1, "gateway_requests": 1, "api_keys": 1, "organizations": 1}
        assert await _rows_of(conn, org) == expected

        await remove_run(settings, run, org, f"synclife_bench_{run}")

        assert await _rows_of(conn, org) == dict.fromkeys(expected, 0)
        assert await _rows_of(conn, other) == expected
        await remove_run(settings, other_run, other, f"synclife_bench_{other_run}")
    finally:
        await conn.close()


async def test_a_run_s_own_database_is_created_empty_and_dropped(settings: Settings) -> None:
    name = f"synclife_bench_t{secrets.token_hex(4)}"
    own = await create_database(settings, name)
    assert own is not None
    conn = await connect(own)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
        assert await conn.fetchval("SELECT to_regclass('public.syncs')") is None
    finally:
        await conn.close()
    await drop_database(settings, name)
    admin = await connect(settings)
    try:
        assert not await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name)
    finally:
        await admin.close()
