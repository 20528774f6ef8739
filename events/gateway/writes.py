"""The write routes: each builds a command, publishes it with the caller's own key and
namespace, waits for its result on Postgres, and answers it.

One path for all of them (``_command``): authorize (401/400/403 never reach Kafka); record the
request, checking in the same statement that the sync is the caller's and in the path's bucket
(404 otherwise) and reading what a retry of it already got; publish; wait. The command id is a
hash of the key's id, the method, the path and the ``Idempotency-Key`` (so a retried request is
the same command, and tenants never collide), else a fresh one. Postgres round trips of a
write: the record, which checks the key too once the process knows it (``caller``; else the
authorization first), and the waiter's look-up (shared by every request that waits at that
moment).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from aiokafka.errors import KafkaError
from ulid import ULID

from events.auth import SCOPE_READ, SCOPE_WRITE, parse_authorization
from events.client import new_sync_id
from events.contract.http import (
    CommandResultModel,
    DeleteResponse,
    OperationResponse,
    PauseRequest,
    ResumeRequest,
    SyncConfigurationModel,
    SyncCreateRequest,
    SyncUpdateRequest,
    TriggerResponse,
)
from events.envelope import Undecodable, command_headers, decode_command, derived_id
from events.errors import TransientError
from events.gateway.app import ASYNC_ANSWERS
from events.gateway.caller import Caller, record_authorized
from events.gateway.common import (
    body_model,
    clean_header,
    expected_version,
    gateway_of,
    json_answer,
    json_object,
    not_found,
    query_flag,
    weak_if_match,
    who,
)
from events.gateway.errors import ApiError, from_command_error
from events.gateway.queries import ONE_SYNC
from events.gateway.waiter import Stored
from events.messages import CommandResult
from events.service.access import Access
from events.service.db import acquire
from statemachine.commands import CommandType
from statemachine.decision import Outcome
from statemachine.errors import ErrorCode

__all__ = ["add_routes", "answer_of"]

SOURCE: Final = "synclife-gateway"
SYNC: Final = "/v1/buckets/{bucket_id}/syncs/{sync_config_id}"

# The request's record, the check that its sync is the caller's (its tenant, namespace and
# bucket, not archived; skipped for a create), and what an earlier request with the same
# command id recorded and got: one statement. Nothing is recorded for a sync not found.
_RECORD: Final = """
    WITH s AS (
        SELECT 1 FROM syncs
        WHERE sync_config_id = $6 AND internal_id = $7 AND namespace_id = $8
          AND bucket_id = $9 AND NOT archived
    ), ins AS (
        INSERT INTO gateway_requests (command_id, key_id, method, path, body_sha256,
                                      sync_config_id)
        SELECT $1, $2, $3, $4, $5, $6 WHERE $10::bool OR EXISTS (SELECT 1 FROM s)
        ON CONFLICT (command_id) DO NOTHING
        RETURNING 1
    )
    SELECT (SELECT count(*) FROM ins) AS inserted, EXISTS (SELECT 1 FROM s) AS found,
           g.body_sha256, g.sync_config_id AS recorded_sync, p.result::text AS result
    FROM (SELECT 1) AS one
    LEFT JOIN gateway_requests g ON g.command_id = $1
    LEFT JOIN processed_commands p ON p.command_id = $1"""
# A record another request inserted while ours ran (its row was not in our snapshot).
_RECORDED: Final = """
    SELECT g.body_sha256, g.sync_config_id AS recorded_sync, p.result::text AS result
    FROM gateway_requests g LEFT JOIN processed_commands p USING (command_id)
    WHERE g.command_id = $1"""
_OPERATION: Final = """
    SELECT g.method, g.path, p.result::text AS result
    FROM gateway_requests g LEFT JOIN processed_commands p USING (command_id)
    WHERE g.command_id = $1 AND g.key_id = $2"""


@dataclass(frozen=True, slots=True)
class _Write:
    """A write route's command: its type, the sync (None: a new one), its data."""

    kind: CommandType
    sync_config_id: str | None
    data: dict[str, Any]


