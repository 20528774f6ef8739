-- Each outbox row records the transaction that wrote it, so that the relay can read what
-- committed since its last read instead of walking the outbox from its first id. The front of
-- a queue table is where its deleted rows are: until vacuum removes them, every read in id
-- order went through all the entries the relay had deleted since (thousands of buffer hits
-- a read, the largest cost of Postgres at 1,000 commands/s). A row not yet visible to a
-- snapshot belongs to a transaction at or above that snapshot's xmin, so the relay reads
-- `xid >= xmin of its last complete read` (events/relay.py), through this index.
-- Rows already there take the migrating transaction's id: a new relay reads them all anyway.
ALTER TABLE outbox ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX outbox_xid ON outbox (xid);
