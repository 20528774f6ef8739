"""The wire and the process: envelope, messages, Kafka consumer, outbox relay, client, CLI.

``events`` imports ``statemachine``; never the reverse.
"""

from events.client import Event, SynclifeClient, lifecycle_events, new_sync_id
from events.messages import CommandResult, LifecycleEvent
from events.settings import Settings

__all__ = [
    "CommandResult",
    "Event",
    "LifecycleEvent",
    "Settings",
    "SynclifeClient",
    "lifecycle_events",
    "new_sync_id",
]
