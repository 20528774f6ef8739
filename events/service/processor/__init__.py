"""The batch processor: commands in, one Postgres transaction, results and events out.

- ``transaction``: the transactions: a consumed batch (``apply_batch``), a scheduler pass
  (``apply_system``), a poison record's dead letter (``dead_letter_one``), a record the Kafka
  client could not read (``UnreadableRecord``);
- ``decisions``: what a batch decides, in memory: authenticate, dedupe or replay, decide each
  command, its result, its dead letter;
- ``sql``: the batch's one read and its one fenced write;
- ``rows``: event and result ids, outbox and result rows, the JSON around a sync.
"""

from events.service.processor.decisions import BatchStats, Record
from events.service.processor.rows import command_result, event_id, result_id, timer_of
from events.service.processor.sql import NOTIFY_CHANNEL
from events.service.processor.transaction import (
    UnreadableRecord,
    apply_batch,
    apply_system,
    dead_letter_one,
)

__all__ = [
    "NOTIFY_CHANNEL",
    "BatchStats",
    "Record",
    "UnreadableRecord",
    "apply_batch",
    "apply_system",
    "command_result",
    "dead_letter_one",
    "event_id",
    "result_id",
    "timer_of",
]
