-- Measured GPU utilization (0–1, the mean of DCGM's samples in the minute) of each pod-minute,
-- node-minute and pod cost row. Null where no DCGM series covered the minute (the live and
-- simulated sources, MIG without profiling metrics): unknown is never stored as a guess.
-- Idle cost rows stay null: no pod held those GPUs.
ALTER TABLE gpu_pod_usage ADD COLUMN gpu_utilization double precision;
ALTER TABLE gpu_node_usage ADD COLUMN gpu_utilization double precision;
ALTER TABLE gpu_cost ADD COLUMN gpu_utilization double precision;
