"""The console's pages: sign-in, the syncs of a namespace, one sync, and the live stream.

Reads are the gateway's own statements (``events.gateway.queries``), scoped to the operator's
key and namespace; the list pages with the keyset cursor of ``POST /v1/syncs/list``.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any, Final

from aiohttp import web
from aiohttp_session import get_session
from pydantic import ValidationError

from events.auth import SCOPE_READ, SCOPE_WRITE
from events.contract.http import NamespaceListRequest, SyncConfigurationModel
from events.errors import TransientError
from events.gateway import metrics, queries
from events.gateway.common import gateway_of, not_found
from events.gateway.console import SECURITY_HEADERS, render
from events.gateway.console.bulk import (
    LAST_BULK,
    SELECTOR_FIELDS,
    UNSUPPORTED_NOTE,
    unsupported_of,
)
from events.gateway.console.chart import files_chart
from events.gateway.console.session import (
    Operator,
    csrf_of,
    operator,
    sign_in,
    verified_form,
)
from events.gateway.live import holds_of, serve_stream
from events.gateway.reads import encode_cursor, page_of
from events.service.access import AccessDenied
from events.service.db import acquire
from statemachine.model import Provider
from statemachine.status import SyncStatus

__all__ = ["add_routes"]

PAGE_SIZE: Final = 50
RUNS_SHOWN: Final = 20
#: The timeline's versions on one page (newest first; ``?before=<version>`` for older ones).
TIMELINE_SHOWN: Final = 100
#: How often a live stream checks again that its session and key still hold.
RECHECK_SECONDS: float = 30.0
#: A page of one sync's timeline, newest first: $5 the version to start below (null: from the
#: newest), $6 rows; only for the caller's sync (``queries.HISTORY``'s scope).
_TIMELINE: Final = """
    SELECT version, event_type, from_status, to_status, trigger, command_id, actor, reason,
           to_json(occurred_at) #>> '{}' AS occurred_at
    FROM sync_history
    WHERE sync_config_id = $1
      AND EXISTS (SELECT 1 FROM syncs WHERE sync_config_id = $1 AND internal_id = $2
                  AND namespace_id = $3 AND bucket_id = $4 AND NOT archived)
      AND ($5::int IS NULL OR version < $5)
    ORDER BY version DESC LIMIT $6"""
#: The list's filters as query parameters, and the model fields they fill.
FILTERS: Final = {
    "status": "status",
    "paused": "paused",
    "bucket": "bucket_id",
    "provider": "provider",
    "stale": "is_stale",
}
_BUCKETS: Final = """
    SELECT bucket_id AS bucket, count(*) AS total,
           count(*) FILTER (WHERE status = 'SUSPENDED') AS suspended,
           count(*) FILTER (WHERE status = 'FAILED') AS failed
    FROM syncs WHERE internal_id = $1 AND namespace_id = $2 AND NOT archived
    GROUP BY 1 ORDER BY 1 LIMIT 500"""
_NOW: Final = "SELECT clock_timestamp() + $1::interval"


def filters_of(request: web.Request) -> tuple[dict[str, str], NamespaceListRequest, str | None]:
    """The filters given (as typed), their model, and what is wrong with them (then none
    apply)."""
    given = {name: request.query.get(name, "").strip() for name in FILTERS}
    given = {k: v for k, v in given.items() if v}
    try:
        model = NamespaceListRequest.model_validate({FILTERS[k]: v for k, v in given.items()})
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors())
        return given, NamespaceListRequest(), f"filters not applied: invalid {fields}"
    return given, model, None


def filter_args(org: str, namespace: str, model: NamespaceListRequest) -> tuple[Any, ...]:
    """The list statements' nine filter parameters (as ``reads._list`` gives them)."""
    return (
        org,
        namespace,
        model.bucket_id,
        model.connection_id,
        model.status.value if model.status is not None else None,
        model.is_active,
        model.provider.value if model.provider is not None else None,
        model.paused,
        model.is_stale,
    )


def _row(sync: dict[str, Any], now: datetime) -> dict[str, Any]:
    measured = metrics.of(sync, now, None)
    return {
        "id": sync["sync_config_id"],
        "bucket": sync.get("bucket_id"),
        "provider": sync.get("provider"),
        "connection": sync.get("connection_id"),
        "source_path": sync.get("source_path"),
        "status": sync.get("status"),
        "holds": holds_of(sync),
        "stale": measured.is_stale,
        "failure_rate": measured.failure_rate,
        "failures": measured.consecutive_failures,
        "last_sync_at": sync.get("last_sync_at"),
        "version": sync.get("version"),
        "locked": sync.get("locked_by_worker_id") is not None,
    }


async def syncs(request: web.Request) -> web.Response:
    """The syncs of the operator's namespace: filters, one page, bucket counts."""
    op = await operator(request)
    given, model, problem = filters_of(request)
    page = page_of(request, default_limit=PAGE_SIZE)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    args = filter_args(op.access.internal_id, op.access.namespace_id, model)
    offset = gateway_of(request).clock_offset
    after = page.after or (None, None)
    async with acquire(pool) as conn:
        rows = await conn.fetch(
            queries.LIST_SYNCS,
            *args,
            offset,
            *after,
            page.limit + 1,
            0 if page.after else page.offset,
        )
        total = await conn.fetchval(queries.COUNT_SYNCS, *args, offset)
        buckets = await conn.fetch(_BUCKETS, op.access.internal_id, op.access.namespace_id)
        now = await conn.fetchval(_NOW, offset)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    cursor = encode_cursor(rows[-1]["created"], rows[-1]["sync_config_id"]) if more else None
    return render(
        request,
        "syncs.html",
        **_common(op),
        rows=[_row(json.loads(r["data"]), now) for r in rows],
        total=total,
        buckets=[dict(b) for b in buckets],
        given=given,
        problem=problem,
        next_query={**given, "cursor": cursor} if cursor else None,
        first_query=given if page.after else None,
        statuses=[s.value for s in SyncStatus if s.value != "ARCHIVED"],
        providers=[p.value for p in Provider],
        can_write=op.access.allows(SCOPE_WRITE),
        selector={k: v for k, v in given.items() if k in SELECTOR_FIELDS} if not problem else {},
        unsupported=unsupported_of(given),
        unsupported_note=UNSUPPORTED_NOTE,
        last_bulk=op.session.get(LAST_BULK),
    )


