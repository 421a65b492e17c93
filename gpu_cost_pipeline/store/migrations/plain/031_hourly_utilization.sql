-- The hourly rollup gains the node (for "paid for but unused" per node) and utilization sums:
--   measured_gpu_hours  GPU-hours of pod rows whose utilization is known,
--   used_gpu_hours      the part of those the GPUs were busy (gpu_hours × utilization),
--   unused_cost_usd     cost paid for GPUs not in use: cost × (1 − utilization) of measured pod
--                       rows, plus every idle row (GPUs no pod held); unmeasured pods add 0.
-- Existing rows (written before utilization existed) get the node '' and zero sums; rewriting
-- their cost windows fills them in.
ALTER TABLE gpu_cost_hourly
    ADD COLUMN node               text             NOT NULL DEFAULT '',
    ADD COLUMN measured_gpu_hours double precision NOT NULL DEFAULT 0,
    ADD COLUMN used_gpu_hours     double precision NOT NULL DEFAULT 0,
    ADD COLUMN unused_cost_usd    double precision NOT NULL DEFAULT 0;
