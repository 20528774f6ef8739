-- synclife schema v1: tenancy, syncs, their history, processed commands, the outbox.

CREATE TABLE organizations (
    internal_id  text PRIMARY KEY,
    name         text NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE namespaces (
    namespace_id text PRIMARY KEY,
    internal_id  text NOT NULL REFERENCES organizations (internal_id),
    name         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (internal_id, name)
);

-- Only a SHA-256 of each key is kept; keys carry 256 bits of randomness, so a fast hash
-- is enough and lets a key be found by its hash alone.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY,
    internal_id  text NOT NULL REFERENCES organizations (internal_id),
    key_hash     bytea NOT NULL UNIQUE,
    scopes       text[] NOT NULL,
    namespaces   text[],                -- NULL: every namespace of the organization
    name         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);

-- One row per sync: the full SyncConfiguration as JSON, with the columns queries need.
CREATE TABLE syncs (
    sync_config_id  text PRIMARY KEY,
    internal_id     text NOT NULL,
    namespace_id    text NOT NULL,
    status          text NOT NULL,
    version         integer NOT NULL CHECK (version >= 1),
    next_sync_at    timestamptz,
    lock_expires_at timestamptz,
    data            jsonb NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX syncs_tenant ON syncs (internal_id, namespace_id);

-- Every persisted change of a sync: one row per version.
CREATE TABLE sync_history (
    sync_config_id text NOT NULL,
    version        integer NOT NULL,
    event_type     text NOT NULL,
    from_status    text,
    to_status      text,
    trigger        text NOT NULL,
    command_id     text,
    actor          text NOT NULL,
    reason         text,
    occurred_at    timestamptz NOT NULL,
    PRIMARY KEY (sync_config_id, version)
);

-- The idempotency record: a command id is applied once; its result is kept and resent.
CREATE TABLE processed_commands (
    command_id     text PRIMARY KEY,
    command_type   text NOT NULL,
    sync_config_id text,
    key_id         text,
    outcome        text NOT NULL,
    result         jsonb NOT NULL,
    processed_at   timestamptz NOT NULL DEFAULT now()
);

-- Messages a batch could not decode: one row per source offset, so a redelivered batch
-- dead-letters each message once.
CREATE TABLE dead_letters (
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL,
    reason           text NOT NULL,
    at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_topic, source_partition, source_offset)
);

-- The outbox: what the relay publishes. Rows are deleted once Kafka acknowledged them.
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    topic      text NOT NULL,
    key        bytea,
    value      bytea,                   -- NULL: a tombstone (dead letters keep theirs)
    header_keys   text[] NOT NULL,
    header_values bytea[] NOT NULL,     -- raw header bytes: dead letters keep theirs unchanged
    created_at timestamptz NOT NULL DEFAULT now()
);
