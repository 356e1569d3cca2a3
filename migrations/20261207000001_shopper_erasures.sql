-- Erasures announced to every replica: each replica reads the rows after the last one it
-- applied (on a NOTIFY, and after reconnecting, so none is missed while it was away) and
-- removes what it holds of the shopper. Rows are pseudonyms only and are pruned after a day.
CREATE TABLE shopper_erasures (
    id bigserial PRIMARY KEY,
    shopper text NOT NULL,
    session text NOT NULL,
    -- The erasing replica's clock: events accepted (events.received_at, the accepting
    -- replica's clock) up to then are erased, later ones are kept.
    erased_at timestamptz NOT NULL
);
