"""Pause and resume end to end: Kafka in, Postgres, Kafka out, on the real stack."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from events.client import SynclifeClient, new_sync_id
from events.envelope import derived_id
from events.service.settings import Settings
from statemachine import ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Seen, Tenant
from tests.helpers.messages import CREATE, envelope

pytestmark = pytest.mark.stack


def versions(seen: Seen, sync_id: str) -> list[int]:
    return [e[2].version for e in seen.events(sync_id)]


async def settle(seen: Seen, sync_id: str, version: int) -> list[tuple[str, str, Any]]:
    """Wait until the event of ``version`` is on the topic; return all events of the sync."""
    await seen.wait(sync_id, version)
    return seen.events(sync_id)


async def test_create_pause_resume_events_are_gap_free(
    client: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    created = await client.create(sync_id, **CREATE)
    paused = await client.pause(sync_id, paused_by_user_id="user_bob", reason="audit")
    resumed = await client.resume(sync_id, resumed_by_user_id="user_bob")

    assert [r.outcome for r in (created, paused, resumed)] == [Outcome.APPLIED] * 3
    assert (created.status, paused.status, resumed.status) == (
        SyncStatus.PENDING,
        SyncStatus.SUSPENDED,
        SyncStatus.ACTIVE,
    )
    assert created.version == 1
    assert paused.version is not None and resumed.version is not None
    assert created.version < paused.version < resumed.version

    events = await settle(lifecycle, sync_id, resumed.version)
    # Every version once, in order, with its fixed event id.
    assert [e[2].version for e in events] == list(range(1, resumed.version + 1))
    assert [e[0] for e in events] == [f"{sync_id}:v{e[2].version}" for e in events]
    assert events[0][1] == "sync.created"
    changes = [e[2] for e in events if e[1] == "sync.status_changed"]
    assert [(c.from_status, c.to_status) for c in changes] == [
        ("PENDING", "SUSPENDED"),
        ("SUSPENDED", "ACTIVE"),
    ]
    pause_event, resume_event = changes
    assert pause_event.sync.paused and not pause_event.sync.is_active
    assert pause_event.sync.pause_reason == "audit"
    assert pause_event.sync.paused_by_user_id == "user_bob"
    assert pause_event.sync.paused_at is not None
    assert pause_event.reason == "audit" and pause_event.version == paused.version
    s = resume_event.sync
    assert (s.paused, s.is_active, s.pause_reason, s.paused_at, s.paused_by_user_id) == (
        False,
        True,
        None,
        None,
        None,
    )
    # The first run is requested either by the scheduler (PENDING is due at once, if it ran
    # before the pause) or by the resume (then due): a full run, never synced before.
    requests = [e for e in events if e[1] == "sync.run_requested"]
    assert requests
    for _, _, request in requests:
        assert request.modified_since is None
        assert "modified_since" in request.model_fields_set  # present, and null: a full sync
    if len(resumed.events) == 2:
        assert resumed.events[1] == requests[-1][0] == f"{sync_id}:v{resumed.version}"
    else:
        assert requests[0][2].actor == "system" and requests[0][2].version < paused.version


async def test_repeated_pause_is_noop_without_event(
    client: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    first = await client.pause(sync_id, paused_by_user_id="u1")
    again = await client.pause(sync_id, paused_by_user_id="u1")
    assert (first.outcome, again.outcome) == (Outcome.APPLIED, Outcome.NOOP)
    assert again.version == first.version and again.events == []
    resumed = await client.resume(sync_id)
    resumed_again = await client.resume(sync_id)
    assert (resumed.outcome, resumed_again.outcome) == (Outcome.APPLIED, Outcome.NOOP)
    assert resumed_again.events == [] and resumed.version is not None
    events = await settle(lifecycle, sync_id, resumed.version)
    assert [e[2].version for e in events] == list(range(1, resumed.version + 1))
    # The events each applied command caused are exactly those its result lists; the noops
    # caused none. (The scheduler's own run request, if it came first, has no command id.)
    by_command: dict[str | None, list[str]] = {}
    for event_id, _, data in events:
        by_command.setdefault(data.command_id, []).append(event_id)
    for result in (first, resumed):
        assert by_command[result.command_id] == result.events
    assert again.command_id not in by_command and resumed_again.command_id not in by_command


async def test_replayed_command_id_gets_same_result_and_no_new_event(
    client: SynclifeClient, lifecycle: Seen
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    command_id = str(uuid.uuid4())
    data = {"paused_by_user_id": "u1", "reason": "once"}
    first = await client.send("sync.pause", sync_id, data, command_id=command_id)
    second = await client.send("sync.pause", sync_id, data, command_id=command_id)
    assert first is not None and second is not None
    assert first.outcome is Outcome.APPLIED
    assert second.model_dump() == first.model_dump()
    after = await client.cancel(sync_id)
    assert after.version is not None and first.version is not None
    assert after.version == first.version + 1  # the replay changed nothing in between
    events = await settle(lifecycle, sync_id, after.version)
    assert [e[2].command_id for e in events].count(command_id) == 1


async def test_resume_of_cancelled_sync_is_invalid_transition(client: SynclifeClient) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    cancelled = await client.cancel(sync_id, reason="no longer needed")
    assert cancelled.status is SyncStatus.CANCELED
    result = await client.resume(sync_id)
    assert result.outcome is Outcome.REJECTED and result.error is not None
    assert result.error.code is ErrorCode.INVALID_TRANSITION
    assert result.error.details["current_status"] == "CANCELED"
    allowed = result.error.details["allowed_commands"]
    assert {"sync.archive", "sync.cancel"} <= set(allowed)
    assert not {"sync.resume", "sync.pause", "sync.update", "sync.trigger"} & set(allowed)
    assert result.status is SyncStatus.CANCELED and result.version == cancelled.version
    paused = await client.pause(sync_id, paused_by_user_id="u1")
    assert paused.error is not None and paused.error.code is ErrorCode.INVALID_TRANSITION


async def test_validation_error_names_each_field(client: SynclifeClient) -> None:
    result = await client.create(
        new_sync_id(), **{**CREATE, "polling_interval_seconds": 5, "batch_size": 500}
    )
    assert result.outcome is Outcome.REJECTED and result.error is not None
    assert result.error.code is ErrorCode.VALIDATION_ERROR
    fields = {e["field"]: e for e in result.error.details["errors"]}
    assert fields["polling_interval_seconds"]["limit"] == {"ge": 30}
    assert fields["batch_size"]["limit"] == {"le": 100}
    assert result.sync is None


async def test_any_kafka_client_can_drive_it(
    settings: Settings,
    service: object,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    lifecycle: Seen,
) -> None:
    """A plain producer that follows the contract: headers by hand, JSON value, sync id key."""
    sync_id = new_sync_id()
    auth = f"Bearer {tenant.write_key}"
    for kind, data in (("sync.create", CREATE), ("sync.pause", {"paused_by_user_id": "u"})):
        await raw_producer.send_and_wait(
            settings.commands_topic,
            key=sync_id.encode(),
            value=json.dumps(data).encode(),
            headers=envelope(
                str(uuid.uuid4()), kind, sync_id, auth=auth, namespace=tenant.namespace_id
            ),
        )
    await results.wait(sync_id, 2)
    outcomes = [(r.command_type, r.outcome, r.status) for r in results.results(sync_id)]
    assert outcomes == [
        ("sync.create", Outcome.APPLIED, SyncStatus.PENDING),
        ("sync.pause", Outcome.APPLIED, SyncStatus.SUSPENDED),
    ]
    # The pause's event: the scheduler may request the first run (PENDING is due at once) before
    # the pause, so it is the second or the third event.
    paused_version = results.results(sync_id)[1].version
    assert paused_version is not None
    await lifecycle.wait(sync_id, paused_version)
    headers = lifecycle.by_key[sync_id][paused_version - 1][0]
    assert headers["ce_specversion"] == b"1.0" and headers["ce_subject"] == sync_id.encode()
    assert headers["content-type"] == b"application/json"
    assert headers["ce_type"] == b"sync.status_changed"
    assert headers["ce_time"].endswith(b"Z")


async def test_command_without_key_is_unauthenticated(
    settings: Settings, service: object, raw_producer: AIOKafkaProducer, results: Seen
) -> None:
    sync_id = new_sync_id()
    command_id = str(uuid.uuid4())
    written = await raw_producer.send_and_wait(
        settings.commands_topic,
        key=sync_id.encode(),
        value=json.dumps(CREATE).encode(),
        headers=envelope(command_id, "sync.create", sync_id, namespace="production"),
    )
    (result,) = (await results.wait(sync_id, 1)) and results.results(sync_id)
    # Under the id derived from where the message is (v1.1), not the ce_id it cannot prove.
    assert result.command_id == derived_id(written.topic, written.partition, written.offset)
    assert result.outcome is Outcome.REJECTED and result.error is not None
    assert result.error.code is ErrorCode.UNAUTHENTICATED
    assert result.sync is None and result.version is None


async def test_undecodable_message_goes_to_dlq_redacted(
    settings: Settings,
    service: object,
    tenant: Tenant,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
    client: SynclifeClient,
) -> None:
    sync_id = new_sync_id()
    command_id = str(uuid.uuid4())
    written = await raw_producer.send_and_wait(
        settings.commands_topic,
        key=sync_id.encode(),
        value=b"{not json",
        headers=envelope(command_id, "sync.create", sync_id, tenant=tenant),
    )
    # The commands after it are processed.
    after = await client.create(sync_id, **CREATE)
    assert after.outcome is Outcome.APPLIED

    (dead,) = (await dlq.wait(sync_id, 1)) and dlq.by_key[sync_id]
    headers, value = dead
    assert value == b"{not json"
    assert headers["authorization"] == b"[redacted]"
    assert tenant.write_key.encode() not in b"".join(headers.values())
    assert headers["dlq_reason"] == b"invalid_json"
    assert headers["dlq_source_topic"] == settings.commands_topic.encode()
    assert int(headers["dlq_source_offset"]) >= 0
    own_id = derived_id(written.topic, written.partition, written.offset)  # v1.1
    rejected = [r for r in results.results(sync_id) if r.command_id == own_id]
    assert len(rejected) == 1 and rejected[0].error is not None
    assert rejected[0].error.code is ErrorCode.VALIDATION_ERROR
