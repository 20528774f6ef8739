"""Requests aiohttp refuses before any route sees them (a header line too long, too many
headers, bytes HTTP does not allow), answered in the one error body too.

aiohttp's own answer to these is plain text quoting the offending line, and its log line
quotes it as well: with an ``Authorization`` header that line holds the caller's API key. Here
neither the answer nor the log quotes anything of the request.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, LineTooLong
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest

from events.gateway.errors import error_body

__all__ = ["GatewayRunner"]

log = logging.getLogger("synclife.gateway")


def _refusal(status: int, exc: BaseException | None) -> tuple[int, str, str]:
    """(status, type, message) of a request refused by the HTTP parser."""
    text = str(exc) if exc is not None else ""
    if isinstance(exc, LineTooLong):
        if "b'/" in text or "Status line" in text:
            return 414, "uri_too_long", "the request line (its URL) is too long"
        return 431, "header_too_large", "a request header is too long"
    if "Too many headers" in text:
        return 431, "header_too_large", "too many request headers"
    if status >= 500:
        return 500, "internal", "internal error"
    return status, "bad_request", "malformed HTTP request: bytes HTTP does not allow"


class _Handler(RequestHandler):
    #: The request could not be parsed: an error answer is on its way.
    _refusing = False

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if any(isinstance(message, _ErrInfo) for message, _ in self._messages):
            self._refusing = True

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client has sent all it will (a half-close): a request that could not be
        parsed, or one read whole, is answered, then the connection closes (aiohttp's default
        closes at once: no answer at all). A request whose body is still expected is cut as
        aiohttp does it (a truncated body is never taken for a whole one)."""
        request = self._current_request
        whole = request is not None and request.content.is_eof()
        if self._refusing or whole:
            self._close = True  # no keep-alive: close once the answer is written
            return True  # keep our side open until then
        return None

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        status, kind, text = _refusal(status, exc)
        if status >= 500:
            log.error("request failed before routing: %s", type(exc).__name__)
        elif not isinstance(exc, BadHttpMethod):  # not HTTP at all: common noise, not logged
            log.info("refused a malformed request (%d %s)", status, type(exc).__name__)
        if request.writer.output_size > 0:
            raise ConnectionError("an answer was sent already: the connection is closed")
        body = json.dumps(error_body(status, kind, text, kind, {})).encode()
        response = web.Response(status=status, body=body, content_type="application/json")
        response.force_close()
        return response


class _Server(web.Server):
    """aiohttp's server, with connections handled by ``_Handler``."""

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer parser errors in the error body."""

    async def _make_server(self) -> web.Server:
        server: Any = await super()._make_server()
        server.__class__ = _Server  # the same object and state; only __call__ differs
        return server  # type: ignore[no-any-return]
