"""Service settings, read from the environment (prefix ``SYNCLIFE_``) with pydantic-settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

DEFAULT_DATABASE_URL = "postgresql://synclife@127.0.0.1:15432/synclife"


class Settings(BaseSettings):
    """Every knob of synclife. Secrets are ``SecretStr``: they never show in ``repr`` or logs."""

    model_config = SettingsConfigDict(env_prefix="SYNCLIFE_", extra="ignore", frozen=True)

    # Where the services are. When both are set in the environment, `synclife stack up`
    # starts nothing and synclife uses them as they are.
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)

    # Topics (the contract's default names) and the partition count used when creating them.
    commands_topic: str = "sync.commands"
    lifecycle_topic: str = "sync.lifecycle"
    results_topic: str = "sync.command-results"
    dlq_topic: str = "sync.commands.dlq"
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    consumer_group: str = "synclife"
    client_id: str = "synclife"

    # Consumer batching: one `getmany` batch is decided and committed in one transaction.
    max_batch_records: int = Field(default=500, ge=1, le=100_000)
    batch_timeout_ms: int = Field(default=50, ge=0, le=60_000)

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
