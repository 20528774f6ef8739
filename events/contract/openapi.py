"""The HTTP API as a document: OpenAPI 3.1, generated from the models of ``events.contract.http``.

Every route of the vendor's sync API the gateway serves (``docs/http-api`` in the shared specs),
and synclife's own beside it: the namespace-wide list, a sync's timeline, the operations of
writes answered before their result, and the probes. The bodies' schemas are the models' JSON
Schemas, once, in ``components.schemas``; the errors are the vendor's one error body.

Regenerate the checked-in copy with::

    synclife openapi --output docs/openapi.json

The gateway serves ``openapi_document()`` at ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any, Final

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from events.contract.http import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    REQUEST_MODELS,
    RESPONSE_MODELS,
    DeleteResponse,
    ErrorBody,
    ListSyncConfigurationsRequest,
    ListSyncJobsRequest,
    NamespaceListRequest,
    OperationResponse,
    PauseRequest,
    ResumeRequest,
    SyncConfigurationModel,
    SyncCreateRequest,
    SyncHistoryResponse,
    SyncJobListResponse,
    SyncJobModel,
    SyncListResponse,
    SyncMetricsResponse,
    SyncUpdateRequest,
    TriggerResponse,
)

__all__ = ["API_VERSION", "OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION: Final = "3.1.0"
#: The version of the HTTP API (the routes under ``/v1``) the document describes.
API_VERSION: Final = "1.0.0"

_REF_TEMPLATE: Final = "#/components/schemas/{model}"
_SECURITY: Final[list[dict[str, list[str]]]] = [{"BearerAuth": [], "NamespaceHeader": []}]
_JSON: Final = "application/json"

#: What each error status means, on the routes that can answer it.
_ERRORS: Final[dict[int, str]] = {
    400: "Missing `X-Namespace`, malformed JSON or header.",
    401: "Missing, unknown, revoked or expired API key.",
    403: "The key may not use this namespace, or lacks the route's scope.",
    404: "No such sync (or job, or operation) for the key's tenant, namespace and bucket; or "
    "an id in the path that nothing can have (over 256 characters, a control character).",
    409: "The command was refused: `invalid_transition`, `already_exists`, `lock_conflict`.",
    412: "`If-Match` names another version than the stored one (`version_conflict`).",
    408: "The request body did not arrive within `SYNCLIFE_GATEWAY_READ_TIMEOUT_SECONDS` "
    "(`request_timeout`); the connection is then closed.",
    413: "The request body is over the command size limit.",
    422: "The body or query does not validate: each bad field is named in `details.errors`; "
    "an unknown key is `extra_forbidden` (`details.accepted_fields` lists the accepted ones). "
    "Also a reused `Idempotency-Key` with another body.",
    500: "A bug: the body names only the request id.",
    503: "`unavailable`: Postgres or Kafka did not answer in time; try again.",
    504: "No result within the wait and no `Prefer: respond-async`: `details.operation_url` "
    "names the operation to poll.",
}
_READ_ERRORS: Final = (400, 401, 403, 500)
_SYNC_READ_ERRORS: Final = (400, 401, 403, 404, 500)
_LIST_ERRORS: Final = (400, 401, 403, 408, 413, 422, 500)
_WRITE_ERRORS: Final = (400, 401, 403, 404, 408, 409, 412, 413, 422, 500, 504)

_PAGING_DESCRIPTION: Final = (
    "Paging: `limit` (alias `page_size`) items from `offset`, or `page` (from 1) of `limit` "
    "(`page` and an `offset` naming other rows: 422); or a `cursor` (aliases `next_cursor`, "
    "`after`) from the previous page's `pagination.next_cursor`, which wins over both. "
    "`pagination.page`, `next_page` and `previous_page` are null after a cursor and at an "
    "offset between pages. `include_total` counts every match (`pagination.total`)."
)


def _schema_refs() -> tuple[dict[type[BaseModel], dict[str, Any]], dict[str, Any]]:
    from events.contract.http_bulk import BULK_REQUEST_MODELS, BULK_RESPONSE_MODELS

    inputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "validation") for model in (*REQUEST_MODELS, *BULK_REQUEST_MODELS)
    ]
    outputs: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (model, "serialization") for model in (*RESPONSE_MODELS, *BULK_RESPONSE_MODELS)
    ]
    refs, top = models_json_schema([*inputs, *outputs], ref_template=_REF_TEMPLATE)
    by_model = {model: refs[(model, mode)] for model, mode in [*inputs, *outputs]}
    return by_model, dict(sorted(top.get("$defs", {}).items()))


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "minLength": 1},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
    }


_BUCKET: Final = _path_param("bucket_id", "The bucket (e.g. `bkt_marketing_assets`).")
_SYNC: Final = _path_param("sync_config_id", "The sync (`sync_` + ULID).")
_JOB: Final = _path_param("sync_job_id", "The job (`job_` + ULID).")
_OPERATION: Final = _path_param("operation_id", "The operation a 202 named in `Location`.")

_LIMIT: Final = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
_PAGING: Final = [
    _query("limit", _LIMIT, f"Items per page (default {DEFAULT_LIMIT})."),
    _query("page_size", _LIMIT, "Alias of `limit`."),
    _query("offset", {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET}, "Items skipped."),
    _query("page", {"type": "integer", "minimum": 1}, "Page number (from 1) of `limit` items."),
    _query("cursor", {"type": "string"}, "`pagination.next_cursor` of the previous page."),
    _query("next_cursor", {"type": "string"}, "Alias of `cursor`."),
    _query("after", {"type": "string"}, "Alias of `cursor`."),
    _query("include_total", {"type": "boolean"}, "Count every match (`pagination.total`)."),
]
_WRITE_HEADERS: Final = [
    _header(
        "Idempotency-Key",
        "Makes a retried request the same command (one effect); the same key with another "
        "body is 422.",
    ),
    _header("If-Match", 'Apply only to this version (`"<version>"` from `ETag`), else 412.'),
    _header(
        "Prefer",
        "`respond-async`: when the result is not there within the wait, answer 202 and the "
        "operation's `Location` instead of 504.",
    ),
]


class _Builder:
    """The paths of the document, with the component references of the models."""

    def __init__(self, refs: dict[type[BaseModel], dict[str, Any]]) -> None:
        self.refs = refs
        self.paths: dict[str, dict[str, Any]] = {}

    def _json(self, model: type[BaseModel]) -> dict[str, Any]:
        return {_JSON: {"schema": self.refs[model]}}

    def _errors(self, statuses: tuple[int, ...]) -> dict[str, Any]:
        return {
            str(status): {"description": _ERRORS[status], "content": self._json(ErrorBody)}
            for status in statuses
        }

    def route(
        self,
        method: str,
        path: str,
        operation_id: str,
        summary: str,
        *,
        tag: str,
        params: list[dict[str, Any]],
        response: type[BaseModel],
        errors: tuple[int, ...],
        body: type[BaseModel] | None = None,
        body_required: bool = True,
        write: bool = False,
        etag: bool = False,
        description: str | None = None,
    ) -> None:
        ok: dict[str, Any] = {"description": "OK", "content": self._json(response)}
        if etag:
            ok["headers"] = {
                "ETag": {
                    "description": 'The sync\'s version, `"<version>"`, for `If-Match`.',
                    "schema": {"type": "string"},
                }
            }
        responses: dict[str, Any] = {"200": ok}
        if write:
            responses["202"] = {
                "description": "Accepted (`Prefer: respond-async`): the result is not there "
                "yet; poll the operation in `Location`.",
                "headers": {
                    "Location": {
                        "description": "`/v1/operations/{operation_id}`.",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                },
                "content": self._json(OperationResponse),
            }
        # Every route may be 503 (``unavailable``), and one with an id in its path 404 (an
        # id nothing can have is refused before a statement is built with it).
        more = {503} | ({404} if any(p["in"] == "path" for p in params) else set())
        responses.update(self._errors(tuple(sorted({*errors, *more}))))
        operation: dict[str, Any] = {
            "operationId": operation_id,
            "summary": summary,
            "tags": [tag],
            "security": _SECURITY,
            "parameters": [*params, *(_WRITE_HEADERS if write else [])],
            "responses": responses,
        }
        if description:
            operation["description"] = description
        if body is not None:
            operation["requestBody"] = {"required": body_required, "content": self._json(body)}
        self.paths.setdefault(path, {})[method] = operation

    def probe(self, path: str, operation_id: str, summary: str, ready: bool = False) -> None:
        responses: dict[str, Any] = {"200": {"description": "OK"}}
        if ready:
            responses["503"] = {"description": "Not ready (Postgres or Kafka unreachable)."}
        self.paths[path] = {
            "get": {
                "operationId": operation_id,
                "summary": summary,
                "tags": ["service"],
                "security": [],
                "responses": responses,
            }
        }


def _vendor_routes(b: _Builder) -> None:
    base = "/v1/buckets/{bucket_id}/syncs"
    one = base + "/{sync_config_id}"
    tag = "bucket syncs"
    b.route(
        "post",
        base,
        "create_sync_configuration",
        "Create a sync configuration (the server assigns `sync_config_id`)",
        tag=tag,
        params=[_BUCKET],
        body=SyncCreateRequest,
        response=SyncConfigurationModel,
        errors=(400, 401, 403, 404, 408, 409, 412, 413, 422, 500, 504),
        write=True,
    )
    b.route(
        "get",
        one,
        "get_sync_configuration",
        "Read a sync configuration",
        tag=tag,
        params=[_BUCKET, _SYNC],
        response=SyncConfigurationModel,
        errors=_SYNC_READ_ERRORS,
        etag=True,
    )
    b.route(
        "patch",
        one,
        "update_sync_configuration",
        "Update a sync configuration (`is_active`/`status`: also a plain pause or resume)",
        tag=tag,
        params=[_BUCKET, _SYNC],
        body=SyncUpdateRequest,
        response=SyncConfigurationModel,
        errors=_WRITE_ERRORS,
        write=True,
    )
    b.route(
        "delete",
        one,
        "delete_sync_configuration",
        "Delete (archive) a sync configuration; afterwards it is 404",
        tag=tag,
        params=[_BUCKET, _SYNC],
        response=DeleteResponse,
        errors=_WRITE_ERRORS,
        write=True,
    )
    b.route(
        "post",
        base + "/list",
        "list_sync_configurations",
        "List a bucket's sync configurations, filtered, newest first",
        tag=tag,
        params=[_BUCKET, *_PAGING],
        body=ListSyncConfigurationsRequest,
        body_required=False,
        response=SyncListResponse,
        errors=_LIST_ERRORS,
        description=_PAGING_DESCRIPTION,
    )
    resume = "Resume a paused sync configuration"
    for action, operation_id, summary, body in (
        ("pause", "pause_sync_configuration", "Pause a sync configuration", PauseRequest),
        ("resume", "resume_sync_configuration", resume, ResumeRequest),
        ("unlock", "force_unlock_sync_configuration", "Force-release a stuck run lock", None),
    ):
        b.route(
            "post",
            f"{one}/{action}",
            operation_id,
            summary,
            tag=tag,
            params=[_BUCKET, _SYNC],
            body=body,
            body_required=False,
            response=SyncConfigurationModel,
            errors=_WRITE_ERRORS,
            write=True,
        )
    b.route(
        "post",
        one + "/trigger",
        "trigger_sync_configuration",
        "Run a sync now",
        tag=tag,
        params=[
            _BUCKET,
            _SYNC,
            _query("full_sync", {"type": "boolean"}, "A full run (no `modified_since`)."),
        ],
        response=TriggerResponse,
        errors=_WRITE_ERRORS,
        write=True,
    )
    b.route(
        "post",
        one + "/jobs",
        "list_sync_jobs",
        "List a sync's runs (sync jobs), newest first",
        tag=tag,
        params=[_BUCKET, _SYNC, *_PAGING],
        body=ListSyncJobsRequest,
        body_required=False,
        response=SyncJobListResponse,
        errors=(400, 401, 403, 404, 408, 413, 422, 500),
        description=_PAGING_DESCRIPTION,
    )
    b.route(
        "get",
        one + "/jobs/{sync_job_id}",
        "get_sync_job",
        "Read one run of a sync",
        tag=tag,
        params=[_BUCKET, _SYNC, _JOB],
        response=SyncJobModel,
        errors=_SYNC_READ_ERRORS,
    )
    b.route(
        "get",
        one + "/metrics",
        "get_sync_metrics",
        "Health and staleness of a sync",
        tag=tag,
        params=[_BUCKET, _SYNC],
        response=SyncMetricsResponse,
        errors=_SYNC_READ_ERRORS,
    )


def _own_routes(b: _Builder) -> None:
    b.route(
        "post",
        "/v1/syncs/list",
        "list_namespace_syncs",
        "List the namespace's sync configurations across buckets, filtered, newest first",
        tag="synclife",
        params=list(_PAGING),
        body=NamespaceListRequest,
        body_required=False,
        response=SyncListResponse,
        errors=_LIST_ERRORS,
        description=_PAGING_DESCRIPTION,
    )
    b.route(
        "get",
        "/v1/buckets/{bucket_id}/syncs/{sync_config_id}/history",
        "get_sync_history",
        "A sync's timeline: one row per versioned change",
        tag="synclife",
        params=[_BUCKET, _SYNC],
        response=SyncHistoryResponse,
        errors=_SYNC_READ_ERRORS,
    )
    b.route(
        "get",
        "/v1/operations/{operation_id}",
        "get_operation",
        "A write answered 202: pending, or done with the command's result",
        tag="synclife",
        params=[_OPERATION],
        response=OperationResponse,
        errors=_SYNC_READ_ERRORS,
    )
    b.paths["/v1/events"] = {
        "get": {
            "operationId": "stream_events",
            "summary": "The namespace's lifecycle events, live, as server-sent events",
            "description": "From the moment the stream is positioned (`event: ready`), each "
            "lifecycle event as published: `id` its id, `event` its type, `data` its data (the "
            "sync as GET shows it; a bulk operation's events carry the operation's). No "
            "replay: fill a gap from the reads (`version`). `reset`: the stream fell behind, "
            "the gateway stops, or the key could not be checked again; reconnect. `end`: the "
            "key may no longer read the namespace (checked every 30 s). 503: the gateway "
            "serves its most streams. Scope `syncs:read`.",
            "tags": ["synclife"],
            "security": _SECURITY,
            "responses": {
                "200": {"description": "OK", "content": {"text/event-stream": {}}},
                **b._errors((400, 401, 403, 500, 503)),
            },
        }
    }
    b.probe("/healthz", "healthz", "Liveness: the process answers")
    b.probe("/readyz", "readyz", "Readiness: Postgres and Kafka reachable", ready=True)
    b.probe("/openapi.json", "openapi", "This document")


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the HTTP API (the same whatever the environment)."""
    refs, schemas = _schema_refs()
    builder = _Builder(refs)
    _vendor_routes(builder)
    _own_routes(builder)
    from events.contract.openapi_bulk import bulk_routes

    bulk_routes(builder)
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "synclife HTTP API",
            "version": API_VERSION,
            "summary": "Bucket-scoped sync configurations, compatible with the vendor's API.",
            "description": (
                "Every write publishes the matching command on `sync.commands` and answers "
                "with its result (200 and the sync after it, `noop` included). Reads come "
                "from Postgres, scoped to the key's tenant and namespace. Scopes: "
                "`syncs:read` for GET, the lists, jobs and metrics; `syncs:write` for the "
                "rest. Every non-2xx answer has the error body `ErrorBody`."
            ),
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "the default address"}],
        "security": _SECURITY,
        "tags": [
            {"name": "bucket syncs", "description": "The vendor's routes."},
            {"name": "synclife", "description": "synclife's own routes."},
            {"name": "service", "description": "Probes and this document (no key)."},
        ],
        "paths": builder.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "`Authorization: Bearer sk_...` (an API key).",
                },
                "NamespaceHeader": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Namespace",
                    "description": "The namespace (`ns_...` id or name); every resource is "
                    "scoped to it. Missing: 400.",
                },
            },
        },
    }
