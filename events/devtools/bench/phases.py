"""The measured phases against one ``serve``: max throughput (every command published at
once, until the results topic holds all their results) and latency at a paced rate (until
every command's ``sync.status_changed`` is observed)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from aiokafka import AIOKafkaProducer

from events.devtools.bench.errors import BenchError, Echo, retry
from events.devtools.bench.observers import ResultCount, StatusChanges
from events.devtools.bench.serve import ServeProcess
from events.devtools.loadgen import Command, send_all, send_paced
from events.service.settings import Settings

__all__ = ["Phases"]


class Phases:
    """Runs phases on ``settings``' topics: ``fast`` lingers (batches for max throughput),
    ``paced`` sends each command at once (latency). Fails if ``serve`` exits meanwhile."""

    def __init__(
        self,
        settings: Settings,
        serve: ServeProcess,
        fast: AIOKafkaProducer,
        paced: AIOKafkaProducer,
        echo: Echo,
    ) -> None:
        self.settings = settings
        self.serve = serve
        self.fast = fast
        self.paced = paced
        self.echo = echo

    async def flood(self, commands: list[Command], what: str) -> tuple[float, float]:
        """Publish as fast as the producer goes; wait for results. Returns (rate, publish rate):
        commands over the time from the first publish to the last result, and to the last
        acknowledgement."""
        target = len(commands)
        watch = ResultCount(self.settings, target)
        await retry("reading the results topic", watch.start, self.echo)
        try:
            start = time.time()
            await send_all(self.fast, self.settings.commands_topic, commands)
            published = time.time()
            await self._wait(watch.done, lambda: f"{what}: {watch.seen}/{target} results", target)
        finally:
            await watch.stop()
        elapsed = watch.last - start
        return target / elapsed, target / max(published - start, 1e-9)

    async def latency(self, commands: list[Command], rate: float) -> dict[str, float]:
        """Publish at ``rate``; latency to each command's status_changed, and relay lag."""
        count = len(commands)
        changes = StatusChanges(self.settings, count)
        await retry("reading lifecycle events", changes.reader.start, self.echo)
        try:
            offered = await send_paced(
                self.paced, self.settings.commands_topic, commands, rate, changes.sent
            )
            await self._wait(changes.done, lambda: f"{len(changes.latency)}/{count} events", count)
        finally:
            await changes.reader.stop()
        return {"commands": count, "offered_rate": offered, **changes.figures()}

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
