"""Where the services are: the two environment variables that name them, and the local stack's
ports and URLs as the settings give them (the local stack listens on 127.0.0.1 only).
"""

from __future__ import annotations

from urllib.parse import quote, urlsplit, urlunsplit

from events.devtools.stack.errors import StackError
from events.service.settings import Settings

ENV_KAFKA_BOOTSTRAP_SERVERS = "SYNCLIFE_KAFKA_BOOTSTRAP_SERVERS"
ENV_DATABASE_URL = "SYNCLIFE_DATABASE_URL"

# The role and database the local Postgres is initialised with.
DB_USER = "synclife"
DB_NAME = "synclife"

_LOOPBACK = frozenset({"127.0.0.1", "localhost"})


def local_kafka_port(settings: Settings, *, strict: bool = True) -> int:
    """The local broker's port from ``kafka_bootstrap_servers``; ``strict`` refuses another host."""
    host, port = first_host_port(settings.kafka_bootstrap_servers, default_port=9092)
    if strict and host not in _LOOPBACK:
        raise StackError(
            f"kafka_bootstrap_servers is {settings.kafka_bootstrap_servers!r}, which the local "
            f"stack cannot serve (it listens on 127.0.0.1): set both "
            f"{ENV_KAFKA_BOOTSTRAP_SERVERS} and {ENV_DATABASE_URL} to use running services, "
            "or neither to use the local stack"
        )
    return port


def local_postgres_port(settings: Settings, *, strict: bool = True) -> int:
    """The local Postgres's port from ``database_url``; ``strict`` refuses another host."""
    url = settings.database_url.get_secret_value()
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    if strict and host not in _LOOPBACK:
        raise StackError(
            f"database_url points at {redact_url(url)}, which the local stack cannot serve (it "
            f"listens on 127.0.0.1): set both {ENV_KAFKA_BOOTSTRAP_SERVERS} and "
            f"{ENV_DATABASE_URL} to use running services, or neither to use the local stack"
        )
    try:
        return parts.port or 5432
    except ValueError as e:
        raise StackError(f"database_url has an invalid port: {redact_url(url)}") from e


def first_host_port(servers: str, *, default_port: int) -> tuple[str, int]:
    """Host and port of the first of comma-separated ``host:port`` addresses."""
    first = servers.split(",")[0].strip()
    host, sep, port = first.rpartition(":")
    if not sep:
        return first, default_port
    host = host.strip("[]")
    if not port.isdigit():
        raise StackError(f"invalid host:port {first!r}")
    return host, int(port)


def pg_url(port: int, password: str, database: str = DB_NAME) -> str:
    """The URL of ``database`` on the local Postgres, as the role ``synclife``."""
    return f"postgresql://{DB_USER}:{quote(password, safe='')}@127.0.0.1:{port}/{database}"


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***`` (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    userinfo = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{userinfo}:***@{netloc[2]}"))
