"""Postgres: the pool, the versioned migrations, and driver errors turned into ours."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from importlib import resources
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import asyncpg

from events.errors import SynclifeError, TransientError
from events.service.settings import Settings

__all__ = [
    "LEADER_IDLE_TIMEOUT_SECONDS",
    "SESSION_SETTINGS",
    "LeaderConnection",
    "PooledConnection",
    "application_name",
    "connect",
    "connect_host_by_host",
    "create_pool",
    "dsn_hosts",
    "is_conflict",
    "is_transient",
    "migrate",
    "migrations",
    "postgres_ssl",
]

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
    # Several hosts in the URL with target_session_attrs=read-write, and none of them writable
    # yet: the primary died and the standby is not promoted yet. A failover takes seconds.
    asyncpg.exceptions.TargetServerAttributeNotMatched,
    # Postgres ended a session that went quiet (see SESSION_SETTINGS) or cancelled a statement
    # that ran too long: the work was rolled back and can be done again.
    asyncpg.exceptions.IdleInTransactionSessionTimeoutError,
    asyncpg.exceptions.IdleSessionTimeoutError,
    asyncpg.exceptions.QueryCanceledError,
)

#: Server-side limits of the pooled connections, so that a ``serve`` process that stops
#: talking (SIGSTOPped, hung, its host gone) cannot hold row locks forever: Postgres itself
#: ends a session that sits idle inside a transaction for 10 s (rolling it back and releasing
#: its locks, so the process now owning those syncs' partitions proceeds), and cancels a
#: statement after 60 s (the client's own ``command_timeout``; it also covers a process
#: stopped in the middle of sending a statement, which is "active", not idle). If the process
#: wakes up, its next statement fails, and the batch is retried: the processed-command record
#: and the version fence make that harmless. Statements are planned once per session, not on
#: every execution: a batch's statements take arrays whose plans do not depend on their
#: contents.
SESSION_SETTINGS: Final = {
    "idle_in_transaction_session_timeout": "10000",
    "statement_timeout": "60000",
    "plan_cache_mode": "force_generic_plan",
}

#: The relay's and the scheduler's leader connections hold a session advisory lock while
#: idle between passes. A leader whose process is SIGSTOPped would keep it (TCP stays up)
#: and no other process could take over; Postgres 14+ ends such a session after this long
#: without a statement, which releases the lock. Leaders talk at least every few seconds, also
#: while they work (events/service/leader.py, ``kept_alive``).
LEADER_IDLE_TIMEOUT_SECONDS: Final = 10.0


#: A host of several in the URL that fails with one of these is passed over for the next:
#: down, unreachable, too slow to answer, starting up or shutting down, or not writable.
_NEXT_HOST: Final = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TargetServerAttributeNotMatched,
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
    return isinstance(exc, (*_TRANSIENT, TransientError))


def postgres_ssl(settings: Settings) -> ssl.SSLContext | str | None:
    """asyncpg's ``ssl=`` from ``database_ssl``: None leaves it to the URL's ``sslmode``.

    ``verify-ca`` and ``verify-full`` get a context that verifies the server's certificate
    against ``database_ssl_rootcert`` (else the system's CAs); only ``verify-full`` compares
    the host name. The other modes pass through as asyncpg understands them.
    """
    mode = settings.database_ssl
    if mode not in ("verify-ca", "verify-full"):
        return mode
    context = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=settings.database_ssl_rootcert
    )
    context.check_hostname = mode == "verify-full"
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _ssl_argument(settings: Settings) -> dict[str, Any]:
    mode = postgres_ssl(settings)
    return {} if mode is None else {"ssl": mode}


def dsn_hosts(dsn: str) -> list[tuple[str, int | None]]:
    """The ``(host, port)`` of each host named in the URL's authority, in order (a port
    left out is None: the URL's ``?port=``, else 5432). Empty if the URL names none there
    (``?host=``, a Unix socket directory, the environment)."""
    hostspec = urlsplit(dsn).netloc.rpartition("@")[2]
    hosts: list[tuple[str, int | None]] = []
    for part in filter(None, hostspec.split(",")):
        if part.startswith("["):  # [IPv6]:port
            host, _, rest = part[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            host, _, port = part.partition(":")
        hosts.append((unquote(host), int(port) if port else None))
    return hosts


async def connect_host_by_host(
    dsn: str, *, per_host_timeout: float, **kwargs: Any
) -> asyncpg.Connection:
    """``asyncpg.connect`` to each host of ``dsn`` in turn, each given ``per_host_timeout``
    seconds, until one accepts (and, with ``target_session_attrs`` in the URL, matches it).

    asyncpg puts one timeout around all the hosts of a URL together, so a first host that
    accepts TCP and never answers (a frozen primary) or never answers the SYN would use it
    all up, and a promoted standby after it would never be tried. The last host's error is
    raised if none accepts; a refused login (wrong password, no such database) at once.
    """
    hosts = dsn_hosts(dsn)
    if len(hosts) < 2:
        connection: asyncpg.Connection = await asyncpg.connect(
            dsn=dsn, timeout=per_host_timeout, **kwargs
        )
        return connection
    last: BaseException | None = None
    for host, port in hosts:
        try:
            connection = await asyncpg.connect(
                dsn=dsn, host=host, port=port, timeout=per_host_timeout, **kwargs
            )
        except _NEXT_HOST as exc:
            last = exc
            continue
        return connection
    assert last is not None  # noqa: S101 - two hosts or more were tried
    raise last


async def create_pool(settings: Settings) -> asyncpg.Pool:
    """A pool on ``SYNCLIFE_DATABASE_URL``. json and jsonb stay text: pydantic parses them."""
    try:
        pool = await asyncpg.create_pool(
            dsn=settings.database_url.get_secret_value(),
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            command_timeout=60,
            server_settings={**SESSION_SETTINGS, "application_name": application_name("pool")},
            reset=_end_transaction,
            connection_class=PooledConnection,
            connect=partial(
                _pool_connect, per_host_timeout=settings.database_connect_timeout_seconds
            ),
            **_ssl_argument(settings),
        )
    except _TRANSIENT as exc:
        raise TransientError(f"cannot reach Postgres: {type(exc).__name__}") from exc
    except _REFUSED as exc:
        raise _refused(exc) from exc
    assert pool is not None  # noqa: S101 - create_pool returns a pool once awaited
    return pool


async def _pool_connect(
    dsn: str, *, per_host_timeout: float, loop: Any = None, **kwargs: Any
) -> asyncpg.Connection:
    """The pool's way to open a connection (asyncpg passes its loop, which connect takes
    from the running one anyway)."""
    del loop
    return await connect_host_by_host(dsn, per_host_timeout=per_host_timeout, **kwargs)


async def _end_transaction(conn: asyncpg.Connection) -> None:
    """What a connection needs before it goes back to the pool: no open transaction.

    asyncpg's default reset also clears session state (advisory locks, listeners, cursors,
    settings), one more round trip on every release; pooled connections never hold any
    (the leaders have connections of their own).
    """
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


def application_name(role: str) -> str:
    """``synclife <role> <host>:<pid>``: which process holds a session (``pg_stat_activity``)."""
    return f"synclife {role} {socket.gethostname()}:{os.getpid()}"[:63]


class PooledConnection(asyncpg.Connection):
    """A pooled connection that is closed, never cancelled, when the client gives up on a
    statement (its ``command_timeout``, or the task awaiting it cancelled).

    asyncpg's way is a cancel request, and a cancel request that arrives while a COMMIT
    waits for the synchronous standby ends the wait: the transaction stays committed on the
    primary alone, visible there (the relay may publish it, a retry finds the command
    processed and acknowledges it), and is lost if the primary then fails over. A closed
    connection does not end the wait: the commit completes once the standby has it, or never
    becomes visible. Any other statement is rolled back with its session, as a cancelled one
    would be, and the pool opens a new connection.
    """

    def _cancel_current_command(
        self, waiter: asyncio.Future[None], cancel_waiter: asyncio.Future[None] | None = None
    ) -> None:
        # Once asyncpg has failed the statement's waiter (it does so after asking for this).
        asyncio.get_running_loop().call_soon(
            self._close_instead_of_cancelling, waiter, cancel_waiter
        )

    def _close_instead_of_cancelling(
        self, waiter: asyncio.Future[None], cancel_waiter: asyncio.Future[None] | None
    ) -> None:
        self.terminate()
        for future in (waiter, cancel_waiter):
            if future is not None and not future.done():
                future.set_result(None)


class LeaderConnection(asyncpg.Connection):
    """A leader's session: its statements take turns, so that the keep-alive
    (events/service/leader.py) can speak on it while the leader's own work uses it too."""

    __slots__ = ("_turn",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = asyncio.Lock()

    @property
    def busy(self) -> bool:
        """A statement is running (or waiting for its turn): the session is not idle."""
        return self._turn.locked()

    async def execute(self, query: str, *args: object, timeout: float | None = None) -> str:
        async with self._turn:
            return await super().execute(query, *args, timeout=timeout)

    async def fetch(self, query: str, *args: object, **kwargs: Any) -> Any:
        async with self._turn:
            return await super().fetch(query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: object, **kwargs: Any) -> Any:
        async with self._turn:
            return await super().fetchrow(query, *args, **kwargs)

    async def fetchval(
        self, query: str, *args: object, column: int = 0, timeout: float | None = None
    ) -> Any:
        async with self._turn:
            return await super().fetchval(query, *args, column=column, timeout=timeout)


async def connect(settings: Settings, *, leader: str | None = None) -> asyncpg.Connection:
    """A connection of its own; ``leader`` names a leader's (relay, scheduler) session, which
    Postgres ends after ``LEADER_IDLE_TIMEOUT_SECONDS`` of silence (releasing its locks): a
    ``LeaderConnection``."""
    try:
        conn = await connect_host_by_host(
            settings.database_url.get_secret_value(),
            per_host_timeout=settings.database_connect_timeout_seconds,
            server_settings=(
                {"application_name": application_name(leader)} if leader is not None else None
            ),
            connection_class=LeaderConnection if leader is not None else asyncpg.Connection,
            **_ssl_argument(settings),
        )
        if leader is not None and conn.get_server_version().major >= 14:
            timeout_ms = int(LEADER_IDLE_TIMEOUT_SECONDS * 1000)
            await conn.execute(f"SET idle_session_timeout = {timeout_ms}")
    except _TRANSIENT as exc:
        raise TransientError(f"cannot reach Postgres: {type(exc).__name__}") from exc
    except _REFUSED as exc:
        raise _refused(exc) from exc
    return conn


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
    folder = resources.files("events.service") / "migrations"
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
    """A pooled connection, with connection failures raised as ``TransientError``.

    A conflict (``is_conflict``) passes through as it is: the caller reads again at once.
    """
    try:
        async with pool.acquire() as conn:
            yield conn
    except _CONFLICTS:
        raise
    except _TRANSIENT as exc:
        raise TransientError(f"Postgres unavailable: {type(exc).__name__}") from exc
