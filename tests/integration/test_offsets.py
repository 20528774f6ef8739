"""The committed offset never goes back (issue 16, hole 8).

A batch still in flight when its partition is revoked (past the rebalance's wait for it) must
not commit its offset later: by then the partition's next owner may have committed further,
and if the partition came back to this process meanwhile, the late commit would be accepted
and move the group's offset back (everything after it redelivered). Two ``Service`` instances
in one group on topics of their own: the first holds a batch in flight (its ``_apply`` waits),
the second joins and takes the partition (its client id sorts first for aiokafka's round-robin
assignor), applies those commands and more and commits past them, then leaves, and the
partition comes back to the first; only then is its batch released."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events.client import new_sync_id
from events.service.app import Service
from events.service.lanes import Lanes
from events.service.processor import Record
from events.service.settings import Settings
from tests.helpers.live import Tenant, running, with_own_topics
from tests.helpers.messages import CREATE, envelope

pytestmark = pytest.mark.stack

WAIT_SECONDS = 60.0  # each step is awaited this long at most (not a timed assertion)


class _Offsets:
    """Samples the group's committed offset of one partition, in the background."""

    def __init__(self, settings: Settings, tp: TopicPartition) -> None:
        self.settings = settings
        self.tp = tp
        self.seen: list[int] = []
        self.changed = asyncio.Event()
        self.admin: AIOKafkaAdminClient | None = None

    async def read(self, admin: AIOKafkaAdminClient) -> int | None:
        """The committed offset now (None: none yet)."""
        offsets = await admin.list_consumer_group_offsets(
            self.settings.consumer_group, partitions=[self.tp]
        )
        committed = offsets.get(self.tp)
        return None if committed is None or committed.offset < 0 else committed.offset

    @contextlib.asynccontextmanager
    async def sampling(self) -> AsyncIterator[_Offsets]:
        admin = self.admin = AIOKafkaAdminClient(
            bootstrap_servers=self.settings.kafka_bootstrap_servers
        )
        await admin.start()

        async def sample() -> None:
            while True:
                offset = await self.read(admin)
                if offset is not None and (not self.seen or self.seen[-1] != offset):
                    self.seen.append(offset)
                    self.changed.set()
                await asyncio.sleep(0.05)

        task = asyncio.create_task(sample())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            admin_last = await self.read(admin)
            if admin_last is not None and self.seen[-1:] != [admin_last]:
                self.seen.append(admin_last)
            await admin.close()

    async def reach(self, offset: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT_SECONDS
        while not self.seen or self.seen[-1] < offset:
            assert loop.time() < deadline, f"committed {self.seen}, waiting for {offset}"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), 1)


async def _until(condition: Any, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_SECONDS
    while not condition():
        assert loop.time() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


async def test_a_batch_finishing_after_its_partition_came_back_never_moves_the_offset_back(
    settings: Settings, tenant: Tenant
) -> None:
    own = await with_own_topics(settings, topic_partitions=1, apply_concurrency=1)
    tp = TopicPartition(own.commands_topic, 0)
    producer = AIOKafkaProducer(bootstrap_servers=own.kafka_bootstrap_servers)
    await producer.start()

    async def send(count: int) -> None:
        for _ in range(count):
            sync_id = new_sync_id()
            await producer.send_and_wait(
                own.commands_topic,
                key=sync_id.encode(),
                value=json.dumps(CREATE).encode(),
                headers=envelope(str(uuid.uuid4()), "sync.create", sync_id, tenant=tenant),
            )

    # Sorted member ids decide the round-robin assignment: the taker's sorts first.
    holder = Service(own.model_copy(update={"client_id": "z-holder"}), schedule=False)
    taker = Service(own.model_copy(update={"client_id": "a-taker"}), schedule=False)
    # The rebalance waits for a batch in flight; this one outlasts the wait (kept short here).
    holder.settle_lanes = functools.partial(Lanes.settle_lanes, holder, 0.5)  # type: ignore[method-assign]
    held, release = asyncio.Event(), asyncio.Event()
    apply = holder._apply

    async def hold_first(pool: Any, records: Sequence[Record]) -> bool:
        if not release.is_set():
            held.set()
            await release.wait()
        return await apply(pool, records)

    holder._apply = hold_first  # type: ignore[method-assign]
    offsets = _Offsets(own, tp)
    try:
        async with offsets.sampling(), running(holder):
            await send(3)  # offsets 0..2: the holder's batch, held
            await asyncio.wait_for(held.wait(), WAIT_SECONDS)
            async with running(taker):
                await _until(
                    lambda: taker._consumer is not None and taker._consumer.assignment() == {tp},
                    "the partition moved to the taker",
                )
                await send(2)  # offsets 3..4
                await offsets.reach(5)  # the taker applied all five and committed past them
            # The taker left the group: the partition comes back to the holder.
            await _until(
                lambda: holder._consumer is not None and holder._consumer.assignment() == {tp},
                "the partition came back to the holder",
            )
            release.set()  # the batch fetched under the first assignment ends now
            await _until(lambda: not holder._lanes[0].busy, "the held batch ended")
            assert await holder.commit_offsets()
            if holder._committer is not None:
                await asyncio.wait([holder._committer])
            assert offsets.admin is not None
            after_release = await offsets.read(offsets.admin)
            await send(1)  # the holder still commits what it applies now
            await offsets.reach(6)
    finally:
        release.set()
        await producer.stop()

    # Read once the held batch ended and its offsets (if any) were committed: not back to 3.
    assert after_release == 5
    # Sampled along the way and read last: it never went back.
    assert offsets.seen == sorted(offsets.seen), offsets.seen
    assert offsets.seen[-1] == 6
