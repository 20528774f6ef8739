"""Exactly-once under faults: each scenario streams thousands of commands over many syncs
through several ``serve`` processes, injects its fault while they flow, then checks that every
command has exactly one effect and one result and every change reached the lifecycle topic
once (after deduplication by id), in version order per sync, with no gap.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time

import pytest

from events.devtools import stack
from events.service.faults import CRASH_POINTS_ENV
from tests.faults.harness import Fixture, Row, Scenario, echo_nothing

pytestmark = pytest.mark.faults


def assert_clean(row: Row) -> None:
    assert row.problems == [], "\n".join(row.problems)
    assert row.sent >= 1000 and row.results == row.sent
    assert (row.applied_twice, row.events_missing, row.version_gaps) == (0, 0, 0)
    # The load's every part ran: workers' runs, hostile messages with their dead letters, and
    # the revoked key's commands on both sides of the revocation (hostile.py checks each).
    assert row.run_commands and row.hostile and row.dead_letters, row
    assert row.revoked_processed and row.revoked_refused, row


async def test_baseline(fx: Fixture) -> None:
    """No fault: the control row of the table."""

    async def nothing(sc: Scenario) -> None:
        await sc.load.done.wait()

    row = await Scenario(fx, "no fault", processes=3, seconds=12).run(nothing)
    assert_clean(row)


async def test_sigkill_repeated(fx: Fixture) -> None:
    """SIGKILL a random serve process every few seconds and start it again."""
    rnd = random.Random(1)

    async def kills(sc: Scenario) -> None:
        last = 0.0
        for _ in range(4):
            await asyncio.sleep(3.0)
            victim = rnd.choice(sc.live)
            last = sc.fault()
            await victim.kill()
            await asyncio.sleep(0.5)
            await sc.start(victim)
        await sc.wait_recovered(last)

    row = await Scenario(fx, "SIGKILL x4", processes=3, seconds=16).run(kills)
    assert_clean(row)


async def test_sigterm(fx: Fixture) -> None:
    """SIGTERM: stop fetching, finish the batch, commit, flush, leave, exit 0 in bounds."""

    async def terms(sc: Scenario) -> None:
        for _ in range(2):
            await asyncio.sleep(4.0)
            victim = sc.live[0]
            at = sc.fault()
            await victim.terminate()  # asserts exit 0 within the bound
            await sc.wait_recovered(at)
            await sc.start(victim)

    row = await Scenario(fx, "SIGTERM x2", processes=3, seconds=14).run(terms)
    assert_clean(row)


async def test_zombie(fx: Fixture) -> None:
    """SIGSTOP a process past the session timeout, then SIGCONT: the relay leader (so its
    leader lock, its partitions and whatever row locks it held are all frozen with it)."""

    async def zombie(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        victim = await sc.relay_leader()
        at = sc.fault()
        victim.signal(signal.SIGSTOP)
        await sc.wait_recovered(at)  # the others take over while it is stopped
        await asyncio.sleep(max(0.0, 15.0 - (time.monotonic() - at)))
        victim.signal(signal.SIGCONT)

    row = await Scenario(fx, "SIGSTOP 15s + SIGCONT", processes=3, seconds=24).run(zombie)
    assert_clean(row)


async def test_postgres_restart(fx: Fixture) -> None:
    """Postgres goes away for a while: serve retries, reports not ready, resumes by itself."""

    async def restart(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        at = sc.fault()
        await stack.stop_postgres(fx.stack, echo_nothing)
        await asyncio.sleep(5.0)
        await stack.start_postgres(fx.stack, echo_nothing)
        back = asyncio.get_running_loop().time()
        await sc.wait_recovered(at)
        assert sc.saw_not_ready(at, at + (back - at) + 5), "readiness never reported the outage"

    row = await Scenario(fx, "Postgres restart", processes=3, seconds=16).run(restart)
    assert_clean(row)


async def test_kafka_restart(fx: Fixture) -> None:
    """The broker goes away for a while: serve retries, reports not ready, resumes by itself."""

    async def restart(sc: Scenario) -> None:
        await asyncio.sleep(4.0)
        at = sc.fault()
        await stack.stop_kafka(fx.stack, echo_nothing)
        await asyncio.sleep(3.0)
        await stack.start_kafka(fx.stack, echo_nothing)
        await sc.wait_recovered(at)
        assert sc.not_ready_seen and max(sc.not_ready_seen) >= at, (
            "readiness never reported the outage"
        )

    # A longer load: the broker is away for ~8 s (stop, 3 s, start), and commands should keep
    # flowing for a while after it is back.
    row = await Scenario(fx, "Kafka broker restart", processes=3, seconds=22).run(restart)
    assert_clean(row)


async def test_scale_1_3_1(fx: Fixture) -> None:
    """Rebalances: one process, then three (two join), then one again (two leave)."""

    async def scale(sc: Scenario) -> None:
        await asyncio.sleep(3.0)
        at = sc.fault()
        joined = await sc.add(2)
        await sc.wait_recovered(at)
        await asyncio.sleep(4.0)
        at = sc.fault()
        await asyncio.gather(*(s.terminate() for s in joined))
        await sc.wait_recovered(at)

    row = await Scenario(fx, "scale 1 -> 3 -> 1", processes=1, seconds=16).run(scale)
    row.processes = "1-3-1"
    assert_clean(row)


async def test_relay_crash(fx: Fixture) -> None:
    """SIGKILL whichever process leads the relay, three times: another takes over; rows it
    had published but not deleted go out again, with the same event ids."""

    async def crashes(sc: Scenario) -> None:
        last = 0.0
        for _ in range(3):
            await asyncio.sleep(3.0)
            victim = await sc.relay_leader()
            last = sc.fault()
            await victim.kill()
            await sc.start(victim)
        await sc.wait_recovered(last)

    row = await Scenario(fx, "relay leader SIGKILL x3", processes=3, seconds=14).run(crashes)
    assert_clean(row)


async def test_crash_points(fx: Fixture) -> None:
    """SIGKILL from inside, at the exact places that matter: before the Postgres commit,
    between it and the offset commit, and in the relay between send and delete (each process
    has one of them; the relay's is on the relay leader). A supervisor restarts the dead."""

    def points(name: str, nth: int) -> dict[str, str]:
        # At the nth pass of each incarnation: every start of the process crashes there once
        # it has done a little work (a random point could miss a process that got its
        # partitions late). The relay drains often: later, so that it is up first.
        return {CRASH_POINTS_ENV: f"{name}=@{nth}"}

    async def supervised(sc: Scenario) -> None:
        relay = sc.serve("relay", points("relay.after_send", 40))
        await sc.start(relay)
        assert await sc.relay_leader() is relay
        await sc.start(
            sc.serve("before", points("apply.before_commit", 5)),
            sc.serve("after", points("apply.after_commit", 5)),
        )
        sc.supervise()
        await sc.load.done.wait()
        if sc.last_crash:
            await sc.wait_recovered(sc.last_crash)

    sc = Scenario(fx, "crash points", processes=0, seconds=16)
    row = await sc.run(supervised)
    hits = sc.crash_points_hit()
    row.processes = "3 (" + ", ".join(f"{k} x{v}" for k, v in sorted(hits.items())) + ")"
    assert_clean(row)
    assert set(hits) == {"apply.before_commit", "apply.after_commit", "relay.after_send"}, hits
