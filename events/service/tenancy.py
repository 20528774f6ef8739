"""Organizations, namespaces and API keys: the admin operations and the per-batch look-up."""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from ulid import ULID

from events.auth import SCOPES, generate_key
from events.errors import SynclifeError

__all__ = [
    "AdminError",
    "ApiKey",
    "create_key",
    "create_namespace",
    "create_org",
    "list_keys",
    "match_namespaces",
    "revoke_key",
    "sync_timeline",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9._\-]{0,62}$")
MAX_USER_ID = 256


class AdminError(SynclifeError):
    """A tenancy command (orgs, namespaces, keys) could not be done as asked."""


def _check_name(kind: str, name: str) -> None:
    if not _NAME.fullmatch(name):
        raise AdminError(
            f"{kind} name {name!r} must be 1-63 characters of a-z, 0-9, '.', '_', '-', "
            "starting with a letter or digit"
        )


def _check_user(user_id: str) -> None:
    """A key's owner: 1-256 characters, no surrounding spaces, no control characters (a user
    id of the commands' data is at most 256 characters too)."""
    if (
        not user_id
        or len(user_id) > MAX_USER_ID
        or user_id != user_id.strip()
        or any(unicodedata.category(c) == "Cc" for c in user_id)
    ):
        raise AdminError(
            f"user id {user_id[:MAX_USER_ID]!r} must be 1-{MAX_USER_ID} characters without "
            "control characters or surrounding spaces"
        )


def _new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


async def _org_id(conn: asyncpg.Connection, org: str) -> str:
    row = await conn.fetchrow(
        "SELECT internal_id FROM organizations WHERE internal_id = $1 OR name = $1", org
    )
    if row is None:
        raise AdminError(f"organization {org!r} not found")
    return str(row["internal_id"])


async def create_org(conn: asyncpg.Connection, name: str) -> dict[str, Any]:
    _check_name("organization", name)
    internal_id = _new_id("org")
    try:
        await conn.execute(
            "INSERT INTO organizations (internal_id, name) VALUES ($1, $2)", internal_id, name
        )
    except asyncpg.UniqueViolationError as exc:
        raise AdminError(f"organization {name!r} already exists") from exc
    return {"id": internal_id, "name": name}


