"""Two ``synclife serve`` processes whose own clocks disagree by ten minutes (libfaketime: one
five minutes ahead, one five minutes behind) decide exactly as one process would: every
decision is made on the database's clock.

The process ahead is the scheduler; the one behind handles the commands. On each process's own
clock, the scheduler would expire a worker's lease as soon as it is taken, request the next run
minutes early, stamp its changes minutes after the next command's (``updated_at`` going
backwards), and the process behind would accept a key minutes after it expired.

Runs in a database of its own: no other test's scheduler leads there.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import secrets
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg
import pytest

from events.client import SynclifeClient, new_sync_id
from events.devtools.loadgen import serve_env, session_pid, spawn_serve
from events.devtools.stack.databases import create_database, drop_database
from events.devtools.stack.install import require_tool
from events.service.db import connect, migrate
from events.service.scheduler import SCHEDULER_LOCK
from events.service.settings import Settings
from events.service.tenancy import create_key, list_keys
from statemachine import ErrorCode, Outcome, SyncConfiguration, SyncStatus
from tests.helpers.live import new_tenant, with_own_topics

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[2]
LIBFAKETIME = "/usr/lib/*/faketime/libfaketime.so.1"
POLLING_SECONDS = 30  # the shortest polling interval a sync may have
CREATE: dict[str, Any] = {
    "bucket_id": "bkt_clock",
    "connection_id": "conn_clock",
    "provider": "s3",
    "source_path": "clock/",
    "created_by_user_id": "user_ada",
    "polling_interval_seconds": POLLING_SECONDS,
}


@pytest.fixture
async def own_database(settings: Settings) -> AsyncIterator[Settings]:
    """``settings`` on a database of their own (created, migrated, dropped after)."""
    url = urlsplit(settings.database_url.get_secret_value())
    name = f"{url.path.lstrip('/')}_clock_{secrets.token_hex(4)}"
    created = await create_database(settings, name)
    assert created is not None
    own = await with_own_topics(settings, database_url=created.database_url)
    conn = await connect(own)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield own
    await drop_database(settings, name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def libfaketime() -> str:
    """Debian's libfaketime, installed (as root, like the stack's Postgres) if missing."""
    await require_tool("faketime", "faketime", print)
    found = sorted(glob.glob(LIBFAKETIME))
    assert found, f"the faketime package is installed but {LIBFAKETIME} is not there"
    return found[0]


def skewed(env: dict[str, str], skew: str, library: str) -> dict[str, str]:
    """``env`` for a process whose own clock is off by ``skew`` (libfaketime, e.g. "+5m")."""
    return {
        **env,
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LD_PRELOAD": library,
        "FAKETIME": skew,
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # timeouts and the event loop run on real time
        "SYNCLIFE_SCHEDULER_INTERVAL_SECONDS": "0.1",
        "SYNCLIFE_RELAY_POLL_INTERVAL_SECONDS": "0.2",
        "SYNCLIFE_LOG_FORMAT": "text",
    }


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], log: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await spawn_serve(env, log, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


async def passes(port: int) -> float:
    """The scheduler passes a process made (its /metrics)."""
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        text = await response.text()
    for line in text.splitlines():
        if line.startswith("synclife_scheduler_passes_total "):
            return float(line.split()[1])
    return 0.0


async def scheduler_pid(conn: asyncpg.Connection) -> int | None:
    """The pid of the ``serve`` whose session holds this database's scheduler lock."""
    name = await conn.fetchval(
        """SELECT a.application_name
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objid = $1
             AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        SCHEDULER_LOCK,
    )
    return session_pid(name) if name else None


async def stored(conn: asyncpg.Connection, sync_id: str) -> SyncConfiguration:
    data = await conn.fetchval("SELECT data::text FROM syncs WHERE sync_config_id = $1", sync_id)
    return SyncConfiguration.model_validate_json(data)


async def assert_time_never_goes_back(conn: asyncpg.Connection, sync_id: str) -> None:
    rows = await conn.fetch(
        "SELECT version, occurred_at FROM sync_history WHERE sync_config_id = $1 ORDER BY version",
        sync_id,
    )
    stamps = [r["occurred_at"] for r in rows]
    assert stamps == sorted(stamps), f"occurred_at goes backwards: {stamps}"
    assert (await stored(conn, sync_id)).updated_at == stamps[-1]


async def test_processes_whose_clocks_disagree_decide_on_the_database_clock(
    own_database: Settings, tmp_path: Path
) -> None:
    library = await libfaketime()
    own = own_database
    tenant = await new_tenant(own)
    # The process ahead consumes a commands topic nobody writes to: it schedules and relays.
    ahead_settings = await with_own_topics(own)
    port = free_port()
    ahead_env = {
        **skewed(serve_env(ahead_settings, "ahead"), "+5m", library),
        "SYNCLIFE_HTTP_PORT": str(port),
    }
    conn = await connect(own)
    try:
        async with serving(ahead_env, tmp_path / "ahead.log") as ahead:

            async def ahead_schedules() -> bool:
                return await scheduler_pid(conn) == ahead.pid

            await until(ahead_schedules, "the process ahead leads the scheduler")
            async with (
                serving(skewed(serve_env(own, "behind"), "-5m", library), tmp_path / "behind.log"),
                SynclifeClient(own, api_key=tenant.write_key, namespace=tenant.namespace) as owner,
                SynclifeClient(own, api_key=tenant.run_key, namespace=tenant.namespace) as worker,
            ):
                await _walk_a_sync(conn, port, owner, worker)
                await _expired_key_is_refused(conn, own, tenant.org_id, tenant.namespace)
    finally:
        await conn.close()


async def _walk_a_sync(
    conn: asyncpg.Connection, port: int, owner: SynclifeClient, worker: SynclifeClient
) -> None:
    sync_id = new_sync_id()
    await owner.create(sync_id, **CREATE)  # PENDING: due at once

    async def run_requested() -> bool:
        return (await stored(conn, sync_id)).run_requested_at is not None

    await until(run_requested, "the scheduler requests the first run")
    started = await worker.run_start(sync_id, worker_id="w1", lease_seconds=30)
    assert started.outcome is Outcome.APPLIED, started.error
    assert started.run is not None
    await assert_time_never_goes_back(conn, sync_id)

    async def more_passes(count: int) -> None:
        target = await passes(port) + count

        async def done() -> bool:
            return await passes(port) >= target

        await until(done, f"{count} more passes of the scheduler")

    # The lease is not taken back early by the scheduler whose clock is ahead.
    await more_passes(3)
    leased = await stored(conn, sync_id)
    assert leased.version == started.version and leased.lock_expires_at is not None
    completed = await worker.run_complete(
        sync_id, run_id=str(started.run["run_id"]), lock_token=int(started.run["lock_token"])
    )
    assert completed.outcome is Outcome.APPLIED, completed.error
    polled = await stored(conn, sync_id)
    assert polled.status is SyncStatus.ACTIVE and polled.next_sync_at is not None

    # The next run is not requested early; it is requested once due, on the database's clock.
    await more_passes(3)
    assert (await stored(conn, sync_id)).version == polled.version
    first_request = polled.run_requested_at

    async def requested_again() -> bool:
        return (await stored(conn, sync_id)).run_requested_at != first_request

    await until(requested_again, "the next run falls due", timeout=POLLING_SECONDS + 30)
    again = await stored(conn, sync_id)
    assert again.run_requested_at is not None and again.run_requested_at >= polled.next_sync_at
    await assert_time_never_goes_back(conn, sync_id)


async def _expired_key_is_refused(
    conn: asyncpg.Connection, settings: Settings, org_id: str, namespace: str
) -> None:
    """A key expired on the database's clock is refused by the process whose clock is behind."""
    key = await create_key(conn, org_id, ["syncs:write"], expires_in=timedelta(seconds=1))
    expires_at = datetime.fromisoformat(key["expires_at"])

    async def expired() -> bool:
        states = {k["id"]: k["status"] for k in await list_keys(conn, org_id)}
        return bool(states[key["id"]] == "expired")

    await until(expired, f"the key expires at {expires_at}")
    async with SynclifeClient(settings, api_key=key["key"], namespace=namespace) as client:
        result = await client.create(new_sync_id(), **CREATE)
    assert result.outcome is Outcome.REJECTED
    assert result.error is not None and result.error.code is ErrorCode.UNAUTHENTICATED
    assert "expired" in result.error.message
