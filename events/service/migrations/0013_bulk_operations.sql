-- Bulk operations (sync.bulk.pause, sync.bulk.resume, sync.bulk.undo; events/service/bulk/).
-- A batch records each accepted bulk command here (once per command id; no result yet); the
-- bulk worker (one leader) takes them in the order received and answers each exactly once.
CREATE TABLE IF NOT EXISTS bulk_requests (
    seq          bigint GENERATED ALWAYS AS IDENTITY,
    command_id   text PRIMARY KEY,
    operation_id text NOT NULL,
    command_type text NOT NULL,              -- sync.bulk.pause | sync.bulk.resume | sync.bulk.undo
    internal_id  text NOT NULL,
    namespace_id text NOT NULL,
    key_id       text NOT NULL,
    caller       text,
    data         jsonb NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    done_at      timestamptz                 -- its result is recorded
);
CREATE INDEX IF NOT EXISTS bulk_requests_pending ON bulk_requests (seq) WHERE done_at IS NULL;

-- One row per operation (its id is the caller's `bulk_` + ULID): what it matched, where it is.
CREATE TABLE IF NOT EXISTS bulk_operations (
    operation_id    text PRIMARY KEY,
    internal_id     text NOT NULL,
    namespace_id    text NOT NULL,
    key_id          text NOT NULL,
    command_id      text NOT NULL,
    kind            text NOT NULL,           -- pause | resume
    selector        jsonb NOT NULL,
    data            jsonb NOT NULL,
    status          text NOT NULL,           -- running | completed | undoing | undone
    counts          jsonb NOT NULL,          -- {matched, applied, noop, rejected}
    undo_command_id text,
    undo_counts     jsonb,
    created_at      timestamptz NOT NULL,
    finished_at     timestamptz,
    undone_at       timestamptz
);

-- Each matched sync once per phase (apply, then undo): `outcome` NULL while pending, set in
-- the transaction that changes the sync, so a sync is changed at most once by each.
CREATE TABLE IF NOT EXISTS bulk_items (
    operation_id   text NOT NULL,
    phase          text NOT NULL,            -- apply | undo
    sync_config_id text NOT NULL,
    outcome        text,                     -- applied | noop | rejected
    version        integer,                  -- the sync's version after the item
    PRIMARY KEY (operation_id, phase, sync_config_id)
);
CREATE INDEX IF NOT EXISTS bulk_items_pending
    ON bulk_items (operation_id, phase, sync_config_id) WHERE outcome IS NULL;
