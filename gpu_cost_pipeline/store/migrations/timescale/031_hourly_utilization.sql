-- The hourly continuous aggregate gains the node and utilization sums (meaning as in
-- plain/031_hourly_utilization.sql). A continuous aggregate cannot gain columns, so it is
-- recreated with the same name, the same existing columns and the new ones; it starts empty and
-- real-time (materialized_only = false), so queries stay exact while the refresh policy and the
-- pipeline's per-window refreshes materialize it again. The retention policy went with the old
-- view: forgetting the recorded settings makes the store set it again on its next start.
DROP MATERIALIZED VIEW gpu_cost_hourly;

CREATE MATERIALIZED VIEW gpu_cost_hourly
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT time_bucket(INTERVAL '1 hour', minute) AS hour,
       cluster, namespace, team, project, experiment_id, cost_center, gpu_model, capacity_type,
       is_idle, price_source,
       sum(gpu_share * seconds) / 3600.0 AS gpu_hours,
       sum(cost_usd)           AS cost_usd,
       sum(on_demand_cost_usd) AS on_demand_cost_usd,
       sum(exclusive_cost_usd) AS exclusive_cost_usd,
       count(*)                AS pod_minutes,
       node,
       sum(CASE WHEN gpu_utilization IS NOT NULL THEN gpu_share * seconds ELSE 0 END) / 3600.0
           AS measured_gpu_hours,
       sum(coalesce(gpu_utilization, 0) * gpu_share * seconds) / 3600.0 AS used_gpu_hours,
       sum(CASE WHEN is_idle THEN cost_usd
                ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END) AS unused_cost_usd
FROM gpu_cost
GROUP BY hour, cluster, namespace, team, project, experiment_id, cost_center, gpu_model,
         capacity_type, is_idle, price_source, node
WITH NO DATA;

SELECT add_continuous_aggregate_policy('gpu_cost_hourly',
    start_offset => INTERVAL '3 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '5 minutes');

DELETE FROM store_settings WHERE key IN ('retention_days', 'rollup_retention_days');
