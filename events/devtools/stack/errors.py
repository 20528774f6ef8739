"""The stack's one error: Kafka or Postgres could not be installed, started or reached."""

from __future__ import annotations

from events.errors import SynclifeError

__all__ = ["StackError"]


class StackError(SynclifeError):
    """The local Kafka/Postgres stack could not be started or reached."""
