"""``synclife bench``: throughput and latency of a real ``synclife serve`` on the real stack.

The bench runs ``synclife serve`` as a subprocess (so its peak RSS is its own, read from
``/proc/<pid>/status``), on topics and a consumer group of its own, and drives it like any
client: with aiokafka producers and consumers, through the wire contract. Per sync count
("scale") it creates an organization, a namespace, a key and the syncs (by publishing
``sync.create`` commands and waiting for their results), waits until the scheduler has
requested their first runs (polling interval 900 s, so it stays quiet afterwards), then, per
repeat:

1. **max throughput**: publishes ``--commands`` pause/resume commands at once (alternating per
   sync, so each one is applied), and measures commands / (last result observed - first
   publish);
2. **latency** at a fixed offered load (``--rate``, 1,000/s) and at 50% of that repeat's
   maximum: paced publishing, latency = publish (``send()`` called) -> the
   ``sync.status_changed`` event carrying that command id observed by a lifecycle consumer;
   **relay lag** is read from the same events: the Kafka record timestamp (CreateTime: when the
   relay handed the record to its producer) minus the event's ``occurred_at`` (the batch's
   decision time, taken just before its transaction), an upper bound of commit -> publish;
3. **baseline**: ``pgbench`` on the same Postgres, 4 clients, each transaction one command done
   one at a time (insert the command id, select the sync row for update, update it, insert an
   outbox row), in a scratch schema with as many rows as syncs, each as large as a real sync.

Figures are medians over ``--repeats``. Everything the bench creates (topics, tenant, syncs,
their history and processed commands, the scratch schema) is removed at the end unless
``--keep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from events.devtools import stack
from events.envelope import command_headers, header
from events.errors import SynclifeError
from events.kafka import idempotent_producer, kafka_options
from events.service.db import connect, is_transient, migrate
from events.service.relay import RELAY_LOCK
from events.service.scheduler import SCHEDULER_LOCK
from events.service.settings import Settings
from events.service.tenancy import create_key, create_namespace, create_org

__all__ = ["BenchError", "BenchOptions", "format_table", "run_bench"]

T = TypeVar("T")
Echo = Callable[[str], None]
Message = tuple[str, bytes, bytes, list[tuple[str, bytes]]]  # command id, key, value, headers

STATUS_CHANGED: Final = b"sync.status_changed"
SETUP_WITHIN: Final = 180.0  # seconds to wait for Kafka/Postgres during setup (a restart)
POLLING_INTERVAL: Final = 900  # the longest allowed: the scheduler stays quiet during phases


class BenchError(SynclifeError):
    """The benchmark could not run or a phase did not finish."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    scales: tuple[int, ...] = (1000,)
    commands: int = 20_000
    repeats: int = 3
    rate: float = 1000.0
    latency_seconds: float = 10.0
    pgbench_seconds: float = 10.0
    pgbench_clients: int = 4
    pgbench: str | None = None
    profile: str | None = None
    serve_path: str | None = None
    keep: bool = False

    @classmethod
    def quick(cls, **overrides: Any) -> BenchOptions:
        base: dict[str, Any] = {
            "scales": (200,),
            "commands": 2000,
            "repeats": 1,
            "latency_seconds": 2.0,
            "pgbench_seconds": 3.0,
        }
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)


# --- small helpers -------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def pacing_delay(start: float, sent: int, rate: float, now: float) -> float:
    """Seconds until the next of commands paced at ``rate`` from ``start`` is due, ``sent``
    of them gone: at least 1 ms, so at most 1,000 wakeups a second, and at a lighter load only
    as many as it needs (each wakeup costs CPU that the processes measured share)."""
    return max(0.001, start + sent / rate - now)


def _median(values: Sequence[float]) -> float:
    clean = [v for v in values if not math.isnan(v)]
    return statistics.median(clean) if clean else math.nan


