"""The bulk routes in the OpenAPI document (``events.contract.openapi`` adds them)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from events.contract.http_bulk import (
    BulkOperationResponse,
    BulkPauseRequest,
    BulkPreviewRequest,
    BulkPreviewResponse,
    BulkResultResponse,
    BulkResumeRequest,
    BulkUndoRequest,
)

if TYPE_CHECKING:
    from events.contract.openapi import _Builder

__all__ = ["bulk_routes"]

_OP: Final = {
    "name": "operation_id",
    "in": "path",
    "required": True,
    "description": "The bulk operation (`bulk_` + ULID).",
    "schema": {"type": "string", "minLength": 1},
}
_WRITE: Final = (400, 401, 403, 404, 408, 409, 413, 422, 500, 504)
_RESULT: Final = (
    "Published as the bulk command (key: the operation id) and answered with its result once "
    "every matched sync is done: `outcome` and `counts` {matched, applied, noop, rejected}. "
    "Each sync changes as its own version (actor `bulk:<operation id>`). A selector matching "
    "more than `SYNCLIFE_MAX_BULK_SYNCS` is 422 with nothing changed. A large operation may "
    "outlast the wait: 202 with `Prefer: respond-async`, else 504; "
    "`GET /v1/sync-bulk/{operation_id}` shows its progress. `operation_id` in the body, else "
    "one fixed by `Idempotency-Key`, else a new one."
)


def bulk_routes(b: _Builder) -> None:
    _routes(b)
    for path in (
        "/v1/sync-bulk/pause",
        "/v1/sync-bulk/resume",
        "/v1/sync-bulk/{operation_id}/undo",
    ):
        # An operation has no version: If-Match does not apply.
        post = b.paths[path]["post"]
        post["parameters"] = [p for p in post["parameters"] if p.get("name") != "If-Match"]


def _routes(b: _Builder) -> None:
    b.route(
        "post",
        "/v1/sync-bulk/pause",
        "bulk_pause",
        "Pause every sync of the namespace a selector matches (hold `bulk:<operation id>`)",
        tag="synclife",
        params=[],
        body=BulkPauseRequest,
        response=BulkResultResponse,
        errors=_WRITE,
        write=True,
        description=_RESULT,
    )
    b.route(
        "post",
        "/v1/sync-bulk/resume",
        "bulk_resume",
        "Resume every sync of the namespace a selector matches",
        tag="synclife",
        params=[],
        body=BulkResumeRequest,
        response=BulkResultResponse,
        errors=_WRITE,
        write=True,
        description=_RESULT,
    )
    b.route(
        "post",
        "/v1/sync-bulk/{operation_id}/undo",
        "bulk_undo",
        "Release exactly the holds a bulk pause placed (once; a later undo is a noop)",
        tag="synclife",
        params=[_OP],
        body=BulkUndoRequest,
        body_required=False,
        response=BulkResultResponse,
        errors=_WRITE,
        write=True,
    )
    b.route(
        "get",
        "/v1/sync-bulk/{operation_id}",
        "get_bulk_operation",
        "A bulk operation's status, progress and counts",
        tag="synclife",
        params=[_OP],
        response=BulkOperationResponse,
        errors=(400, 401, 403, 404, 500),
    )
    b.route(
        "post",
        "/v1/sync-bulk/preview",
        "bulk_preview",
        "How many syncs a selector matches now, and whether that is within the maximum",
        tag="synclife",
        params=[],
        body=BulkPreviewRequest,
        response=BulkPreviewResponse,
        errors=(400, 401, 403, 408, 413, 422, 500),
    )
