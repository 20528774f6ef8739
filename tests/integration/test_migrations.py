"""Migrations on a database of their own: rows written under an older schema survive."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from events.devtools.stack.databases import create_database, drop_database
from events.service.db import migrate, migrations
from events.service.packed_headers import unpack_headers
from events.service.settings import Settings

pytestmark = pytest.mark.stack


@pytest.fixture
async def scratch(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database, dropped afterwards."""
    name = f"synclife_migrations_{secrets.token_hex(4)}"
    own = await create_database(settings, name)
    assert own is not None
    conn = await asyncpg.connect(own.database_url.get_secret_value())
    try:
        yield conn
    finally:
        await conn.close()
        await drop_database(settings, name)


async def _record_applied(conn: asyncpg.Connection, before: list[tuple[str, str]]) -> None:
    """Record the migrations ``before`` as applied, as an older version left them; the next
    ``migrate`` applies the rest."""
    await conn.execute(
        """CREATE TABLE schema_migrations (name text PRIMARY KEY, checksum text NOT NULL,
                                          applied_at timestamptz NOT NULL DEFAULT now())"""
    )
    await conn.executemany(
        "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
        [(name, hashlib.sha256(sql.encode()).hexdigest()) for name, sql in before],
    )


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
    await _record_applied(scratch, before)
    applied = await migrate(scratch)
    assert applied and applied[0].startswith("0005")
    assert (await scratch.fetchval("SELECT current_database()")).startswith("synclife_migrations_")
    rows = await scratch.fetch("SELECT value, headers FROM outbox ORDER BY id")
    assert [unpack_headers(r["headers"]) for r in rows] == [headers, []]


async def test_0014_fills_the_list_columns_and_a_change_of_a_sync_updates_in_place(
    scratch: asyncpg.Connection,
) -> None:
    """Rows from before 0014 get their bucket, creation time and archived flag (generated
    from the row); afterwards no index of ``syncs`` covers a column a change writes, so a
    change is a HOT update."""
    before = [(name, sql) for name, sql in migrations() if name < "0014"]
    for _, sql in before:
        await scratch.execute(sql)
    doc = {"bucket_id": "bkt_1", "created_at": "2026-12-05T08:00:00.123456Z", "status": "ARCHIVED"}
    for sid, status in [("sync_a", "ACTIVE"), ("sync_b", "ARCHIVED")]:
        await scratch.execute(
            """INSERT INTO syncs (sync_config_id, internal_id, namespace_id, status, version,
                                  data, updated_at)
               VALUES ($1, 'org_1', 'ns_1', $2, 1, $3::jsonb, now())""",
            sid,
            status,
            json.dumps({**doc, "status": status}),
        )
    await _record_applied(scratch, before)
    assert (await migrate(scratch))[0].startswith("0014")
    rows = await scratch.fetch(
        "SELECT sync_config_id, bucket_id, created_at, archived FROM syncs ORDER BY 1"
    )
    created = datetime(2026, 12, 5, 8, 0, 0, 123456, tzinfo=UTC)
    assert [tuple(r) for r in rows] == [
        ("sync_a", "bkt_1", created, False),
        ("sync_b", "bkt_1", created, True),
    ]

    definitions = await scratch.fetch(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'syncs' ORDER BY indexname"
    )
    written = {"status", "version", "next_sync_at", "lock_expires_at", "data", "updated_at"}
    for row in definitions:
        words = set(re.findall(r"[a-z_]+", row["indexdef"].split(" USING ", 1)[1]))
        assert not words & written, row["indexdef"]
    # A change as the batch's write makes it: Postgres counts it as a HOT update.
    counted = "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'syncs'"
    await scratch.execute("SELECT pg_stat_force_next_flush()")
    before_change = await scratch.fetchval(counted)
    await scratch.execute(
        """UPDATE syncs SET status = 'SUSPENDED', version = 2,
                  data = jsonb_set(data::jsonb, '{status}', '"SUSPENDED"'), updated_at = now()
           WHERE sync_config_id = 'sync_a'"""
    )
    await scratch.execute("SELECT pg_stat_force_next_flush()")
    assert await scratch.fetchval(counted) == before_change + 1


