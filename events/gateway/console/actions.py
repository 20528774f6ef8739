"""The console's actions: each is the write route's own command (``writes._command``), sent
with the operator's key and namespace from the session, after the session's CSRF token was
checked. The answer, or the error, is shown on the next page.

The request is cloned as the API request it stands for (its path, ``Authorization`` and
``X-Namespace``) before its form is read, so the command id, the request record, the scope
check and the wait for the result are the write route's, unchanged.
"""

from __future__ import annotations

import json
from typing import Any, Final
from urllib.parse import quote

from aiohttp import web
from multidict import MultiDictProxy

from events.auth import SCOPE_WRITE
from events.errors import TransientError
from events.gateway import writes
from events.gateway.common import who
from events.gateway.console.session import Operator, operator, verified_form
from events.gateway.errors import ApiError
from events.service.access import AccessDenied
from statemachine.commands import CommandType

__all__ = ["add_routes", "api_request", "outcome_text", "part"]

#: The console's action names and the commands they send.
KINDS: Final = {
    "pause": CommandType.PAUSE,
    "resume": CommandType.RESUME,
    "trigger": CommandType.TRIGGER,
    "unlock": CommandType.UNLOCK,
}
_MAX_FIELD: Final = 2000


def api_request(request: web.Request, op: Operator, path: str) -> web.Request:
    """``request`` as the API's ``POST path`` with the operator's headers (before its body is
    read: a read request cannot be cloned)."""
    headers = {**op.headers, "Content-Type": "application/json"}
    return request.clone(method="POST", rel_url=path, headers=headers)


def part(value: str) -> str:
    """``value`` as one segment of a URL's path (``/``, ``?``, ``#``, ``&`` encoded)."""
    return quote(value, safe="")


def _text(form: MultiDictProxy[str], name: str) -> str | None:
    value = form.get(name, "").strip()
    return value[:_MAX_FIELD] if value else None


def data_of(action: str, form: MultiDictProxy[str]) -> dict[str, Any]:
    """The command's data from the form: only the fields given (the service checks them)."""
    fields: dict[str, tuple[str, ...]] = {
        "pause": ("reason", "hold", "until"),
        "resume": ("hold", "mode", "run"),
        "trigger": ("mode",),
        "unlock": ("reason",),
    }
    data: dict[str, Any] = {
        name: value for name in fields[action] if (value := _text(form, name)) is not None
    }
    if action == "resume" and form.get("force") == "on":
        data["force"] = True
    return data


def outcome_text(action: str, body: dict[str, Any]) -> str:
    """What the page says an action did."""
    status = body.get("status")
    version = body.get("version")
    if action == "trigger":
        job = body.get("sync_job_id")
        return f"trigger: run requested{f' (job {job})' if job else ''}"
    return f"{action}: done; status {status}, version {version}"


async def act(request: web.Request) -> web.Response:
    """POST .../{action}: the command, then back to the page it came from."""
    op = await operator(request)
    action = request.match_info["action"]
    kind = KINDS.get(action)
    if kind is None:
        raise web.HTTPNotFound(text=f"no action {action[:40]}")
    bucket_id = request.match_info["bucket_id"]
    sync_id = request.match_info["sync_config_id"]
    bucket, sync = part(bucket_id), part(sync_id)
    api = api_request(request, op, f"/v1/buckets/{bucket}/syncs/{sync}/{action}")
    form = await verified_form(request, op.session)
    data = data_of(action, form)
    back = f"/console/b/{bucket}/s/{sync}"
    if form.get("back") == "list":
        back = "/console/"
    try:
        access = await who(api, SCOPE_WRITE)
        answer = await writes._command(  # the write routes' own path
            api, access, writes._Write(kind, sync_id, data), json.dumps(data).encode()
        )
        body = json.loads(answer.body) if isinstance(answer.body, bytes) else {}
        op.flash(True, outcome_text(action, body))
    except (ApiError, AccessDenied) as exc:
        op.flash(False, f"{action} refused ({exc.status}): {exc.message}")
    except TransientError as exc:
        op.flash(False, f"{action} failed: {exc}; try again")
    raise web.HTTPSeeOther(back)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/b/{bucket_id}/s/{sync_config_id}/{action}", act)
