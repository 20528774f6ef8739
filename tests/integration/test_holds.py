"""Pause holds, timed pauses and resume modes on the real stack: Kafka in, Postgres, Kafka out,
the scheduler on the service's controlled clock."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from events.client import SynclifeClient, new_sync_id
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key
from statemachine import ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Clock, Seen, Tenant, run_cli, scheduler_passes
from tests.helpers.messages import CREATE

pytestmark = pytest.mark.stack

S = SyncStatus


async def key_for(settings: Settings, tenant: Tenant, scope: str, user: str | None) -> str:
    conn = await connect(settings)
    try:
        key = await create_key(conn, tenant.org_id, [scope], user_id=user)
    finally:
        await conn.close()
    return str(key["key"])


@contextlib.asynccontextmanager
async def client_of(
    settings: Settings, tenant: Tenant, scope: str = "syncs:write", user: str | None = None
) -> AsyncIterator[SynclifeClient]:
    """A client with a key of its own (``scope``, owned by ``user``)."""
    key = await key_for(settings, tenant, scope, user)
    async with SynclifeClient(settings, api_key=key, namespace=tenant.namespace) as client:
        yield client


async def stored_status(settings: Settings, sync_id: str) -> tuple[str, int, list[Any]]:
    conn = await connect(settings)
    try:
        row = await conn.fetchrow(
            "SELECT status, version, data::jsonb -> 'pause_holds' AS holds FROM syncs "
            "WHERE sync_config_id = $1",
            sync_id,
        )
    finally:
        await conn.close()
    assert row is not None
    return row["status"], row["version"], json.loads(row["holds"])


def gap_free(seen: Seen, sync_id: str) -> list[Any]:
    events = seen.events(sync_id)
    assert [e[2].version for e in events] == list(range(1, len(events) + 1))
    return events


async def test_two_holders_a_users_resume_leaves_the_maintenance_pause(
    settings: Settings, service: Service, tenant: Tenant, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    async with (
        client_of(settings, tenant, user="ops_oncall") as ops,
        client_of(settings, tenant, user="alice") as alice,
    ):
        await alice.create(sync_id, **CREATE)
        maintenance = await ops.pause(sync_id, hold="maintenance:INC-42", reason="db upgrade")
        assert (maintenance.outcome, maintenance.status) == (Outcome.APPLIED, S.SUSPENDED)
        assert maintenance.holds == ["maintenance:INC-42"]
        mine = await alice.pause(sync_id, reason="my audit")
        assert mine.outcome is Outcome.APPLIED
        assert mine.holds == ["maintenance:INC-42", "user:alice"]
        assert mine.sync is not None and mine.sync.pause_reason == "db upgrade"  # the earliest

        # Alice's plain resume releases her hold only: still SUSPENDED.
        resumed = await alice.resume(sync_id)
        assert (resumed.outcome, resumed.status) == (Outcome.APPLIED, S.SUSPENDED)
        assert resumed.holds == ["maintenance:INC-42"]
        # Naming the maintenance hold is not hers to do.
        refused = await alice.resume(sync_id, hold="maintenance:INC-42")
        assert refused.outcome is Outcome.REJECTED
        assert refused.error is not None and refused.error.code is ErrorCode.FORBIDDEN
        # The maintenance release resumes it.
        released = await ops.resume(sync_id, hold="maintenance:INC-42")
        assert (released.outcome, released.status) == (Outcome.APPLIED, S.ACTIVE)
        assert released.holds == []
    assert released.version is not None
    await lifecycle.wait(sync_id, released.version)
    events = gap_free(lifecycle, sync_id)
    kinds = [(e[1], e[2].actor) for e in events if e[1] != "sync.run_requested"]
    assert kinds == [
        ("sync.created", "user:user_ada"),
        ("sync.status_changed", "user:ops_oncall"),
        ("sync.holds_changed", "user:alice"),
        ("sync.holds_changed", "user:alice"),
        ("sync.status_changed", "user:ops_oncall"),
    ]
    resume_event = [e[2] for e in events if e[1] == "sync.status_changed"][-1]
    assert resume_event.runs_skipped_while_paused is not None


async def test_a_run_failing_while_paused_keeps_the_maintenance_hold(
    settings: Settings, service: Service, tenant: Tenant, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    async with (
        client_of(settings, tenant, user="ops_oncall") as ops,
        client_of(settings, tenant, user="alice") as alice,
        client_of(settings, tenant, scope="syncs:run") as worker,
    ):
        await alice.create(sync_id, **CREATE)
        started = await worker.run_start(sync_id, worker_id="w1")
        assert started.outcome is Outcome.APPLIED and started.run is not None
        paused = await ops.pause(sync_id, hold="maintenance:INC-7", reason="db upgrade")
        assert paused.holds == ["maintenance:INC-7"]
        failed = await worker.run_fail(
            sync_id,
            run_id=started.run["run_id"],
            lock_token=started.run["lock_token"],
            error="boom",
        )
        assert (failed.outcome, failed.status) == (Outcome.APPLIED, S.SUSPENDED)
        assert failed.sync is not None and failed.sync.consecutive_failures == 1
        assert [h.hold for h in failed.sync.pause_holds] == ["maintenance:INC-7"]
        # Alice holds nothing: her plain resume releases nothing, the sync stays paused.
        resumed = await alice.resume(sync_id)
        assert (resumed.outcome, resumed.status) == (Outcome.NOOP, S.SUSPENDED)
    assert failed.version is not None
    await lifecycle.wait(sync_id, failed.version)
    kinds = [e[1] for e in gap_free(lifecycle, sync_id)]
    assert kinds[-2:] == ["sync.status_changed", "sync.run_failed"], kinds  # the pause, then it
    status, version, holds = await stored_status(settings, sync_id)
    assert (status, version) == ("SUSPENDED", failed.version)
    assert [(h["hold"], h["paused_by_user_id"]) for h in holds] == [
        ("maintenance:INC-7", "ops_oncall")
    ]


async def test_a_paused_sync_whose_run_fails_for_the_fifth_time_gains_the_failures_hold(
    settings: Settings, service: Service, tenant: Tenant, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    async with (
        client_of(settings, tenant, user="ops_oncall") as ops,
        client_of(settings, tenant, scope="syncs:run") as worker,
    ):
        await ops.create(sync_id, **CREATE)
        for attempt in range(5):
            started = await worker.run_start(sync_id, worker_id="w1")
            assert started.outcome is Outcome.APPLIED and started.run is not None, started
            if attempt == 4:  # the fifth run: paused while it goes on
                paused = await ops.pause(sync_id, hold="maintenance:INC-8")
                assert paused.holds == ["maintenance:INC-8"]
            failed = await worker.run_fail(
                sync_id,
                run_id=started.run["run_id"],
                lock_token=started.run["lock_token"],
                error=f"boom {attempt}",
            )
            assert failed.outcome is Outcome.APPLIED, failed
            assert failed.status is (S.SUSPENDED if attempt == 4 else S.ACTIVE)
    assert failed.sync is not None and failed.sync.consecutive_failures == 5
    assert failed.status is S.SUSPENDED
    assert [h.hold for h in failed.sync.pause_holds] == ["maintenance:INC-8", "system:failures"]
    assert failed.version is not None
    await lifecycle.wait(sync_id, failed.version)
    last = [(e[1], e[2]) for e in gap_free(lifecycle, sync_id)][-2:]
    assert [kind for kind, _ in last] == ["sync.run_failed", "sync.holds_changed"]
    added = last[1][1]
    assert (added.actor, added.trigger) == ("system", "auto_suspend")
    assert added.reason is not None and "after 5 consecutive failures: boom 4" in added.reason


async def test_a_timed_pause_resumes_by_itself_once(
    settings: Settings,
    client: SynclifeClient,
    service: Service,
    clock: Clock,
    lifecycle: Seen,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    paused = await client.pause(sync_id, paused_by_user_id="user_bob", until="PT2S")
    assert paused.status is S.SUSPENDED and paused.sync is not None
    (hold,) = paused.sync.pause_holds
    assert hold.until is not None and paused.sync.paused_at is not None
    assert (hold.until - paused.sync.paused_at).total_seconds() == 2
    clock.advance(3)  # the service's clock, not a sleep
    await scheduler_passes(service)
    status, version, holds = await stored_status(settings, sync_id)
    assert (status, holds) == ("ACTIVE", [])
    await lifecycle.wait(sync_id, version)
    expired = [e[2] for e in gap_free(lifecycle, sync_id) if e[2].trigger == "pause_expired"]
    assert len(expired) == 1  # one versioned change
    (change,) = expired
    assert (change.actor, change.command_id, change.to_status) == ("system", None, "ACTIVE")
    # A new sync is due at once: unless the scheduler requested its first run before the
    # pause committed, it fell due once while paused.
    pause_version = paused.version or 0
    requested_first = any(
        kind == "sync.run_requested" and e.version < pause_version
        for _, kind, e in gap_free(lifecycle, sync_id)
    )
    assert change.runs_skipped_while_paused == (0 if requested_first else 1)
    # Later passes find nothing to do: released exactly once.
    await scheduler_passes(service)
    assert (await stored_status(settings, sync_id))[1] == version


@pytest.mark.parametrize("mode", ["full", "incremental"])
async def test_resume_mode_in_run_requested(
    mode: str,
    client: SynclifeClient,
    worker: SynclifeClient,
    service: Service,
    clock: Clock,
    lifecycle: Seen,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE, polling_interval_seconds=30)
    started = await worker.run_start(sync_id, worker_id="w1", lease_seconds=60)
    assert started.run is not None
    done = await worker.run_complete(
        sync_id, run_id=str(started.run["run_id"]), lock_token=int(started.run["lock_token"])
    )
    assert done.sync is not None and done.sync.last_sync_at is not None
    await client.pause(sync_id, paused_by_user_id="user_bob")
    clock.advance(31)  # falls due while paused
    resumed = await client.resume(sync_id, mode=mode)
    assert resumed.status is S.ACTIVE and resumed.sync_job_id is not None
    assert resumed.version is not None
    await lifecycle.wait(sync_id, resumed.version)
    request = [e[2] for e in lifecycle.events(sync_id) if e[1] == "sync.run_requested"][-1]
    assert request.sync_job_id == resumed.sync_job_id and request.trigger == "resume"
    if mode == "full":
        assert request.modified_since is None and request.full_sync is True
    else:
        assert request.modified_since == done.sync.last_sync_at and request.full_sync is False
    status_change = [e[2] for e in lifecycle.events(sync_id) if e[1] == "sync.status_changed"]
    assert status_change[-1].runs_skipped_while_paused == 1


async def test_force_needs_admin_and_releases_every_hold(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    sync_id = new_sync_id()
    async with (
        client_of(settings, tenant, user="ops_oncall") as ops,
        client_of(settings, tenant, user="alice") as alice,
        client_of(settings, tenant, "syncs:admin", user="root") as admin,
    ):
        await alice.create(sync_id, **CREATE)
        await ops.pause(sync_id, hold="maintenance:INC-7")
        await alice.pause(sync_id)
        refused = await alice.resume(sync_id, force=True)
        assert refused.error is not None and refused.error.code is ErrorCode.FORBIDDEN
        assert refused.sync is not None and refused.sync.status is S.SUSPENDED
        forced = await admin.resume(sync_id, force=True)
        assert (forced.outcome, forced.status, forced.holds) == (Outcome.APPLIED, S.ACTIVE, [])


@pytest.mark.parametrize("label", ["bulk:bulk_01J0000000000000000000000", "system:failures"])
async def test_a_clients_pause_with_a_service_label_is_refused(
    client: SynclifeClient, label: str
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    result = await client.pause(sync_id, paused_by_user_id="user_bob", hold=label)
    assert result.outcome is Outcome.REJECTED
    assert result.error is not None and result.error.code is ErrorCode.VALIDATION_ERROR
    assert [e["field"] for e in result.error.details["errors"]] == ["hold"]
    assert result.sync is not None and result.sync.status is S.PENDING


async def test_cli_send_pause_with_a_friendly_duration(
    settings: Settings, service: Service, tenant: Tenant, client: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    env = {
        **os.environ,
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
        "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
        "SYNCLIFE_API_KEY": tenant.write_key,
        "SYNCLIFE_NAMESPACE": tenant.namespace,
    }
    args = ("send", "pause", sync_id, "--hold", "maint:cli", "--until", "2h", "--set")
    code, out, err = await run_cli(*args, "paused_by_user_id=u1", env=env)
    assert code == 0, err
    assert '"holds":["maint:cli"]' in out
    status, _, holds = await stored_status(settings, sync_id)
    assert status == "SUSPENDED" and holds[0]["hold"] == "maint:cli"
    code, _, err = await run_cli("send", "trigger", sync_id, "--until", "2h", env=env)
    assert code != 0 and "--until applies to pause" in err
