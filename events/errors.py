"""The one root exception of ``events``, with a retriable flag as aiokafka's errors carry."""

from __future__ import annotations

__all__ = ["SynclifeError", "TransientError"]


class SynclifeError(Exception):
    """Root of synclife's errors. ``retriable``: the same call may succeed later."""

    retriable = False


class TransientError(SynclifeError):
    """Postgres or Kafka is unreachable or busy: retry with backoff, never dead-letter."""

    retriable = True
