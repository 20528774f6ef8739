"""A bulk pause of 5,000 syncs with ``serve`` SIGKILLed twice during it: once inside a chunk's
transaction (``bulk.before_commit``: that chunk's changes are lost and made again), once just
after a committed step (``bulk.after_commit``). Every matched sync is paused exactly once
(one history row and one lifecycle version by the operation), the counts are right, each
sync's versions are gap-free in Postgres and on the topic, and the command has one result.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import asyncpg
import pytest
from ulid import ULID

from events.envelope import command_headers
from tests.faults.harness import Fixture, Scenario
from tests.faults.test_pause_guarantee import CREATE, Driver

pytestmark = pytest.mark.faults

SYNCS = 5000


async def progress(database_url: str, op: str) -> tuple[int, int]:
    """(items done, items pending) of the operation's apply phase (0, 0 before it starts)."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE outcome IS NOT NULL) AS done,
                      count(*) FILTER (WHERE outcome IS NULL) AS pending
               FROM bulk_items WHERE operation_id = $1 AND phase = 'apply'""",
            op,
        )
    finally:
        await conn.close()
    assert row is not None
    return int(row["done"]), int(row["pending"])


async def test_bulk_pause_of_5000_with_serve_killed_twice(fx: Fixture, notes: list[str]) -> None:
    sc = Scenario(
        fx,
        "bulk pause killed twice",
        processes=0,
        hostile=False,
        settings={"scheduler_interval_seconds": 0.5},
    )
    await sc.open()
    driver = Driver(sc, fx.api_key, fx.namespace)
    await driver.producer.start()
    try:
        # serve1 dies inside the 4th chunk's transaction, serve2 right after its 6th step.
        first = sc.serve("serve1", env={"SYNCLIFE_CRASH_POINTS": "bulk.before_commit=@4"})
        await sc.start(first)
        bucket = f"bkt_bulk_{uuid.uuid4().hex[:12]}"
        ids = [f"sync_bulk_{uuid.uuid4().hex}" for _ in range(SYNCS)]
        created = await driver.send_all("sync.create", ids, {**CREATE, "bucket_id": bucket})
        assert {r["outcome"] for r in created.values()} == {"applied"}

        op, command_id = f"bulk_{ULID()}", str(uuid.uuid4())
        data = {"selector": {"bucket_id": bucket}, "reason": "faults", "paused_by_user_id": "u1"}
        await driver.producer.send_and_wait(
            sc.settings.commands_topic,
            key=op.encode(),
            value=json.dumps(data).encode(),
            headers=command_headers(
                command_id=command_id,
                command_type="sync.bulk.pause",
                sync_config_id=op,
                api_key=fx.api_key,
                namespace=fx.namespace,
                source="faults",
            ),
        )
        code = await first.wait_exit(120)
        assert code is not None and code < 0, f"serve1 was not killed{sc.tails()}"
        done1, pending1 = await progress(fx.database_url, op)
        assert 0 < done1 < SYNCS and pending1 == SYNCS - done1, (done1, pending1)

        second = sc.serve("serve2", env={"SYNCLIFE_CRASH_POINTS": "bulk.after_commit=@6"})
        await sc.start(second)
        code = await second.wait_exit(120)
        assert code is not None and code < 0, f"serve2 was not killed{sc.tails()}"
        done2, pending2 = await progress(fx.database_url, op)
        assert done1 < done2 < SYNCS and pending2 == SYNCS - done2, (done1, done2, pending2)

        third = sc.serve("serve3")
        await sc.start(third)
        result = await wait_result(sc, command_id)
        assert result["outcome"] == "applied", result
        assert result["operation_id"] == op
        assert result["counts"] == {"matched": SYNCS, "applied": SYNCS, "noop": 0, "rejected": 0}

        await check_database(fx.database_url, op, ids)
        await check_topic(sc, driver, op, ids)
        await third.terminate()
        results = {m.id for m in sc.results.messages if m.id == f"result:{command_id}"}
        assert results == {f"result:{command_id}"}
        notes.append(
            f"Bulk pause of {SYNCS} syncs, serve SIGKILLed inside a chunk's transaction (at "
            f"{done1} done) and after a committed step (at {done2} done): {SYNCS} of {SYNCS} "
            "paused exactly once, counts right, versions gap-free in Postgres and on the topic."
        )
    finally:
        await driver.producer.stop()
        await sc.close()


async def wait_result(sc: Scenario, command_id: str, timeout: float = 180.0) -> dict[str, Any]:
    for _ in range(int(timeout * 10)):
        for m in sc.results.messages:
            if m.id == f"result:{command_id}":
                found: dict[str, Any] = json.loads(m.value)
                return found
        await asyncio.sleep(0.1)
    raise AssertionError(f"no result for the bulk pause{sc.tails()}")


async def check_database(database_url: str, op: str, ids: list[str]) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        statuses = await conn.fetch(
            "SELECT status, count(*) AS n FROM syncs WHERE sync_config_id = ANY($1) GROUP BY 1",
            ids,
        )
        assert {r["status"]: r["n"] for r in statuses} == {"SUSPENDED": len(ids)}
        by_op = await conn.fetch(
            "SELECT sync_config_id, count(*) AS n FROM sync_history WHERE actor = $1 GROUP BY 1",
            f"bulk:{op}",
        )
        assert len(by_op) == len(ids) and {r["n"] for r in by_op} == {1}
        assert {r["sync_config_id"] for r in by_op} == set(ids)
        gaps = await conn.fetchval(
            """SELECT count(*) FROM (
                   SELECT h.sync_config_id FROM sync_history AS h
                   JOIN syncs AS s USING (sync_config_id)
                   WHERE h.sync_config_id = ANY($1)
                   GROUP BY h.sync_config_id, s.version
                   HAVING count(*) <> s.version OR min(h.version) <> 1
                       OR max(h.version) <> s.version
                       OR count(DISTINCT h.version) <> count(*)) AS bad""",
            ids,
        )
        assert gaps == 0
        items = await conn.fetch(
            "SELECT phase, outcome, count(*) AS n FROM bulk_items WHERE operation_id = $1 "
            "GROUP BY 1, 2",
            op,
        )
        assert [(r["phase"], r["outcome"], r["n"]) for r in items] == [
            ("apply", "applied", len(ids))
        ]
    finally:
        await conn.close()


async def check_topic(sc: Scenario, driver: Driver, op: str, ids: list[str]) -> None:
    """Once the outbox is empty, every version of every sync is on the topic once after
    deduplication, in order, and the operation's two events are there."""
    conn = await asyncpg.connect(sc.fx.database_url)
    try:
        expected = {
            r["sync_config_id"]: r["version"]
            for r in await conn.fetch(
                "SELECT sync_config_id, version FROM syncs WHERE sync_config_id = ANY($1)", ids
            )
        }
    finally:
        await conn.close()

    def by_key() -> dict[str, dict[int, str]]:
        seen: dict[str, dict[int, str]] = {}
        for m in sc.lifecycle.messages:
            version = int(m.id.rpartition(":v")[2])
            seen.setdefault(m.key, {}).setdefault(version, m.headers["ce_type"].decode())
        return seen

    def complete() -> bool:
        seen = by_key()
        return all(len(seen.get(sid, {})) >= expected[sid] for sid in ids) and set(
            seen.get(op, {})
        ) == {1, 2}

    await driver.wait("every event on the topic", complete, timeout=120)
    seen = by_key()
    for sid in ids:
        # In topic order, each version once after deduplication: 1, 2, ... gap-free.
        assert list(seen[sid]) == list(range(1, expected[sid] + 1)), (sid, seen[sid])
    assert seen[op] == {1: "sync.bulk_started", 2: "sync.bulk_completed"}
