"""Helpers of the tests on the real stack: topics of their own, tenants, the clock, what a
topic carried, the CLI in a process of its own."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from events.devtools import stack
from events.devtools.loadgen import delete_topics
from events.kafka import kafka_options
from events.messages import CommandResult, LifecycleEvent
from events.service.app import Service
from events.service.db import connect
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org

#: Every topic ``own_topics`` names in this test session starts with this (then more hex
#: digits): the session deletes them at its end (tests/integration/conftest.py). The "s" keeps
#: it from matching names made before (``test.`` and eight hex digits).
SESSION_TOPICS: Final = f"test.s{secrets.token_hex(3)}"


def own_topics() -> dict[str, Any]:
    """Topic and consumer group names no other run or test uses (this session's)."""
    run = f"{SESSION_TOPICS}{secrets.token_hex(3)}"
    return {
        "commands_topic": f"{run}.commands",
        "lifecycle_topic": f"{run}.lifecycle",
        "results_topic": f"{run}.results",
        "dlq_topic": f"{run}.dlq",
        "consumer_group": f"test-{run[len('test.') :]}",
    }


async def remove_session_topics(settings: Settings, say: Callable[[str], None]) -> None:
    """Delete this session's outbox rows, then its topics (every ``own_topics`` name), once
    the services that used them are stopped. The rows go first: a relay of another process on
    this database would otherwise try to publish them to a topic no longer there. Topics the
    broker keeps are told to ``say``, not raised: left on the broker, they fail nothing."""
    conn = await connect(settings)
    try:
        await conn.execute("DELETE FROM outbox WHERE starts_with(topic, $1)", SESSION_TOPICS)
    finally:
        await conn.close()
    try:
        deleted = await delete_topics(kafka_options(settings), SESSION_TOPICS)
    except KafkaError as exc:
        say(f"the session's topics were not all deleted: {exc}")
    else:
        say(f"deleted the session's {len(deleted)} topics")


async def with_own_topics(settings: Settings, **update: Any) -> Settings:
    """``settings`` with topics and a consumer group of their own (created), and ``update``."""
    own = settings.model_copy(update={**own_topics(), **update})
    await stack.ensure_topics(own, own.kafka_bootstrap_servers, lambda line: None)
    return own


class Clock:
    """The service's clock in tests: an offset the test moves forward. The service reads
    ``offset`` on every batch and scheduler pass and adds it to the database's clock (as it adds
    ``clock_offset_seconds``); calling it gives this process's clock plus the offset."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


async def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str, str]:
    """``synclife <args>`` in a process of its own with exactly ``env``: (exit code, stdout,
    stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "events.cli",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def running(service: Service) -> AsyncIterator[Service]:
    """Another ``Service`` (its own settings) run for the block, stopped gracefully after."""
    task = asyncio.create_task(service.run())
    try:
        yield service
    finally:
        service.stop.set()
        await asyncio.wait_for(task, 30)


@dataclass
class Tenant:
    org_id: str
    org_name: str
    namespace_id: str
    namespace: str
    write_key: str
    write_key_id: str
    run_key: str


async def new_tenant(settings: Settings, namespaces: tuple[str, ...] = ("production",)) -> Tenant:
    """An organization with ``namespaces``, a write key and a run key."""
    conn = await connect(settings)
    try:
        org = await create_org(conn, f"org-{secrets.token_hex(4)}")
        ns_ids = [(await create_namespace(conn, org["id"], n))["id"] for n in namespaces]
        write = await create_key(conn, org["id"], ["syncs:write"])
        run = await create_key(conn, org["id"], ["syncs:run"])
    finally:
        await conn.close()
    return Tenant(
        org["id"], org["name"], ns_ids[0], namespaces[0], write["key"], write["id"], run["key"]
    )


@dataclass
class Seen:
    """What a topic carried, read from its beginning by a background consumer."""

    by_key: dict[str, list[tuple[dict[str, bytes], bytes | None]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self, key: str, count: int, timeout: float = 20.0) -> list[Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.by_key[key]) < count:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise AssertionError(f"{key}: {len(self.by_key[key])} of {count} messages")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.by_key[key]

    def events(self, key: str) -> list[tuple[str, str, LifecycleEvent]]:
        return [
            (
                h["ce_id"].decode(),
                h["ce_type"].decode(),
                LifecycleEvent.model_validate_json(v or b""),
            )
            for h, v in self.by_key[key]
        ]

    def results(self, key: str) -> list[CommandResult]:
        return [CommandResult.model_validate_json(v or b"") for _, v in self.by_key[key]]


async def watch(settings: Settings, topic: str) -> AsyncIterator[Seen]:
    seen = Seen()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()

    async def pump() -> None:
        async for m in consumer:
            key = m.key.decode() if m.key else ""
            seen.by_key[key].append(({k: v for k, v in m.headers}, m.value))
            seen.changed.set()

    task = asyncio.create_task(pump())
    try:
        yield seen
    finally:  # also when the generator is closed (aclose) rather than run to its end
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()


async def scheduler_passes(service: Service, count: int = 2, timeout: float = 10.0) -> None:
    """Wait until the scheduler has made ``count`` more full passes."""
    assert service.scheduler is not None
    target = service.scheduler.passes + count
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while service.scheduler.passes < target:
        assert loop.time() < deadline, "the scheduler made no pass"
        await asyncio.sleep(0.05)


def headers_of(items: list[tuple[str, bytes]]) -> dict[str, bytes]:
    return {k: v for k, v in items}
