-- The price in effect for a key at a time is "the latest point at or before it", however old:
-- an index on (cluster, key, time) answers that with one index probe per key.
CREATE INDEX price_points_key_time ON price_points
    (cluster, provider, region, zone, instance_type, gpu_model, capacity_type, effective_at);

-- Prices set by people (negotiated discounts, private pricing). They win over APIs and
-- estimates from effective_from on; gpu_prices copies the one in effect into price_points
-- with source 'override'. Deleting a row here ends the override for windows priced afterwards.
CREATE TABLE price_overrides (
    provider                      text             NOT NULL,
    region                        text             NOT NULL DEFAULT '',
    zone                          text             NOT NULL DEFAULT '',
    instance_type                 text             NOT NULL DEFAULT '',
    gpu_model                     text             NOT NULL,
    capacity_type                 text             NOT NULL,
    price_per_gpu_hour            double precision NOT NULL CHECK (price_per_gpu_hour >= 0),
    on_demand_price_per_gpu_hour  double precision CHECK (on_demand_price_per_gpu_hour >= 0),
    effective_from                timestamptz      NOT NULL,
    note                          text             NOT NULL DEFAULT '',
    PRIMARY KEY (provider, region, zone, instance_type, gpu_model, capacity_type, effective_from)
);
