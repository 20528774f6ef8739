"""What the bench observes of the service's output on Kafka: how many results its results
topic holds (max throughput), how the max-throughput phase's commands were coalesced (its
``sync.status_changed`` events per sync and batch time, read after it), and each paced
command's ``sync.status_changed`` on the lifecycle topic (latency and relay lag)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from events.devtools.bench.errors import BenchError
from events.devtools.loadgen import Command, TopicReader, assign_all
from events.envelope import header
from events.kafka import kafka_options
from events.service.settings import Settings

__all__ = [
    "ResultCount",
    "StatusChanges",
    "SyncWrites",
    "commands_per_write",
    "latency_figures",
    "percentile",
    "tail_split",
    "wait_done",
]

STATUS_CHANGED: Final = b"sync.status_changed"


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_figures(latency: Sequence[float], late: Sequence[float] = ()) -> dict[str, float]:
    """p50 / p95 / p99 / max of ``latency`` (ms, each from a command's scheduled time), and
    when given, how late the pacer handed commands to the producer (``late``, ms after their
    scheduled time: what latency measured from the send would have missed)."""
    out = {
        "p50_ms": percentile(latency, 50),
        "p95_ms": percentile(latency, 95),
        "p99_ms": percentile(latency, 99),
        "max_ms": max(latency) if latency else math.nan,
    }
    if late:
        out["send_late_p50_ms"] = percentile(late, 50)
        out["send_late_p99_ms"] = percentile(late, 99)
        out["send_late_max_ms"] = max(late)
    return out


async def wait_done(
    done: asyncio.Event, count: int, status: Callable[[], str], check: Callable[[], None]
) -> None:
    """Wait for ``done`` (``count`` records expected: 60 s plus 10 ms each at most), calling
    ``check`` (is the process under test alive?) every second; ``BenchError`` on timeout."""
    deadline = time.monotonic() + 60 + count / 100
    while not done.is_set():
        check()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 1.0)
        if time.monotonic() > deadline:
            raise BenchError(f"timed out: {status()}")


def tail_split(
    latency: Sequence[float],
    to_decision: Sequence[float],
    lags: Sequence[float],
    to_observed: Sequence[float],
) -> dict[str, float]:
    """Where the slowest 1% of commands (at least one) spent their time: the median, over
    them, of scheduled send -> decision, relay lag and send -> observed (ms). The lists are
    per command, in the same order."""
    slowest = sorted(range(len(latency)), key=latency.__getitem__, reverse=True)
    tail = slowest[: max(1, math.ceil(len(latency) / 100))] if latency else []
    return {
        "tail_to_decision_ms": percentile([to_decision[i] for i in tail], 50),
        "tail_relay_lag_ms": percentile([lags[i] for i in tail], 50),
        "tail_to_observed_ms": percentile([to_observed[i] for i in tail], 50),
    }


def _consumer(settings: Settings, role: str) -> AIOKafkaConsumer:
    """A consumer of the bench's own, in no group (``client_id`` ending in ``role``)."""
    return AIOKafkaConsumer(
        **kafka_options(settings, client_id=f"{settings.client_id}-{role}"),
        enable_auto_commit=False,
    )


async def _ends(consumer: AIOKafkaConsumer, topic: str) -> dict[TopicPartition, int]:
    """Assign every partition of ``topic`` to ``consumer``: their end offsets now."""
    await assign_all(consumer, topic, at_end=True)
    ends: dict[TopicPartition, int] = await consumer.end_offsets(sorted(consumer.assignment()))
    return ends


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
        consumer = _consumer(self.settings, "count")
        await consumer.start()
        try:
            base = await _ends(consumer, self.settings.results_topic)
            tps = sorted(base)
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


def commands_per_write(changes: Sequence[tuple[bytes | None, bytes | None]]) -> float:
    """Commands per sync row written, from each ``sync.status_changed`` of a phase (every
    command of a max-throughput phase emits one) as its (``ce_subject``, ``ce_time``): a
    change's time is its batch's decision time, so the commands a batch applied to one sync
    share one pair, written as one row. The phase's status changes are assumed to be its
    commands' (the bench keeps the scheduler quiet: a system change committed in a batch's
    time would count as coalesced). NaN for no events."""
    return len(changes) / len(set(changes)) if changes else math.nan


class SyncWrites:
    """How the batches of a phase coalesced its commands: the lifecycle topic's end offsets
    are noted before it (``mark``) and its ``sync.status_changed`` events read up to the ends
    after it (``count``, once the service is quiet). No consumer is open in between: one
    assigned to the topic would fetch the phase's events as they come, taking CPU from the
    service measured."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._marks: dict[TopicPartition, int] = {}

    async def mark(self) -> None:
        consumer = _consumer(self.settings, "writes")
        await consumer.start()
        try:
            self._marks = await _ends(consumer, self.settings.lifecycle_topic)
        finally:
            await consumer.stop()

    async def count(self) -> float:
        """``commands_per_write`` of the events published since ``mark``."""
        consumer = _consumer(self.settings, "writes")
        await consumer.start()
        try:
            consumer.assign(list(self._marks))
            ends = await consumer.end_offsets(list(self._marks))
            for tp, at in self._marks.items():
                consumer.seek(tp, at)
            changes: list[tuple[bytes | None, bytes | None]] = []
            left = {tp for tp in self._marks if ends[tp] > self._marks[tp]}
            deadline = time.monotonic() + 60
            while left:
                if time.monotonic() > deadline:
                    raise BenchError("timed out reading the phase's lifecycle events")
                fetched = await consumer.getmany(timeout_ms=1000)
                for tp, records in fetched.items():
                    for r in records:
                        if r.offset < ends[tp] and header(r.headers, "ce_type") == STATUS_CHANGED:
                            changes.append(
                                (header(r.headers, "ce_subject"), header(r.headers, "ce_time"))
                            )
                left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
            return commands_per_write(changes)
        finally:
            await consumer.stop()


class StatusChanges:
    """Each paced command's latency: from its scheduled send time (its slot at the offered
    rate, so a late pacer or a blocking send counts: no coordinated omission) to the
    ``sync.status_changed`` carrying its id, observed on the lifecycle topic (read from its
    end, on the wall clock: compared with Kafka's and the events' timestamps). ``done`` is set
    once ``count`` have been seen."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.count = count
        self.due_at: dict[str, float] = {}
        self.late: list[float] = []
        self.latency: list[float] = []
        self.lags: list[float] = []
        self.to_decision: list[float] = []
        self.to_observed: list[float] = []
        self.done = asyncio.Event()
        self.reader = TopicReader(
            settings.lifecycle_topic,
            self._handle,
            {
                **kafka_options(settings, client_id=f"{settings.client_id}-tail"),
                "fetch_max_wait_ms": 100,
                "max_partition_fetch_bytes": 4 * 1024 * 1024,
            },
            at_end=True,
            clock=time.time,
        )

    def sent(self, command: Command, due: float) -> None:
        """Called just before ``command`` is handed to the producer; ``due`` its scheduled
        time (wall clock)."""
        self.due_at[command.command_id] = due
        self.late.append((time.time() - due) * 1000)

    def _handle(self, records: list[Any], now: float) -> None:
        for r in records:
            if header(r.headers, "ce_type") != STATUS_CHANGED or r.value is None:
                continue
            data = json.loads(r.value)
            due = self.due_at.pop(data.get("command_id"), None)
            if due is None:
                continue
            self.latency.append((now - due) * 1000)
            occurred = datetime.fromisoformat(data["occurred_at"]).timestamp() * 1000
            # CreateTime: when the relay handed the record to its producer.
            self.lags.append(r.timestamp - occurred)
            self.to_decision.append(occurred - due * 1000)
            self.to_observed.append(now * 1000 - r.timestamp)
        if len(self.latency) >= self.count:
            self.done.set()

    def figures(self) -> dict[str, float]:
        """Latency percentiles, how late the pacer was, and relay lag, in ms."""
        return {
            **latency_figures(self.latency, self.late),
            "relay_lag_p50_ms": percentile(self.lags, 50),
            "relay_lag_p99_ms": percentile(self.lags, 99),
            # Where the time goes (p50s): scheduled send -> the batch's decision time, and the
            # relay's send -> observed by the bench's consumer.
            "to_decision_p50_ms": percentile(self.to_decision, 50),
            "to_observed_p50_ms": percentile(self.to_observed, 50),
            **tail_split(self.latency, self.to_decision, self.lags, self.to_observed),
        }
