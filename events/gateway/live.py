"""Live updates for the console and for API keys: lifecycle events from Kafka, pushed as
server-sent events (the console's ``/console/events``, the API's ``/v1/events``).

Why Kafka and not Postgres: the lifecycle topic is already the ordered record of every change
(per sync, by version), written once by the relay and meant to be read by many; brokers serve
any number of readers from their page cache. Each gateway process runs one consumer (no group:
every partition, from the end, started when its first stream opens) and fans the events out
in memory to its streams, by organization and namespace. Adding gateways or streams adds
no load on Postgres, the one writer whose capacity bounds the service; polling
``sync_history`` instead would cost every gateway a statement per interval, and rows read by
commit time are not in ``occurred_at`` order, so a poll by time could miss one.

An event is reduced to what a row of the console shows (status, holds, version) for a browser,
and given whole to an API subscriber (``full``: the event as published, the sync as the API
shows it, without its fencing token). A subscriber whose queue is full gets ``reset`` (reload,
or read again) rather than blocking the consumer. An event that cannot be shown (another
producer's, or a newer service's) is skipped, for every subscriber alike, and logged without
its content. At most ``MAX_STREAMS`` subscribers per process (503 past it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from aiohttp import web
from aiokafka import AIOKafkaConsumer

from events.contract.http import SyncConfigurationModel
from events.errors import TransientError
from events.kafka import kafka_options, start_client
from events.service.settings import Settings

__all__ = ["RESET", "Hub", "full_event", "holds_of", "serve_stream", "summary"]

log = logging.getLogger("synclife.gateway.live")

#: What a subscriber's queue gets when it fell behind: the page should reload.
RESET: Final[dict[str, Any]] = {"type": "reset"}
_QUEUE: Final = 256
_FETCH_MS: Final = 500
_KEEPALIVE_SECONDS: Final = 15.0  # a comment on an idle stream, so that proxies keep it
#: Streams one gateway process serves at most (each a connection, a queue, a key check).
MAX_STREAMS: Final = 1000

Tenant = tuple[str, str]


def holds_of(sync: dict[str, Any]) -> list[dict[str, Any]]:
    """The sync's pause holds (a document from before holds: its one pause)."""
    holds = sync.get("pause_holds") or []
    if not holds and sync.get("paused"):
        holds = [
            {
                "hold": "pause",
                "reason": sync.get("pause_reason"),
                "paused_at": sync.get("paused_at"),
                "paused_by_user_id": sync.get("paused_by_user_id"),
                "until": None,
            }
        ]
    return [h for h in holds if isinstance(h, dict)]


def summary(event_type: str, data: dict[str, Any]) -> dict[str, Any] | None:
    """What the console shows of a lifecycle event: None for one it does not show."""
    sync = data.get("sync")
    if not isinstance(sync, dict) or not isinstance(data.get("sync_config_id"), str):
        return None
    return {
        "type": event_type,
        "sync_config_id": data["sync_config_id"],
        "bucket_id": data.get("bucket_id"),
        "version": data.get("version"),
        "status": sync.get("status"),
        "paused": bool(sync.get("paused")),
        "locked": sync.get("locked_by_worker_id") is not None,
        "holds": [
            {
                "hold": h.get("hold"),
                "reason": h.get("reason"),
                "by": h.get("paused_by_user_id"),
                "until": h.get("until"),
            }
            for h in holds_of(sync)
        ],
        "actor": data.get("actor"),
        "reason": data.get("reason"),
    }


def _clean(text: str) -> bool:
    """An event id or type a stream's ``id:`` or ``event:`` line can carry."""
    return bool(text) and len(text) <= 256 and text.isprintable()


