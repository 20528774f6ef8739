-- Runs as jobs: one row per requested run of a sync (`job_` + ULID), written in the same
-- transaction as the change that causes it. `status` is running from the request (`phase`
-- queued until a worker starts it, then running), then completed, failed or interrupted
-- (unlock, lease expiry, cancel, archive), when `phase` becomes NULL and the row is final.
CREATE TABLE IF NOT EXISTS sync_jobs (
    sync_job_id    text PRIMARY KEY,
    sync_config_id text NOT NULL,
    internal_id    text NOT NULL,
    namespace_id   text NOT NULL,
    trigger        text NOT NULL,            -- scheduled | manual | resume
    status         text NOT NULL,            -- running | completed | failed | interrupted
    phase          text,                     -- queued | running | NULL once finished
    full_sync      boolean NOT NULL DEFAULT false,
    files_synced   bigint NOT NULL DEFAULT 0,
    files_failed   bigint NOT NULL DEFAULT 0,
    error          text,                     -- at most 1000 characters
    current_cursor text,
    metadata       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL,
    started_at     timestamptz,
    completed_at   timestamptz,
    updated_at     timestamptz NOT NULL
);
-- A sync's jobs, newest first (the jobs routes page on it).
CREATE INDEX IF NOT EXISTS sync_jobs_by_sync
    ON sync_jobs (sync_config_id, created_at DESC, sync_job_id DESC);
