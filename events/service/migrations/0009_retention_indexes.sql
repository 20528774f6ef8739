-- Retention (events/service/retention.py) deletes processed command ids older than the dedupe
-- window and history rows older than their retention, oldest first, a small batch at a time:
-- each batch finds its rows through these indexes instead of scanning the table.
CREATE INDEX IF NOT EXISTS processed_commands_processed_at ON processed_commands (processed_at);
CREATE INDEX IF NOT EXISTS sync_history_occurred_at ON sync_history (occurred_at);
-- The transaction that wrote each processed command, as the outbox records it for its rows
-- (0007): a command's result row has the same xid. Retention keeps every processed command
-- at or above the outbox's oldest xid, whose result may not be published yet. A stable
-- default: existing rows take this migration's xid without a rewrite of the table.
ALTER TABLE processed_commands ADD COLUMN IF NOT EXISTS xid xid8 NOT NULL DEFAULT pg_current_xact_id();
