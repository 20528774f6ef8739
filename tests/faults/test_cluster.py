"""Exactly-once when a node is lost: the fault suite's load and checks (``harness.Scenario``)
on three brokers and a Postgres primary with a synchronous standby (``stack up --cluster``).

Brokers: the one leading the command partitions is killed (SIGKILL), killed again after
another was killed, restarted and back in sync, or frozen (SIGSTOP) past the controllers'
session timeout. Postgres: the primary dies (SIGKILL to all its processes) and the standby is
promoted while commands flow. ``test_asynchronous_standby_loses`` is the control: with the
standby made asynchronous (a switch only the tests have), the same failover fails its checks.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from typing import Any

import asyncpg
import pytest
from pydantic import SecretStr

from events.devtools import stack
from events.devtools.stack.cluster import REPLICAS, wait_in_sync
from events.devtools.stack.standby import set_synchronous, walsender_pid
from events.service.db import create_pool
from tests.faults.cluster import (
    CLUSTER_NOTES,
    back_in_sync,
    fail_over,
    freeze_broker,
    kill_leader,
    leading_broker,
    restore_postgres,
)
from tests.faults.harness import Fixture, Scenario
from tests.faults.test_faults import assert_clean

pytestmark = pytest.mark.cluster

# Two serve processes: three brokers and two Postgres servers share the machine with them.
PROCESSES = 2
LAG_SECONDS = 3.0  # how far the standby falls behind before the primary dies


def scenario(cfx: Fixture, name: str, seconds: float) -> Scenario:
    return Scenario(cfx, name, processes=PROCESSES, seconds=seconds, replicas=REPLICAS)


async def test_broker_leader_sigkill(cfx: Fixture, cluster: stack.Cluster) -> None:
    """SIGKILL the broker leading most command partitions: the others take over its
    partitions (and maybe the group coordinator), nothing acknowledged is lost."""

    async def kill(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        at = sc.fault()
        node = await kill_leader(sc, cluster)
        await sc.wait_recovered(at)
        await back_in_sync(sc, cluster, node)

    row = await scenario(cfx, "leader broker SIGKILL", 22).run(kill)
    assert_clean(row)


async def test_broker_kill_restart_kill(cfx: Fixture, cluster: stack.Cluster) -> None:
    """Kill a broker, start it again, wait until every replica is back in sync, then kill
    another: the second loss is survivable only because the first broker caught up."""

    async def twice(sc: Scenario) -> None:
        await asyncio.sleep(3.0)
        at = sc.fault()
        first = await kill_leader(sc, cluster)
        await sc.wait_recovered(at)
        await back_in_sync(sc, cluster, first)
        at = sc.fault()
        second = await kill_leader(sc, cluster, but=first)
        await sc.wait_recovered(at)
        await back_in_sync(sc, cluster, second)

    row = await scenario(cfx, "broker SIGKILL, back in sync, another SIGKILL", 35).run(twice)
    assert_clean(row)


async def test_broker_sigstop(cfx: Fixture, cluster: stack.Cluster) -> None:
    """Freeze the leading broker (SIGSTOP) for 20 s, past the controllers' 9 s session
    timeout: it is fenced and its partitions move while it still holds its connections;
    then SIGCONT, and it rejoins."""

    async def frozen(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        node = await leading_broker(cluster, sc.settings.commands_topic)
        at = sc.fault()
        freeze_broker(cluster, node, True)
        try:
            await sc.wait_recovered(at)
            await asyncio.sleep(max(0.0, 20.0 - (time.monotonic() - at)))
        finally:
            freeze_broker(cluster, node, False)
        seconds = await wait_in_sync(cluster)
        CLUSTER_NOTES.append(
            f"{sc.name}: broker {node} woken, every replica in sync after {seconds:.1f} s."
        )

    row = await scenario(cfx, "leader broker SIGSTOP 20s + SIGCONT", 30).run(frozen)
    assert_clean(row)


async def test_postgres_failover(cfx: Fixture, cluster: stack.Cluster) -> None:
    """The standby falls behind (its WAL sender frozen), the primary dies (SIGKILL), the
    standby is promoted while commands flow: the service reconnects to it (several hosts,
    target_session_attrs=read-write), and every command answered before is on it."""

    async def failover(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        at = await fail_over(sc, cluster, lag_seconds=LAG_SECONDS)
        await sc.wait_recovered(at)

    try:
        row = await scenario(cfx, "Postgres primary SIGKILL, standby promoted", 22).run(failover)
    finally:
        await restore_postgres(cluster)
    assert_clean(row)


async def test_asynchronous_standby_loses(cfx: Fixture, cluster: stack.Cluster) -> None:
    """The control: the same failover with the standby made asynchronous fails. Commits of
    the last seconds were answered (results published, offsets committed) and are not on the
    promoted server."""

    async def failover(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        at = await fail_over(sc, cluster, lag_seconds=LAG_SECONDS)
        await sc.wait_recovered(at)

    await set_synchronous(cluster.postgres, False)
    rows_before = len(cfx.rows)
    try:
        with pytest.raises(AssertionError, match="acknowledged, then lost") as failed:
            await scenario(cfx, "asynchronous standby promoted", 22).run(failover)
    finally:
        await restore_postgres(cluster, synchronous=True)
    assert len(cfx.rows) == rows_before  # the failed run left no row in the table
    CLUSTER_NOTES.append(
        "Control, the same failover with the standby asynchronous (test-only switch): failed as "
        f"it must: {str(failed.value).splitlines()[0]}."
    )


async def test_commit_waiting_for_the_standby_is_never_cancelled(cluster: stack.Cluster) -> None:
    """A commit waiting for the synchronous standby (its WAL sender frozen) is neither ended by
    the server's statement timeout nor by the client giving up (the pool closes the connection
    instead of sending a cancel request, which would leave the commit on the primary alone):
    while the standby lacks it, no other session sees it."""
    pair = cluster.postgres
    settings = cluster.client_settings().model_copy(update={"database_url": SecretStr(pair.url())})
    pool = await create_pool(settings)
    watcher = await asyncpg.connect(pair.primary_url())
    sender = await walsender_pid(pair)
    ids = [f"probe-{secrets.token_hex(4)}" for _ in range(2)]

    async def explicit(conn: Any) -> None:
        async with conn.transaction():
            await conn.execute("INSERT INTO commit_probe VALUES ($1)", ids[1])

    try:
        await watcher.execute("CREATE TABLE IF NOT EXISTS commit_probe (id text PRIMARY KEY)")
        os.kill(sender, signal.SIGSTOP)
        try:
            async with pool.acquire() as conn:
                await conn.execute("SET statement_timeout = 200")
                # One statement, its own transaction: the client gives up after 1 s.
                with pytest.raises(TimeoutError):
                    await conn.execute("INSERT INTO commit_probe VALUES ($1)", ids[0], timeout=1)
            async with pool.acquire() as conn:
                await conn.execute("SET statement_timeout = 200")
                waiting = asyncio.create_task(explicit(conn))  # BEGIN, INSERT, COMMIT
                await asyncio.sleep(2.0)  # ten statement timeouts
                seen = await watcher.fetchval(
                    "SELECT count(*) FROM commit_probe WHERE id = ANY($1::text[])", ids
                )
                assert seen == 0, "a commit the standby does not have is visible"
                assert not waiting.done()
                os.kill(sender, signal.SIGCONT)
                await waiting  # the standby has it now: committed
        finally:
            os.kill(sender, signal.SIGCONT)
        assert (
            await watcher.fetchval("SELECT count(*) FROM commit_probe WHERE id = $1", ids[1]) == 1
        )
    finally:
        await watcher.close()
        await pool.close()
