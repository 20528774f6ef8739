"""Every error code of the contract, end to end on the real stack, each with its exact code.

Rejections that come from who the caller is (``unauthenticated``, ``forbidden``) or from whose
sync it is (``not_found`` / ``already_exists`` for another tenant's sync) must tell the caller
nothing about the sync: no ``sync``, no ``version``, no ``status``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from datetime import datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from events.client import SynclifeClient, new_sync_id
from events.envelope import derived_id
from events.messages import CommandResult
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, list_keys, revoke_key
from statemachine import ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Clock, Seen, Tenant, new_tenant
from tests.helpers.messages import (
    CREATE,
    Headers,
    dead_letter_for,
    envelope,
    rejected,
    result_for,
)

pytestmark = pytest.mark.stack


def tells_nothing(result: CommandResult) -> None:
    """A rejection that must not reveal anything about the sync."""
    assert (result.sync, result.version, result.status, result.run) == (None, None, None, None)
    assert result.events == []


async def history_of(settings: Settings, command_ids: list[str]) -> int:
    """How many persisted changes these commands caused."""
    conn = await connect(settings)
    try:
        count = await conn.fetchval(
            "SELECT count(*) FROM sync_history WHERE command_id = ANY($1::text[])", command_ids
        )
    finally:
        await conn.close()
    return int(count)


# ---------------------------------------------------------------------------- validation_error


async def test_validation_error_names_each_field(client: SynclifeClient) -> None:
    result = rejected(
        await client.create(
            new_sync_id(), **{**CREATE, "provider": "ftp", "batch_size": 0, "bogus": 1}
        ),
        ErrorCode.VALIDATION_ERROR,
    )
    assert result.error is not None
    fields = {e["field"] for e in result.error.details["errors"]}
    assert {"provider", "bogus"} <= fields
    tells_nothing(result)
    # A pause's user, when given, must be an id (without one it is the caller: v1.1).
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    no_user = rejected(
        await client.pause(sync_id, paused_by_user_id=""), ErrorCode.VALIDATION_ERROR
    )
    assert no_user.error is not None
    assert [e["field"] for e in no_user.error.details["errors"]] == ["paused_by_user_id"]
    # The caller owns this sync: a rejection of its own command shows where the sync is.
    assert no_user.sync is not None and no_user.version is not None


async def test_envelope_level_validation_errors(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
    client: SynclifeClient,
) -> None:
    """Data that is JSON but no object, a bad ce_expectedversion, no x-namespace."""
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    cases: list[tuple[str, bytes, Headers, str]] = [
        (
            "array",
            b'["paused_by_user_id", "u"]',
            envelope(str(uuid.uuid4()), "sync.pause", sync_id, tenant=tenant),
            "(root)",
        ),
        (
            "bad expected version",
            b'{"paused_by_user_id": "u"}',
            envelope(
                str(uuid.uuid4()),
                "sync.pause",
                sync_id,
                tenant=tenant,
                extra={"ce_expectedversion": "one"},
            ),
            "ce_expectedversion",
        ),
        (
            "negative expected version",
            b'{"paused_by_user_id": "u"}',
            envelope(
                str(uuid.uuid4()),
                "sync.pause",
                sync_id,
                tenant=tenant,
                extra={"ce_expectedversion": "-1"},
            ),
            "ce_expectedversion",
        ),
        (
            "no namespace",
            b'{"paused_by_user_id": "u"}',
            envelope(str(uuid.uuid4()), "sync.pause", sync_id, auth=f"Bearer {tenant.write_key}"),
            "x-namespace",
        ),
    ]
    for _, value, headers, _ in cases:
        await raw_producer.send_and_wait(
            settings.commands_topic, key=sync_id.encode(), value=value, headers=headers
        )
    for name, _, headers, field in cases:
        command_id = dict(headers)["ce_id"].decode()
        result = rejected(
            await result_for(results, sync_id, command_id), ErrorCode.VALIDATION_ERROR
        )
        assert result.error is not None
        assert [e["field"] for e in result.error.details["errors"]] == [field], name
    # Decodable messages: a result, never a dead letter.
    ids = {dict(h)["ce_id"] for _, _, h, _ in cases}
    assert not [h for h, _ in dlq.by_key[sync_id] if h.get("ce_id") in ids]
    commands = [dict(h)["ce_id"].decode() for _, _, h, _ in cases]
    assert await history_of(settings, commands) == 0


async def test_tenancy_fields_in_data_are_rejected(
    settings: Settings, tenant: Tenant, client: SynclifeClient
) -> None:
    """internal_id and namespace_id come from the key and x-namespace, never from the data."""
    other = await new_tenant(settings)
    sync_id = new_sync_id()
    smuggled = rejected(
        await client.create(
            sync_id, **CREATE, internal_id=other.org_id, namespace_id=other.namespace_id
        ),
        ErrorCode.VALIDATION_ERROR,
    )
    assert smuggled.error is not None
    assert {e["field"] for e in smuggled.error.details["errors"]} == {"internal_id", "namespace_id"}
    tells_nothing(smuggled)
    # Nothing was created: the same id can be created now, in the caller's own tenancy.
    created = await client.create(sync_id, **CREATE)
    assert created.outcome is Outcome.APPLIED and created.sync is not None
    assert (created.sync.internal_id, created.sync.namespace_id) == (
        tenant.org_id,
        tenant.namespace_id,
    )
    moved = rejected(
        await client.update(sync_id, batch_size=10, namespace_id=other.namespace_id),
        ErrorCode.VALIDATION_ERROR,
    )
    assert moved.error is not None
    assert [e["field"] for e in moved.error.details["errors"]] == ["namespace_id"]
    assert moved.sync is not None and moved.sync.namespace_id == tenant.namespace_id
    assert moved.sync.batch_size == 50  # nothing of it was applied
    assert await history_of(settings, [smuggled.command_id, moved.command_id]) == 0


# ---------------------------------------------------------------------------- lifecycle codes


async def test_invalid_transition_names_status_and_allowed_commands(
    client: SynclifeClient,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    archived = await client.archive(sync_id, reason="done")
    assert archived.status is SyncStatus.ARCHIVED
    for result in (
        await client.pause(sync_id, paused_by_user_id="u"),
        await client.resume(sync_id),
        await client.update(sync_id, batch_size=10),
        await client.cancel(sync_id),
        await client.trigger(sync_id),
    ):
        rejected(result, ErrorCode.INVALID_TRANSITION)
        assert result.error is not None
        assert result.error.details["current_status"] == "ARCHIVED"
        assert result.error.details["allowed_commands"] == ["sync.archive"]
        assert result.status is SyncStatus.ARCHIVED and result.version == archived.version


async def test_not_found(client: SynclifeClient) -> None:
    missing = new_sync_id()
    for result in (
        await client.pause(missing, paused_by_user_id="u"),
        await client.resume(missing),
        await client.update(missing, batch_size=10),
        await client.archive(missing),
    ):
        rejected(result, ErrorCode.NOT_FOUND)
        tells_nothing(result)
        assert result.sync_config_id == missing


async def test_already_exists(settings: Settings, client: SynclifeClient) -> None:
    sync_id = new_sync_id()
    first = await client.create(sync_id, **CREATE)
    again = rejected(
        await client.create(sync_id, **{**CREATE, "bucket_id": "bkt_other"}),
        ErrorCode.ALREADY_EXISTS,
    )
    assert again.sync is not None and again.sync.bucket_id == CREATE["bucket_id"]
    assert await history_of(settings, [again.command_id]) == 0
    # The same command id is not a second create: it is a replay, with the first result.
    replay = await client.send("sync.create", sync_id, CREATE, command_id=first.command_id)
    assert replay is not None and replay.model_dump() == first.model_dump()


async def test_version_conflict(client: SynclifeClient) -> None:
    sync_id = new_sync_id()
    # A draft is never scheduled: its version moves only with our commands.
    draft = await client.create(sync_id, **CREATE, initial_status="DRAFT")
    assert draft.version == 1
    stale = await client.send("sync.update", sync_id, {"batch_size": 10}, expected_version=7)
    assert stale is not None
    rejected(stale, ErrorCode.VERSION_CONFLICT)
    assert stale.error is not None
    assert stale.error.details == {"expected_version": 7, "current_version": 1}
    assert stale.version == 1 and stale.status is SyncStatus.DRAFT
    applied = await client.send("sync.update", sync_id, {"batch_size": 10}, expected_version=1)
    assert applied is not None and applied.outcome is Outcome.APPLIED and applied.version == 2
    lost_update = await client.send("sync.update", sync_id, {"batch_size": 20}, expected_version=1)
    assert lost_update is not None
    rejected(lost_update, ErrorCode.VERSION_CONFLICT)
    assert lost_update.sync is not None and lost_update.sync.batch_size == 10


# ---------------------------------------------------------------------------- unauthenticated


async def test_unauthenticated_missing_or_malformed_or_unknown_key(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    client: SynclifeClient,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    malformed = "missing or malformed"
    cases: list[tuple[str, bytes | None, str]] = [
        ("missing", None, malformed),
        ("empty", b"", malformed),
        ("no scheme", tenant.write_key.encode(), malformed),
        ("basic", b"Basic dXNlcjpwYXNzd29yZA==", malformed),
        ("bearer only", b"Bearer", malformed),
        ("short key", b"Bearer sk_short", malformed),
        ("no sk_ prefix", f"Bearer {secrets.token_urlsafe(32)}".encode(), malformed),
        ("bad characters", b"Bearer sk_" + b"!" * 43, malformed),
        ("not ascii", ("Bearer sk_" + "\u00e9" * 43).encode(), malformed),
        ("not utf-8", b"Bearer sk_\xff\xfe" + b"a" * 43, malformed),
        ("unknown", f"Bearer sk_{secrets.token_urlsafe(32)}".encode(), "unknown API key"),
        ("key of a typo", f"Bearer {tenant.write_key[:-1]}x".encode(), "unknown API key"),
    ]
    sent: list[tuple[str, str, str, str]] = []
    for name, auth, message in cases:
        command_id = str(uuid.uuid4())
        headers = envelope(command_id, "sync.pause", sync_id, auth=auth, namespace=tenant.namespace)
        written = await raw_producer.send_and_wait(
            settings.commands_topic,
            key=sync_id.encode(),
            value=json.dumps({"paused_by_user_id": "mallory"}).encode(),
            headers=headers,
        )
        own_id = derived_id(written.topic, written.partition, written.offset)
        sent.append((name, command_id, own_id, message))
    for name, _, own_id, message in sent:
        # Answered under an id of its own (v1.1), never under the ce_id it could not prove.
        result = rejected(await result_for(results, sync_id, own_id), ErrorCode.UNAUTHENTICATED)
        tells_nothing(result)
        assert result.error is not None and message in result.error.message, name
    unproven = {c for _, c, _, _ in sent}
    assert not [r for r in results.results(sync_id) if r.command_id in unproven]
    assert await history_of(settings, list(unproven)) == 0
    still = await client.pause(sync_id, paused_by_user_id="u")
    assert still.outcome is Outcome.APPLIED  # nothing paused it before


async def test_unauthenticated_revoked_key(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    conn = await connect(settings)
    try:
        key = await create_key(conn, tenant.org_id, ["syncs:write"], name="to-revoke")
        sync_id = new_sync_id()
        async with SynclifeClient(settings, api_key=key["key"], namespace=tenant.namespace) as c:
            created = await c.create(sync_id, **CREATE)
            assert created.outcome is Outcome.APPLIED
            await revoke_key(conn, key["id"])
            for result in (
                await c.pause(sync_id, paused_by_user_id="u"),
                await c.create(new_sync_id(), **CREATE),
            ):
                rejected(result, ErrorCode.UNAUTHENTICATED)
                tells_nothing(result)
                assert result.error is not None and "revoked" in result.error.message
        states = {k["id"]: k["status"] for k in await list_keys(conn, tenant.org_id)}
        assert states[key["id"]] == "revoked"
    finally:
        await conn.close()


async def test_unauthenticated_expired_key(
    settings: Settings, service: Service, tenant: Tenant, clock: Clock
) -> None:
    """A key made like ``synclife keys create --expires-in 1s``, used after it expired."""
    sync_id = new_sync_id()
    async with SynclifeClient(
        settings, api_key=tenant.write_key, namespace=tenant.namespace
    ) as owner:
        await owner.create(sync_id, **CREATE)
    conn = await connect(settings)
    try:
        # Keys are judged on the database's clock plus the service's offset, which other
        # tests of the session move: make and list the key on the service's clock.
        key = await create_key(
            conn,
            tenant.org_id,
            ["syncs:write"],
            expires_in=timedelta(seconds=1),
            clock_offset=clock.offset,
        )
        expires_at = datetime.fromisoformat(key["expires_at"])
        # The service judges expiry by its own clock (the tests' clock may run ahead).
        await asyncio.sleep((expires_at + timedelta(milliseconds=100) - clock()).total_seconds())
        async with SynclifeClient(settings, api_key=key["key"], namespace=tenant.namespace) as c:
            result = rejected(
                await c.pause(sync_id, paused_by_user_id="u"), ErrorCode.UNAUTHENTICATED
            )
        tells_nothing(result)
        assert result.error is not None and "expired" in result.error.message
        listed = await list_keys(conn, tenant.org_id, clock_offset=clock.offset)
        states = {k["id"]: k["status"] for k in listed}
        assert states[key["id"]] == "expired"
    finally:
        await conn.close()
    assert await history_of(settings, [result.command_id]) == 0


# ---------------------------------------------------------------------------- forbidden


async def test_forbidden_run_only_key_sends_pause(
    settings: Settings, client: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    for result in (
        await worker.pause(sync_id, paused_by_user_id="worker"),
        await worker.cancel(sync_id),
        await worker.create(new_sync_id(), **CREATE),
    ):
        rejected(result, ErrorCode.FORBIDDEN)
        tells_nothing(result)
        assert result.error is not None
        assert result.error.details == {"required_scope": "syncs:write"}
    # ... and a write-only key may not act as a worker.
    as_worker = rejected(await client.run_start(sync_id, worker_id="w1"), ErrorCode.FORBIDDEN)
    tells_nothing(as_worker)
    assert as_worker.error is not None
    assert as_worker.error.details == {"required_scope": "syncs:run"}


async def test_forbidden_key_limited_to_another_namespace(
    settings: Settings, service: Service, tenant: Tenant, client: SynclifeClient
) -> None:
    conn = await connect(settings)
    try:
        staging = await create_namespace(conn, tenant.org_id, "staging")
        limited = await create_key(conn, tenant.org_id, ["syncs:write"], namespaces=["staging"])
    finally:
        await conn.close()
    assert limited["namespaces"] == [staging["id"]]
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)  # in production
    for namespace in (tenant.namespace, tenant.namespace_id):
        async with SynclifeClient(settings, api_key=limited["key"], namespace=namespace) as c:
            for result in (
                await c.pause(sync_id, paused_by_user_id="u"),
                await c.create(new_sync_id(), **CREATE),
            ):
                rejected(result, ErrorCode.FORBIDDEN)
                tells_nothing(result)
    # The namespace it is limited to works, by name and by id.
    for namespace in ("staging", staging["id"]):
        async with SynclifeClient(settings, api_key=limited["key"], namespace=namespace) as c:
            ok = await c.create(new_sync_id(), **CREATE)
            assert ok.outcome is Outcome.APPLIED and ok.sync is not None
            assert ok.sync.namespace_id == staging["id"]


async def test_forbidden_namespace_of_another_org_or_unknown(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    other = await new_tenant(settings, namespaces=("elsewhere",))
    for namespace in (other.namespace_id, "elsewhere", "no-such-namespace", "ns_" + "0" * 26):
        async with SynclifeClient(settings, api_key=tenant.write_key, namespace=namespace) as c:
            result = rejected(await c.create(new_sync_id(), **CREATE), ErrorCode.FORBIDDEN)
            tells_nothing(result)


# ---------------------------------------------------------------------------- other tenants


async def test_another_orgs_sync_is_not_found_and_reveals_nothing(
    settings: Settings, service: Service, tenant: Tenant, client: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    created = await client.create(sync_id, **CREATE)
    assert created.outcome is Outcome.APPLIED
    other = await new_tenant(settings)
    truly_missing = new_sync_id()
    attempts: list[CommandResult] = []
    async with SynclifeClient(
        settings, api_key=other.write_key, namespace=other.namespace
    ) as mallory:
        baseline = rejected(
            await mallory.pause(truly_missing, paused_by_user_id="m"), ErrorCode.NOT_FOUND
        )
        for kind, data in (
            ("sync.pause", {"paused_by_user_id": "m"}),
            ("sync.resume", {}),
            ("sync.update", {"batch_size": 7}),
            ("sync.trigger", {}),
            ("sync.cancel", {"reason": "mine now"}),
            ("sync.archive", {}),
            ("sync.activate", {}),
        ):
            result = await mallory.send(kind, sync_id, data)
            assert result is not None
            attempts.append(rejected(result, ErrorCode.NOT_FOUND))
        # Even an expected version (right or wrong) tells nothing: still not_found.
        for version in (1, 99):
            result = await mallory.send(
                "sync.pause", sync_id, {"paused_by_user_id": "m"}, expected_version=version
            )
            assert result is not None
            attempts.append(rejected(result, ErrorCode.NOT_FOUND))
        taken = rejected(await mallory.create(sync_id, **CREATE), ErrorCode.ALREADY_EXISTS)
        tells_nothing(taken)
        assert taken.error is not None and taken.error.details == {}
    async with SynclifeClient(
        settings, api_key=other.run_key, namespace=other.namespace
    ) as other_worker:
        attempts.append(
            rejected(await other_worker.run_start(sync_id, worker_id="w"), ErrorCode.NOT_FOUND)
        )
    assert baseline.error is not None
    for result in attempts:
        tells_nothing(result)
        assert result.error is not None
        # The same answer as for an id that does not exist at all.
        assert result.error.details == baseline.error.details == {}
        assert result.error.message == baseline.error.message.replace(truly_missing, sync_id)
    changed = await history_of(settings, [r.command_id for r in [*attempts, taken]])
    assert changed == 0
    # The owner's sync is untouched: still PENDING (the scheduler may have requested a run).
    mine = await client.pause(sync_id, paused_by_user_id="owner")
    assert mine.outcome is Outcome.APPLIED and mine.sync is not None
    assert mine.sync.internal_id == tenant.org_id and mine.sync.batch_size == 50


async def test_same_org_other_namespace_is_not_found(
    settings: Settings, service: Service, tenant: Tenant, client: SynclifeClient
) -> None:
    conn = await connect(settings)
    try:
        await create_namespace(conn, tenant.org_id, "staging")
    finally:
        await conn.close()
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    async with SynclifeClient(settings, api_key=tenant.write_key, namespace="staging") as c:
        result = rejected(await c.pause(sync_id, paused_by_user_id="u"), ErrorCode.NOT_FOUND)
        tells_nothing(result)
        taken = rejected(await c.create(sync_id, **CREATE), ErrorCode.ALREADY_EXISTS)
        tells_nothing(taken)


# ---------------------------------------------------------------------------- run lock


async def test_lock_conflict_and_lock_lost(client: SynclifeClient, worker: SynclifeClient) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    started = await worker.run_start(sync_id, worker_id="w1", lease_seconds=60)
    assert started.outcome is Outcome.APPLIED and started.run is not None
    run_id, token = started.run["run_id"], started.run["lock_token"]

    conflict = rejected(await worker.run_start(sync_id, worker_id="w2"), ErrorCode.LOCK_CONFLICT)
    assert conflict.error is not None
    assert conflict.error.details["locked_by_worker_id"] == "w1"
    assert conflict.status is SyncStatus.ACTIVE  # the worker's own tenant sees the sync

    for data in (
        {"run_id": run_id, "lock_token": token + 1},
        {"run_id": str(uuid.uuid4()), "lock_token": token},
    ):
        lost = rejected(await worker.run_heartbeat(sync_id, **data), ErrorCode.LOCK_LOST)
        assert lost.error is not None
        assert lost.error.details == {"current_run_id": run_id}
    stale_fail = rejected(
        await worker.run_fail(sync_id, run_id=run_id, lock_token=token + 1, error="boom"),
        ErrorCode.LOCK_LOST,
    )
    assert stale_fail.sync is not None and stale_fail.sync.consecutive_failures == 0

    done = await worker.run_complete(sync_id, run_id=run_id, lock_token=token, files_synced=3)
    assert done.outcome is Outcome.APPLIED
    late = rejected(
        await worker.run_checkpoint(sync_id, run_id=run_id, lock_token=token, files_synced=1),
        ErrorCode.LOCK_LOST,
    )
    assert late.error is not None and late.error.details == {"current_run_id": run_id}


# ---------------------------------------------------------------------------- dead letters


async def test_unsupported_type_is_rejected_and_dead_lettered(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
) -> None:
    sync_id = new_sync_id()
    command_id = str(uuid.uuid4())
    value = json.dumps({"paused_by_user_id": "u"}).encode()
    written = await raw_producer.send_and_wait(
        settings.commands_topic,
        key=sync_id.encode(),
        value=value,
        headers=envelope(command_id, "sync.explode", sync_id, tenant=tenant),
    )
    # Undecodable: answered under the id derived from its offset (v1.1).
    own_id = derived_id(written.topic, written.partition, written.offset)
    result = rejected(await result_for(results, sync_id, own_id), ErrorCode.UNSUPPORTED_TYPE)
    assert result.command_type == "sync.explode"
    tells_nothing(result)
    headers, dead_value = await dead_letter_for(dlq, sync_id, command_id)
    assert dead_value == value
    assert headers["dlq_reason"] == b"unsupported_type"
    assert_redacted(headers, dead_value, tenant)


async def test_too_large_is_rejected_and_dead_lettered(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    big_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
    client: SynclifeClient,
) -> None:
    assert settings.max_message_bytes == 1024 * 1024
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    command_id = str(uuid.uuid4())
    value = json.dumps({"paused_by_user_id": "u", "reason": "x" * (1100 * 1024)}).encode()
    assert len(value) > settings.max_message_bytes
    written = await big_producer.send_and_wait(
        settings.commands_topic,
        key=sync_id.encode(),
        value=value,
        headers=envelope(command_id, "sync.pause", sync_id, tenant=tenant),
    )
    own_id = derived_id(written.topic, written.partition, written.offset)
    result = rejected(await result_for(results, sync_id, own_id), ErrorCode.TOO_LARGE)
    assert result.command_type == "sync.pause"
    tells_nothing(result)
    headers, dead_value = await dead_letter_for(dlq, sync_id, command_id)
    assert dead_value == value  # unchanged
    assert headers["dlq_reason"] == b"too_large"
    assert_redacted(headers, dead_value, tenant)
    # The service went on: the next command is applied, and the big one changed nothing.
    after = await client.pause(sync_id, paused_by_user_id="u")
    assert after.outcome is Outcome.APPLIED
    assert await history_of(settings, [command_id]) == 0


async def test_missing_specversion_is_dead_lettered_with_a_result(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
) -> None:
    sync_id = new_sync_id()
    command_id = str(uuid.uuid4())
    value = json.dumps(CREATE).encode()
    headers = envelope(command_id, "sync.create", sync_id, drop=("ce_specversion",), tenant=tenant)
    written = await raw_producer.send_and_wait(
        settings.commands_topic, key=sync_id.encode(), value=value, headers=headers
    )
    # The sender gets a rejection, under the id derived from the message's offset ...
    own_id = derived_id(written.topic, written.partition, written.offset)
    result = rejected(await result_for(results, sync_id, own_id), ErrorCode.VALIDATION_ERROR)
    assert result.error is not None and "ce_specversion" in result.error.message
    assert result.command_type == "sync.create"
    tells_nothing(result)
    # ... and the message is kept as it came, but for the key.
    dead_headers, dead_value = await dead_letter_for(dlq, sync_id, command_id)
    assert dead_value == value
    assert dead_headers["dlq_reason"] == b"bad_envelope"
    assert "ce_specversion" not in dead_headers
    assert_redacted(dead_headers, dead_value, tenant)
    original = dict(headers)
    for name in ("ce_id", "ce_type", "ce_source", "ce_subject", "x-namespace", "content-type"):
        assert dead_headers[name] == original[name]
    assert dead_headers["dlq_source_topic"] == settings.commands_topic.encode()
    assert int(dead_headers["dlq_source_partition"]) in range(settings.topic_partitions)
    assert int(dead_headers["dlq_source_offset"]) >= 0
    assert await history_of(settings, [command_id]) == 0


async def test_message_without_readable_id_is_dead_lettered_and_answered_under_its_offset(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
    client: SynclifeClient,
) -> None:
    sync_id = new_sync_id()
    marker = str(uuid.uuid4())
    written = await raw_producer.send_and_wait(
        settings.commands_topic,
        key=sync_id.encode(),
        value=json.dumps(CREATE).encode(),
        headers=[
            *envelope(None, "sync.create", sync_id, tenant=tenant),
            ("x-marker", marker.encode()),
        ],
    )
    # The next command on the same key (same partition, later offset) gets its result ...
    created = await client.create(sync_id, **CREATE)
    assert created.outcome is Outcome.APPLIED and created.version == 1
    headers, _ = await dead_letter_for(dlq, sync_id)
    assert headers["x-marker"] == marker.encode()
    assert headers["dlq_reason"] == b"bad_envelope"
    assert_redacted(headers, None, tenant)
    # ... and the id-less message got its rejection under the id derived from its offset
    # (v1.1; v1 gave it none), published under its key.
    own_id = derived_id(written.topic, written.partition, written.offset)
    rejected(await result_for(results, sync_id, own_id), ErrorCode.VALIDATION_ERROR)
    await results.wait(sync_id, 2)
    assert sorted(r.command_id for r in results.results(sync_id)) == sorted(
        [created.command_id, own_id]
    )


def assert_redacted(headers: dict[str, bytes], value: bytes | None, tenant: Tenant) -> None:
    assert headers["authorization"] == b"[redacted]"
    blob = b"\n".join([*(k.encode() for k in headers), *headers.values(), value or b""])
    for secret in (tenant.write_key, tenant.run_key):
        assert secret.encode() not in blob
    assert b"Bearer" not in blob
