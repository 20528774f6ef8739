"""The gateway as it runs: two instances answering one client, ``synclife gateway`` as a
process of its own (SIGTERM: exit 0), health, readiness and metrics, the vendor's SDK against
it, and no answer of any gateway test carrying a secret."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import aiohttp
import pytest

from events.service.app import Service
from events.service.settings import Settings
from tests.helpers import gateway as helpers
from tests.helpers.gateway import Api, create_body, gateway_process, running_gateway
from tests.helpers.live import Tenant

pytestmark = pytest.mark.stack


async def test_two_gateways_answer_the_same_client(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    async with running_gateway(settings) as one, running_gateway(settings) as two:
        async with aiohttp.ClientSession() as session:
            a = Api(session, one.url, tenant.write_key, tenant.namespace)
            b = Api(session, two.url, tenant.write_key, tenant.namespace)
            bucket = f"bkt_{secrets.token_hex(4)}"
            made = await a.call("POST", f"/v1/buckets/{bucket}/syncs", create_body())
            assert made.status == 200, made.body
            where = f"/v1/buckets/{bucket}/syncs/{made.body['sync_config_id']}"
            paused = await b.call("POST", f"{where}/pause")
            assert paused.status == 200 and paused.body["paused"] is True
            seen = await a.call("GET", where)
            assert seen.body["version"] == paused.body["version"]
            # Both at once, each waiting on its own process's waiter.
            answers = await asyncio.gather(
                a.call("POST", f"{where}/resume"), b.call("POST", f"{where}/resume")
            )
            assert sorted(x.status for x in answers) == [200, 200]
            assert {x.body["status"] for x in answers} == {"ACTIVE"}
            # Each process looked for its own results only: about one statement per result.
            for gateway in (one, two):
                waiter = gateway.waiter
                assert waiter is not None and waiter.found >= 1
                print(f"waiter: {waiter.queries} look-ups for {waiter.found} results")


async def test_the_gateway_as_a_process(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    async with gateway_process(settings) as url, aiohttp.ClientSession() as session:
        api = Api(session, url, tenant.write_key, tenant.namespace)
        health = await api.call("GET", "/healthz")
        assert health.status == 200
        ready = await api.call("GET", "/readyz")
        assert ready.status == 200, ready.body
        assert ready.body["checks"]["postgres"]["ok"] and ready.body["checks"]["kafka"]["ok"]
        bucket = f"bkt_{secrets.token_hex(4)}"
        made = await api.call("POST", f"/v1/buckets/{bucket}/syncs", create_body())
        assert made.status == 200, made.body
        document = await api.call("GET", "/openapi.json")
        assert document.status == 200 and document.body["openapi"].startswith("3.1")
        assert "/v1/buckets/{bucket_id}/syncs/{sync_config_id}/resume" in document.body["paths"]
        metrics = await api.call("GET", "/metrics")
        assert metrics.status == 200
        created = (
            'synclife_gateway_requests_total{method="POST",'
            'route="/v1/buckets/{bucket_id}/syncs",status="200"}'
        )
        assert created in metrics.text
        assert "synclife_gateway_result_queries_total" in metrics.text


async def test_the_vendors_sdk_works_against_the_gateway(
    settings: Settings, service: Service, tenant: Tenant
) -> None:
    mixpeek = pytest.importorskip("mixpeek")
    async with running_gateway(settings) as gateway:
        config = mixpeek.Configuration(
            host=gateway.url,
            access_token=tenant.write_key,
            api_key={"NamespaceHeader": tenant.namespace},
        )

        def use_the_sdk() -> dict[str, Any]:
            with mixpeek.ApiClient(config) as client:
                syncs = mixpeek.BucketSyncsApi(client)
                bucket = f"bkt_{secrets.token_hex(4)}"
                created = syncs.create_sync_configuration_buckets(
                    bucket,
                    mixpeek.SyncCreateRequest(
                        connection_id="conn_abc123", source_path="assets/incoming"
                    ),
                )
                sync_id = created.sync_config_id
                got = syncs.get_sync_configuration_buckets_id_config(bucket, sync_id)
                listed = syncs.list_sync_configurations_buckets(bucket, include_total=True)
                paused = syncs.pause_sync_configuration_buckets_id_config(bucket, sync_id)
                resumed = syncs.resume_sync_configuration_buckets_id_config(bucket, sync_id)
                triggered = syncs.trigger_sync_configuration_buckets_id_config(
                    bucket, sync_id, full_sync=True
                )
                deleted = syncs.delete_sync_configuration_buckets_id_config(bucket, sync_id)
                return {
                    "created": created,
                    "got": got,
                    "listed": listed,
                    "paused": paused,
                    "resumed": resumed,
                    "triggered": triggered,
                    "deleted": deleted,
                }

        out = await asyncio.to_thread(use_the_sdk)
    assert out["got"].sync_config_id == out["created"].sync_config_id
    assert out["got"].locked is False
    assert out["listed"].total == 1
    assert [s.sync_config_id for s in out["listed"].results] == [out["created"].sync_config_id]
    assert out["paused"].paused is True
    assert out["resumed"].paused is False and out["resumed"].is_active is True
    assert out["triggered"] is not None
    assert out["deleted"] is not None


def test_every_answer_is_checked_for_secrets() -> None:
    """``Api.call`` refuses an answer naming ``lock_token`` or any key the tests used; it has
    seen answers with syncs in them (this module's, at least)."""
    assert any('"sync_config_id"' in text for text in helpers.ANSWERS)
    assert helpers.KEYS