def _command_id(key_id: str, request: web.Request) -> str:
    key = clean_header(request, "Idempotency-Key")
    if key is None:
        return f"http_{ULID()}"
    text = "\x00".join((key_id, request.method, request.path, key))
    return "http_" + hashlib.sha256(text.encode()).hexdigest()[:48]


def _fingerprint(request: web.Request, raw: bytes) -> bytes:
    """What makes two requests the same: the query, the If-Match and the body."""
    if_match = request.headers.get("If-Match", "")
    head = f"{request.path_qs}\x00{if_match}\x00".encode("utf-8", "surrogateescape")
    return hashlib.sha256(head + raw).digest()


async def _command(
    request: web.Request, access: Access | Caller, write: _Write, raw: bytes
) -> web.Response:
    caller = access if isinstance(access, Caller) else Caller.known(request, access)
    while True:
        answer = await _command_of(request, caller, write, raw)
        if answer is not None:
            return answer
        await caller.confirm()  # the key was not the one it was known as: authorize anew


async def _command_of(
    request: web.Request, caller: Caller, write: _Write, raw: bytes
) -> web.Response | None:
    gateway = gateway_of(request)
    assert gateway.pool is not None and gateway.waiter is not None  # noqa: S101 - started
    bucket_id = request.match_info["bucket_id"]
    async with caller.first():
        expected = expected_version(request)
        if weak_if_match(request):
            await _refuse_weak(request, await caller.confirm(), write.sync_config_id)
        command_id = _command_id(caller.key_id, request)
        fingerprint = _fingerprint(request, raw)
        creating = write.sync_config_id is None
        sync_id = write.sync_config_id or new_sync_id()
        data = {**write.data, "bucket_id": bucket_id} if creating else write.data
        namespace = caller.access.namespace_id if caller.access is not None else ""
        message = _message(request, namespace, command_id, write.kind, sync_id, data, expected)
    args = (command_id, request.method, request.path, fingerprint, sync_id, bucket_id, creating)
    async with acquire(gateway.pool) as conn:
        if caller.access is None:
            row = await record_authorized(conn, caller, args)
            if row is None:
                return None
        else:
            access = caller.access
            row = await conn.fetchrow(
                _RECORD,
                command_id,
                access.key_id,
                request.method,
                request.path,
                fingerprint,
                sync_id,
                access.internal_id,
                access.namespace_id,
                bucket_id,
                creating,
            )
        assert row is not None  # noqa: S101 - always one row
        recorded = row if row["body_sha256"] is not None else None
        if recorded is None and not row["inserted"] and (creating or row["found"]):
            recorded = await conn.fetchrow(_RECORDED, command_id)
    if recorded is not None:  # a retry of a request already recorded
        if bytes(recorded["body_sha256"]) != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request (another body, query or "
                "If-Match): use a new key for a new request",
                code="idempotency_key_reused",
            )
        if recorded["result"] is not None:
            return _answer(request, write.kind, recorded["result"])
        if recorded["recorded_sync"] != sync_id:  # a create: the sync id of the first try
            sync_id = recorded["recorded_sync"]
            message = _message(request, namespace, command_id, write.kind, sync_id, data, expected)
    elif not creating and not row["found"]:
        raise not_found()
    stored = await _publish_and_wait(request, message, command_id)
    if stored is None:
        return _unfinished(request, command_id)
    return _answer(request, write.kind, stored.result)


async def _publish_and_wait(
    request: web.Request, message: _Message, command_id: str
) -> Stored | None:
    """Publish ``message`` and wait for its result (None: not within the wait)."""
    gateway = gateway_of(request)
    assert gateway.waiter is not None  # noqa: S101 - started
    waiting = {command_id: gateway.waiter.expect(command_id)}
    try:
        derived = await _publish(request, message)
        # A command the service cannot authenticate after all (a key revoked since) is
        # answered under the id derived from where it was written: wait for either.
        waiting[derived] = gateway.waiter.expect(derived)
        return await gateway.waiter.result(
            list(waiting.values()), gateway.settings.gateway_result_wait_seconds
        )
    finally:
        for waited, future in waiting.items():
            gateway.waiter.forget(waited, future)


