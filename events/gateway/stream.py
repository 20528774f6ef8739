"""``GET /v1/events``: the key's namespace's lifecycle events as server-sent events, for tools
that hold an API key (the console has its own stream, for a signed-in browser).

Each event is sent as it is published on the lifecycle topic, from the moment the stream is
positioned (``ready``): ``id`` the event's id, ``event`` its type, ``data`` its data (the sync
as the API shows it). There is no replay: a client that reconnects reads from then on, and
fills a gap from the REST reads (each event's ``version``). ``reset`` means the stream fell
behind (or the gateway is stopping) and ends: reconnect. Every ``RECHECK_SECONDS`` the key is
checked again; a key revoked, expired, or no longer allowed the namespace or ``syncs:read``
ends the stream with ``end``.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from events.auth import SCOPE_READ
from events.errors import TransientError
from events.gateway.common import gateway_of, who
from events.gateway.errors import ApiError
from events.gateway.live import serve_stream
from events.service.access import AccessDenied

__all__ = ["RECHECK_SECONDS", "add_routes"]

#: How often a stream's key is checked again (a module value, so that tests can shorten it).
RECHECK_SECONDS: float = 30.0


async def events(request: web.Request) -> web.StreamResponse:
    access = await who(request, SCOPE_READ)

    async def refused() -> bytes | None:
        why = await _refused(request)
        return None if why is None else f"event: end\ndata: {json.dumps(why)}\n\n".encode()

    return await serve_stream(
        request,
        gateway_of(request).hub,
        (access.internal_id, access.namespace_id),
        full=True,
        render=_frame,
        refused=refused,
        recheck_seconds=RECHECK_SECONDS,
    )


def _frame(item: dict[str, Any]) -> bytes:
    return (
        f"id: {item['id']}\nevent: {item['event']}\ndata: {json.dumps(item['data'])}\n\n".encode()
    )


async def _refused(request: web.Request) -> dict[str, str] | None:
    """Why the stream's key may no longer read the namespace (None if it still may)."""
    try:
        await who(request, SCOPE_READ)
    except (ApiError, AccessDenied) as exc:
        return {"reason": exc.message}
    except TransientError:
        return {"reason": "the key could not be checked again; reconnect"}  # fail closed
    return None


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", events)
