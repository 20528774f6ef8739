"""``synclife stack up --cluster``: the production layout on one machine, for failover tests.

Three Kafka brokers in one KRaft cluster (each a broker and a controller: a quorum of three
voters survives the loss of one), topics with three replicas and ``min.insync.replicas`` 2,
and a Postgres primary with a synchronous streaming-replication standby (``standby``). The
brokers run from the single node's code (``kafka.ensure_broker``, same jars, formatting and
waiting) with a server.properties of their own and small heaps. Everything lives under
``<stack_dir>/cluster``::

    kafka-<version>/        the jars (fetched once with Maven)
    broker1/ broker2/ broker3/   each broker's server.properties, pid, logs and data
    cluster-id              the KRaft cluster id all three are formatted with
    postgres/ postgres.log  the primary;  standby/postgres/ ...  the standby
    postgres-password       the role ``synclife``'s password (both servers)

Ports: brokers at ``kafka_port``, +2, +4 (each controller one above its broker), the primary
at ``postgres_port``, the standby one above. The environment it returns names all three
brokers and both Postgres servers (``target_session_attrs=read-write``), as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from events.devtools.stack.errors import StackError
from events.service.settings import Settings

from .addresses import ENV_DATABASE_URL, ENV_KAFKA_BOOTSTRAP_SERVERS
from .files import Echo, StackPaths, stack_lock
from .install import require_tool
from .kafka import broker_pid, ensure_broker, fetch_kafka_jars, stop_broker, stored_cluster_id
from .process import pid_alive, wait_until
from .standby import PgPair, ensure_pair, stop_pair
from .topics import ensure_topics

BROKERS = 3
REPLICAS = 3
MIN_INSYNC = 2
# Three JVMs on a small machine: small heaps (each broker holds little data).
CLUSTER_KAFKA_HEAP = "384m"
DEFAULT_KAFKA_PORT = 29092
DEFAULT_POSTGRES_PORT = 29432


@dataclass(frozen=True)
class Cluster:
    """Where the cluster is: its stack dir and ports."""

    settings: Settings
    kafka_port: int = DEFAULT_KAFKA_PORT
    postgres_port: int = DEFAULT_POSTGRES_PORT

    @property
    def paths(self) -> StackPaths:
        single = StackPaths.from_settings(self.settings)
        return dataclasses.replace(single, root=single.root / "cluster")

    def broker_paths(self, node: int) -> StackPaths:
        return dataclasses.replace(self.paths, kafka_home_name=f"broker{node}")

    def broker_port(self, node: int) -> int:
        return self.kafka_port + 2 * (node - 1)

    @property
    def nodes(self) -> list[int]:
        return list(range(1, BROKERS + 1))

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{self.broker_port(n)}" for n in self.nodes)

    @property
    def postgres(self) -> PgPair:
        return PgPair(self.paths, self.postgres_port)

    def env(self) -> dict[str, str]:
        return {
            ENV_KAFKA_BOOTSTRAP_SERVERS: self.bootstrap,
            ENV_DATABASE_URL: self.postgres.url(),
        }

    def client_settings(self) -> Settings:
        """The settings, pointed at the cluster."""
        return self.settings.model_copy(
            update={"kafka_bootstrap_servers": self.bootstrap, "kafka_heap": CLUSTER_KAFKA_HEAP}
        )


def broker_properties(cluster: Cluster, node: int) -> str:
    """One broker's server.properties (PLAINTEXT only; the cluster is for failover tests)."""
    port = cluster.broker_port(node)
    voters = ",".join(f"{n}@127.0.0.1:{cluster.broker_port(n) + 1}" for n in cluster.nodes)
    return f"""\
# Written by `synclife stack up --cluster` before every start.
process.roles=broker,controller
node.id={node}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{port + 1}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={cluster.broker_paths(node).kafka_data}

# Every partition on three brokers; a write acknowledged (acks=all) is on at least two.
default.replication.factor={REPLICAS}
min.insync.replicas={MIN_INSYNC}
offsets.topic.replication.factor={REPLICAS}
transaction.state.log.replication.factor={REPLICAS}
transaction.state.log.min.isr={MIN_INSYNC}
share.coordinator.state.topic.replication.factor={REPLICAS}
share.coordinator.state.topic.min.isr={MIN_INSYNC}
# Never elect a replica that is behind: that would drop acknowledged writes.
unclean.leader.election.enable=false
# A follower that stops fetching leaves the in-sync set after 10 s (default 30 s); a broker
# that stops heartbeating is fenced by the controllers after 9 s (the default).
replica.lag.time.max.ms=10000
broker.session.timeout.ms=9000
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10

group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
num.partitions=1
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
log.retention.hours=24
log.segment.bytes=67108864
log.retention.check.interval.ms=300000
"""


