"""Hostile input on the real stack: it never leaks, never replays or reserves another command's
id, and every command id that reached the service gets exactly one result (issue 16, items 1,
3 and 9; the contract's "v1.1 additions", Results).

- An undecodable message carrying another tenant's ``ce_id`` gets a rejection under an id of
  its own, not that tenant's stored result.
- An unauthenticated message cannot reserve a command id: the real sender's command with that
  id is applied.
- A command without a Kafka key, or whose key differs from ``ce_subject``, is rejected.
- A poison command (processing keeps failing) gets one ``internal`` result, and a resend the
  same one, with no effect.
- A key revoked between a batch's read and its write is refused: the write fails, the batch is
  decided again.
- Text from a message is bounded in every result, error, dead letter header and log line, and
  the service goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from events.client import SynclifeClient, new_sync_id
from events.envelope import command_headers, derived_id
from events.messages import CommandResult
from events.service import processor
from events.service.app import Service
from events.service.db import connect
from events.service.processor import decisions, transaction
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace
from statemachine import ErrorCode, Outcome, SyncStatus
from tests.helpers.live import Seen, Tenant, new_tenant
from tests.helpers.messages import CREATE, Headers, dead_letter_for, envelope, rejected, result_for

pytestmark = pytest.mark.stack

#: ~900 KB of control characters (no U+0000: a header holding one is unreadable, not echoed).
CONTROL = "".join(chr(c) for c in range(1, 32)) * 31_000
#: As much of it as JSON holds in ~900 KB (each control character is a 6-byte escape there).
IN_JSON = CONTROL[:150_000]
#: What any one result, or any header the service adds to a dead letter, may weigh at most.
RESULT_BYTES = 8 * 1024
ECHO = 200


async def send(
    producer: AIOKafkaProducer,
    settings: Settings,
    key: str | bytes | None,
    value: bytes,
    headers: Headers,
) -> str:
    """Publish one command; returns the id the service derives for it."""
    written = await producer.send_and_wait(
        settings.commands_topic,
        key=key.encode() if isinstance(key, str) else key,
        value=value,
        headers=headers,
    )
    return derived_id(written.topic, written.partition, written.offset)


async def sql(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    conn = await connect(settings)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def history_of(settings: Settings, command_ids: list[str]) -> int:
    rows = await sql(
        settings,
        "SELECT count(*) AS n FROM sync_history WHERE command_id = ANY($1::text[])",
        command_ids,
    )
    return int(rows[0]["n"])


def everywhere(results: Seen, command_id: str) -> list[tuple[str, CommandResult]]:
    """Every result published for ``command_id``, under any key."""
    return [
        (key, r)
        for key in list(results.by_key)
        for r in results.results(key)
        if r.command_id == command_id
    ]


# ----------------------------------------------------------------------------- hole 1: replay


async def test_undecodable_message_cannot_replay_another_tenants_result(
    settings: Settings,
    service: Service,
    client: SynclifeClient,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
) -> None:
    victim_sync = new_sync_id()
    created = await client.create(victim_sync, **CREATE, metadata={"secret": "s3cr3t"})
    assert created.outcome is Outcome.APPLIED
    mallory = await new_tenant(settings)
    own_sync = new_sync_id()
    # Not JSON, no authorization, the victim's command id, Mallory's own sync as key.
    own_id = await send(
        raw_producer,
        settings,
        own_sync,
        b"{not json",
        envelope(created.command_id, "sync.create", own_sync, namespace=mallory.namespace),
    )
    await dead_letter_for(dlq, own_sync, created.command_id)
    # A command after it on the same key: once its result is seen, so is anything published
    # for the malformed one (one partition, in order).
    barrier = await client.create(own_sync, **CREATE)
    await result_for(results, own_sync, barrier.command_id)
    # The victim's result was published once, under the victim's key, and never again.
    await results.wait(victim_sync, 1)
    published = everywhere(results, created.command_id)
    assert [key for key, _ in published] == [victim_sync]
    answer = rejected(await result_for(results, own_sync, own_id), ErrorCode.VALIDATION_ERROR)
    assert answer.sync is None and answer.sync_config_id == own_sync
    assert [r.command_id for r in results.results(own_sync) if r.sync is not None] == [
        barrier.command_id
    ]
    assert b"s3cr3t" not in b"".join(v or b"" for _, v in results.by_key[own_sync])


# ----------------------------------------------------------------------------- hole 9: reserve


async def test_unauthenticated_message_cannot_reserve_a_command_id(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    client: SynclifeClient,
    raw_producer: AIOKafkaProducer,
    results: Seen,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    future_id = str(uuid.uuid4())  # the id the real sender will use next
    squats = [
        await send(
            raw_producer,
            settings,
            sync_id,
            json.dumps({"paused_by_user_id": "mallory"}).encode(),
            envelope(future_id, "sync.pause", sync_id, auth=auth, namespace=tenant.namespace),
        )
        for auth in (None, f"Bearer sk_{secrets.token_urlsafe(32)}")
    ]
    # The real sender's command with that id, sent after them, is processed as new: applied.
    paused = await client.send(
        "sync.pause", sync_id, {"paused_by_user_id": "u"}, command_id=future_id, timeout=15
    )
    assert paused is not None and paused.outcome is Outcome.APPLIED
    assert paused.status is SyncStatus.SUSPENDED
    # The squatters were answered under ids of their own.
    for own_id in squats:
        squat = rejected(await result_for(results, sync_id, own_id), ErrorCode.UNAUTHENTICATED)
        assert squat.command_id == own_id and squat.sync is None


async def test_client_with_a_revoked_key_gets_unauthenticated_under_the_derived_id(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    conn = await connect(settings)
    try:
        key = await create_key(conn, tenant.org_id, ["syncs:write"])
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key["id"])
    finally:
        await conn.close()
    async with SynclifeClient(settings, api_key=key["key"], namespace=tenant.namespace) as c:
        result = await c.send("sync.create", new_sync_id(), CREATE, timeout=15)
    assert result is not None
    rejected(result, ErrorCode.UNAUTHENTICATED)
    assert result.command_id.startswith(f"kafka:{settings.commands_topic}:")


# ----------------------------------------------------------------------------- hole 9: keys


async def test_a_command_whose_kafka_key_is_missing_or_differs_is_rejected(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    client: SynclifeClient,
    raw_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    pause = json.dumps({"paused_by_user_id": "u"}).encode()
    cases: list[tuple[str, str | bytes | None, str, bytes]] = [
        ("no key", None, "sync.pause", pause),
        ("empty key", b"", "sync.pause", pause),
        ("another sync's key", new_sync_id(), "sync.pause", pause),
        ("binary key", b"\xff\xfe", "sync.pause", pause),
        ("create under another key", new_sync_id(), "sync.create", json.dumps(CREATE).encode()),
    ]
    sent: list[tuple[str, str]] = []
    for name, key, kind, value in cases:
        subject = sync_id if kind == "sync.pause" else new_sync_id()
        command_id = str(uuid.uuid4())
        await send(
            raw_producer, settings, key, value, envelope(command_id, kind, subject, tenant=tenant)
        )
        sent.append((name, command_id))
        if kind == "sync.create":
            created_id = subject
    for name, command_id in sent:
        [(_, result)] = await wait_everywhere(results, command_id)
        rejected(result, ErrorCode.VALIDATION_ERROR)
        assert result.error is not None
        assert [e["field"] for e in result.error.details["errors"]] == ["key"], name
    # Nothing changed, nothing was created, nothing was dead-lettered (they were decodable).
    assert await history_of(settings, [c for _, c in sent]) == 0
    assert await sql(settings, "SELECT 1 FROM syncs WHERE sync_config_id = $1", created_id) == []
    ids = {c.encode() for _, c in sent}
    assert not [h for items in list(dlq.by_key.values()) for h, _ in items if h.get("ce_id") in ids]
    # Unauthenticated too: the derived id, published under the sync id (there is no key).
    own_id = await send(
        raw_producer, settings, None, pause, envelope(str(uuid.uuid4()), "sync.pause", sync_id)
    )
    rejected(await result_for(results, sync_id, own_id), ErrorCode.UNAUTHENTICATED)
    after = await client.pause(sync_id, paused_by_user_id="u")
    assert after.outcome is Outcome.APPLIED  # none of them paused it


async def wait_everywhere(
    results: Seen, command_id: str, timeout: float = 20.0
) -> list[tuple[str, CommandResult]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (found := everywhere(results, command_id)):
        assert loop.time() < deadline, f"no result for {command_id}"
        await asyncio.sleep(0.02)
    return found


# ----------------------------------------------------------------------------- hole 3: poison


async def test_a_poison_command_gets_one_internal_result_and_a_resend_the_same(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    client: SynclifeClient,
    dlq: Seen,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    poison_id = str(uuid.uuid4())
    real_decide = getattr(decisions, "decide")  # noqa: B009 - the name the batch calls

    def decide(sync: Any, command: Any, *args: Any) -> Any:
        if command.command_id == poison_id:
            raise RuntimeError("a bug that input " + "x" * 1000 + " triggers")
        return real_decide(sync, command, *args)

    monkeypatch.setattr(decisions, "decide", decide)
    data = {"paused_by_user_id": "u", "reason": "r" * 900}
    first = await client.send("sync.pause", sync_id, data, command_id=poison_id, timeout=60)
    assert first is not None
    rejected(first, ErrorCode.INTERNAL)
    assert first.error is not None and first.error.details == {}
    assert "r" * 20 not in first.model_dump_json()  # nothing of the input echoed
    assert (first.command_id, first.sync) == (poison_id, None)
    headers, _ = await dead_letter_for(dlq, sync_id, poison_id)
    assert headers["dlq_reason"] == b"processing_failed: RuntimeError"
    [row] = await sql(
        settings, "SELECT key_id, outcome FROM processed_commands WHERE command_id = $1", poison_id
    )
    assert (row["key_id"], row["outcome"]) == (tenant.write_key_id, "rejected")
    # A resend is the same command: the same result, no effect (even once the bug is gone).
    monkeypatch.setattr(decisions, "decide", real_decide)
    again = await client.send("sync.pause", sync_id, data, command_id=poison_id, timeout=15)
    assert again is not None and again.model_dump() == first.model_dump()
    assert await history_of(settings, [poison_id]) == 0
    after = await client.pause(sync_id, paused_by_user_id="u")
    assert after.outcome is Outcome.APPLIED


async def test_a_stored_sync_that_no_longer_validates_answers_internal(
    settings: Settings, service: Service, client: SynclifeClient, dlq: Seen
) -> None:
    sync_id = new_sync_id()
    created = await client.create(sync_id, **CREATE, initial_status="SUSPENDED")
    assert created.status is SyncStatus.SUSPENDED  # no timer: the scheduler leaves it alone
    await sql(
        settings,
        """UPDATE syncs SET data = jsonb_set(data::jsonb, '{batch_size}', '100000')
           WHERE sync_config_id = $1""",
        sync_id,
    )
    command_id = str(uuid.uuid4())
    result = await client.send(
        "sync.resume", sync_id, {"resumed_by_user_id": "u"}, command_id=command_id, timeout=60
    )
    assert result is not None
    rejected(result, ErrorCode.INTERNAL)
    headers, _ = await dead_letter_for(dlq, sync_id, command_id)
    assert headers["dlq_reason"].startswith(b"processing_failed: ")
    # The service goes on with other syncs.
    other = await client.create(new_sync_id(), **CREATE)
    assert other.outcome is Outcome.APPLIED


# ----------------------------------------------------------------------------- hole 9: revoked


@dataclass
class Record:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    partition: int
    offset: int


async def test_a_key_revoked_while_a_batch_is_in_flight_is_refused(
    settings: Settings, client: SynclifeClient, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE, initial_status="SUSPENDED")
    conn = await connect(settings)
    try:
        key = await create_key(conn, tenant.org_id, ["syncs:write"])
        command_id = str(uuid.uuid4())
        record = Record(
            settings.commands_topic,
            sync_id.encode(),
            json.dumps({"resumed_by_user_id": "u"}).encode(),
            command_headers(
                command_id=command_id,
                command_type="sync.resume",
                sync_config_id=sync_id,
                api_key=key["key"],
                namespace=tenant.namespace,
                source="test",
            ),
            0,
            10**12 + secrets.randbelow(10**9),  # an offset of its own: its derived id is new
        )
        real_write = transaction.write
        revoked: list[int] = []

        async def write(c: asyncpg.Connection, writes: Any) -> None:
            # The batch read the key while it was valid; it is revoked before the write.
            if not revoked and any(row[0] == command_id for row in writes.processed):
                revoked.append(1)
                await conn.execute(
                    "UPDATE api_keys SET revoked_at = now() WHERE key_id = $1", key["id"]
                )
            await real_write(c, writes)

        monkeypatch.setattr(transaction, "write", write)
        other = await connect(settings)
        try:
            with pytest.raises(asyncpg.SerializationError):
                await processor.apply_batch(other, settings, [record])
            assert revoked == [1]
            # Decided again, on what is there now: unauthenticated, under the derived id.
            stats = await processor.apply_batch(other, settings, [record])
        finally:
            await other.close()
        rows = await conn.fetch(
            "SELECT command_id, result FROM processed_commands WHERE command_id = ANY($1::text[])",
            [command_id, derived_id(record.topic, record.partition, record.offset)],
        )
        status = await conn.fetchval("SELECT status FROM syncs WHERE sync_config_id = $1", sync_id)
    finally:
        await conn.close()
    assert stats.rejected == 1 and stats.applied == 0
    [(done_id, result)] = [(r["command_id"], json.loads(r["result"])) for r in rows]
    assert done_id.startswith("kafka:")
    assert result["error"]["code"] == "unauthenticated"
    assert status == SyncStatus.SUSPENDED.value  # the resume was not applied


# ----------------------------------------------------------------------------- hole 2: echoes


async def test_every_echo_is_bounded_and_the_service_goes_on(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    client: SynclifeClient,
    big_producer: AIOKafkaProducer,
    results: Seen,
    dlq: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="synclife")
    conn = await connect(settings)
    try:
        await create_namespace(conn, tenant.org_id, "staging")
    finally:
        await conn.close()
    sync_id = new_sync_id()
    await client.create(sync_id, **CREATE)
    pause = json.dumps({"paused_by_user_id": "u"}).encode()
    auth = f"Bearer {tenant.write_key}"
    # (name, key, value, headers, answered under the ce_id (else the derived id), code)
    cases: list[tuple[str, str | None, bytes, Headers, bool, ErrorCode]] = []

    def case(
        name: str,
        value: bytes = pause,
        kind: str = "sync.pause",
        *,
        command_id: str | None = None,
        key: str | None = sync_id,
        subject: str | None = sync_id,
        own: bool = True,
        code: ErrorCode = ErrorCode.VALIDATION_ERROR,
        headers: dict[str, str] | None = None,
    ) -> None:
        extra = dict(headers or {})
        built = envelope(
            command_id or str(uuid.uuid4()),
            kind,
            subject,
            auth=extra.pop("authorization", auth),
            namespace=extra.pop("x-namespace", tenant.namespace),
            extra=extra,
        )
        cases.append((name, key, value, built, own, code))

    case("ce_type", kind="sync." + CONTROL, own=False, code=ErrorCode.UNSUPPORTED_TYPE)
    case(
        "ce_type, unauthenticated",
        kind=CONTROL,
        own=False,
        code=ErrorCode.UNSUPPORTED_TYPE,
        headers={"authorization": "Bearer nope"},
    )
    case("x-namespace", code=ErrorCode.FORBIDDEN, headers={"x-namespace": CONTROL})
    case("unknown field name", json.dumps({"paused_by_user_id": "u", IN_JSON: 1}).encode())
    case("field value", json.dumps({"paused_by_user_id": "u", "reason": IN_JSON}).encode())
    case("user id", json.dumps({"paused_by_user_id": IN_JSON}).encode())
    case("ce_id", command_id="c" + CONTROL, own=False)
    case("ce_subject", subject=CONTROL, own=False)
    case("ce_expectedversion", headers={"ce_expectedversion": CONTROL})
    case(
        "authorization",
        own=False,
        code=ErrorCode.UNAUTHENTICATED,
        headers={"authorization": "Bearer " + CONTROL},
    )
    case("a header of a megabyte", own=False, code=ErrorCode.TOO_LARGE, headers={"x": CONTROL * 2})
    case(
        "a huge header name",
        headers={"x-" + CONTROL[:400_000]: "v", "ce_expectedversion": "-1"},
    )
    expected: list[tuple[str, str, str, ErrorCode]] = []  # (name, result key, id, code)
    for name, key, data, sent, own, code in cases:
        derived = await send(big_producer, settings, key, data, sent)
        command_id = dict(sent)["ce_id"].decode() if own else derived
        expected.append((name, key or derived, command_id, code))
    answered: list[CommandResult] = []
    for name, key, command_id, code in expected:
        result = await result_for(results, key, command_id, timeout=30)
        assert result.error is not None and result.error.code is code, (name, result.error)
        answered.append(result)
    # Every result, as published, is small, and every text in it short.
    for key in {k for _, k, _, _ in expected}:
        for published, value in results.by_key[key]:
            size = len(value or b"") + sum(len(k) + len(v) for k, v in published.items())
            assert size < RESULT_BYTES, size
    for result in answered:
        assert result.error is not None
        assert len(result.error.message) <= 2 * ECHO, result.error.message
        assert len(result.command_type) <= ECHO
        for entry in result.error.details.get("errors", []):
            assert all(len(str(v)) <= ECHO for v in entry.values()), entry
    # The headers the service adds to a dead letter are short.
    for items in list(dlq.by_key.values()):
        for added, _ in items:
            for name in ("dlq_reason", "dlq_source_topic", "dlq_source_partition"):
                if name in added:
                    assert len(added[name]) <= ECHO
    # So are the log lines, and the context they carry.
    for record in caplog.records:
        assert len(record.getMessage()) <= 1000, record.getMessage()[:300]
        for field in ("command_id", "sync_config_id"):
            assert len(str(getattr(record, field, ""))) <= ECHO
    # The service went on: the next command is applied.
    after = await client.pause(sync_id, paused_by_user_id="u")
    assert after.outcome is Outcome.APPLIED