async def one_sync(request: web.Request) -> web.Response:
    """One sync: its configuration, timeline, runs (with a chart of files per run)."""
    op = await operator(request)
    mine = (
        request.match_info["sync_config_id"],
        op.access.internal_id,
        op.access.namespace_id,
        request.match_info["bucket_id"],
    )
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    offset = gateway_of(request).clock_offset
    async with acquire(pool) as conn:
        row = await conn.fetchrow(queries.METRICS, *mine, offset)
        if row is None:
            raise not_found()
        before = _version_of(request.query.get("before"))
        timeline = [dict(r) for r in await conn.fetch(_TIMELINE, *mine, before, TIMELINE_SHOWN + 1)]
        jobs = await conn.fetchrow(queries.JOBS, *mine, None, None, None, RUNS_SHOWN, 0)
    sync = json.loads(row["data"])
    sync.pop("lock_token", None)  # a run's fencing token is never shown
    shown = SyncConfigurationModel.from_sync(sync).model_dump(mode="json")
    runs = json.loads(jobs["jobs"]) if jobs is not None else []
    older = timeline[TIMELINE_SHOWN - 1]["version"] if len(timeline) > TIMELINE_SHOWN else None
    return render(
        request,
        "sync.html",
        **_common(op),
        sync=sync,
        row=_row(sync, row["now"]),
        measured=metrics.of(sync, row["now"], row["last_job"]),
        config=json.dumps(shown, indent=2, sort_keys=True, default=str),
        metadata=json.dumps(sync.get("metadata") or {}, indent=2, sort_keys=True),
        timeline=timeline[:TIMELINE_SHOWN],
        older=older,
        newer=before is not None,
        runs=runs,
        chart=files_chart(list(reversed(runs))),
        can_write=op.access.allows(SCOPE_WRITE),
    )


def _version_of(text: str | None) -> int | None:
    """The timeline's ``before`` cursor: a version (else from the newest)."""
    if text is None or not text.isdigit() or len(text) > 9:
        return None
    return int(text)


def _common(op: Operator) -> dict[str, Any]:
    return {
        "operator": {"namespace": op.namespace, "caller": op.access.caller},
        "csrf": op.csrf,
        "flash": op.take_flash(),
    }


async def signin_page(request: web.Request) -> web.Response:
    session = await get_session(request)
    return render(request, "signin.html", csrf=csrf_of(session), operator=None, error=None)


async def signin(request: web.Request) -> web.Response:
    session = await get_session(request)
    form = await verified_form(request, session)
    key = form.get("api_key", "").strip()
    namespace = form.get("namespace", "").strip()
    try:
        await sign_in(request, key, namespace)
    except AccessDenied as exc:
        return render(
            request,
            "signin.html",
            status=exc.status,
            csrf=csrf_of(session),
            operator=None,
            error=exc.message,
        )
    raise web.HTTPSeeOther("/console/")


async def signout(request: web.Request) -> web.Response:
    session = await get_session(request)
    await verified_form(request, session)
    session.invalidate()
    raise web.HTTPSeeOther("/console/signin")


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the namespace's lifecycle changes as they happen (``ready`` once
    the stream is positioned; ``reset``: reload the page). Every ``RECHECK_SECONDS`` the
    session and its key are checked again: a revoked key, a lost scope or an expired session
    ends the stream with ``signout`` (the page reloads, to the sign-in page)."""
    op = await operator(request, SCOPE_READ)

    async def refused() -> bytes | None:
        return None if await _still_signed_in(request, op) else b"event: signout\ndata: {}\n\n"

    return await serve_stream(
        request,
        gateway_of(request).hub,
        (op.access.internal_id, op.access.namespace_id),
        full=False,
        render=lambda item: f"event: sync\ndata: {json.dumps(item)}\n\n".encode(),
        refused=refused,
        recheck_seconds=RECHECK_SECONDS,
        headers=SECURITY_HEADERS,
    )


async def _still_signed_in(request: web.Request, op: Operator) -> bool:
    """Whether the stream's session is within its age and its key still reads the
    namespace (not revoked, not expired, the scope and namespace still granted)."""
    created = op.session.created
    if time.time() >= created + gateway_of(request).settings.console_session_seconds:
        return False
    try:
        await operator(request, SCOPE_READ)
    except (web.HTTPException, AccessDenied, TransientError):
        return False  # fail closed: the browser reconnects, and is checked from scratch
    return True


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", syncs)
    app.router.add_get("/signin", signin_page)
    app.router.add_post("/signin", signin)
    app.router.add_post("/signout", signout)
    app.router.add_get("/events", events)
    app.router.add_get("/b/{bucket_id}/s/{sync_config_id}", one_sync)
