"""`synclife stack up` against the real thing: it starts (or reuses) Kafka and Postgres.

With SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS and SYNCLIFE_DATABASE_URL both set, `up` starts nothing
and checks those services instead; the assertions are the same.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient

from events.devtools import stack
from events.service.settings import Settings
from tests.helpers.live import run_cli

pytestmark = pytest.mark.stack


# The first run may install PostgreSQL with apt and download the Kafka jars with Maven.
@pytest.mark.timeout(1200)
async def test_up_twice_reuses_the_stack_and_serves_topics_and_database() -> None:
    settings = Settings()
    first_lines: list[str] = []
    second_lines: list[str] = []

    first = await stack.up(settings, first_lines.append)
    second = await stack.up(settings, second_lines.append)

    assert first == second
    assert set(first) == {stack.ENV_KAFKA_BOOTSTRAP_SERVERS, stack.ENV_DATABASE_URL}
    # The second call finds everything running: it starts, formats and downloads nothing.
    for verb in ("starting", "downloading", "initialising", "formatting", "created"):
        assert not [line for line in second_lines if line.startswith(verb)], second_lines

    # The password is only in the returned URL, never in the progress output.
    password = urlsplit(first[stack.ENV_DATABASE_URL]).password
    if password:
        assert not [line for line in first_lines + second_lines if password in line]

    admin = AIOKafkaAdminClient(bootstrap_servers=first[stack.ENV_KAFKA_BOOTSTRAP_SERVERS])
    await admin.start()
    try:
        described = await admin.describe_topics()
    finally:
        await admin.close()
    partitions = {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}
    for topic in (
        settings.commands_topic,
        settings.lifecycle_topic,
        settings.results_topic,
        settings.dlq_topic,
    ):
        assert partitions.get(topic) == settings.topic_partitions, (topic, partitions)

    conn = await asyncpg.connect(first[stack.ENV_DATABASE_URL], timeout=10)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        assert await conn.fetchval("SELECT current_database()") == urlsplit(
            first[stack.ENV_DATABASE_URL]
        ).path.lstrip("/")
    finally:
        await conn.close()

    report = await stack.status(settings)
    assert set(report) == {"kafka", "postgres"}
    assert not [state for state in report.values() if state == "down"], report


async def test_the_stack_up_command_runs_and_its_postgres_settings_are_in_effect() -> None:
    """``synclife stack up`` as people run it (its own process, as root in CI: Postgres is then
    run as another user), with the stack already up: it reloads the settings it writes.

    Against external services (both variables set before the session) it only checks them."""
    local = "postgres" in stack.service_pids(Settings())
    service_vars = (stack.ENV_KAFKA_BOOTSTRAP_SERVERS, stack.ENV_DATABASE_URL)
    env = {k: v for k, v in os.environ.items() if not (local and k in service_vars)}
    code, out, err = await run_cli("stack", "up", env=env, timeout=300)
    assert code == 0, err[-2000:]
    exports = dict(
        line.removeprefix("export ").split("=", 1)
        for line in out.splitlines()
        if line.startswith("export ")
    )
    url = exports[stack.ENV_DATABASE_URL]
    conn = await asyncpg.connect(url, timeout=10)
    try:
        settings = {
            name: await conn.fetchval(f"SHOW {name}")
            for name in ("max_wal_size", "checkpoint_timeout", "wal_compression")
        }
    finally:
        await conn.close()
    if local:
        assert settings == {
            "max_wal_size": "4GB",
            "checkpoint_timeout": "15min",
            "wal_compression": "lz4",
        }
