-- The live catalogue: items changed through the catalogue API or a product feed take effect on
-- every replica without a model reload.
--
-- Merchandising gets columns of its own (older rows keep their flags in `attributes`, which the
-- loader still reads when the column is NULL), so a shop's free `attributes` cannot collide
-- with them. A withdrawn item is kept for history but never recommended.
ALTER TABLE items
    ADD COLUMN promoted boolean,
    ADD COLUMN margin real CHECK (margin IS NULL OR margin BETWEEN 0 AND 1),
    ADD COLUMN withdrawn boolean NOT NULL DEFAULT false,
    -- The position of the item's last catalogue change in `catalogue_seq` (NULL: never changed
    -- through the catalogue). Every writer takes the catalogue's advisory lock before drawing
    -- numbers, so changes commit in the order of their numbers: a replica that has applied
    -- everything up to N catches up by reading the rows above N, whatever it missed.
    ADD COLUMN catalogue_seq bigint,
    ADD COLUMN catalogue_changed_at timestamptz;

CREATE SEQUENCE catalogue_seq;

CREATE INDEX items_catalogue_seq_idx ON items (catalogue_seq) WHERE catalogue_seq IS NOT NULL;
