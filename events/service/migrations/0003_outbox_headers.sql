-- Faster batch writes: an outbox row's Kafka headers in one column, so that a batch's rows
-- go in as one array of messages (two parallel header arrays per row could not), and each
-- command's result kept as the text that is sent (it is only ever resent, never queried).
CREATE TYPE kafka_header AS (key text, value bytea);
CREATE TYPE outbox_message AS (topic text, key bytea, value bytea, headers kafka_header[]);

ALTER TABLE outbox ADD COLUMN headers kafka_header[];
UPDATE outbox SET headers = ARRAY(
    SELECT ROW(h.key, h.value)::kafka_header
    FROM unnest(header_keys, header_values) WITH ORDINALITY AS h(key, value, n)
    ORDER BY h.n);
ALTER TABLE outbox ALTER COLUMN headers SET NOT NULL;
ALTER TABLE outbox DROP COLUMN header_keys, DROP COLUMN header_values;

ALTER TABLE processed_commands ALTER COLUMN result TYPE text;
