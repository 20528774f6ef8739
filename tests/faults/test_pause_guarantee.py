"""The pause guarantee, across restarts of the service: once a pause's result is published, no
``sync.run_requested`` is emitted for that sync until a resume; after the resume, one is.

The service runs as a real process on the real clock, so the test cannot move its clock the
way the integration tests do (and a polling interval is at least 30 s). Instead it makes the
syncs due by setting ``next_sync_at`` in the past directly in Postgres (column and JSON, under
the row lock, without a new version: a test-only shortcut, never something the service does),
before and while the service is down, and their timers too, the paused syncs' included (as if
they had been due when they were paused): so the scheduler reads every paused sync on every
pass, and it is the service's own rules, not a missing timer, that keep them from running.
Control syncs, not paused, are made due the same way and must get a run requested after each
restart: that proves the scheduler did run.
"""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from events.envelope import command_headers
from events.kafka import idempotent_producer
from statemachine import SyncConfiguration
from tests.faults.harness import Fixture, Scenario

pytestmark = pytest.mark.faults

PAUSED = 20
CONTROL = 5
CREATE = {
    "bucket_id": "bkt_pause",
    "connection_id": "conn_pause",
    "provider": "s3",
    "source_path": "bucket/prefix",
    "created_by_user_id": "user_pause",
    "polling_interval_seconds": 30,
}


async def timers_left_due(database_url: str, sync_ids: list[str]) -> int:
    """How many of ``sync_ids`` still have the past timer ``make_due`` gave them (a pass of
    the scheduler that read a sync sets its timer again, from the sync)."""
    conn = await asyncpg.connect(database_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM sync_timers WHERE sync_config_id = ANY($1::text[]) "
                "AND due_at < now() - interval '1 minute'",
                sync_ids,
            )
        )
    finally:
        await conn.close()


async def make_due(database_url: str, sync_ids: list[str]) -> None:
    """Set ``next_sync_at`` and the timer five minutes in the past (test-only: see the module
    docstring)."""
    past = datetime.now(UTC) - timedelta(minutes=5)
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            rows = await conn.fetch(
                "SELECT sync_config_id, data FROM syncs WHERE sync_config_id = ANY($1::text[]) "
                "ORDER BY sync_config_id FOR UPDATE",
                sync_ids,
            )
            for r in rows:
                sync = SyncConfiguration.model_validate_json(r["data"])
                due = sync.model_copy(update={"next_sync_at": past})
                await conn.execute(
                    "UPDATE syncs SET next_sync_at = $2, data = $3::jsonb "
                    "WHERE sync_config_id = $1",
                    r["sync_config_id"],
                    past,
                    due.model_dump_json(),
                )
                # The scheduler finds due syncs by their timer. Every sync's is set due, the
                # paused ones' too (the service keeps theirs NULL, so the scheduler would never
                # even look at them): each pass then reads the paused syncs and must decide,
                # itself, that they get no run.
                await conn.execute(
                    "UPDATE sync_timers SET due_at = $2 WHERE sync_config_id = $1",
                    r["sync_config_id"],
                    past,
                )
    finally:
        await conn.close()


class Driver:
    """Sends commands with a plain producer and reads their results and events back."""

    def __init__(self, sc: Scenario, api_key: str, namespace: str) -> None:
        self.sc = sc
        self.api_key = api_key
        self.namespace = namespace
        self.producer = idempotent_producer(sc.settings, client_id="faults-pause")

    async def send_all(
        self, kind: str, sync_ids: list[str], data: dict[str, Any]
    ) -> dict[str, dict[str, Any]]:
        """One command per sync; returns each sync's result once all are published."""
        ids = {}
        for sid in sync_ids:
            command_id = str(uuid.uuid4())
            ids[command_id] = sid
            await self.producer.send(
                self.sc.settings.commands_topic,
                key=sid.encode(),
                value=json.dumps(data).encode(),
                headers=command_headers(
                    command_id=command_id,
                    command_type=kind,
                    sync_config_id=sid,
                    api_key=self.api_key,
                    namespace="production",
                    source="faults",
                ),
            )
        await self.producer.flush()
        results: dict[str, dict[str, Any]] = {}
        for _ in range(300):
            for m in self.sc.results.messages:
                command_id = m.id.removeprefix("result:")
                if command_id in ids:
                    results[ids[command_id]] = json.loads(m.value)
            if len(results) == len(ids):
                return results
            await asyncio.sleep(0.1)
        raise AssertionError(f"{kind}: {len(results)} of {len(ids)} results")

    def events(self, sync_id: str) -> list[tuple[int, str]]:
        """(version, type) of the sync's events, deduplicated, in topic order."""
        seen: dict[int, str] = {}
        for m in self.sc.lifecycle.messages:
            if m.key == sync_id:
                seen.setdefault(int(m.id.rpartition(":v")[2]), m.headers["ce_type"].decode())
        return list(seen.items())

    def runs_requested(self, sync_id: str) -> list[int]:
        return [v for v, t in self.events(sync_id) if t == "sync.run_requested"]

    async def wait(self, what: str, condition: Any, timeout: float = 30.0) -> None:
        for _ in range(int(timeout * 10)):
            if condition():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}{self.sc.tails()}")


