"""Service settings: the client's Kafka settings plus the database, batching, scheduler,
relay, pool, local stack and operating knobs. Environment prefix ``SYNCLIFE_``."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator

from events.settings import KafkaSaslMechanism, KafkaSecurityProtocol, KafkaSettings

__all__ = [
    "DatabaseSslMode",
    "KafkaSaslMechanism",
    "KafkaSecurityProtocol",
    "Settings",
]

DatabaseSslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]

DEFAULT_DATABASE_URL = "postgresql://synclife@127.0.0.1:15432/synclife"


class Settings(KafkaSettings):
    """Every knob of synclife. Secrets are ``SecretStr``: they never show in ``repr`` or logs."""

    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)

    # Postgres TLS (events/service/db.py). Unset: whatever the URL says (``?sslmode=...``),
    # else asyncpg's default. verify-ca/verify-full check the server against
    # ``database_ssl_rootcert`` (or the system's CAs); verify-full also checks the host name.
    database_ssl: DatabaseSslMode | None = None
    database_ssl_rootcert: str | None = None

    # Consumer batching: a batch of up to max_batch_records is decided and committed in one
    # transaction (at low load batches stay small; 1000 was no faster here, and took 25 MB more).
    max_batch_records: int = Field(default=500, ge=1, le=100_000)
    # Batches applied at once, each by a lane owning a share of the assigned partitions (its
    # own transaction, its own pooled connection): one decides while another waits for Postgres.
    # At a light load the lanes take turns instead (see events/service/lanes.py).
    apply_concurrency: int = Field(default=2, ge=1, le=64)
    # A lane that finds fewer than max_batch_records waiting gives more this long to arrive
    # before it starts its transaction: fewer, larger batches when the load is light.
    batch_linger_ms: float = Field(default=0, ge=0, le=1000)
    # Offsets of applied batches are committed to Kafka at most this often (a batch's offsets
    # always after its transaction): one commit request per interval, not one per batch.
    # After a crash, up to this much more is redelivered, and found already processed.
    offset_commit_interval_ms: int = Field(default=100, ge=0, le=60_000)
    # Static group membership (KIP-345): a name of this process's own, stable across restarts
    # and unique in the consumer group. A process restarted with it within the session timeout
    # gets its partitions back without a rebalance; it never leaves the group when it stops
    # (its partitions wait for the session timeout or its return). Unset: dynamic membership.
    group_instance_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]{1,249}$")

    # Lifecycle rules.
    max_consecutive_failures: int = Field(default=5, ge=1, le=1000)
    retry_base_seconds: int = Field(default=30, ge=1)
    retry_max_seconds: int = Field(default=3600, ge=1)

    # Scheduler: how often it looks for due runs and expired leases, and how many per pass.
    scheduler_interval_seconds: float = Field(default=1.0, gt=0)
    scheduler_batch_size: int = Field(default=500, ge=1, le=100_000)

    # Bulk operations (sync.bulk.*, events/service/bulk/): the most syncs one may match (more
    # is a validation_error before anything changes), and how often the bulk worker (one
    # leader) looks for bulk commands to answer when it has none.
    max_bulk_syncs: int = Field(default=10_000, ge=1, le=1_000_000)
    bulk_poll_interval_seconds: float = Field(default=0.5, gt=0, le=60)

    # Time is the database's clock (every process agrees on it) plus this many seconds: a test
    # knob, to make time pass without waiting. Leave it at 0 in production.
    clock_offset_seconds: float = Field(default=0.0, ge=-315_360_000, le=315_360_000)

    # Retention (events/service/retention.py): one leader deletes, in batches of
    # retention_batch_size rows, the processed command ids older than the dedupe window (a
    # command id redelivered after it is processed as new; never one whose result is still in
    # the outbox) and the history rows older than history_retention_days (0: kept forever),
    # every retention_interval_seconds.
    dedupe_window_days: float = Field(default=7, gt=0)
    history_retention_days: float = Field(default=90, ge=0)
    retention_interval_seconds: float = Field(default=60, gt=0)
    retention_batch_size: int = Field(default=1000, ge=1, le=100_000)

    # Outbox relay.
    relay_batch_size: int = Field(default=1000, ge=1, le=100_000)
    relay_poll_interval_seconds: float = Field(default=1.0, gt=0)

    # Postgres pool.
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=4, ge=1)
    # How long one host of the database URL may take to accept a connection before the next
    # host is tried (a frozen or unreachable primary must not use up the whole failover).
    database_connect_timeout_seconds: float = Field(default=5.0, gt=0)

    # The local stack (`synclife stack up`): where it caches downloads and keeps its data.
    stack_dir: str = ".cache/stack"
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"

    # Operating: the HTTP port of /metrics, /healthz and /readyz (0: any free port), and logs.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9464, ge=0, le=65535)
    # The HTTP gateway (`synclife gateway`, events/gateway/): where it listens (port 0: any
    # free port); how long a write waits for its command's result before answering 202 (with
    # ``Prefer: respond-async``) or 504; the largest request body (0: ``max_message_bytes``,
    # the command limit), refused before it is read; how often it looks for the results its
    # requests wait for when no NOTIFY woke it (NOTIFY is only a wake-up); how long a client
    # may take to send a request: its headers from the connection's start or the last answer
    # (else the connection is closed; also how long an idle keep-alive connection stays open),
    # its body from its headers (else 408).
    gateway_host: str = "127.0.0.1"
    gateway_port: int = Field(default=8080, ge=0, le=65535)
    gateway_result_wait_seconds: float = Field(default=10.0, gt=0, le=300)
    gateway_max_body_bytes: int = Field(default=0, ge=0)
    gateway_poll_interval_ms: float = Field(default=100, gt=0, le=10_000)
    gateway_read_timeout_seconds: float = Field(default=75.0, gt=0, le=3600)
    # The web console at /console (events/gateway/console/): the secret that encrypts its
    # session cookie (at least 32 characters; every gateway of a deployment needs the same one;
    # unset: a random one per process, so a session holds on that process only), how long a
    # session lasts, and whether its cookie is sent over HTTPS only (set it behind TLS).
    console_secret: SecretStr | None = None
    console_session_seconds: int = Field(default=8 * 3600, ge=60, le=30 * 86400)
    console_cookie_secure: bool = False
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _check_database_security(self) -> Self:
        if self.database_ssl_rootcert is not None and self.database_ssl not in (
            "verify-ca",
            "verify-full",
        ):
            raise ValueError(
                "database_ssl_rootcert is only used to verify the server: it needs "
                "database_ssl verify-ca or verify-full"
            )
        return self
