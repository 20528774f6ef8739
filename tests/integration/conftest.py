"""Fixtures on the real stack: Kafka (KRaft) and Postgres, started or reused by ``stack.up``.

Each test session uses its own topics and consumer group, so runs never see each other's
messages, and deletes its topics at its end; the database is shared (every id the tests make
is unique).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaProducer

from events.client import SynclifeClient
from events.devtools import stack
from events.gateway import Gateway
from events.service.app import Service
from events.service.db import connect, migrate
from events.service.settings import Settings
from tests.helpers.gateway import Api, api_for, running_gateway
from tests.helpers.live import (
    Clock,
    Seen,
    Tenant,
    new_tenant,
    own_topics,
    remove_session_topics,
    watch,
)

pytestmark = pytest.mark.stack


@pytest.fixture(scope="session")
async def settings() -> AsyncIterator[Settings]:
    env = await stack.up(Settings(), lambda line: print(line))
    os.environ.update(env)
    s = Settings(
        **own_topics(),
        topic_partitions=3,
        relay_poll_interval_seconds=0.2,
        scheduler_interval_seconds=0.1,
        http_port=0,
        # test_bulk.py matches exactly this many syncs, then one more (refused).
        max_bulk_syncs=1000,
    )
    await stack.ensure_topics(s, s.kafka_bootstrap_servers, lambda line: None)
    conn = await connect(s)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    yield s
    # The services of the session's fixtures, which depend on these settings, are stopped.
    await remove_session_topics(s, print)


@pytest.fixture(scope="session")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
async def service(settings: Settings, clock: Clock) -> AsyncIterator[Service]:
    svc = Service(settings, clock=clock, http=True)
    task = asyncio.create_task(svc.run())
    yield svc
    svc.stop.set()
    await asyncio.wait_for(task, 30)


@pytest.fixture
async def tenant(settings: Settings) -> Tenant:
    return await new_tenant(settings)


@pytest.fixture
async def client(
    settings: Settings, service: Service, tenant: Tenant
) -> AsyncIterator[SynclifeClient]:
    async with SynclifeClient(settings, api_key=tenant.write_key, namespace=tenant.namespace) as c:
        yield c


@pytest.fixture(scope="session")
async def lifecycle(settings: Settings) -> AsyncIterator[Seen]:
    async for seen in watch(settings, settings.lifecycle_topic):
        yield seen


@pytest.fixture(scope="session")
async def results(settings: Settings) -> AsyncIterator[Seen]:
    async for seen in watch(settings, settings.results_topic):
        yield seen


@pytest.fixture(scope="session")
async def dlq(settings: Settings) -> AsyncIterator[Seen]:
    async for seen in watch(settings, settings.dlq_topic):
        yield seen


@pytest.fixture
async def worker(
    settings: Settings, service: Service, tenant: Tenant
) -> AsyncIterator[SynclifeClient]:
    """A client with a run-only key: what a sync worker uses."""
    async with SynclifeClient(settings, api_key=tenant.run_key, namespace=tenant.namespace) as c:
        yield c


@pytest.fixture
async def raw_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A plain aiokafka producer: a client that knows only the contract, not synclife's code."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    yield producer
    await producer.stop()


@pytest.fixture
async def big_producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    """A plain producer that may send messages over synclife's 1 MiB limit."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, max_request_size=4 * 1024 * 1024
    )
    await producer.start()
    yield producer
    await producer.stop()


# The HTTP gateway (a module of tests shares one; a module may define its own, e.g. with the
# console's secret) and a client of it with the test's tenant's key.
@pytest.fixture(scope="module")
async def gateway(settings: Settings, service: Service) -> AsyncIterator[Gateway]:
    async with running_gateway(settings) as gw:
        yield gw


@pytest.fixture
async def api(gateway: Gateway, tenant: Tenant) -> AsyncIterator[Api]:
    async with api_for(gateway, tenant) as a:
        yield a
