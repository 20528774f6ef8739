"""``timeit`` microbenchmarks of serve's per-command and per-row paths (not a test).

``python -m tests.micro.timeit_hot_paths [NAME ...]`` prints, for each benchmark, the best of
several runs in microseconds per call. The records are what the bench sends: the contract's
CloudEvents headers as ``command_headers`` builds them, a pause body; outbox headers as the
batch packs them.
"""

from __future__ import annotations

import json
import sys
import timeit
from collections.abc import Callable
from datetime import UTC, datetime

from events.envelope import (
    ce_headers,
    command_headers,
    decode_command,
    pack_headers,
    unpack_headers,
)
from events.service.observability import log_context

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
PACKED = pack_headers(
    ce_headers(
        event_id="0b9f6a8e-2c3d-4e5f-8a9b-0c1d2e3f4a5b",
        event_type="sync.status_changed",
        source="synclife",
        subject=KEY.decode(),
        time=datetime(2026, 12, 5, 8, 52, 13, 123456, tzinfo=UTC),
    )
)


def _decode() -> object:
    return decode_command(KEY, VALUE, HEADERS, MAX_BYTES)


def _log_context() -> None:
    with log_context(command_id="cmd-1", sync_config_id="sync_1", partition=2, offset=41):
        pass


def _unpack() -> object:
    return unpack_headers(PACKED)


BENCHMARKS: dict[str, Callable[[], object]] = {
    "decode_command": _decode,
    "log_context": _log_context,
    "unpack_headers": _unpack,
}


def main(names: list[str]) -> None:
    for name in names or list(BENCHMARKS):
        fn = BENCHMARKS[name]
        number = 20_000
        best = min(timeit.repeat(fn, number=number, repeat=7)) / number
        print(f"{name:20s} {best * 1e6:7.2f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
