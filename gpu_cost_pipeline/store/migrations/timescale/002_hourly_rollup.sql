-- TimescaleDB: minute tables become hypertables (one-day chunks), compressed after 7 days;
-- the hourly rollup is a real-time continuous aggregate with the same columns as the plain
-- table. Retention policies are set by the store from its configuration (see CostStore).
-- Everything TimescaleDB-specific lives in this file and in store/timescale.py.
CREATE EXTENSION IF NOT EXISTS timescaledb;

SELECT create_hypertable('gpu_pod_usage', by_range('minute', INTERVAL '1 day'), migrate_data => true);
SELECT create_hypertable('gpu_node_usage', by_range('minute', INTERVAL '1 day'), migrate_data => true);
SELECT create_hypertable('gpu_cost', by_range('minute', INTERVAL '1 day'), migrate_data => true);

ALTER TABLE gpu_pod_usage SET (timescaledb.compress, timescaledb.compress_segmentby = 'cluster',
                               timescaledb.compress_orderby = 'minute');
ALTER TABLE gpu_node_usage SET (timescaledb.compress, timescaledb.compress_segmentby = 'cluster, node',
                                timescaledb.compress_orderby = 'minute');
ALTER TABLE gpu_cost SET (timescaledb.compress, timescaledb.compress_segmentby = 'cluster, namespace',
                          timescaledb.compress_orderby = 'minute');
SELECT add_compression_policy('gpu_pod_usage', INTERVAL '7 days');
SELECT add_compression_policy('gpu_node_usage', INTERVAL '7 days');
SELECT add_compression_policy('gpu_cost', INTERVAL '7 days');

CREATE MATERIALIZED VIEW gpu_cost_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', minute) AS hour,
       cluster, namespace, team, project, experiment_id, cost_center, gpu_model, capacity_type,
       is_idle, price_source,
       sum(gpu_share * seconds) / 3600.0 AS gpu_hours,
       sum(cost_usd)           AS cost_usd,
       sum(on_demand_cost_usd) AS on_demand_cost_usd,
       sum(exclusive_cost_usd) AS exclusive_cost_usd,
       count(*)                AS pod_minutes
FROM gpu_cost
GROUP BY hour, cluster, namespace, team, project, experiment_id, cost_center, gpu_model,
         capacity_type, is_idle, price_source
WITH NO DATA;

SELECT add_continuous_aggregate_policy('gpu_cost_hourly',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes');
