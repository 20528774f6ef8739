"""A leader whose unit of work outlasts the leader sessions' idle timeout stays the only leader:
its session is kept alive while it works, so Postgres never ends it and releases its lock
while it still works, and a second leader starts only once the first has stopped."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest

from events.service import db
from events.service import scheduler as scheduler_module
from events.service.db import create_pool
from events.service.processor import BatchStats, apply_system
from events.service.scheduler import Scheduler
from events.service.settings import Settings

pytestmark = pytest.mark.stack

IDLE_TIMEOUT = 2.0  # the leader sessions' idle timeout in this test (10 s in the service)
HOLD = 5.0  # one unit of work: well past the idle timeout


async def test_a_unit_of_work_held_past_the_idle_timeout_has_no_second_leader_beside_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db, "LEADER_IDLE_TIMEOUT_SECONDS", IDLE_TIMEOUT)
    # A lock of this test's own: no other scheduler (another test's service) competes.
    lock = 0x5F5C0000 + secrets.randbelow(2**16)
    working: set[str] = set()
    done: list[str] = []
    beside: list[tuple[str, list[str]]] = []  # (who started, who was still working)

    async def held_pass(conn: Any, settings: Settings, *args: Any, **kwargs: Any) -> BatchStats:
        """A scheduler page of this test's schedulers takes ``HOLD`` seconds and records who
        worked beside whom; another test's service's scheduler passes as usual."""
        name = settings.consumer_group
        if name not in stops:
            return await apply_system(conn, settings, *args, **kwargs)
        if working:
            beside.append((name, sorted(working)))
        working.add(name)
        try:
            await asyncio.sleep(HOLD)
        finally:
            working.discard(name)
        done.append(name)
        return BatchStats()

    monkeypatch.setattr(scheduler_module, "apply_system", held_pass)
    stops = {name: asyncio.Event() for name in ("first", "second")}
    schedulers: dict[str, Scheduler] = {}
    tasks: list[asyncio.Task[None]] = []
    pools = []
    try:
        for name in stops:
            own = settings.model_copy(
                update={"consumer_group": name, "scheduler_interval_seconds": 0.1}
            )
            pool = await create_pool(own)
            pools.append(pool)
            schedulers[name] = Scheduler(own, pool, lock=lock)
            tasks.append(asyncio.create_task(schedulers[name].run(stops[name])))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not done:  # the first leader's first unit of work
            assert loop.time() < deadline, "no leader did any work"
            await asyncio.sleep(0.05)
        first = done[0]
        second = next(name for name in stops if name != first)
        assert beside == [], f"a second leader worked while the first did: {beside}"
        assert not schedulers[second].is_leader

        stops[first].set()  # the first one stops: now the other one leads
        while second not in done:
            assert loop.time() < deadline, "the second scheduler never took over"
            await asyncio.sleep(0.05)
        assert beside == [], f"a second leader worked while the first did: {beside}"
    finally:
        for stop in stops.values():
            stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        for pool in pools:
            await pool.close()