async def _retry(what: str, make: Callable[[], Awaitable[T]], echo: Echo) -> T:
    """Setup steps survive a Kafka or Postgres restart: retry for up to ``SETUP_WITHIN``."""
    deadline = time.monotonic() + SETUP_WITHIN
    delay = 0.5
    while True:
        try:
            return await make()
        except (KafkaError, OSError, SynclifeError, asyncpg.PostgresError) as exc:
            transient = isinstance(exc, KafkaError | OSError) or is_transient(exc)
            if not transient and not isinstance(exc, stack.StackError):
                raise
            if time.monotonic() > deadline:
                raise BenchError(f"{what}: still failing after {SETUP_WITHIN:.0f}s: {exc}") from exc
            echo(f"  {what}: {type(exc).__name__}; retrying in {delay:.1f}s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def _proc_status_kb(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process ``pid`` so far (None if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(parent: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text(encoding="ascii")
                if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
                    out.append(int(entry.name))
    return out


#: Whose CPU time the bench accounts per command, in the order it prints them.
CPU_USERS: Final = ("serve", "kafka", "postgres", "bench")


CpuReading = dict[str, dict[int, float]]  # user -> pid -> CPU seconds so far


class CpuMeter:
    """CPU seconds used by ``serve``, the broker, Postgres (the postmaster and its processes)
    and the bench itself. Only the local stack's broker and Postgres have known pids; with
    external ones those are left out. A Postgres backend that exits between two readings takes
    its time since the first with it (only processes in the second reading are counted)."""

    def __init__(self, serve_pid: int, stack_pids: dict[str, int]) -> None:
        self.serve_pid = serve_pid
        self.stack_pids = stack_pids

    def read(self) -> CpuReading:
        pids: dict[str, list[int]] = {"serve": [self.serve_pid]}
        if "kafka" in self.stack_pids:
            pids["kafka"] = [self.stack_pids["kafka"]]
        if "postgres" in self.stack_pids:
            postmaster = self.stack_pids["postgres"]
            pids["postgres"] = [postmaster, *_children(postmaster)]
        out: CpuReading = {}
        for who, members in pids.items():
            seconds = {pid: _cpu_seconds(pid) for pid in members}
            out[who] = {pid: t for pid, t in seconds.items() if t is not None}
        times = os.times()
        out["bench"] = {os.getpid(): times.user + times.system}
        return out

    @staticmethod
    def per_command(before: CpuReading, after: CpuReading, commands: int) -> dict[str, float]:
        """Microseconds of CPU per command, by user, between two readings."""
        out: dict[str, float] = {}
        for who in CPU_USERS:
            if not before.get(who) or not after.get(who):
                continue
            used = sum(t - before[who].get(pid, 0.0) for pid, t in after[who].items())
            out[who] = used / commands * 1e6
        return out


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count()}
    with contextlib.suppress(OSError):
        meminfo = Path("/proc/meminfo").read_text(encoding="ascii")
        if match := re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.MULTILINE):
            info["memory_gib"] = round(int(match.group(1)) / 1024 / 1024, 1)
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        if match := re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE):
            info["cpu"] = match.group(1).strip()
    info["python"] = sys.version.split()[0]
    return info


# --- the service under test ----------------------------------------------------------------


class ServeProcess:
    """``synclife serve`` as a child process, with the bench's topics and consumer group."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path

    @classmethod
    async def start(
        cls, settings: Settings, log_path: Path, profile: str | None, serve_path: str | None
    ) -> ServeProcess:
        env = dict(os.environ)
        if serve_path:  # another checkout's code (e.g. a git worktree), to compare versions
            env["PYTHONPATH"] = os.pathsep.join(p for p in (serve_path, env.get("PYTHONPATH")) if p)
        env.update(
            {
                "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
                "SYNCLIFE_DATABASE_URL": settings.database_url.get_secret_value(),
                "SYNCLIFE_COMMANDS_TOPIC": settings.commands_topic,
                "SYNCLIFE_LIFECYCLE_TOPIC": settings.lifecycle_topic,
                "SYNCLIFE_RESULTS_TOPIC": settings.results_topic,
                "SYNCLIFE_DLQ_TOPIC": settings.dlq_topic,
                "SYNCLIFE_CONSUMER_GROUP": settings.consumer_group,
                "SYNCLIFE_CLIENT_ID": settings.client_id,
                "SYNCLIFE_HTTP_PORT": "0",  # any free port: never clash with another serve
            }
        )
        argv = [sys.executable]
        if profile:
            argv += ["-m", "cProfile", "-o", profile]
        argv += ["-m", "events.cli", "serve"]
        with log_path.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                # `python -m` puts the working directory first on sys.path: the checkout's.
                cwd=serve_path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        return cls(proc, log_path)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.returncode is None

    def says_it_leads(self) -> bool:
        """Its log says it leads the relay and the scheduler."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return False
        return "relay is the leader" in text and "scheduler is the leader" in text

    def peak_rss_mb(self) -> float:
        kb = _proc_status_kb(self.pid, "VmHWM")
        return kb / 1024 if kb is not None else math.nan

    def check(self) -> None:
        if not self.alive():
            raise BenchError(
                f"synclife serve exited with code {self.proc.returncode}; see {self.log_path}"
            )

    async def stop(self) -> None:
        if not self.alive():
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


# --- reading a topic -----------------------------------------------------------------------


class TopicTail:
    """Reads a topic from its end (fixed before anything is published); hands each batch of
    records with the time it arrived to ``handle``."""

    def __init__(
        self, settings: Settings, topic: str, handle: Callable[[list[Any], float], None]
    ) -> None:
        self.settings = settings
        self.topic = topic
        self.handle = handle
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_options(self.settings, client_id=f"{self.settings.client_id}-tail"),
            enable_auto_commit=False,
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await consumer.start()
        try:
            await _assign_at_end(consumer, self.topic)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._pump(consumer))

    async def _pump(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=10_000)
            if not batches:
                continue
            now = time.time()  # wall clock: compared with Kafka and event timestamps
            for records in batches.values():
                self.handle(records, now)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None


async def _assign_at_end(consumer: AIOKafkaConsumer, topic: str) -> None:
    """Assign every partition of ``topic`` and fix the positions at their ends."""
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        await consumer._client.force_metadata_update()
        partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise BenchError(f"topic {topic} has no partitions")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)


