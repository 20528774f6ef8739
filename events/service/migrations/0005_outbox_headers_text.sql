-- An outbox row's Kafka headers as one text value, [["name","<base64>"], ...]
-- (events/envelope.py pack_headers): a batch's rows go in as four plain arrays, which the
-- driver and Postgres encode and decode much faster than an array of composites holding
-- arrays of composites. Rows not yet published are converted in place.
ALTER TABLE outbox ADD COLUMN headers_text text;
UPDATE outbox SET headers_text = (
    SELECT coalesce(json_agg(json_build_array(h.key, encode(h.value, 'base64')) ORDER BY h.n),
                    '[]'::json)::text
    FROM unnest(headers) WITH ORDINALITY AS h(key, value, n));
ALTER TABLE outbox DROP COLUMN headers;
ALTER TABLE outbox RENAME COLUMN headers_text TO headers;
ALTER TABLE outbox ALTER COLUMN headers SET NOT NULL;
DROP TYPE outbox_message;
DROP TYPE kafka_header;
