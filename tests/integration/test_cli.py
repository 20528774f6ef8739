"""The CLI for people, run as a real process against the real stack."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from typing import Any

import pytest

from events.client import new_sync_id
from events.service.app import Service
from events.service.db import connect, migrate
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org
from tests.helpers.live import run_cli

pytestmark = pytest.mark.stack


async def synclife(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    full_env = {
        **os.environ,
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value(),
        "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
        "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
        "SYNCLIFE_LIFECYCLE_TOPIC": settings.lifecycle_topic,
        **(env or {}),
    }
    return await run_cli(*args, env=full_env)


async def json_of(settings: Settings, *args: str) -> dict[str, Any]:
    code, out, err = await synclife(settings, *args, "--json")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 1, out
    value = json.loads(lines[0])
    assert isinstance(value, dict)
    return value


async def test_migrate_is_idempotent(settings: Settings) -> None:
    conn = await connect(settings)
    try:
        assert await migrate(conn) == []  # the session fixture already applied everything
        count = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()
    code, out, _ = await synclife(settings, "migrate")
    assert code == 0 and out.strip() == "schema is up to date"
    assert count >= 1


async def test_tenancy_commands_and_send(settings: Settings, service: Service) -> None:
    org = await json_of(settings, "orgs", "create", f"cli-{secrets.token_hex(3)}")
    assert org["id"].startswith("org_")
    ns = await json_of(settings, "namespaces", "create", "--org", org["name"], "staging")
    assert ns["id"].startswith("ns_")
    key = await json_of(settings, "keys", "create", "--org", org["id"], "--scope", "syncs:write")
    assert key["key"].startswith("sk_") and len(key["key"]) >= 35

    code, listed, _ = await synclife(settings, "keys", "list", "--org", org["id"], "--json")
    assert code == 0
    rows = [json.loads(line) for line in listed.splitlines()]
    assert [r["id"] for r in rows] == [key["id"]] and rows[0]["status"] == "active"
    assert key["key"] not in listed

    env = {"SYNCLIFE_API_KEY": key["key"], "SYNCLIFE_NAMESPACE": "staging"}
    sync_id = new_sync_id()
    create = [
        "send",
        "create",
        sync_id,
        "--set",
        "bucket_id=bkt_1",
        "--set",
        "connection_id=conn_1",
        "--set",
        "provider=s3",
        "--set",
        "source_path=bucket-a/x",
        "--set",
        "created_by_user_id=u1",
    ]
    code, out, err = await synclife(settings, *create, env=env)
    assert code == 0, err
    result = json.loads(out)
    assert (result["outcome"], result["status"], result["version"]) == ("applied", "PENDING", 1)
    assert key["key"] not in out + err

    code, out, _ = await synclife(
        settings, "send", "pause", sync_id, "--set", "paused_by_user_id=u1", env=env
    )
    assert code == 0 and json.loads(out)["status"] == "SUSPENDED"

    revoked = await json_of(settings, "keys", "revoke", key["id"])
    assert revoked["id"] == key["id"]
    code, out, _ = await synclife(settings, "send", "resume", sync_id, env=env)
    assert code == 2  # rejected
    assert json.loads(out)["error"]["code"] == "unauthenticated"


async def test_bad_input_to_cli_is_a_clear_error(settings: Settings) -> None:
    code, _, err = await synclife(
        settings, "keys", "create", "--org", "no-such-org", "--scope", "syncs:write"
    )
    assert code == 1 and "organization 'no-such-org' not found" in err
    code, _, err = await synclife(settings, "orgs", "create", "Bad Name!")
    assert code == 1 and "must be 1-63 characters" in err


async def test_quickstart_example_runs(settings: Settings, service: Service) -> None:
    """The README's runnable client example, run as a real program."""
    conn = await connect(settings)
    try:
        org = await create_org(conn, f"example-{secrets.token_hex(3)}")
        await create_namespace(conn, org["id"], "production")
        key = await create_key(conn, org["id"], ["syncs:write"])
    finally:
        await conn.close()
    env = {
        **os.environ,
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
        "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
        "SYNCLIFE_LIFECYCLE_TOPIC": settings.lifecycle_topic,
        "SYNCLIFE_API_KEY": key["key"],
        "SYNCLIFE_NAMESPACE": "production",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "examples/quickstart.py",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    lines = out.decode().splitlines()
    assert lines[0] == "created: applied PENDING v 1"
    assert lines[1].startswith("paused: applied SUSPENDED v ")
    assert lines[2].startswith("resumed: applied ACTIVE v ")
    assert "event v1 sync.created -> PENDING" in lines
    assert any("sync.status_changed -> SUSPENDED" in line for line in lines)
