-- The active version is the ready one activated last (POST /reload or `tandem activate`);
-- every replica serves it, told by NOTIFY on the channel tandem_model_activated.
ALTER TABLE model_versions ADD COLUMN activated_at timestamptz;
