"""The local broker's SCRAM login: the user ``synclife`` of its SASL_PLAINTEXT listener (the
Kafka port + 2), with SCRAM-SHA-256 and SCRAM-SHA-512 credentials and a password generated once.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path

from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from events.devtools.stack.errors import StackError
from events.service.settings import Settings

from .addresses import first_host_port, local_kafka_port
from .files import (
    Echo,
    StackPaths,
    create_secret,
    read_secret,
    resource_text,
    write_if_changed,
)
from .install import require_tool
from .kafka import KAFKA_SCRAM_USER, SASL_PORT_OFFSET, broker_log_tail, fetch_kafka_jars
from .process import port_open, run

KAFKA_SCRAM_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512")
KAFKA_SCRAM_ITERATIONS = 8192


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
