"""The fault suite's machinery: its own stack, ``serve`` processes, a load, and the checks.

Everything runs for real: a Kafka broker and a Postgres of the suite's own (other ports, another
stack dir, so the shared stack other people test against is never touched), several
``python -m events.cli serve`` processes in one consumer group, and a load of thousands of
commands over many syncs from an idempotent aiokafka producer (only the contract's headers and
JSON; no synclife client code). What ``synclife bench`` does too (starting ``serve``, building
and publishing commands, reading topics, finding the relay's leader) is
``events.devtools.loadgen``'s; this module keeps what is the suite's own: the random load,
the faults, the readiness probes and the checks. Faults are injected from outside (signals to
the processes, stopping and starting the broker or Postgres) or from inside
(``SYNCLIFE_CRASH_POINTS``: ``events/service/faults.py``), and afterwards the invariants are
read back from the topics (from their beginning) and from Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import re
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaProducer

from events.devtools import loadgen, stack
from events.devtools.loadgen import Sender, lock_holders, own_topics, serve_env, session_pid
from events.devtools.procfs import cpu_model, memory_kib
from events.kafka import idempotent_producer
from events.service.packed_headers import unpack_headers
from events.service.relay import RELAY_LOCK
from events.service.settings import Settings
from events.service.tenancy import create_key
from tests.faults.hostile import (
    Hostile,
    KeyedSent,
    Revocation,
    check_hostile,
    check_revocation,
    pending,
)

ROOT = Path(__file__).resolve().parents[2]
STACK_DIR = ROOT / ".cache" / "faultstack"
SUMMARY_FILE = ROOT / ".cache" / "faults" / "summary.md"

# Ports of the suite's own stack: away from the shared stack (19092, 15432), overridable, and
# below Linux's ephemeral range (32768-60999): while the broker is down, clients retry
# connecting to it, and one whose source port happens to equal the broker's port connects to
# itself (TCP simultaneous open) and holds the port, so the broker cannot bind it again.
KAFKA_PORT = int(os.environ.get("SYNCLIFE_FAULTS_KAFKA_PORT", "28092"))  # and 28093
POSTGRES_PORT = int(os.environ.get("SYNCLIFE_FAULTS_POSTGRES_PORT", "28432"))

# Bounds the suite holds the service to.
SHUTDOWN_BOUND_SECONDS = 20.0  # SIGTERM to exit 0
READY_TIMEOUT_SECONDS = 60.0  # a started process answers /readyz 200
DRAIN_TIMEOUT_SECONDS = 120.0  # after the load: every result and event out
CAUGHT_UP_SECONDS = 2.0  # a command older than this without a result: not recovered yet
RESULT_TIMEOUT_SECONDS = 120.0  # a worker waits this long for a result, at most

# Static group membership (SYNCLIFE_GROUP_INSTANCE_ID): each serve slot keeps one instance id
# across its restarts, so that a process started again takes its partitions back at once
# instead of after the consumer session timeout. SYNCLIFE_FAULTS_STATIC_MEMBERSHIP=0 runs the
# suite with dynamic members (docs/faults.md compares the two).
STATIC_MEMBERSHIP = os.environ.get("SYNCLIFE_FAULTS_STATIC_MEMBERSHIP", "1") != "0"

CREATE = {
    "bucket_id": "bkt_faults",
    "connection_id": "conn_faults",
    "provider": "s3",
    "source_path": "bucket/prefix",
    "created_by_user_id": "user_faults",
    # The longest interval: a sync's only scheduled runs in a scenario are its first one and
    # those a resume requests, and no scheduler of a later scenario touches it.
    "polling_interval_seconds": 900,
}


def echo_nothing(_: str) -> None:
    return None


def stack_settings() -> Settings:
    """The suite's own stack (never the shared one other people run tests against)."""
    return Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}",
        database_url=f"postgresql://synclife@127.0.0.1:{POSTGRES_PORT}/synclife",  # type: ignore[arg-type]
        stack_dir=str(STACK_DIR),
        topic_partitions=6,
    )


def machine() -> str:
    """One line naming the machine the summary was measured on."""
    cpu = cpu_model() or "unknown CPU"
    kib = memory_kib()
    memory = f", {kib / 1024 / 1024:.0f} GiB RAM" if kib is not None else ""
    return f"{platform.node()}: {os.cpu_count()} x {cpu}{memory}, {platform.platform(terse=True)}"


# --------------------------------------------------------------------------------------------
# serve processes
# --------------------------------------------------------------------------------------------


_PORT_LINE = re.compile(r"metrics and health on http://([\d.]+):(\d+)")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""


def tail(path: Path, lines: int = 40) -> str:
    return "\n".join(loadgen.log_tail(path, lines))


