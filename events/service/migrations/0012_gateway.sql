-- The HTTP gateway (events/gateway/): every write it published, by command id, so that a
-- retried request (the same Idempotency-Key) is the same command with the same sync id, a
-- reused key with another body is refused, and an operation is shown only to its own key.
-- Rows older than the dedupe window are deleted by the gateway.
CREATE TABLE IF NOT EXISTS gateway_requests (
    command_id     text PRIMARY KEY,
    key_id         text NOT NULL,
    method         text NOT NULL,
    path           text NOT NULL,
    body_sha256    bytea NOT NULL,
    sync_config_id text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS gateway_requests_created_at ON gateway_requests (created_at);

-- A stored creation time as a timestamp. Immutable for the values the service writes (RFC 3339
-- with an explicit offset), so that an index can order by it.
CREATE OR REPLACE FUNCTION synclife_created_at(doc jsonb) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (doc->>'created_at')::timestamptz $$;

-- The lists: a bucket's syncs and a namespace's syncs, newest first, archived ones left out.
CREATE INDEX IF NOT EXISTS syncs_bucket_newest ON syncs
    (internal_id, namespace_id, (data->>'bucket_id'), synclife_created_at(data) DESC,
     sync_config_id DESC)
    WHERE status <> 'ARCHIVED';
CREATE INDEX IF NOT EXISTS syncs_namespace_newest ON syncs
    (internal_id, namespace_id, synclife_created_at(data) DESC, sync_config_id DESC)
    WHERE status <> 'ARCHIVED';
