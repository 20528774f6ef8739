"""Service settings, read from the environment (prefix ``SYNCLIFE_``) with pydantic-settings."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DatabaseSslMode", "KafkaSaslMechanism", "KafkaSecurityProtocol", "Settings"]

KafkaSecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
DatabaseSslMode = Literal["disable", "prefer", "require", "verify-ca", "verify-full"]

DEFAULT_DATABASE_URL = "postgresql://synclife@127.0.0.1:15432/synclife"


class Settings(BaseSettings):
    """Every knob of synclife. Secrets are ``SecretStr``: they never show in ``repr`` or logs."""

    # hide_input_in_errors: a validation error would otherwise quote every input, passwords too.
    model_config = SettingsConfigDict(
        env_prefix="SYNCLIFE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Where the services are. When both are set in the environment, `synclife stack up`
    # starts nothing and synclife uses them as they are.
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)

    # Transport security of every Kafka client (events/kafka.py: kafka_options). SASL_* needs
    # a mechanism, a username and a password; SSL/SASL_SSL verify the broker against the CA
    # file (or the system's CAs) and may present a client certificate.
    kafka_security_protocol: KafkaSecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: KafkaSaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_check_hostname: bool = True

    # Postgres TLS (events/db.py). Unset: whatever the URL says (``?sslmode=...``), else
    # asyncpg's default. verify-ca/verify-full check the server against ``database_ssl_rootcert``
    # (or the system's CAs); verify-full also checks the host name.
    database_ssl: DatabaseSslMode | None = None
    database_ssl_rootcert: str | None = None

    # Topics (the contract's default names) and the partition count used when creating them.
    commands_topic: str = "sync.commands"
    lifecycle_topic: str = "sync.lifecycle"
    results_topic: str = "sync.command-results"
    dlq_topic: str = "sync.commands.dlq"
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    consumer_group: str = "synclife"
    client_id: str = "synclife"

    # Consumer batching: a batch of up to max_batch_records is decided and committed in one
    # transaction (at low load batches stay small; 1000 was no faster here, and took 25 MB more).
    max_batch_records: int = Field(default=500, ge=1, le=100_000)
    # Batches applied at once, each by a lane owning a share of the assigned partitions (its
    # own transaction, its own pooled connection): one decides while another waits for Postgres.
    # At a light load the lanes take turns instead (see Service._run_lane).
    apply_concurrency: int = Field(default=2, ge=1, le=64)
    # A lane that finds fewer than max_batch_records waiting gives more this long to arrive
    # before it starts its transaction: fewer, larger batches when the load is light.
    batch_linger_ms: float = Field(default=0, ge=0, le=1000)
    # Offsets of applied batches are committed to Kafka at most this often (a batch's offsets
    # always after its transaction): one commit request per interval, not one per batch.
    # After a crash, up to this much more is redelivered, and found already processed.
    offset_commit_interval_ms: int = Field(default=100, ge=0, le=60_000)

    # Limits on input.
    max_message_bytes: int = Field(default=1_048_576, ge=1024)

    # Lifecycle rules.
    max_consecutive_failures: int = Field(default=5, ge=1, le=1000)
    retry_base_seconds: int = Field(default=30, ge=1)
    retry_max_seconds: int = Field(default=3600, ge=1)

    # Scheduler: how often it looks for due runs and expired leases, and how many per pass.
    scheduler_interval_seconds: float = Field(default=1.0, gt=0)
    scheduler_batch_size: int = Field(default=500, ge=1, le=100_000)

    # Outbox relay.
    relay_batch_size: int = Field(default=1000, ge=1, le=100_000)
    relay_poll_interval_seconds: float = Field(default=1.0, gt=0)

    # Postgres pool.
    db_pool_min_size: int = Field(default=1, ge=0)
    db_pool_max_size: int = Field(default=4, ge=1)

    # The local stack (`synclife stack up`): where it caches downloads and keeps its data.
    stack_dir: str = ".cache/stack"
    kafka_version: str = "4.1.1"
    kafka_heap: str = "512m"

    # Operating: the HTTP port of /metrics, /healthz and /readyz (0: any free port), and logs.
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=9464, ge=0, le=65535)
    log_format: Literal["json", "text"] = "json"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # Credentials the CLI uses to publish commands (`synclife send`).
    api_key: SecretStr | None = None
    namespace: str | None = None

    @model_validator(mode="after")
    def _check_transport_security(self) -> Self:
        """Reject combinations that could only fail later, at the first connection.

        Messages name the settings (environment: ``SYNCLIFE_`` + the name in capitals), never
        a value.
        """
        protocol = self.kafka_security_protocol
        sasl = {
            "kafka_sasl_mechanism": self.kafka_sasl_mechanism,
            "kafka_sasl_username": self.kafka_sasl_username,
            "kafka_sasl_password": (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            ),
        }
        tls = {
            "kafka_ssl_cafile": self.kafka_ssl_cafile,
            "kafka_ssl_certfile": self.kafka_ssl_certfile,
            "kafka_ssl_keyfile": self.kafka_ssl_keyfile,
        }
        if protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            missing = [name for name, value in sasl.items() if not value]
            if missing:
                raise ValueError(f"kafka_security_protocol {protocol} needs {', '.join(missing)}")
        else:
            given = [name for name, value in sasl.items() if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set, but kafka_security_protocol is {protocol}: "
                    "SASL needs SASL_PLAINTEXT or SASL_SSL"
                )
        if protocol not in ("SSL", "SASL_SSL"):
            given = [name for name, value in tls.items() if value is not None]
            if given:
                raise ValueError(
                    f"{', '.join(given)} set, but kafka_security_protocol is {protocol}: "
                    "TLS needs SSL or SASL_SSL"
                )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError("kafka_ssl_keyfile needs kafka_ssl_certfile (the client certificate)")
        if self.database_ssl_rootcert is not None and self.database_ssl not in (
            "verify-ca",
            "verify-full",
        ):
            raise ValueError(
                "database_ssl_rootcert is only used to verify the server: it needs "
                "database_ssl verify-ca or verify-full"
            )
        return self
