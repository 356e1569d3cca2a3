-- Top-N content neighbours per item (by embedding cosine), written by `tandem train`.
-- Like `co_purchase`, keyed by version, no foreign keys to `items`. The snapshot does not
-- load this table yet.
CREATE TABLE content_neighbours (
    version        bigint NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    item_id        text NOT NULL,
    other_item_id  text NOT NULL,
    score          real NOT NULL,
    PRIMARY KEY (version, item_id, other_item_id)
);
