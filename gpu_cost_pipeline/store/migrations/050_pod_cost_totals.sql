-- Each pod's accumulated cost, kept in step with its cost rows: the transaction that rewrites a
-- gpu_cost window subtracts what it deletes and adds what it writes. The Prometheus exporter
-- then reads a running pod's cost from one row instead of summing all its minutes on a scrape.
-- last_minute drives retention (the pod's row goes when its last minute is older than
-- GPU_COST_RETENTION_DAYS, as its gpu_pods row does).
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