def full_event(event_id: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """What an API subscriber gets of a lifecycle event: its id, its type and its data, the
    sync as the API shows it (no ``lock_token``: fencing tokens stay off HTTP)."""
    shown = {k: v for k, v in data.items() if k != "lock_token"}
    sync = data.get("sync")
    if isinstance(sync, dict):
        shown["sync"] = SyncConfigurationModel.from_sync(sync).model_dump(mode="json")
    return {"type": "event", "id": event_id, "event": event_type, "data": shown}


Queue = asyncio.Queue[dict[str, Any]]


class Hub:
    """One lifecycle consumer per gateway process, fanning events out to its subscribers
    (each a queue, and whether it wants whole events or the console's summaries)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._subscribers: dict[Tenant, dict[Queue, bool]] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self.closed = False

    async def subscribe(self, tenant: Tenant, *, full: bool = False) -> Queue:
        """A queue of ``tenant``'s events from now on (the consumer positioned first): the
        console's summaries, or whole events (``full_event``) if ``full``."""
        if sum(len(q) for q in self._subscribers.values()) >= MAX_STREAMS:
            raise TransientError(f"this gateway serves {MAX_STREAMS} live streams already")
        await self._start()
        queue: Queue = asyncio.Queue(_QUEUE)
        self._subscribers.setdefault(tenant, {})[queue] = full
        return queue

    def unsubscribe(self, tenant: Tenant, queue: Queue) -> None:
        queues = self._subscribers.get(tenant)
        if queues is not None:
            queues.pop(queue, None)
            if not queues:
                del self._subscribers[tenant]

    async def _start(self) -> None:
        async with self._starting:
            if self.closed:
                raise TransientError("the gateway is stopping")
            if self._consumer is not None:
                return
            topic = self.settings.lifecycle_topic
            consumer = AIOKafkaConsumer(
                topic,  # every partition (no group: the consumer assigns them all itself)
                **kafka_options(self.settings, client_id=f"{self.settings.client_id}-live"),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="latest",
            )
            try:
                await start_client(consumer, self.settings)  # returns once assigned
                assigned = sorted(consumer.assignment())
                await consumer.seek_to_end(*assigned)
                for tp in assigned:  # resolve each position now: events from here on
                    await consumer.position(tp)
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            self._consumer = consumer
            self._task = asyncio.create_task(self._pump(consumer), name="live-lifecycle")

    async def _pump(self, consumer: AIOKafkaConsumer) -> None:
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=_FETCH_MS)
                for records in batches.values():
                    for record in records:
                        self._deliver(record.headers, record.value)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the pages reload; the next one restarts it
            log.warning("live streams' lifecycle consumer stopped: %s", type(exc).__name__)
            self._consumer = None
            for queues in self._subscribers.values():
                for queue in queues:
                    with contextlib.suppress(asyncio.QueueFull):
                        queue.put_nowait(RESET)
            with contextlib.suppress(Exception):
                await consumer.stop()

    def _deliver(self, headers: Any, value: bytes | None) -> None:
        if value is None or not self._subscribers:
            return
        names = {k: v for k, v in headers or ()}
        try:
            event_type = names.get("ce_type", b"").decode()
            event_id = names.get("ce_id", b"").decode()
            data = json.loads(value)
        except (ValueError, UnicodeDecodeError):
            return
        if not isinstance(data, dict):
            return
        tenant = (data.get("internal_id"), data.get("namespace_id"))
        if not all(isinstance(t, str) for t in tenant):
            return
        queues = self._subscribers.get(tenant)  # type: ignore[arg-type]
        if not queues or not (_clean(event_id) and _clean(event_type)):
            return  # an id or a type that would not fit on one line of the stream
        try:
            shown = summary(event_type, data) if not all(queues.values()) else None
            whole = full_event(event_id, event_type, data) if any(queues.values()) else None
        except (ValueError, TypeError, AttributeError) as exc:  # pydantic's errors included
            # Not one this gateway can show: skipped for its subscribers only, the others
            # (and the consumer) go on.
            log.warning("a lifecycle event could not be shown: %s", type(exc).__name__)
            return
        for queue, full in list(queues.items()):
            item = whole if full else shown
            if item is None:
                continue
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(RESET)

    def wake_all(self) -> None:
        """Ends every stream: each subscriber gets None (the gateway stops)."""
        self.closed = True
        for queues in self._subscribers.values():
            for queue in queues:
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(RESET | {"type": "closing"})

    async def close(self) -> None:
        self.wake_all()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 10)
            self._consumer = None


async def serve_stream(
    request: web.Request,
    hub: Hub,
    tenant: Tenant,
    *,
    full: bool,
    render: Callable[[dict[str, Any]], bytes],
    refused: Callable[[], Awaitable[bytes | None]],
    recheck_seconds: float,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """``tenant``'s events as server-sent events until the client leaves: ``ready`` once
    positioned, then each event as ``render`` writes it; ``reset`` (and the end) when the
    subscriber fell behind or the gateway stops. Every ``recheck_seconds`` ``refused`` says
    whether the caller may still read (None) or the last frame to send before the end."""
    queue = await hub.subscribe(tenant, full=full)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front passes each event on at once
            **(headers or {}),
        }
    )
    loop = asyncio.get_running_loop()
    try:
        await response.prepare(request)
        await response.write(b"event: ready\ndata: {}\n\n")
        check_at = loop.time() + recheck_seconds
        while not hub.closed:
            if loop.time() >= check_at:
                if (last := await refused()) is not None:
                    await response.write(last)
                    break
                check_at = loop.time() + recheck_seconds
            wait = max(0.0, min(_KEEPALIVE_SECONDS, check_at - loop.time()))
            try:
                item = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                await response.write(b": keepalive\n\n")
                continue
            if item.get("type") in ("reset", "closing"):
                await response.write(f"event: reset\ndata: {json.dumps(item)}\n\n".encode())
                break
            await response.write(render(item))
    except ConnectionResetError:  # the client went away
        pass
    finally:
        hub.unsubscribe(tenant, queue)
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response
