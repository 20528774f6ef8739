"""Client settings: where Kafka is, how to reach it, the topics, the caller's credentials.

Read from the environment (prefix ``SYNCLIFE_``) with pydantic-settings. The service's own
settings (``events.service.settings.Settings``) extend these.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["KafkaSaslMechanism", "KafkaSecurityProtocol", "KafkaSettings"]

KafkaSecurityProtocol = Literal["PLAINTEXT", "SASL_PLAINTEXT", "SSL", "SASL_SSL"]
KafkaSaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class KafkaSettings(BaseSettings):
    """What a publishing or consuming service needs. Secrets are ``SecretStr``: they never
    show in ``repr`` or logs."""

    # hide_input_in_errors: a validation error would otherwise quote every input, passwords too.
    model_config = SettingsConfigDict(
        env_prefix="SYNCLIFE_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    # Where Kafka is. When it and the database URL are set in the environment,
    # `synclife stack up` starts nothing and synclife uses them as they are.
    kafka_bootstrap_servers: str = "127.0.0.1:19092"
    # How long a client waits for a broker's answer (aiokafka's default is 40 s). A broker that
    # is frozen (paused VM, GC, partition) holds every request sent to it that long, and only
    # then does the client look for the partitions' new leaders; above the consumer session
    # timeout (10 s), which a JoinGroup may wait at the broker.
    kafka_request_timeout_ms: int = Field(default=15_000, ge=12_000, le=300_000)

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

    # Topics (the contract's default names).
    commands_topic: str = "sync.commands"
    lifecycle_topic: str = "sync.lifecycle"
    results_topic: str = "sync.command-results"
    dlq_topic: str = "sync.commands.dlq"
    client_id: str = "synclife"
    # The partition count used when creating the topics, and the service's consumer group.
    topic_partitions: int = Field(default=6, ge=1, le=1000)
    consumer_group: str = "synclife"

    # The largest message a command may be (the service rejects larger ones as too_large).
    max_message_bytes: int = Field(default=1_048_576, ge=1024)

    # Credentials the client and the CLI publish commands with (`synclife send`).
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
        return self
