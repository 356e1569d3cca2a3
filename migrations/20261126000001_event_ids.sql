-- Every event carries an idempotency key (the storefront's, or one given on arrival), so a
-- retried batch or a resent event is stored once.
ALTER TABLE events ADD COLUMN event_id uuid;
CREATE UNIQUE INDEX events_event_id_idx ON events (event_id);
