-- A version may carry a second vector per item: the diversity embedding, which the DPP (and
-- the evaluator's intra-list diversity) compare instead of the content embedding. Items a
-- shopper sees as alike (bought in the same contexts) need not have alike titles, so a
-- behavioural embedding diversifies a list where title similarity cannot. Little-endian f32
-- bytes like `embedding`; NULL when the version has none (diversity_dim 0).
ALTER TABLE model_versions
    ADD COLUMN diversity_dim integer NOT NULL DEFAULT 0 CHECK (diversity_dim >= 0);
ALTER TABLE item_embeddings ADD COLUMN diversity bytea;
