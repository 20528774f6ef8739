"""A typed async client for other services: publish commands, await results, read events.

async with SynclifeClient(settings, api_key="sk_...", namespace="production") as client:
    result = await client.pause("sync_01J...", paused_by_user_id="u_1", reason="audit")
    async for event in lifecycle_events(settings, group_id="my-service"):
        ...
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from ulid import ULID

from events.envelope import DERIVED_PREFIX, command_headers, derived_id, header
from events.kafka import idempotent_producer, kafka_options, start_client
from events.messages import CommandResult, LifecycleEvent, is_bulk_event
from events.settings import KafkaSettings
from statemachine.commands import CommandType
from statemachine.durations import until_text

__all__ = ["Event", "SynclifeClient", "lifecycle_events", "new_operation_id", "new_sync_id"]

#: How many rejections under derived ids the client keeps while nobody waits for them yet (one
#: may be read before ``send_and_wait`` has told the client where its command went).
_EARLY_RESULTS = 1024


def new_sync_id() -> str:
    """``sync_`` + a ULID: sortable by creation time, unique without coordination."""
    return f"sync_{ULID()}"


def new_operation_id() -> str:
    """A bulk operation's id: ``bulk_`` + a ULID."""
    return f"bulk_{ULID()}"


class SynclifeClient:
    """Publishes commands with the caller's key and namespace; awaits their results."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        api_key: str,
        namespace: str,
        source: str = "synclife-client",
    ) -> None:
        self.settings = settings
        self._api_key = api_key
        self._namespace = namespace
        self._source = source
        self._producer: AIOKafkaProducer | None = None
        self._results: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[str, asyncio.Future[CommandResult]] = {}
        self._early: OrderedDict[str, CommandResult] = OrderedDict()

    def __repr__(self) -> str:  # the key stays out of logs and tracebacks
        return f"SynclifeClient(namespace={self._namespace!r})"

    async def __aenter__(self) -> SynclifeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect; a refused login raises ``KafkaAuthError`` at once (not retried)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()  # nothing half-started is left behind
            raise

    async def _start(self) -> None:
        self._producer = idempotent_producer(self.settings, client_id=f"{self._source}")
        await start_client(self._producer, self.settings)
        # Results are read from the end of every partition, fixed before anything is sent.
        consumer = self._results = AIOKafkaConsumer(
            **kafka_options(self.settings, client_id=self._source, enable_auto_commit=False)
        )
        await start_client(consumer, self.settings)
        partitions = consumer.partitions_for_topic(self.settings.results_topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(self.settings.results_topic) or set()
        tps = [TopicPartition(self.settings.results_topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        self._reader = asyncio.create_task(self._read_results())

    async def stop(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._results is not None:
            await self._results.stop()
            self._results = None
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _read_results(self) -> None:
        assert self._results is not None  # noqa: S101 - started
        async for message in self._results:
            if message.value is None:
                continue
            result = CommandResult.model_validate_json(message.value)
            future = self._waiting.pop(result.command_id, None)
            if future is not None and not future.done():
                future.set_result(result)
            elif future is None and result.command_id.startswith(
                f"{DERIVED_PREFIX}{self.settings.commands_topic}:"
            ):
                self._early[result.command_id] = result
                if len(self._early) > _EARLY_RESULTS:
                    self._early.popitem(last=False)

    async def send(
        self,
        command_type: CommandType | str,
        sync_config_id: str,
        data: dict[str, Any] | None = None,
        *,
        command_id: str | None = None,
        expected_version: int | None = None,
        wait: bool = True,
        timeout: float = 30.0,
    ) -> CommandResult | None:
        """Publish one command; return its result (or None with ``wait=False``).

        Re-sending with the same ``command_id`` is safe: it has one effect and the same result.
        A command the service cannot authenticate (a revoked or expired key) or decode is
        rejected under the id derived from where it was written (``kafka:<topic>:<partition>:
        <offset>``): that rejection is returned too, its ``command_id`` being the derived id.
        """
        assert self._producer is not None, "use 'async with SynclifeClient(...)'"  # noqa: S101
        command_id = command_id or str(uuid.uuid4())
        kind = CommandType(command_type)
        headers = command_headers(
            command_id=command_id,
            command_type=kind.value,
            sync_config_id=sync_config_id,
            api_key=self._api_key,
            namespace=self._namespace,
            source=self._source,
            expected_version=expected_version,
        )
        future: asyncio.Future[CommandResult] | None = None
        if wait:
            future = asyncio.get_running_loop().create_future()
            self._waiting[command_id] = future
        try:
            written = await self._producer.send_and_wait(
                self.settings.commands_topic,
                key=sync_config_id.encode(),
                value=json.dumps(data or {}).encode(),
                headers=headers,
            )
        except BaseException:
            self._waiting.pop(command_id, None)
            raise
        if future is None:
            return None
        # The rejection of a message the service cannot authenticate comes under this id.
        derived = derived_id(written.topic, written.partition, written.offset)
        early = self._early.pop(derived, None)
        if early is not None and not future.done():
            future.set_result(early)
        else:
            self._waiting[derived] = future
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(command_id, None)
            self._waiting.pop(derived, None)

    # Typed shortcuts, one per lifecycle command.
    async def create(self, sync_config_id: str | None = None, **data: Any) -> CommandResult:
        return await self._must(CommandType.CREATE, sync_config_id or new_sync_id(), data)

    async def update(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.UPDATE, sync_config_id, data)

    async def pause(
        self,
        sync_config_id: str,
        *,
        hold: str | None = None,
        until: str | datetime | timedelta | None = None,
        **data: Any,
    ) -> CommandResult:
        """Place a pause hold: the caller's plain hold, or ``hold`` (a named one). ``until``
        (a ``timedelta``, an aware ``datetime``, ``"2h"``, ``"PT2H"`` or an RFC 3339 time):
        the service releases the hold itself then. The result's ``holds`` lists the labels."""
        if hold is not None:
            data["hold"] = hold
        if until is not None:
            data["until"] = until_text(until)
        return await self._must(CommandType.PAUSE, sync_config_id, data)

    async def resume(
        self,
        sync_config_id: str,
        *,
        hold: str | None = None,
        force: bool | None = None,
        mode: str | None = None,
        run: str | None = None,
        **data: Any,
    ) -> CommandResult:
        """Release the plain holds and ``system:failures``, or ``hold``, or all (``force``:
        scope ``syncs:admin``); ``mode`` ``incremental`` or ``full``, ``run`` ``due`` or
        ``next_interval``. The result's ``holds`` lists the labels left."""
        given = {"hold": hold, "force": force, "mode": mode, "run": run}
        data.update({name: value for name, value in given.items() if value is not None})
        return await self._must(CommandType.RESUME, sync_config_id, data)

    async def activate(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.ACTIVATE, sync_config_id, data)

    async def cancel(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.CANCEL, sync_config_id, data)

    async def archive(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.ARCHIVE, sync_config_id, data)

    async def trigger(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.TRIGGER, sync_config_id, data)

    async def unlock(self, sync_config_id: str, **data: Any) -> CommandResult:
        """Release a stuck run lock (``sync.lock_released``); a noop when nothing is locked."""
        return await self._must(CommandType.UNLOCK, sync_config_id, data)

    # The run protocol, for workers (their key needs the syncs:run scope).
    async def run_start(
        self, sync_config_id: str, *, worker_id: str, lease_seconds: int = 300
    ) -> CommandResult:
        """Take the run lock; the result's ``run`` holds ``run_id`` and ``lock_token``."""
        data = {"worker_id": worker_id, "lease_seconds": lease_seconds}
        return await self._must(CommandType.RUN_START, sync_config_id, data)

    async def run_heartbeat(self, sync_config_id: str, **data: Any) -> CommandResult:
        """Extend the lease; ``result.run["stop_requested"]`` says the sync was paused/cancelled."""
        return await self._must(CommandType.RUN_HEARTBEAT, sync_config_id, data)

    async def run_checkpoint(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.RUN_CHECKPOINT, sync_config_id, data)

    async def run_complete(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.RUN_COMPLETE, sync_config_id, data)

    async def run_fail(self, sync_config_id: str, **data: Any) -> CommandResult:
        return await self._must(CommandType.RUN_FAIL, sync_config_id, data)

    # Bulk operations: every sync of the namespace the selector matches (``bucket_id``,
    # ``connection_id``, ``provider``, ``status``, ``metadata``), each changed as its own
    # version; the result carries ``operation_id`` and ``counts``. The result comes once
    # every matched sync is done: ``timeout`` is long by default.
    async def bulk_pause(
        self,
        selector: dict[str, Any],
        *,
        operation_id: str | None = None,
        timeout: float = 300.0,
        until: str | datetime | timedelta | None = None,
        **data: Any,
    ) -> CommandResult:
        """Pause every matched sync with the hold ``bulk:<operation id>``; ``until`` as
        ``pause``'s (a ``timedelta``, an aware ``datetime``, ``"2h"``, ``"PT2H"``...)."""
        if until is not None:
            data["until"] = until_text(until)
        op = operation_id or new_operation_id()
        return await self._must(CommandType.BULK_PAUSE, op, {"selector": selector, **data}, timeout)

    async def bulk_resume(
        self,
        selector: dict[str, Any],
        *,
        operation_id: str | None = None,
        timeout: float = 300.0,
        **data: Any,
    ) -> CommandResult:
        """Resume every matched sync (the resume fields as ``sync.resume``'s)."""
        op = operation_id or new_operation_id()
        return await self._must(
            CommandType.BULK_RESUME, op, {"selector": selector, **data}, timeout
        )

    async def bulk_undo(
        self, operation_id: str, *, timeout: float = 300.0, **data: Any
    ) -> CommandResult:
        """Release exactly the holds the bulk pause ``operation_id`` placed."""
        return await self._must(CommandType.BULK_UNDO, operation_id, data, timeout)

    async def _must(
        self, kind: CommandType, sync_id: str, data: dict[str, Any], timeout: float = 30.0
    ) -> CommandResult:
        result = await self.send(kind, sync_id, data, timeout=timeout)
        assert result is not None  # noqa: S101 - wait=True
        return result


