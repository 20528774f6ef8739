"""Postgres: the pool, the versioned migrations, and driver errors turned into ours."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any, Final

import asyncpg

from events.errors import SynclifeError, TransientError
from events.settings import Settings

__all__ = ["connect", "create_pool", "is_conflict", "is_transient", "migrate", "migrations"]

MIGRATION_LOCK: Final = 0x5F5C11FE  # advisory lock id: one migrator at a time

_TRANSIENT: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.LockNotAvailableError,
    asyncpg.exceptions.UniqueViolationError,  # a concurrent writer won: re-read and retry
    asyncpg.exceptions.InterfaceError,
)


_CONFLICTS: Final = (
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.UniqueViolationError,
)


def is_conflict(exc: BaseException) -> bool:
    """A race with a concurrent writer, resolved by re-reading (unless it never ends)."""
    return isinstance(exc, _CONFLICTS)


def is_transient(exc: BaseException) -> bool:
    """Will the same work succeed if tried again (after re-reading)?"""
    return isinstance(exc, _TRANSIENT | TransientError)


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool on ``SYNCLIFE_DATABASE_URL``. jsonb stays text: pydantic parses it directly."""
    try:
        pool = await asyncpg.create_pool(
            dsn=settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            command_timeout=60,
        )
    except _TRANSIENT as exc:
        raise TransientError(f"cannot reach Postgres: {type(exc).__name__}") from exc
    except _REFUSED as exc:
        raise _refused(exc) from exc
    assert pool is not None  # noqa: S101 - create_pool returns a pool once awaited
    return pool


async def connect(settings: Settings) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn=settings.database_url.get_secret_value())
    except _TRANSIENT as exc:
        raise TransientError(f"cannot reach Postgres: {type(exc).__name__}") from exc
    except _REFUSED as exc:
        raise _refused(exc) from exc


_REFUSED: Final = (
    asyncpg.exceptions.InvalidPasswordError,
    asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    asyncpg.exceptions.InvalidCatalogNameError,
)


def _refused(exc: Exception) -> SynclifeError:
    # The driver's message can name the user; never the password. Say what to check.
    return SynclifeError(
        f"Postgres refused the connection ({type(exc).__name__}): check SYNCLIFE_DATABASE_URL "
        "or run `synclife stack up`"
    )


def migrations() -> list[tuple[str, str]]:
    """``(name, sql)`` of every migration, in the order they apply."""
    folder = resources.files("events") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction. Idempotent.

    Returns the names applied now. A recorded migration whose file changed is an error.
    """
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   name text PRIMARY KEY, checksum text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["name"]: r["checksum"] for r in await conn.fetch("SELECT * FROM schema_migrations")
        }
        for name, sql in migrations():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if name in done:
                if done[name] != checksum:
                    raise RuntimeError(f"migration {name} changed after it was applied")
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)", name, checksum
                )
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied_now


@asynccontextmanager
async def acquire(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """A pooled connection, with connection failures raised as ``TransientError``."""
    try:
        async with pool.acquire() as conn:
            yield conn
    except _TRANSIENT as exc:
        raise TransientError(f"Postgres unavailable: {type(exc).__name__}") from exc