async def test_no_run_requested_while_paused_across_restarts(fx: Fixture, notes: list[str]) -> None:
    sc = Scenario(fx, "pause guarantee", processes=0, settings={"scheduler_interval_seconds": 0.2})
    await sc.open()
    driver = Driver(sc, fx.api_key, fx.namespace)
    await driver.producer.start()
    try:
        serve = sc.serve()
        await sc.start(serve)
        paused = [f"sync_pause_{uuid.uuid4().hex}" for _ in range(PAUSED)]
        control = [f"sync_control_{uuid.uuid4().hex}" for _ in range(CONTROL)]
        created = await driver.send_all("sync.create", paused + control, CREATE)
        assert {r["outcome"] for r in created.values()} == {"applied"}
        # PENDING is due at once: the scheduler requests every sync's first run.
        await driver.wait(
            "first runs requested",
            lambda: all(driver.runs_requested(s) for s in paused + control),
        )

        pauses = await driver.send_all(
            "sync.pause", paused, {"paused_by_user_id": "u1", "reason": "audit"}
        )
        assert {r["outcome"] for r in pauses.values()} == {"applied"}
        pause_version = {sid: int(r["version"]) for sid, r in pauses.items()}

        def after_pause(sid: str) -> list[tuple[int, str]]:
            return [(v, t) for v, t in driver.events(sid) if v > pause_version[sid]]

        made_due = 0
        for how in (signal.SIGKILL, signal.SIGTERM, signal.SIGKILL):
            await make_due(fx.database_url, paused + control)
            await asyncio.sleep(1.0)  # a few scheduler passes with everything due
            before = {s: len(driver.runs_requested(s)) for s in control}
            if how is signal.SIGKILL:
                await serve.kill()
            else:
                await serve.terminate()
            await make_due(fx.database_url, paused + control)  # while it is down, too
            made_due += 2
            await sc.start(serve)
            # The scheduler runs again: each control sync gets another run requested...
            await driver.wait(
                "the control syncs' runs",
                lambda before=before: all(
                    len(driver.runs_requested(s)) > before[s] for s in control
                ),
            )
            await asyncio.sleep(1.0)
            # ...it read every paused sync (their due timers are gone)...
            assert await timers_left_due(fx.database_url, paused) == 0
            # ...and not one paused sync changes at all.
            changed = {sid: after_pause(sid) for sid in paused if after_pause(sid)}
            assert changed == {}, f"paused syncs changed after {how.name}: {changed}"

        resumes = await driver.send_all("sync.resume", paused, {"resumed_by_user_id": "u1"})
        for sid, result in resumes.items():
            assert result["outcome"] == "applied"
            # Due, so the resume requests a run at once: status change, then run requested.
            assert result["events"] == [
                f"{sid}:v{pause_version[sid] + 1}",
                f"{sid}:v{pause_version[sid] + 2}",
            ]
        await driver.wait(
            "the runs the resumes requested",
            lambda: all(
                after_pause(sid)
                == [
                    (pause_version[sid] + 1, "sync.status_changed"),
                    (pause_version[sid] + 2, "sync.run_requested"),
                ]
                for sid in paused
            ),
        )
        await serve.terminate()
        notes.append(
            f"Pause guarantee: {PAUSED} paused syncs made due {made_due} times across 3 restarts "
            f"(SIGKILL, SIGTERM, SIGKILL) with the scheduler running (each of {CONTROL} control "
            f"syncs got a run requested after every restart): 0 runs requested while paused; "
            f"after the resume, {PAUSED} of {PAUSED} got theirs at once."
        )
    finally:
        await driver.producer.stop()
        await sc.close()
