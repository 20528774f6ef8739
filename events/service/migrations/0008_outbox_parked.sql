-- Outbox rows that Kafka refused for good (too large, the topic unknown, not authorized, ...):
-- the relay moves such a row here, in the transaction that deletes it from the outbox, so
-- that the rows behind it go on (events/service/relay.py). A lifecycle event parked this way
-- holds its sync's later events on that topic: they are parked behind it (reason `held`,
-- `held_by` the row they wait for) until `synclife outbox retry` puts them all back, in id
-- order, under their own ids.
CREATE TABLE outbox_parked (
    id         bigint PRIMARY KEY,          -- the outbox row's id
    topic      text NOT NULL,
    key        bytea,
    value      bytea,
    headers    text NOT NULL,
    created_at timestamptz NOT NULL,        -- when the outbox row was written
    reason     text NOT NULL,
    held_by    bigint,                      -- reason `held`: the parked row it waits behind
    parked_at  timestamptz NOT NULL DEFAULT now(),
    attempts   integer NOT NULL             -- times the row was parked, this one included
);
CREATE INDEX outbox_parked_topic_key ON outbox_parked (topic, key);

-- How many times an outbox row was parked before (a retried row keeps its count).
ALTER TABLE outbox ADD COLUMN attempts integer NOT NULL DEFAULT 0;
