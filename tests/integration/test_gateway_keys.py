"""A write checks its key in the statement that records it once the gateway knows the key
(``events.gateway.caller``): a key revoked, expired, narrowed or limited to other namespaces
since is refused as before, nothing of the refused request is recorded or published, and a
bad key is still named before a bad body."""

from __future__ import annotations

import secrets

import pytest

from events.auth import hash_key
from events.gateway.caller import KEY_IDS
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, revoke_key
from tests.helpers.gateway import KEYS, Api, create_body
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack

BUCKET = "bkt_keys"


async def _known_key(api: Api, settings: Settings, tenant: Tenant) -> tuple[str, str, str]:
    """A new write key of ``tenant``, used for a create (so the gateway knows it): the key,
    its id and the sync's pause path."""
    conn = await connect(settings)
    try:
        made = await create_key(conn, tenant.org_id, ["syncs:write"])
    finally:
        await conn.close()
    key = str(made["key"])
    KEYS.add(key)
    created = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", create_body(), key=key)
    assert created.status == 200, created.body
    assert KEY_IDS.get(hash_key(key)) == made["id"]  # the next write checks it with its record
    sync_path = f"/v1/buckets/{BUCKET}/syncs/{created.body['sync_config_id']}"
    return key, str(made["id"]), sync_path


async def _recorded(settings: Settings, key_id: str) -> int:
    conn = await connect(settings)
    try:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM gateway_requests WHERE key_id = $1", key_id
        )
    finally:
        await conn.close()
    return count


async def _change_key(settings: Settings, statement: str, key_id: str) -> None:
    conn = await connect(settings)
    try:
        await conn.execute(statement, key_id)
    finally:
        await conn.close()


async def test_a_known_key_writes_with_one_statement_before_the_wait(
    api: Api, settings: Settings, tenant: Tenant
) -> None:
    # The same Idempotency-Key from two keys, each one's first request: two commands.
    conn = await connect(settings)
    try:
        other = str((await create_key(conn, tenant.org_id, ["syncs:write"]))["key"])
    finally:
        await conn.close()
    KEYS.add(other)
    firsts = [
        await api.call(
            "POST",
            f"/v1/buckets/{BUCKET}/syncs",
            create_body(),
            key=k,
            headers={"Idempotency-Key": "k0"},
        )
        for k in (tenant.write_key, other)
    ]
    assert all(f.status == 200 for f in firsts), [f.body for f in firsts]
    assert firsts[0].body["sync_config_id"] != firsts[1].body["sync_config_id"]
    key, key_id, sync_path = await _known_key(api, settings, tenant)
    paused = await api.call("POST", f"{sync_path}/pause", key=key)
    assert paused.status == 200, paused.body
    assert paused.body["paused"] is True
    again = await api.call(
        "POST", f"{sync_path}/resume", key=key, headers={"Idempotency-Key": "k1"}
    )
    assert again.status == 200 and again.body["paused"] is False, again.body
    retried = await api.call(
        "POST", f"{sync_path}/resume", key=key, headers={"Idempotency-Key": "k1"}
    )
    assert retried.status == 200 and retried.body["version"] == again.body["version"]
    assert await _recorded(settings, key_id) == 3  # the create, the pause, the resume
    # Not the caller's sync: 404, nothing recorded.
    other_bucket = sync_path.replace(f"/buckets/{BUCKET}/", "/buckets/bkt_other/")
    elsewhere = await api.call("POST", f"{other_bucket}/pause", key=key)
    assert elsewhere.status == 404, elsewhere.body
    assert await _recorded(settings, key_id) == 3


async def test_a_key_revoked_since_is_refused_and_nothing_is_recorded(
    api: Api, settings: Settings, tenant: Tenant
) -> None:
    key, key_id, sync_path = await _known_key(api, settings, tenant)
    conn = await connect(settings)
    try:
        await revoke_key(conn, key_id)
    finally:
        await conn.close()
    refused = await api.call("POST", f"{sync_path}/pause", key=key)
    assert refused.status == 401, refused.body
    assert refused.error_type == "unauthenticated"
    assert "revoked" in refused.text
    # A bad body with a revoked key: the key is named first, as before.
    bad_body = await api.call("POST", f"{sync_path}/pause", key=key, raw=b"{nope")
    assert bad_body.status == 401, bad_body.body
    assert await _recorded(settings, key_id) == 1  # the create only
    unchanged = await api.call("GET", sync_path)
    assert unchanged.status == 200 and unchanged.body["paused"] is False


async def test_a_key_expired_narrowed_or_limited_since_is_refused(
    api: Api, settings: Settings, tenant: Tenant
) -> None:
    key, key_id, sync_path = await _known_key(api, settings, tenant)
    await _change_key(
        settings,
        "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE key_id = $1",
        key_id,
    )
    expired = await api.call("POST", f"{sync_path}/pause", key=key)
    assert expired.status == 401 and "expired" in expired.text, expired.body

    key, key_id, sync_path = await _known_key(api, settings, tenant)
    await _change_key(
        settings, "UPDATE api_keys SET scopes = '{syncs:read}' WHERE key_id = $1", key_id
    )
    narrowed = await api.call("POST", f"{sync_path}/pause", key=key)
    assert narrowed.status == 403, narrowed.body
    assert await _recorded(settings, key_id) == 1

    key, key_id, sync_path = await _known_key(api, settings, tenant)
    conn = await connect(settings)
    try:
        other = await create_namespace(conn, tenant.org_id, f"ns-{secrets.token_hex(3)}")
        await conn.execute(
            "UPDATE api_keys SET namespaces = $2 WHERE key_id = $1", key_id, [other["id"]]
        )
    finally:
        await conn.close()
    limited = await api.call("POST", f"{sync_path}/pause", key=key)
    assert limited.status == 403, limited.body
    no_namespace = await api.call("POST", f"{sync_path}/pause", key=key, namespace=None)
    assert no_namespace.status == 400, no_namespace.body
    unknown_namespace = await api.call("POST", f"{sync_path}/pause", key=key, namespace="nope")
    assert unknown_namespace.status == 403, unknown_namespace.body
    assert await _recorded(settings, key_id) == 1
    # The namespace it may use now: a sync of that namespace is another one, so 404.
    moved = await api.call("POST", f"{sync_path}/pause", key=key, namespace=str(other["name"]))
    assert moved.status == 404, moved.body
