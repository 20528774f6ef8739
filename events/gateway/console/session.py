"""The console's session: the operator's API key and namespace in an encrypted cookie.

The cookie is a Fernet token (``aiohttp_session.cookie_storage.EncryptedCookieStorage``)
whose key is derived from ``console_secret``: any gateway with the same secret reads it, none
stores it, and the key is in no page, URL or log. The cookie is HttpOnly, SameSite=Strict,
limited to ``/console`` and to ``console_session_seconds`` (its Max-Age, and the age past which
its token is refused). Every POST carries the session's CSRF token, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from typing import Final

from aiohttp import web
from aiohttp_session import Session, get_session, new_session
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from multidict import MultiDict, MultiDictProxy

from events.auth import SCOPE_READ
from events.errors import SynclifeError
from events.gateway.common import gateway_of, read_in_time
from events.service.access import Access, AccessDenied, authorize
from events.service.settings import Settings

__all__ = [
    "COOKIE",
    "CSRF_FIELD",
    "MIN_SECRET_CHARS",
    "Operator",
    "csrf_of",
    "operator",
    "same_host",
    "sign_in",
    "storage",
    "verified_form",
]

log = logging.getLogger("synclife.gateway.console")

COOKIE: Final = "synclife_console"
CSRF_FIELD: Final = "csrf"
MIN_SECRET_CHARS: Final = 32
_KEY: Final = "key"
_NAMESPACE: Final = "namespace"
_CSRF: Final = "csrf"
_FLASH: Final = "flash"


class ConsoleSecretError(SynclifeError):
    """``console_secret`` is too short to be a key."""


def storage(settings: Settings) -> EncryptedCookieStorage:
    """The cookie storage, its key derived from ``console_secret`` (else random, with a
    warning: sessions then hold on this process only)."""
    secret = settings.console_secret
    if secret is None:
        key = secrets.token_bytes(32)
        log.warning(
            "SYNCLIFE_CONSOLE_SECRET is not set: console sessions hold on this process only"
        )
    else:
        text = secret.get_secret_value()
        if len(text) < MIN_SECRET_CHARS:
            raise ConsoleSecretError(
                f"SYNCLIFE_CONSOLE_SECRET must be at least {MIN_SECRET_CHARS} characters"
            )
        key = hashlib.sha256(b"synclife-console\x00" + text.encode()).digest()
    return EncryptedCookieStorage(
        key,
        cookie_name=COOKIE,
        max_age=settings.console_session_seconds,
        path="/console",
        secure=settings.console_cookie_secure,
        httponly=True,
        samesite="Strict",
    )


class Operator:
    """A signed-in operator: the access their key gives in their namespace, and the
    ``Authorization``/``X-Namespace`` headers a command goes out with."""

    def __init__(self, access: Access, session: Session) -> None:
        self.access = access
        self.session = session

    @property
    def namespace(self) -> str:
        return str(self.session[_NAMESPACE])

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.session[_KEY]}", "X-Namespace": self.namespace}

    @property
    def csrf(self) -> str:
        return csrf_of(self.session)

    def flash(self, ok: bool, text: str) -> None:
        """A message for the next page (what an action did)."""
        self.session[_FLASH] = {"ok": ok, "text": text[:500]}

    def take_flash(self) -> dict[str, object] | None:
        flash = self.session.pop(_FLASH, None)
        return flash if isinstance(flash, dict) else None


def csrf_of(session: Session) -> str:
    """The session's CSRF token (made on first use)."""
    token = session.get(_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        session[_CSRF] = token
    return token


def to_sign_in() -> web.HTTPSeeOther:
    return web.HTTPSeeOther("/console/signin")


async def operator(request: web.Request, scope: str = SCOPE_READ) -> Operator:
    """The signed-in operator with ``scope``: to the sign-in page when there is no session or
    its key no longer works (revoked, expired); ``AccessDenied`` (403) without the scope."""
    session = await get_session(request)
    key, namespace = session.get(_KEY), session.get(_NAMESPACE)
    if not isinstance(key, str) or not isinstance(namespace, str):
        raise to_sign_in()
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - routes run only while started
    try:
        access = await authorize(
            gateway.pool, f"Bearer {key}", namespace, scope, gateway.clock_offset
        )
    except AccessDenied as exc:
        if exc.status == 401:
            session.invalidate()
            raise to_sign_in() from None
        raise
    return Operator(access, session)


async def sign_in(request: web.Request, key: str, namespace: str) -> Access:
    """Check the key (a read scope at least) in the namespace, then start a new session with
    them (a new CSRF token too); ``AccessDenied`` otherwise, the old session left as it was."""
    gateway = gateway_of(request)
    assert gateway.pool is not None  # noqa: S101 - started
    if not (key.isascii() and key.isprintable()):
        key = ""  # not a key: refused as a missing one
    access = await authorize(
        gateway.pool, f"Bearer {key}", namespace, SCOPE_READ, gateway.clock_offset
    )
    session = await new_session(request)
    session[_KEY] = key
    session[_NAMESPACE] = namespace
    csrf_of(session)
    return access


def _authority(text: str) -> str:
    """``host[:port]`` in lower case, a default port (80, 443) dropped."""
    text = text.strip().lower()
    for default in (":80", ":443"):
        if text.endswith(default):
            return text[: -len(default)]
    return text


def same_host(origin: str, host: str) -> bool:
    """Whether the browser's ``Origin`` names this ``Host`` (host and port; the scheme is
    not compared: behind a proxy that ends TLS the gateway sees http where the browser
    sent https). ``null`` or an origin without ``scheme://`` is another origin."""
    scheme, sep, authority = origin.partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not authority or "/" in authority:
        return False
    return _authority(authority) == _authority(host)


async def verified_form(request: web.Request, session: Session) -> MultiDictProxy[str]:
    """The POSTed form, if it carries the session's CSRF token and, when the browser says
    where it comes from, comes from this origin; else 403."""
    origin = request.headers.get("Origin")
    if origin is not None and not same_host(origin, request.host):
        raise web.HTTPForbidden(text="cross-origin form refused")
    form = await read_in_time(request, request.post())
    given = form.get(CSRF_FIELD)
    expected = session.get(_CSRF)
    if (
        not isinstance(given, str)
        or not isinstance(expected, str)
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise web.HTTPForbidden(text="missing or wrong CSRF token: reload the page")
    # Files are not accepted: their fields are dropped.
    return MultiDictProxy(MultiDict((k, v) for k, v in form.items() if isinstance(v, str)))