async def create_namespace(conn: asyncpg.Connection, org: str, name: str) -> dict[str, Any]:
    _check_name("namespace", name)
    internal_id = await _org_id(conn, org)
    namespace_id = _new_id("ns")
    try:
        await conn.execute(
            "INSERT INTO namespaces (namespace_id, internal_id, name) VALUES ($1, $2, $3)",
            namespace_id,
            internal_id,
            name,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AdminError(f"namespace {name!r} already exists in {org!r}") from exc
    return {"id": namespace_id, "name": name, "org": internal_id}


async def create_key(
    conn: asyncpg.Connection,
    org: str,
    scopes: list[str],
    namespaces: list[str] | None = None,
    expires_in: timedelta | None = None,
    name: str | None = None,
    user_id: str | None = None,
    clock_offset: timedelta = timedelta(0),
) -> dict[str, Any]:
    """Create a key; the only time its plaintext exists outside the caller's hands.

    ``user_id``: the key's owner, the caller of its commands. The expiry counts from the
    database's clock plus ``clock_offset`` (the setting ``clock_offset_seconds``), the clock
    the service judges it on."""
    unknown = sorted(set(scopes) - SCOPES)
    if not scopes or unknown:
        raise AdminError(f"scopes must be among {sorted(SCOPES)}; got {unknown or 'none'}")
    if user_id is not None:
        _check_user(user_id)
    internal_id = await _org_id(conn, org)
    namespace_ids: list[str] | None = None
    if namespaces:
        rows = await conn.fetch(
            """SELECT namespace_id, name FROM namespaces
               WHERE internal_id = $1
                 AND (namespace_id = ANY($2::text[]) OR name = ANY($2::text[]))""",
            internal_id,
            namespaces,
        )
        found = {r["namespace_id"] for r in rows} | {r["name"] for r in rows}
        missing = [n for n in namespaces if n not in found]
        if missing:
            raise AdminError(f"namespaces not found in {org!r}: {missing}")
        namespace_ids = sorted({r["namespace_id"] for r in rows})
    material = generate_key()
    # Expiry is judged on the database's clock (as the service judges it): counted from it.
    expires_at = await conn.fetchval(
        """INSERT INTO api_keys
               (key_id, internal_id, key_hash, scopes, namespaces, name, expires_at, user_id)
           VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp() + $8::interval + $7::interval, $9)
           RETURNING expires_at""",
        material.key_id,
        internal_id,
        material.key_hash,
        sorted(set(scopes)),
        namespace_ids,
        name,
        expires_in,
        clock_offset,
        user_id,
    )
    return {
        "id": material.key_id,
        "key": material.plaintext,
        "org": internal_id,
        "user": user_id,
        "scopes": sorted(set(scopes)),
        "namespaces": namespace_ids,
        "expires_at": expires_at.isoformat() if expires_at else None,
    }


async def revoke_key(conn: asyncpg.Connection, key_id: str) -> dict[str, Any]:
    row = await conn.fetchrow(
        """UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
           WHERE key_id = $1 RETURNING key_id, revoked_at""",
        key_id,
    )
    if row is None:
        raise AdminError(f"key {key_id!r} not found")
    return {"id": row["key_id"], "revoked_at": row["revoked_at"].isoformat()}


async def list_keys(
    conn: asyncpg.Connection, org: str | None = None, clock_offset: timedelta = timedelta(0)
) -> list[dict[str, Any]]:
    """Every key's id, owner, scopes and state: never the key, never its hash. Expired on the
    database's clock plus ``clock_offset``, as the service judges it."""
    rows = await conn.fetch(
        """SELECT k.key_id, o.name AS org, k.user_id, k.scopes, k.namespaces, k.name,
                  k.created_at, k.expires_at, k.revoked_at, k.last_used_at,
                  k.expires_at <= clock_timestamp() + $2::interval AS expired
           FROM api_keys k JOIN organizations o USING (internal_id)
           WHERE $1::text IS NULL OR o.internal_id = $1 OR o.name = $1
           ORDER BY k.created_at""",
        org,
        clock_offset,
    )
    out = []
    for r in rows:
        state = "active"
        if r["revoked_at"] is not None:
            state = "revoked"
        elif r["expired"]:
            state = "expired"
        out.append(
            {
                "id": r["key_id"],
                "org": r["org"],
                "user": r["user_id"],
                "scopes": list(r["scopes"]),
                "namespaces": list(r["namespaces"]) if r["namespaces"] is not None else None,
                "status": state,
                "created_at": r["created_at"].isoformat(),
                "expires_at": r["expires_at"].isoformat() if r["expires_at"] else None,
                "last_used_at": r["last_used_at"].isoformat() if r["last_used_at"] else None,
            }
        )
    return out


@dataclass(frozen=True, slots=True)
class ApiKey:
    """What the pipeline knows of a presented key (never the key or its hash)."""

    key_id: str
    internal_id: str
    scopes: frozenset[str]
    namespaces: frozenset[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    #: The key's owner (``keys create --user``), the caller of its commands; None: the key's id.
    user_id: str | None = None

    @classmethod
    def from_row(
        cls, row: asyncpg.Record, key_id: str, internal_id: str, user_id: str | None
    ) -> ApiKey:
        """The key of a row holding its ``scopes``, ``namespaces``, ``expires_at`` and
        ``revoked_at`` columns (its ids named as its statement names them)."""
        return cls(
            key_id=key_id,
            internal_id=internal_id,
            scopes=frozenset(row["scopes"]),
            namespaces=frozenset(row["namespaces"]) if row["namespaces"] is not None else None,
            expires_at=row["expires_at"],
            revoked_at=row["revoked_at"],
            user_id=user_id,
        )

    def problem(self, now: datetime) -> str | None:
        if self.revoked_at is not None:
            return "the API key was revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "the API key has expired"
        return None


def match_namespaces(
    rows: Iterable[tuple[str, str, str]], wanted: set[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """``(internal_id, id-or-name) -> namespace_id`` for the ``wanted`` pairs among ``rows``
    of ``(namespace_id, internal_id, name)``, which may hold more than was asked for."""
    out: dict[tuple[str, str], str] = {}
    for namespace_id, internal_id, name in rows:
        for ref in (namespace_id, name):
            if (internal_id, ref) in wanted:
                out[(internal_id, ref)] = namespace_id
    return out


async def sync_timeline(
    conn: asyncpg.Connection, sync_id: str
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A sync as stored and its history, oldest first (operators' view: no tenant filter)."""
    data = await conn.fetchval("SELECT data FROM syncs WHERE sync_config_id = $1", sync_id)
    if data is None:
        return None
    rows = await conn.fetch(
        """SELECT version, event_type, from_status, to_status, trigger, command_id, actor,
                  reason, occurred_at
           FROM sync_history WHERE sync_config_id = $1 ORDER BY version""",
        sync_id,
    )
    return json.loads(data), [
        {**dict(r), "occurred_at": r["occurred_at"].isoformat()} for r in rows
    ]
