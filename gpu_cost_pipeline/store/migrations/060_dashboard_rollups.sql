-- Hourly rollups shaped for the dashboards. gpu_cost_hourly keeps the node and the
-- experiment, so it holds about one row per pod-hour (720,000 rows for 30 days of 1,000 pods)
-- and every panel over a month scanned all of them. These two drop the keys that multiply
-- rows; their sums equal gpu_cost_hourly's for the same filters. Plain tables on PostgreSQL and
-- TimescaleDB alike: the pipeline rewrites them, with gpu_cost_hourly and gpu_pod_cost_hourly,
-- for the hours each cost window touches (in the window's transaction), from the same per-pod
-- hourly sums; retention deletes them after GPU_COST_ROLLUP_RETENTION_DAYS.

-- gpu_cost_hourly without node and experiment_id: a few rows per namespace, team, project,
-- cost center, GPU model and capacity type each hour, idle rows included.
CREATE TABLE gpu_namespace_cost_hourly (
    hour                timestamptz      NOT NULL,
    cluster             text             NOT NULL,
    namespace           text             NOT NULL,
    team                text             NOT NULL,
    project             text             NOT NULL,
    cost_center         text             NOT NULL,
    gpu_model           text             NOT NULL,
    capacity_type       text             NOT NULL,
    is_idle             boolean          NOT NULL,
    price_source        text             NOT NULL,
    gpu_hours           double precision NOT NULL,
    cost_usd            double precision NOT NULL,
    on_demand_cost_usd  double precision NOT NULL,
    exclusive_cost_usd  double precision NOT NULL,
    pod_minutes         bigint           NOT NULL,
    measured_gpu_hours  double precision NOT NULL,
    used_gpu_hours      double precision NOT NULL,
    unused_cost_usd     double precision NOT NULL
);
CREATE INDEX gpu_namespace_cost_hourly_window ON gpu_namespace_cost_hourly (cluster, hour);

-- Pod cost per experiment (pods with an experiment-id label; idle GPUs have none): one row per
-- experiment, namespace and team each hour it ran, without the node, GPU model and price keys.
CREATE TABLE gpu_experiment_cost_hourly (
    hour                timestamptz      NOT NULL,
    cluster             text             NOT NULL,
    namespace           text             NOT NULL,
    team                text             NOT NULL,
    project             text             NOT NULL,
    experiment_id       text             NOT NULL,
    gpu_hours           double precision NOT NULL,
    cost_usd            double precision NOT NULL,
    on_demand_cost_usd  double precision NOT NULL,
    exclusive_cost_usd  double precision NOT NULL,
    pod_minutes         bigint           NOT NULL
);
CREATE INDEX gpu_experiment_cost_hourly_window ON gpu_experiment_cost_hourly (cluster, hour);

-- Filled from the hourly rollup, which keeps more history than the minute table (on
-- TimescaleDB a real-time aggregate: its materialized hours plus those still in gpu_cost).
INSERT INTO gpu_namespace_cost_hourly
SELECT hour, cluster, namespace, team, project, cost_center, gpu_model, capacity_type, is_idle,
       price_source, sum(gpu_hours), sum(cost_usd), sum(on_demand_cost_usd),
       sum(exclusive_cost_usd), sum(pod_minutes), sum(measured_gpu_hours), sum(used_gpu_hours),
       sum(unused_cost_usd)
FROM gpu_cost_hourly
GROUP BY hour, cluster, namespace, team, project, cost_center, gpu_model, capacity_type,
         is_idle, price_source;

INSERT INTO gpu_experiment_cost_hourly
SELECT hour, cluster, namespace, team, project, experiment_id, sum(gpu_hours), sum(cost_usd),
       sum(on_demand_cost_usd), sum(exclusive_cost_usd), sum(pod_minutes)
FROM gpu_cost_hourly
WHERE NOT is_idle AND experiment_id <> ''
GROUP BY hour, cluster, namespace, team, project, experiment_id;