@dataclass(frozen=True, slots=True)
class Event:
    """One lifecycle event: its CloudEvents id and type, and its typed data."""

    id: str
    type: str
    data: LifecycleEvent
    partition: int
    offset: int


async def lifecycle_events(
    settings: KafkaSettings,
    *,
    group_id: str | None = None,
    from_beginning: bool = False,
    types: Iterable[str] | None = None,
    sync_ids: Iterable[str] | None = None,
    namespace_ids: Iterable[str] | None = None,
    dedupe_window: int = 100_000,
) -> AsyncIterator[Event]:
    """Lifecycle events of syncs as they arrive, each id once (a redelivered event is
    skipped). A bulk operation's own events (``sync.bulk_*``, ``BulkEvent`` data keyed by the
    operation id) are left out; each sync it changed has its own event here.

    With ``group_id`` offsets are committed after each event is yielded and the caller
    returns to the loop; without one the stream starts at the end (or the beginning).
    """
    consumer = AIOKafkaConsumer(
        settings.lifecycle_topic,
        **kafka_options(
            settings,
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning else "latest",
        ),
    )
    type_set = set(types) if types else None
    sync_set = set(sync_ids) if sync_ids else None
    ns_set = set(namespace_ids) if namespace_ids else None
    seen: OrderedDict[str, None] = OrderedDict()
    try:
        await start_client(consumer, settings)
        async for message in consumer:
            event_id = (header(message.headers, "ce_id") or b"").decode()
            event_type = (header(message.headers, "ce_type") or b"").decode()
            if event_id in seen or message.value is None:
                continue
            seen[event_id] = None
            if len(seen) > dedupe_window:
                seen.popitem(last=False)
            if (type_set and event_type not in type_set) or is_bulk_event(event_type):
                continue  # a bulk operation's own events are keyed by it, not by a sync
            data = LifecycleEvent.model_validate_json(message.value)
            if sync_set and data.sync_config_id not in sync_set:
                continue
            if ns_set and data.namespace_id not in ns_set:
                continue
            yield Event(event_id, event_type, data, message.partition, message.offset)
            if group_id is not None:
                await consumer.commit()
    finally:
        await consumer.stop()
