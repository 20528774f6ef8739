"""``Service._apply``'s bounded retries, without I/O: the processor's ``apply_batch`` and
``dead_letter_one`` are replaced by fakes, the pool is a fake one behind the real ``acquire``
(which turns driver errors into ``TransientError``, as on the real stack). A batch that keeps
timing out or conflicting is applied in halves down to single records, and a single record
that still fails is dead-lettered; Postgres out of reach is waited for, never charged to the
batch. The real-stack test is tests/integration/test_batch_split.py."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import asyncpg
import pytest

from events.service import app
from events.service.app import Service
from events.service.processor import BatchStats
from events.service.retry import Backoff
from events.service.settings import Settings


class _Record(NamedTuple):
    topic: str
    partition: int
    offset: int


class _Conn:
    async def fetchval(self, query: str) -> int:
        return 1


class _Pool:
    def __init__(self) -> None:
        self.down = False  # acquiring fails as when Postgres is away

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Conn]:
        if self.down:
            raise ConnectionRefusedError("connection refused")
        yield _Conn()


class _Processor:
    """Fails every batch holding a ``bad`` offset with ``error()``; records the rest."""

    def __init__(self, bad: set[int], error: Any) -> None:
        self.bad = bad
        self.error = error
        self.calls: list[list[int]] = []
        self.applied: list[int] = []
        self.dead: list[tuple[int, str]] = []

    async def apply_batch(
        self, conn: Any, settings: Settings, records: Sequence[_Record], now: Any
    ) -> BatchStats:
        offsets = [r.offset for r in records]
        self.calls.append(offsets)
        if self.bad & set(offsets):
            raise self.error()
        self.applied.extend(offsets)
        return BatchStats()

    async def dead_letter_one(
        self, conn: Any, settings: Settings, record: _Record, reason: str
    ) -> bool:
        self.dead.append((record.offset, reason))
        return True


@pytest.fixture(autouse=True)
def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    """No real waits: every jittered wait draws 0."""
    monkeypatch.setattr(Backoff, "delay", lambda self, failures, rng=None: 0.0)


def _service(processor: _Processor, monkeypatch: pytest.MonkeyPatch) -> Service:
    monkeypatch.setattr(app, "apply_batch", processor.apply_batch)
    monkeypatch.setattr(app, "dead_letter_one", processor.dead_letter_one)
    return Service(Settings(), schedule=False)


def _records(count: int) -> list[_Record]:
    return [_Record("commands", 0, offset) for offset in range(count)]


def _timeout() -> Exception:
    return asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")


def _conflict() -> Exception:
    return asyncpg.exceptions.SerializationError("could not serialize access")


async def test_a_batch_that_keeps_timing_out_is_split_and_its_slow_record_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = _Processor({5}, _timeout)
    service = _service(processor, monkeypatch)
    assert await asyncio.wait_for(service._apply(_Pool(), _records(8)), 10)  # type: ignore[arg-type]
    assert processor.applied == [0, 1, 2, 3, 4, 6, 7]  # in offset order
    assert processor.dead == [(5, "processing_failed: QueryCanceledError")]
    # A batch holding record 5 is halved at its first timeout; record 5 alone is tried
    # MAX_TIMEOUT_ATTEMPTS times.
    failing = [call for call in processor.calls if 5 in call]
    assert failing == [list(range(8)), [4, 5, 6, 7], [4, 5]] + [[5]] * app.MAX_TIMEOUT_ATTEMPTS
    assert service._degraded is None


async def test_a_batch_that_keeps_conflicting_is_split_after_its_conflict_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = _Processor({1}, _conflict)
    service = _service(processor, monkeypatch)
    assert await asyncio.wait_for(service._apply(_Pool(), _records(2)), 10)  # type: ignore[arg-type]
    assert processor.applied == [0]
    assert [offset for offset, _ in processor.dead] == [1]
    attempts = app.MAX_CONFLICT_RETRIES + 1
    assert processor.calls == [[0, 1]] * attempts + [[0]] + [[1]] * attempts


async def test_another_error_splits_a_batch_at_once_and_retries_a_single_record(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = _Processor({0}, lambda: ValueError("a bug"))
    service = _service(processor, monkeypatch)
    assert await asyncio.wait_for(service._apply(_Pool(), _records(2)), 10)  # type: ignore[arg-type]
    assert processor.calls == [[0, 1]] + [[0]] * app.MAX_POISON_ATTEMPTS + [[1]]
    assert processor.dead == [(0, "processing_failed: ValueError")]


async def test_postgres_away_is_waited_for_and_splits_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = _Processor(set(), _timeout)
    service = _service(processor, monkeypatch)
    pool = _Pool()
    pool.down = True
    applying = asyncio.create_task(service._apply(pool, _records(4)))  # type: ignore[arg-type]
    for _ in range(200):  # many more failures than any budget allows
        await asyncio.sleep(0)
    assert not applying.done()
    assert service._degraded == "retrying a batch: ConnectionRefusedError"
    pool.down = False
    assert await asyncio.wait_for(applying, 10)
    assert processor.calls == [[0, 1, 2, 3]]
    assert processor.dead == []


async def test_stopping_leaves_a_failing_batch_for_redelivery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    processor = _Processor({0}, _timeout)
    service = _service(processor, monkeypatch)
    service.stop.set()
    assert not await asyncio.wait_for(service._apply(_Pool(), _records(4)), 10)  # type: ignore[arg-type]
    assert processor.dead == []
    assert processor.calls == [[0, 1, 2, 3]]


async def test_the_batch_and_dead_letter_lines_carry_where_they_are(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The batch's own lines carry its partition and first offset, the dead letter's line its
    record's; none carries a command's ids, and nothing is left bound after the batch."""
    from events.service.observability import _ContextFilter

    processor = _Processor({1}, lambda: ValueError("a bug"))
    service = _service(processor, monkeypatch)
    caplog.handler.addFilter(_ContextFilter())
    with caplog.at_level("WARNING", logger="synclife"):
        assert await asyncio.wait_for(service._apply(_Pool(), _records(2)), 10)  # type: ignore[arg-type]
    where = {
        r.getMessage().split(" (")[0]: (getattr(r, "partition", None), getattr(r, "offset", None))
        for r in caplog.records
    }
    assert where["batch of 2 failed"] == (0, 0)
    assert where["record commands[0]@1 keeps failing"] == (0, 1)
    assert not any(hasattr(r, "command_id") for r in caplog.records)
    caplog.clear()
    logging.getLogger("synclife.test").warning("after the batch")
    (after,) = caplog.records
    assert not hasattr(after, "partition") and not hasattr(after, "offset")
