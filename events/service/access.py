"""Who may do what: the checks of a presented key and namespace, shared by the processor (a
command from Kafka) and the HTTP gateway (a request), and the gateway's one-statement look-up.

The checks, in order: a well-formed ``Bearer sk_...`` header, a known key, not revoked, not
expired (on the database's clock plus the clock offset), the scope (``grants``), an
``x-namespace`` header, a namespace of the key's organization that the key may use."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import asyncpg

from events.auth import grants, hash_key, parse_authorization
from events.errors import SynclifeError
from events.service.tenancy import ApiKey
from statemachine import CommandError, ErrorCode
from statemachine.errors import bounded

__all__ = ["KEY_LOOKUP", "Access", "AccessDenied", "authorize", "caller_of", "check"]

_NEVER: Final = datetime.min.replace(tzinfo=UTC)  # the time of a check that needs none

#: The HTTP status of each error code ``check`` may give.
_STATUS: Final = {
    ErrorCode.UNAUTHENTICATED: 401,
    ErrorCode.VALIDATION_ERROR: 400,
    ErrorCode.FORBIDDEN: 403,
}


def caller_of(key_id: str, user_id: str | None) -> str:
    """The caller a key acts for: its owner user id, else ``key:<key id>``."""
    return user_id if user_id is not None else f"key:{key_id}"


def check(
    presented: bool,
    key: ApiKey | None,
    now: datetime,
    needed: str,
    action: str,
    namespace: str | None,
    namespace_id: str | None,
) -> CommandError | None:
    """Why a caller may not do ``action`` (which needs the scope ``needed``), or None.

    ``presented``: the authorization header held a well-formed key; ``key``: that key as
    stored (None: unknown); ``namespace``: the x-namespace header as given; ``namespace_id``:
    the namespace of the key's organization it names (None: none does)."""
    if not presented:
        return CommandError(
            code=ErrorCode.UNAUTHENTICATED,
            message="missing or malformed authorization header: expected 'Bearer sk_...'",
        )
    if key is None:
        return CommandError(code=ErrorCode.UNAUTHENTICATED, message="unknown API key")
    problem = key.problem(now)
    if problem is not None:
        return CommandError(code=ErrorCode.UNAUTHENTICATED, message=problem)
    if not grants(key.scopes, needed):
        return CommandError(
            code=ErrorCode.FORBIDDEN,
            message=f"{action} needs the {needed} scope",
            details={"required_scope": needed},
        )
    if namespace is None:
        return CommandError(
            code=ErrorCode.VALIDATION_ERROR,
            message="the x-namespace header is required",
            details={"errors": [{"field": "x-namespace", "problem": "missing header"}]},
        )
    if namespace_id is None or (key.namespaces is not None and namespace_id not in key.namespaces):
        return CommandError(
            code=ErrorCode.FORBIDDEN,
            message=f"namespace '{bounded(namespace)}' is not available to this key",
        )
    return None


@dataclass(frozen=True, slots=True)
class Access:
    """An authorized request: whose key, for which namespace, with which scopes."""

    key_id: str
    internal_id: str
    namespace_id: str
    user_id: str | None
    scopes: frozenset[str]

    @property
    def caller(self) -> str:
        return caller_of(self.key_id, self.user_id)

    def allows(self, needed: str) -> bool:
        return grants(self.scopes, needed)


class AccessDenied(SynclifeError):
    """A request the caller may not make: ``status`` 401 (no usable key), 400 (no namespace
    header) or 403 (scope or namespace not allowed); ``code`` the contract's error code;
    ``message`` what to fix (never the key)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    @classmethod
    def of(cls, error: CommandError) -> AccessDenied:
        return cls(_STATUS[error.code], error.code.value, error.message)


#: The common table expressions of a key's look-up: ``k``, the key by its hash ($1), and
#: ``touched``, its last use, at most once a minute and never waiting on a row another
#: transaction holds (``_AUTHORIZE``, and the gateway's write that records its request).
KEY_LOOKUP: Final = """
    k AS (
        SELECT key_id, internal_id, user_id, scopes, namespaces, expires_at, revoked_at
        FROM api_keys WHERE key_hash = $1
    ), touched AS (
        UPDATE api_keys SET last_used_at = now()
        WHERE key_id IN (
            SELECT a.key_id FROM api_keys a JOIN k USING (key_id)
            WHERE a.last_used_at IS NULL OR a.last_used_at < now() - interval '60 seconds'
            FOR UPDATE OF a SKIP LOCKED)
    )"""

# One statement: the key and its last use (``KEY_LOOKUP``), the namespace it names within the
# key's organization (an id before a name), the database's clock.
_AUTHORIZE: Final = f"""
    WITH {KEY_LOOKUP}
    SELECT k.key_id, k.internal_id, k.user_id, k.scopes, k.namespaces, k.expires_at,
           k.revoked_at,
           (SELECT n.namespace_id FROM namespaces n
            WHERE n.internal_id = k.internal_id AND (n.namespace_id = $2 OR n.name = $2)
            ORDER BY n.namespace_id = $2 DESC LIMIT 1) AS namespace_id,
           clock_timestamp() AS now
    FROM (SELECT 1) AS one LEFT JOIN k ON true"""  # noqa: S608 - constants only


async def authorize(
    conn: asyncpg.Connection | asyncpg.Pool,
    authorization: str | None,
    namespace: str | None,
    needed_scope: str,
    clock_offset: timedelta = timedelta(0),
) -> Access:
    """The access of a request's ``Authorization`` and ``X-Namespace`` headers to what needs
    ``needed_scope``; raises ``AccessDenied``. Expiry is judged on the database's clock plus
    ``clock_offset`` (the setting ``clock_offset_seconds``, as the processor judges it)."""
    # As a command's header is read: surrounding spaces dropped, empty or holding U+0000 absent.
    namespace = namespace.strip() if namespace is not None else None
    if not namespace or "\x00" in namespace:
        namespace = None
    try:
        header = authorization.encode("ascii") if authorization is not None else None
    except UnicodeEncodeError:
        header = None
    token = parse_authorization(header)
    if token is None:
        error = check(False, None, _NEVER, needed_scope, "this request", namespace, None)
        assert error is not None  # noqa: S101 - no key: always an error
        raise AccessDenied.of(error)
    row = await conn.fetchrow(_AUTHORIZE, hash_key(token), namespace)
    assert row is not None  # noqa: S101 - the statement always returns one row
    key = None
    if row["key_id"] is not None:
        key = ApiKey.from_row(row, row["key_id"], row["internal_id"], row["user_id"])
    now: datetime = row["now"] + clock_offset
    error = check(True, key, now, needed_scope, "this request", namespace, row["namespace_id"])
    if error is not None:
        raise AccessDenied.of(error)
    assert key is not None and row["namespace_id"] is not None  # noqa: S101 - checked
    return Access(
        key_id=key.key_id,
        internal_id=key.internal_id,
        namespace_id=row["namespace_id"],
        user_id=key.user_id,
        scopes=key.scopes,
    )
