-- What `tandem train` chose on the shop's own history (validation split, estimator trials, the
-- tuned per-touchpoint settings as a partial [pipeline] table under "pipeline", and their
-- validation scores). NULL for versions trained without tuning.
ALTER TABLE model_versions ADD COLUMN tuning jsonb;
