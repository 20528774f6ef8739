-- A sync's row is updated by every change. Postgres updates a row in place (a HOT update: no
-- new index entries) only when no indexed column changes (0006 made it so); the list indexes
-- of 0012 were on expressions of `data` and on `status` (their predicate), so every change
-- inserted a new entry into each of the table's four indexes again, and at 100,000 syncs
-- those entries spread over pages no longer in memory. The lists now read columns whose
-- values never change after the create (`bucket_id`, `created_at`) or change once
-- (`archived`): Postgres compares an indexed column's old and new values, so a change that
-- leaves them equal stays HOT. They are generated from the row, so no writer (an older
-- `serve` still running during the upgrade included) can leave them wrong.
ALTER TABLE syncs
    ADD COLUMN IF NOT EXISTS bucket_id text GENERATED ALWAYS AS (data->>'bucket_id') STORED,
    ADD COLUMN IF NOT EXISTS created_at timestamptz
        GENERATED ALWAYS AS (synclife_created_at(data)) STORED,
    ADD COLUMN IF NOT EXISTS archived boolean GENERATED ALWAYS AS (status = 'ARCHIVED') STORED;

DROP INDEX IF EXISTS syncs_bucket_newest;
DROP INDEX IF EXISTS syncs_namespace_newest;
CREATE INDEX IF NOT EXISTS syncs_bucket_newest_v2 ON syncs
    (internal_id, namespace_id, bucket_id, created_at DESC, sync_config_id DESC)
    WHERE NOT archived;
CREATE INDEX IF NOT EXISTS syncs_namespace_newest_v2 ON syncs
    (internal_id, namespace_id, created_at DESC, sync_config_id DESC)
    WHERE NOT archived;

-- Documents kept inline uncompressed: a row of about 2.5 kB would otherwise be compressed
-- again by every update (the fillfactor of 0006 leaves room for the next version).
ALTER TABLE syncs SET (toast_tuple_target = 8160);
