"""The local broker: a single-node Apache Kafka in KRaft mode, run from its jars (fetched once
with Maven) with a server.properties of our own; formatted once, started detached, waited for,
stopped. Only a broker this stack started (its pid file) is ever restarted or stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import re
import secrets
import shutil
import signal
import time
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from events.devtools.stack.errors import StackError
from events.kafka import kafka_options, start_client
from events.service.settings import Settings

from .addresses import first_host_port
from .files import Echo, StackPaths, resource_text, write_if_changed
from .install import require_tool
from .process import (
    file_tail,
    pid_alive,
    port_open,
    proc_cmdline,
    read_pid,
    run,
    spawn_detached,
    wait_until,
)

# The SCRAM user of the SASL_PLAINTEXT listener (Kafka port + SASL_PORT_OFFSET).
KAFKA_SCRAM_USER = "synclife"
SASL_PORT_OFFSET = 2

KAFKA_READY_TIMEOUT = 90.0
MAVEN_TIMEOUT = 900.0
KAFKA_STOP_TIMEOUT = 30.0


async def ensure_broker(
    settings: Settings, paths: StackPaths, port: int, echo: Echo, properties: str | None = None
) -> None:
    """Start the broker (jars fetched, storage formatted if need be), or reuse one that runs
    (ours is restarted if its server.properties changed); return once it answers.

    ``properties``: the server.properties to run with (the cluster's brokers); by default the
    single node's."""
    bootstrap = f"127.0.0.1:{port}"
    started = time.monotonic()
    pid = broker_pid(paths)
    if pid is None and await port_open("127.0.0.1", port):
        echo(f"something already answers at {bootstrap} (not started by this stack): reusing it")
        await wait_for_broker(bootstrap, KAFKA_READY_TIMEOUT)
        echo(f"Kafka ready at {bootstrap}")
        return
    if properties is None:
        properties = _kafka_properties(paths, port)
    if pid is not None:
        # Started with this very file (an older `up` may have rewritten it since: look too).
        on_disk = _read_text(paths.kafka_properties)
        if _started_with(paths) == _digest(properties) and on_disk == properties:
            await wait_for_broker(bootstrap, KAFKA_READY_TIMEOUT, pid=pid, paths=paths)
            echo(f"Kafka already up at {bootstrap} (pid {pid})")
            return
        # E.g. a listener was added: the broker reads server.properties only when it starts.
        echo(f"Kafka (pid {pid}) runs with an older server.properties: restarting it...")
        await stop_broker(paths, echo)

    java = await require_tool("java", "default-jre-headless", echo)
    await fetch_kafka_jars(paths, echo)
    _write_kafka_config(paths, properties)
    await _format_kafka_storage(paths, java, echo)
    echo(f"starting Kafka {paths.kafka_version}...")
    pid = _spawn_kafka(paths, java, settings.kafka_heap)
    paths.kafka_started_with.write_text(_digest(properties) + "\n", encoding="utf-8")
    await wait_for_broker(bootstrap, KAFKA_READY_TIMEOUT, pid=pid, paths=paths)
    echo(f"Kafka ready at {bootstrap} (pid {pid}, {time.monotonic() - started:.1f}s)")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""


def _started_with(paths: StackPaths) -> str | None:
    """The digest of the server.properties the running broker was started with, if known."""
    try:
        return paths.kafka_started_with.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


async def fetch_kafka_jars(paths: StackPaths, echo: Echo) -> None:
    """The broker's jars into ``kafka-<version>/libs`` with Maven, unless they are there."""
    version = paths.kafka_version
    marker = paths.kafka_libs / f"kafka_2.13-{version}.jar"
    if marker.is_file():
        return
    mvn = await require_tool("mvn", "maven", echo)
    echo(f"downloading Kafka {version} jars (once) with Maven into {paths.kafka_libs}...")
    started = time.monotonic()
    paths.kafka_dist.mkdir(parents=True, exist_ok=True)
    pom = paths.kafka_dist / "pom.xml"
    pom.write_text(resource_text("kafka-pom.xml"), encoding="utf-8")
    staging = paths.kafka_dist / "libs.partial"
    shutil.rmtree(staging, ignore_errors=True)
    await run(
        [
            mvn,
            "-q",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-Dkafka.version={version}",
            f"-Dlibs.dir={staging}",
        ],
        what=f"mvn dependency:copy-dependencies (Kafka {version})",
        within=MAVEN_TIMEOUT,
        cwd=paths.kafka_dist,
    )
    if not (staging / marker.name).is_file():
        raise StackError(f"Maven finished but {marker.name} is not in {staging}")
    shutil.rmtree(paths.kafka_libs, ignore_errors=True)
    staging.rename(paths.kafka_libs)  # atomic: a half-finished download is never used
    count = sum(1 for _ in paths.kafka_libs.glob("*.jar"))
    echo(f"Kafka {version}: {count} jars ({time.monotonic() - started:.1f}s)")


def _write_kafka_config(paths: StackPaths, properties: str) -> None:
    """(Re)write server.properties and the log4j2 config."""
    paths.kafka_home.mkdir(parents=True, exist_ok=True)
    paths.kafka_logs.mkdir(parents=True, exist_ok=True)
    write_if_changed(paths.kafka_properties, properties)
    write_if_changed(paths.kafka_log4j, resource_text("log4j2.xml"))


def _kafka_properties(paths: StackPaths, port: int) -> str:
    """server.properties; the ports follow the settings (controller +1, SASL listener +2)."""
    controller_port = port + 1
    sasl_port = port + SASL_PORT_OFFSET
    scram_login = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return f"""\
# Written by `synclife stack up` before every start: change the settings, not this file.
process.roles=broker,controller
node.id=1
# A static single-voter quorum: the controller endpoint comes from this file at every start,
# so a changed port needs no reformat (the dynamic form records it in the log at format time).
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port},\
SASL_PLAINTEXT://127.0.0.1:{sasl_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_PLAINTEXT://127.0.0.1:{sasl_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,\
SASL_PLAINTEXT:SASL_PLAINTEXT
log.dirs={paths.kafka_data}

# A second client listener for trying transport security: SCRAM logins of users created
# with kafka.admin.ConfigCommand (`synclife stack up` creates `{KAFKA_SCRAM_USER}`). No authorizer:
# once logged in, a user may do anything, as on the PLAINTEXT listener.
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config={scram_login}
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config={scram_login}

# One broker: every internal topic has one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
# Fewer internal partitions than the default 50: this runs on small CI machines.
offsets.topic.num.partitions=10
transaction.state.log.num.partitions=10

# Tests start consumer groups all the time; don't wait 3 s for more members.
group.initial.rebalance.delay.ms=0
# Topics are created explicitly (`synclife stack up`), never by a typo.
auto.create.topics.enable=false
num.partitions=1

# A development broker: small threads, short retention, small segments.
num.network.threads=2
num.io.threads=4
log.retention.hours=24
log.segment.bytes=67108864
log.retention.check.interval.ms=300000
"""


def stored_cluster_id(path: Path) -> str:
    """The cluster id in ``path``, generated once (Kafka's Uuid: 16 random bytes, base64url,
    no padding)."""
    try:
        stored = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        return stored
    while True:
        candidate = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not candidate.startswith("-"):  # Kafka's own generator avoids these too
            break
    path.write_text(candidate + "\n", encoding="utf-8")
    return candidate


async def _format_kafka_storage(paths: StackPaths, java: str, echo: Echo) -> None:
    if (paths.kafka_data / "meta.properties").is_file():
        return
    cluster_id = stored_cluster_id(paths.kafka_cluster_id)
    echo(f"formatting the Kafka log dir (once), cluster id {cluster_id}...")
    await run(
        [
            java,
            "-Xmx256m",
            "-XX:+UseSerialGC",
            *_kafka_jvm_properties(paths),
            "-cp",
            f"{paths.kafka_libs}/*",
            "kafka.tools.StorageTool",
            "format",
            "--cluster-id",
            cluster_id,
            "--config",
            str(paths.kafka_properties),
            "--ignore-formatted",
        ],
        what="kafka.tools.StorageTool format",
        within=180,
    )


def _kafka_jvm_properties(paths: StackPaths) -> list[str]:
    return [
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={paths.kafka_log4j}",
        f"-Dkafka.logs.dir={paths.kafka_logs}",
        f"-XX:ErrorFile={paths.kafka_home}/hs_err_pid%p.log",
    ]


def _spawn_kafka(paths: StackPaths, java: str, heap: str) -> int:
    """Start the broker detached (own session, output to kafka.out) and record its pid."""
    argv = [
        java,
        f"-Xmx{heap}",
        f"-Xms{_initial_heap(heap)}",
        "-XX:+UseSerialGC",
        "-XX:+ExitOnOutOfMemoryError",
        *_kafka_jvm_properties(paths),
        "-cp",
        f"{paths.kafka_libs}/*",
        "kafka.Kafka",
        str(paths.kafka_properties),
    ]
    pid = spawn_detached(argv, paths.kafka_out)
    paths.kafka_pid_file.write_text(f"{pid}\n", encoding="utf-8")
    return pid


def _initial_heap(max_heap: str) -> str:
    """``128m``, or the maximum heap when that is smaller (the JVM refuses Xms > Xmx)."""
    match = re.fullmatch(r"(\d+)([kKmMgG]?)", max_heap.strip())
    if match is None:
        raise StackError(f"kafka_heap {max_heap!r} is not a JVM size such as 512m or 1g")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[match[2].lower()]
    return "128m" if int(match[1]) * scale >= 128 << 20 else max_heap.strip()


def broker_pid(paths: StackPaths) -> int | None:
    """The pid of the broker this stack started, if it still runs."""
    pid = read_pid(paths.kafka_pid_file)
    if pid is None or not pid_alive(pid):
        return None
    cmdline = proc_cmdline(pid)
    if cmdline is not None and (
        "kafka.Kafka" not in cmdline or str(paths.kafka_properties) not in cmdline
    ):
        return None  # the pid was recycled by something else
    return pid


async def wait_for_broker(
    bootstrap: str,
    within: float,
    *,
    pid: int | None = None,
    paths: StackPaths | None = None,
    settings: Settings | None = None,
) -> None:
    """Wait until the broker answers a metadata request with at least one broker.

    With ``settings``, connects as they say (SASL, TLS); a refused login fails at once.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    host, port = first_host_port(bootstrap, default_port=9092)
    last_error = "nothing listens yet"
    while True:
        if pid is not None and not pid_alive(pid):
            raise StackError(f"Kafka (pid {pid}) exited while starting.{broker_log_tail(paths)}")
        # Probe the port first: aiokafka logs an ERROR for every refused bootstrap.
        if await port_open(host, port):
            try:
                async with asyncio.timeout(max(1.0, min(10.0, deadline - loop.time()))):
                    brokers = await _kafka_broker_count(bootstrap, settings)
                if brokers > 0:
                    return
                last_error = "metadata lists no brokers yet"
            except (KafkaError, OSError, TimeoutError) as e:
                last_error = f"{type(e).__name__}: {e}"
        if loop.time() >= deadline:
            raise StackError(
                f"Kafka did not answer at {bootstrap} within {within:.0f}s "
                f"(last: {last_error}).{broker_log_tail(paths)}"
            )
        await asyncio.sleep(0.5)


async def _kafka_broker_count(bootstrap: str, settings: Settings | None = None) -> int:
    if settings is None:
        admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, client_id="synclife-stack", request_timeout_ms=5000
        )
    else:
        admin = AIOKafkaAdminClient(
            **kafka_options(
                settings,
                bootstrap_servers=bootstrap,
                client_id="synclife-stack",
                request_timeout_ms=5000,
            )
        )
    try:
        if settings is None:
            await admin.start()
        else:
            await start_client(admin, settings)
        cluster: dict[str, Any] = await admin.describe_cluster()
        return len(cluster.get("brokers") or [])
    finally:
        await admin.close()


def broker_log_tail(paths: StackPaths | None) -> str:
    """The last lines of the broker's logs, for an error message (empty without ``paths``)."""
    if paths is None:
        return ""
    parts = [
        file_tail(paths.kafka_logs / "server.log", f"last lines of {paths.kafka_logs}/server.log"),
        file_tail(paths.kafka_out, f"last lines of {paths.kafka_out}"),
    ]
    return "".join(p for p in parts if p)


async def stop_broker(paths: StackPaths, echo: Echo) -> None:
    """Stop the broker this stack started: SIGTERM, SIGKILL after ``KAFKA_STOP_TIMEOUT``."""
    pid = broker_pid(paths)
    if pid is None:
        echo("Kafka: not running (nothing this stack started)")
        paths.kafka_pid_file.unlink(missing_ok=True)
        return
    echo(f"stopping Kafka (pid {pid})...")
    os.kill(pid, signal.SIGTERM)
    if not await wait_until(lambda: not pid_alive(pid), KAFKA_STOP_TIMEOUT):
        echo(f"Kafka did not stop within {KAFKA_STOP_TIMEOUT:.0f}s: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not await wait_until(lambda: not pid_alive(pid), 10.0):
            raise StackError(f"Kafka (pid {pid}) survived SIGKILL")
    paths.kafka_pid_file.unlink(missing_ok=True)
    echo("Kafka stopped")
