"""The HTTP gateway on the real stack, over real HTTP: the write routes as commands, their
results, errors in the vendor's body, and the seed's resume."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from events.client import SynclifeClient
from events.gateway import Gateway
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from tests.helpers.gateway import (
    Api,
    api_for,
    create_body,
    create_sync,
    key_with,
    running_gateway,
    sync_path,
)
from tests.helpers.live import Seen, Tenant, new_tenant

pytestmark = pytest.mark.stack

BUCKET = "bkt_marketing_assets"


async def test_create_answers_the_sync_with_an_id_the_gateway_assigned(api: Api) -> None:
    sync = await create_sync(api, BUCKET, description="marketing drive")
    assert str(sync["sync_config_id"]).startswith("sync_")
    assert sync["bucket_id"] == BUCKET
    assert sync["status"] == "PENDING"
    assert sync["locked"] is False
    assert sync["description"] == "marketing drive"
    assert "lock_token" not in sync
    got = await api.call("GET", sync_path(sync))
    assert got.status == 200
    assert got.body["sync_config_id"] == sync["sync_config_id"]
    assert got.headers["ETag"] == f'"{sync["version"]}"'


async def test_the_seeds_resume_from_suspended_active_and_canceled(
    api: Api, lifecycle: Seen, client: SynclifeClient
) -> None:
    sync = await create_sync(api, BUCKET)
    paused = await api.call("POST", sync_path(sync, "/pause"))
    assert paused.status == 200, paused.body
    assert paused.body["paused"] is True and paused.body["status"] == "SUSPENDED"

    resumed = await api.call("POST", sync_path(sync, "/resume"))
    assert resumed.status == 200, resumed.body
    body = resumed.body
    assert body["paused"] is False and body["is_active"] is True
    assert body["status"] == "ACTIVE"
    assert body["pause_reason"] is None and body["paused_at"] is None
    assert body["paused_by_user_id"] is None
    sync_id = str(sync["sync_config_id"])
    wanted = ("sync.status_changed", "SUSPENDED", "ACTIVE")
    seen = 0
    while wanted not in [(t, e.from_status, e.to_status) for _, t, e in lifecycle.events(sync_id)]:
        seen += 1
        await lifecycle.wait(sync_id, seen)  # fails after 20 s without the event

    again = await api.call("POST", sync_path(sync, "/resume"))  # from ACTIVE: noop, 200
    assert again.status == 200, again.body
    assert again.body["status"] == "ACTIVE"
    assert again.body["version"] == body["version"]

    canceled = await create_sync(api, BUCKET)
    # The vendor's API has no cancel route: the sync is canceled through the Kafka contract.
    result = await client.cancel(str(canceled["sync_config_id"]))
    assert result.outcome.value == "applied"
    refused = await api.call("POST", sync_path(canceled, "/resume"))
    assert refused.status == 409, refused.body
    assert refused.error_type == "invalid_transition"
    assert refused.body["success"] is False and refused.body["status"] == 409


async def test_another_tenants_and_another_buckets_sync_are_not_found(
    api: Api, gateway: Gateway, settings: Settings
) -> None:
    sync = await create_sync(api, BUCKET)
    other = await new_tenant(settings)
    async with api_for(gateway, other) as stranger:
        for method, tail in (("GET", ""), ("POST", "/pause"), ("GET", "/metrics")):
            answer = await stranger.call(method, sync_path(sync, tail))
            assert answer.status == 404, (method, tail, answer.body)
            assert answer.error_type == "not_found"
            assert str(sync["sync_config_id"]) not in answer.text
    wrong_bucket = f"/v1/buckets/bkt_other/syncs/{sync['sync_config_id']}"
    for method, tail in (("GET", ""), ("POST", "/pause"), ("DELETE", ""), ("GET", "/jobs/x")):
        answer = await api.call(method, wrong_bucket + tail)
        assert answer.status == 404, (method, tail, answer.body)
    still = await api.call("GET", sync_path(sync))
    assert still.body["paused"] is False  # the refused pause changed nothing


async def test_pause_patch_trigger_unlock_delete(api: Api) -> None:
    sync = await create_sync(api, BUCKET, sync_mode="continuous")
    patched = await api.call("PATCH", sync_path(sync), {"description": "new", "batch_size": 20})
    assert patched.status == 200, patched.body
    assert patched.body["description"] == "new" and patched.body["batch_size"] == 20

    paused = await api.call("PATCH", sync_path(sync), {"is_active": False})
    assert paused.status == 200, paused.body
    assert paused.body["status"] == "SUSPENDED" and paused.body["paused"] is True
    resumed = await api.call("PATCH", sync_path(sync), {"status": "ACTIVE"})
    assert resumed.status == 200, resumed.body
    assert resumed.body["status"] == "ACTIVE"

    triggered = await api.call("POST", sync_path(sync, "/trigger"), params={"full_sync": "true"})
    assert triggered.status == 200, triggered.body
    assert triggered.body["sync_config_id"] == sync["sync_config_id"]
    assert triggered.body["full_sync"] is True

    unlocked = await api.call("POST", sync_path(sync, "/unlock"))
    assert unlocked.status == 200, unlocked.body  # nothing locked: noop
    assert unlocked.body["locked"] is False

    deleted = await api.call("DELETE", sync_path(sync))
    assert deleted.status == 200, deleted.body
    assert deleted.body == {"sync_config_id": sync["sync_config_id"], "deleted": True}
    gone = await api.call("GET", sync_path(sync))
    assert gone.status == 404


async def test_errors_in_the_vendors_body(api: Api, settings: Settings, tenant: Tenant) -> None:
    sync = await create_sync(api, BUCKET)
    no_ns = await api.call("POST", sync_path(sync, "/pause"), namespace=None)
    assert no_ns.status == 400, no_ns.body
    bad_key = await api.call("GET", sync_path(sync), key="sk_" + "x" * 43)
    assert bad_key.status == 401 and bad_key.error_type == "unauthenticated"
    no_key = await api.call("GET", sync_path(sync), key=None)
    assert no_key.status == 401
    reader = await key_with(settings, tenant, ["syncs:read"])
    forbidden = await api.call("POST", sync_path(sync, "/pause"), key=reader)
    assert forbidden.status == 403, forbidden.body
    readable = await api.call("GET", sync_path(sync), key=reader)
    assert readable.status == 200
    malformed = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", raw=b'{"connection_id": ')
    assert malformed.status == 400 and malformed.error_type == "invalid_json"
    unknown = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", create_body(colour="red"))
    assert unknown.status == 422, unknown.body
    assert "colour" in unknown.text
    invalid = await api.call(
        "POST", f"/v1/buckets/{BUCKET}/syncs", create_body(polling_interval_seconds=5)
    )
    assert invalid.status == 422, invalid.body
    fields = [e["field"] for e in invalid.body["error"]["details"]["errors"]]
    assert any("polling_interval_seconds" in f for f in fields)
    huge = await api.call(
        "POST", f"/v1/buckets/{BUCKET}/syncs", raw=b'{"a": "' + b"x" * 1_100_000 + b'"}'
    )
    assert huge.status == 413, huge.body
    assert huge.body["success"] is False and huge.body["status"] == 413

    # Without a length (chunked), it is cut at the limit as it is read.
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"a": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    chunked = await api.session.post(
        api.base + f"/v1/buckets/{BUCKET}/syncs",
        data=chunks(),
        headers={"Authorization": f"Bearer {api.key}", "X-Namespace": str(api.namespace)},
    )
    assert chunked.status == 413
    assert (await chunked.json())["error"]["type"] == "too_large"
    chunked.release()
    # A body passed on as the command's data: the service names the unknown key.
    extra = await api.call("POST", sync_path(sync, "/pause"), {"colour": "red"})
    assert extra.status == 422 and "colour" in extra.text, extra.body
    # Valid JSON that no text column can store: refused here, never left to time out.
    nul = await api.call("PATCH", sync_path(sync), raw=b'{"description": "a\\u0000b"}')
    assert nul.status == 400 and nul.error_type == "invalid_json", nul.body
    no_route = await api.call("GET", "/v1/nothing")
    assert no_route.status == 404 and no_route.body["success"] is False


async def test_if_match(api: Api) -> None:
    sync = await create_sync(api, BUCKET)
    paused = await api.call("POST", sync_path(sync, "/pause"))  # the scheduler leaves it alone now
    assert paused.status == 200, paused.body
    got = await api.call("GET", sync_path(sync))
    etag = got.headers["ETag"]
    assert etag == f'"{paused.body["version"]}"'
    stale = f'"{int(got.body["version"]) - 1}"'
    refused = await api.call(
        "PATCH", sync_path(sync), {"batch_size": 7}, headers={"If-Match": stale}
    )
    assert refused.status == 412, refused.body
    assert refused.error_type == "version_conflict"
    malformed = await api.call(
        "PATCH", sync_path(sync), {"batch_size": 7}, headers={"If-Match": "5"}
    )
    assert malformed.status == 400 and malformed.error_type == "invalid_if_match"
    applied = await api.call(
        "PATCH", sync_path(sync), {"batch_size": 7}, headers={"If-Match": etag}
    )
    assert applied.status == 200, applied.body
    assert applied.body["batch_size"] == 7
    assert applied.headers["ETag"] == f'"{applied.body["version"]}"'


async def test_a_retry_with_the_same_idempotency_key_has_one_effect(
    api: Api, settings: Settings
) -> None:
    sync = await create_sync(api, BUCKET)
    key = {"Idempotency-Key": "retry-1"}
    first = await api.call("POST", sync_path(sync, "/pause"), headers=key)
    assert first.status == 200, first.body
    resumed = await api.call("POST", sync_path(sync, "/resume"))
    assert resumed.status == 200 and resumed.body["status"] == "ACTIVE", resumed.body
    # The first answer was "lost": the client sends the same request again. It is the same
    # command: the first result again, and no second pause (a new pause would apply now).
    second = await api.call("POST", sync_path(sync, "/pause"), headers=key)
    assert second.status == 200, second.body
    assert second.body["version"] == first.body["version"]
    assert second.body["status"] == "SUSPENDED"
    now = await api.call("GET", sync_path(sync))
    assert now.body["status"] == "ACTIVE"
    conn = await connect(settings)
    try:
        pauses = await conn.fetchval(
            """SELECT count(*) FROM sync_history
               WHERE sync_config_id = $1 AND to_status = 'SUSPENDED'""",
            sync["sync_config_id"],
        )
    finally:
        await conn.close()
    assert pauses == 1
    control = await api.call("POST", sync_path(sync, "/pause"), headers={"Idempotency-Key": "new"})
    assert control.status == 200 and control.body["version"] > now.body["version"]
    other = await api.call("POST", sync_path(sync, "/pause"), {"reason": "x"}, headers=key)
    assert other.status == 422, other.body
    assert other.error_type == "idempotency_key_reused"
    # A create retried: the same sync, created once.
    made = await api.call(
        "POST", f"/v1/buckets/{BUCKET}/syncs", create_body(), headers={"Idempotency-Key": "c1"}
    )
    again = await api.call(
        "POST", f"/v1/buckets/{BUCKET}/syncs", create_body(), headers={"Idempotency-Key": "c1"}
    )
    assert made.status == again.status == 200
    assert made.body["sync_config_id"] == again.body["sync_config_id"]


async def test_no_result_in_time_answers_202_and_the_operation_later_shows_it(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    async with running_gateway(settings, gateway_result_wait_seconds=0.001) as slow:
        async with api_for(slow, tenant) as api:
            answer = await api.call(
                "POST",
                f"/v1/buckets/{BUCKET}/syncs",
                create_body(),
                headers={"Prefer": "respond-async"},
            )
            if answer.status == 200:
                pytest.skip("the result came within 1 ms")
            assert answer.status == 202, answer.body
            location = answer.headers["Location"]
            assert location == f"/v1/operations/{answer.body['operation_id']}"
            for _ in range(200):
                done = await api.call("GET", location)
                assert done.status == 200, done.body
                if done.body["status"] == "done":
                    break
            assert done.body["status"] == "done"
            assert done.body["result"]["outcome"] == "applied"
            timeout = await api.call("POST", f"/v1/buckets/{BUCKET}/syncs", create_body())
            if timeout.status != 200:
                assert timeout.status == 504
                assert timeout.body["error"]["details"]["operation_url"].startswith(
                    "/v1/operations/"
                )
            other = await new_tenant(settings)
            async with api_for(slow, other) as stranger:
                hidden = await stranger.call("GET", location)
                assert hidden.status == 404
            # The answer was lost (504): the retry with the same key gets the result, once.
            lost = await api.call(
                "POST",
                f"/v1/buckets/{BUCKET}/syncs",
                create_body(),
                headers={"Idempotency-Key": "k"},
            )
    async with running_gateway(settings) as gateway, api_for(gateway, tenant) as api:
        retried = await api.call(
            "POST", f"/v1/buckets/{BUCKET}/syncs", create_body(), headers={"Idempotency-Key": "k"}
        )
        assert retried.status == 200, retried.body
        again = await api.call(
            "POST", f"/v1/buckets/{BUCKET}/syncs", create_body(), headers={"Idempotency-Key": "k"}
        )
        assert again.body["sync_config_id"] == retried.body["sync_config_id"]
        assert again.body["version"] == retried.body["version"] == 1
        if lost.status == 200:
            assert lost.body["sync_config_id"] == retried.body["sync_config_id"]


async def test_recorded_requests_past_the_dedupe_window_are_deleted(settings: Settings) -> None:
    """Each gateway deletes ``gateway_requests`` rows older than the dedupe window, a batch at
    a time; a younger one is kept until the clock (here its offset) takes it past the window."""
    window = timedelta(days=settings.dedupe_window_days)
    ids = {
        "old": f"http_test_old_{secrets.token_hex(6)}",
        "young": f"http_test_young_{secrets.token_hex(6)}",
    }
    conn = await connect(settings)
    try:
        for name, age in (("old", timedelta(hours=1)), ("young", timedelta(hours=-1))):
            await conn.execute(
                """INSERT INTO gateway_requests (command_id, key_id, method, path, body_sha256,
                                                 sync_config_id, created_at)
                   VALUES ($1, 'key_test', 'POST', '/v1/x', '\\x00', 'sync_x',
                           now() - $2::interval - $3::interval)""",
                ids[name],
                window,
                age,
            )

        async def left() -> set[str]:
            rows = await conn.fetch(
                "SELECT command_id FROM gateway_requests WHERE command_id = ANY($1::text[])",
                list(ids.values()),
            )
            return {r["command_id"] for r in rows}

        async def until_gone(command_id: str) -> None:
            async with asyncio.timeout(30):
                while True:
                    if command_id not in await left():
                        return
                    await asyncio.sleep(0.05)

        async with running_gateway(settings, retention_batch_size=1):
            await until_gone(ids["old"])
            assert ids["young"] in await left()
        # Two hours later (the clock offset), the young row is past the window too.
        async with running_gateway(settings, clock_offset_seconds=7200, retention_batch_size=1):
            await until_gone(ids["young"])
        assert await left() == set()
    finally:
        await conn.execute(
            "DELETE FROM gateway_requests WHERE command_id = ANY($1::text[])", list(ids.values())
        )
        await conn.close()
