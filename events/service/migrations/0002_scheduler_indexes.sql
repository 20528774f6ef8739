-- The scheduler's two questions, each answered from a small partial index:
-- which schedulable syncs are due, and which run leases have expired.
CREATE INDEX syncs_due ON syncs (next_sync_at)
    WHERE status IN ('PENDING', 'ACTIVE') AND lock_expires_at IS NULL AND next_sync_at IS NOT NULL;
CREATE INDEX syncs_leases ON syncs (lock_expires_at) WHERE lock_expires_at IS NOT NULL;
CREATE INDEX sync_history_command ON sync_history (command_id) WHERE command_id IS NOT NULL;
