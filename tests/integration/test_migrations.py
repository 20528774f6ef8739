"""Migrations on a database of their own: rows written under an older schema survive."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from events.envelope import unpack_headers
from events.service.db import connect, migrate, migrations
from events.service.settings import Settings

pytestmark = pytest.mark.stack


@pytest.fixture
async def scratch(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database, dropped afterwards."""
    name = f"synclife_migrations_{secrets.token_hex(4)}"
    admin = await connect(settings)
    await admin.execute(f'CREATE DATABASE "{name}"')
    # The same server and login; the keyword overrides the URL's database.
    conn = await asyncpg.connect(settings.database_url.get_secret_value(), database=name)
    try:
        yield conn
    finally:
        await conn.close()
        await admin.execute(f'DROP DATABASE "{name}"')
        await admin.close()


async def test_unpublished_outbox_rows_keep_their_headers_through_0005(
    scratch: asyncpg.Connection,
) -> None:
    before = [(name, sql) for name, sql in migrations() if name < "0005"]
    for _, sql in before:
        await scratch.execute(sql)
    headers = [("ce_id", b"sync_1:v2"), ("bin", bytes(range(256))), ("empty", b"")]
    await scratch.execute(
        """INSERT INTO outbox (topic, key, value, headers)
           VALUES ('t', 'k', 'v', $1::kafka_header[]), ('t', 'k', 'w', '{}')""",
        headers,
    )
    # The rest, as `migrate` applies them (it records the earlier ones as applied first).
    await scratch.execute(
        """CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL,
                                          applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    await scratch.executemany(
        "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
        [(name, hashlib.sha256(sql.encode()).hexdigest()) for name, sql in before],
    )
    applied = await migrate(scratch)
    assert applied and applied[0].startswith("0005")
    assert (await scratch.fetchval("SELECT current_database()")).startswith("synclife_migrations_")
    rows = await scratch.fetch("SELECT value, headers FROM outbox ORDER BY id")
    assert [unpack_headers(r["headers"]) for r in rows] == [headers, []]
