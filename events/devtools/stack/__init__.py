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

``up --cluster`` (``cluster``, ``standby``): three brokers and a Postgres primary with a
synchronous standby, under ``<stack_dir>/cluster``, for failover tests and as the production
layout's model (docs/operating.md).

This module is the orchestration; each part has a module of its own: ``kafka`` (the broker),
``scram`` (its SCRAM user), ``topics``, ``postgres``, ``install`` (Debian packages), ``process``
(commands, pids, ports), ``files`` (the stack dir), ``addresses`` (ports, URLs, environment) and
``databases`` (scratch databases on the server, for the bench and tests).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit

from events.devtools.stack.errors import StackError
from events.service.db import postgres_ssl
from events.service.settings import Settings

from .addresses import (
    ENV_DATABASE_URL,
    ENV_KAFKA_BOOTSTRAP_SERVERS,
    first_host_port,
    local_kafka_port,
    local_postgres_port,
    pg_url,
    redact_url,
)
from .cluster import Cluster, cluster_down, cluster_up
from .files import Echo, StackPaths
from .files import stack_lock as _stack_lock
from .kafka import KAFKA_READY_TIMEOUT, broker_pid, ensure_broker, stop_broker, wait_for_broker
from .postgres import (
    POSTGRES_READY_TIMEOUT,
    ensure_postmaster,
    known_pg_layout,
    postmaster_pid,
    read_password,
    stop_postmaster,
    wait_for_postgres,
)
from .process import port_open
from .scram import ScramUser, ensure_scram_user, scram_credentials
from .topics import ensure_topics

__all__ = [
    "ENV_DATABASE_URL",
    "ENV_KAFKA_BOOTSTRAP_SERVERS",
    "Cluster",
    "Echo",
    "ScramUser",
    "StackError",
    "StackPaths",
    "cluster_down",
    "cluster_up",
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
        ENV_DATABASE_URL: pg_url(pg_port, password),
    }


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