class ResultCount:
    """Counts the results published on the bench's results topic by watching its end offsets
    (every 10 ms), not by consuming them: the bench takes no CPU from the service it measures.
    Only the serve under test writes to this topic (it is the bench's own)."""

    def __init__(self, settings: Settings, target: int) -> None:
        self.settings = settings
        self.target = target
        self.seen = 0
        self.last = 0.0
        self.done = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **kafka_options(self.settings, client_id=f"{self.settings.client_id}-count"),
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            await _assign_at_end(consumer, self.settings.results_topic)
            tps = sorted(consumer.assignment())
            base = await consumer.end_offsets(tps)
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._watch(consumer, tps, base))

    async def _watch(
        self, consumer: AIOKafkaConsumer, tps: list[TopicPartition], base: dict[Any, int]
    ) -> None:
        while self.seen < self.target:
            await asyncio.sleep(0.01)
            with contextlib.suppress(KafkaError):
                ends = await consumer.end_offsets(tps)
                self.seen = sum(ends[tp] - base[tp] for tp in tps)
                self.last = time.time()
        self.done.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()


# --- the bench -----------------------------------------------------------------------------

_VACUUMED: Final = ("syncs", "sync_timers", "outbox", "processed_commands", "sync_history")


@dataclass
class RepeatResult:
    throughput: float
    publish_rate: float
    fixed_rate: float
    fixed: dict[str, float]
    half_rate: float
    half: dict[str, float]
    pgbench_tps: float
    ratio: float
    not_applied: int
    #: CPU microseconds per command by serve, kafka, postgres and the bench, per phase.
    cpu_max: dict[str, float]
    cpu_fixed: dict[str, float]


