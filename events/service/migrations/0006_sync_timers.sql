-- When the scheduler must next look at each sync, in a narrow table of its own: the lease's
-- expiry while a run holds one, else the next poll while the sync is PENDING or ACTIVE, else
-- none. Before, two partial indexes on `syncs` answered this; as they covered `status`,
-- `next_sync_at` and `lock_expires_at`, which nearly every command changes, no update of a
-- sync could be HOT: each wrote a new version of its wide row elsewhere and a new entry in
-- every index. Now a sync's update touches no indexed column, and `syncs` leaves room on each
-- page for the next version (fillfactor), so it can stay on its page with no index entries.
CREATE TABLE sync_timers (
    sync_config_id text PRIMARY KEY REFERENCES syncs ON DELETE CASCADE,
    due_at timestamptz
);
INSERT INTO sync_timers (sync_config_id, due_at)
SELECT sync_config_id,
       CASE WHEN lock_expires_at IS NOT NULL THEN lock_expires_at
            WHEN status IN ('PENDING', 'ACTIVE') THEN next_sync_at END
FROM syncs;
CREATE INDEX sync_timers_due ON sync_timers (due_at) WHERE due_at IS NOT NULL;
DROP INDEX syncs_due;
DROP INDEX syncs_leases;
ALTER TABLE syncs SET (fillfactor = 70);
