"""The four synclife topics: created when missing, with their message size limits; existing
ones are left as they are.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code

from events.devtools.stack.errors import StackError
from events.kafka import kafka_options, start_client
from events.service.settings import Settings

from .files import Echo


async def ensure_topics(
    settings: Settings,
    bootstrap_servers: str,
    echo: Echo,
    within: float = 60.0,
    *,
    replicas: int = 1,
) -> None:
    """Create the four synclife topics (``topic_partitions`` partitions, ``replicas`` copies
    of each; with more than one, ``min.insync.replicas`` is one less: a write acknowledged
    with acks=all is on at least two brokers, and one broker may be away).

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
    replicated = {"min.insync.replicas": str(replicas - 1)} if replicas > 1 else {}
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
                        name,
                        wanted,
                        replicas,
                        topic_configs={"max.message.bytes": str(max_bytes[name]), **replicated},
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
        echo(f"created topic {name} ({wanted} partitions, {replicas} replicas)")
    for name in names:
        if existing[name] != wanted:
            echo(
                f"note: topic {name} has {existing[name]} partitions, settings say {wanted}; "
                "left as it is"
            )


async def _topic_partitions(admin: Any) -> dict[str, int]:
    """Partition count of every existing topic (metadata for all topics creates nothing)."""
    topics: list[dict[str, Any]] = await admin.describe_topics()
    return {str(t["topic"]): len(t["partitions"]) for t in topics if t.get("error_code", 0) == 0}
