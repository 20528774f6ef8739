"""No API key, key hash, authorization header or database password ever leaves the service.

A run with real keys (write, run, revoked, limited to another namespace), real rejections and
real dead letters, with every logger (synclife's, aiokafka's, asyncpg's) captured at DEBUG;
then the logs, and every result, lifecycle event and dead letter of the run, are searched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import traceback
import uuid
from collections.abc import Iterable
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import pytest
from aiokafka import AIOKafkaProducer
from pydantic import SecretStr

from events.auth import KeyMaterial, hash_key
from events.client import SynclifeClient, new_sync_id
from events.envelope import derived_id
from events.errors import SynclifeError
from events.messages import CommandResult
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, revoke_key
from statemachine import ErrorCode, Outcome
from tests.helpers.live import Seen, Tenant

pytestmark = pytest.mark.stack

CREATE: dict[str, Any] = {
    "bucket_id": "bkt_secrets",
    "connection_id": "conn_secrets",
    "provider": "s3",
    "source_path": "secret-bucket/in/",
    "created_by_user_id": "user_ada",
}

#: Every logger at DEBUG: the root (everything propagates to it) and the chatty libraries.
LOGGERS = ("", "synclife", "events", "aiokafka", "asyncpg", "transitions")


def database_password(settings: Settings) -> str | None:
    password = urlsplit(settings.database_url.get_secret_value()).password
    return unquote(password) if password else None


def forms(key: str) -> list[bytes]:
    """A key and every form of its hash something could leak."""
    digest = hash_key(key)
    return [
        key.encode(),
        key.removeprefix("sk_").encode(),  # the secret part alone
        digest,
        digest.hex().encode(),
        digest.hex().upper().encode(),
        base64.b64encode(digest),
        base64.urlsafe_b64encode(digest).rstrip(b"="),
        ("\\x" + digest.hex()).encode(),  # Postgres' bytea text form
    ]


#: The one place the word may appear: the service's own hint of the header's format, in the
#: message of an ``unauthenticated`` result. It holds no key material.
FORMAT_HINT: Final = b"Bearer sk_..."


def leaks(blob: bytes, needles: Iterable[bytes]) -> list[bytes]:
    blob = blob.replace(FORMAT_HINT, b"")
    return [n for n in needles if n and n in blob]


def headers_for(
    command_id: str | None,
    kind: str,
    sync_id: str | None,
    auth: str,
    namespace: str,
    *,
    auth_first: bool = False,
) -> list[tuple[str, bytes]]:
    ce = {
        "ce_specversion": "1.0",
        "ce_id": command_id,
        "ce_type": kind,
        "ce_source": "//tests/secrets",
        "ce_subject": sync_id,
        "content-type": "application/json",
        "x-namespace": namespace,
    }
    out = [(k, v.encode()) for k, v in ce.items() if v is not None]
    auth_header = ("authorization", auth.encode())
    return [auth_header, *out] if auth_first else [*out, auth_header]


async def result_for(results: Seen, key: str, command_id: str) -> CommandResult:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        for r in results.results(key):
            if r.command_id == command_id:
                return r
        assert loop.time() < deadline, f"no result for {command_id}"
        await asyncio.sleep(0.02)


async def dead_letters(dlq: Seen, marker: str, count: int) -> list[tuple[dict[str, bytes], bytes]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while True:
        found = [
            (h, v or b"")
            for items in list(dlq.by_key.values())
            for h, v in items
            if h.get("x-marker") == marker.encode()
        ]
        if len(found) >= count:
            return found
        assert loop.time() < deadline, f"{len(found)} of {count} dead letters"
        await asyncio.sleep(0.02)


async def test_no_key_hash_or_password_in_logs_results_events_or_dead_letters(
    settings: Settings,
    service: Service,
    tenant: Tenant,
    client: SynclifeClient,
    worker: SynclifeClient,
    big_producer: AIOKafkaProducer,
    results: Seen,
    lifecycle: Seen,
    dlq: Seen,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    password = database_password(settings)
    assert password, "the stack's database has a password: it must never show"

    conn = await connect(settings)
    try:
        await create_namespace(conn, tenant.org_id, "staging")
        limited = await create_key(conn, tenant.org_id, ["syncs:write"], namespaces=["staging"])
        revoked = await create_key(conn, tenant.org_id, ["syncs:write"])
        await revoke_key(conn, revoked["id"])
    finally:
        await conn.close()
    keys = [tenant.write_key, tenant.run_key, limited["key"], revoked["key"]]

    # --- a run: lifecycle commands, the run protocol, rejections --------------------------
    sync_id = new_sync_id()
    sync_ids = [sync_id]
    outcomes: list[CommandResult] = [
        await client.create(sync_id, **CREATE, metadata={"team": "data"}),
        await client.update(sync_id, batch_size=20),
    ]
    started = await worker.run_start(sync_id, worker_id="w1", lease_seconds=60)
    assert started.run is not None
    run = {"run_id": started.run["run_id"], "lock_token": started.run["lock_token"]}
    outcomes += [
        started,
        await worker.run_heartbeat(sync_id, **run),
        await worker.run_checkpoint(sync_id, **run, files_synced=2, resume_cursor="c1"),
        await worker.run_complete(sync_id, **run, files_synced=3),
        await client.pause(sync_id, paused_by_user_id="u1", reason="audit"),
        await client.resume(sync_id, resumed_by_user_id="u1"),
    ]
    assert all(r.outcome is Outcome.APPLIED for r in outcomes), outcomes
    rejected = [
        await worker.pause(sync_id, paused_by_user_id="w"),  # forbidden: scope
        await client.run_fail(sync_id, **run, error="x"),  # forbidden: scope
        await worker.run_heartbeat(sync_id, **run),  # lock_lost
    ]
    for key, namespace in ((limited["key"], tenant.namespace), (revoked["key"], "production")):
        async with SynclifeClient(settings, api_key=key, namespace=namespace) as other:
            rejected.append(await other.pause(sync_id, paused_by_user_id="m"))
    # Keys in malformed headers: the result must not echo the header.
    marker = str(uuid.uuid4())
    malformed = {
        f"Token {tenant.write_key}": ErrorCode.UNAUTHENTICATED,
        f"Bearer  {tenant.write_key}x": ErrorCode.UNAUTHENTICATED,
        f"{tenant.write_key}": ErrorCode.UNAUTHENTICATED,
        f"bearer {tenant.run_key}": ErrorCode.FORBIDDEN,  # the scheme is case-insensitive
    }
    raw_ids: dict[str, ErrorCode] = {}
    for auth, code in malformed.items():
        command_id = str(uuid.uuid4())
        written = await big_producer.send_and_wait(
            settings.commands_topic,
            key=sync_id.encode(),
            value=json.dumps({"paused_by_user_id": "u"}).encode(),
            headers=[
                *headers_for(command_id, "sync.pause", sync_id, auth, tenant.namespace),
                ("x-marker", marker.encode()),
            ],
        )
        # v1.1: an unauthenticated message is answered under the id derived from its offset.
        if code is ErrorCode.UNAUTHENTICATED:
            command_id = derived_id(written.topic, written.partition, written.offset)
        raw_ids[command_id] = code
    for command_id, code in raw_ids.items():
        result = await result_for(results, sync_id, command_id)
        assert result.error is not None and result.error.code is code
        rejected.append(result)
    assert [r.outcome for r in rejected] == [Outcome.REJECTED] * len(rejected)

    # --- dead letters, each carrying a real key --------------------------------------------
    dead_sync = new_sync_id()
    sync_ids.append(dead_sync)
    ids = {name: f"{name}-{uuid.uuid4()}" for name in ("d1", "d2", "d3", "d4")}
    auth = f"Bearer {tenant.write_key}"
    big = json.dumps({"paused_by_user_id": "u", "reason": "x" * (1100 * 1024)}).encode()
    undecodable: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]] = [
        (
            dead_sync.encode(),
            b"{not json",
            headers_for(ids["d1"], "sync.pause", dead_sync, auth, "p"),
        ),
        (dead_sync.encode(), b"{}", headers_for(ids["d2"], "sync.nope", dead_sync, auth, "p")),
        (dead_sync.encode(), big, headers_for(ids["d3"], "sync.pause", dead_sync, auth, "p")),
        # The header in other spellings, twice, first: all redacted.
        (
            dead_sync.encode(),
            b"[",
            [
                ("AUTHORIZATION", auth.encode()),
                *headers_for(ids["d4"], "sync.pause", dead_sync, auth, "p"),
                ("Authorization", f"Bearer {tenant.run_key}".encode()),
            ],
        ),
        # No readable id, no key, a tiny value, the key first: the raw record's first bytes
        # (which is what a Kafka client library logs of a batch) hold the key.
        (None, b"", headers_for(None, "sync.pause", None, auth, "p", auth_first=True)),
        (None, b"", headers_for(None, "x", None, f"Bearer {tenant.run_key}", "p", auth_first=True)),
    ]
    dead_marker = str(uuid.uuid4())
    answered: list[str] = []  # v1.1: each is answered under the id derived from its offset
    for key, value, headers in undecodable:
        written = await big_producer.send_and_wait(
            settings.commands_topic,
            key=key,
            value=value,
            headers=[*headers, ("x-marker", dead_marker.encode())],
        )
        if key is not None:
            answered.append(derived_id(written.topic, written.partition, written.offset))
    dead = await dead_letters(dlq, dead_marker, len(undecodable))
    assert len(dead) == len(undecodable)
    for dead_headers, _ in dead:
        assert dead_headers["authorization"] == b"[redacted]"
    for command_id in answered:
        rejected.append(await result_for(results, dead_sync, command_id))

    # Let the relay, the scheduler and the clients log a little more.
    await asyncio.sleep(0.5)

    # --- search everything ------------------------------------------------------------------
    needles = [n for key in keys for n in forms(key)]
    needles += [password.encode(), b"Bearer", b"bearer "]

    lines: list[str] = []
    for record in caplog.records:
        lines.append(record.getMessage())
        lines.append(repr(vars(record)))  # args, extra fields bound to the record, ...
        if record.exc_info and record.exc_info[1] is not None:
            lines.extend(traceback.format_exception(record.exc_info[1]))
    lines.append(caplog.text)
    log_blob = "\n".join(lines).encode("utf-8", "backslashreplace")
    by_logger = {r.name for r in caplog.records}
    # The capture saw the libraries at DEBUG (the service's Kafka client among them).
    assert any(name.startswith("aiokafka") for name in by_logger), by_logger
    found = leaks(log_blob, needles)
    where = sorted(
        {
            f"{r.name}: {r.getMessage()[:300]!r}"
            for r in caplog.records
            if leaks(f"{r.getMessage()}{vars(r)!r}".encode("utf-8", "backslashreplace"), found)
        }
    )
    assert found == [], "\n".join(where[:10])

    outputs: list[bytes] = []
    for seen in (results, lifecycle, dlq):
        for key, items in list(seen.by_key.items()):
            for published, payload in items:
                mine = key in sync_ids or published.get("x-marker") in (
                    marker.encode(),
                    dead_marker.encode(),
                )
                if mine:
                    names = [k.encode() for k in published]
                    outputs.append(b"\n".join([key.encode(), *names, *published.values()]))
                    outputs.append(payload or b"")
    assert len(outputs) > 2 * (len(outcomes) + len(rejected))
    for blob in outputs:
        assert leaks(blob, needles) == []
    for result in rejected:  # a rejection says why, never with the key
        assert result.error is not None
        assert leaks(result.model_dump_json().encode(), needles) == []


def test_settings_repr_hides_database_url_and_api_key(settings: Settings) -> None:
    password = database_password(settings) or "a-password-" + secrets.token_hex(8)
    api_key = "sk_" + secrets.token_urlsafe(32)
    url = f"postgresql://synclife:{password}@127.0.0.1:15432/synclife"
    explicit = Settings(database_url=SecretStr(url), api_key=SecretStr(api_key))
    for s in (explicit, Settings(), settings):
        texts = [repr(s), str(s), s.model_dump_json(), repr(s.model_dump()), f"{s}", f"{s!r}"]
        for text in texts:
            assert password not in text
            assert api_key not in text
            assert "postgresql://" not in text
    assert explicit.api_key is not None and explicit.api_key.get_secret_value() == api_key
    # The other objects that hold a key keep it out of their repr.
    material = KeyMaterial()
    assert material.plaintext not in repr(material)
    assert material.key_hash.hex() not in repr(material)


async def test_refused_database_connection_does_not_show_the_password(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    wrong = "wrong-" + secrets.token_urlsafe(16)
    parts = urlsplit(settings.database_url.get_secret_value())
    host = f"{parts.hostname}:{parts.port}"
    bad = Settings(database_url=SecretStr(f"postgresql://synclife:{wrong}@{host}/synclife"))
    with pytest.raises(SynclifeError) as caught:
        await connect(bad)
    text = "".join(traceback.format_exception(caught.value)) + repr(caught.value) + caplog.text
    assert wrong not in text
    assert "SYNCLIFE_DATABASE_URL" in str(caught.value)  # it says what to check instead