async def cluster_up(
    cluster: Cluster, echo: Echo, *, reset_promoted: bool = False
) -> dict[str, str]:
    """Start (or reuse) the three brokers and the Postgres pair, create the topics (three
    replicas); return the environment that points synclife at them. After a failover (the
    standby promoted) this refuses (``PromotedStandbyError``) unless ``reset_promoted``."""
    paths = cluster.paths
    paths.root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    async with stack_lock(paths, echo):
        await require_tool("java", "default-jre-headless", echo)
        await fetch_kafka_jars(paths, echo)
        cluster_id = _cluster_id(cluster)
        for node in cluster.nodes:
            home = cluster.broker_paths(node).kafka_home
            home.mkdir(parents=True, exist_ok=True)
            (home / "cluster-id").write_text(cluster_id + "\n", encoding="utf-8")
        tasks = [
            *(start_broker_unlocked(cluster, n, echo) for n in cluster.nodes),
            ensure_pair(cluster.postgres, echo, reset_promoted=reset_promoted),
        ]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        for extra in errors[1:]:
            echo(f"also failed: {extra}")
        if errors:
            raise errors[0]
        await ensure_topics(cluster.client_settings(), cluster.bootstrap, echo, replicas=REPLICAS)
    echo(f"cluster ready ({time.monotonic() - started:.1f}s)")
    return cluster.env()


async def cluster_down(cluster: Cluster, echo: Echo) -> None:
    """Stop the brokers and both Postgres servers; their data stays for the next up."""
    paths = cluster.paths
    if not paths.root.is_dir():
        echo(f"nothing to stop: no cluster at {paths.root}")
        return
    async with stack_lock(paths, echo):
        await asyncio.gather(
            *(stop_broker(cluster.broker_paths(n), echo) for n in cluster.nodes),
            stop_pair(cluster.postgres, echo),
        )


def _cluster_id(cluster: Cluster) -> str:
    """The KRaft cluster id all brokers are formatted with, generated once."""
    return stored_cluster_id(cluster.paths.root / "cluster-id")


async def start_broker_unlocked(cluster: Cluster, node: int, echo: Echo) -> None:
    """Start (or find running) one broker; return once it answers."""
    await ensure_broker(
        cluster.client_settings(),
        cluster.broker_paths(node),
        cluster.broker_port(node),
        lambda line: echo(f"broker {node}: {line}"),
        properties=broker_properties(cluster, node),
    )


async def start_broker(cluster: Cluster, node: int, echo: Echo) -> None:
    """Start one broker again (after a fault); return once it answers."""
    async with stack_lock(cluster.paths, echo):
        await start_broker_unlocked(cluster, node, echo)


def signal_broker(cluster: Cluster, node: int, sig: signal.Signals) -> int:
    """Send ``sig`` to one broker (SIGKILL, SIGSTOP, SIGCONT); its pid."""
    pid = broker_pid(cluster.broker_paths(node))
    if pid is None:
        raise StackError(f"broker {node} does not run")
    os.kill(pid, sig)
    return pid


async def kill_broker(cluster: Cluster, node: int) -> None:
    """SIGKILL one broker and wait until it is gone."""
    pid = signal_broker(cluster, node, signal.SIGKILL)
    if not await wait_until(lambda: not pid_alive(pid), 15.0):
        raise StackError(f"broker {node} (pid {pid}) survived SIGKILL")
    cluster.broker_paths(node).kafka_pid_file.unlink(missing_ok=True)


async def _describe(cluster: Cluster, topics: list[str] | None) -> list[dict[str, Any]]:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=cluster.bootstrap, client_id="synclife-cluster", request_timeout_ms=5000
    )
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
        return described
    finally:
        await admin.close()


async def partition_leaders(cluster: Cluster, topic: str) -> dict[int, int]:
    """Partition: the node that leads it (-1 while it has no leader)."""
    described = await _describe(cluster, [topic])
    return {int(p["partition"]): int(p["leader"]) for t in described for p in t["partitions"]}


async def wait_in_sync(cluster: Cluster, within: float = 120.0) -> float:
    """Wait until every replica of every partition (internal topics too) is in sync again;
    the seconds it took."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    last = "not asked yet"
    while True:
        with contextlib.suppress(Exception):  # a broker may be on its way back: ask again
            described = await _describe(cluster, None)
            behind = [
                f"{t['topic']}/{p['partition']}"
                for t in described
                for p in t["partitions"]
                if set(p["isr"]) != set(p["replicas"])
            ]
            if described and not behind:
                return loop.time() - started
            last = f"{len(behind)} partitions out of sync, e.g. {behind[:3]}"
        if loop.time() - started > within:
            raise StackError(f"the brokers are not in sync after {within:.0f}s ({last})")
        await asyncio.sleep(0.5)
