"""Driving ``synclife serve`` from outside, the way a client does: the load generator that
``synclife bench`` and the fault suite (``tests/faults``) share.

It starts ``serve`` processes on topics and a consumer group of their own, builds commands
with the contract's CloudEvents headers, publishes them (all at once, paced, or each until
acknowledged), reads what the service publishes back, and finds which process leads the relay
or the scheduler. It uses only the wire contract (``events.envelope``, ``events.kafka``) and
the service's settings and tenancy, never the service's code paths: what it measures or breaks
is the service as a client sees it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from events.envelope import command_headers
from events.errors import SynclifeError
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org

__all__ = [
    "Command",
    "LoadError",
    "Sender",
    "TopicReader",
    "assign_all",
    "create_tenant",
    "delete_topics",
    "due_count",
    "due_time",
    "lock_holders",
    "log_tail",
    "own_topics",
    "pacing_delay",
    "send_all",
    "send_paced",
    "send_until_acked",
    "serve_env",
    "session_pid",
    "spawn_serve",
]

Headers = list[tuple[str, bytes]]


class LoadError(SynclifeError):
    """The load could not be set up (a topic without partitions)."""


# --- serve processes -----------------------------------------------------------------------


def own_topics(prefix: str) -> dict[str, Any]:
    """Settings' fields (for ``Settings(**...)`` or ``model_copy(update=...)``) naming the four
    topics ``<prefix>.commands|lifecycle|results|dlq``: a run's own, so that nothing else
    publishes there and they can be deleted afterwards."""
    return {
        "commands_topic": f"{prefix}.commands",
        "lifecycle_topic": f"{prefix}.lifecycle",
        "results_topic": f"{prefix}.results",
        "dlq_topic": f"{prefix}.dlq",
    }


def serve_env(settings: Settings, client_id: str) -> dict[str, str]:
    """The variables that point a ``serve`` at ``settings``' Kafka, Postgres, topics and
    consumer group, with ``client_id``, its HTTP server on any free port (several may run)."""
    return {
        "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value(),
        "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
        "SYNCLIFE_LIFECYCLE_TOPIC": settings.lifecycle_topic,
        "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
        "SYNCLIFE_DLQ_TOPIC": settings.dlq_topic,
        "SYNCLIFE_CONSUMER_GROUP": settings.consumer_group,
        "SYNCLIFE_CLIENT_ID": client_id,
        "SYNCLIFE_HTTP_PORT": "0",
    }


async def spawn_serve(
    env: Mapping[str, str],
    log_path: Path,
    *,
    cwd: str | Path | None = None,
    profile: str | None = None,
) -> asyncio.subprocess.Process:
    """``python -m events.cli serve`` with exactly ``env``, its output appended to
    ``log_path``; under cProfile (written to ``profile``) when given. ``python -m`` puts
    ``cwd`` first on ``sys.path``: the checkout whose code runs."""
    argv = [sys.executable]
    if profile:
        argv += ["-m", "cProfile", "-o", profile]
    argv += ["-m", "events.cli", "serve"]
    with log_path.open("ab") as log:
        return await asyncio.create_subprocess_exec(
            *argv,
            env=dict(env),
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )


def log_tail(path: Path, lines: int) -> list[str]:
    """The last ``lines`` lines of a process's log (none if it has no log yet)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    return text.splitlines()[-lines:]


async def lock_holders(conn: asyncpg.Connection, locks: Sequence[int]) -> dict[int, str]:
    """Which of the advisory ``locks`` (the relay's, the scheduler's) are held, each with its
    session's ``application_name`` ("" if Postgres has none): a ``serve`` names its sessions
    ``... <host>:<pid>`` (``events/service/db.py``)."""
    rows = await conn.fetch(
        """SELECT l.objid::bigint AS lock, coalesce(a.application_name, '') AS name
           FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0
             AND l.objid::bigint = ANY($1::bigint[])""",
        list(locks),
    )
    return {int(r["lock"]): str(r["name"]) for r in rows}


def session_pid(application_name: str) -> int | None:
    """The pid a ``serve`` session's ``application_name`` ends with (None if it names none)."""
    tail = application_name.rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


# --- commands ------------------------------------------------------------------------------


async def create_tenant(
    conn: asyncpg.Connection, org_name: str, namespace: str, key_name: str | None = None
) -> tuple[str, str]:
    """An organization with one namespace and a ``syncs:write`` key; (org id, API key)."""
    org = await create_org(conn, org_name)
    await create_namespace(conn, org["id"], namespace)
    key = await create_key(conn, org["id"], ["syncs:write"], name=key_name)
    return str(org["id"]), str(key["key"])


@dataclass(frozen=True, slots=True)
class Command:
    """One command as published: keyed by its sync, JSON body, the contract's headers."""

    command_id: str
    sync_id: str
    kind: str
    value: bytes
    headers: Headers

    @property
    def key(self) -> bytes:
        return self.sync_id.encode()


@dataclass(frozen=True, slots=True)
class Sender:
    """Who commands come from: a tenant's API key and namespace, and the CloudEvents source."""

    api_key: str
    namespace: str
    source: str

    def command(self, command_id: str, kind: str, sync_id: str, data: Mapping[str, Any]) -> Command:
        headers = command_headers(
            command_id=command_id,
            command_type=kind,
            sync_config_id=sync_id,
            api_key=self.api_key,
            namespace=self.namespace,
            source=self.source,
        )
        return Command(command_id, sync_id, kind, json.dumps(data).encode(), headers)


# --- publishing ----------------------------------------------------------------------------


def due_time(start: float, index: int, rate: float) -> float:
    """When command ``index`` (from 0) of commands paced at ``rate`` a second from ``start``
    is scheduled: ``start + index / rate``, whenever the pacer actually gets to it. Latency
    measured from here counts a late pacer or a send that blocks (coordinated omission)."""
    return start + index / rate


