-- The per-pod hourly rollup gains the node and the utilization sums of gpu_cost_hourly (031),
-- so `gpu-autoscaler cost --format detailed` shows allocated, used and idle per pod, team and
-- node over any period without reading every minute:
--   measured_gpu_hours  GPU-hours of the pod's rows whose utilization is known,
--   used_gpu_hours      the part of those the GPUs were busy,
--   unused_cost_usd     cost × (1 − utilization) of measured rows; the whole cost of idle rows.
-- Hours still in gpu_cost are filled in from it; older hours keep node '' and zero sums, which
-- read as "not measured" (never as unused).
ALTER TABLE gpu_pod_cost_hourly
    ADD COLUMN node               text             NOT NULL DEFAULT '',
    ADD COLUMN measured_gpu_hours double precision NOT NULL DEFAULT 0,
    ADD COLUMN used_gpu_hours     double precision NOT NULL DEFAULT 0,
    ADD COLUMN unused_cost_usd    double precision NOT NULL DEFAULT 0;

UPDATE gpu_pod_cost_hourly AS h
SET node = m.node, measured_gpu_hours = m.measured, used_gpu_hours = m.used,
    unused_cost_usd = m.unused
FROM (
    SELECT date_trunc('hour', minute) AS hour, cluster, pod_uid, min(node) AS node,
           sum(CASE WHEN gpu_utilization IS NOT NULL THEN gpu_share * seconds ELSE 0 END)
               / 3600.0 AS measured,
           sum(coalesce(gpu_utilization, 0) * gpu_share * seconds) / 3600.0 AS used,
           sum(CASE WHEN is_idle THEN cost_usd
                    ELSE coalesce(cost_usd * (1 - gpu_utilization), 0) END) AS unused
    FROM gpu_cost
    GROUP BY 1, cluster, pod_uid
) AS m
WHERE h.hour = m.hour AND h.cluster = m.cluster AND h.pod_uid = m.pod_uid;
