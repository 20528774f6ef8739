"""aiokafka clients configured the way this service needs them (safe, not the defaults)."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from events.settings import Settings

__all__ = ["command_consumer", "idempotent_producer"]


def _common(settings: Settings) -> dict[str, Any]:
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, "client_id": settings.client_id}


def idempotent_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """acks=all and idempotence on: a retried send never duplicates or reorders a partition."""
    options: dict[str, Any] = {
        **_common(settings),
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 2,
        "max_batch_size": 1_048_576,
        "max_request_size": 4 * settings.max_message_bytes,
    }
    options.update(overrides)
    return AIOKafkaProducer(**options)


def command_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """No auto-commit: offsets are committed only after the Postgres transaction."""
    options: dict[str, Any] = {
        **_common(settings),
        "group_id": settings.consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 2 * settings.max_message_bytes,
        "fetch_max_bytes": 16 * settings.max_message_bytes,
    }
    options.update(overrides)
    return AIOKafkaConsumer(settings.commands_topic, **options)