class Bench:
    def __init__(self, settings: Settings, options: BenchOptions, echo: Echo, workdir: Path):
        self.options = options
        self.echo = echo
        self.workdir = workdir
        self.run_id = secrets.token_hex(4)
        run = self.run_id
        self.settings = settings.model_copy(
            update={
                "commands_topic": f"bench.{run}.commands",
                "lifecycle_topic": f"bench.{run}.lifecycle",
                "results_topic": f"bench.{run}.results",
                "dlq_topic": f"bench.{run}.dlq",
                "consumer_group": f"bench-{run}",
                "client_id": f"synclife-bench-{run}",
            }
        )
        self.schema = f"synclife_bench_{run}"
        self.org_id = ""
        self.namespace_id = ""
        self.api_key = ""
        self.syncs: list[str] = []
        self.paused: dict[str, bool] = {}
        self.cursor = 0
        self.phase = 0
        self.pgbench_rows = 0
        self.notes: list[str] = []
        self._fast: AIOKafkaProducer | None = None
        self._paced: AIOKafkaProducer | None = None

    # --- setup and teardown --------------------------------------------------------------

    async def setup(self) -> None:
        s = self.settings
        self.echo(f"bench run {self.run_id}: topics bench.{self.run_id}.*, schema {self.schema}")
        await _retry(
            "creating topics",
            lambda: stack.ensure_topics(s, s.kafka_bootstrap_servers, lambda _: None),
            self.echo,
        )
        conn = await _retry("connecting to Postgres", lambda: connect(s), self.echo)
        try:
            await migrate(conn)
            org = await create_org(conn, f"bench-{self.run_id}")
            ns = await create_namespace(conn, org["id"], "bench")
            key = await create_key(conn, org["id"], ["syncs:write"], name="synclife bench")
            self.org_id, self.namespace_id, self.api_key = org["id"], ns["id"], key["key"]
        finally:
            await conn.close()
        self._fast = idempotent_producer(s, client_id=f"{s.client_id}-fast", linger_ms=20)
        self._paced = idempotent_producer(s, client_id=f"{s.client_id}-paced", linger_ms=0)
        for producer in (self._fast, self._paced):
            await _retry("starting a producer", producer.start, self.echo)

    async def teardown(self) -> None:
        for producer in (self._fast, self._paced):
            if producer is not None:
                with contextlib.suppress(Exception):
                    await producer.stop()
        if self.options.keep:
            self.echo(f"kept: org {self.org_id}, topics bench.{self.run_id}.*, {self.schema}")
            return
        self.echo("cleaning up (topics, tenant, syncs, scratch schema; --keep keeps them)")
        with contextlib.suppress(Exception):
            conn = await connect(self.settings)
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
                run = self.run_id
                # Whatever a crashed serve left for another relay would recreate the topics.
                await conn.execute("DELETE FROM outbox WHERE topic LIKE $1", f"bench.{run}.%")
                await conn.execute(
                    "DELETE FROM dead_letters WHERE source_topic LIKE $1", f"bench.{run}.%"
                )
                await conn.execute(
                    "DELETE FROM processed_commands WHERE command_id LIKE $1", f"bench-{run}-%"
                )
                await conn.execute(
                    "DELETE FROM sync_history WHERE sync_config_id LIKE $1", f"sync_bench{run}x%"
                )
                if self.org_id:
                    for table in ("syncs", "api_keys", "namespaces", "organizations"):
                        await conn.execute(
                            f"DELETE FROM {table} WHERE internal_id = $1",  # noqa: S608
                            self.org_id,
                        )
            finally:
                await conn.close()
        with contextlib.suppress(Exception):
            admin = AIOKafkaAdminClient(**kafka_options(self.settings))
            await admin.start()
            try:
                s = self.settings
                topics = [s.commands_topic, s.lifecycle_topic, s.results_topic, s.dlq_topic]
                await admin.delete_topics(topics)
            finally:
                await admin.close()

    async def _leaders(self, conn: asyncpg.Connection) -> list[str]:
        """``application_name`` of the relay's and the scheduler's leader sessions."""
        rows = await conn.fetch(
            """SELECT coalesce(a.application_name, '') AS name
               FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0
                 AND l.objid::bigint = ANY($1::bigint[])""",
            [RELAY_LOCK, SCHEDULER_LOCK],
        )
        return [str(r["name"]) for r in rows]

    async def wait_for_no_leader(self) -> None:
        """Another serve on this database would lead the relay and scheduler: wait (1 min)."""
        conn = await connect(self.settings)
        try:
            for attempt in range(30):
                if not await self._leaders(conn):
                    return
                if attempt == 0:
                    self.echo("another synclife serve leads on this database; waiting for it")
                await asyncio.sleep(2)
        finally:
            await conn.close()

    async def wait_for_leadership(self) -> None:
        """Wait (1 min) until the serve under test leads the relay and the scheduler."""
        mine = f":{self.serve.pid}"
        conn = await connect(self.settings)
        try:
            for _ in range(120):
                self.serve.check()
                names = await self._leaders(conn)
                if len(names) == 2 and all(n.endswith(mine) for n in names):
                    return
                if len(names) == 2 and not any(names) and self.serve.says_it_leads():
                    return  # a serve that does not name its sessions (an older version)
                await asyncio.sleep(0.5)
        finally:
            await conn.close()
        note = (
            f"another synclife serve leads the relay or scheduler on this database ({names}): "
            "it published this bench's events, so the figures are not the measured process's"
        )
        self.notes.append(note)
        self.echo(f"WARNING: {note}")

    # --- commands ------------------------------------------------------------------------

    def _headers(self, command_id: str, kind: str, sync_id: str) -> list[tuple[str, bytes]]:
        return command_headers(
            command_id=command_id,
            command_type=kind,
            sync_config_id=sync_id,
            api_key=self.api_key,
            namespace="bench",
            source="synclife-bench",
        )

    def _creates(self, count: int) -> list[Message]:
        self.phase += 1
        out: list[Message] = []
        for i in range(count):
            sync_id = f"sync_bench{self.run_id}x{len(self.syncs) + i:07d}"
            command_id = f"bench-{self.run_id}-{self.phase}-{i}"
            data = {
                "bucket_id": f"bkt_bench_{i % 97}",
                "connection_id": "conn_bench",
                "provider": "s3",
                "source_path": f"bench-bucket/prefix/{i}",
                "created_by_user_id": "user_bench",
                "polling_interval_seconds": POLLING_INTERVAL,
                "metadata": {"team": "bench", "index": i},
            }
            value = json.dumps(data).encode()
            out.append(
                (
                    command_id,
                    sync_id.encode(),
                    value,
                    self._headers(command_id, "sync.create", sync_id),
                )
            )
        return out

    def _pause_resume(self, count: int, scale: int) -> list[Message]:
        """``count`` commands over the first ``scale`` syncs, round robin, alternating each."""
        self.phase += 1
        out: list[Message] = []
        for i in range(count):
            sync_id = self.syncs[self.cursor % scale]
            self.cursor += 1
            command_id = f"bench-{self.run_id}-{self.phase}-{i}"
            if self.paused[sync_id]:
                kind, data = "sync.resume", {"resumed_by_user_id": "user_bench"}
            else:
                kind, data = "sync.pause", {"paused_by_user_id": "user_bench", "reason": "bench"}
            self.paused[sync_id] = not self.paused[sync_id]
            out.append(
                (
                    command_id,
                    sync_id.encode(),
                    json.dumps(data).encode(),
                    self._headers(command_id, kind, sync_id),
                )
            )
        return out

    async def _flood(self, messages: list[Message], what: str) -> tuple[float, float]:
        """Publish as fast as the producer goes; wait for results. Returns (rate, publish rate)."""
        assert self._fast is not None  # noqa: S101 - set up
        producer = self._fast
        topic = self.settings.commands_topic
        target = len(messages)
        watch = ResultCount(self.settings, target)
        await _retry("reading the results topic", watch.start, self.echo)
        try:
            start = time.time()
            futures = [
                await producer.send(topic, key=key, value=value, headers=headers)
                for _, key, value, headers in messages
            ]
            await asyncio.gather(*futures)
            published = time.time()
            await self._wait(watch.done, lambda: f"{what}: {watch.seen}/{target} results", target)
        finally:
            await watch.stop()
        elapsed = watch.last - start
        return target / elapsed, target / max(published - start, 1e-9)

    async def _wait(self, done: asyncio.Event, status: Callable[[], str], count: int) -> None:
        deadline = time.monotonic() + 60 + count / 200  # generous: 200 commands/s at worst
        next_note = time.monotonic() + 5
        while not done.is_set():
            self.serve.check()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 1.0)
            if time.monotonic() > next_note and not done.is_set():
                self.echo(f"  {status()}")
                next_note = time.monotonic() + 5
            if time.monotonic() > deadline:
                raise BenchError(f"timed out: {status()}")

    async def _paced_phase(self, rate: float, seconds: float, scale: int) -> dict[str, float]:
        """Publish at ``rate``; latency to each command's status_changed, and relay lag."""
        assert self._paced is not None  # noqa: S101 - set up
        producer = self._paced
        topic = self.settings.commands_topic
        count = max(1, round(rate * seconds))
        messages = self._pause_resume(count, scale)
        sent_at: dict[str, float] = {}
        latency: list[float] = []
        lags: list[float] = []
        to_decision: list[float] = []
        to_observed: list[float] = []
        done = asyncio.Event()

        def handle(records: list[Any], now: float) -> None:
            for r in records:
                if header(r.headers, "ce_type") != STATUS_CHANGED or r.value is None:
                    continue
                data = json.loads(r.value)
                sent = sent_at.pop(data.get("command_id"), None)
                if sent is None:
                    continue
                latency.append((now - sent) * 1000)
                occurred = datetime.fromisoformat(data["occurred_at"]).timestamp() * 1000
                lags.append(r.timestamp - occurred)
                to_decision.append(occurred - sent * 1000)
                to_observed.append(now * 1000 - r.timestamp)
            if len(latency) >= count:
                done.set()

        tail = TopicTail(self.settings, self.settings.lifecycle_topic, handle)
        await _retry("reading lifecycle events", tail.start, self.echo)
        futures = []
        try:
            start = time.perf_counter()
            i = 0
            while i < count:
                due = min(count, int((time.perf_counter() - start) * rate) + 1)
                while i < due:
                    command_id, key, value, headers = messages[i]
                    sent_at[command_id] = time.time()
                    futures.append(
                        await producer.send(topic, key=key, value=value, headers=headers)
                    )
                    i += 1
                await asyncio.sleep(pacing_delay(start, i, rate, time.perf_counter()))
            offered = count / (time.perf_counter() - start)
            await asyncio.gather(*futures)
            await self._wait(done, lambda: f"{len(latency)}/{count} events", count)
        finally:
            await tail.stop()
        return {
            "commands": count,
            "offered_rate": offered,
            "p50_ms": percentile(latency, 50),
            "p95_ms": percentile(latency, 95),
            "p99_ms": percentile(latency, 99),
            "max_ms": max(latency),
            "relay_lag_p50_ms": percentile(lags, 50),
            "relay_lag_p99_ms": percentile(lags, 99),
            # Where the time goes (p50s): publish -> the batch's decision time, and the
            # relay's send -> observed by the bench's consumer.
            "to_decision_p50_ms": percentile(to_decision, 50),
            "to_observed_p50_ms": percentile(to_observed, 50),
        }

    async def _not_applied(self, phases: range) -> int:
        """Commands of these phases whose outcome was not ``applied`` (should be none)."""
        conn = await connect(self.settings)
        try:
            count = await conn.fetchval(
                """SELECT count(*) FROM processed_commands
                   WHERE command_id LIKE ANY($1::text[]) AND outcome <> 'applied'""",
                [f"bench-{self.run_id}-{phase}-%" for phase in phases],
            )
        finally:
            await conn.close()
        return int(count)

    async def _vacuum(self) -> None:
        """Vacuum the service's tables before measuring: what creating the syncs (or an earlier
        run) left for autovacuum is not done during, and charged to, the phases measured."""
        conn = await connect(self.settings)
        try:
            await conn.execute(f"VACUUM (ANALYZE) {', '.join(_VACUUMED)}")
        finally:
            await conn.close()

    async def _quiesce(self) -> None:
        """Wait until no sync of the bench is due and the outbox is drained (at most 5 min)."""
        conn = await connect(self.settings)
        try:
            deadline = time.monotonic() + 300
            next_note = time.monotonic() + 10
            while True:
                self.serve.check()
                due = await conn.fetchval(
                    """SELECT count(*) FROM syncs WHERE internal_id = $1
                         AND status IN ('PENDING', 'ACTIVE') AND lock_expires_at IS NULL
                         AND next_sync_at <= now()""",
                    self.org_id,
                )
                backlog = await conn.fetchval("SELECT count(*) FROM outbox")
                if not due and not backlog:
                    return
                if time.monotonic() > next_note:
                    self.echo(f"  settling: {due} syncs due, {backlog} outbox rows")
                    next_note = time.monotonic() + 10
                if time.monotonic() > deadline:
                    self.echo("  not settled after 5 min; going on")
                    return
                await asyncio.sleep(0.25)
        finally:
            await conn.close()

    # --- pgbench -------------------------------------------------------------------------

    def _pgbench_path(self) -> str:
        if self.options.pgbench:
            return self.options.pgbench
        found = shutil.which("pgbench")
        if found:
            return found
        candidates = sorted(
            Path("/usr/lib/postgresql").glob("*/bin/pgbench"),
            key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
        )
        if not candidates:
            raise BenchError("pgbench not found: install postgresql-client or pass --pgbench")
        return str(candidates[-1])

    async def _pgbench_setup(self, rows: int) -> None:
        """The baseline's tables, with ``rows`` syncs shaped like the bench's real ones."""
        if rows <= self.pgbench_rows:
            return
        conn = await connect(self.settings)
        try:
            template = await conn.fetchval(
                "SELECT data FROM syncs WHERE sync_config_id = $1", self.syncs[0]
            )
            sch = self.schema
            await conn.execute(
                f"""
                CREATE SCHEMA IF NOT EXISTS "{sch}";
                CREATE TABLE IF NOT EXISTS "{sch}".processed (
                    command_id text PRIMARY KEY, processed_at timestamptz NOT NULL);
                CREATE TABLE IF NOT EXISTS "{sch}".syncs (
                    id bigint PRIMARY KEY, status text NOT NULL, version integer NOT NULL,
                    data jsonb NOT NULL, updated_at timestamptz NOT NULL);
                CREATE TABLE IF NOT EXISTS "{sch}".outbox (
                    id bigserial PRIMARY KEY, topic text NOT NULL, key bytea, value bytea,
                    created_at timestamptz NOT NULL DEFAULT now());
                """
            )
            await conn.execute(
                f"""INSERT INTO "{sch}".syncs
                    SELECT g, 'ACTIVE', 1, $1::jsonb, now() FROM generate_series($2::int, $3) g
                    ON CONFLICT DO NOTHING""",  # noqa: S608 - our own schema name
                template,
                self.pgbench_rows + 1,
                rows,
            )
            await conn.execute(f'VACUUM ANALYZE "{sch}".syncs')
        finally:
            await conn.close()
        self.pgbench_rows = rows

    async def _pgbench(self, rows: int) -> float:
        await self._pgbench_setup(rows)
        sch = self.schema
        script = self.workdir / "per_command.sql"
        script.write_text(
            f"""\\set sid random(1, {rows})
BEGIN;
INSERT INTO "{sch}".processed (command_id, processed_at) VALUES (gen_random_uuid()::text, now());
SELECT status, version, data FROM "{sch}".syncs WHERE id = :sid FOR UPDATE;
UPDATE "{sch}".syncs SET version = version + 1, updated_at = now(),
    status = CASE WHEN status = 'ACTIVE' THEN 'SUSPENDED' ELSE 'ACTIVE' END,
    data = jsonb_set(data, '{{version}}', to_jsonb(version + 1)) WHERE id = :sid;
INSERT INTO "{sch}".outbox (topic, key, value)
    SELECT 'sync.lifecycle', convert_to(id::text, 'UTF8'), convert_to(data::text, 'UTF8')
    FROM "{sch}".syncs WHERE id = :sid;
COMMIT;
""",  # noqa: S608 - the bench's own schema name
            encoding="utf-8",
        )
        conn = await connect(self.settings)
        try:
            await conn.execute(f'TRUNCATE "{sch}".outbox')
        finally:
            await conn.close()
        url = urlsplit(self.settings.database_url.get_secret_value())
        env = dict(os.environ)
        if url.password is not None:
            env["PGPASSWORD"] = unquote(url.password)
        clients = self.options.pgbench_clients
        argv = [
            self._pgbench_path(),
            "-h",
            url.hostname or "localhost",
            "-p",
            str(url.port or 5432),
            "-U",
            unquote(url.username or "postgres"),
            "-n",
            "-M",
            "prepared",
            "-c",
            str(clients),
            "-j",
            str(min(clients, os.cpu_count() or 1)),
            "-T",
            str(max(1, round(self.options.pgbench_seconds))),
            "-f",
            str(script),
            unquote(url.path.lstrip("/")) or "postgres",
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await proc.communicate()
        text = out.decode(errors="replace")
        match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text)
        if proc.returncode != 0 or match is None:
            tail = (err.decode(errors="replace") or text).strip().splitlines()[-5:]
            raise BenchError(f"pgbench failed ({proc.returncode}): {' | '.join(tail)}")
        return float(match.group(1))

    # --- one scale -----------------------------------------------------------------------

    serve: ServeProcess

    async def scale(self, scale: int) -> dict[str, Any]:
        opts = self.options
        log_path = self.workdir / f"serve-{scale}.log"
        profile = None
        if opts.profile:
            profile = opts.profile if len(opts.scales) == 1 else f"{opts.profile}.{scale}"
        await self.wait_for_no_leader()
        load_before = os.getloadavg()[0]
        self.serve = await ServeProcess.start(self.settings, log_path, profile, opts.serve_path)
        self.echo(f"[{scale:,} syncs] serve pid {self.serve.pid} (log {log_path})")
        meter = CpuMeter(self.serve.pid, stack.service_pids(self.settings))
        try:
            await self.wait_for_leadership()
            missing = scale - len(self.syncs)
            create_rate = math.nan
            if missing > 0:
                self.echo(f"[{scale:,} syncs] creating {missing:,} syncs")
                messages = self._creates(missing)
                create_rate, _ = await self._flood(messages, "creating")
                for _, key, _, _ in messages:
                    self.syncs.append(key.decode())
                    self.paused[key.decode()] = False
                self.echo(f"[{scale:,} syncs] created ({create_rate:,.0f}/s); settling")
            await self._quiesce()
            await self._vacuum()
            repeats: list[RepeatResult] = []
            for r in range(1, opts.repeats + 1):
                tag = f"[{scale:,} syncs, run {r}/{opts.repeats}]"
                first_phase = self.phase + 1
                self.echo(f"{tag} max throughput: {opts.commands:,} pause/resume commands")
                messages = self._pause_resume(opts.commands, scale)
                cpu_before = meter.read()
                tput, pub = await self._flood(messages, "throughput")
                cpu_max = meter.per_command(cpu_before, meter.read(), len(messages))
                self.echo(f"{tag}   {tput:,.0f} commands/s (published at {pub:,.0f}/s)")
                self.echo(f"{tag}   {_cpu_line(cpu_max)}")
                await self._quiesce()
                self.echo(f"{tag} latency at {opts.rate:,.0f}/s for {opts.latency_seconds:g}s")
                cpu_before = meter.read()
                fixed = await self._paced_phase(opts.rate, opts.latency_seconds, scale)
                cpu_fixed = meter.per_command(cpu_before, meter.read(), int(fixed["commands"]))
                self.echo(f"{tag}   {_latency_line(fixed)}")
                self.echo(f"{tag}   {_cpu_line(cpu_fixed)}")
                await self._quiesce()
                half_rate = tput / 2
                self.echo(f"{tag} latency at {half_rate:,.0f}/s (50% of max)")
                half = await self._paced_phase(half_rate, opts.latency_seconds, scale)
                self.echo(f"{tag}   {_latency_line(half)}")
                await self._quiesce()
                not_applied = await self._not_applied(range(first_phase, self.phase + 1))
                self.echo(f"{tag} pgbench baseline, {opts.pgbench_clients} clients")
                tps = await self._pgbench(scale)
                self.echo(f"{tag}   {tps:,.0f} tps; ratio {tput / tps:.2f}")
                repeats.append(
                    RepeatResult(
                        throughput=tput,
                        publish_rate=pub,
                        fixed_rate=opts.rate,
                        fixed=fixed,
                        half_rate=half_rate,
                        half=half,
                        pgbench_tps=tps,
                        ratio=tput / tps,
                        not_applied=not_applied,
                        cpu_max=cpu_max,
                        cpu_fixed=cpu_fixed,
                    )
                )
            peak = self.serve.peak_rss_mb()
        finally:
            await self.serve.stop()
        summary = _summarise(scale, repeats, create_rate, peak)
        # Other work on the machine skews every figure: keep the load next to them.
        summary["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        return summary


def _cpu_line(cpu: dict[str, float]) -> str:
    return "CPU per command, us: " + ", ".join(f"{who} {us:,.0f}" for who, us in cpu.items())


def _latency_line(lat: dict[str, float]) -> str:
    return (
        f"p50 {lat['p50_ms']:.1f} ms, p99 {lat['p99_ms']:.1f} ms (p50: publish -> decision "
        f"{lat['to_decision_p50_ms']:.1f}, relay lag {lat['relay_lag_p50_ms']:.1f}, "
        f"send -> observed {lat['to_observed_p50_ms']:.1f})"
    )


def _summarise(
    scale: int, repeats: list[RepeatResult], create_rate: float, peak_rss: float
) -> dict[str, Any]:
    def med(get: Callable[[RepeatResult], float]) -> float:
        return _median([get(r) for r in repeats])

    def spread(get: Callable[[RepeatResult], float]) -> list[float]:
        return [min(get(r) for r in repeats), max(get(r) for r in repeats)]

    median: dict[str, float] = {
        "throughput": med(lambda r: r.throughput),
        "pgbench_tps": med(lambda r: r.pgbench_tps),
        "ratio": med(lambda r: r.ratio),
        "half_rate": med(lambda r: r.half_rate),
        "create_rate": create_rate,
        "peak_rss_mb": peak_rss,
    }
    for name in (
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "relay_lag_p50_ms",
        "relay_lag_p99_ms",
        "to_decision_p50_ms",
        "to_observed_p50_ms",
    ):
        median[f"fixed_{name}"] = med(lambda r, n=name: r.fixed[n])  # type: ignore[misc]
        median[f"half_{name}"] = med(lambda r, n=name: r.half[n])  # type: ignore[misc]
    for who in CPU_USERS:
        for phase in ("max", "fixed"):
            values = [getattr(r, f"cpu_{phase}").get(who) for r in repeats]
            known = [v for v in values if v is not None]
            median[f"cpu_{phase}_{who}_us"] = _median(known) if known else math.nan
    return {
        "syncs": scale,
        "median": median,
        "range": {
            "throughput": spread(lambda r: r.throughput),
            "pgbench_tps": spread(lambda r: r.pgbench_tps),
            "ratio": spread(lambda r: r.ratio),
        },
        "repeats": [asdict(r) for r in repeats],
        "not_applied": sum(r.not_applied for r in repeats),
    }


async def _versions(settings: Settings) -> dict[str, str]:
    out = {"kafka": f"{settings.kafka_version} (SYNCLIFE_KAFKA_VERSION of the local stack)"}
    with contextlib.suppress(Exception):
        conn = await connect(settings)
        try:
            out["postgres"] = str(await conn.fetchval("SHOW server_version"))
        finally:
            await conn.close()
    return out


async def run_bench(settings: Settings, options: BenchOptions, echo: Echo) -> dict[str, Any]:
    """Run every scale of ``options``; the report ``format_table`` prints."""
    started = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="synclife-bench-") as tmp:
        workdir = Path(tmp)
        if options.keep or options.profile:
            workdir = Path(tempfile.mkdtemp(prefix="synclife-bench-"))
        bench = Bench(settings, options, echo, workdir)
        scales: list[dict[str, Any]] = []
        try:
            await bench.setup()
            for scale in sorted(options.scales):
                scales.append(await bench.scale(scale))
        except BenchError:
            for log in sorted(workdir.glob("serve-*.log")):
                echo(f"--- last lines of {log.name} ---")
                for line in log.read_text(errors="replace").splitlines()[-20:]:
                    echo(line)
            raise
        finally:
            await bench.teardown()
        return {
            "date": started.isoformat(timespec="seconds"),
            "machine": machine_info(),
            "versions": await _versions(settings),
            "options": {**asdict(options), "scales": list(options.scales)},
            "settings": {
                "max_batch_records": settings.max_batch_records,
                "relay_batch_size": settings.relay_batch_size,
                "topic_partitions": settings.topic_partitions,
                "db_pool_max_size": settings.db_pool_max_size,
            },
            "scales": scales,
            "notes": bench.notes,
        }


