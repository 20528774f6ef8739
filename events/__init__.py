"""synclife's client: publish commands, read their results, consume lifecycle events.

What another service imports (``pip install synclife``): the client, the CloudEvents envelope,
the message models and the Kafka settings. The running service is ``events.service``
(``synclife[server]``), the contract's documents ``events.contract``, the command line
``events.cli`` and the developer tooling ``events.devtools``. ``events`` imports
``statemachine``; never the reverse.
"""

from events.client import Event, SynclifeClient, lifecycle_events, new_sync_id
from events.messages import CommandResult, LifecycleEvent
from events.settings import KafkaSettings

__all__ = [
    "CommandResult",
    "Event",
    "KafkaSettings",
    "LifecycleEvent",
    "SynclifeClient",
    "lifecycle_events",
    "new_sync_id",
]
