"""The gateway's access check on the real Postgres: one look-up per request, the processor's
rules and messages, the scopes' hierarchy, expiry on the database's clock plus the offset."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pytest

from events.auth import SCOPE_ADMIN, SCOPE_READ, SCOPE_RUN, SCOPE_WRITE
from events.service.access import Access, AccessDenied, authorize
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import (
    AdminError,
    create_key,
    create_namespace,
    create_org,
    list_keys,
    revoke_key,
)
from tests.helpers.live import run_cli

pytestmark = pytest.mark.stack


@dataclass
class Org:
    id: str
    namespace_id: str
    namespace: str
    other_namespace_id: str


@pytest.fixture
async def conn(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    c = await connect(settings)
    yield c
    await c.close()


@pytest.fixture
async def org(conn: asyncpg.Connection) -> Org:
    made = await create_org(conn, f"org-{secrets.token_hex(4)}")
    production = await create_namespace(conn, made["id"], "production")
    staging = await create_namespace(conn, made["id"], "staging")
    return Org(made["id"], production["id"], "production", staging["id"])


async def key(conn: asyncpg.Connection, org: Org, *scopes: str, **kw: object) -> str:
    created = await create_key(conn, org.id, list(scopes), **kw)  # type: ignore[arg-type]
    return f"Bearer {created['key']}"


async def denied(
    conn: asyncpg.Connection,
    authorization: str | None,
    namespace: str | None,
    scope: str,
    **kw: object,
) -> AccessDenied:
    with pytest.raises(AccessDenied) as caught:
        await authorize(conn, authorization, namespace, scope, **kw)  # type: ignore[arg-type]
    return caught.value


async def test_a_write_key_gets_its_namespace_by_name_or_id(
    conn: asyncpg.Connection, org: Org
) -> None:
    header = await key(conn, org, SCOPE_WRITE)
    by_name = await authorize(conn, header, "production", SCOPE_WRITE)
    by_id = await authorize(conn, header, org.namespace_id, SCOPE_READ)
    assert by_name.namespace_id == by_id.namespace_id == org.namespace_id
    assert by_name.internal_id == org.id
    assert by_name.user_id is None
    assert by_name.caller == f"key:{by_name.key_id}"
    assert by_name.allows(SCOPE_READ) and not by_name.allows(SCOPE_ADMIN)


async def test_an_owned_key_acts_for_its_user(conn: asyncpg.Connection, org: Org) -> None:
    header = await key(conn, org, SCOPE_WRITE, user_id="user_ada")
    access = await authorize(conn, header, "production", SCOPE_WRITE)
    assert access.user_id == "user_ada"
    assert access.caller == "user_ada"


async def test_missing_or_malformed_authorization_is_401(
    conn: asyncpg.Connection, org: Org
) -> None:
    for header in (None, "", "Basic abc", "Bearer sk_short", "Bearer sk_" + "é" * 40):
        error = await denied(conn, header, "production", SCOPE_READ)
        assert (error.status, error.code) == (401, "unauthenticated"), header
        assert "malformed" in error.message


async def test_an_unknown_key_is_401_and_the_key_is_never_in_the_message(
    conn: asyncpg.Connection, org: Org
) -> None:
    plaintext = "sk_" + secrets.token_urlsafe(32)
    error = await denied(conn, f"Bearer {plaintext}", "production", SCOPE_READ)
    assert (error.status, error.code, error.message) == (401, "unauthenticated", "unknown API key")
    assert plaintext not in str(error)


async def test_a_revoked_key_is_401(conn: asyncpg.Connection, org: Org) -> None:
    created = await create_key(conn, org.id, [SCOPE_WRITE])
    await revoke_key(conn, created["id"])
    error = await denied(conn, f"Bearer {created['key']}", "production", SCOPE_READ)
    assert (error.status, error.code) == (401, "unauthenticated")
    assert error.message == "the API key was revoked"
    assert created["key"] not in error.message


async def test_a_key_expires_on_the_database_clock_plus_the_offset(
    conn: asyncpg.Connection, org: Org
) -> None:
    header = await key(conn, org, SCOPE_WRITE, expires_in=timedelta(hours=1))
    await authorize(conn, header, "production", SCOPE_WRITE)  # not yet
    error = await denied(
        conn, header, "production", SCOPE_WRITE, clock_offset=timedelta(hours=1, seconds=1)
    )
    assert (error.status, error.code, error.message) == (
        401,
        "unauthenticated",
        "the API key has expired",
    )


async def test_a_missing_namespace_is_400(conn: asyncpg.Connection, org: Org) -> None:
    header = await key(conn, org, SCOPE_WRITE)
    # As a command's header: empty, blank or holding U+0000 (no text column holds it) is absent.
    for namespace in (None, "", "   ", "x\x00y"):
        error = await denied(conn, header, namespace, SCOPE_READ)
        assert (error.status, error.code) == (400, "validation_error")
        assert error.message == "the x-namespace header is required"


async def test_another_organizations_namespace_is_403(conn: asyncpg.Connection, org: Org) -> None:
    other = await create_org(conn, f"org-{secrets.token_hex(4)}")
    theirs = await create_namespace(conn, other["id"], "theirs")
    header = await key(conn, org, SCOPE_ADMIN)
    for ref in (theirs["id"], "theirs", "nowhere", "x" * 10_000):
        error = await denied(conn, header, ref, SCOPE_READ)
        assert (error.status, error.code) == (403, "forbidden"), ref
        assert "is not available to this key" in error.message


async def test_a_namespace_not_in_the_keys_list_is_403(conn: asyncpg.Connection, org: Org) -> None:
    header = await key(conn, org, SCOPE_WRITE, namespaces=["staging"])
    assert (await authorize(conn, header, "staging", SCOPE_WRITE)).namespace_id == (
        org.other_namespace_id
    )
    error = await denied(conn, header, "production", SCOPE_WRITE)
    assert (error.status, error.code) == (403, "forbidden")
    assert error.message == "namespace 'production' is not available to this key"


async def test_the_scopes_hierarchy(conn: asyncpg.Connection, org: Org) -> None:
    read = await key(conn, org, SCOPE_READ)
    admin = await key(conn, org, SCOPE_ADMIN)
    run = await key(conn, org, SCOPE_RUN)
    await authorize(conn, read, "production", SCOPE_READ)
    error = await denied(conn, read, "production", SCOPE_WRITE)
    assert (error.status, error.code) == (403, "forbidden")
    assert error.message == "this request needs the syncs:write scope"
    for needed in (SCOPE_READ, SCOPE_WRITE, SCOPE_ADMIN):
        access = await authorize(conn, admin, "production", needed)
        assert isinstance(access, Access)
    assert not access.allows(SCOPE_RUN)
    await authorize(conn, run, "production", SCOPE_RUN)
    for needed in (SCOPE_READ, SCOPE_WRITE):
        error = await denied(conn, run, "production", needed)
        assert (error.status, error.code) == (403, "forbidden")


async def test_last_use_is_recorded_at_most_once_a_minute(
    conn: asyncpg.Connection, org: Org
) -> None:
    created = await create_key(conn, org.id, [SCOPE_READ])
    header = f"Bearer {created['key']}"
    last_used = "SELECT last_used_at FROM api_keys WHERE key_id = $1"
    assert await conn.fetchval(last_used, created["id"]) is None
    await authorize(conn, header, "production", SCOPE_READ)
    first = await conn.fetchval(last_used, created["id"])
    assert first is not None
    await authorize(conn, header, "production", SCOPE_READ)
    assert await conn.fetchval(last_used, created["id"]) == first
    old = await conn.fetchval(
        """UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE key_id = $1
           RETURNING last_used_at""",
        created["id"],
    )
    await authorize(conn, header, "production", SCOPE_READ)
    assert await conn.fetchval(last_used, created["id"]) >= old + timedelta(seconds=60)


async def test_a_pool_serves_as_well(
    settings: Settings, org: Org, conn: asyncpg.Connection
) -> None:
    header = await key(conn, org, SCOPE_WRITE)
    pool = await asyncpg.create_pool(
        settings.database_url.get_secret_value(), min_size=1, max_size=2
    )
    try:
        access = await authorize(pool, header, "production", SCOPE_WRITE)
    finally:
        await pool.close()
    assert access.namespace_id == org.namespace_id


async def test_keys_create_user_is_checked_and_listed(
    settings: Settings, conn: asyncpg.Connection, org: Org
) -> None:
    env = {
        **os.environ,
        "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value(),
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    args = ("keys", "create", "--org", org.id, "--scope", SCOPE_ADMIN, "--json")
    code, out, err = await run_cli(*args, "--user", "user_ada", env=env)
    assert code == 0, err
    created = json.loads(out)
    assert created["user"] == "user_ada" and created["scopes"] == [SCOPE_ADMIN]
    access = await authorize(conn, f"Bearer {created['key']}", "production", SCOPE_WRITE)
    assert access.caller == "user_ada"
    listed = {k["id"]: k for k in await list_keys(conn, org.id)}
    assert listed[created["id"]]["user"] == "user_ada"
    assert "key" not in listed[created["id"]]
    for bad in ("", " ada", "a\x07b", "u" * 257):
        with pytest.raises(AdminError, match="user id"):
            await create_key(conn, org.id, [SCOPE_WRITE], user_id=bad)
    with pytest.raises(AdminError, match="scopes must be among"):
        await create_key(conn, org.id, ["syncs:everything"])


async def test_keys_expire_on_the_clock_the_service_judges_them_on(
    conn: asyncpg.Connection, org: Org
) -> None:
    # Created with the clock 2 hours ahead, expiring in 1 hour: valid on that clock, and
    # listed as expired only when the clock is past it.
    ahead = timedelta(hours=2)
    created = await create_key(
        conn, org.id, [SCOPE_READ], expires_in=timedelta(hours=1), clock_offset=ahead
    )
    await authorize(conn, f"Bearer {created['key']}", "production", SCOPE_READ, ahead)
    listed = {k["id"]: k["status"] for k in await list_keys(conn, org.id, ahead)}
    assert listed[created["id"]] == "active"
    later = {k["id"]: k["status"] for k in await list_keys(conn, org.id, ahead * 2)}
    assert later[created["id"]] == "expired"