# --- the table -----------------------------------------------------------------------------


def _num(value: float, digits: int = 0) -> str:
    return "-" if math.isnan(value) else f"{value:,.{digits}f}"


def format_table(report: dict[str, Any]) -> str:
    """The report as a plain aligned table, one column per sync count."""
    scales = report["scales"]
    m = report["machine"]
    v = report["versions"]
    repeats = report["options"]["repeats"]
    lines = [
        f"synclife bench, {report['date']}: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), "
        f"{m.get('memory_gib', '?')} GiB, Postgres {v.get('postgres', '?')}, "
        f"Kafka {v['kafka'].split()[0]}; median of {repeats} run(s) [min-max]",
        "",
    ]
    rows: list[tuple[str, list[str]]] = []

    def row(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        rows.append((label, [cell(s) for s in scales]))

    def rng(s: dict[str, Any], name: str, digits: int = 0) -> str:
        lo, hi = s["range"][name]
        return f"{_num(s['median'][name], digits)} [{_num(lo, digits)}-{_num(hi, digits)}]"

    def lat(s: dict[str, Any], prefix: str) -> str:
        md = s["median"]
        return " / ".join(_num(md[f"{prefix}_{p}_ms"], 1) for p in ("p50", "p95", "p99"))

    def lag(s: dict[str, Any], prefix: str) -> str:
        md = s["median"]
        return " / ".join(_num(md[f"{prefix}_relay_lag_{p}_ms"], 1) for p in ("p50", "p99"))

    rate = report["options"]["rate"]
    row("max throughput, commands/s (publish -> result)", lambda s: rng(s, "throughput"))
    row(
        f"pgbench per-command tps ({report['options']['pgbench_clients']} clients)",
        lambda s: rng(s, "pgbench_tps"),
    )
    row("throughput / pgbench", lambda s: rng(s, "ratio", 2))
    row(f"latency at {rate:,.0f}/s, ms p50 / p95 / p99", lambda s: lat(s, "fixed"))
    row("latency at 50% of max, ms p50 / p95 / p99", lambda s: lat(s, "half"))
    row("  (50% of max, commands/s)", lambda s: _num(s["median"]["half_rate"]))
    row(f"relay lag at {rate:,.0f}/s, ms p50 / p99", lambda s: lag(s, "fixed"))
    row("relay lag at 50% of max, ms p50 / p99", lambda s: lag(s, "half"))

    def cpu(s: dict[str, Any], phase: str) -> str:
        return " / ".join(_num(s["median"][f"cpu_{phase}_{who}_us"]) for who in CPU_USERS)

    users = " / ".join(CPU_USERS)
    row(f"CPU us per command at max: {users}", lambda s: cpu(s, "max"))
    row(f"CPU us per command at {rate:,.0f}/s: {users}", lambda s: cpu(s, "fixed"))
    row("serve peak RSS, MB", lambda s: _num(s["median"]["peak_rss_mb"]))
    row("creating the syncs, commands/s", lambda s: _num(s["median"]["create_rate"]))
    row("commands not applied (should be 0)", lambda s: str(s["not_applied"]))

    titles = ["metric", *(f"{s['syncs']:,} syncs" for s in scales)]
    width0 = max(len(titles[0]), *(len(label) for label, _ in rows))
    widths = [
        max(len(titles[i + 1]), *(len(cells[i]) for _, cells in rows)) for i in range(len(scales))
    ]
    lines.append(
        "  ".join(
            [
                titles[0].ljust(width0),
                *(h.rjust(w) for h, w in zip(titles[1:], widths, strict=True)),
            ]
        )
    )
    lines.append("  ".join(["-" * width0, *("-" * w for w in widths)]))
    for label, cells in rows:
        lines.append(
            "  ".join(
                [label.ljust(width0), *(c.rjust(w) for c, w in zip(cells, widths, strict=True))]
            )
        )
    loads = ", ".join(
        f"{s['syncs']:,} syncs: {s['loadavg_1m'][0]:.1f} -> {s['loadavg_1m'][1]:.1f}"
        for s in scales
    )
    lines.append(f"1-minute load average before -> after ({m.get('cpus')} CPUs): {loads}")
    for note in report.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
