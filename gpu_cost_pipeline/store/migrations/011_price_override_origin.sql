-- Where each override came from (`gpu-autoscaler prices override set`, the GPU_COST_PRICE_OVERRIDES
-- file, or SQL) and, when it was given per instance-hour, that figure as given.
ALTER TABLE price_overrides
    ADD COLUMN origin                  text             NOT NULL DEFAULT 'sql',
    ADD COLUMN price_per_instance_hour double precision CHECK (price_per_instance_hour >= 0),
    ADD COLUMN created_at              timestamptz      NOT NULL DEFAULT now();
