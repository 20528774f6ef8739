"""Bulk operations on the real stack: a bulk pause of 1,000 syncs selected by metadata, its
redelivery, its undo next to a separate manual pause, and a selector over the maximum."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any

import asyncpg
import pytest

from events.client import SynclifeClient, new_operation_id, new_sync_id
from events.messages import BulkEvent, CommandResult
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key
from statemachine import ErrorCode, Outcome, SyncConfiguration, SyncStatus
from statemachine.commands import CommandType
from tests.helpers.live import Seen, Tenant, run_cli
from tests.helpers.messages import CREATE

pytestmark = pytest.mark.stack

#: Holds (CONTRACT.md v1.1) exist once the model has them: a manual pause of a sync that a
#: bulk pause also holds then survives the bulk undo.
HOLDS = "pause_holds" in SyncConfiguration.model_fields


async def create_many(client: SynclifeClient, n: int, **fields: Any) -> list[str]:
    ids = [new_sync_id() for _ in range(n)]
    results = await asyncio.gather(*(client.create(i, **{**CREATE, **fields}) for i in ids))
    assert {r.outcome for r in results} == {Outcome.APPLIED}
    return ids


async def states(conn: asyncpg.Connection, ids: list[str]) -> dict[str, tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT sync_config_id, status, version FROM syncs WHERE sync_config_id = ANY($1)", ids
    )
    return {r["sync_config_id"]: (r["status"], r["version"]) for r in rows}


async def history_by(conn: asyncpg.Connection, actor: str) -> list[tuple[str, int]]:
    rows = await conn.fetch(
        "SELECT sync_config_id, version FROM sync_history WHERE actor = $1", actor
    )
    return sorted((r["sync_config_id"], r["version"]) for r in rows)


def bulk_events(seen: Seen, op: str) -> list[tuple[str, BulkEvent]]:
    return [
        (h["ce_type"].decode(), BulkEvent.model_validate_json(v or b"")) for h, v in seen.by_key[op]
    ]


def counts(result: CommandResult) -> dict[str, int]:
    assert result.counts is not None, result
    return result.counts.model_dump()


async def test_bulk_pause_of_1000_by_metadata_then_undo(
    settings: Settings, client: SynclifeClient, tenant: Tenant, lifecycle: Seen
) -> None:
    campaign = secrets.token_hex(4)
    ids = await create_many(client, 1000, metadata={"campaign": campaign, "tier": "gold"})
    others = await create_many(client, 5, metadata={"campaign": "other", "tier": "gold"})
    conn = await connect(settings)
    try:
        before = await states(conn, ids + others)
        op = new_operation_id()
        command_id = f"cmd-{op}"
        result = await client.send(
            CommandType.BULK_PAUSE,
            op,
            {"selector": {"metadata": {"campaign": campaign}}, "reason": "quarter close"},
            command_id=command_id,
            timeout=300,
        )
        assert result is not None
        assert result.outcome is Outcome.APPLIED, result
        assert result.operation_id == op and result.sync_config_id == op
        assert counts(result) == {"matched": 1000, "applied": 1000, "noop": 0, "rejected": 0}

        after = await states(conn, ids + others)
        for sid in ids:
            assert after[sid][0] == "SUSPENDED"
        # The others are untouched by it (the scheduler may have requested their first run).
        assert {after[sid][0] for sid in others} == {before[sid][0] for sid in others}
        # Each matched sync changed once, as its own version, by the operation.
        changed = await history_by(conn, f"bulk:{op}")
        assert sorted(sid for sid, _ in changed) == sorted(ids)

        # Redelivery: the same command id gets the same result, and changes nothing more.
        again = await client.send(
            CommandType.BULK_PAUSE,
            op,
            {"selector": {"metadata": {"campaign": campaign}}, "reason": "quarter close"},
            command_id=command_id,
            timeout=60,
        )
        assert again == result
        assert await history_by(conn, f"bulk:{op}") == changed

        # Its events: started (version 1) and completed (version 2), keyed by the operation.
        await lifecycle.wait(op, 2)
        events = bulk_events(lifecycle, op)
        assert [(t, e.version) for t, e in events] == [
            ("sync.bulk_started", 1),
            ("sync.bulk_completed", 2),
        ]
        assert events[0][1].counts.matched == 1000 and events[1][1].counts.applied == 1000
        assert events[1][1].selector == {"metadata": {"campaign": campaign}}
        # Each sync's own event names the operation as its actor.
        sample, version = changed[0]
        await lifecycle.wait(sample, version)
        mine = [e for _, _, e in lifecycle.events(sample) if e.version == version]
        assert mine[0].actor == f"bulk:{op}" and mine[0].command_id == command_id
        assert mine[0].sync.status is SyncStatus.SUSPENDED

        # A separate manual pause on one of them, then the undo.
        held = ids[1]
        if HOLDS:
            manual = await client.pause(held, hold="maintenance:INC-42", reason="disk")
            assert manual.outcome is Outcome.APPLIED
        undone = await client.bulk_undo(op, timeout=300)
        assert undone.outcome is Outcome.APPLIED, undone
        assert counts(undone) == {"matched": 1000, "applied": 1000, "noop": 0, "rejected": 0}
        final = await states(conn, ids)
        if HOLDS:
            assert final[held][0] == "SUSPENDED"  # its own hold is left
            assert {s for sid, (s, _) in final.items() if sid != held} == {"ACTIVE"}
        else:
            assert {s for s, _ in final.values()} == {"ACTIVE"}
        await lifecycle.wait(op, 3)
        assert bulk_events(lifecycle, op)[2][0] == "sync.bulk_undone"

        # A second undo of it changes nothing.
        second = await client.bulk_undo(op, timeout=60)
        assert second.outcome is Outcome.NOOP and counts(second) == counts(undone)
        assert await states(conn, ids) == final

        # One more match than SYNCLIFE_MAX_BULK_SYNCS (1000 here): refused, nothing changed.
        assert settings.max_bulk_syncs == 1000
        extra = await create_many(client, 1, metadata={"campaign": campaign})
        before_max = await states(conn, ids + extra)
        refused = await client.bulk_pause({"metadata": {"campaign": campaign}}, timeout=60)
        assert refused.outcome is Outcome.REJECTED
        assert refused.error is not None and refused.error.code is ErrorCode.VALIDATION_ERROR
        assert refused.error.details["max_bulk_syncs"] == 1000
        now = await states(conn, ids + extra)
        assert {sid: s for sid, (s, _) in now.items()} == {
            sid: s for sid, (s, _) in before_max.items()
        }
        assert refused.operation_id is not None
        assert await history_by(conn, f"bulk:{refused.operation_id}") == []
        assert not await conn.fetchval(
            "SELECT count(*) FROM bulk_operations WHERE operation_id = $1", refused.operation_id
        )
    finally:
        await conn.close()


async def test_bulk_refusals(client: SynclifeClient, tenant: Tenant) -> None:
    # An empty selector, a hold given to a bulk pause, a key that is no operation id.
    empty = await client.bulk_pause({}, timeout=30)
    assert empty.error is not None and empty.error.code is ErrorCode.VALIDATION_ERROR
    assert "selector" in empty.error.message
    bad_key = await client.send(
        CommandType.BULK_PAUSE, new_sync_id(), {"selector": {"bucket_id": "b"}}, timeout=30
    )
    assert bad_key is not None and bad_key.error is not None
    assert bad_key.error.code is ErrorCode.VALIDATION_ERROR
    # Undo of an operation that does not exist (or is another tenant's).
    missing = await client.bulk_undo(new_operation_id(), timeout=30)
    assert missing.error is not None and missing.error.code is ErrorCode.NOT_FOUND
    # Nothing matched: a noop with zero counts.
    nothing = await client.bulk_pause({"bucket_id": f"bkt_{secrets.token_hex(6)}"}, timeout=30)
    assert nothing.outcome is Outcome.NOOP
    assert counts(nothing) == {"matched": 0, "applied": 0, "noop": 0, "rejected": 0}


@pytest.mark.parametrize("until", ["2000-01-01T00:00:00Z", "P91D"])
async def test_a_bulk_pause_with_an_until_out_of_range_is_refused_whole(
    settings: Settings, client: SynclifeClient, until: str
) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    await create_many(client, 2, bucket_id=bucket)
    op = new_operation_id()
    refused = await client.bulk_pause({"bucket_id": bucket}, operation_id=op, until=until)
    assert refused.outcome is Outcome.REJECTED and refused.counts is None
    assert refused.error is not None and refused.error.code is ErrorCode.VALIDATION_ERROR
    assert [e["field"] for e in refused.error.details["errors"]] == ["until"]
    await nothing_started(settings, op)


async def test_a_bulk_resume_with_force_needs_admin_before_anything_starts(
    settings: Settings, client: SynclifeClient, tenant: Tenant
) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    ids = await create_many(client, 2, bucket_id=bucket)
    for sid in ids:
        await client.pause(sid, hold="maintenance:1")
    op = new_operation_id()
    refused = await client.bulk_resume({"bucket_id": bucket}, operation_id=op, force=True)
    assert refused.outcome is Outcome.REJECTED and refused.counts is None
    assert refused.error is not None and refused.error.code is ErrorCode.FORBIDDEN
    assert refused.error.details == {"required_scope": "syncs:admin"}
    await nothing_started(settings, op)
    # With syncs:admin the same operation (a new id) releases every hold.
    conn = await connect(settings)
    try:
        admin_key = await create_key(conn, tenant.org_id, ["syncs:admin"])
    finally:
        await conn.close()
    async with SynclifeClient(
        settings, api_key=admin_key["key"], namespace=tenant.namespace
    ) as admin:
        forced = await admin.bulk_resume({"bucket_id": bucket}, force=True, timeout=60)
    assert counts(forced) == {"matched": 2, "applied": 2, "noop": 0, "rejected": 0}


async def test_a_lower_case_operation_id_over_kafka_names_it_in_upper_case(
    client: SynclifeClient,
) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    await create_many(client, 1, bucket_id=bucket)
    op = new_operation_id()
    paused = await client.bulk_pause({"bucket_id": bucket}, operation_id=op.lower(), timeout=60)
    assert paused.operation_id == op and counts(paused)["applied"] == 1
    undone = await client.bulk_undo(op.lower(), timeout=60)
    assert undone.operation_id == op and counts(undone)["applied"] == 1


async def nothing_started(settings: Settings, op: str) -> None:
    """The operation ``op`` was refused whole: no operation (its ``sync.bulk_started`` is
    written with it, in one transaction: no event either), no item, no change of a sync."""
    conn = await connect(settings)
    try:
        for table in ("bulk_operations", "bulk_items"):
            query = f"SELECT count(*) FROM {table} WHERE operation_id = $1"  # noqa: S608
            assert await conn.fetchval(query, op) == 0, table
        assert await history_by(conn, f"bulk:{op}") == []
    finally:
        await conn.close()


async def test_bulk_resume_and_an_operation_id_used_twice(
    settings: Settings, client: SynclifeClient
) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    fields = {**CREATE, "bucket_id": bucket}
    ids = [new_sync_id() for _ in range(3)]
    for sid in ids:
        await client.create(sid, **fields)
    canceled = ids[2]
    await client.cancel(canceled)
    op = new_operation_id()
    paused = await client.bulk_pause({"bucket_id": bucket}, operation_id=op, timeout=60)
    # The canceled sync cannot be paused: rejected (counted), the others applied.
    assert counts(paused) == {"matched": 3, "applied": 2, "noop": 0, "rejected": 1}
    reused = await client.bulk_pause({"bucket_id": bucket}, operation_id=op, timeout=60)
    assert reused.error is not None and reused.error.code is ErrorCode.ALREADY_EXISTS
    suspended = {"bucket_id": bucket, "status": SyncStatus.SUSPENDED.value}
    resumed = await client.bulk_resume(suspended, timeout=60)
    if HOLDS:
        # A plain resume leaves named holds, the bulk pause's too; naming it releases it.
        assert counts(resumed) == {"matched": 2, "applied": 0, "noop": 2, "rejected": 0}
        assert resumed.outcome is Outcome.NOOP
        resumed = await client.bulk_resume(suspended, hold=f"bulk:{op}", timeout=60)
    assert counts(resumed) == {"matched": 2, "applied": 2, "noop": 0, "rejected": 0}
    conn = await connect(settings)
    try:
        final = await states(conn, ids)
    finally:
        await conn.close()
    assert [final[i][0] for i in ids] == ["ACTIVE", "ACTIVE", "CANCELED"]


async def test_bulk_from_the_command_line(
    settings: Settings, client: SynclifeClient, tenant: Tenant
) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    ids = [new_sync_id() for _ in range(3)]
    for sid in ids:
        await client.create(sid, **{**CREATE, "bucket_id": bucket, "metadata": {"team": "a"}})
    env = {
        **os.environ,
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value(),
        "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
        "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
        "SYNCLIFE_LIFECYCLE_TOPIC": settings.lifecycle_topic,
        "SYNCLIFE_API_KEY": tenant.write_key,
        "SYNCLIFE_NAMESPACE": tenant.namespace,
    }
    op = new_operation_id()
    code, out, err = await run_cli(
        "bulk", "pause", "--bucket", bucket, "--metadata", "team=a", "--reason", "audit",
        "--operation-id", op, env=env,
    )  # fmt: skip
    assert code == 0, err
    paused = CommandResult.model_validate_json(out)
    assert paused.counts is not None and paused.counts.applied == 3
    code, out, err = await run_cli("bulk", "show", op, "--json", env=env)
    assert code == 0, err
    shown = json.loads(out)
    assert shown["status"] == "completed" and shown["kind"] == "pause"
    assert shown["counts"] == {"matched": 3, "applied": 3, "noop": 0, "rejected": 0}
    assert shown["progress"]["apply"]["pending"] == 0
    assert shown["selector"] == {"bucket_id": bucket, "metadata": {"team": "a"}}
    code, out, err = await run_cli("bulk", "undo", op, env=env)
    assert code == 0, err
    code, out, err = await run_cli("bulk", "show", op, env=env)
    assert code == 0 and "undone" in out, (out, err)
    # No selector: refused before anything is sent.
    code, _, err = await run_cli("bulk", "pause", env=env)
    assert code == 2 and "selector" in err
    assert tenant.write_key not in out + err
