-- Erasing a shopper deletes the events whose shopper or session is one of its keyed hashes;
-- without an index on session that is a scan of the whole events table.
CREATE INDEX events_session_idx ON events (session) WHERE session IS NOT NULL;
