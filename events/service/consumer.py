"""The service's command consumer: no auto-commit, fetches held at the broker while busy."""

from __future__ import annotations

from typing import Any, Final

from aiokafka import AIOKafkaConsumer

from events.kafka import kafka_options, throttle_metadata
from events.service.settings import Settings

__all__ = [
    "FETCH_HOLD_BYTES",
    "FETCH_HOLD_MS",
    "FetchHold",
    "command_consumer",
]


def command_consumer(settings: Settings, **overrides: Any) -> AIOKafkaConsumer:
    """No auto-commit: offsets are committed only after the Postgres transaction. With
    ``group_instance_id``, a static member of the group (aiokafka sends it in JoinGroup, and
    then never sends LeaveGroup); the session timeout stays aiokafka's (10 s)."""
    options: dict[str, Any] = {
        **kafka_options(settings),
        "group_id": settings.consumer_group,
        "group_instance_id": settings.group_instance_id,  # None: dynamic membership
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
        "max_partition_fetch_bytes": 2 * settings.max_message_bytes,
        "fetch_max_bytes": 16 * settings.max_message_bytes,
    }
    options.update(overrides)
    consumer = AIOKafkaConsumer(settings.commands_topic, **options)
    throttle_metadata(consumer._client)
    return consumer


#: While the service has records to apply, a fetch waits at the broker for this much data, or
#: this long, before it answers (see FetchHold). 1 ms, not 5: at a light load (200 commands/s)
#: a command arriving while its predecessor's batch was in flight waited up to the whole hold,
#: about 3 ms of its p50; the CPU saved at heavier loads was within the noise either way.
FETCH_HOLD_BYTES: Final = 16 * 1024
FETCH_HOLD_MS: Final = 1


class FetchHold:
    """Holds a started consumer's fetches at the broker while the service is busy applying.

    Held (``set(True)``): a fetch answers once ``FETCH_HOLD_BYTES`` are there or after
    ``hold_ms`` (``FETCH_HOLD_MS``). Records fetched while a batch is in flight wait for it
    anyway; held, they come together, in fewer fetch round trips (each one a wakeup of the
    broker and of this process). Not held: a fetch answers with the first record, and an idle
    consumer waits at the broker for ``fetch_max_wait_ms`` between fetches instead of polling
    every 5 ms.

    aiokafka reads both values from its fetcher for every fetch request it builds; they are not
    settings it lets change once started. Without that fetcher (another aiokafka), nothing is
    held.
    """

    def __init__(self, consumer: AIOKafkaConsumer, hold_ms: int = FETCH_HOLD_MS) -> None:
        self.hold_ms = hold_ms
        fetcher = getattr(consumer, "_fetcher", None)
        self._fetcher = fetcher if hasattr(fetcher, "_fetch_min_bytes") else None
        self._free = (
            (self._fetcher._fetch_min_bytes, self._fetcher._fetch_max_wait_ms)
            if self._fetcher is not None
            else (1, 0)
        )
        self.held = False

    def set(self, held: bool) -> None:
        if held is self.held or self._fetcher is None:
            return
        self.held = held
        min_bytes, max_wait_ms = (FETCH_HOLD_BYTES, self.hold_ms) if held else self._free
        self._fetcher._fetch_min_bytes = min_bytes
        self._fetcher._fetch_max_wait_ms = max_wait_ms