async def _refuse_weak(request: web.Request, access: Access, sync_id: str | None) -> None:
    """A weak If-Match never matches: 412, or 404 for a sync that is not the caller's (as
    without the header). Nothing is recorded or published."""
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    if sync_id is not None:
        args = (sync_id, access.internal_id, access.namespace_id, request.match_info["bucket_id"])
        async with acquire(pool) as conn:
            if await conn.fetchval(ONE_SYNC, *args) is None:
                raise not_found()
    raise ApiError(
        412,
        ErrorCode.VERSION_CONFLICT.value,
        'If-Match compares strongly: a weak tag (W/"...") matches no version; send the ETag '
        'as GET gives it ("<version>")',
        code=ErrorCode.VERSION_CONFLICT.value,
        details={"header": "If-Match"},
    )


@dataclass(frozen=True, slots=True)
class _Message:
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


def _message(
    request: web.Request,
    namespace: str,
    command_id: str,
    kind: CommandType,
    sync_id: str,
    data: dict[str, Any],
    expected: int | None,
) -> _Message:
    """The command as it goes on the commands topic, with the caller's own key and namespace
    header (``namespace`` if it has none), checked by the service's own decoder: what it could
    not decode (too large, text no column can store) would be answered under another id, so it
    is refused here."""
    token = parse_authorization(request.headers.get("Authorization", "").encode())
    assert token is not None  # noqa: S101 - authorized: the header holds a key
    headers = command_headers(
        command_id=command_id,
        command_type=kind.value,
        sync_config_id=sync_id,
        api_key=token,
        namespace=clean_header(request, "X-Namespace") or namespace,
        source=SOURCE,
        expected_version=expected,
    )
    message = _Message(sync_id.encode(), json.dumps(data).encode(), headers)
    limit = gateway_of(request).settings.max_message_bytes
    decoded = decode_command(message.key, message.value, message.headers, limit)
    if isinstance(decoded, Undecodable):
        if decoded.code is ErrorCode.TOO_LARGE:
            raise ApiError(413, "too_large", decoded.message, code="too_large")
        if decoded.reason == "invalid_json":
            raise ApiError(400, "invalid_json", decoded.message, code="invalid_json")
        raise ApiError(422, decoded.code.value, decoded.message, code=decoded.code.value)
    return message


async def _publish(request: web.Request, message: _Message) -> str:
    """Publish; returns the id the service would answer under if it could not authenticate
    the message (``derived_id``)."""
    gateway = gateway_of(request)
    assert gateway.producer is not None  # noqa: S101 - started
    try:
        written = await gateway.producer.send_and_wait(
            gateway.settings.commands_topic,
            key=message.key,
            value=message.value,
            headers=message.headers,
        )
    except KafkaError as exc:
        raise TransientError(f"Kafka did not take the command: {type(exc).__name__}") from exc
    return derived_id(written.topic, written.partition, written.offset)


def _unfinished(request: web.Request, command_id: str) -> web.Response:
    """No result within the wait: 202 and where to look (``Prefer: respond-async``), else
    504 naming the same place."""
    location = f"/v1/operations/{command_id}"
    if "respond-async" in request.headers.get("Prefer", "").lower():
        ASYNC_ANSWERS.labels("202").inc()
        body = OperationResponse(operation_id=command_id, status="pending", result=None)
        return json_answer(body.model_dump(mode="json"), 202, {"Location": location})
    ASYNC_ANSWERS.labels("504").inc()
    raise ApiError(
        504,
        "result_timeout",
        "the command was accepted but its result did not come in time; its outcome will be at "
        "details.operation_url (or retry with the same Idempotency-Key)",
        code="result_timeout",
        details={"operation_id": command_id, "operation_url": location},
        headers={"Location": location},
    )


def answer_of(
    kind: CommandType, result_json: str, full_sync: bool = False
) -> tuple[int, dict[str, Any]]:
    """A stored command result as the write route answers it: (status, body); an error
    result raises ``ApiError``."""
    result = CommandResult.model_validate_json(result_json)
    if result.outcome is Outcome.REJECTED or result.sync is None:
        if result.error is None:
            raise ApiError(500, "internal", "a rejected command without an error", code="internal")
        raise from_command_error(result.error)
    if kind is CommandType.ARCHIVE:
        return 200, DeleteResponse(sync_config_id=result.sync.sync_config_id).model_dump()
    if kind is CommandType.TRIGGER:
        body = TriggerResponse(
            sync_config_id=result.sync.sync_config_id,
            sync_job_id=result.sync_job_id,
            full_sync=full_sync,
        )
        return 200, body.model_dump()
    return 200, SyncConfigurationModel.from_sync(result.sync).model_dump(mode="json")


