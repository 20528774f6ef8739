"""``GET /v1/events``: the key's namespace's lifecycle events as server-sent events, for tools
that hold an API key (the console has its own stream, for a signed-in browser).

Each event is sent as it is published on the lifecycle topic, from the moment the stream is
positioned (``ready``): ``id`` the event's id, ``event`` its type, ``data`` its data (the sync
as the API shows it). There is no replay: a client that reconnects reads from then on, and
fills a gap from the REST reads (each event's ``version``). ``reset`` means the stream fell
behind, the gateway is stopping, or the key could not be checked again (Postgres away), and
ends: reconnect. Every ``RECHECK_SECONDS`` the key is checked again; a key revoked, expired,
or no longer allowed the namespace or ``syncs:read`` ends the stream with ``end``: don't
reconnect with it. Bulk operations' events come too (``sync.bulk_*``: the operation's data,
keyed by its id, with no sync).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from events.auth import SCOPE_READ
from events.gateway.common import gateway_of, who
from events.gateway.errors import ApiError
from events.gateway.live import serve_stream
from events.service.access import AccessDenied

__all__ = ["RECHECK_SECONDS", "add_routes"]

log = logging.getLogger("synclife.gateway.live")

#: How often a stream's key is checked again (a module value, so that tests can shorten it).
RECHECK_SECONDS: float = 30.0


async def events(request: web.Request) -> web.StreamResponse:
    access = await who(request, SCOPE_READ)

    async def refused() -> bytes | None:
        try:
            await who(request, SCOPE_READ)
        except (ApiError, AccessDenied) as exc:  # the key may no longer read: don't come back
            return f"event: end\ndata: {json.dumps({'reason': exc.message})}\n\n".encode()
        except Exception:  # noqa: BLE001 - not checked (Postgres away): fail closed, reconnect
            log.warning("a live stream's key could not be checked again; the stream is reset")
            return b'event: reset\ndata: {"type": "unchecked"}\n\n'
        return None

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


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/events", events)
