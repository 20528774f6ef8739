"""The cluster scenarios' machinery: the suite's own cluster (``stack up --cluster`` on other
ports, in ``.cache/faultcluster``), the faults that only a cluster has (a broker killed or
frozen while the others go on, the Postgres standby promoted), and the cluster fault table.

The scenarios themselves are ``harness.Scenario`` runs (the same load, the same checks) with
topics of three replicas; this module adds what a failover must also keep: the promotion audit
(every command answered before the primary died is on the promoted server).
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime

import asyncpg

from events.devtools import stack
from events.devtools.stack.cluster import (
    kill_broker,
    partition_leaders,
    signal_broker,
    start_broker,
    wait_in_sync,
)
from events.devtools.stack.standby import ensure_pair, kill_primary, promote, walsender_pid
from events.service.settings import Settings
from tests.faults.harness import ROOT, Row, Scenario, machine

CLUSTER_DIR = ROOT / ".cache" / "faultcluster"
CLUSTER_SUMMARY_FILE = ROOT / ".cache" / "faults" / "cluster.md"
# Below Linux's ephemeral range, away from the single-node suite (28092, 28432) and from
# `stack up --cluster`'s defaults (29092, 29432): brokers 27092/94/96 (controllers +1),
# the Postgres primary 27432 and its standby 27433.
KAFKA_PORT = int(os.environ.get("SYNCLIFE_FAULTS_CLUSTER_KAFKA_PORT", "27092"))
POSTGRES_PORT = int(os.environ.get("SYNCLIFE_FAULTS_CLUSTER_POSTGRES_PORT", "27432"))

CLUSTER_ROWS: list[Row] = []
CLUSTER_NOTES: list[str] = []  # lines under the table: brokers back in sync, the control


def cluster_layout() -> stack.Cluster:
    settings = Settings(
        kafka_bootstrap_servers=f"127.0.0.1:{KAFKA_PORT}",
        database_url=f"postgresql://synclife@127.0.0.1:{POSTGRES_PORT}/synclife",  # type: ignore[arg-type]
        stack_dir=str(CLUSTER_DIR),
        topic_partitions=6,
    )
    return stack.Cluster(settings, kafka_port=KAFKA_PORT, postgres_port=POSTGRES_PORT)


async def leading_broker(cluster: stack.Cluster, topic: str, *, but: int | None = None) -> int:
    """The broker that leads most partitions of ``topic`` (not ``but``)."""
    for _ in range(100):
        leaders = Counter(
            n for n in (await partition_leaders(cluster, topic)).values() if n > 0 and n != but
        )
        if leaders:
            return leaders.most_common(1)[0][0]
        await asyncio.sleep(0.2)
    raise AssertionError(f"no broker leads a partition of {topic}")


async def kill_leader(sc: Scenario, cluster: stack.Cluster, *, but: int | None = None) -> int:
    """SIGKILL the broker leading most command partitions; its node id."""
    node = await leading_broker(cluster, sc.settings.commands_topic, but=but)
    await kill_broker(cluster, node)
    return node


def freeze_broker(cluster: stack.Cluster, node: int, frozen: bool) -> None:
    signal_broker(cluster, node, signal.SIGSTOP if frozen else signal.SIGCONT)


async def fail_over(sc: Scenario, cluster: stack.Cluster, *, lag_seconds: float) -> float:
    """The standby falls ``lag_seconds`` behind (its WAL sender frozen), then the primary dies
    (SIGKILL to all its processes) and the standby is promoted at once. Returns the fault's
    time; raises if a command answered before the primary died is not on the promoted server.

    With the synchronous standby, the lag costs commits that wait (none is answered); with an
    asynchronous one, every commit of those seconds is answered and gone after the promotion.
    """
    pair = cluster.postgres
    sender = await walsender_pid(pair)
    os.kill(sender, signal.SIGSTOP)
    at = sc.fault()
    await asyncio.sleep(lag_seconds)
    await kill_primary(pair)  # the frozen WAL sender with it: what it had not sent is gone
    answered = set(sc.answered())  # all published from the old primary (none is writable now)
    await promote(pair)
    conn = await asyncpg.connect(pair.standby_url())
    try:
        kept = await conn.fetchval(
            "SELECT count(*) FROM processed_commands WHERE command_id = ANY($1::text[])",
            sorted(answered),
        )
    finally:
        await conn.close()
    lost = len(answered) - kept
    assert lost == 0, (
        f"{lost} of {len(answered)} commands answered before the failover are not on the "
        "promoted server: acknowledged, then lost"
    )
    return at


async def back_in_sync(sc: Scenario, cluster: stack.Cluster, node: int) -> None:
    """Start a killed broker again and wait until every replica is in sync (noted)."""
    started = time.monotonic()
    await start_broker(cluster, node, lambda _: None)
    await wait_in_sync(cluster)
    CLUSTER_NOTES.append(
        f"{sc.name}: broker {node} started again and every replica in sync after "
        f"{time.monotonic() - started:.1f} s."
    )


async def restore_postgres(cluster: stack.Cluster, *, synchronous: bool = True) -> None:
    """After a failover: the old primary back as the primary, the standby made again from it
    (what the promoted one took is dropped with it), the outbox emptied (rows for the failed
    over scenario's deleted topics would be published for ever)."""
    await ensure_pair(
        cluster.postgres, lambda _: None, synchronous=synchronous, reset_promoted=True
    )
    conn = await asyncpg.connect(cluster.postgres.url())
    try:
        await conn.execute("DELETE FROM outbox")
    finally:
        await conn.close()


# --------------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------------


def lost(row: Row) -> int:
    """Commands without a result and changes that never reached the lifecycle topic."""
    return (row.sent - row.results) + row.events_missing


HEADER = (
    "| scenario | serve processes | faults | commands sent | results | lost | applied twice "
    "| version gaps | same id, other content | duplicates delivered | seconds to recover "
    "| scenario seconds |\n"
    "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
)


def line(row: Row) -> str:
    recover = f"{row.recover_seconds:.1f}" if row.recover_seconds is not None else "-"
    return (
        f"| {row.scenario} | {row.processes} | {row.faults} | {row.sent} | {row.results} "
        f"| {lost(row)} | {row.applied_twice} | {row.version_gaps} | {row.conflicting} "
        f"| {row.redelivered} | {recover} | {row.seconds:.0f} |"
    )


def write_cluster_summary(rows: list[Row], notes: list[str]) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"Cluster fault suite, {when}, on {machine()}.", "", HEADER, *map(line, rows)]
    if notes:
        lines += ["", *notes]
    text = "\n".join(lines) + "\n"
    CLUSTER_SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    CLUSTER_SUMMARY_FILE.write_text(text, encoding="utf-8")
    return text