class Serve:
    """One ``synclife serve`` process (a new one per start; the name stays)."""

    def __init__(self, name: str, env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.env = env
        self.log_dir = log_dir
        self.starts = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.log: Path = log_dir / f"{name}.log"
        self.url: str | None = None
        self.exits: list[int] = []  # return codes of earlier incarnations
        self.stopped = False  # SIGSTOPped right now

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        assert not self.alive, f"{self.name} already runs"
        self.starts += 1
        self.log = self.log_dir / f"{self.name}.{self.starts}.log"
        self.url = None
        self.proc = await loadgen.spawn_serve(self.env, self.log, cwd=ROOT)

    async def wait_ready(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                if not self.alive:
                    raise AssertionError(f"{self.name} exited while starting:\n{tail(self.log)}")
                if await self.ready(session):
                    return
                if loop.time() > deadline:
                    raise AssertionError(f"{self.name} not ready in {timeout}s:\n{tail(self.log)}")
                await asyncio.sleep(0.2)

    def _find_url(self) -> str | None:
        if self.url is None:
            match = _PORT_LINE.search(_read_text(self.log))
            if match is not None:
                self.url = f"http://{match[1]}:{match[2]}"
        return self.url

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        """Whether /readyz answers 200 (False while the process starts, is stopped or gone)."""
        url = self._find_url()
        if url is None or not self.alive or self.stopped:
            return False
        try:
            async with session.get(
                f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=3)
            ) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None and self.alive, f"{self.name} is not running"
        self.proc.send_signal(sig)
        if sig is signal.SIGSTOP:
            self.stopped = True
        elif sig is signal.SIGCONT:
            self.stopped = False

    async def wait_exit(self, timeout: float) -> int | None:
        """The exit code, or None if it still runs after ``timeout``."""
        assert self.proc is not None
        try:
            code = await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            return None
        self.exits.append(code)
        self.stopped = False
        return code

    async def terminate(self) -> float:
        """SIGTERM and the seconds until a clean exit; fails if it is not 0 within the bound."""
        started = time.monotonic()
        self.signal(signal.SIGTERM)
        code = await self.wait_exit(SHUTDOWN_BOUND_SECONDS)
        if code is None:
            self.signal(signal.SIGKILL)
            await self.wait_exit(10)
            raise AssertionError(
                f"{self.name} did not exit within {SHUTDOWN_BOUND_SECONDS}s of SIGTERM:\n"
                f"{tail(self.log)}"
            )
        assert code == 0, f"{self.name} exited {code} after SIGTERM:\n{tail(self.log)}"
        return time.monotonic() - started

    async def kill(self) -> None:
        self.signal(signal.SIGKILL)
        await self.wait_exit(10)

    async def ensure_gone(self) -> None:
        if self.alive:
            assert self.proc is not None
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.send_signal(signal.SIGKILL)
            await self.wait_exit(10)


# --------------------------------------------------------------------------------------------
# the load
# --------------------------------------------------------------------------------------------


@dataclass
class Sent:
    command_id: str
    sync_id: str
    command_type: str
    at: float  # monotonic time of the acknowledgement


class Load:
    """Creates ``syncs`` syncs, then streams commands at them, with hostile messages beside.

    Most syncs get pause/resume/update/trigger at random. With a worker's key (``runs``), every
    ``WORKED``th sync is a worker's instead: it takes the run lock (``sync.run.start``, a short
    lease), heartbeats and checkpoints, then completes or fails the run, each command after the
    previous one's result, so that under a fault its lease runs out and the service takes the
    lock back (its next command is then ``lock_lost``: fenced). With a ``revocation``, every
    ``REVOKED``th sync is commanded with a key that is revoked halfway through the load. With
    ``hostile``, hostile messages go out beside (``tests/faults/hostile.py``).

    Every command has a new id; a send Kafka did not acknowledge is retried with the same id
    (which the contract allows: one effect, one result), so every command in ``sent`` reached
    the topic at least once.
    """

    WORKED = 4
    REVOKED = 10
    LEASE_SECONDS = 5  # the shortest the contract allows: a fault outlasts it

    def __init__(
        self,
        settings: Settings,
        sender: Sender,
        *,
        syncs: int,
        seconds: float,
        interval: tuple[float, float] = (0.6, 1.4),
        seed: int = 7,
        runs: Sender | None = None,
        answer: Callable[[str], dict[str, Any] | None] | None = None,
        revocation: Revocation | None = None,
        hostile: Hostile | None = None,
    ) -> None:
        self.settings = settings
        self.sender = sender
        self.sync_ids = [f"sync_{uuid.uuid4().hex}" for _ in range(syncs)]
        self.seconds = seconds
        self.interval = interval
        self.random = random.Random(seed)
        self.sent: dict[str, Sent] = {}
        self.retries = 0
        self.done = asyncio.Event()
        self.runs = runs
        self.answer = answer
        self.revocation = revocation
        self.hostile = hostile
        self.run_commands = 0
        self.fenced = 0  # run commands rejected lock_lost: the lease had been taken back
        self.worked: list[str] = []
        if runs is not None and answer is not None:
            self.worked = self.sync_ids[1 :: self.WORKED]
        if revocation is not None:
            revocation.sync_ids = [
                s for s in self.sync_ids[:: self.REVOKED] if s not in set(self.worked)
            ]

    def acked_before(self, moment: float) -> set[str]:
        return {cid for cid, s in self.sent.items() if s.at <= moment}

    async def run(self) -> None:
        # acks=all, idempotent (and with the metadata backoff of events/kafka.py, so that the
        # load itself does not spin while the broker is away).
        producer = idempotent_producer(self.settings, client_id="faults-load", linger_ms=5)
        await producer.start()
        try:
            deadline = time.monotonic() + self.seconds
            worked = set(self.worked)
            revoked = set(self.revocation.sync_ids if self.revocation else ())
            streams = [
                self._worked_sync(producer, sid, deadline)
                if sid in worked
                else self._one_sync(producer, sid, deadline, revoked=sid in revoked)
                for sid in self.sync_ids
            ]
            if self.revocation is not None:
                streams.append(self._revoke_halfway(self.revocation))
            if self.hostile is not None:
                streams.append(self.hostile.run(deadline))
            await asyncio.gather(*streams)
        finally:
            self.done.set()
            await producer.stop()

    async def _revoke_halfway(self, revocation: Revocation) -> None:
        await asyncio.sleep(self.seconds / 2)
        await revocation.revoke()

    async def _one_sync(
        self, producer: AIOKafkaProducer, sync_id: str, deadline: float, *, revoked: bool = False
    ) -> None:
        rnd = random.Random(self.random.random())
        send = self._send_revocable if revoked else self._send
        await asyncio.sleep(rnd.uniform(0, 1.0))
        await send(producer, sync_id, "sync.create", CREATE)
        while True:
            await asyncio.sleep(rnd.uniform(*self.interval))
            if time.monotonic() >= deadline:
                return
            roll = rnd.random()
            data: dict[str, Any]
            if roll < 0.35:
                kind, data = "sync.pause", {"paused_by_user_id": "u1", "reason": "faults"}
            elif roll < 0.7:
                kind, data = "sync.resume", {"resumed_by_user_id": "u1"}
            elif roll < 0.92:
                kind, data = "sync.update", {"batch_size": rnd.randint(1, 100)}
            else:
                kind, data = "sync.trigger", {"requested_by_user_id": "u1"}
            await send(producer, sync_id, kind, data)

    async def _worked_sync(self, producer: AIOKafkaProducer, sync_id: str, deadline: float) -> None:
        """A worker's runs of one sync, each command sent once the previous one is answered."""
        rnd = random.Random(self.random.random())
        await asyncio.sleep(rnd.uniform(0, 1.0))
        await self._send(producer, sync_id, "sync.create", CREATE)
        worker = f"worker-{sync_id[-8:]}"
        lease = self.LEASE_SECONDS
        while time.monotonic() < deadline:
            start = {"worker_id": worker, "lease_seconds": lease}
            started = await self._call(producer, sync_id, "sync.run.start", start)
            if started["outcome"] != "applied":
                if started.get("status") == "SUSPENDED":  # auto-suspended after failures
                    await self._call(producer, sync_id, "sync.resume", {"resumed_by_user_id": "u1"})
                else:  # lock_conflict: the service is taking an expired lease back
                    await asyncio.sleep(rnd.uniform(*self.interval))
                continue
            run = {"run_id": started["run"]["run_id"], "lock_token": started["run"]["lock_token"]}
            fenced = False
            for n in range(rnd.randint(1, 4)):
                await asyncio.sleep(rnd.uniform(*self.interval))
                if rnd.random() < 0.5:
                    kind, data = "sync.run.heartbeat", {**run, "lease_seconds": lease}
                else:
                    kind, data = "sync.run.checkpoint", {**run, "resume_cursor": f"c{n}"}
                if await self._fenced(await self._call(producer, sync_id, kind, data)):
                    fenced = True
                    break
            if fenced:
                continue
            await asyncio.sleep(rnd.uniform(*self.interval))
            if rnd.random() < 0.8:
                kind, data = "sync.run.complete", {**run, "files_synced": rnd.randint(0, 9)}
            else:
                kind, data = "sync.run.fail", {**run, "error": "faults: a failed run"}
            await self._fenced(await self._call(producer, sync_id, kind, data))

    async def _fenced(self, result: dict[str, Any]) -> bool:
        """Whether a run command was refused because its lease was taken back."""
        if result["outcome"] == "rejected" and (result.get("error") or {}).get("code") == (
            "lock_lost"
        ):
            self.fenced += 1
            return True
        return False

    async def _call(
        self, producer: AIOKafkaProducer, sync_id: str, kind: str, data: dict[str, Any]
    ) -> dict[str, Any]:
        """Send a command and wait for its result (as long as a fault takes)."""
        assert self.runs is not None and self.answer is not None
        sender = self.runs if kind.startswith("sync.run.") else self.sender
        self.run_commands += kind.startswith("sync.run.")
        command_id = await self._send(producer, sync_id, kind, data, sender)
        for _ in range(int(RESULT_TIMEOUT_SECONDS / 0.05)):
            result = self.answer(command_id)
            if result is not None:
                return result
            await asyncio.sleep(0.05)
        raise AssertionError(f"{kind} {command_id}: no result in {RESULT_TIMEOUT_SECONDS}s")

    async def _send(
        self,
        producer: AIOKafkaProducer,
        sync_id: str,
        kind: str,
        data: dict[str, Any],
        sender: Sender | None = None,
    ) -> str:
        command = (sender or self.sender).command(str(uuid.uuid4()), kind, sync_id, data)
        # Sent again with the same id while Kafka does not acknowledge it: one effect, one
        # result, so every command in ``sent`` reached the topic at least once.
        self.retries += await loadgen.send_until_acked(
            producer, self.settings.commands_topic, command
        )
        self.sent[command.command_id] = Sent(command.command_id, sync_id, kind, time.monotonic())
        return command.command_id

    async def _send_revocable(
        self, producer: AIOKafkaProducer, sync_id: str, kind: str, data: dict[str, Any]
    ) -> str:
        """A command with the key revoked mid-load: kept apart from ``sent``, as the contract
        answers it under an id of its own once the key is revoked."""
        assert self.revocation is not None
        command = self.revocation.sender.command(str(uuid.uuid4()), kind, sync_id, data)
        started = time.monotonic()
        failed = await loadgen.send_until_acked(producer, self.settings.commands_topic, command)
        self.revocation.sent.append(
            KeyedSent(command.command_id, sync_id, kind, started, failed + 1)
        )
        return command.command_id


# --------------------------------------------------------------------------------------------
# what the topics carried
# --------------------------------------------------------------------------------------------


@dataclass
class Message:
    partition: int
    offset: int
    key: str
    headers: dict[str, bytes]
    value: bytes

    @property
    def id(self) -> str:
        return self.headers["ce_id"].decode()


class TopicReader:
    """Reads a whole topic from its beginning, and keeps reading (through broker restarts):
    every message, and when each event id's first copy arrived."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.messages: list[Message] = []
        self.first_seen: dict[str, float] = {}  # ce_id: monotonic time its first copy arrived
        self.first: dict[str, Message] = {}  # ce_id: its first copy
        self.changed = asyncio.Event()
        self._reader = loadgen.TopicReader(
            topic,
            self._keep,
            {
                "bootstrap_servers": settings.kafka_bootstrap_servers,
                "request_timeout_ms": settings.kafka_request_timeout_ms,
                "auto_offset_reset": "earliest",
                # The dead letters keep an oversized command as it came.
                "max_partition_fetch_bytes": 4 * settings.max_message_bytes,
                "fetch_max_bytes": 16 * settings.max_message_bytes,
            },
            at_end=False,
            clock=time.monotonic,  # compared with the load's acknowledgements
            poll_ms=200,
        )

    def _keep(self, records: list[Any], arrived: float) -> None:
        for r in records:
            message = Message(
                r.partition,
                r.offset,
                (r.key or b"").decode(),
                {k: v for k, v in r.headers},
                r.value or b"",
            )
            self.messages.append(message)
            ce_id = message.headers.get("ce_id")
            if ce_id is not None:
                self.first_seen.setdefault(ce_id.decode(), arrived)
                self.first.setdefault(ce_id.decode(), message)
        self.changed.set()

    async def start(self) -> None:
        await self._reader.start()

    async def stop(self) -> None:
        await self._reader.stop()


# --------------------------------------------------------------------------------------------
# a scenario
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary table."""

    scenario: str
    processes: str
    sent: int = 0
    results: int = 0
    applied: int = 0
    applied_twice: int = 0
    events: int = 0
    events_missing: int = 0
    version_gaps: int = 0
    redelivered: int = 0  # duplicate copies on the topics (same ids): at-least-once at work
    conflicting: int = 0  # ids (events, results) seen with different contents: never allowed
    faults: int = 0
    recover_seconds: float | None = None
    seconds: float = 0.0
    run_commands: int = 0
    fenced: int = 0  # run commands rejected lock_lost
    hostile: int = 0
    dead_letters: int = 0
    revoked_processed: int = 0  # commands of the revoked key processed before the revocation
    revoked_refused: int = 0  # and refused (unauthenticated) after it
    problems: list[str] = field(default_factory=list)

    @staticmethod
    def header() -> str:
        return (
            "| scenario | serve processes | commands sent | results | applied twice "
            "| events | events missing | version gaps | duplicates delivered | faults "
            "| seconds to recover | scenario seconds | run commands (lock_lost) "
            "| hostile (dead letters) | revoked key: processed / refused |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )

    def line(self) -> str:
        recover = f"{self.recover_seconds:.1f}" if self.recover_seconds is not None else "-"
        return (
            f"| {self.scenario} | {self.processes} | {self.sent} | {self.results} "
            f"| {self.applied_twice} | {self.events} | {self.events_missing} "
            f"| {self.version_gaps} | {self.redelivered} | {self.faults} | {recover} "
            f"| {self.seconds:.0f} | {self.run_commands} ({self.fenced}) "
            f"| {self.hostile} ({self.dead_letters}) "
            f"| {self.revoked_processed} / {self.revoked_refused} |"
        )


@dataclass
class Fixture:
    """What every scenario shares: the stack, a tenant, where logs go, the summary."""

    stack: Settings
    database_url: str
    api_key: str  # syncs:write
    run_key: str  # syncs:run: the workers'
    org_id: str
    namespace: str
    log_root: Path
    rows: list[Row]
    run: str


class Scenario:
    """One scenario: its own topics and group, its processes, a load, faults, then checks."""

    def __init__(
        self,
        fx: Fixture,
        name: str,
        *,
        processes: int,
        syncs: int = 200,
        seconds: float = 15.0,
        crash_points: str | None = None,
        settings: dict[str, Any] | None = None,
        hostile: bool = True,
        replicas: int = 1,
    ) -> None:
        self.fx = fx
        self.replicas = replicas  # of each topic (3 on the cluster)
        self.name = name
        self.slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        slug = f"{fx.run}.{self.slug}"
        self.settings = Settings(
            kafka_bootstrap_servers=fx.stack.kafka_bootstrap_servers,
            database_url=fx.database_url,  # type: ignore[arg-type]
            stack_dir=fx.stack.stack_dir,
            **own_topics(f"faults.{slug}"),
            consumer_group=f"faults-{slug}",
            topic_partitions=6,
            http_port=0,
            **(settings or {}),
        )
        self.log_dir = fx.log_root / self.slug
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNCLIFE_")}
        env.update(serve_env(self.settings, f"faults-{self.slug}"))
        env.update(
            {
                "SYNCLIFE_LOG_FORMAT": "json",
                "SYNCLIFE_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        for key, value in (settings or {}).items():
            env[f"SYNCLIFE_{key.upper()}"] = str(value)
        if crash_points:
            env["SYNCLIFE_CRASH_POINTS"] = crash_points
        self.env = env
        self.initial = processes
        self.serves: list[Serve] = []
        sender = Sender(fx.api_key, fx.namespace, "faults")
        # The revoked key is made when the scenario opens (``open``).
        self.revocation = (
            Revocation(Sender("", fx.namespace, "faults"), "", fx.database_url) if hostile else None
        )
        self.hostile = Hostile(self.settings, sender, CREATE) if hostile else None
        self.load = Load(
            self.settings,
            sender,
            syncs=syncs,
            seconds=seconds,
            runs=Sender(fx.run_key, fx.namespace, "faults-worker"),
            answer=self.answer,
            revocation=self.revocation,
            hostile=self.hostile,
        )
        self.results = TopicReader(self.settings, self.settings.results_topic)
        self.lifecycle = TopicReader(self.settings, self.settings.lifecycle_topic)
        self.dlq = TopicReader(self.settings, self.settings.dlq_topic)
        self.row = Row(name, str(processes))
        self.recoveries: list[float] = []
        self.not_ready_seen: list[float] = []  # monotonic times a live process said 503
        self.started = time.monotonic()
        self._prober: asyncio.Task[None] | None = None
        self._supervise = False
        self.crashes = 0
        self.last_crash = 0.0  # when the supervisor last found a process dead

    # --- processes -------------------------------------------------------------------------

    def serve(self, name: str | None = None, env: dict[str, str] | None = None) -> Serve:
        name = name or f"serve{len(self.serves) + 1}"
        slot = {**self.env, **(env or {})}
        if STATIC_MEMBERSHIP:
            slot["SYNCLIFE_GROUP_INSTANCE_ID"] = f"faults-{self.fx.run}-{self.slug}-{name}"
        s = Serve(name, slot, self.log_dir)
        self.serves.append(s)
        return s

    @property
    def live(self) -> list[Serve]:
        return [s for s in self.serves if s.alive]

    async def start(self, *serves: Serve) -> None:
        for s in serves:
            await s.start()
        await asyncio.gather(*(s.wait_ready() for s in serves))

    async def add(self, count: int = 1) -> list[Serve]:
        new = [self.serve() for _ in range(count)]
        await self.start(*new)
        return new

    async def _probe(self) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                for s in list(self.serves):
                    if s.alive and not s.stopped and s.url is not None:
                        if not await s.ready(session):
                            self.not_ready_seen.append(time.monotonic())
                    elif self._supervise and not s.alive and not s.stopped:
                        # A crash point killed it: start it again, as a supervisor would.
                        code = await s.wait_exit(5)
                        if code is not None and code < 0:
                            self.crashes += 1
                            self.last_crash = time.monotonic()
                        await s.start()
                await asyncio.sleep(0.25)

    def supervise(self, on: bool = True) -> None:
        """Restart processes that die (crash points kill them from inside)."""
        self._supervise = on

    # --- measuring ---------------------------------------------------------------------------

    def fault(self) -> float:
        """Note a fault injected now; returns its time."""
        self.row.faults += 1
        return time.monotonic()

    async def all_ready(self) -> bool:
        async with aiohttp.ClientSession() as session:
            live = [s for s in self.live if not s.stopped]
            if not live:
                return False
            states = await asyncio.gather(*(s.ready(session) for s in live))
            return all(states)

    def answer(self, command_id: str) -> dict[str, Any] | None:
        """The result of ``command_id``, once it arrived."""
        m = self.results.first.get(f"result:{command_id}")
        return json.loads(m.value) if m is not None else None

    def answered(self) -> dict[str, float]:
        """Command id: when its first result arrived (monotonic)."""
        return {ce_id.removeprefix("result:"): at for ce_id, at in self.results.first_seen.items()}

    async def wait_recovered(self, since: float, timeout: float = 90.0) -> float:
        """Wait until the service is back to normal after a fault at ``since``; return the
        seconds the fault cost.

        Back to normal: every live process ready, and every command acknowledged more than
        ``CAUGHT_UP`` seconds ago answered, looked at no sooner than ``CAUGHT_UP`` seconds after
        the fault (so the commands sent just after it count: those of a frozen process's
        partitions wait for the rebalance), and a stall that starts later counts too.
        The seconds: the longest any of those commands waited for its result because of the
        fault (from the fault, or from its acknowledgement if later), or the time until every
        process was ready, whichever is longer.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        before: set[str] = set()
        ready_from: float | None = None  # since when every live process has been ready
        while True:
            now = time.monotonic()
            if await self.all_ready():
                ready_from = now if ready_from is None else ready_from
            else:
                ready_from = None
            before = self.load.acked_before(max(since, now - CAUGHT_UP_SECONDS))
            answered = self.answered()
            if (
                ready_from is not None
                and now >= since + CAUGHT_UP_SECONDS
                and before <= answered.keys()
            ):
                sent = self.load.sent
                waits = (answered[c] - max(since, sent[c].at) for c in before)
                seconds = max(ready_from - since, *waits)
                self.recoveries.append(seconds)
                return seconds
            if loop.time() > deadline:
                missing = len(before - self.answered().keys())
                raise AssertionError(
                    f"{self.name}: not recovered {timeout}s after the fault "
                    f"({missing} commands unanswered){self.tails()}"
                )
            await asyncio.sleep(0.2)

    def saw_not_ready(self, start: float, end: float) -> bool:
        return any(start <= t <= end for t in self.not_ready_seen)

    def tails(self) -> str:
        parts = []
        for s in self.serves:
            parts.append(f"\n--- {s.log} (last lines):\n{tail(s.log, 25)}")
        return "".join(parts)

    # --- the run -----------------------------------------------------------------------------

    async def open(self) -> None:
        """The scenario's topics, its readers of them, and the readiness prober."""
        await stack.ensure_topics(
            self.settings,
            self.settings.kafka_bootstrap_servers,
            echo_nothing,
            replicas=self.replicas,
        )
        await self.results.start()
        await self.lifecycle.start()
        await self.dlq.start()
        if self.revocation is not None:
            conn = await asyncpg.connect(self.fx.database_url)
            try:
                key = await create_key(conn, self.fx.org_id, ["syncs:write"], name=self.slug)
            finally:
                await conn.close()
            self.revocation.sender = Sender(key["key"], self.fx.namespace, "faults-revoked")
            self.revocation.key_id = key["id"]
        self._prober = asyncio.create_task(self._probe(), name="probe")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prober
        for s in self.serves:
            await s.ensure_gone()
        await self.results.stop()
        await self.lifecycle.stop()
        await self.dlq.stop()
        # What a failed scenario left in the outbox would be published to deleted topics by
        # the next scenario's relay, for ever: it goes with the topics.
        conn = await asyncpg.connect(self.fx.database_url)
        try:
            await conn.execute(
                "DELETE FROM outbox WHERE topic LIKE $1", f"faults.{self.fx.run}.{self.slug}.%"
            )
        finally:
            await conn.close()
        await delete_topics(
            self.settings.kafka_bootstrap_servers, f"faults.{self.fx.run}.{self.slug}."
        )

    async def run(self, faults: Callable[[Scenario], Awaitable[None]]) -> Row:
        """Start, load, inject ``faults`` while the load flows, drain, stop, check."""
        await self.open()
        try:
            await self.start(*(self.serve() for _ in range(self.initial)))
            self.started = time.monotonic()
            load = asyncio.create_task(self.load.run(), name="load")
            try:
                await faults(self)
                await load
            finally:
                if not load.done():
                    load.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await load
            self.supervise(False)
            await self._drain()
            for s in self.live:
                if s.stopped:
                    s.signal(signal.SIGCONT)
            # The relay leader last: a command redelivered to another process while it stops
            # (its result replayed: a new outbox row) is then still published by the leader's
            # final flush, and the outbox is empty at the end.
            leader = await self.relay_leader()
            await asyncio.gather(*(s.terminate() for s in self.live if s is not leader))
            await leader.terminate()
            self.row.seconds = time.monotonic() - self.started
            await self.check()
        except BaseException:
            print(self.tails(), file=sys.stderr)
            raise
        finally:
            await self.close()
        if self.recoveries:
            self.row.recover_seconds = max(self.recoveries)
        self.row.faults += self.crashes
        self.fx.rows.append(self.row)
        print(f"\n{Row.header()}\n{self.row.line()}", file=sys.stderr)
        return self.row

    async def relay_leader(self) -> Serve:
        """The process whose relay holds the leader lock (its session's application_name
        names the process: events/service/db.py)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        conn = await asyncpg.connect(self.fx.database_url)
        try:
            while True:
                name = (await lock_holders(conn, [RELAY_LOCK])).get(RELAY_LOCK)
                if name:
                    pid = session_pid(name)
                    for s in self.live:
                        if s.pid == pid:
                            return s
                if loop.time() > deadline:
                    raise AssertionError(f"no relay leader among {[s.pid for s in self.live]}")
                await asyncio.sleep(0.1)
        finally:
            await conn.close()

    def crash_points_hit(self) -> dict[str, int]:
        """How often each crash point killed a process (from the processes' logs)."""
        hits: dict[str, int] = defaultdict(int)
        for path in sorted(self.log_dir.glob("*.log")):
            for line in _read_text(path).splitlines():
                if line.startswith("crash point "):
                    hits[line.split()[2].rstrip(":")] += 1
        return dict(hits)

    async def _versions(self, conn: asyncpg.Connection) -> dict[str, int]:
        """Each of the load's syncs' version in Postgres."""
        rows = await conn.fetch(
            "SELECT sync_config_id, version FROM syncs WHERE sync_config_id = ANY($1::text[])",
            self.load.sync_ids,
        )
        return {r["sync_config_id"]: r["version"] for r in rows}

    async def _drain(self) -> None:
        """Wait until every command has a result and the outbox is empty."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_SECONDS
        conn = await asyncpg.connect(self.fx.database_url)
        try:
            while True:
                missing = set(self.load.sent) - self.answered().keys()
                outbox = await conn.fetchval("SELECT count(*) FROM outbox")
                hostile = pending(self.hostile, self.revocation, self.results.messages)
                dead = await conn.fetchval(
                    "SELECT count(*) FROM dead_letters WHERE source_topic = $1",
                    self.settings.commands_topic,
                )
                dead_seen = len(
                    {
                        (m.headers["dlq_source_partition"], m.headers["dlq_source_offset"])
                        for m in self.dlq.messages
                    }
                )
                if not missing and outbox == 0 and not hostile and dead_seen >= dead:
                    # And the lifecycle topic caught up with every sync's version.
                    versions = await self._versions(conn)
                    seen: dict[str, int] = defaultdict(int)
                    for m in self.lifecycle.messages:
                        v = int(m.id.rpartition(":v")[2])
                        seen[m.key] = max(seen[m.key], v)
                    if all(seen[k] >= v for k, v in versions.items()):
                        return
                if loop.time() > deadline:
                    raise AssertionError(
                        f"{self.name}: no drain within {DRAIN_TIMEOUT_SECONDS}s: "
                        f"{len(missing)} results missing, {hostile} hostile or revoked-key "
                        f"messages unanswered, {dead} dead letters ({dead_seen} seen), "
                        f"{outbox} outbox rows{self.tails()}"
                    )
                await asyncio.sleep(0.25)
        finally:
            await conn.close()

    async def check(self) -> None:
        """Every invariant, read back from the topics and Postgres."""
        row = self.row
        problems = row.problems
        sent = self.load.sent
        row.sent = len(sent)

        # Results: one distinct result per command id, for every command sent. The hostile
        # messages' and the revoked key's are checked apart (tests/faults/hostile.py).
        apart = (self.hostile.sync_ids if self.hostile else set()) | set(
            self.revocation.sync_ids if self.revocation else ()
        )
        results: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for m in self.results.messages:
            data = json.loads(m.value)
            if m.key in apart or data.get("sync_config_id") in apart:
                continue
            results[m.id.removeprefix("result:")].append(data)
        row.results = sum(1 for cid in sent if cid in results)
        row.redelivered += sum(len(v) - 1 for v in results.values())
        if row.results != row.sent:
            problems.append(f"{row.sent - row.results} commands without a result")
        for cid, copies in results.items():
            if cid not in sent:
                problems.append(f"a result for a command never sent: {cid}")
            elif any(c != copies[0] for c in copies[1:]):
                row.conflicting += 1
                problems.append(f"command {cid} has {len(copies)} differing results")
        row.applied = sum(1 for c in results.values() if c[0]["outcome"] == "applied")

        # Lifecycle events, deduplicated by id, in order of first appearance per sync.
        first: dict[str, Message] = {}
        order: dict[str, list[int]] = defaultdict(list)
        by_partition_order = sorted(self.lifecycle.messages, key=lambda m: (m.partition, m.offset))
        for m in by_partition_order:
            if m.id in first:
                row.redelivered += 1
                if m.value != first[m.id].value:
                    row.conflicting += 1
                    problems.append(f"event {m.id} delivered with differing contents")
                continue
            first[m.id] = m
            order[m.key].append(int(m.id.rpartition(":v")[2]))
        row.events = len(first)

        conn = await asyncpg.connect(self.fx.database_url)
        try:
            syncs = await self._versions(conn)
            history = await conn.fetch(
                """SELECT sync_config_id, version, event_type, from_status, command_id
                   FROM sync_history WHERE sync_config_id = ANY($1::text[])
                   ORDER BY sync_config_id, version""",
                self.load.sync_ids,
            )
            processed = await conn.fetchval(
                "SELECT count(*) FROM processed_commands WHERE command_id = ANY($1::text[])",
                list(sent),
            )
            left = await conn.fetch(
                """SELECT id, topic, convert_from(key, 'UTF8') AS key, headers, created_at
                   FROM outbox ORDER BY id LIMIT 5"""
            )
            outbox = await conn.fetchval("SELECT count(*) FROM outbox")
            dead = await conn.fetchval(
                "SELECT count(*) FROM dead_letters WHERE source_topic = $1",
                self.settings.commands_topic,
            )
        finally:
            await conn.close()

        if processed != len(sent):
            problems.append(f"{processed} processed_commands rows for {len(sent)} commands")
        if outbox:
            rows = "; ".join(
                f"{r['topic']} {r['key']} {h.get('ce_type')!r} {h.get('ce_id')!r} {r['created_at']}"
                for r in left
                for h in [dict(unpack_headers(r["headers"]))]
            )
            problems.append(f"{outbox} outbox rows left: {rows}")
        row.run_commands, row.fenced = self.load.run_commands, self.load.fenced
        if self.hostile is not None:
            tally = check_hostile(
                self.hostile, self.results.messages, self.dlq.messages, dead, problems
            )
            row.hostile, row.dead_letters = tally.sent, tally.dead_letters
        elif dead:
            problems.append(f"{dead} commands dead-lettered")

        # Per sync: Postgres history is 1..N, the topic carried exactly 1..N, in order.
        history_versions: dict[str, list[int]] = defaultdict(list)
        by_command: dict[str, list[str]] = defaultdict(list)
        for h in history:
            history_versions[h["sync_config_id"]].append(h["version"])
            if h["command_id"] is not None:
                by_command[h["command_id"]].append(f"{h['sync_config_id']}:v{h['version']}")
            if h["event_type"] == "sync.run_requested" and h["from_status"] == "SUSPENDED":
                problems.append(f"a run requested while paused: {h['sync_config_id']}")
            got = first.get(f"{h['sync_config_id']}:v{h['version']}")
            if got is not None and got.headers["ce_type"].decode() != h["event_type"]:
                problems.append(f"event {got.id} is {got.headers['ce_type']!r}, not as history")
        for sid, n in syncs.items():
            expected = list(range(1, n + 1))
            if history_versions[sid] != expected:
                problems.append(f"{sid}: history versions {history_versions[sid]} != 1..{n}")
            seen = order.get(sid, [])
            row.events_missing += len(set(expected) - set(seen))
            row.version_gaps += sum(1 for a, b in itertools.pairwise(seen) if b != a + 1)
            if seen and seen[0] != 1:
                row.version_gaps += 1
            if set(seen) - set(expected):
                problems.append(f"{sid}: events beyond version {n}: {sorted(set(seen))}")

        # Applied twice: a command whose effect shows more than once, in Postgres or on the
        # topic, than the one its result lists.
        events_by_command: dict[str, set[str]] = defaultdict(set)
        for m in first.values():
            cid = json.loads(m.value).get("command_id")
            if cid is not None:
                events_by_command[cid].add(m.id)
        for cid in sent:
            answer = results.get(cid)
            listed: list[str] = (answer[0].get("events") or []) if answer else []
            in_history = by_command.get(cid, [])
            if (
                len(in_history) > len(listed)
                or len(events_by_command.get(cid, ())) > len(listed)
                or len(set(listed)) != len(listed)
            ):
                row.applied_twice += 1
            elif sorted(in_history) != sorted(listed):
                problems.append(f"command {cid}: history {in_history} != result events {listed}")

        if self.revocation is not None:
            row.revoked_processed, row.revoked_refused = check_revocation(
                self.revocation, self.results.messages, by_command, events_by_command, problems
            )

        if row.events_missing:
            problems.append(f"{row.events_missing} events missing")
        if row.version_gaps:
            problems.append(f"{row.version_gaps} version gaps or reorderings")
        if row.applied_twice:
            problems.append(f"{row.applied_twice} commands applied twice")


async def delete_topics(bootstrap_servers: str, prefix: str) -> None:
    """Delete the topics named ``prefix...``: a broker with thousands of partitions left by
    earlier scenarios restarts slowly, and the broker restart is one of the faults."""
    options = {"bootstrap_servers": bootstrap_servers, "client_id": "faults-admin"}
    await loadgen.delete_topics(options, prefix)


def write_summary(rows: list[Row], extra: list[str]) -> str:
    """The summary table (with date and machine), written under .cache/ and returned."""
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"Fault suite, {when}, on {machine()}.",
        "",
        Row.header(),
        *(r.line() for r in rows),
    ]
    if extra:
        lines += ["", *extra]
    text = "\n".join(lines) + "\n"
    SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    SUMMARY_FILE.write_text(text, encoding="utf-8")
    return text
