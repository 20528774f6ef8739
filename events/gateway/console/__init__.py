"""The web console at ``/console``: server-rendered pages over the gateway's own reads and
commands (``events.gateway.reads``/``queries``, ``writes._command``), a session in an
encrypted cookie (``session``), live updates from the lifecycle topic (``live``).

Every page goes out with a strict Content-Security-Policy (scripts and styles only from
``/console/static``, no inline code), ``nosniff``, no framing and no referrer; templates escape
every value (Jinja2 autoescape).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Final

import jinja2
from aiohttp import web
from aiohttp.web_exceptions import NotAppKeyWarning
from aiohttp_session import session_middleware

from events.errors import TransientError
from events.gateway.app import GATEWAY, Gateway
from events.gateway.console.session import storage
from events.gateway.errors import REQUEST_ID, ApiError, Handler
from events.service.access import AccessDenied
from statemachine.errors import bounded

__all__ = ["CSP", "SECURITY_HEADERS", "render", "setup"]

log = logging.getLogger("synclife.gateway.console")

HERE: Final = Path(__file__).parent
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make a form's Origin "null"
    "Cross-Origin-Opener-Policy": "same-origin",
}
_TEMPLATES: Final = web.AppKey("console_templates", jinja2.Environment)


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """``template`` rendered with ``context`` (every value escaped), as an HTML answer."""
    env = request.config_dict[_TEMPLATES]
    context = {"operator": None, "flash": None, "csrf": "", **context}
    html = env.get_template(template).render(**context)
    return web.Response(text=html, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def _console_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Errors as pages, not the API's JSON body; every answer with the security headers."""
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            exc.headers.update(SECURITY_HEADERS)
            raise
        response = _error_page(request, exc.status, exc.text or exc.reason)
    except ApiError as exc:
        response = _error_page(request, exc.status, exc.message)
    except AccessDenied as exc:
        response = _error_page(request, exc.status, exc.message)
    except TransientError as exc:
        response = _error_page(request, 503, f"{exc}; try again")
    except Exception:
        request_id = request.get(REQUEST_ID, "")
        log.exception(
            "console request failed: %s %s",
            request.method,
            bounded(request.path),
            extra={"request_id": request_id},
        )
        response = _error_page(request, 500, f"internal error (request id {request_id})")
    if response.prepared:  # a stream: it sent its headers itself
        return response
    response.headers.update(SECURITY_HEADERS)
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(request: web.Request, status: int, message: str) -> web.Response:
    return render(
        request,
        "error.html",
        status=status,
        status_code=status,
        message=message,
        request_id=request.get(REQUEST_ID, ""),
    )


def setup(app: web.Application, gateway: Gateway) -> None:
    """Mount the console on ``app`` at ``/console``."""
    from events.gateway.console import actions, bulk, pages

    # aiohttp-session keeps its state under text keys (aiohttp warns once per key).
    warnings.filterwarnings("ignore", category=NotAppKeyWarning, module="aiohttp_session")
    console = web.Application(
        middlewares=[_console_errors, session_middleware(storage(gateway.settings))]
    )
    console[GATEWAY] = gateway
    console[_TEMPLATES] = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    console[_TEMPLATES].filters["part"] = actions.part  # one path segment, all encoded

    pages.add_routes(console)
    actions.add_routes(console)
    bulk.add_routes(console)
    static = console.router.add_static(
        "/static", HERE / "static", append_version=True, name="static"
    )
    app.add_subapp("/console", console)
    console[_TEMPLATES].globals["static"] = {  # under the prefix now, with a version
        name: str(static.url_for(filename=name)) for name in ("console.js", "console.css")
    }

    async def to_console(_: web.Request) -> web.Response:
        raise web.HTTPFound("/console/")

    app.router.add_get("/console", to_console)
