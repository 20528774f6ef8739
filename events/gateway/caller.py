"""A write's caller, authorized in the statement that records the request.

A write route needs the caller's key id before its record (the command id of a request with an
``Idempotency-Key`` is derived from it), and then two statements: the key's check
(``events.service.access.authorize``) and the record. A key's id never changes, so each process
remembers which id a key's hash belongs to (``KEY_IDS``: the hash only, never the key) and,
when it knows it, checks the key in the record's own statement (``_RECORD_AUTHORIZED``): the
same look-up as ``authorize``'s, judged by the same ``check`` on the same row, and nothing is
recorded unless the statement's own test of that row (``ok``) lets the request through. So a
key revoked or expired since is refused (401) by the very statement that would have recorded
its request; a key not known yet takes the two statements, and is known from then on.

The order of the answers is kept: a request that fails before its record (its body, its
headers) is authorized first (``Caller.confirm``), so a bad key is 401 whatever else is wrong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Final

import asyncpg
from aiohttp import web

from events.auth import SCOPES, grants, hash_key, parse_authorization
from events.gateway.common import clean_header, gateway_of, who
from events.service.access import KEY_LOOKUP, Access, AccessDenied, check
from events.service.tenancy import ApiKey

__all__ = ["KEY_IDS", "Caller", "record_authorized"]

#: The key id of each key hash this process authorized (a key's id never changes). Bounded:
#: past ``_MAX_KEYS`` it starts again (a forgotten key takes two statements once more).
KEY_IDS: Final[dict[bytes, str]] = {}
_MAX_KEYS: Final = 4096

# ``authorize``'s look-up (the key by its hash, its last use at most once a minute, the
# namespace it names, the database's clock: one value for the whole statement), ``ok``: the
# same row passes ``check`` (and is the key the command id was derived from), then the write's
# record as ``writes._RECORD`` makes it, only if ``ok``.
_RECORD_AUTHORIZED: Final = f"""
    WITH t AS MATERIALIZED (SELECT clock_timestamp() AS now),
    {KEY_LOOKUP}, ns AS (
        SELECT n.namespace_id FROM namespaces n JOIN k ON n.internal_id = k.internal_id
        WHERE n.namespace_id = $2 OR n.name = $2
        ORDER BY n.namespace_id = $2 DESC LIMIT 1
    ), ok AS (
        SELECT k.internal_id, ns.namespace_id FROM k, ns, t
        WHERE k.key_id = $4 AND k.revoked_at IS NULL
          AND (k.expires_at IS NULL OR k.expires_at > t.now + $5::interval)
          AND k.scopes && $3::text[]
          AND (k.namespaces IS NULL OR ns.namespace_id = ANY(k.namespaces))
    ), s AS (
        SELECT 1 FROM syncs JOIN ok USING (internal_id, namespace_id)
        WHERE sync_config_id = $10 AND bucket_id = $11 AND NOT archived
    ), ins AS (
        INSERT INTO gateway_requests (command_id, key_id, method, path, body_sha256,
                                      sync_config_id)
        SELECT $6, $4, $7, $8, $9, $10 FROM ok WHERE $12::bool OR EXISTS (SELECT 1 FROM s)
        ON CONFLICT (command_id) DO NOTHING
        RETURNING 1
    )
    SELECT k.key_id, k.internal_id, k.user_id, k.scopes, k.namespaces, k.expires_at,
           k.revoked_at, (SELECT namespace_id FROM ns) AS namespace_id, t.now,
           (SELECT count(*) FROM ins) AS inserted, EXISTS (SELECT 1 FROM s) AS found,
           g.body_sha256, g.sync_config_id AS recorded_sync, p.result::text AS result
    FROM t LEFT JOIN k ON true
    LEFT JOIN gateway_requests g ON g.command_id = $6
    LEFT JOIN processed_commands p ON p.command_id = $6"""  # noqa: S608 - constants only


def _granting(needed: str) -> list[str]:
    """The scopes that grant ``needed`` (``grants``, as an array for ``&&``)."""
    return sorted(scope for scope in SCOPES if grants((scope,), needed))


@dataclass(slots=True)
class Caller:
    """Who asks: ``access`` once authorized; else the key's hash and its known id, the
    namespace header as ``authorize`` reads it, to be checked with the record."""

    request: web.Request
    scope: str
    access: Access | None
    key_hash: bytes = b""
    key_id: str = ""
    namespace: str = ""

    @classmethod
    async def of(cls, request: web.Request, scope: str) -> Caller:
        """The caller of ``request``: authorized now (``who``) unless its key is known and
        its headers are well formed, then later, with its record."""
        header = clean_header(request, "X-Namespace")  # 400 before anything, as ``who``
        namespace = header.strip() if header is not None else ""
        authorization = request.headers.get("Authorization")
        token = None
        if authorization is not None and authorization.isascii() and authorization.isprintable():
            token = parse_authorization(authorization.encode("ascii"))
        if token is not None and namespace and "\x00" not in namespace:
            key_hash = hash_key(token)
            key_id = KEY_IDS.get(key_hash)
            if key_id is not None:
                return cls(request, scope, None, key_hash, key_id, namespace)
        access = await who(request, scope)
        if token is not None:
            if len(KEY_IDS) >= _MAX_KEYS:
                KEY_IDS.clear()
            KEY_IDS[hash_key(token)] = access.key_id
        return cls(request, scope, access, key_id=access.key_id)

    @classmethod
    def known(cls, request: web.Request, access: Access) -> Caller:
        return cls(request, "", access, key_id=access.key_id)

    @asynccontextmanager
    async def first(self) -> AsyncIterator[None]:
        """Whatever fails in the block fails after the caller is authorized: a bad key is
        401 (or 400, 403) before anything else is said about the request."""
        try:
            yield
        except Exception:
            await self.confirm()
            raise

    async def confirm(self) -> Access:
        """Authorized now if not yet (raises ``AccessDenied``)."""
        if self.access is None:
            self.access = await who(self.request, self.scope)
            self.key_id = self.access.key_id
        return self.access


async def record_authorized(
    conn: asyncpg.Connection,
    caller: Caller,
    args: tuple[str, str, str, bytes, str, str, bool],
) -> asyncpg.Record | None:
    """Check ``caller``'s key and record its request in one statement: the record's row
    (as ``writes._RECORD`` gives it), with ``caller.access`` set; ``AccessDenied`` as
    ``authorize`` raises it; None when the key is not the one ``caller`` was known as (nothing
    recorded: authorize it anew). ``args``: command id, method, path, fingerprint, sync id,
    bucket id, creating."""
    command_id, method, path, fingerprint, sync_id, bucket_id, creating = args
    offset = gateway_of(caller.request).clock_offset
    row = await conn.fetchrow(
        _RECORD_AUTHORIZED,
        caller.key_hash,
        caller.namespace,
        _granting(caller.scope),
        caller.key_id,
        offset,
        command_id,
        method,
        path,
        fingerprint,
        sync_id,
        bucket_id,
        creating,
    )
    assert row is not None  # noqa: S101 - always one row
    key = None
    if row["key_id"] is not None:
        key = ApiKey.from_row(row, row["key_id"], row["internal_id"], row["user_id"])
    error = check(
        True,
        key,
        row["now"] + offset,
        caller.scope,
        "this request",
        caller.namespace,
        row["namespace_id"],
    )
    if error is not None:
        KEY_IDS.pop(caller.key_hash, None)
        raise AccessDenied.of(error)
    assert key is not None and row["namespace_id"] is not None  # noqa: S101 - checked
    if key.key_id != caller.key_id:  # pragma: no cover - a key's id never changes
        KEY_IDS.pop(caller.key_hash, None)
        return None
    caller.access = Access(
        key_id=key.key_id,
        internal_id=key.internal_id,
        namespace_id=row["namespace_id"],
        user_id=key.user_id,
        scopes=key.scopes,
    )
    return row
