-- Running totals kept in step with the cost rows, for the Prometheus exporter: the transaction
-- that rewrites a gpu_cost window subtracts what it deletes and adds what it writes, so a
-- scrape reads a few rows however long the history is, and a total is "accumulated": retention
-- deleting old minute or rollup rows does not lower it.

-- Each pod's accumulated cost (the exporter reads the running pods' rows). last_minute drives
-- retention: the row goes when the pod's last minute is older than GPU_COST_RETENTION_DAYS.
CREATE TABLE gpu_pod_cost_totals (
    cluster      text             NOT NULL,
    pod_uid      text             NOT NULL,
    cost_usd     double precision NOT NULL,
    last_minute  timestamptz      NOT NULL,
    PRIMARY KEY (cluster, pod_uid)
);
INSERT INTO gpu_pod_cost_totals (cluster, pod_uid, cost_usd, last_minute)
SELECT cluster, pod_uid, sum(cost_usd), max(minute)
FROM gpu_cost WHERE NOT is_idle
GROUP BY cluster, pod_uid;

-- Each cluster's accumulated cost (pods and idle GPUs) and savings (pods only): spot =
-- on-demand baseline − actual, sharing = exclusive baseline − actual. Seeded from the hourly
-- rollup, which keeps more history than the minute table.
CREATE TABLE gpu_cluster_cost_totals (
    cluster              text             PRIMARY KEY,
    cost_usd             double precision NOT NULL,
    spot_savings_usd     double precision NOT NULL,
    sharing_savings_usd  double precision NOT NULL
);
INSERT INTO gpu_cluster_cost_totals (cluster, cost_usd, spot_savings_usd, sharing_savings_usd)
SELECT cluster, sum(cost_usd),
       coalesce(sum(on_demand_cost_usd - cost_usd) FILTER (WHERE NOT is_idle), 0),
       coalesce(sum(exclusive_cost_usd - cost_usd) FILTER (WHERE NOT is_idle), 0)
FROM gpu_cost_hourly
GROUP BY cluster;