async def test_0015_compresses_results_and_outbox_values_with_lz4(
    scratch: asyncpg.Connection,
) -> None:
    """A result and an outbox value long enough to be compressed are compressed with lz4
    (the local stack's Postgres is built with it), and read back unchanged."""
    await migrate(scratch)
    methods = await scratch.fetch(
        """SELECT attrelid::regclass::text AS tbl, attname, attcompression::text AS method
           FROM pg_attribute
           WHERE (attrelid, attname) IN (('processed_commands'::regclass, 'result'),
                                         ('outbox'::regclass, 'value'))
           ORDER BY 1"""
    )
    assert [(r["tbl"], r["attname"], r["method"]) for r in methods] == [
        ("outbox", "value", "l"),  # lz4
        ("processed_commands", "result", "l"),
    ]
    text = json.dumps({"sync": {f"field_{i}": "value " * 8 for i in range(60)}})
    await scratch.execute(
        """INSERT INTO processed_commands (command_id, command_type, outcome, result)
           VALUES ('cmd_1', 'sync.pause', 'applied', $1)""",
        text,
    )
    await scratch.execute(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ('t', NULL, $1, '')",
        text.encode(),
    )
    stored = await scratch.fetchrow(
        """SELECT p.result, pg_column_compression(p.result) AS pc,
                  o.value, pg_column_compression(o.value) AS oc
           FROM processed_commands AS p, outbox AS o"""
    )
    assert stored is not None
    assert (stored["pc"], stored["oc"]) == ("lz4", "lz4")
    assert stored["result"] == text and stored["value"] == text.encode()


async def test_0016_keeps_documents_and_list_columns_and_sets_them_for_new_syncs(
    scratch: asyncpg.Connection,
) -> None:
    """A document stored as jsonb before 0016 reads back the same (as json); its list
    columns keep their values; a sync created afterwards gets its bucket and creation time
    from its document, and a change of it stays a HOT update."""
    before = [(name, sql) for name, sql in migrations() if name < "0016"]
    for _, sql in before:
        await scratch.execute(sql)
    old = {"bucket_id": "bkt_1", "created_at": "2026-12-05T08:00:00.123456Z", "n": [1, "ü"]}
    await scratch.execute(
        """INSERT INTO syncs (sync_config_id, internal_id, namespace_id, status, version,
                              data, updated_at)
           VALUES ('sync_a', 'org_1', 'ns_1', 'ACTIVE', 1, $1::jsonb, now())""",
        json.dumps(old),
    )
    await _record_applied(scratch, before)
    assert (await migrate(scratch))[0].startswith("0016")
    kind = "SELECT atttypid::regtype::text FROM pg_attribute WHERE attrelid = 'syncs'::regclass"
    assert await scratch.fetchval(f"{kind} AND attname = 'data'") == "json"
    new = '{"bucket_id":"bkt_2","created_at":"2026-12-06T09:30:00+01:00","n":[]}'
    await scratch.execute(
        """INSERT INTO syncs (sync_config_id, internal_id, namespace_id, status, version,
                              data, updated_at)
           VALUES ('sync_b', 'org_1', 'ns_1', 'ARCHIVED', 1, $1::json, now())""",
        new,
    )
    rows = await scratch.fetch(
        """SELECT sync_config_id, data::text AS data, bucket_id, created_at, archived
           FROM syncs ORDER BY 1"""
    )
    assert json.loads(rows[0]["data"]) == old
    assert rows[1]["data"] == new  # the text as written
    assert [tuple(r)[2:] for r in rows] == [
        ("bkt_1", datetime(2026, 12, 5, 8, 0, 0, 123456, tzinfo=UTC), False),
        ("bkt_2", datetime(2026, 12, 6, 8, 30, tzinfo=UTC), True),
    ]
    counted = "SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'syncs'"
    await scratch.execute("SELECT pg_stat_force_next_flush()")
    before_change = await scratch.fetchval(counted)
    await scratch.execute(
        """UPDATE syncs SET status = 'SUSPENDED', version = 2, updated_at = now(),
                  data = '{"bucket_id":"bkt_1","created_at":"2026-12-05T08:00:00.123456Z"}'
           WHERE sync_config_id = 'sync_a'"""
    )
    await scratch.execute("SELECT pg_stat_force_next_flush()")
    assert await scratch.fetchval(counted) == before_change + 1
