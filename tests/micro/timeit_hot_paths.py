"""``timeit`` microbenchmarks of serve's per-command and per-row paths (not a test).

``python -m tests.micro.timeit_hot_paths [NAME ...]`` prints, for each benchmark, the best of
several runs in microseconds per call. The records are what the bench sends: the contract's
CloudEvents headers as ``command_headers`` builds them, a pause body; outbox headers as the
batch packs them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import timeit
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from events.envelope import (
    ce_headers,
    command_headers,
    decode_command,
)
from events.service.observability import log_context
from events.service.packed_headers import pack_headers, unpack_headers
from events.service.processor.rows import packed_ce_headers
from events.service.relay import OutboxRelay
from events.service.settings import Settings

MAX_BYTES = 1_000_000
KEY = b"sync_0123456789abcdef0123456789ab"
# As ``synclife bench`` sends them (events/devtools/loadgen.py, bench/workload.py).
HEADERS = command_headers(
    command_id="bench-0f3a1c2e-3-12345",
    command_type="sync.pause",
    sync_config_id=KEY.decode(),
    api_key="sk_live_0123456789abcdef0123456789abcdef",
    namespace="ns_bench",
    source="synclife-bench",
)
VALUE = json.dumps({"paused_by_user_id": "user_bench", "reason": "bench"}).encode()
AT = datetime(2026, 12, 5, 8, 52, 13, 123456, tzinfo=UTC)
EVENT_ID = "0b9f6a8e-2c3d-4e5f-8a9b-0c1d2e3f4a5b"
# An event's headers as a batch packs them, and as ``pack_headers`` packs any (a dead letter's).
PACKED = packed_ce_headers(EVENT_ID, "sync.status_changed", KEY.decode(), AT)
PACKED_ANY = pack_headers(
    ce_headers(
        event_id=EVENT_ID,
        event_type="sync.status_changed",
        source="synclife",
        subject=KEY.decode(),
        time=AT,
    )
)


def _decode() -> object:
    return decode_command(KEY, VALUE, HEADERS, MAX_BYTES)


def _log_context() -> None:
    with log_context(command_id="cmd-1", sync_config_id="sync_1", partition=2, offset=41):
        pass


def _pack() -> object:
    return packed_ce_headers(EVENT_ID, "sync.status_changed", KEY.decode(), AT)


def _unpack() -> object:
    return unpack_headers(PACKED)


def _unpack_any() -> object:
    return unpack_headers(PACKED_ANY)


def _relay_rows(count: int, first: int = 0, syncs: int = 200) -> list[dict[str, Any]]:
    """A page of the outbox as the bench leaves it: per command, its lifecycle event (with the
    sync's JSON) and its result, headers as the batch packs them; the commands' syncs go round
    ``syncs`` of them, from the ``first``."""
    rows: list[dict[str, Any]] = []
    for i in range(first, first + count):
        sync = f"sync_{i % syncs:07d}_0123456789abcdef"
        for topic, kind, size in (("events", "sync.status_changed", 1500), ("results", "r", 400)):
            headers = packed_ce_headers(f"{i:08d}-2c3d-4e5f-8a9b-0c1d2e3f4a5b", kind, sync, AT)
            rows.append(
                {
                    "horizon": 1,
                    "id": len(rows) + 1,
                    "topic": topic,
                    "key": sync.encode(),
                    "value": b"v" * size,
                    "headers": headers,
                }
            )
    return rows


def _relay_page(pages: list[list[dict[str, Any]]]) -> float:
    """Seconds per row of the relay's work on the pages read: screen each and queue it on a
    producer (aiokafka's own record batches; sending a batch completes at once)."""

    async def run() -> float:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")

        async def partitions_for(topic: str) -> set[int]:
            return set(range(6))

        async def send_batch(batch: Any, topic: str, *, partition: int) -> Any:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

        producer.partitions_for = partitions_for
        producer.send_batch = send_batch
        relay = OutboxRelay(Settings(lifecycle_topic="events"))
        started = time.perf_counter()
        for rows in pages:
            await relay._send(producer, await relay._screen(None, producer, rows))  # type: ignore[arg-type]
        elapsed = time.perf_counter() - started
        await producer.stop()
        return elapsed / sum(len(rows) for rows in pages)

    return asyncio.run(run())


BENCHMARKS: dict[str, Callable[[], object]] = {
    "decode_command": _decode,
    "log_context": _log_context,
    "packed_ce_headers": _pack,
    "unpack_headers": _unpack,
    "unpack_headers_any": _unpack_any,
}


def main(names: list[str]) -> None:
    if not names or "relay_row" in names:
        # 200 syncs: every key seen before. Cold: each command's sync a new one (the bench at
        # 100,000 syncs, where the relay's cache of keys misses).
        rows = _relay_rows(250)
        best = min(_relay_page([rows] * 40) for _ in range(7))
        print(f"{'relay_row':20s} {best * 1e6:7.2f} us")
        cold = [_relay_rows(250, first=250 * page, syncs=10**7) for page in range(40)]
        best = min(_relay_page(cold) for _ in range(7))
        print(f"{'relay_row (cold)':20s} {best * 1e6:7.2f} us")
    for name in names or list(BENCHMARKS):
        if name == "relay_row":
            continue
        fn = BENCHMARKS[name]
        number = 20_000
        best = min(timeit.repeat(fn, number=number, repeat=7)) / number
        print(f"{name:20s} {best * 1e6:7.2f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
