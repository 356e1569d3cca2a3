-- Top-N content neighbours per item (cosine of item embeddings), precomputed by `tandem train`
-- so the server needs no nearest-neighbour search at request time.
CREATE TABLE content_neighbours (
    version        bigint NOT NULL REFERENCES model_versions (version) ON DELETE CASCADE,
    item_id        text NOT NULL,
    other_item_id  text NOT NULL,
    score          real NOT NULL,
    PRIMARY KEY (version, item_id, other_item_id)
);
