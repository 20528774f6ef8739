"""The bulk routes over real HTTP on the real stack: preview, pause, progress, undo, a retry
with the same Idempotency-Key, and the errors."""

from __future__ import annotations

import secrets

import pytest

from events.client import new_operation_id
from events.service.settings import Settings
from tests.helpers.gateway import Api, create_body, key_with
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack


async def make_syncs(api: Api, bucket: str, n: int) -> list[str]:
    ids = []
    for _ in range(n):
        answer = await api.call(
            "POST", f"/v1/buckets/{bucket}/syncs", create_body(metadata={"team": "ops"})
        )
        assert answer.status == 200, answer.body
        ids.append(answer.body["sync_config_id"])
    return ids


async def test_bulk_pause_show_and_undo_over_http(
    api: Api, settings: Settings, tenant: Tenant
) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    ids = await make_syncs(api, bucket, 4)
    selector = {"bucket_id": bucket, "metadata": {"team": "ops"}}

    preview = await api.call("POST", "/v1/sync-bulk/preview", {"selector": selector})
    assert preview.status == 200, preview.body
    assert preview.body == {"matched": 4, "max_bulk_syncs": 1000, "within_limit": True}

    op = new_operation_id()
    body = {"selector": selector, "reason": "maintenance", "operation_id": op}
    paused = await api.call("POST", "/v1/sync-bulk/pause", body)
    assert paused.status == 200, paused.body
    assert paused.body["operation_id"] == op and paused.body["outcome"] == "applied"
    assert paused.body["counts"] == {"matched": 4, "applied": 4, "noop": 0, "rejected": 0}
    for sid in ids:
        one = await api.call("GET", f"/v1/buckets/{bucket}/syncs/{sid}")
        assert one.body["status"] == "SUSPENDED"

    shown = await api.call("GET", f"/v1/sync-bulk/{op}")
    assert shown.status == 200, shown.body
    assert shown.body["status"] == "completed" and shown.body["kind"] == "pause"
    assert shown.body["progress"]["apply"]["applied"] == 4
    assert shown.body["progress"]["apply"]["pending"] == 0

    undone = await api.call("POST", f"/v1/sync-bulk/{op}/undo")
    assert undone.status == 200, undone.body
    assert undone.body["counts"]["applied"] == 4
    shown = await api.call("GET", f"/v1/sync-bulk/{op}")
    assert shown.body["status"] == "undone"
    assert shown.body["undo_counts"] == {"matched": 4, "applied": 4, "noop": 0, "rejected": 0}

    # Another tenant sees nothing of it.
    other = await api.call("GET", f"/v1/sync-bulk/{op}", key=await other_key(settings))
    assert other.status in (401, 403, 404)


async def test_a_lower_case_operation_id_names_the_operation_in_upper_case(api: Api) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    await make_syncs(api, bucket, 1)
    op = new_operation_id()
    lower = op.lower()
    body = {"selector": {"bucket_id": bucket}, "operation_id": lower}
    paused = await api.call("POST", "/v1/sync-bulk/pause", body)
    assert paused.status == 200, paused.body
    assert paused.body["operation_id"] == op and paused.body["counts"]["applied"] == 1
    for name in (op, lower):
        shown = await api.call("GET", f"/v1/sync-bulk/{name}")
        assert shown.status == 200 and shown.body["operation_id"] == op, shown.body
    undone = await api.call("POST", f"/v1/sync-bulk/{lower}/undo")
    assert undone.status == 200 and undone.body["counts"]["applied"] == 1, undone.body


async def other_key(settings: Settings) -> str:
    from tests.helpers.live import new_tenant

    return (await new_tenant(settings)).write_key


async def test_a_retry_with_the_same_idempotency_key_is_the_same_operation(api: Api) -> None:
    bucket = f"bkt_{secrets.token_hex(6)}"
    await make_syncs(api, bucket, 2)
    headers = {"Idempotency-Key": secrets.token_hex(8)}
    body = {"selector": {"bucket_id": bucket}}
    first = await api.call("POST", "/v1/sync-bulk/pause", body, headers=headers)
    second = await api.call("POST", "/v1/sync-bulk/pause", body, headers=headers)
    assert first.status == second.status == 200, (first.body, second.body)
    assert first.body == second.body
    assert first.body["counts"]["applied"] == 2
    reused = await api.call(
        "POST", "/v1/sync-bulk/pause", {"selector": {"bucket_id": "x"}}, headers=headers
    )
    assert reused.status == 422 and reused.error_type == "idempotency_key_reused"


async def test_bulk_errors(api: Api, settings: Settings, tenant: Tenant) -> None:
    empty = await api.call("POST", "/v1/sync-bulk/pause", {"selector": {}})
    assert empty.status == 422 and empty.error_type == "validation_error", empty.body
    unknown = await api.call("POST", "/v1/sync-bulk/pause", {"selector": {"owner": "x"}})
    assert unknown.status == 422
    bad_op = await api.call(
        "POST", "/v1/sync-bulk/pause", {"selector": {"bucket_id": "b"}, "operation_id": "op_1"}
    )
    assert bad_op.status == 422
    assert (await api.call("POST", "/v1/sync-bulk/preview", {"selector": {}})).status == 422
    missing = await api.call("POST", f"/v1/sync-bulk/{new_operation_id()}/undo")
    assert missing.status == 404 and missing.error_type == "not_found", missing.body
    assert (await api.call("GET", f"/v1/sync-bulk/{new_operation_id()}")).status == 404
    assert (await api.call("GET", "/v1/sync-bulk/not-an-operation")).status == 404
    reader = await key_with(settings, tenant, ["syncs:read"])
    refused = await api.call(
        "POST", "/v1/sync-bulk/pause", {"selector": {"bucket_id": "b"}}, key=reader
    )
    assert refused.status == 403
    allowed = await api.call(
        "POST", "/v1/sync-bulk/preview", {"selector": {"bucket_id": "b"}}, key=reader
    )
    assert allowed.status == 200 and allowed.body["matched"] == 0
