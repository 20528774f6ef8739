"""The read routes: from Postgres only (never Kafka), scoped to the key's organization and
namespace. Another tenant's sync, another bucket's, or an archived one, is 404 revealing
nothing; lists leave them out. Paging: ``limit`` (alias ``page_size``, 1..1000, default 10),
``offset`` or ``page``, an opaque keyset ``cursor`` (aliases ``next_cursor``, ``after``), and
``include_total`` (in the query or the body)."""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from aiohttp import web

from events.auth import SCOPE_READ
from events.contract.filters import is_clean_id
from events.contract.http import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    MAX_OFFSET,
    ListSyncConfigurationsRequest,
    ListSyncJobsRequest,
    NamespaceListRequest,
    PaginationResponse,
    SyncConfigurationModel,
    SyncHistoryResponse,
    SyncJobListResponse,
    SyncJobModel,
    SyncListResponse,
)
from events.gateway import metrics, queries
from events.gateway.common import (
    body_model,
    etag,
    gateway_of,
    json_answer,
    json_object,
    not_found,
    query_flag,
    who,
)
from events.gateway.errors import ApiError
from events.service.access import Access
from events.service.db import acquire
from statemachine.errors import ErrorCode

__all__ = ["Page", "add_routes", "page_of"]

SYNC: Final = "/v1/buckets/{bucket_id}/syncs/{sync_config_id}"


@dataclass(frozen=True, slots=True)
class Page:
    """What a list request asks for: how many, from where, whether to count."""

    limit: int
    offset: int
    page: int | None  # None: a cursor's page, or an offset between pages
    after: tuple[datetime, str] | None
    include_total: bool


def _bad_query(name: str, problem: str) -> ApiError:
    return ApiError(
        422,
        ErrorCode.VALIDATION_ERROR.value,
        f"query parameter {name}: {problem}",
        code=ErrorCode.VALIDATION_ERROR.value,
        details={"errors": [{"field": f"query.{name}", "problem": problem}]},
    )


def _int(request: web.Request, names: tuple[str, ...], low: int, high: int) -> int | None:
    for name in names:
        raw = request.query.get(name)
        if raw is None:
            continue
        try:
            value = int(raw)
        except ValueError:
            raise _bad_query(name, "not an integer") from None
        if not low <= value <= high:
            raise _bad_query(name, f"must be {low}..{high}")
        return value
    return None


