"""Several hosts in the database URL: a first host that never answers costs one per-host
timeout (``SYNCLIFE_DATABASE_CONNECT_TIMEOUT_SECONDS``), then the next host is tried.

asyncpg puts one timeout around all the hosts of a URL; a frozen primary (it accepts TCP and
never answers) would use it all up and the promoted standby after it would never be tried.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import pytest
from pydantic import SecretStr

from events.service.db import connect, create_pool, dsn_hosts
from events.service.settings import Settings

pytestmark = pytest.mark.stack

PER_HOST = 1.0
# Without a per-host timeout, the first host would take asyncpg's whole 60 s budget and the
# connection would fail; this only bounds a broken run.
GUARD_SECONDS = 30.0


@pytest.fixture
async def silent_host() -> AsyncIterator[int]:
    """A port that accepts connections and never says a word (a SIGSTOPped server)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_hosts(settings: Settings, *first: int) -> Settings:
    """``settings`` whose URL names ``127.0.0.1:<port>`` for each of ``first``, then the real
    server, with ``target_session_attrs=read-write``."""
    url = urlsplit(settings.database_url.get_secret_value())
    auth, _, real = url.netloc.rpartition("@")
    hosts = ",".join([*(f"127.0.0.1:{p}" for p in first), real])
    query = "&".join(filter(None, [url.query, "target_session_attrs=read-write"]))
    dsn = urlunsplit((url.scheme, f"{auth}@{hosts}" if auth else hosts, url.path, query, ""))
    return settings.model_copy(
        update={"database_url": SecretStr(dsn), "database_connect_timeout_seconds": PER_HOST}
    )


def test_dsn_hosts() -> None:
    assert dsn_hosts("postgresql://u:p@db1:5432,db2,[::1]:6543/x?target_session_attrs=any") == [
        ("db1", 5432),
        ("db2", None),
        ("::1", 6543),
    ]
    assert dsn_hosts("postgresql:///x?host=/run/postgresql") == []


async def test_connect_passes_over_a_silent_and_a_closed_host(silent_host: int) -> None:
    settings = with_hosts(Settings(), silent_host, closed_port())
    assert len(dsn_hosts(settings.database_url.get_secret_value())) == 3
    conn = await asyncio.wait_for(connect(settings, leader="test"), GUARD_SECONDS)
    try:
        assert await conn.fetchval("SELECT NOT pg_is_in_recovery()") is True
    finally:
        await conn.close()


async def test_pool_passes_over_a_silent_host(silent_host: int) -> None:
    settings = with_hosts(Settings(), silent_host)
    pool = await asyncio.wait_for(create_pool(settings), GUARD_SECONDS)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT 1") == 1
    finally:
        await pool.close()
