"""The consumer's lanes: fetch the commands, deal each assigned partition to a lane, build
each lane's batches (taking turns at a light load), commit the offsets of what Postgres
committed (never those of an assignment revoked since), and empty the lanes in a rebalance.
``Service`` (``app``) applies the batches."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError

from events.service.consumer import FetchHold
from events.service.faults import crash_point
from events.service.observability import CONSUMER_LAG
from events.service.processor import Record, UnreadableRecord
from events.service.retry import Backoff, Retrying
from events.service.settings import Settings

__all__ = [
    "FINAL_COMMIT_SECONDS",
    "HEAVY_LANE_FRACTION",
    "TURN_WAIT_SECONDS",
    "Lanes",
    "Rebalance",
]

log = logging.getLogger("synclife.service")

# An offset commit in a rebalance or on SIGTERM waits this long at most.
FINAL_COMMIT_SECONDS = 5.0
#: A lane with at least max_batch_records / this waiting applies its batch without waiting
#: for its turn (see _run_lane).
HEAVY_LANE_FRACTION: Final = 32
#: At a light load a lane waits for its turn this long at most, then applies its batch beside
#: the one in flight (see _run_lane).
TURN_WAIT_SECONDS: Final = 0.003
FETCH_WAIT_SECONDS = 1.0  # after SIGTERM, a fetch still waiting (for an assignment) is cut
# A rebalance waits this long, at most, for the batches in flight to commit.
SETTLE_SECONDS = 10.0
# A failed fetch is tried again after a jittered wait, until Kafka answers or SIGTERM.
FETCH_BACKOFF: Final = Backoff(base=0.25, cap=2.0)
# Looking for a record the client cannot read, each partition is read one record at a time
# until it has none for this long (then the search goes on at the next failed fetch).
WALK_WAIT_MS: Final = 1000


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """A revocation empties the lanes and commits the offsets of what was applied."""

    def __init__(self, service: Lanes) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # Records fetched but not applied are dropped (the next owner, maybe this process
        # again, fetches them from the committed offsets) and batches in flight finish.
        # Everything processed so far is committed in Postgres: commit its offsets too, so
        # the next owner does not redo it (redoing would still be harmless).
        await self.service.settle_lanes()
        # Bounded: aiokafka retries a commit for as long as the coordinator is unreachable,
        # and the group's coordination (and leaving the group on SIGTERM) waits for this.
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.service.commit_offsets(), FINAL_COMMIT_SECONDS)
        finally:
            self.service.revoke(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


@dataclass(eq=False)
class _Lane:
    """Applies the records of its share of the assigned partitions, in order, batch by batch."""

    queue: deque[Record] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False  # a batch is being applied
    idle: asyncio.Event = field(default_factory=asyncio.Event)


class Lanes(ABC):
    """Consume the commands in lanes, batch by batch, and commit their offsets after them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stop = asyncio.Event()
        self._pending: dict[TopicPartition, int] = {}
        # Per partition, how many times it was revoked: a batch fetched under one assignment
        # of its partition adds its offsets only if that assignment is still the current one.
        self._epochs: dict[TopicPartition, int] = {}
        # One offset commit at a time, each with the latest offsets of the current assignment
        # (see revoke): never one going back.
        self._commit_lock = asyncio.Lock()
        self._committer: asyncio.Task[None] | None = None
        self._last_commit = 0.0  # loop time of the last background commit
        self._consumer: AIOKafkaConsumer | None = None
        self._lanes: list[_Lane] = []
        self._room = asyncio.Event()  # set when the lanes took records off their queues
        self._turn = asyncio.Lock()  # held by the lane applying a batch at light load
        self.turn_wait_seconds = TURN_WAIT_SECONDS
        self._hold: FetchHold | None = None  # set once the consumer has started
        # Per partition, the offset after the last record queued under its current assignment.
        self._queued_to: dict[TopicPartition, int] = {}

    @abstractmethod
    async def _apply(self, pool: asyncpg.Pool, records: Sequence[Record]) -> bool:
        """Apply one batch; False if the lane must stop (its records are left uncommitted)."""

    async def _consume(self, consumer: AIOKafkaConsumer, pool: asyncpg.Pool) -> None:
        """Fetch, and apply in ``apply_concurrency`` lanes until ``stop``.

        Each assigned partition belongs to one lane, which applies its records in offset
        order, a batch (one transaction) at a time, and commits their offsets after it: the
        lanes are independent consumers of disjoint partitions, like ``serve`` processes of one
        group, and while one lane waits for Postgres another decides its batch. At a light
        load they take turns instead (``_run_lane``).
        """
        self._lanes = [_Lane() for _ in range(self.settings.apply_concurrency)]
        tasks = [
            asyncio.create_task(self._fetch(consumer), name="fetch"),
            *(
                asyncio.create_task(self._run_lane(lane, pool), name=f"lane-{i}")
                for i, lane in enumerate(self._lanes)
            ),
        ]
        unblock = asyncio.create_task(self._unblock_fetch(tasks[0]), name="unblock-fetch")
        try:
            await asyncio.gather(*tasks)
        finally:
            unblock.cancel()
            # Each lane finishes the batch in flight; what is only queued is redelivered.
            self.stop.set()
            for lane in self._lanes:
                lane.wake.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _unblock_fetch(self, fetch: asyncio.Task[None]) -> None:
        """On SIGTERM, cancel the fetch if it has not seen ``stop`` within a second.

        getmany waits for an assignment with no timeout, so during a rebalance (one that
        waits out a crashed member's session, say) it does not return, and the idle lanes
        wake only when the fetch ends: SIGTERM would wait for the rebalance. Cancelling it
        loses nothing: records it has not returned are not consumed.
        """
        await self.stop.wait()
        await asyncio.sleep(FETCH_WAIT_SECONDS)
        fetch.cancel()

    async def _fetch(self, consumer: AIOKafkaConsumer) -> None:
        try:
            await self._fetch_until_stopped(consumer)
        except asyncio.CancelledError:
            if not self.stop.is_set():  # cancelled by _consume only when stopping
                raise
        finally:
            for lane in self._lanes:  # an idle lane wakes up to see ``stop``
                lane.wake.set()

    async def _fetch_until_stopped(self, consumer: AIOKafkaConsumer) -> None:
        limit = 2 * self.settings.max_batch_records
        failing = Retrying(FETCH_BACKOFF, self.stop)
        while not self.stop.is_set():
            if any(len(lane.queue) >= limit for lane in self._lanes):
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._room.wait(), 0.2)
                continue
            try:
                # Awaited directly, never in a task of its own (asyncio.wait_for): aiokafka
                # checks that no rebalance is under way and returns the records in the same
                # step in which they are queued below. Through a task, a revocation could run
                # in between, empty the lanes, and these later records be applied after the
                # dropped ones were not: the offset commit would then skip those (the fault
                # suite lost four commands that way). _consume unblocks it on SIGTERM instead.
                batches = await consumer.getmany(
                    timeout_ms=200, max_records=self.settings.max_batch_records
                )
            except KafkaError as exc:
                # Until Kafka answers again or SIGTERM: the lanes have nothing else to do.
                log.warning("fetch failed (%s); retrying", type(exc).__name__)
                await failing.wait()
                continue
            except UnicodeDecodeError:
                # aiokafka's record reader decodes header names as UTF-8 and raises on one
                # that is not: the partition would stall there (on every restart too).
                try:
                    found = await self._skip_unreadable(consumer)
                except KafkaError as exc:
                    log.warning("fetch failed (%s); retrying", type(exc).__name__)
                    found = False
                if not found:
                    await failing.wait()
                continue
            failing.reset()
            if not batches:
                continue
            for tp, records in batches.items():
                self._queue(consumer, tp, records)
            self._hold_fetches()
            await self._update_lag(consumer)

    def _queue(
        self, consumer: AIOKafkaConsumer, tp: TopicPartition, records: Sequence[Record]
    ) -> None:
        """Give ``records`` of ``tp`` (in offset order) to the partition's lane."""
        if not records:
            return
        # Partitions are dealt to the lanes in the order of the assignment, which only
        # changes in a rebalance, when the lanes are emptied (settle_lanes).
        order = {p: i for i, p in enumerate(sorted(consumer.assignment()))}
        lane = self._lanes[order.get(tp, tp.partition) % len(self._lanes)]
        lane.queue.extend(records)
        lane.wake.set()
        self._queued_to[tp] = records[-1].offset + 1

    async def _skip_unreadable(self, consumer: AIOKafkaConsumer) -> bool:
        """After a fetch failed on a record the client cannot read: find it, queue it as an
        ``UnreadableRecord`` (dead-lettered and rejected in its turn, its offset committed
        after it) and seek past it. True if it was found.

        The failed fetch may have moved other partitions on past records it then dropped:
        each partition is first put back where its queued records end (else at its committed
        offset). Then each is read one record at a time, the records queued as usual, until
        one fails: the record at that partition's position is the unreadable one. (A control
        batch of a transaction just before it would be named instead: the commands topic has
        no transactional producers.) The records after it in its record batch fail the same
        way (the reader decodes every record of the batch up to the one asked for): each is
        found and dead-lettered in turn."""
        assigned = sorted(consumer.assignment())
        for tp in assigned:
            epoch = self._epochs.get(tp, 0)
            target = self._queued_to.get(tp)
            if target is None:
                target = await consumer.committed(tp)
            if self._epochs.get(tp, 0) != epoch or tp not in consumer.assignment():
                return False  # a rebalance: the positions are the new assignment's
            if target is None:
                await consumer.seek_to_beginning(tp)
            elif await consumer.position(tp) != target:
                consumer.seek(tp, target)
        limit = 2 * self.settings.max_batch_records
        for tp in assigned:
            for _ in range(limit):
                if self.stop.is_set():
                    return False
                epoch = self._epochs.get(tp, 0)
                try:
                    got = await consumer.getmany(tp, timeout_ms=WALK_WAIT_MS, max_records=1)
                except UnicodeDecodeError:
                    offset = await consumer.position(tp)
                    if self._epochs.get(tp, 0) != epoch or tp not in consumer.assignment():
                        return False
                    log.warning(
                        "record %s[%d]@%d cannot be read (header names that are not UTF-8, "
                        "its own or an earlier one's in its batch); dead-lettered",
                        tp.topic,
                        tp.partition,
                        offset,
                    )
                    self._queue(consumer, tp, [UnreadableRecord(tp.topic, tp.partition, offset)])
                    consumer.seek(tp, offset + 1)
                    self._hold_fetches()
                    return True
                if not got:
                    break
                for records in got.values():
                    self._queue(consumer, tp, records)
        self._hold_fetches()
        return False

    async def _run_lane(self, lane: _Lane, pool: asyncpg.Pool) -> None:
        size = self.settings.max_batch_records
        heavy = max(1, size // HEAVY_LANE_FRACTION)
        linger = self.settings.batch_linger_ms / 1000
        while not self.stop.is_set():  # stopping: what is only queued is redelivered
            if not lane.queue:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            if linger and len(lane.queue) < size:
                await asyncio.sleep(linger)  # let more of the lane's records arrive
                if self.stop.is_set():
                    break
            # Few records waiting: the load is light, and the lanes take turns (one transaction
            # at a time) while their records keep arriving: fewer, larger batches and commits,
            # and the CPU left to the rest of the path. Lanes with many records waiting (heavy
            # load) run side by side: one decides while another waits for Postgres. A turn is
            # waited for TURN_WAIT_SECONDS at most: a batch that takes long (a slow commit)
            # then holds up only its own lane's commands.
            turn = len(lane.queue) < heavy and await self._take_turn()
            try:
                if not lane.queue or self.stop.is_set():  # emptied by a rebalance, or stopping
                    continue
                records = [lane.queue.popleft() for _ in range(min(size, len(lane.queue)))]
                # The offset after each partition's last record (a lane's records of one
                # partition are in offset order), and the assignment they were fetched under.
                last = {(r.topic, r.partition): r.offset + 1 for r in records}
                ends = {TopicPartition(*tp): end for tp, end in last.items()}  # one per partition
                epochs = {tp: self._epochs.get(tp, 0) for tp in ends}
                self._room.set()
                lane.busy = True
                lane.idle.clear()
                try:
                    if not await self._apply(pool, records):
                        return  # stopping while Postgres is away: redelivered to the next owner
                    crash_point("apply.after_commit")  # in Postgres; offsets not committed yet
                finally:
                    lane.busy = False
                    lane.idle.set()
                    self._hold_fetches()
            finally:
                if turn:
                    self._turn.release()
            for tp, end in ends.items():
                # A partition revoked while the batch was in flight (and maybe assigned again
                # since) is not this batch's to commit any more: its next owner went on from
                # the offset committed in the revocation, perhaps past this batch already, and
                # committing this batch's offset now could move it back.
                if self._epochs.get(tp, 0) == epochs[tp]:
                    self._pending[tp] = max(self._pending.get(tp, 0), end)
            self._commit_soon()

    async def _take_turn(self) -> bool:
        """Wait for the lane applying a batch at a light load, ``turn_wait_seconds`` at most;
        True if this lane holds the turn now (and releases it after its batch)."""
        try:
            async with asyncio.timeout(self.turn_wait_seconds):
                await self._turn.acquire()
        except TimeoutError:
            return False
        return True

    def _hold_fetches(self) -> None:
        """Fetches wait at the broker (``FetchHold``) while a lane has records or a batch."""
        if self._hold is not None:
            self._hold.set(any(lane.busy or lane.queue for lane in self._lanes))

    async def settle_lanes(self, within: float = SETTLE_SECONDS) -> None:
        """Drop the records not yet applied and wait (bounded) for the batches in flight."""
        for lane in self._lanes:
            lane.queue.clear()
        self._room.set()
        self._hold_fetches()  # freed now if no batch is in flight, else when the last ends
        busy = [lane.idle.wait() for lane in self._lanes if lane.busy]
        if busy:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*busy), within)

    def revoke(self, revoked: Any) -> None:
        """After a revocation's final commit: drop the revoked partitions' pending offsets,
        and those of batches of theirs still in flight (a new epoch), and stop a background
        commit still running (aiokafka retries it until the coordinator answers, then under
        whatever generation is current: it could land after the partitions came back)."""
        for tp in revoked:
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            self._pending.pop(tp, None)
            self._queued_to.pop(tp, None)
        if self._committer is not None and not self._committer.done():
            self._committer.cancel()

    async def commit_offsets(self) -> bool:
        """Commit the offsets of every batch committed in Postgres so far (and wait for it).

        False when Kafka could not take them: they stay pending for the next try.
        """
        async with self._commit_lock:
            return await self._commit_pending()

    def _commit_soon(self) -> None:
        """Commit offsets in the background while the next batch is fetched and applied.

        Only batches already committed in Postgres have pending offsets, so this keeps the
        order "transaction, then offsets"; it just does not wait for Kafka's answer. A crash
        before the commit lands redelivers batches whose command ids are recorded: no effect.
        """
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_while_pending(), name="commit")

    async def _commit_while_pending(self) -> None:
        # Offsets of batches applied meanwhile go out next, one commit per interval at most;
        # a failure waits for the next batch.
        loop = asyncio.get_running_loop()
        interval = self.settings.offset_commit_interval_ms / 1000
        while self._pending:
            wait = self._last_commit + interval - loop.time()
            if wait > 0 and not self.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait)
            self._last_commit = loop.time()
            if not await self.commit_offsets():
                return

    async def _commit_pending(self) -> bool:
        if not self._pending or self._consumer is None:
            return True
        offsets, self._pending = self._pending, {}
        epochs = {tp: self._epochs.get(tp, 0) for tp in offsets}
        # Only partitions still assigned. After a rebalance took one away while its batch was
        # in flight, its offsets are the new owner's business (it redelivers from the last
        # commit, and the records are deduplicated). Committing them raises IllegalStateError,
        # and keeping them pending made every later commit fail the same way: this process
        # then committed nothing until it restarted, and each rebalance redelivered all it
        # had done since.
        assigned = self._consumer.assignment()
        offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        if not offsets:
            return True
        try:
            await self._consumer.commit(offsets)
        except CommitFailedError:
            # The group rebalanced: another member owns these partitions now and will
            # redeliver; the Postgres record of each command id makes that harmless.
            log.warning("offset commit failed after a rebalance; redelivery is deduplicated")
        except KafkaError as exc:
            # Kafka is away: the offsets are committed with the next batch, or the batch is
            # redelivered and deduplicated.
            log.warning("offset commit failed (%s); will retry", type(exc).__name__)
            for tp, offset in offsets.items():
                if self._epochs.get(tp, 0) == epochs[tp]:  # not revoked meanwhile
                    self._pending.setdefault(tp, offset)
            return False
        return True

    async def _update_lag(self, consumer: AIOKafkaConsumer) -> None:
        # position() waits for Kafka when a partition's position is being reset (after a
        # rebalance, while the broker is away): never let a metric hold up the loop.
        with contextlib.suppress(TimeoutError, KafkaError):
            await asyncio.wait_for(self._read_lag(consumer), 1.0)

    async def _read_lag(self, consumer: AIOKafkaConsumer) -> None:
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is None:
                continue
            position = await consumer.position(tp)
            CONSUMER_LAG.labels(str(tp.partition)).set(max(0, highwater - position))