def encode_cursor(created: datetime, item_id: str) -> str:
    raw = json.dumps([created.isoformat(), item_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(name: str, text: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created, item_id = json.loads(raw)
        moment = datetime.fromisoformat(created)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        moment, item_id = None, None
    if (
        moment is None
        or moment.tzinfo is None
        or not isinstance(item_id, str)
        or not is_clean_id(item_id)  # the rule of path ids: no id a sync or job can have
    ):
        raise _bad_query(name, "not a cursor this API gave")
    return moment, item_id


def page_of(
    request: web.Request, include_total: bool | None = None, default_limit: int = DEFAULT_LIMIT
) -> Page:
    """The paging of a list request; ``include_total`` as the body gave it (the query's
    ``include_total`` counts too). A cursor wins over ``page`` and ``offset``."""
    limit = _int(request, ("limit", "page_size"), 1, MAX_LIMIT) or default_limit
    page = _int(request, ("page",), 1, MAX_OFFSET)
    offset = _int(request, ("offset",), 0, MAX_OFFSET)
    after = None
    for name in ("cursor", "next_cursor", "after"):
        text = request.query.get(name)
        if text:
            after = _decode_cursor(name, text)
            break
    if after is None and page is not None and offset is not None and offset != (page - 1) * limit:
        raise _bad_query("page", "page and offset name different rows: give one of them")
    if offset is None:
        offset = (page - 1) * limit if page is not None else 0
        if offset > MAX_OFFSET and after is None:
            raise _bad_query("page", f"page x limit may reach at most {MAX_OFFSET} rows in")
    # The page's number, when it has one: not after a cursor (which page it is is not known),
    # nor at an offset between two pages (the next page would repeat some of its rows).
    number = None if after is not None or offset % limit else offset // limit + 1
    return Page(
        limit,
        offset,
        number,
        after,
        bool(query_flag(request, "include_total")) or bool(include_total),
    )


def _pagination(
    page: Page, more: bool, cursor: str | None, total: int | None
) -> PaginationResponse:
    pages = None if total is None else -(-total // page.limit)
    return PaginationResponse(
        total=total,
        page=page.page,
        page_size=page.limit,
        total_pages=pages,
        next_page=str(page.page + 1) if more and page.page is not None else None,
        previous_page=str(page.page - 1) if page.page is not None and page.page > 1 else None,
        next_cursor=cursor if more else None,
    )


def _mine(request: web.Request, access: Access) -> tuple[str, str, str, str]:
    return (
        request.match_info["sync_config_id"],
        access.internal_id,
        access.namespace_id,
        request.match_info["bucket_id"],
    )


def _offset(request: web.Request) -> timedelta:
    return gateway_of(request).clock_offset


async def get_sync(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    async with acquire(pool) as conn:
        data = await conn.fetchval(queries.ONE_SYNC, *_mine(request, access))
    if data is None:
        raise not_found()
    body = SyncConfigurationModel.from_sync(json.loads(data)).model_dump(mode="json")
    return json_answer(body, headers={"ETag": etag(body["version"])})


async def _list(
    request: web.Request, access: Access, filters: NamespaceListRequest
) -> web.Response:
    page = page_of(request, filters.include_total)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    args = (
        access.internal_id,
        access.namespace_id,
        filters.bucket_id,
        filters.connection_id,
        filters.status.value if filters.status is not None else None,
        filters.is_active,
        filters.provider.value if filters.provider is not None else None,
        filters.paused,
        filters.is_stale,
    )
    async with acquire(pool) as conn:
        now = _offset(request)
        after = page.after or (None, None)
        rows = await conn.fetch(
            queries.LIST_SYNCS, *args, now, *after, page.limit + 1, 0 if page.after else page.offset
        )
        total = None
        if page.include_total:
            total = await conn.fetchval(queries.COUNT_SYNCS, *args, now)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    cursor = encode_cursor(rows[-1]["created"], rows[-1]["sync_config_id"]) if rows else None
    body = SyncListResponse(
        results=[SyncConfigurationModel.from_sync(json.loads(r["data"])) for r in rows],
        pagination=_pagination(page, more, cursor, total),
        total=total if total is not None else len(rows),
    )
    return json_answer(body.model_dump(mode="json"))


async def list_bucket(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    data, _ = await json_object(request)
    filters = body_model(ListSyncConfigurationsRequest, data)
    wide = NamespaceListRequest(
        **filters.model_dump(exclude_unset=True), bucket_id=request.match_info["bucket_id"]
    )
    return await _list(request, access, wide)


async def list_namespace(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    data, _ = await json_object(request)
    return await _list(request, access, body_model(NamespaceListRequest, data))


async def list_jobs(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    data, _ = await json_object(request)
    filters = body_model(ListSyncJobsRequest, data)
    page = page_of(request, filters.include_total)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    status = filters.status.value if filters.status is not None else None
    after = page.after or (None, None)
    mine = _mine(request, access)
    async with acquire(pool) as conn:
        row = await conn.fetchrow(
            queries.JOBS, *mine, status, *after, page.limit + 1, 0 if page.after else page.offset
        )
        assert row is not None  # noqa: S101 - always one row
        if not row["found"]:
            raise not_found()
        total = None
        if page.include_total:
            total = await conn.fetchval(queries.COUNT_JOBS, *mine[:3], status)
    jobs = json.loads(row["jobs"])
    more = len(jobs) > page.limit
    jobs = jobs[: page.limit]
    cursor = None
    if jobs:
        last = jobs[-1]
        cursor = encode_cursor(datetime.fromisoformat(last["created_at"]), last["sync_job_id"])
    body = SyncJobListResponse(
        results=[SyncJobModel.model_validate(j) for j in jobs],
        pagination=_pagination(page, more, cursor, total),
        total=total if total is not None else len(jobs),
    )
    return json_answer(body.model_dump(mode="json"))


async def get_job(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    async with acquire(pool) as conn:
        job = await conn.fetchval(
            queries.JOB, *_mine(request, access), request.match_info["sync_job_id"]
        )
    if job is None:
        raise not_found("sync job")
    return json_answer(SyncJobModel.model_validate_json(job).model_dump(mode="json"))


async def get_metrics(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    async with acquire(pool) as conn:
        row = await conn.fetchrow(queries.METRICS, *_mine(request, access), _offset(request))
    if row is None:
        raise not_found()
    body = metrics.of(json.loads(row["data"]), row["now"], row["last_job"])
    return json_answer(body.model_dump(mode="json"))


async def get_history(request: web.Request) -> web.Response:
    access = await who(request, SCOPE_READ)
    pool = gateway_of(request).pool
    assert pool is not None  # noqa: S101 - started
    async with acquire(pool) as conn:
        row = await conn.fetchrow(queries.HISTORY, *_mine(request, access))
    assert row is not None  # noqa: S101 - always one row
    if not row["found"]:
        raise not_found()
    entries = json.loads(row["history"])
    body = SyncHistoryResponse.model_validate(
        {
            "sync_config_id": request.match_info["sync_config_id"],
            "results": entries,
            "total": len(entries),
        }
    )
    return json_answer(body.model_dump(mode="json"))


def add_routes(app: web.Application) -> None:
    app.router.add_get(SYNC, get_sync)
    app.router.add_post("/v1/buckets/{bucket_id}/syncs/list", list_bucket)
    app.router.add_post("/v1/syncs/list", list_namespace)
    app.router.add_post(f"{SYNC}/jobs", list_jobs)
    app.router.add_get(f"{SYNC}/jobs/{{sync_job_id}}", get_job)
    app.router.add_get(f"{SYNC}/metrics", get_metrics)
    app.router.add_get(f"{SYNC}/history", get_history)
