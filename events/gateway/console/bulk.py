"""The console's bulk pause: a preview of how many syncs the list's filters select, the pause
of all of them (hold ``bulk:<operation id>``) and its undo, through the bulk routes' own path
(``events.gateway.bulk``), the request cloned as the API's as for the other actions.

The selector is the list's bucket, provider and status (the filters a bulk selector has); a
list also filtered by paused or stale selects fewer syncs than a selector would, so it is not
bulk paused (the preview says so, and the pause is refused). The operation id is chosen when
the preview is shown and sent as the ``Idempotency-Key``, so the same form sent twice is one
operation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web
from pydantic import ValidationError
from ulid import ULID

from events.auth import SCOPE_WRITE
from events.contract.http_bulk import BulkPauseRequest
from events.errors import TransientError
from events.gateway import bulk
from events.gateway.common import gateway_of, who
from events.gateway.console import render
from events.gateway.console.actions import api_request
from events.gateway.console.session import operator, verified_form
from events.gateway.errors import ApiError
from events.service.access import Access, AccessDenied
from events.service.bulk.queries import preview as count_matches
from events.service.bulk.requests import OPERATION_ID
from events.service.db import acquire
from statemachine.commands import BulkSelector, CommandType

__all__ = ["LAST_BULK", "UNSUPPORTED_NOTE", "add_routes", "selector_of", "unsupported_of"]

#: The session's last bulk pause (its undo is offered on the list).
LAST_BULK: Final = "bulk"
#: The list's filters a selector takes, and its fields.
SELECTOR_FIELDS: Final = {"bucket": "bucket_id", "provider": "provider", "status": "status"}
#: The list's filters a selector cannot carry: a list filtered by them is not bulk paused.
UNSUPPORTED_FILTERS: Final = ("paused", "stale")
UNSUPPORTED_NOTE: Final = (
    "a bulk pause selects by bucket, provider and status only; "
    "remove the paused and stale filters to bulk pause"
)


def unsupported_of(values: Any) -> list[str]:
    """The filters given in ``values`` that a bulk selector cannot carry."""
    return [k for k in UNSUPPORTED_FILTERS if str(values.get(k, "")).strip()]


def selector_of(values: Any) -> BulkSelector | None:
    """The selector of the filters in ``values`` (a query or a form); None if empty or
    invalid."""
    given = {f: str(values.get(k, "")).strip() for k, f in SELECTOR_FIELDS.items()}
    try:
        selector = BulkSelector.model_validate({k: v for k, v in given.items() if v})
    except ValidationError:
        return None
    return None if selector.is_empty() else selector


def _filters(selector: BulkSelector) -> dict[str, str]:
    shown = selector.model_dump(mode="json", exclude_none=True)
    return {k: str(shown[f]) for k, f in SELECTOR_FIELDS.items() if f in shown}


async def preview(request: web.Request) -> web.Response:
    """GET /console/bulk/preview?bucket=&provider=&status=: how many syncs a bulk pause takes."""
    op = await operator(request)
    selector = selector_of(request.query)
    unsupported = unsupported_of(request.query)
    if selector is None:
        raise ApiError(
            422, "validation_error", "a bulk pause needs a bucket, a provider or a status filter"
        )
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - started
    async with acquire(gateway.pool) as conn:
        matched = await count_matches(conn, selector, op.access.internal_id, op.access.namespace_id)
    return render(
        request,
        "bulk.html",
        operator={"namespace": op.namespace, "caller": op.access.caller},
        csrf=op.csrf,
        flash=op.take_flash(),
        filters=_filters(selector),
        unsupported=unsupported,
        unsupported_note=UNSUPPORTED_NOTE,
        matched=matched,
        limit=gateway.settings.max_bulk_syncs,
        operation_id=f"bulk_{ULID()}",
        can_write=op.access.allows(SCOPE_WRITE),
    )


async def pause(request: web.Request) -> web.Response:
    op = await operator(request)
    api = api_request(request, op, "/v1/sync-bulk/pause")
    form = await verified_form(request, op.session)
    selector = selector_of(form)
    operation_id = form.get("operation_id", "")
    back = "/console/"
    if selector is not None:
        back += "?" + urlencode(_filters(selector))
    if unsupported_of(form):
        op.flash(False, f"bulk pause refused: {UNSUPPORTED_NOTE}")
        raise web.HTTPSeeOther(back)
    if selector is None or not OPERATION_ID.fullmatch(operation_id):
        op.flash(False, "bulk pause refused: reload the preview")
        raise web.HTTPSeeOther(back)
    body: dict[str, Any] = {"selector": selector.model_dump(mode="json", exclude_none=True)}
    for name in ("reason", "until"):
        if value := form.get(name, "").strip():
            body[name] = value
    try:
        fields = BulkPauseRequest.model_validate(body).model_dump(mode="json", exclude_none=True)
        access = await who(api, SCOPE_WRITE)
        raw = json.dumps(fields).encode()
        answer = await bulk._send(  # the bulk routes' own path
            api,
            access,
            CommandType.BULK_PAUSE,
            operation_id,
            fields,
            raw,
            _command_id(access, operation_id),
        )
        result = json.loads(answer.body) if isinstance(answer.body, bytes) else {}
        counts = result.get("counts") or {}
        op.session[LAST_BULK] = operation_id
        op.flash(
            True,
            f"bulk pause {operation_id}: matched {counts.get('matched')}, applied "
            f"{counts.get('applied')}, noop {counts.get('noop')}, rejected "
            f"{counts.get('rejected')}",
        )
    except ValidationError as exc:
        op.flash(False, f"bulk pause refused (422): {exc.errors()[0]['msg']}")
    except (ApiError, AccessDenied) as exc:
        op.flash(False, f"bulk pause refused ({exc.status}): {exc.message}")
    except TransientError as exc:
        op.flash(False, f"bulk pause failed: {exc}; try again")
    raise web.HTTPSeeOther(back)


def _command_id(access: Access, operation_id: str) -> str:
    """The command id of a console bulk pause: one per key and operation (a form sent twice
    is the same command)."""
    text = "\x00".join((access.key_id, "console-bulk-pause", operation_id))
    return "http_" + hashlib.sha256(text.encode()).hexdigest()[:48]


async def undo(request: web.Request) -> web.Response:
    op = await operator(request)
    operation_id = request.match_info["operation_id"]
    if not OPERATION_ID.fullmatch(operation_id):
        raise web.HTTPNotFound(text="no such bulk operation")
    api = api_request(request, op, f"/v1/sync-bulk/{operation_id}/undo")
    await verified_form(request, op.session)
    try:
        access = await who(api, SCOPE_WRITE)
        answer = await bulk._send(
            api,
            access,
            CommandType.BULK_UNDO,
            operation_id,
            {},
            b"",
            "http_" + str(ULID()),
        )
        result = json.loads(answer.body) if isinstance(answer.body, bytes) else {}
        counts = result.get("counts") or {}
        op.session.pop(LAST_BULK, None)
        op.flash(
            True,
            f"undo of {operation_id}: released {counts.get('applied')} holds "
            f"(noop {counts.get('noop')}, rejected {counts.get('rejected')})",
        )
    except (ApiError, AccessDenied) as exc:
        op.flash(False, f"undo refused ({exc.status}): {exc.message}")
    except TransientError as exc:
        op.flash(False, f"undo failed: {exc}; try again")
    raise web.HTTPSeeOther("/console/")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/bulk/preview", preview)
    app.router.add_post("/bulk/pause", pause)
    app.router.add_post("/bulk/{operation_id}/undo", undo)
