"""synclife's bulk routes: ``POST /v1/sync-bulk/pause`` and ``/resume`` (a bulk command by
selector), ``POST /v1/sync-bulk/{operation_id}/undo``, ``GET /v1/sync-bulk/{operation_id}``
(progress and counts from Postgres) and ``POST /v1/sync-bulk/preview`` (the match count).

A write publishes its command (key and ``ce_subject``: the operation id) with the caller's key
and namespace, as every write route does, records it in ``gateway_requests`` (so a retry with
the same ``Idempotency-Key`` is the same command and the same operation) and waits for its
result; a bulk operation may outlast the wait: 202 (``Prefer: respond-async``) or 504, with
``/v1/operations/{command id}``, and ``GET /v1/sync-bulk/{operation_id}`` shows its progress.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from aiohttp import web
from pydantic import BaseModel
from ulid import ULID

from events.auth import SCOPE_READ, SCOPE_WRITE
from events.contract.http_bulk import (
    BulkOperationResponse,
    BulkPauseRequest,
    BulkPreviewRequest,
    BulkPreviewResponse,
    BulkResultResponse,
    BulkResumeRequest,
    BulkUndoRequest,
)
from events.gateway.common import body_model, gateway_of, json_answer, json_object, not_found, who
from events.gateway.errors import ApiError, from_command_error
from events.gateway.writes import (
    _command_id,
    _fingerprint,
    _message,
    _publish_and_wait,
    _unfinished,
)
from events.messages import CommandResult
from events.service.access import Access
from events.service.bulk.queries import operation_view, preview
from events.service.bulk.requests import OPERATION_ID, canonical_operation_id
from events.service.db import acquire
from statemachine.commands import CommandType
from statemachine.decision import Outcome
from statemachine.errors import ErrorCode

__all__ = ["add_routes"]

# The request's record and what an earlier request with its command id recorded and got.
_RECORD: Final = """
    WITH ins AS (
        INSERT INTO gateway_requests (command_id, key_id, method, path, body_sha256,
                                      sync_config_id)
        VALUES ($1, $2, $3, $4, $5, $6)
        ON CONFLICT (command_id) DO NOTHING
        RETURNING 1
    )
    SELECT g.body_sha256, p.result::text AS result
    FROM (SELECT 1) AS one
    LEFT JOIN gateway_requests g ON g.command_id = $1
    LEFT JOIN processed_commands p ON p.command_id = $1"""


def _operation_of(command_id: str) -> str:
    """The operation id of a request that names none: fixed by its command id (a retry with
    the same ``Idempotency-Key`` is the same operation)."""
    return f"bulk_{ULID.from_bytes(hashlib.sha256(command_id.encode()).digest()[:16])}"


async def _send(
    request: web.Request,
    access: Access,
    kind: CommandType,
    operation_id: str,
    data: dict[str, Any],
    raw: bytes,
    command_id: str,
) -> web.Response:
    gateway = gateway_of(request)
    assert gateway.pool is not None and gateway.waiter is not None  # noqa: S101 - started
    fingerprint = _fingerprint(request, raw)
    message = _message(request, access.namespace_id, command_id, kind, operation_id, data, None)
    async with acquire(gateway.pool) as conn:
        row = await conn.fetchrow(
            _RECORD,
            command_id,
            access.key_id,
            request.method,
            request.path,
            fingerprint,
            operation_id,
        )
    assert row is not None  # noqa: S101 - always one row
    if row["body_sha256"] is not None:  # a retry of a request already recorded
        if bytes(row["body_sha256"]) != fingerprint:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used for another request: use a new key",
                code="idempotency_key_reused",
            )
        if row["result"] is not None:
            return _answer(row["result"])
    stored = await _publish_and_wait(request, message, command_id)
    if stored is None:
        return _unfinished(request, command_id)
    return _answer(stored.result)


def _answer(result_json: str) -> web.Response:
    result = CommandResult.model_validate_json(result_json)
    if result.outcome is Outcome.REJECTED or result.counts is None:
        if result.error is None:
            raise ApiError(500, "internal", "a bulk result without counts", code="internal")
        raise from_command_error(result.error)
    body = BulkResultResponse(
        operation_id=result.operation_id or "",
        command_id=result.command_id,
        outcome="applied" if result.outcome is Outcome.APPLIED else "noop",
        counts=result.counts,
    )
    return json_answer(body.model_dump(mode="json"))


def _by_selector(kind: CommandType, model: type[BaseModel]) -> Any:
    async def route(request: web.Request) -> web.Response:
        access = await who(request, SCOPE_WRITE)
        data, raw = await json_object(request)
        body = body_model(model, data)
        fields = body.model_dump(mode="json", exclude_none=True, exclude={"operation_id"})
        command_id = _command_id(access.key_id, request)
        operation_id = getattr(body, "operation_id", None) or _operation_of(command_id)
        return await _send(request, access, kind, operation_id, fields, raw, command_id)

    return route


def _operation_id(request: web.Request) -> str:
    operation_id = canonical_operation_id(request.match_info["operation_id"])
    if not OPERATION_ID.fullmatch(operation_id):
        raise not_found("bulk operation")
    return operation_id


async def undo(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_WRITE)
    operation_id = _operation_id(request)
    data, raw = await json_object(request)
    body = body_model(BulkUndoRequest, data)
    fields = body.model_dump(mode="json", exclude_none=True)
    command_id = _command_id(access.key_id, request)
    return await _send(
        request, access, CommandType.BULK_UNDO, operation_id, fields, raw, command_id
    )


async def show(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    operation_id = _operation_id(request)
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - started
    async with acquire(gateway.pool) as conn:
        found = await operation_view(conn, operation_id, access.internal_id, access.namespace_id)
    if found is None:
        raise not_found("bulk operation")
    return json_answer(BulkOperationResponse.model_validate(found).model_dump(mode="json"))


async def preview_route(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    data, _ = await json_object(request)
    body = body_model(BulkPreviewRequest, data)
    if body.selector.is_empty():
        raise ApiError(
            422,
            ErrorCode.VALIDATION_ERROR.value,
            "invalid request body: selector: an empty selector matches nothing",
            code=ErrorCode.VALIDATION_ERROR.value,
            details={"errors": [{"field": "body.selector", "problem": "empty"}]},
        )
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - started
    async with acquire(gateway.pool) as conn:
        matched = await preview(conn, body.selector, access.internal_id, access.namespace_id)
    limit = gateway.settings.max_bulk_syncs
    answer = BulkPreviewResponse(
        matched=matched, max_bulk_syncs=limit, within_limit=matched <= limit
    )
    return json_answer(answer.model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_post(
        "/v1/sync-bulk/pause", _by_selector(CommandType.BULK_PAUSE, BulkPauseRequest)
    )
    app.router.add_post(
        "/v1/sync-bulk/resume", _by_selector(CommandType.BULK_RESUME, BulkResumeRequest)
    )
    app.router.add_post("/v1/sync-bulk/preview", preview_route)
    app.router.add_post("/v1/sync-bulk/{operation_id}/undo", undo)
    app.router.add_get("/v1/sync-bulk/{operation_id}", show)