def _answer(request: web.Request, kind: CommandType, result_json: str) -> web.Response:
    full = kind is CommandType.TRIGGER and bool(query_flag(request, "full_sync"))
    status, body = answer_of(kind, result_json, full)
    headers = {"ETag": f'"{body["version"]}"'} if "version" in body else None
    return json_answer(body, status, headers)


# --------------------------------------------------------------------------- routes


async def create(request: web.Request) -> web.Response:
    caller = await Caller.of(request, SCOPE_WRITE)
    async with caller.first():
        data, raw = await json_object(request)
        body = body_model(SyncCreateRequest, data)
    return await _command(
        request, caller, _Write(CommandType.CREATE, None, body.command_data()), raw
    )


async def update(request: web.Request) -> web.Response:
    caller = await Caller.of(request, SCOPE_WRITE)
    async with caller.first():
        data, raw = await json_object(request)
        body = body_model(SyncUpdateRequest, data)
    write = _Write(CommandType.UPDATE, request.match_info["sync_config_id"], body.command_data())
    return await _command(request, caller, write, raw)


def _simple(kind: CommandType) -> Any:
    """A route whose optional body is the command's data as it is (unlock, delete): the
    processor validates it (unknown keys: 422, named)."""

    async def route(request: web.Request) -> web.Response:
        caller = await Caller.of(request, SCOPE_WRITE)
        async with caller.first():
            data, raw = await json_object(request)
        write = _Write(kind, request.match_info["sync_config_id"], data)
        return await _command(request, caller, write, raw)

    return route


def _holding(kind: CommandType, model: type[PauseRequest] | type[ResumeRequest]) -> Any:
    """Pause and resume: the optional body (``hold``, ``until``, ``reason``, ``force``,
    ``mode``, ``run``; CONTRACT.md v1.1) checked here (422, each field named), then the
    command's data."""

    async def route(request: web.Request) -> web.Response:
        caller = await Caller.of(request, SCOPE_WRITE)
        async with caller.first():
            data, raw = await json_object(request)
            body = body_model(model, data)
        write = _Write(kind, request.match_info["sync_config_id"], body.command_data())
        return await _command(request, caller, write, raw)

    return route


async def trigger(request: web.Request) -> web.Response:
    caller = await Caller.of(request, SCOPE_WRITE)
    async with caller.first():
        data, raw = await json_object(request)
        full = query_flag(request, "full_sync")
    if full:
        data = {**data, "mode": "full"}
    write = _Write(CommandType.TRIGGER, request.match_info["sync_config_id"], data)
    return await _command(request, caller, write, raw)


async def operation(request: web.Request) -> web.Response:
    """A write's outcome by its operation id (the command id), for the key that made it."""
    access = await who(request, SCOPE_READ)
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - started
    operation_id = request.match_info["operation_id"]
    async with acquire(gateway.pool) as conn:
        row = await conn.fetchrow(_OPERATION, operation_id, access.key_id)
    if row is None:
        raise not_found("operation")
    result = None
    if row["result"] is not None:
        result = CommandResultModel.from_result(CommandResult.model_validate_json(row["result"]))
    body = OperationResponse(
        operation_id=operation_id, status="pending" if result is None else "done", result=result
    )
    return json_answer(body.model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/buckets/{bucket_id}/syncs", create)
    app.router.add_patch(SYNC, update)
    app.router.add_delete(SYNC, _simple(CommandType.ARCHIVE))
    app.router.add_post(f"{SYNC}/pause", _holding(CommandType.PAUSE, PauseRequest))
    app.router.add_post(f"{SYNC}/resume", _holding(CommandType.RESUME, ResumeRequest))
    app.router.add_post(f"{SYNC}/unlock", _simple(CommandType.UNLOCK))
    app.router.add_post(f"{SYNC}/trigger", trigger)
    app.router.add_get("/v1/operations/{operation_id}", operation)
