"""The local stack behind ``synclife stack up|down|status``: Kafka and Postgres without Docker.

``up`` either checks the services named by the environment (when both
``SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS`` and ``SYNCLIFE_DATABASE_URL`` are set) or starts, or
reuses, a single-node Apache Kafka in KRaft mode and a PostgreSQL server, all kept under
``settings.stack_dir`` (default ``.cache/stack``). Either way it creates the topics and returns
the two environment variables that point synclife at the services.

Layout of the stack dir (absolute, resolved against the working directory)::

    kafka-<version>/pom.xml, libs/     the broker's jars, fetched once with Maven
    kafka/server.properties, cluster-id, kafka.pid, kafka.out, logs/, data/
    kafka/server.properties.sha256     what the running broker was started with (a changed
                                       server.properties restarts the broker this stack started)
    kafka-scram-password               0600, generated once: the SCRAM user ``synclife`` of the
                                       SASL_PLAINTEXT listener (Kafka port + 2)
    postgres/                          the data dir (or under /var/tmp, see ``postgres-location``)
    postgres-run/                      the Unix socket directory
    postgres.log
    postgres-password                  0600, generated once; only ever shown in the returned URL
    .lock                              serialises concurrent ``up``/``down`` calls

The broker has two client listeners: PLAINTEXT on the configured port (what synclife uses by
default) and SASL_PLAINTEXT with SCRAM-SHA-256/512 on that port + 2, for trying transport
security (``scram_credentials``). Inter-broker and controller traffic stay PLAINTEXT.

``down`` stops only what this stack started (the pid file, the data dir's postmaster) and keeps
all data, so the next ``up`` is fast. Progress goes to ``echo``; no password ever does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import os
import pwd
import re
import secrets
import shutil
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from pydantic import SecretStr

from events.errors import StackError
from events.kafka import kafka_options, start_client
from events.service.db import postgres_ssl
from events.service.settings import Settings

from .addresses import (
    DB_NAME,
    DB_USER,
    ENV_DATABASE_URL,
    ENV_KAFKA_BOOTSTRAP_SERVERS,
    first_host_port,
    local_kafka_port,
    local_postgres_port,
    pg_url,
    redact_url,
)
from .files import Echo, StackPaths, create_secret, read_secret, resource_text, write_if_changed
from .install import find_postgres_bin_dir, postgres_bin_dir, require_tool
from .process import (
    RunAs,
    file_tail,
    pid_alive,
    pid_exists,
    port_open,
    proc_cmdline,
    read_pid,
    run,
    supplementary_groups,
    wait_until,
)

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_KAFKA_BOOTSTRAP_SERVERS",
    "Echo",
    "ScramUser",
    "StackError",
    "StackPaths",
    "down",
    "ensure_topics",
    "external_env",
    "local_env",
    "scram_credentials",
    "start_kafka",
    "start_postgres",
    "status",
    "stop_kafka",
    "stop_postgres",
    "up",
]

# The SCRAM user of the SASL_PLAINTEXT listener (Kafka port + SASL_PORT_OFFSET).
KAFKA_SCRAM_USER = "synclife"
KAFKA_SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_SCRAM_ITERATIONS = 8192
SASL_PORT_OFFSET = 2

KAFKA_READY_TIMEOUT = 90.0
POSTGRES_READY_TIMEOUT = 60.0
MAVEN_TIMEOUT = 900.0
LOCK_TIMEOUT = 900.0
KAFKA_STOP_TIMEOUT = 30.0


@dataclass(frozen=True)
class PgLayout:
    """The Postgres directories; ``base`` is the stack dir or a /var/tmp fallback."""

    base: Path

    @property
    def data(self) -> Path:
        return self.base / "postgres"

    @property
    def socket_dir(self) -> Path:
        return self.base / "postgres-run"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"


def external_env() -> dict[str, str] | None:
    """Both service variables when both are set in the environment, else ``None``."""
    kafka = os.environ.get(ENV_KAFKA_BOOTSTRAP_SERVERS, "").strip()
    database = os.environ.get(ENV_DATABASE_URL, "").strip()
    if kafka and database:
        return {ENV_KAFKA_BOOTSTRAP_SERVERS: kafka, ENV_DATABASE_URL: database}
    return None


def local_env(settings: Settings) -> dict[str, str]:
    """The environment that points synclife at the local stack (needs its password file)."""
    paths = StackPaths.from_settings(settings)
    kafka_port = local_kafka_port(settings)
    pg_port = local_postgres_port(settings)
    password = read_password(paths)
    if password is None:
        raise StackError(
            f"no Postgres password file at {paths.pg_password_file}: run `synclife stack up`"
        )
    return _local_env(kafka_port, pg_port, password)


async def up(settings: Settings, echo: Echo, *, use_environment: bool = True) -> dict[str, str]:
    """Make Kafka and Postgres answer, create the topics, return the env that points at them.

    With both ``SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS`` and ``SYNCLIFE_DATABASE_URL`` set, nothing
    is started: the function waits for those services and returns them. Otherwise it starts,
    or reuses, the local single-node Kafka and Postgres. Safe to call again and concurrently.

    ``use_environment=False`` ignores those variables and always starts (or reuses) the local
    stack that ``settings`` describe (its ports and ``stack_dir``): the fault suite runs a stack
    of its own next to the shared one this way.
    """
    external = external_env() if use_environment else None
    if external is not None:
        return await _up_external(settings, external, echo)
    return await _up_local(settings, echo)


async def down(settings: Settings, echo: Echo) -> None:
    """Stop the Kafka and Postgres that this stack started; their data stays for the next up."""
    paths = StackPaths.from_settings(settings)
    if not paths.root.is_dir():
        echo(f"nothing to stop: no stack dir at {paths.root}")
        return
    async with _stack_lock(paths, echo):
        await asyncio.gather(stop_broker(paths, echo), stop_postmaster(paths, echo))


async def stop_kafka(settings: Settings, echo: Echo) -> None:
    """Stop only the broker of the local stack ``settings`` describe (SIGTERM: a clean shutdown)."""
    paths = StackPaths.from_settings(settings)
    async with _stack_lock(paths, echo):
        await stop_broker(paths, echo)


async def start_kafka(settings: Settings, echo: Echo) -> None:
    """Start (or find running) only the broker of that local stack; return once it answers."""
    paths = StackPaths.from_settings(settings)
    port = local_kafka_port(settings)
    async with _stack_lock(paths, echo):
        await ensure_broker(settings, paths, port, echo)


async def stop_postgres(settings: Settings, echo: Echo) -> None:
    """Stop only the Postgres of that local stack (``pg_ctl stop -m fast``: sessions are cut)."""
    paths = StackPaths.from_settings(settings)
    async with _stack_lock(paths, echo):
        await stop_postmaster(paths, echo)


async def start_postgres(settings: Settings, echo: Echo) -> None:
    """Start (or find running) only the Postgres of that local stack; return once it answers."""
    paths = StackPaths.from_settings(settings)
    port = local_postgres_port(settings)
    async with _stack_lock(paths, echo):
        await ensure_postmaster(paths, port, echo)


def service_pids(settings: Settings) -> dict[str, int]:
    """The pids of the broker and the postmaster this stack started and that still run."""
    paths = StackPaths.from_settings(settings)
    pids: dict[str, int] = {}
    kafka_pid = broker_pid(paths)
    if kafka_pid is not None:
        pids["kafka"] = kafka_pid
    layout = known_pg_layout(paths)
    pg_pid = postmaster_pid(layout.data) if layout is not None else None
    if pg_pid is not None:
        pids["postgres"] = pg_pid
    return pids


async def status(settings: Settings) -> dict[str, str]:
    """``{"kafka": ..., "postgres": ...}``: "up (pid N, 127.0.0.1:port)", "down" or "external"."""
    pids = service_pids(settings)
    external = external_env()
    result: dict[str, str] = {}

    kafka_port = local_kafka_port(settings, strict=False)
    kafka_pid = pids.get("kafka")
    if kafka_pid is not None:
        result["kafka"] = f"up (pid {kafka_pid}, 127.0.0.1:{kafka_port})"
    elif external is not None:
        bootstrap = external[ENV_KAFKA_BOOTSTRAP_SERVERS]
        host, port = first_host_port(bootstrap, default_port=9092)
        reachable = "reachable" if await port_open(host, port) else "not reachable"
        result["kafka"] = f"external ({bootstrap}, {reachable})"
    elif await port_open("127.0.0.1", kafka_port):
        result["kafka"] = f"up (not started by this stack, 127.0.0.1:{kafka_port})"
    else:
        result["kafka"] = "down"

    pg_port = local_postgres_port(settings, strict=False)
    pg_pid = pids.get("postgres")
    if pg_pid is not None:
        result["postgres"] = f"up (pid {pg_pid}, 127.0.0.1:{pg_port})"
    elif external is not None:
        url = external[ENV_DATABASE_URL]
        parts = urlsplit(url)
        host, port = parts.hostname or "localhost", parts.port or 5432
        reachable = "reachable" if await port_open(host, port) else "not reachable"
        result["postgres"] = f"external ({redact_url(url)}, {reachable})"
    elif await port_open("127.0.0.1", pg_port):
        result["postgres"] = f"up (not started by this stack, 127.0.0.1:{pg_port})"
    else:
        result["postgres"] = "down"
    return result


async def ensure_topics(
    settings: Settings, bootstrap_servers: str, echo: Echo, within: float = 60.0
) -> None:
    """Create the four synclife topics (``topic_partitions`` partitions, replication 1).

    Existing topics are left as they are; a partition count that differs from the settings is
    reported, not changed.

    Message size limits (``max.message.bytes``; the broker's default is about 1 MiB): the
    commands topic takes up to twice ``max_message_bytes``, so that a command over the limit
    reaches synclife and is answered ``too_large`` and dead-lettered; the topics synclife writes
    take up to four times (what its producer may send), so that the dead-letter copy of such a
    command, or a large result or event, never stops the outbox relay.
    """
    names = [
        settings.commands_topic,
        settings.lifecycle_topic,
        settings.results_topic,
        settings.dlq_topic,
    ]
    max_bytes = {name: 4 * settings.max_message_bytes for name in names}
    max_bytes[settings.commands_topic] = 2 * settings.max_message_bytes
    wanted = settings.topic_partitions
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    admin = AIOKafkaAdminClient(
        **kafka_options(
            settings,
            bootstrap_servers=bootstrap_servers,
            client_id=f"{settings.client_id}-stack",
            request_timeout_ms=30_000,
        )
    )
    await start_client(admin, settings)
    try:
        created: list[str] = []
        while True:
            existing = await _topic_partitions(admin)
            missing = [name for name in names if name not in existing]
            if not missing:
                break
            response = await admin.create_topics(
                [
                    NewTopic(
                        name, wanted, 1, topic_configs={"max.message.bytes": str(max_bytes[name])}
                    )
                    for name in missing
                ],
                timeout_ms=30_000,
            )
            retry: list[str] = []
            for topic, code, *rest in response.topic_errors:
                if code == 0:
                    created.append(str(topic))
                    continue
                error_type = for_code(code)
                if issubclass(error_type, TopicAlreadyExistsError):
                    continue
                if getattr(error_type, "retriable", False) and loop.time() < deadline:
                    retry.append(str(topic))
                    continue
                detail = rest[0] if rest and rest[0] else error_type.__name__
                raise StackError(f"could not create topic {topic}: {detail}")
            if loop.time() >= deadline:
                raise StackError(f"topics {missing} did not appear within {within:.0f}s")
            # Metadata lags creation a little; look again before deciding anything.
            await asyncio.sleep(0.2 if not retry else 1.0)
    finally:
        await admin.close()
    for name in created:
        echo(f"created topic {name} ({wanted} partitions)")
    for name in names:
        if existing[name] != wanted:
            echo(
                f"note: topic {name} has {existing[name]} partitions, settings say {wanted}; "
                "left as it is"
            )


@dataclass(frozen=True)
class ScramUser:
    """The local stack's SCRAM login: its SASL_PLAINTEXT listener and user (password masked)."""

    bootstrap_servers: str
    username: str
    password: SecretStr
    mechanisms: tuple[str, ...] = KAFKA_SCRAM_MECHANISMS

    @property
    def port(self) -> int:
        return first_host_port(self.bootstrap_servers, default_port=9092)[1]


def scram_credentials(settings: Settings) -> ScramUser:
    """Where and as whom to log in to the local broker with SCRAM (after ``up``).

    The listener is ``SASL_PLAINTEXT://127.0.0.1:<Kafka port + 2>``; the user ``synclife`` has
    both SCRAM-SHA-256 and SCRAM-SHA-512 credentials with the password ``up`` generated once.
    """
    paths = StackPaths.from_settings(settings)
    password = read_secret(paths.kafka_scram_password_file)
    if password is None:
        raise StackError(
            f"no Kafka SCRAM password file at {paths.kafka_scram_password_file}: "
            "run `synclife stack up`"
        )
    port = local_kafka_port(settings) + SASL_PORT_OFFSET
    return ScramUser(f"127.0.0.1:{port}", KAFKA_SCRAM_USER, SecretStr(password))


async def _up_external(settings: Settings, env: dict[str, str], echo: Echo) -> dict[str, str]:
    bootstrap = env[ENV_KAFKA_BOOTSTRAP_SERVERS]
    database_url = env[ENV_DATABASE_URL]
    echo(
        f"{ENV_KAFKA_BOOTSTRAP_SERVERS} and {ENV_DATABASE_URL} are set: using those services "
        f"(nothing to start); waiting for Kafka at {bootstrap} and Postgres at "
        f"{redact_url(database_url)}..."
    )
    started = time.monotonic()
    await _all_or_first_error(
        [
            wait_for_broker(bootstrap, KAFKA_READY_TIMEOUT, settings=settings),
            wait_for_postgres(database_url, POSTGRES_READY_TIMEOUT, ssl=postgres_ssl(settings)),
        ],
        echo,
        cancel_on_error=True,  # only waiting: nothing is left half done
    )
    echo(f"Kafka and Postgres answer ({time.monotonic() - started:.1f}s)")
    await ensure_topics(settings, bootstrap, echo)
    return dict(env)


async def _up_local(settings: Settings, echo: Echo) -> dict[str, str]:
    if settings.kafka_security_protocol != "PLAINTEXT":
        raise StackError(
            f"kafka_security_protocol is {settings.kafka_security_protocol}, but the local "
            "stack is reached on its PLAINTEXT listener: run `synclife stack up` without "
            "SYNCLIFE_KAFKA_SECURITY_PROTOCOL (its SCRAM listener is at the Kafka port + 2), "
            f"or set both {ENV_KAFKA_BOOTSTRAP_SERVERS} and {ENV_DATABASE_URL} to use "
            "running services"
        )
    paths = StackPaths.from_settings(settings)
    kafka_port = local_kafka_port(settings)
    pg_port = local_postgres_port(settings)
    paths.root.mkdir(parents=True, exist_ok=True)
    async with _stack_lock(paths, echo):
        await _all_or_first_error(
            [
                ensure_broker(settings, paths, kafka_port, echo),
                ensure_postmaster(paths, pg_port, echo),
            ],
            echo,
            # Let the other one finish: a killed initdb or Maven run leaves a mess on disk.
            cancel_on_error=False,
        )
        password = read_password(paths)
        if password is None:  # ensure_postmaster guarantees the file; be explicit anyway
            raise StackError(f"no Postgres password file at {paths.pg_password_file}")
        await ensure_scram_user(paths, kafka_port, echo)
        await ensure_topics(settings, f"127.0.0.1:{kafka_port}", echo)
    return _local_env(kafka_port, pg_port, password)


def _local_env(kafka_port: int, pg_port: int, password: str) -> dict[str, str]:
    return {
        ENV_KAFKA_BOOTSTRAP_SERVERS: f"127.0.0.1:{kafka_port}",
        ENV_DATABASE_URL: (
            f"postgresql://{DB_USER}:{quote(password, safe='')}@127.0.0.1:{pg_port}/{DB_NAME}"
        ),
    }


async def ensure_broker(settings: Settings, paths: StackPaths, port: int, echo: Echo) -> None:
    bootstrap = f"127.0.0.1:{port}"
    started = time.monotonic()
    pid = broker_pid(paths)
    if pid is None and await port_open("127.0.0.1", port):
        echo(f"something already answers at {bootstrap} (not started by this stack): reusing it")
        await wait_for_broker(bootstrap, KAFKA_READY_TIMEOUT)
        echo(f"Kafka ready at {bootstrap}")
        return
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


def _cluster_id(paths: StackPaths) -> str:
    """The cluster id, generated once (Kafka's Uuid: 16 random bytes, base64url, no padding)."""
    try:
        stored = paths.kafka_cluster_id.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        stored = ""
    if stored:
        return stored
    while True:
        candidate = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not candidate.startswith("-"):  # Kafka's own generator avoids these too
            break
    paths.kafka_cluster_id.write_text(candidate + "\n", encoding="utf-8")
    return candidate


async def _format_kafka_storage(paths: StackPaths, java: str, echo: Echo) -> None:
    if (paths.kafka_data / "meta.properties").is_file():
        return
    cluster_id = _cluster_id(paths)
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
    """Start the broker detached (own session, output to kafka.out) and record its pid.

    ``posix_spawn`` rather than ``asyncio``/``subprocess``: their process objects kill or warn
    about a child that outlives them, and this one must outlive the CLI.
    """
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
    with paths.kafka_out.open("a", encoding="utf-8") as out:
        out.write(f"\n--- synclife stack up {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n")
    file_actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(paths.kafka_out), os.O_WRONLY | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawn(java, argv, dict(os.environ), file_actions=file_actions, setsid=True)
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


async def _topic_partitions(admin: Any) -> dict[str, int]:
    """Partition count of every existing topic (metadata for all topics creates nothing)."""
    topics: list[dict[str, Any]] = await admin.describe_topics()
    return {str(t["topic"]): len(t["partitions"]) for t in topics if t.get("error_code", 0) == 0}


def broker_log_tail(paths: StackPaths | None) -> str:
    if paths is None:
        return ""
    parts = [
        file_tail(paths.kafka_logs / "server.log", f"last lines of {paths.kafka_logs}/server.log"),
        file_tail(paths.kafka_out, f"last lines of {paths.kafka_out}"),
    ]
    return "".join(p for p in parts if p)


async def stop_broker(paths: StackPaths, echo: Echo) -> None:
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


async def ensure_scram_user(paths: StackPaths, port: int, echo: Echo) -> None:
    """Give the SCRAM user ``synclife`` its password (generated once), unless it logs in.

    ``kafka.admin.ConfigCommand`` sets both SCRAM-SHA-256 and SCRAM-SHA-512 credentials
    through the PLAINTEXT listener (the AlterUserScramCredentials API; aiokafka has no call for
    it). It runs only when a login fails, so ``up`` stays fast and idempotent, and heals a
    broker whose data was wiped. The password goes to the tool in a 0600 file, not in argv.
    """
    sasl_port = port + SASL_PORT_OFFSET
    password = read_secret(paths.kafka_scram_password_file)
    if password is None:
        password = create_secret(paths.kafka_scram_password_file)
    if not await port_open("127.0.0.1", sasl_port):
        echo(
            f"note: nothing listens at 127.0.0.1:{sasl_port}, so no SCRAM user: only a broker "
            "started by this stack has the SASL_PLAINTEXT listener"
        )
        return
    if await _scram_logins_work(sasl_port, password):
        return
    java = await require_tool("java", "default-jre-headless", echo)
    await fetch_kafka_jars(paths, echo)
    # One mechanism per run: Kafka 4.1 refuses two credentials of one user in one request
    # ("A user credential cannot be altered twice in the same request").
    for mechanism in KAFKA_SCRAM_MECHANISMS:
        await _set_scram_credential(paths, java, port, mechanism, password)
    # The credential reaches the listener through the metadata log: a moment later.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await _scram_logins_work(sasl_port, password):
        if loop.time() >= deadline:
            raise StackError(
                f"the SCRAM user {KAFKA_SCRAM_USER} was created but cannot log in at "
                f"127.0.0.1:{sasl_port}.{broker_log_tail(paths)}"
            )
        await asyncio.sleep(0.5)
    echo(
        f"created the Kafka SCRAM user {KAFKA_SCRAM_USER} ({', '.join(KAFKA_SCRAM_MECHANISMS)}) "
        f"for 127.0.0.1:{sasl_port}; password in {paths.kafka_scram_password_file}"
    )


async def _set_scram_credential(
    paths: StackPaths, java: str, port: int, mechanism: str, password: str
) -> None:
    """``kafka.admin.ConfigCommand --alter --add-config-file``: the password never in argv."""
    credentials = paths.kafka_home / ".scram-credential.properties"
    fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        # A properties file: no brackets around the value (only --add-config takes them).
        f.write(f"{mechanism}=iterations={KAFKA_SCRAM_ITERATIONS},password={password}\n")
    try:
        await run(
            [
                java,
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={_tools_log4j(paths)}",
                "-cp",
                f"{paths.kafka_libs}/*",
                "kafka.admin.ConfigCommand",
                "--bootstrap-server",
                f"127.0.0.1:{port}",
                "--alter",
                "--add-config-file",
                str(credentials),
                "--entity-type",
                "users",
                "--entity-name",
                KAFKA_SCRAM_USER,
            ],
            what=f"kafka.admin.ConfigCommand ({mechanism} credential of {KAFKA_SCRAM_USER})",
            within=120,
        )
    except StackError as e:  # the tool may quote its input: never pass the password on
        raise StackError(str(e).replace(password, "***")) from None
    finally:
        credentials.unlink(missing_ok=True)


async def _scram_logins_work(port: int, password: str) -> bool:
    """Whether ``synclife`` logs in with every SCRAM mechanism (False on any failure)."""
    for mechanism in KAFKA_SCRAM_MECHANISMS:
        try:
            async with asyncio.timeout(10):
                conn = await create_conn(
                    "127.0.0.1",
                    port,
                    client_id="synclife-stack",
                    request_timeout_ms=10_000,
                    security_protocol="SASL_PLAINTEXT",
                    sasl_mechanism=mechanism,
                    sasl_plain_username=KAFKA_SCRAM_USER,
                    sasl_plain_password=password,
                )
        except (KafkaError, OSError, TimeoutError):
            return False
        conn.close()
    return True


def _tools_log4j(paths: StackPaths) -> Path:
    """A log4j2 config for Kafka's command-line tools: warnings only, to stderr."""
    target = paths.kafka_home / "tools-log4j2.xml"
    write_if_changed(target, resource_text("tools-log4j2.xml"))
    return target


async def ensure_postmaster(paths: StackPaths, port: int, echo: Echo) -> None:
    started = time.monotonic()
    password = read_password(paths)
    layout = known_pg_layout(paths)
    pid = postmaster_pid(layout.data) if layout is not None else None
    if pid is None and await port_open("127.0.0.1", port):
        if password is None:
            raise StackError(
                f"something else already listens on 127.0.0.1:{port} and this stack has no "
                f"password for it ({paths.pg_password_file} is missing): stop it, or set both "
                f"{ENV_KAFKA_BOOTSTRAP_SERVERS} and {ENV_DATABASE_URL} to use running services"
            )
        echo(
            f"something already answers at 127.0.0.1:{port} (not started by this stack): "
            "reusing it with the stack's password"
        )
        await wait_for_postgres(pg_url(port, password, "postgres"), POSTGRES_READY_TIMEOUT)
        await _ensure_database(port, password, echo)
        echo(f"Postgres ready at 127.0.0.1:{port}")
        return

    bin_dir = await postgres_bin_dir(echo)
    run_as = _postgres_run_as()
    if layout is None:
        layout = await _choose_pg_layout(paths, run_as, echo)
    if password is None:
        if (layout.data / "PG_VERSION").is_file():
            raise StackError(
                f"the Postgres data dir {layout.data} exists but its password file "
                f"{paths.pg_password_file} is gone: remove {layout.data} to start afresh"
            )
        password = _create_password(paths)

    _prepare_pg_dirs(layout, run_as)
    if not (layout.data / "PG_VERSION").is_file():
        await _initdb(bin_dir, layout, run_as, password, echo)
    changed = _write_pg_config(layout, port, run_as)
    if pid is not None:
        # Running already: the settings written take effect on a reload (a SIGHUP: cheap, and
        # done every time, in case an earlier run wrote them and stopped before reloading).
        # Those that need a restart, such as shared_buffers, wait for the next start.
        await run(
            [str(bin_dir / "pg_ctl"), "reload", "-D", str(layout.data)],
            what="pg_ctl reload",
            within=30,
            run_as=run_as,
            cwd=layout.base,
        )
        if changed:
            echo("Postgres settings changed: reloaded")

    if pid is None:
        await _wait_for_stale_postmaster(layout.data)
        echo(f"starting Postgres ({bin_dir.parent.name}) on 127.0.0.1:{port}...")
        await run(
            [
                str(bin_dir / "pg_ctl"),
                "start",
                "-D",
                str(layout.data),
                "-l",
                str(layout.log),
                "-w",
                "-t",
                str(int(POSTGRES_READY_TIMEOUT)),
            ],
            what="pg_ctl start",
            within=POSTGRES_READY_TIMEOUT + 30,
            run_as=run_as,
            cwd=layout.base,
            new_session=True,
            log_for_errors=layout.log,
        )
        pid = postmaster_pid(layout.data)
        await wait_for_postgres(
            pg_url(port, password, "postgres"), POSTGRES_READY_TIMEOUT, log=layout.log
        )
        await _ensure_database(port, password, echo)
        echo(f"Postgres ready at 127.0.0.1:{port} (pid {pid}, {time.monotonic() - started:.1f}s)")
    else:
        await wait_for_postgres(
            pg_url(port, password, "postgres"), POSTGRES_READY_TIMEOUT, log=layout.log
        )
        await _ensure_database(port, password, echo)
        echo(f"Postgres already up at 127.0.0.1:{port} (pid {pid})")


def _postgres_run_as() -> RunAs | None:
    """``postgres`` when we are root (initdb and postgres refuse to run as root), else None."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError:
        raise StackError(
            "running as root, but there is no `postgres` OS user to run PostgreSQL as "
            "(the Debian postgresql package creates it)"
        ) from None
    return RunAs(name=entry.pw_name, uid=entry.pw_uid, gid=entry.pw_gid)


def known_pg_layout(paths: StackPaths) -> PgLayout | None:
    """The Postgres layout chosen by an earlier ``up``, if any."""
    try:
        base = paths.pg_location_file.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return PgLayout(Path(base)) if base else None


async def _choose_pg_layout(paths: StackPaths, run_as: RunAs | None, echo: Echo) -> PgLayout:
    """Keep Postgres in the stack dir if its OS user can reach it, else under /var/tmp."""
    base = paths.root
    if run_as is not None and not await _user_can_traverse(run_as, paths.root):
        digest = hashlib.sha256(str(paths.root).encode()).hexdigest()[:12]
        base = Path("/var/tmp") / f"synclife-{digest}"  # noqa: S108 - root-owned, checked below
        _make_private_root_dir(base)
        echo(
            f"the `{run_as.name}` OS user cannot reach {paths.root}: keeping the Postgres data "
            f"dir under {base} instead"
        )
    layout = PgLayout(base)
    paths.pg_location_file.write_text(f"{base}\n", encoding="utf-8")
    return layout


async def _user_can_traverse(run_as: RunAs, directory: Path) -> bool:
    """Whether ``run_as`` may search ``directory`` and every parent (asks the kernel)."""
    proc = await asyncio.create_subprocess_exec(
        "test",
        "-x",
        str(directory),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        cwd="/",
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=supplementary_groups(run_as),
    )
    return await proc.wait() == 0


def _make_private_root_dir(path: Path) -> None:
    """Create ``path`` (0755, owned by us); refuse a pre-existing one we do not own."""
    path.mkdir(mode=0o755, exist_ok=True)
    st = path.lstat()
    if not path.is_dir() or path.is_symlink() or st.st_uid != os.geteuid():
        raise StackError(f"{path} exists and is not a directory owned by us: remove it")


def _prepare_pg_dirs(layout: PgLayout, run_as: RunAs | None) -> None:
    layout.base.mkdir(parents=True, exist_ok=True)
    layout.data.mkdir(mode=0o700, exist_ok=True)
    layout.socket_dir.mkdir(mode=0o700, exist_ok=True)
    layout.log.touch(mode=0o600, exist_ok=True)
    for path in (layout.data, layout.socket_dir, layout.log):
        if run_as is not None:
            os.chown(path, run_as.uid, run_as.gid)
    layout.data.chmod(0o700)


async def _initdb(
    bin_dir: Path, layout: PgLayout, run_as: RunAs | None, password: str, echo: Echo
) -> None:
    echo(f"initialising a Postgres data dir at {layout.data} (once)...")
    # initdb reads the superuser password from a file; it must be readable by the user
    # initdb runs as, so it lives briefly in the (0700) socket dir and is removed at once.
    pwfile = layout.socket_dir / ".initdb-pw"
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, f"{password}\n".encode())
        if run_as is not None:
            os.fchown(fd, run_as.uid, run_as.gid)
    finally:
        os.close(fd)
    try:
        await run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(layout.data),
                "-U",
                DB_USER,
                f"--pwfile={pwfile}",
                # Local (socket) connections: the socket dir is 0700, so only the postgres
                # OS user and root can reach it. TCP needs the password.
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
            ],
            what="initdb",
            within=300,
            run_as=run_as,
            cwd=layout.base,
        )
    finally:
        pwfile.unlink(missing_ok=True)


def _write_pg_config(layout: PgLayout, port: int, run_as: RunAs | None) -> bool:
    """Our settings live in synclife.conf, included once from postgresql.conf; True if they
    changed."""
    socket_dir = str(layout.socket_dir)
    # A Unix socket path is limited to 107 bytes; without one, TCP still works.
    if len(socket_dir) + len(f"/.s.PGSQL.{port}.lock") > 100:
        socket_dir = ""
    conf = f"""\
# Written by `synclife stack up` before every start: change the settings, not this file.
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
unix_socket_permissions = 0700
max_connections = 200
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
fsync = on
# A write-heavy queue workload: checkpoints at most every 15 min or 4 GB of WAL (after each
# one, the next change of every page writes the whole page to the WAL; with the default 1 GB,
# a sustained load checkpointed every 20 s), and those full-page images compressed.
max_wal_size = 4GB
checkpoint_timeout = 15min
wal_compression = lz4
log_timezone = 'UTC'
timezone = 'UTC'
"""
    target = layout.data / "synclife.conf"
    changed = write_if_changed(target, conf)
    main = layout.data / "postgresql.conf"
    text = main.read_text(encoding="utf-8")
    include = "include_if_exists = 'synclife.conf'"
    if include not in text:
        main.write_text(f"{text.rstrip()}\n\n# synclife stack\n{include}\n", encoding="utf-8")
        changed = True
    if run_as is not None:
        for path in (target, main):
            os.chown(path, run_as.uid, run_as.gid)
    return changed


def postmaster_pid(data: Path) -> int | None:
    """The postmaster's pid from ``postmaster.pid``, if it runs."""
    pid = read_pid(data / "postmaster.pid")
    if pid is None or not pid_alive(pid):
        return None
    cmdline = proc_cmdline(pid)
    if cmdline is not None and "postgres" not in cmdline:
        return None
    return pid


async def _wait_for_stale_postmaster(data: Path, within: float = 15.0) -> None:
    """Let a killed postmaster's zombie be reaped first.

    A new postmaster refuses to start while the pid in a stale ``postmaster.pid`` still
    exists, and a zombie does until its parent (often a slow init in containers) reaps it.
    """
    stale = read_pid(data / "postmaster.pid")
    if stale is None or pid_alive(stale):
        return
    await wait_until(lambda: not pid_exists(stale), within)


async def wait_for_postgres(
    url: str, within: float, *, log: Path | None = None, ssl: Any = None
) -> None:
    """Wait until ``url`` accepts a connection and answers ``SELECT 1``.

    ``ssl`` is asyncpg's (``db.postgres_ssl``); None leaves it to the URL.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last_error = "no attempt yet"
    extra: dict[str, Any] = {} if ssl is None else {"ssl": ssl}
    while True:
        try:
            conn = await asyncpg.connect(url, timeout=5, **extra)
            try:
                if await conn.fetchval("SELECT 1") == 1:
                    return
            finally:
                await conn.close()
        except (
            asyncpg.InvalidPasswordError,
            asyncpg.InvalidAuthorizationSpecificationError,
            asyncpg.InvalidCatalogNameError,
        ) as e:
            raise StackError(f"Postgres at {redact_url(url)} refused us: {e}") from e
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            last_error = f"{type(e).__name__}: {e}"
        if loop.time() >= deadline:
            tail = file_tail(log, f"last lines of {log}") if log is not None else ""
            raise StackError(
                f"Postgres did not answer at {redact_url(url)} within {within:.0f}s "
                f"(last: {last_error}).{tail}"
            )
        await asyncio.sleep(0.5)


async def _ensure_database(port: int, password: str, echo: Echo) -> None:
    conn = await asyncpg.connect(pg_url(port, password, "postgres"), timeout=10)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DB_NAME)
        if not exists:
            # DB_NAME is a constant identifier; CREATE DATABASE takes no parameters.
            await conn.execute(f'CREATE DATABASE "{DB_NAME}"')
            echo(f"created database {DB_NAME}")
    finally:
        await conn.close()


async def stop_postmaster(paths: StackPaths, echo: Echo) -> None:
    layout = known_pg_layout(paths)
    pid = postmaster_pid(layout.data) if layout is not None else None
    if layout is None or pid is None:
        echo("Postgres: not running (nothing this stack started)")
        return
    bin_dir = find_postgres_bin_dir()
    if bin_dir is None:
        raise StackError("cannot find pg_ctl to stop Postgres")
    echo(f"stopping Postgres (pid {pid})...")
    await run(
        [str(bin_dir / "pg_ctl"), "stop", "-D", str(layout.data), "-m", "fast", "-w", "-t", "60"],
        what="pg_ctl stop",
        within=90,
        run_as=_postgres_run_as(),
        cwd=layout.base,
    )
    echo("Postgres stopped")


def read_password(paths: StackPaths) -> str | None:
    return read_secret(paths.pg_password_file)


def _create_password(paths: StackPaths) -> str:
    return create_secret(paths.pg_password_file)


async def _all_or_first_error(
    coros: list[Coroutine[Any, Any, None]], echo: Echo, *, cancel_on_error: bool
) -> None:
    """Run ``coros`` concurrently; raise the first error (after the rest finished or were
    cancelled), reporting any further ones through ``echo``."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        await asyncio.wait(
            tasks,
            return_when=asyncio.FIRST_EXCEPTION if cancel_on_error else asyncio.ALL_COMPLETED,
        )
    finally:
        for task in tasks:
            task.cancel()  # a no-op for finished tasks; on our own cancellation, stop them all
        results = await asyncio.gather(*tasks, return_exceptions=True)
    errors = [
        r
        for r in results
        if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)
    ]
    if errors:
        for extra in errors[1:]:
            echo(f"also failed: {extra}")
        raise errors[0]


@contextlib.asynccontextmanager
async def _stack_lock(paths: StackPaths, echo: Echo) -> AsyncIterator[None]:
    """An exclusive flock on ``{stack_dir}/.lock`` (another ``up``/``down`` may be running)."""
    paths.root.mkdir(parents=True, exist_ok=True)
    fd = os.open(paths.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOCK_TIMEOUT
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    echo(f"waiting for another `synclife stack` command ({paths.lock_file})...")
                    told = True
                if loop.time() >= deadline:
                    raise StackError(
                        f"{paths.lock_file} stayed locked for {LOCK_TIMEOUT:.0f}s"
                    ) from None
                await asyncio.sleep(0.25)
        yield
    finally:
        os.close(fd)  # closing releases the lock