def due_count(start: float, rate: float, count: int, now: float) -> int:
    """How many of ``count`` commands paced at ``rate`` from ``start`` are due at ``now``:
    command ``i`` once ``now >= due_time(start, i, rate)``, the first one at ``start`` (a
    nanosecond's slack: ``(10.1 - 10.0) * 200`` is 19.999...)."""
    return max(0, min(count, math.floor((now - start) * rate + 1e-9) + 1))


def pacing_delay(start: float, sent: int, rate: float, now: float) -> float:
    """Seconds until the next of commands paced at ``rate`` from ``start`` is due, ``sent``
    of them gone: at least 1 ms, so at most 1,000 wakeups a second, and at a lighter load only
    as many as it needs (each wakeup costs CPU that the processes measured share)."""
    return max(0.001, due_time(start, sent, rate) - now)


async def send_all(producer: AIOKafkaProducer, topic: str, commands: Sequence[Command]) -> None:
    """Hand every command to the producer as fast as it takes them, then wait for all the
    acknowledgements (the producer batches them: the most a client can offer)."""
    futures = [
        await producer.send(topic, key=c.key, value=c.value, headers=c.headers) for c in commands
    ]
    await asyncio.gather(*futures)


async def send_paced(
    producer: AIOKafkaProducer,
    topic: str,
    commands: Sequence[Command],
    rate: float,
    on_send: Callable[[Command, float], None],
) -> float:
    """Publish ``commands`` at ``rate`` a second, calling ``on_send(command, due)`` just
    before each send, ``due`` its scheduled time on the wall clock (``time.time()``):
    ``due_time`` from the moment pacing started, not when the pacer got to it. Then wait for
    every acknowledgement. Returns the rate offered: the commands over the time it took to
    hand them all to the producer."""
    futures = []
    count = len(commands)
    start = time.perf_counter()
    wall_start = time.time()
    i = 0
    while i < count:
        # Every command due by now goes out at once: a late wakeup does not lower the rate.
        due = due_count(start, rate, count, time.perf_counter())
        while i < due:
            command = commands[i]
            on_send(command, due_time(wall_start, i, rate))
            futures.append(
                await producer.send(
                    topic, key=command.key, value=command.value, headers=command.headers
                )
            )
            i += 1
        await asyncio.sleep(pacing_delay(start, i, rate, time.perf_counter()))
    offered = count / (time.perf_counter() - start)
    await asyncio.gather(*futures)
    return offered


async def send_until_acked(producer: AIOKafkaProducer, topic: str, command: Command) -> int:
    """Publish ``command`` and wait for its acknowledgement, sending it again (the same id:
    the contract makes that one effect, one result) after each failure, every 0.5 s for as
    long as Kafka is away. Returns how many sends failed."""
    failed = 0
    while True:
        try:
            await producer.send_and_wait(
                topic, key=command.key, value=command.value, headers=command.headers
            )
        except KafkaError:
            failed += 1
            await asyncio.sleep(0.5)
        else:
            return failed


# --- reading what the service publishes ----------------------------------------------------


async def assign_all(consumer: AIOKafkaConsumer, topic: str, *, at_end: bool) -> None:
    """Assign every partition of ``topic`` to ``consumer`` (no group), positioned at their
    ends (fixed now: only what is published later is read) or at their beginnings."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise LoadError(f"topic {topic} has no partitions")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    if at_end:
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
    else:
        await consumer.seek_to_beginning(*tps)


class TopicReader:
    """Reads every partition of a topic in a task of its own, from its end (``at_end``) or
    its beginning, and hands each partition's batch of records to ``handle`` with the time it
    arrived, by ``clock`` (wall clock to compare with Kafka's timestamps, monotonic with other
    moments of the process). A failed fetch (the broker away) is tried again."""

    def __init__(
        self,
        topic: str,
        handle: Callable[[list[Any], float], None],
        consumer_options: Mapping[str, Any],
        *,
        at_end: bool,
        clock: Callable[[], float],
        poll_ms: int = 100,
    ) -> None:
        self.topic = topic
        self.handle = handle
        self.consumer_options = consumer_options
        self.at_end = at_end
        self.clock = clock
        self.poll_ms = poll_ms
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(**self.consumer_options, enable_auto_commit=False)
        await consumer.start()
        try:
            await assign_all(consumer, self.topic, at_end=self.at_end)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._pump(consumer), name=f"read {self.topic}")

    async def _pump(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            try:
                batches = await consumer.getmany(timeout_ms=self.poll_ms, max_records=10_000)
            except KafkaError:
                await asyncio.sleep(0.2)
                continue
            if not batches:
                continue
            arrived = self.clock()
            for records in batches.values():
                self.handle(records, arrived)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def delete_topics(admin_options: Mapping[str, Any], prefix: str) -> list[str]:
    """Delete every topic named ``<prefix>...``: a run's own, once it is over; returns their
    names. A broker with thousands of partitions left behind restarts slowly, and its heap
    fills (full collections of 0.4 s, seen). ``KafkaError`` names the topics the broker did
    not delete."""
    admin = AIOKafkaAdminClient(**admin_options)
    await admin.start()
    try:
        names = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        for start in range(0, len(names), 200):
            response = await admin.delete_topics(names[start : start + 200], timeout_ms=30_000)
            # 3, UNKNOWN_TOPIC_OR_PARTITION: deleted meanwhile (by another cleanup): gone too.
            failed = [(t, code) for t, code in response.topic_error_codes if code not in (0, 3)]
            if failed:
                raise KafkaError(f"topics not deleted (name, error code): {failed[:5]}")
    finally:
        await admin.close()
    return names
