"""The fault suite's stack (its own Kafka and Postgres), tenant and summary table; the
cluster scenarios' cluster (three brokers, a Postgres primary and standby) and theirs.

The suite never touches the shared stack (127.0.0.1:19092 and :15432) that other test runs use:
it starts a stack of its own on other ports and in ``.cache/faultstack`` (``stack.up`` with
``use_environment=False``, since ``tests/integration`` points the environment at the shared
one), stops and starts that stack's broker and Postgres, and stops it at the end.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr

from events.devtools import stack
from events.service.db import connect, migrate
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org
from tests.faults.cluster import (
    CLUSTER_NOTES,
    CLUSTER_ROWS,
    CLUSTER_SUMMARY_FILE,
    cluster_layout,
    write_cluster_summary,
)
from tests.faults.harness import (
    POSTGRES_PORT,
    SUMMARY_FILE,
    Fixture,
    Row,
    delete_topics,
    echo_nothing,
    stack_settings,
    write_summary,
)

_ROWS: list[Row] = []
_NOTES: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The per-scenario table, whatever ``-s`` says (also in .cache/faults/summary.md)."""
    if CLUSTER_ROWS:
        text = write_cluster_summary(CLUSTER_ROWS, CLUSTER_NOTES)
        terminalreporter.section("cluster fault suite")
        terminalreporter.write(text)
        terminalreporter.write_line(f"(written to {CLUSTER_SUMMARY_FILE})")
    if not _ROWS and not _NOTES:
        return
    text = write_summary(_ROWS, _NOTES)
    terminalreporter.section("fault suite")
    terminalreporter.write(text)
    terminalreporter.write_line(f"(written to {SUMMARY_FILE})")


@pytest.fixture(scope="session")
def notes() -> list[str]:
    """Lines added under the table (the pause guarantee's outcome)."""
    return _NOTES


@pytest.fixture(scope="session")
async def fault_stack() -> AsyncIterator[tuple[Settings, str]]:
    """Start (or reuse) the suite's own stack; stop it at the end (its data stays)."""
    settings = stack_settings()
    assert POSTGRES_PORT != 15432, "the fault suite must not use the shared Postgres"
    env = await stack.up(settings, echo_nothing, use_environment=False)
    database_url = env[stack.ENV_DATABASE_URL]
    await delete_topics(settings.kafka_bootstrap_servers, "faults.")  # an interrupted run's
    yield settings, database_url
    if os.environ.get("SYNCLIFE_FAULTS_KEEP_STACK") != "1":
        await stack.down(settings, echo_nothing)


@pytest.fixture(scope="session")
async def fx(
    fault_stack: tuple[Settings, str], tmp_path_factory: pytest.TempPathFactory
) -> Fixture:
    settings, database_url = fault_stack
    return await tenant(settings, database_url, tmp_path_factory, _ROWS)


@pytest.fixture(scope="session")
async def cluster() -> AsyncIterator[stack.Cluster]:
    """The cluster suite's own three brokers and Postgres pair (tests/faults/cluster.py);
    stopped at the end (their data stays)."""
    running = cluster_layout()
    await stack.cluster_up(running, echo_nothing, reset_promoted=True)  # the suite's own data
    await delete_topics(running.bootstrap, "faults.")  # an interrupted run's
    yield running
    if os.environ.get("SYNCLIFE_FAULTS_KEEP_STACK") != "1":
        await stack.cluster_down(running, echo_nothing)


@pytest.fixture(scope="session")
async def cfx(cluster: stack.Cluster, tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    """The fixture of the cluster scenarios: all three brokers and both Postgres servers."""
    return await tenant(
        cluster.client_settings(), cluster.postgres.url(), tmp_path_factory, CLUSTER_ROWS
    )


async def tenant(
    settings: Settings,
    database_url: str,
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[Row],
) -> Fixture:
    """A migrated, emptied database with a tenant of the suite's own."""
    with_url = settings.model_copy(update={"database_url": SecretStr(database_url)})
    conn = await connect(with_url)
    try:
        await migrate(conn)
        # This database is the suite's own (never the shared one): start from empty, so an
        # interrupted earlier run leaves no outbox rows or due syncs behind.
        await conn.execute(
            "TRUNCATE syncs, sync_timers, sync_history, processed_commands, outbox, dead_letters,"
            " bulk_requests, bulk_operations, bulk_items"
        )
        org = await create_org(conn, f"faults-{secrets.token_hex(4)}")
        await create_namespace(conn, org["id"], "production")
        key = await create_key(conn, org["id"], ["syncs:write"])
        run_key = await create_key(conn, org["id"], ["syncs:run"])
    finally:
        await conn.close()
    log_root = Path(tmp_path_factory.mktemp("faults"))
    return Fixture(
        stack=settings,
        database_url=database_url,
        api_key=key["key"],
        run_key=run_key["key"],
        org_id=org["id"],
        namespace="production",
        log_root=log_root,
        rows=rows,
        run=secrets.token_hex(3),
    )


@pytest.fixture
async def db(fx: Fixture) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(fx.database_url)
    yield conn
    await conn.close()
