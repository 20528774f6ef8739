"""The relay reads the outbox from a horizon (the xmin of its last complete read), not from its
first id: a row that commits after rows with larger ids were published is still published,
and once everything is published the horizon moves past what was written."""

from __future__ import annotations

import asyncio
import json
import secrets

import asyncpg
import pytest

from events.service.app import Service
from events.service.db import connect
from events.service.packed_headers import pack_headers
from events.service.relay import _NEXT_PAGE, _NEXT_PAGE_SINCE, _XID8_MAX, configure_session
from events.service.settings import Settings
from tests.helpers.live import Seen

pytestmark = pytest.mark.stack


async def _insert(conn: asyncpg.Connection, topic: str, key: str, value: bytes) -> tuple[int, int]:
    """An outbox row; returns its id and the id of the transaction that wrote it."""
    row = await conn.fetchrow(
        """INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4)
           RETURNING id, xid::text::bigint AS xid""",
        topic,
        key.encode(),
        value,
        pack_headers([("ce_id", secrets.token_hex(8).encode())]),
    )
    assert row is not None
    return row["id"], row["xid"]


async def _relay_reads(service: Service, count: int = 2) -> None:
    """Let the session's relay, the leader, read the outbox ``count`` more times (it reads at
    least every poll interval)."""
    assert service.relay.is_leader
    await asyncio.sleep(count * service.settings.relay_poll_interval_seconds + 0.2)


async def test_a_row_committed_after_later_rows_were_published_is_published(
    settings: Settings, service: Service, lifecycle: Seen
) -> None:
    key, topic = f"late-{secrets.token_hex(4)}", settings.lifecycle_topic
    late, early = await connect(settings), await connect(settings)
    try:
        tx = late.transaction()
        await tx.start()
        late_id, late_xid = await _insert(late, topic, key, b"late")
        early_id, _ = await _insert(early, topic, key, b"early")
        assert early_id > late_id
        # The larger id is published; reads go on while the smaller one is not committed.
        assert [v for _, v in await lifecycle.wait(key, 1)] == [b"early"]
        await _relay_reads(service)
        assert service.relay.horizon <= late_xid  # still in progress: not past it
        await tx.commit()
        seen = await lifecycle.wait(key, 2)
        assert [v for _, v in seen] == [b"early", b"late"]
    finally:
        await late.close()
        await early.close()


async def test_the_horizon_moves_past_what_was_published(
    settings: Settings, service: Service, lifecycle: Seen
) -> None:
    key = f"horizon-{secrets.token_hex(4)}"
    conn = await connect(settings)
    try:
        _, xid = await _insert(conn, settings.lifecycle_topic, key, b"x")
        await lifecycle.wait(key, 1)
        await _relay_reads(service)
        # The next reads start after this row's transaction: not at the outbox's first id.
        assert service.relay.horizon > xid
        left = await conn.fetchval("SELECT count(*) FROM outbox WHERE key = $1", key.encode())
        assert left == 0
    finally:
        await conn.close()


async def test_the_kept_plans_of_the_relays_reads_use_indexes_even_if_made_on_an_empty_outbox(
    settings: Settings,
) -> None:
    """The plan Postgres keeps for a prepared statement may be made while the outbox is empty
    (vacuum truncates it). It must still read through the indexes, never scan the table: by
    the time it runs again the table can be thousands of pages of deleted rows."""
    conn = await connect(settings)
    try:
        await conn.execute("CREATE TEMPORARY TABLE outbox (LIKE public.outbox INCLUDING ALL)")
        await conn.execute("ANALYZE outbox")  # empty: a sequential scan looks cheapest
        await configure_session(conn)
        await conn.execute("SET plan_cache_mode = force_generic_plan")  # the plan it keeps
        plans = {}
        for name, query in (("all", _NEXT_PAGE), ("since", _NEXT_PAGE_SINCE)):
            statement = await conn.prepare(query)
            args = [1000, [1], [2], 5, _XID8_MAX][: len(statement.get_parameters())]
            plans[name] = json.dumps(await statement.explain(*args))
        assert all("Seq Scan" not in plan for plan in plans.values()), plans
        # The copy's indexes are named after its columns: outbox_pkey, outbox_xid_idx.
        assert '"Index Name": "outbox_xid_idx"' not in plans["all"]  # in id order: a backlog
        assert '"Index Name": "outbox_xid_idx"' in plans["since"]  # from the horizon
    finally:
        await conn.close()
