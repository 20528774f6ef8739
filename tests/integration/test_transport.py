"""Transport security on the real stack: the service and its client over SASL/SCRAM.

`stack up` gives the local broker a second listener, SASL_PLAINTEXT on the Kafka port + 2,
and a SCRAM user `synclife` (SCRAM-SHA-256 and SCRAM-SHA-512). Everything here connects only
to that listener: the admin client creating the topics, the service's command consumer (and
its relay's producer when it leads), the client's idempotent producer and its consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncGenerator
from typing import Any, cast

import pytest

from events.client import Event, SynclifeClient, lifecycle_events, new_sync_id
from events.devtools import stack
from events.kafka import KafkaAuthError
from events.service.app import Service
from events.service.settings import Settings
from statemachine import Outcome, SyncStatus
from tests.helpers.live import Tenant, own_topics, running

pytestmark = pytest.mark.stack

CREATE: dict[str, Any] = {
    "bucket_id": "bkt_transport",
    "connection_id": "conn_transport",
    "provider": "s3",
    "source_path": "transport/",
    "created_by_user_id": "user_ada",
}


@pytest.fixture(scope="module")
async def scram(settings: Settings) -> stack.ScramUser:
    """The local stack's SCRAM login; skipped when Kafka is not the stack's own broker."""
    try:
        user = stack.scram_credentials(settings)
    except stack.StackError as exc:
        pytest.skip(f"no SCRAM listener: {exc}")
    host, _, port = user.bootstrap_servers.rpartition(":")
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.close()
        return user
    pytest.skip(f"nothing listens at {user.bootstrap_servers} (Kafka not started by the stack)")


def over_scram(
    base: Settings, user: stack.ScramUser, mechanism: str, *, password: str | None = None
) -> Settings:
    """``base`` on the SCRAM listener, with topics and a consumer group of its own."""
    own = own_topics()
    fields = (
        base.model_dump()
        | own
        | {
            "kafka_bootstrap_servers": user.bootstrap_servers,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": mechanism,
            "kafka_sasl_username": user.username,
            "kafka_sasl_password": password or user.password.get_secret_value(),
            "client_id": own["consumer_group"],
        }
    )
    return Settings(**fields)


def debug_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture everything, aiokafka's DEBUG too (logging setup elsewhere may quiet it)."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="aiokafka")


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_service_and_client_work_end_to_end_over_scram(
    settings: Settings,
    scram: stack.ScramUser,
    tenant: Tenant,
    mechanism: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    debug_logs(caplog)  # every request aiokafka makes, the login's included
    secured = over_scram(settings, scram, mechanism)
    # The admin client too: the topics are created over SCRAM.
    await asyncio.wait_for(stack.ensure_topics(secured, scram.bootstrap_servers, print), 60)

    async with (
        # No scheduler: the session's service schedules the shared database's syncs, and
        # writes their events to the session's topics.
        running(Service(secured, schedule=False)) as service,
        SynclifeClient(secured, api_key=tenant.write_key, namespace=tenant.namespace) as client,
    ):
        sync_id = new_sync_id()
        created = await client.create(sync_id, **CREATE)
        paused = await client.pause(sync_id, paused_by_user_id="user_bob", reason="audit")

        assert (created.outcome, paused.outcome) == (Outcome.APPLIED, Outcome.APPLIED)
        assert (created.status, paused.status) == (SyncStatus.PENDING, SyncStatus.SUSPENDED)
        assert created.version == 1
        assert paused.version is not None and paused.version > created.version

        # The lifecycle events, read back over SCRAM too (the relay that publishes them is
        # whichever leads, maybe another process's: the outbox is shared).
        events = cast(
            AsyncGenerator[Event, None],
            lifecycle_events(secured, from_beginning=True, sync_ids=[sync_id]),
        )
        seen: list[tuple[str, int]] = []
        async with asyncio.timeout(30):
            async for event in events:
                seen.append((event.type, event.data.version))
                if event.data.version == paused.version:
                    break
        await events.aclose()
        # Only this service's own events are asserted: the scheduler that leads may be another
        # test session's, writing to its own topics.
        assert seen[0] == ("sync.created", 1)
        assert seen[-1] == ("sync.status_changed", paused.version)
        assert service.totals.applied >= 2
    assert "Authenticated as synclife via " + mechanism in caplog.text
    assert scram.password.get_secret_value() not in caplog.text


async def test_a_wrong_password_is_refused_at_once(
    settings: Settings, scram: stack.ScramUser, tenant: Tenant, caplog: pytest.LogCaptureFixture
) -> None:
    debug_logs(caplog)
    wrong = f"not-{secrets.token_hex(8)}"
    refused = over_scram(settings, scram, "SCRAM-SHA-256", password=wrong)

    client = SynclifeClient(refused, api_key=tenant.write_key, namespace=tenant.namespace)
    with pytest.raises(KafkaAuthError) as caught:
        async with asyncio.timeout(30):  # a refusal, not a hang or endless retries
            await client.start()
    message = str(caught.value)
    assert "refused the SCRAM-SHA-256 login of 'synclife'" in message
    assert "Authentication failed" in message  # the broker's own reason
    assert wrong not in message and scram.password.get_secret_value() not in message

    # The service does not wait for Kafka forever either: it fails with the same error.
    with pytest.raises(KafkaAuthError):
        await asyncio.wait_for(Service(refused).run(), 30)
    with pytest.raises(KafkaAuthError):
        await asyncio.wait_for(
            stack.ensure_topics(refused, scram.bootstrap_servers, print, within=10), 30
        )
    assert "SaslAuthenticationFailed" in caplog.text
    assert wrong not in caplog.text
